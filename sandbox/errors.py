"""Errors shaped the way Entra ID and Microsoft Graph send them.

See docs/microsoft-facts.md, "Error answers".
"""

import html
import time

from .web import html_page, html_response, json_response


def entra_timestamp(now):
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))


def graph_date(now):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))


class HttpError(Exception):
    """An answer a handler gives by raising; render() builds it for one request."""

    def __init__(self, status, headers=None):
        super().__init__(status)
        self.status = status
        self.headers = dict(headers or {})

    def render(self, request):
        raise NotImplementedError


def format_retry_after(seconds):
    """Retry-After as Graph writes it: whole seconds, or fractional when it is one."""
    if seconds is None:
        return None
    if isinstance(seconds, str):
        return seconds
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0")


GRAPH_DEFAULT_CODES = {
    400: ("BadRequest", "Invalid request."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    405: ("Request_BadRequest", "Specified HTTP method is not allowed for the request target."),
    409: ("ErrorIrresolvableConflict", "The send or update operation could not be performed."),
    410: ("SyncStateNotFound", "The sync state is not found."),
    412: ("PreconditionFailed", "The precondition failed."),
    413: ("RequestEntityTooLarge", "The request body is too large."),
    429: ("TooManyRequests", "Too many requests."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway did not receive a response in time."),
}


class GraphError(HttpError):
    def __init__(self, status, code=None, message=None, headers=None, retry_after=None):
        default_code, default_message = GRAPH_DEFAULT_CODES.get(status, ("UnknownError", "Error."))
        super().__init__(status, headers)
        self.code = code or default_code
        self.message = message or default_message
        value = format_retry_after(retry_after)
        if value is not None:
            self.headers["Retry-After"] = value

    def render(self, request):
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": graph_date(request.now),
                    "request-id": request.request_id,
                    "client-request-id": request.client_request_id,
                },
            }
        }
        return json_response(self.status, body, self.headers)


# AADSTS code -> (error, text). Texts follow Microsoft's wording where it is documented.
ENTRA_TEXTS = {
    50011: (
        "invalid_client",
        "The redirect URI '{redirect_uri}' specified in the request does not match the redirect "
        "URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the "
        "request matches one added to your application in the Azure portal.",
    ),
    50020: (
        "invalid_request",
        "User account '{login}' from identity provider does not exist in tenant '{tenant}' and "
        "cannot access the application '{client_id}' in that tenant.",
    ),
    50034: ("invalid_request", "The user account {login} does not exist in the directory."),
    50057: ("invalid_request", "The user account is disabled."),
    50089: ("invalid_grant", "Flow token expired - Authentication Failed."),
    50058: ("login_required", "A silent sign-in request was sent but no user is signed in."),
    50076: (
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a new "
        "location, you must use multi-factor authentication to access "
        "'00000003-0000-0000-c000-000000000000'.",
    ),
    50079: (
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a new "
        "location, you must enroll in multi-factor authentication to access "
        "'00000003-0000-0000-c000-000000000000'.",
    ),
    50173: (
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The "
        "user might have changed or reset their password. The grant was issued on '{issued}' and "
        "the TokensValidFrom date (before which tokens are not valid) for this user is "
        "'{valid_from}'.",
    ),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use "
        "an existing refresh token.",
    ),
    65001: (
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID '{client_id}' "
        "named '{app_name}'. Send an interactive authorization request for this user and resource.",
    ),
    65004: ("access_denied", "User declined to consent to access the app."),
    70000: ("invalid_grant", "Provided grant is invalid or malformed."),
    70003: (
        "unsupported_grant_type",
        "The app requested an unsupported grant type '{grant_type}'.",
    ),
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. Send a "
        "new interactive authorization request for this user and resource.",
    ),
    70011: (
        "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided value for the "
        "input parameter 'scope' is not valid. The scope {scope} is not valid.",
    ),
    # "Microsoft Entra authentication and authorization error codes"
    # (https://learn.microsoft.com/entra/identity-platform/reference-error-codes):
    # "InvalidMultipleResourcesScope - The provided value for the input parameter scope isn't
    # valid because it contains more than one resource."
    700022: (
        "invalid_scope",
        "The provided value for the input parameter scope isn't valid because it contains more "
        "than one resource. Scope {scope} is not valid.",
    ),
    90002: (
        "invalid_tenant",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud.",
    ),
    90014: ("invalid_request", "The required field '{field}' is missing from the credential."),
    90033: ("temporarily_unavailable", "A transient error has occurred. Please try again."),
    90055: ("temporarily_unavailable", "There are too many incoming requests. Please try again."),
    500112: (
        "invalid_grant",
        "The reply address '{redirect_uri}' does not match the reply address '{expected}' provided "
        "when requesting Authorization code.",
    ),
    501481: (
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the authorization "
        "request.",
    ),
    501491: ("invalid_request", "Invalid size of Code_Challenge parameter."),
    700054: (
        "unsupported_response_type",
        "response_type '{response_type}' is not enabled for the application.",
    ),
    700016: (
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This "
        "can happen if the application has not been installed by the administrator of the tenant "
        "or consented to by any user in the tenant.",
    ),
    700025: (
        "invalid_client",
        "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
    ),
    700082: (
        "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on {issued} and was "
        "inactive for {inactive}.",
    ),
    900144: (
        "invalid_request",
        "The request body must contain the following parameter: '{field}'.",
    ),
    9002313: ("invalid_grant", "Invalid request. Request is malformed or invalid."),
    7000215: (
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client "
        "secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000218: (
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    7000222: (
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal "
        "to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
        "certificate credentials for added security: https://aka.ms/certCreds.",
    ),
}


def entra_description(code, request, **values):
    text = ENTRA_TEXTS[code][1].format(**values)
    return (
        f"AADSTS{code}: {text}\r\nTrace ID: {request.request_id}\r\n"
        f"Correlation ID: {request.client_request_id}\r\nTimestamp: {entra_timestamp(request.now)}"
    )


class EntraError(HttpError):
    """A JSON error of the token or discovery endpoint."""

    def __init__(
        self, code, status=400, error=None, suberror=None, claims=None, headers=None, **values
    ):
        super().__init__(status, headers)
        self.code = code
        self.error = error or ENTRA_TEXTS[code][0]
        self.suberror = suberror
        self.claims = claims
        self.values = values

    def render(self, request):
        body = {
            "error": self.error,
            "error_description": entra_description(self.code, request, **self.values),
            "error_codes": [self.code],
            "timestamp": entra_timestamp(request.now),
            "trace_id": request.request_id,
            "correlation_id": request.client_request_id,
            "error_uri": f"{request.base_url}/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        if self.claims:
            body["claims"] = self.claims
        return json_response(self.status, body, self.headers)


class EntraPageError(HttpError):
    """An error Microsoft shows on its own sign-in page instead of redirecting."""

    def __init__(self, code, status=400, **values):
        super().__init__(status)
        self.code = code
        self.values = values

    def render(self, request):
        text = ENTRA_TEXTS[self.code][1].format(**self.values)
        body = (
            "<h1>Sign in</h1><p>Sorry, but we're having trouble signing you in.</p>"
            f'<p id="error-code">AADSTS{self.code}: {html.escape(text)}</p>'
            f"<p>Request Id: {html.escape(request.request_id)}<br>"
            f"Correlation Id: {html.escape(request.client_request_id)}<br>"
            f"Timestamp: {html.escape(entra_timestamp(request.now))}</p>"
        )
        return html_response(self.status, html_page("Sign in to your account", body))

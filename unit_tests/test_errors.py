"""The error catalogue and the parsers of Entra ID and Graph error answers.

These parse plain values (dicts, a ``requests.Response`` built in memory); the
paths that produce them over HTTP are covered by the auth and graph client tests.
"""

import email.utils
import json
import time

import freezegun
import pytest
import requests

from services.errors import (
    CATALOGUE,
    GraphAuthError,
    GraphConfigError,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    error_from_exception,
    error_from_graph_response,
    error_from_token_response,
    parse_retry_after,
    scrub,
)

A_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJTQlhTRUNSRVQifQ.c2lnbmF0dXJlMTIz"
A_SECRET = "s3cret-SBXSECRET-client"


def graph_response(status, body=None, headers=None, text=None):
    response = requests.Response()
    response.status_code = status
    if text is not None:
        response._content = text.encode()
    else:
        response._content = json.dumps(body).encode() if body is not None else b""
        response.headers["Content-Type"] = "application/json"
    response.headers.update(headers or {})
    return response


def token_error(error, number, text="Some text."):
    return {
        "error": error,
        "error_description": f"AADSTS{number}: {text}\r\nTrace ID: 0f6e1c41-aaaa-bbbb-cccc-"
        "0123456789ab\r\nCorrelation ID: 5a4b3c2d-1111-2222-3333-444455556666\r\n"
        "Timestamp: 2026-11-25 09:00:00Z",
        "error_codes": [int(number)],
        "timestamp": "2026-11-25 09:00:00Z",
        "trace_id": "0f6e1c41-aaaa-bbbb-cccc-0123456789ab",
        "correlation_id": "5a4b3c2d-1111-2222-3333-444455556666",
    }


# The cases docs/microsoft-facts.md names, and the others the admin must act on, with
# the class that decides the next step.
AADSTS_CASES = [
    ("700082", "invalid_grant", 400, GraphAuthError),
    ("50173", "invalid_grant", 400, GraphAuthError),
    ("70008", "invalid_grant", 400, GraphAuthError),
    ("70000", "invalid_grant", 400, GraphAuthError),
    ("9002313", "invalid_grant", 400, GraphAuthError),
    ("54005", "invalid_grant", 400, GraphAuthError),
    ("501481", "invalid_grant", 400, GraphAuthError),
    ("50076", "interaction_required", 400, GraphAuthError),
    ("50076", "invalid_grant", 400, GraphAuthError),
    ("50079", "interaction_required", 400, GraphAuthError),
    ("53003", "access_denied", 400, GraphAuthError),
    ("65004", "access_denied", None, GraphAuthError),
    ("50020", "invalid_request", 400, GraphAuthError),
    ("90072", "invalid_request", 400, GraphAuthError),
    ("50126", "invalid_grant", 400, GraphAuthError),
    ("7000215", "invalid_client", 401, GraphConfigError),
    ("7000222", "invalid_client", 401, GraphConfigError),
    ("50011", "invalid_client", 400, GraphConfigError),
    ("500112", "invalid_grant", 400, GraphConfigError),
    ("700016", "unauthorized_client", 400, GraphConfigError),
    ("65001", "invalid_grant", 400, GraphConfigError),
]

GRAPH_CASES = [
    (401, "InvalidAuthenticationToken", GraphAuthError),
    (403, "ErrorAccessDenied", GraphPermanentError),
    (403, "ErrorSendAsDenied", GraphPermanentError),
    (404, "ErrorItemNotFound", GraphPermanentError),
    (404, "MailboxNotEnabledForRESTAPI", GraphPermanentError),
    (404, "MailboxNotFound", GraphPermanentError),
    (404, "ResourceNotFound", GraphPermanentError),
    (403, "ErrorQuotaExceeded", GraphPermanentError),
    (400, "ErrorMessageSizeExceeded", GraphPermanentError),
    (413, "RequestEntityTooLarge", GraphPermanentError),
    (400, "ErrorMimeContentInvalidBase64String", GraphPermanentError),
    (429, "TooManyRequests", GraphTransientError),
    (429, "ApplicationThrottled", GraphTransientError),
    (410, "SyncStateNotFound", GraphPermanentError),
    (410, "syncStateNotFound", GraphPermanentError),
    (400, "ErrorInvalidRecipients", GraphPermanentError),
]


@pytest.mark.parametrize(("number", "error", "status", "cls"), AADSTS_CASES)
def test_aadsts_cases_map_to_their_class(number, error, status, cls):
    err = error_from_token_response(status, token_error(error, number))
    assert type(err) is cls
    assert err.code == number
    assert err.status == status
    assert err.user_message == CATALOGUE[number][1]
    assert err.request_id == "5a4b3c2d-1111-2222-3333-444455556666"
    # Only the first line of Microsoft's text: traces and timestamps stay out.
    assert err.detail == f"AADSTS{number}: Some text."
    assert f"AADSTS{number}" in str(err)


@pytest.mark.parametrize(("status", "code", "cls"), GRAPH_CASES)
def test_graph_cases_map_to_their_class(status, code, cls):
    body = {
        "error": {
            "code": code,
            "message": "Something happened.",
            "innerError": {"date": "2026-11-25T09:00:00", "request-id": "rid-1"},
        }
    }
    err = error_from_graph_response(graph_response(status, body))
    assert type(err) is cls
    assert err.code == code
    assert err.status == status
    assert err.request_id == "rid-1"
    assert err.user_message == CATALOGUE[code.lower()][1]


def test_catalogue_is_large_and_every_sentence_reads_as_advice():
    assert len(CATALOGUE) >= 20
    for key, (cls, sentence) in CATALOGUE.items():
        assert issubclass(cls, GraphError), key
        assert cls is not GraphError, key
        assert key == key.lower()
        assert sentence[0].isupper() and sentence.endswith("."), key


def test_aadsts_number_read_from_description_when_codes_are_missing():
    body = {"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token..."}
    err = error_from_token_response(400, body)
    assert isinstance(err, GraphAuthError)
    assert err.code == "700082"


@pytest.mark.parametrize(
    ("error", "status", "cls"),
    [
        ("invalid_grant", 400, GraphAuthError),
        ("interaction_required", 400, GraphAuthError),
        ("access_denied", None, GraphAuthError),
        ("invalid_client", 401, GraphConfigError),
        ("unauthorized_client", 400, GraphConfigError),
        ("invalid_scope", 400, GraphConfigError),
        ("server_error", None, GraphTransientError),
        ("temporarily_unavailable", 503, GraphTransientError),
        ("something_new", 400, GraphPermanentError),
        ("something_new", 503, GraphTransientError),
    ],
)
def test_unknown_numbers_fall_back_on_the_oauth_error(error, status, cls):
    err = error_from_token_response(status, {"error": error, "error_codes": [123456789]})
    assert type(err) is cls
    assert err.code == "123456789"


def test_oauth_error_without_number_keeps_the_error_as_code():
    err = error_from_token_response(None, {"error": "access_denied"})
    assert isinstance(err, GraphAuthError)
    assert err.code == "access_denied"
    assert err.detail is None


def test_nested_graph_error_uses_the_deepest_known_code():
    body = {
        "error": {
            "code": "ErrorInvalidRequest",
            "message": "The request is invalid.",
            "innerError": {
                "code": "ErrorSendAsDenied",
                "message": "The user account which was used to submit this request does not "
                "have the right to send mail on behalf of the specified sending account.",
                "innerError": {"request-id": "deep-id", "client-request-id": "c-id"},
            },
        }
    }
    err = error_from_graph_response(graph_response(403, body))
    assert isinstance(err, GraphPermanentError)
    assert err.code == "ErrorSendAsDenied"
    assert err.request_id == "deep-id"
    assert err.detail == "The request is invalid."


def test_graph_error_wrapped_as_json_in_the_message():
    inner = {"error": {"code": "ErrorQuotaExceeded", "message": "The mailbox is full."}}
    body = {"error": {"code": "BadRequest", "message": json.dumps(inner)}}
    err = error_from_graph_response(graph_response(400, body, {"request-id": "hdr-id"}))
    assert err.code == "ErrorQuotaExceeded"
    assert err.detail == "The mailbox is full."
    assert err.request_id == "hdr-id"


def test_graph_error_as_a_plain_string_and_lowercase_innererror():
    err = error_from_graph_response(graph_response(401, {"error": "invalid_token"}))
    assert isinstance(err, GraphAuthError)
    assert err.code == "invalid_token"
    body = {"error": {"code": "ErrorItemNotFound", "innererror": {"request-id": "low"}}}
    assert error_from_graph_response(graph_response(404, body)).request_id == "low"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(500, GraphTransientError), (502, GraphTransientError), (504, GraphTransientError),
     (401, GraphAuthError), (400, GraphPermanentError), (418, GraphPermanentError)],
)  # fmt: skip
def test_non_json_answers_are_classed_by_status(status, cls):
    err = error_from_graph_response(
        graph_response(status, text="<html>Bad gateway</html>", headers={"request-id": "r"})
    )
    assert type(err) is cls
    assert err.code is None
    assert err.request_id == "r"


def test_retry_after_fractional_missing_and_dated():
    body = {"error": {"code": "TooManyRequests", "message": "Slow down."}}
    err = error_from_graph_response(graph_response(429, body, {"Retry-After": "2.5"}))
    assert isinstance(err, GraphTransientError)
    assert err.retry_after == 2.5
    assert error_from_graph_response(graph_response(429, body)).retry_after is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    with freezegun.freeze_time("2026-03-02 10:00:00"):  # an HTTP date counts from now
        now = time.time()
        assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True)) == 0.0
        assert parse_retry_after(email.utils.formatdate(now + 120, usegmt=True)) == 120.0


def test_continuous_access_evaluation_challenge_is_an_auth_error():
    body = {"error": {"code": "InvalidAuthenticationToken", "message": "Access token expired."}}
    challenge = 'Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3MiOnt9fQ=="'
    err = error_from_graph_response(graph_response(401, body, {"WWW-Authenticate": challenge}))
    assert isinstance(err, GraphAuthError)
    assert "revoked" in err.user_message
    assert err.code == "InvalidAuthenticationToken"


def test_stale_delta_keeps_the_fresh_location():
    fresh = "https://graph.test/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken="
    body = {"error": {"code": "syncStateNotFound", "message": "Resync required."}}
    err = error_from_graph_response(graph_response(410, body, {"Location": fresh}))
    assert isinstance(err, GraphPermanentError)
    assert err.location == fresh


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("Connection reset by peer"),
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("IncompleteRead"),
        requests.exceptions.SSLError("EOF occurred in violation of protocol"),
    ],
)
def test_transport_failures_are_transient(exc):
    assert isinstance(error_from_exception(exc), GraphTransientError)


def test_certificate_and_url_failures_are_configuration():
    bad_ca = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get issuer")
    assert isinstance(error_from_exception(bad_ca), GraphConfigError)
    assert isinstance(error_from_exception(requests.exceptions.InvalidURL("bad")), GraphConfigError)
    assert isinstance(error_from_exception(requests.exceptions.TooManyRedirects()), GraphError)


def test_no_secret_reaches_the_text_of_an_error():
    upload_url = f"https://graph.test/upload?tempauth={A_TOKEN}"
    exc = requests.exceptions.ConnectionError(f"HTTPSConnectionPool: Max retries for {upload_url}")
    body = {
        "error": "invalid_grant",
        "error_description": f"AADSTS70000: Bad grant {A_TOKEN} for secret {A_SECRET}.\r\n"
        f"Trace: refresh_token={A_SECRET}",
        "error_codes": [70000],
    }
    graph_body = {"error": {"code": "ErrorAccessDenied", "message": f"Token {A_TOKEN} denied."}}
    for err in (
        error_from_exception(exc),
        error_from_token_response(400, body),
        error_from_graph_response(graph_response(403, graph_body)),
    ):
        for text in (str(err), repr(err), err.user_message, str(err.detail), str(err.args)):
            assert "SBXSECRET" not in text
            assert A_TOKEN[:20] not in text


def test_scrub_keeps_identifiers_an_admin_needs():
    line = (
        "AADSTS50020: User account 'bob@fabrikam.example' from identity provider "
        "'https://sts.fabrikam.example/5a4b3c2d-1111-2222-3333-444455556666/' does not exist."
    )
    assert scrub(line + "\nTrace ID: x") == line
    assert scrub("x" * 1000).endswith("…")
    assert len(scrub("word " * 200)) == 300
    assert scrub("") is None
    assert scrub(None) is None


def test_str_names_status_code_and_request_id():
    err = GraphTransientError(
        status=503, code="ServiceUnavailable", request_id="abc", retry_after=4
    )
    assert str(err) == (
        f"{GraphTransientError.default_message} [HTTP 503, ServiceUnavailable, request-id abc]"
    )
    assert repr(err) == "GraphTransientError('HTTP 503, ServiceUnavailable, request-id abc')"


def _french(sentence):
    """A translator as Odoo's is: it sees the template, never a filled-in value."""
    assert "bob@contoso.test" not in sentence
    return {
        "The mailbox %(address)s was not found.": "La boîte %(address)s est introuvable.",
        "Microsoft says: %(detail)s": "Microsoft indique : %(detail)s",
        "Exchange is busy; the request will be tried again later.": "Exchange est occupé.",
    }.get(sentence, sentence)


def test_a_sentence_is_translated_before_its_values_are_filled_in():
    err = GraphPermanentError(
        "The mailbox %(address)s was not found.",
        params={"address": "bob@contoso.test"},
        status=404,
        detail="No such user.",
    )
    assert err.user_message == "The mailbox bob@contoso.test was not found."
    assert str(err) == (
        "The mailbox bob@contoso.test was not found. [HTTP 404] Microsoft says: No such user."
    )
    assert err.message(_french) == "La boîte bob@contoso.test est introuvable."
    assert err.describe(_french) == (
        "La boîte bob@contoso.test est introuvable. [HTTP 404] Microsoft indique : No such user."
    )


def test_a_catalogue_sentence_reaches_the_translator_as_written():
    err = error_from_graph_response(graph_response(503, {"error": {"code": "ErrorServerBusy"}}))
    assert err.template == CATALOGUE["errorserverbusy"][1]
    assert err.message(_french) == "Exchange est occupé."
    assert err.user_message == "Exchange is busy; the request will be tried again later."


def test_a_translation_that_lost_a_placeholder_falls_back_to_english():
    err = GraphPermanentError("Mailbox %(address)s.", params={"address": "bob@contoso.test"})
    assert err.message(lambda sentence: "Boîte introuvable %(adresse)s.") == (
        "Mailbox bob@contoso.test."
    )
    assert err.message(lambda sentence: "Boîte %d.") == "Mailbox bob@contoso.test."

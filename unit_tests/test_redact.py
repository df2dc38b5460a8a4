"""The log redaction: patterns, record rewriting, and where the filter is installed."""

import io
import json
import logging

import pytest

from services.redact import REDACTED, RedactingFilter, install_redaction, redact

JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9"
    ".eyJhdWQiOiJodHRwczovL2dyYXBoLm1pY3Jvc29mdC5jb20iLCJvaWQiOiIxMjMifQ"
    ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0wMTIzNDU2Nzg5"
)
ENTRA_REFRESH = "0.AXoAv4j5cvGGr0GRqy180BHbR1-Hj7pQ0yNJnmZ4Rx2FZgYdAAA.AgABAAEAAAD--DLA3VO7QrddgJg"
MSA_CODE = "M.C507_BAY.2.U.1f9a2c3e-4b5d-6e7f-8091-a2b3c4d5e6f7!DCc5*Gq$abcdefgh"
MSA_TOKEN = "EwBwA8l6BAAUbDba3x2OMJElkF7gJ4z/VbCPEz0AAZCjo+eLb2O5pVh6rlGd1sJQ0rC1Pz7ytX8k=="
CLIENT_SECRET = "abc8Q~Zx1yW2vU3tS4rQ5pO6nM7lK8jI9hG0fE_d"
OPAQUE = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"  # a secret with no telltale shape


def assert_redacted(text, *secrets):
    out = redact(text)
    for secret in secrets:
        assert secret not in out, out
    assert REDACTED in out
    # Redacting twice changes nothing: records may cross several filters.
    assert redact(out) == out
    return out


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {OPAQUE}",
        f"{{'Authorization': 'Bearer {OPAQUE}', 'Accept': 'application/json'}}",
        f'{{"authorization": "Bearer {OPAQUE}"}}',
        f"Proxy-Authorization: Basic {OPAQUE}",
        "authorization=Bearer short",
    ],
)
def test_authorization_header(text):
    out = assert_redacted(text, OPAQUE, "short")
    assert "Bearer" in out or "Basic" in out


def test_bare_bearer():
    out = assert_redacted(f"sending with bearer {OPAQUE} now", OPAQUE)
    assert out == f"sending with bearer {REDACTED} now"


def test_bearer_in_prose_and_challenges_is_kept():
    for text in (
        "the bearer token expired",
        'WWW-Authenticate: Bearer realm="", error="invalid_token"',
    ):
        assert redact(text) == text


def test_jwt_anywhere():
    out = assert_redacted(f"id token {JWT}.", JWT.split(".")[1])
    assert out == f"id token {REDACTED}."


@pytest.mark.parametrize("token", [ENTRA_REFRESH, MSA_CODE, MSA_TOKEN])
def test_opaque_microsoft_tokens(token):
    assert redact(f"got {token} back") == f"got {REDACTED} back"


def test_short_lookalikes_are_kept():
    text = "version 0.A1 and M.C. Escher and EwB"
    assert redact(text) == text


def test_azure_client_secret():
    assert redact(f"secret {CLIENT_SECRET} rejected") == f"secret {REDACTED} rejected"


KEYS = [
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "client_secret",
    "code_verifier",
    "client_assertion",
    "password",
    "clientState",
    "client_state",
    "validationToken",
    "state",
    "nonce",
    "client_info",
]


@pytest.mark.parametrize("key", KEYS)
def test_form_and_query_string(key):
    text = f"POST /token grant_type=authorization_code&{key}={OPAQUE}&scope=Mail.Send"
    out = assert_redacted(text, OPAQUE)
    assert out.endswith(f"&{key}={REDACTED}&scope=Mail.Send")


@pytest.mark.parametrize("key", KEYS)
def test_json(key):
    body = json.dumps({key: OPAQUE, "token_type": "Bearer", "expires_in": 3599})
    out = assert_redacted(body, OPAQUE)
    assert json.loads(out) == {key: REDACTED, "token_type": "Bearer", "expires_in": 3599}


@pytest.mark.parametrize("key", KEYS)
def test_python_dict_repr(key):
    out = assert_redacted(repr({key: OPAQUE, "other": 1}), OPAQUE)
    assert out == repr({key: REDACTED, "other": 1})


def test_bytes_repr_and_json_inside_a_json_string():
    assert_redacted(repr({"code": OPAQUE.encode()}), OPAQUE)
    nested = json.dumps({"detail": json.dumps({"refresh_token": OPAQUE})})
    out = assert_redacted(nested, OPAQUE)
    assert json.loads(json.loads(out)["detail"]) == {"refresh_token": REDACTED}


def test_quoted_values_with_spaces_and_escapes():
    out = assert_redacted('{"password": "two words \\" and a quote", "user": "x"}', "two words")
    assert out == f'{{"password": "{REDACTED}", "user": "x"}}'


def test_keys_are_whole_words():
    text = "error_code=AADSTS70008 status_code=400 statement=ok encode=utf8"
    assert redact(text) == text


def test_graph_error_codes_are_kept():
    for code in ("ErrorItemNotFound", "itemNotFound", "Authorization_RequestDenied"):
        text = json.dumps({"error": {"code": code, "message": "Not found."}})
        assert redact(text) == text
    assert redact("code=429") == "code=429"


def test_text_without_secrets_is_untouched():
    text = 'https://graph.microsoft.com:443 "GET /v1.0/me/mailFolders/inbox HTTP/1.1" 200 512'
    assert redact(text) == text


# Records through real loggers and handlers.


@pytest.fixture
def root_capture():
    """A handler on the root logger, as Odoo configures one; removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler, stream
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def installed(root_capture):
    prefixes = ("microsoft_outlook_graph", "msal", "urllib3")
    redacting = install_redaction(prefixes)
    yield redacting
    for name in prefixes:
        logging.getLogger(name).removeFilter(redacting)
    for handler in logging.getLogger().handlers:
        handler.removeFilter(redacting)


def test_percent_args_are_formatted_then_redacted(installed, root_capture):
    _handler, stream = root_capture
    logger = logging.getLogger("microsoft_outlook_graph.services.auth")
    logger.info("token answer %s for %r", {"refresh_token": ENTRA_REFRESH}, "alice")
    out = stream.getvalue()
    assert ENTRA_REFRESH not in out
    assert f"token answer {{'refresh_token': '{REDACTED}'}} for 'alice'" in out


@pytest.mark.parametrize("name", ["urllib3.connectionpool", "msal.oauth2cli.oauth2"])
def test_child_loggers_through_a_root_handler(installed, root_capture, name):
    _handler, stream = root_capture
    logging.getLogger(name).debug("POST body: code=%s&code_verifier=%s", MSA_CODE, OPAQUE)
    out = stream.getvalue()
    assert MSA_CODE not in out
    assert OPAQUE not in out
    assert f"{name} POST body: code={REDACTED}&code_verifier={REDACTED}" in out


def test_other_loggers_are_left_alone(installed, root_capture):
    _handler, stream = root_capture
    record = logging.LogRecord("odoo.sql_db", logging.INFO, __file__, 1, "q %s", (OPAQUE,), None)
    installed.filter(record)
    assert (record.msg, record.args) == ("q %s", (OPAQUE,))
    logging.getLogger("requests_toolbelt").info("a %s", "b")
    assert "requests_toolbelt a b" in stream.getvalue()


def test_install_is_idempotent(installed, root_capture):
    handler, _stream = root_capture
    again = install_redaction(("microsoft_outlook_graph", "msal", "urllib3"))
    assert again is installed
    assert handler.filters.count(installed) == 1
    assert logging.getLogger("msal").filters.count(installed) == 1


def test_install_covers_the_named_logger_itself(installed):
    # A record on the named logger is rewritten even if it never reaches the root.
    logger = logging.getLogger("msal")
    stream = io.StringIO()
    own = logging.StreamHandler(stream)
    logger.addHandler(own)
    logger.propagate = False
    try:
        logger.warning("refresh with %s", MSA_TOKEN)
    finally:
        logger.removeHandler(own)
        logger.propagate = True
    assert stream.getvalue() == f"refresh with {REDACTED}\n"


def test_exception_traceback(installed, root_capture):
    _handler, stream = root_capture
    logger = logging.getLogger("microsoft_outlook_graph.services.graph")
    try:
        raise RuntimeError(f"Graph refused Authorization: Bearer {JWT}")
    except RuntimeError:
        logger.exception("sending failed")
    out = stream.getvalue()
    assert "sending failed" in out
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: Graph refused Authorization: Bearer [REDACTED]" in out
    assert JWT.split(".")[1] not in out


def test_traceback_already_formatted_by_another_handler():
    record = logging.LogRecord("msal.token_cache", logging.ERROR, __file__, 1, "failed", (), None)
    record.exc_text = f"Traceback ...\nValueError: refresh_token={OPAQUE}"
    RedactingFilter(("msal",)).filter(record)
    assert OPAQUE not in record.exc_text


def test_arguments_that_do_not_format_still_get_redacted():
    record = logging.LogRecord(
        "urllib3.util", logging.INFO, __file__, 1, "%d tokens", (f"access_token={OPAQUE}",), None
    )
    RedactingFilter(("urllib3",)).filter(record)
    assert OPAQUE not in record.getMessage()
    assert record.args == ()


def test_upload_session_url_credential():
    url = "https://graph.test/api/v2.0/Users('x')/Messages('y')/AttachmentSessions('z')?authtoken=eyJ0eXAiOi.abc"
    assert "authtoken=eyJ" not in redact(f"PUT {url} HTTP/1.1")

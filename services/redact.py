"""Keep tokens, codes and secrets out of log lines and exception texts.

:func:`install_redaction` puts one :class:`RedactingFilter` on the covered
loggers and on every handler of the root logger. Both are needed: a logger's
filters only see records logged on that very logger, not those of its children
(``urllib3.connectionpool``, ``msal.application``), whereas a handler's filters
see every record that propagates to it.
"""

import logging
import re

REDACTED = "[REDACTED]"

DEFAULT_LOGGER_PREFIXES = (
    "odoo.addons.microsoft_outlook_graph",
    # Odoo's controller, which ours extends, logs the state it was given.
    "odoo.addons.microsoft_outlook",
    "microsoft_outlook_graph",
    "msal",
    "requests",
    "urllib3",
    # Odoo's access log prints the query string of the OAuth redirect
    # (code, state) and of the Graph validation handshake.
    "werkzeug",
)

_SECRET_KEYS = (
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
    # Graph's pre-authenticated upload session URLs carry their credential here.
    "authtoken",
)

# An optional quote before a key, the same one after it: bare, 'key', "key"
# or \"key\" (JSON logged inside a JSON string).
_KEY_VALUE_RE = re.compile(
    r"(?<![\w-])(?P<q>\\?[\"']?)(?P<key>" + "|".join(_SECRET_KEYS) + r")(?P=q)"
    r"(?P<sep>\s*[:=]\s*)"
    r"(?P<value>"
    r"\\\"(?:(?!\\\").)*\\\""  # \"...\"
    r"|b?\"(?:[^\"\\]|\\.)*\""  # "..." (JSON, repr)
    r"|b?'(?:[^'\\]|\\.)*'"  # '...' (repr)
    r"|[^\s&#\"',;(){}\[\]<>]+"  # form, query string, bare
    r")",
    re.IGNORECASE | re.DOTALL,
)

# Graph names its errors ("ErrorItemNotFound", "itemNotFound",
# "Authorization_RequestDenied") under a "code" key too: those, and HTTP
# statuses, are worth keeping; an authorization code never looks like that.
_HARMLESS_CODE_RE = re.compile(r"[A-Za-z][a-z]+(?:_?[A-Z][a-z]+)*|\d{1,3}")

_AUTHORIZATION_RE = re.compile(
    r"(?P<head>\bauthorization\\?[\"']?\s*[:=]\s*\\?[\"']?[A-Za-z]+\s+)[^\s\"'\\,;}]+",
    re.IGNORECASE,
)
# Long enough to leave prose ("bearer tokens") and challenges ("Bearer realm=") alone.
_BEARER_RE = re.compile(r"\b(?P<scheme>bearer|pop)\s+[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE)
# Two or more base64url segments after a header that starts with '{"' (JWS, JWE).
_JWT_RE = re.compile(
    r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+){0,2}"
)
# Opaque Microsoft tokens and codes: Entra ID "0.A..." / "1.A...", Microsoft
# account "M.C..." codes and "EwA..."-style tokens, raw or URL-encoded.
_OPAQUE_TOKEN_RE = re.compile(r"(?<![\w.])(?:[01]\.A|M\.C|Ew[A-D])[\w\-.~+/!*$%=]{37,}")
# Azure client secrets: three characters, a digit, "Q~", then 31 to 34 more.
_CLIENT_SECRET_RE = re.compile(r"(?<![\w.~-])[\w.~-]{3}\dQ~[\w.~-]{31,34}(?![\w.~-])")

# Set on a record once rewritten: a record crosses a logger filter and then one
# handler filter per root handler, and formatting it again would cost each time.
_DONE_ATTR = "_microsoft_outlook_graph_redacted"


def _redact_pair(match):
    value = match["value"]
    if value.startswith('\\"'):
        opening, inner, closing = '\\"', value[2:-2], '\\"'
    elif value[0] in "\"'" or value[:2] in ('b"', "b'"):
        cut = value.index(value[-1]) + 1
        opening, inner, closing = value[:cut], value[cut:-1], value[-1]
    else:
        opening, inner, closing = "", value, ""
    if match["key"].lower() == "code" and _HARMLESS_CODE_RE.fullmatch(inner):
        return match[0]
    return f"{match['q']}{match['key']}{match['q']}{match['sep']}{opening}{REDACTED}{closing}"


def redact(text: str) -> str:
    """``text`` with every token, code and secret it holds replaced by ``[REDACTED]``."""
    text = _AUTHORIZATION_RE.sub(rf"\g<head>{REDACTED}", text)
    text = _BEARER_RE.sub(rf"\g<scheme> {REDACTED}", text)
    text = _KEY_VALUE_RE.sub(_redact_pair, text)
    text = _JWT_RE.sub(REDACTED, text)
    text = _OPAQUE_TOKEN_RE.sub(REDACTED, text)
    return _CLIENT_SECRET_RE.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrite the records of the covered loggers with their secrets redacted.

    The message is formatted with its arguments first, because a secret usually
    arrives as an argument; the traceback is formatted and redacted as well, and
    ``exc_info`` dropped so that no handler formats the raw exception again.
    """

    def __init__(self, logger_prefixes=DEFAULT_LOGGER_PREFIXES):
        super().__init__()
        self.names = frozenset()
        self._dotted = ()
        self.cover(logger_prefixes)

    def cover(self, logger_prefixes):
        """Also rewrite the records of these loggers and their children."""
        self.names |= frozenset(logger_prefixes)
        self._dotted = tuple(f"{name}." for name in sorted(self.names))

    def covers(self, name):
        return name in self.names or name.startswith(self._dotted)

    def filter(self, record):
        if getattr(record, _DONE_ATTR, False) or not self.covers(record.name):
            return True
        try:
            message = record.getMessage()
        except Exception:
            # A broken logging call must not leak its arguments either.
            message = f"{record.msg} (arguments that do not format: {record.args!r})"
        record.msg = redact(message)
        record.args = ()
        if record.exc_info or record.exc_text:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _DONE_ATTR, True)
        return True


_FILTER = RedactingFilter(())


def install_redaction(logger_prefixes=DEFAULT_LOGGER_PREFIXES) -> RedactingFilter:
    """Redact the records of these loggers (and their children); safe to call again.

    Handlers added to the root logger after this call are not covered: call it
    once logging is configured (Odoo configures it before loading addons).
    """
    _FILTER.cover(logger_prefixes)
    targets = [logging.getLogger(name) for name in logger_prefixes]
    targets += logging.getLogger().handlers
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
    return _FILTER

"""The one way the addon calls Microsoft Graph.

:class:`GraphClient` owns what every Graph call needs: the URL, the bearer token
(refreshed once on a 401), a ``client-request-id`` per attempt, timeouts, retries
of transient failures within a short inline budget, Microsoft's limit of four
concurrent requests per mailbox, typed errors and one log line per failure.
"""

import logging
import random
import threading
import time
import urllib.parse
import uuid

import requests

from .errors import (
    GraphPermanentError,
    GraphTransientError,
    _lt,
    error_from_exception,
    error_from_graph_response,
)

_logger = logging.getLogger(__name__)

# Outlook serves at most 4 concurrent requests per application and mailbox
# and answers the fifth with 429 (docs/microsoft-facts.md, "Throttling").
MAX_CONCURRENT_PER_MAILBOX = 4
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 1.0

_slots = {}
_slots_lock = threading.Lock()


def _mailbox_slot(key):
    """The process-wide semaphore of one mailbox, shared by every client."""
    with _slots_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = threading.BoundedSemaphore(MAX_CONCURRENT_PER_MAILBOX)
        return slot


def _origin(url):
    split = urllib.parse.urlsplit(url)
    return (split.scheme, split.netloc.lower())


class GraphClient:
    """Microsoft Graph requests for one mailbox with one delegated token.

    ``token_provider(force_refresh=False)`` returns an access token; the caller
    owns storage, refresh and locking. ``mailbox`` is a shared or delegated
    mailbox address reached through ``/users/{address}``; None means the
    signed-in user's own mailbox (``/me``), and then ``account``, the signed-in
    address, puts ``/me`` requests under the same concurrency cap as
    ``/users/{account}`` ones (without it the cap is this client's own).
    """

    def __init__(
        self,
        endpoints,
        session,
        token_provider,
        mailbox=None,
        max_attempts=3,
        timeout=60,
        max_inline_wait=10.0,
        sleep=time.sleep,
        account=None,
    ):
        self.endpoints = endpoints
        self.session = session
        self.token_provider = token_provider
        self.mailbox = mailbox
        self.max_attempts = max(1, max_attempts)
        self.timeout = timeout
        self.max_inline_wait = max_inline_wait
        self.sleep = sleep
        owner = mailbox or account
        self._label = owner or "me"
        self._slot = (
            _mailbox_slot(owner.lower())
            if owner
            else threading.BoundedSemaphore(MAX_CONCURRENT_PER_MAILBOX)
        )
        self._graph_origin = _origin(endpoints.graph_url("/"))

    # -- paths -----------------------------------------------------------------

    def mailbox_path(self, suffix=""):
        """``/me/{suffix}``, or ``/users/{mailbox}/{suffix}`` for another mailbox."""
        base = "/me" if self.mailbox is None else f"/users/{quote_segment(self.mailbox)}"
        suffix = suffix.lstrip("/")
        return f"{base}/{suffix}" if suffix else base

    # -- the request -------------------------------------------------------------

    def request(
        self,
        method,
        path_or_url,
        *,
        params=None,
        json=None,
        data=None,
        headers=None,
        expected=(200, 201, 202, 204),
        stream=False,
        authorize=True,
    ):
        """Send one Graph request, retrying what can be retried, and return the response.

        ``authorize=False`` sends no bearer token (pre-authenticated upload URLs).
        A bearer token is only ever sent to the Graph host. Raises a
        :class:`~.errors.GraphError` subclass unless the status is in ``expected``.
        With ``stream=True`` the mailbox slot is freed once the headers are in: the
        caller reads (and closes) the body outside the concurrency cap.
        """
        url = self.endpoints.graph_url(path_or_url)
        if authorize and _origin(url) != self._graph_origin:
            raise ValueError("Refusing to send the Graph access token to another host.")
        method = method.upper()
        token = self.token_provider(force_refresh=False) if authorize else None
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            request_headers = dict(headers or {})
            client_request_id = str(uuid.uuid4())
            request_headers["client-request-id"] = client_request_id
            request_headers["return-client-request-id"] = "true"
            if token:
                request_headers["Authorization"] = f"Bearer {token}"
            try:
                with self._slot:
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=request_headers,
                        timeout=self.timeout,
                        stream=stream,
                    )
            except requests.RequestException as exc:
                error = error_from_exception(exc)
                retry = isinstance(error, GraphTransientError)
                wait = self._wait_before_retry(error, attempt) if retry else None
                self._log_failure(method, url, error, client_request_id, attempt, wait)
                if wait is None:
                    raise error from None
                self.sleep(wait)
                continue

            status = response.status_code
            # urllib3 1.26 (Odoo 19's pin) hands over a body that stopped before its
            # Content-Length without a word (2.x raises): such a cut is tried again.
            cut = status in expected and not stream and method != "HEAD"
            cut = cut and body_cut_short(response)
            if status in expected and not cut:
                self._log_success(method, url, response, client_request_id)
                return response
            error = self._error_for(response, cut)
            if status == 401 and token and not refreshed:
                self._log_failure(method, url, error, client_request_id, attempt, 0.0)
                response.close()
                refreshed = True
                attempt -= 1  # a token refresh is not a transient retry
                token = self.token_provider(force_refresh=True)
                continue
            wait = None
            if (cut or status in RETRY_STATUSES) and isinstance(error, GraphTransientError):
                wait = self._wait_before_retry(error, attempt)
            self._log_failure(method, url, error, client_request_id, attempt, wait)
            response.close()
            if wait is None:
                raise error
            self.sleep(wait)

    def _error_for(self, response, cut=False):
        status = response.status_code
        if cut:
            return GraphTransientError(
                _lt("Microsoft Graph sent an incomplete answer; the request will be tried again."),
                status=status,
                code="IncompleteRead",
                request_id=response.headers.get("request-id"),
            )
        if status < 400:
            return GraphPermanentError(
                _lt("Microsoft Graph gave an unexpected answer."),
                status=status,
                request_id=response.headers.get("request-id"),
            )
        return error_from_graph_response(response)

    def _wait_before_retry(self, error, attempt):
        """Seconds to sleep before the next attempt, or None to give up now.

        Giving up leaves ``error.retry_after`` set, so the caller can queue the
        work for later instead of holding a worker.
        """
        wait = error.retry_after
        if wait is None:
            # Exponential backoff, half of it random so that workers spread out.
            ceiling = BACKOFF_BASE * 2 ** (attempt - 1)
            wait = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311
            error.retry_after = wait
        if attempt >= self.max_attempts or wait > self.max_inline_wait:
            return None
        return wait

    # -- logging -------------------------------------------------------------------

    def _log_failure(self, method, url, error, client_request_id, attempt, wait):
        """One line per failed attempt: never headers, tokens, query strings or bodies."""
        level = logging.INFO if wait is not None else logging.WARNING
        outcome = f"retrying in {wait:.2f}s" if wait is not None else "giving up"
        _logger.log(
            level,
            "[Graph API] %s %s -> %s %s request-id=%s client-request-id=%s mailbox=%s "
            "(attempt %d/%d, %s)",
            method,
            urllib.parse.urlsplit(url).path,
            error.status or "no answer",
            error.code or "-",
            error.request_id or "-",
            client_request_id,
            self._label,
            attempt,
            self.max_attempts,
            outcome,
        )

    def _log_success(self, method, url, response, client_request_id):
        if _logger.isEnabledFor(logging.DEBUG):
            _logger.debug(
                "[Graph API] %s %s -> %s request-id=%s client-request-id=%s mailbox=%s",
                method,
                urllib.parse.urlsplit(url).path,
                response.status_code,
                response.headers.get("request-id", "-"),
                client_request_id,
                self._label,
            )

    # -- helpers -------------------------------------------------------------------

    def get_json(self, path, params=None, headers=None):
        response = self.request("GET", path, params=params, headers=headers)
        return self.json_of(response)

    @staticmethod
    def json_of(response):
        """The JSON body of a successful answer; a cut or garbled body is transient."""
        try:
            return response.json()
        except ValueError:
            raise GraphTransientError(
                _lt("Microsoft Graph sent an incomplete answer; the request will be tried again."),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            ) from None

    def pages(self, path, params=None, headers=None):
        """Each page (the whole JSON object) of a collection, following ``@odata.nextLink``.

        The query options go on the first request only: the next links carry them.
        """
        page = self.get_json(path, params=params, headers=headers)
        while True:
            yield page
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            page = self.get_json(next_link, headers=headers)

    def iter_pages(self, path, params=None, headers=None):
        """Each item of a collection, across all its pages."""
        for page in self.pages(path, params=params, headers=headers):
            yield from page.get("value", [])

    def me(self, select=("id", "displayName", "mail", "userPrincipalName")):
        return self.get_json("/me", params={"$select": ",".join(select)} if select else None)

    def user(self, id_or_address, select=("id", "displayName", "mail", "userPrincipalName")):
        return self.get_json(
            f"/users/{quote_segment(id_or_address)}",
            params={"$select": ",".join(select)} if select else None,
        )


def body_cut_short(response):
    """True when fewer bytes came over the wire than the answer's Content-Length said.

    ``raw.tell()`` counts the bytes read from the connection (before any decompression),
    which is what Content-Length counts. Answers without a length (chunked) or without a
    urllib3 body are never judged here: urllib3 raises on a cut chunked body.
    """
    length = response.headers.get("Content-Length")
    tell = getattr(response.raw, "tell", None)
    if not length or not length.isdigit() or tell is None:
        return False
    try:
        return tell() < int(length)
    except (TypeError, ValueError):
        return False


def quote_segment(value):
    """An id or address as one URL path segment ("@" is legal there and kept readable)."""
    return urllib.parse.quote(str(value), safe="@")

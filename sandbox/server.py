"""The HTTPS server: TLS from a throw-away CA, the request pipeline, faults and the request log."""

import contextlib
import json
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme

from .errors import ENTRA_TEXTS, EntraError, GraphError, HttpError
from .limits import MAX_REQUEST_BODY
from .web import Request, Response, html_page, html_response


@dataclass(frozen=True)
class LogEntry:
    method: str
    path: str
    query: dict
    status: int | None  # None: the connection was dropped before any answer
    mailbox: str | None
    client_request_id: str | None
    time: float
    request_id: str
    app_id: str | None
    fault: str | None

    def __getitem__(self, key):
        return getattr(self, key)


def family_of(path):
    return "graph" if path.startswith("/v1.0/") or path == "/v1.0" else "entra"


class _TlsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, context, pipeline):
        self.context = context
        self.pipeline = pipeline
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so one slow
        # client cannot hold up the accept loop.
        request.settimeout(30)
        # Headers and body go out as separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to each answer.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _wait_latency(self.pipeline.sb)  # the round trip of the handshake
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:  # the client went away (ssl.SSLError is an OSError)
            pass
        finally:
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_WR)
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120

    def version_string(self):
        return "M365Sandbox/1.0"

    def log_message(self, format, *args):
        # Request lines may carry secrets; the sandbox keeps its own structured log.
        pass

    def _dispatch(self):
        self.server.pipeline.handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class HttpsServer:
    """A ThreadingHTTPServer on host:port behind TLS, with its CA written to a PEM file."""

    def __init__(self, host, port, pipeline):
        self.host = host
        self._ca = trustme.CA(organization_name="Microsoft 365 sandbox")
        cert = self._ca.issue_cert(host, "127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._dir = tempfile.mkdtemp(prefix="m365-sandbox-")
        self.ca_file = os.path.join(self._dir, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)
        self._server = _TlsHttpServer((host, port), context, pipeline)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def start(self):
        self._thread.start()

    def write_ca(self, path):
        self._ca.cert_pem.write_to_path(path)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)


def _wait_latency(sandbox):
    latency = sandbox.limits.latency
    if latency > 0:
        time.sleep(latency)


def _read_body(handler, limit):
    """(body, too_large); an oversized body is read and thrown away so the answer arrives."""
    headers = handler.headers
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        body = b"".join(chunks)
        return (b"", True) if len(body) > limit else (body, False)
    length = int(headers.get("Content-Length") or 0)
    if length <= limit:
        return handler.rfile.read(length), False
    while length > 0:
        chunk = handler.rfile.read(min(length, 1 << 20))
        if not chunk:
            break
        length -= len(chunk)
    return b"", True


def _status_fault(fault, family, request):
    if fault.body is not None:
        if isinstance(fault.body, dict):
            response = Response(fault.status, json.dumps(fault.body).encode(), "application/json")
        else:
            body = fault.body.encode("utf-8") if isinstance(fault.body, str) else fault.body
            response = Response(fault.status, body, "text/html; charset=utf-8")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response
    if family == "graph":
        return GraphError(fault.status, fault.code, retry_after=fault.retry_after).render(request)
    code = fault.code if fault.code in ENTRA_TEXTS else (90055 if fault.status == 429 else 90033)
    error = EntraError(code, status=fault.status)
    if fault.retry_after is not None:
        error.headers["Retry-After"] = str(fault.retry_after)
    return error.render(request)


def _not_found(request, family, allowed):
    if family == "graph":
        if allowed:
            return GraphError(405)
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        return GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    return None


class Pipeline:
    """Runs one request: route, faults, prelude (auth, limits), handler, log."""

    def __init__(self, sandbox):
        self.sb = sandbox

    def handle(self, handler):
        try:
            self._handle(handler)
        except OSError:
            raise
        except Exception:  # a sandbox bug or a request it cannot parse: keep it for the test
            self.sb.server_errors.append(traceback.format_exc())
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.send_error(500)

    def _handle(self, handler):
        sb = self.sb
        request = Request(handler.command, handler.path, handler.headers, b"", sb.base_url)
        request.now = sb.clock.now()
        request.epoch = sb.epoch
        request.request_id = str(uuid.uuid4())
        request.client_request_id = request.client_request_id or request.request_id
        route, found = sb.router.match(request.method, request.path)
        params, allowed = (found, []) if route else ({}, found)
        family = route.family if route else family_of(request.path)
        limit = MAX_REQUEST_BODY if family == "graph" else 64 * MAX_REQUEST_BODY
        request.body, too_large = _read_body(handler, limit)
        _wait_latency(sb)
        request.params = params
        if route and route.peek:
            with sb.lock:
                request.mailbox = route.peek(request)
        fault = sb.faults.pick(request)
        # Each entry is logged before the client can see anything, so a client that has
        # its answer (or its dropped connection) always finds the entry in the log.
        if fault and fault.kind == "reset":
            self._log(request, None, fault)
            self._drop(handler)
            return
        if fault and fault.kind == "status":
            response = _status_fault(fault, family, request)
        else:
            response = self._run(request, route, allowed, family, too_large, fault)
        response.headers.setdefault("request-id", request.request_id)
        response.headers.setdefault("client-request-id", request.client_request_id)
        self._log(request, response.status, fault)
        if fault and fault.kind == "accept_then_drop":
            self._drop(handler)
        else:
            self._send(handler, request, response, cut=bool(fault and fault.kind == "cut"))

    def _run(self, request, route, allowed, family, too_large, fault):
        sb = self.sb
        release = None
        error = None
        try:
            if too_large:
                raise GraphError(413, message="The maximum request length supported is 4MB.")
            if route is None:
                missing = _not_found(request, family, allowed)
                if missing is not None:
                    raise missing
                return html_response(404, html_page("Not found", "<h1>404 Not found</h1>"))
            if route.prelude:
                with sb.lock:
                    release = route.prelude(request, route)
        except HttpError as exc:
            error = exc
        try:
            if fault and fault.kind == "timeout":
                fault.hold()
                if sb.epoch != request.epoch:
                    return GraphError(503).render(request)
            if error is not None:
                return error.render(request)
            with sb.lock:
                return route.handler(request)
        except HttpError as exc:
            return exc.render(request)
        except Exception:  # a sandbox bug: answer 500 and keep it for the test to see
            sb.server_errors.append(traceback.format_exc())
            return GraphError(500).render(request)
        finally:
            if release is not None:
                release()

    def _send(self, handler, request, response, cut=False):
        body = b"" if request.method == "HEAD" else response.body
        handler.send_response(response.status)
        if response.content_type:
            handler.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        if cut:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2] if cut else body)
        handler.wfile.flush()
        if cut:
            handler.close_connection = True

    def _drop(self, handler):
        """Close the connection with a TCP reset and no answer."""
        handler.close_connection = True
        try:
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.connection.close()
        except OSError:
            pass

    def _log(self, request, status, fault):
        entry = LogEntry(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            status=status,
            mailbox=request.mailbox,
            client_request_id=request.headers.get("client-request-id"),
            time=request.now,
            request_id=request.request_id,
            app_id=request.app_id,
            fault=fault.kind if fault else None,
        )
        with self.sb.lock:
            if self.sb.epoch == request.epoch:
                self.sb.log.append(entry)

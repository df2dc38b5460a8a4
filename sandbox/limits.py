"""Outlook's per application and mailbox limits (docs/microsoft-facts.md, "Throttling").

Windows are in seconds of the sandbox clock multiplied by time_scale, so a test may shrink
"10,000 requests per 10 minutes" to, say, 5 requests per 0.6 s.

Codes chosen where Microsoft documents none: a request body over MAX_REQUEST_BODY answers
413 RequestEntityTooLarge (the facts only say "limited to about 4 MB"); a message over
MAX_MESSAGE_SIZE answers 413 ErrorMessageSizeExceeded (Exchange's name for it).
"""

import collections
import math
import threading

MB = 1024 * 1024
MAX_REQUEST_BODY = 4 * MB
MAX_MESSAGE_SIZE = 35 * MB
MAX_UPLOAD_CHUNK = 4 * MB
MIN_UPLOAD_SESSION = 3 * MB
MAX_ATTACHMENT_SIZE = 150 * MB

DEFAULTS = {
    "request_budget": 10_000,
    "budget_window": 600.0,
    "concurrency": 4,
    "upload_budget": 150 * MB,
    "upload_window": 300.0,
    "time_scale": 1.0,
    # How Retry-After is written on a 429: "int" (rounded up), "float" or None (absent).
    "retry_after_style": "int",
    # Retry-After of a concurrency 429, before the style is applied.
    "concurrency_retry_after": 1.0,
    # Seconds every answer waits before it goes out, and every new connection before its TLS
    # handshake: a network round trip, for benchmarks (bench/). Wall time, not time_scale'd.
    "latency": 0.0,
}


def message_too_large(size):
    return size > MAX_MESSAGE_SIZE


class Limits:
    def __init__(self, clock):
        self.clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.__dict__.update(DEFAULTS)
            self._requests = collections.defaultdict(collections.deque)
            self._uploads = collections.defaultdict(collections.deque)
            self._running = collections.Counter()

    def configure(self, **settings):
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown limit settings: {sorted(unknown)}")
        with self._lock:
            self.__dict__.update(settings)

    def retry_after(self, seconds):
        """Seconds -> Retry-After header value per retry_after_style (None: no header)."""
        if self.retry_after_style is None:
            return None
        if self.retry_after_style == "int":
            return max(1, math.ceil(seconds))
        return round(max(seconds, 0.001), 3)

    def _window(self, base):
        return base * self.time_scale

    def admit(self, app_id, mailbox_id):
        """Count one request; seconds to wait when over budget (then it is not counted)."""
        now = self.clock.now()
        window = self._window(self.budget_window)
        with self._lock:
            seen = self._requests[(app_id, mailbox_id)]
            while seen and seen[0] <= now - window:
                seen.popleft()
            if len(seen) >= self.request_budget:
                return seen[0] + window - now
            seen.append(now)
            return None

    def enter(self, app_id, mailbox_id):
        """Take a concurrency slot: a callable that gives it back, or None when all are taken."""
        key = (app_id, mailbox_id)
        with self._lock:
            # Bound to this counter, so a request still running across reset() cannot
            # give back a slot of the new one.
            running = self._running
            if running[key] >= self.concurrency:
                return None
            running[key] += 1

        def leave():
            with self._lock:
                running[key] -= 1

        return leave

    def in_flight(self, app_id, mailbox_id):
        with self._lock:
            return self._running[(app_id, mailbox_id)]

    def account_upload(self, app_id, mailbox_id, size):
        """Count size uploaded bytes; seconds to wait when over the upload budget."""
        now = self.clock.now()
        window = self._window(self.upload_window)
        with self._lock:
            seen = self._uploads[(app_id, mailbox_id)]
            while seen and seen[0][0] <= now - window:
                seen.popleft()
            if sum(n for _, n in seen) + size > self.upload_budget:
                return (seen[0][0] + window - now) if seen else window
            seen.append((now, size))
            return None

"""Injected faults: what the network or Microsoft's front door may do to a request.

Kinds, applied to requests whose path matches the regex (re.search), method and mailbox:
- "status": answer `status` at once with a Graph- or Entra-shaped error body (by path), or
  with `body` (str/bytes as HTML, dict as JSON); `Retry-After: retry_after` when given.
- "reset": close the connection with a TCP reset before any answer; nothing runs.
- "timeout": hold the request `seconds` (or until `release()`, whichever comes first), then
  run it and answer (to a client that has probably given up); a held Graph request keeps its
  concurrency slot. A test that must act while requests are held gives a generous `seconds`
  and releases them itself, instead of betting on how fast the machine reaches them.
- "cut": run the request, send the headers and half the body, then close. An empty body
  has no half: such answers arrive whole.
- "accept_then_drop": run the request (its effect is committed), then reset the connection.
`times` matching requests fire (None: all); with `probability` each match fires on a draw
from the sandbox's seeded random generator, so a run is reproducible from the seed.
"""

import re
import threading
from dataclasses import dataclass, field

KINDS = ("status", "reset", "timeout", "cut", "accept_then_drop")


@dataclass(eq=False)
class Fault:
    kind: str
    path: re.Pattern | None = None
    method: str | None = None
    mailbox: str | None = None
    times: int | None = 1
    status: int = 503
    retry_after: float | str | None = None
    probability: float | None = None
    seconds: float = 5.0
    code: str | None = None
    body: object = None
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def hold(self):
        """Hold a request of a timeout fault: `seconds`, or until released."""
        self.released.wait(self.seconds)

    def release(self):
        """Let every request this fault holds (and will hold) run now."""
        self.released.set()

    def matches(self, request):
        if self.method and self.method.upper() != request.method:
            return False
        if self.path is not None and not self.path.search(request.path):
            return False
        return not self.mailbox or (request.mailbox or "").lower() == self.mailbox.lower()


class FaultInjector:
    def __init__(self, rng):
        self.rng = rng
        self.faults = []
        self._lock = threading.Lock()

    def add(self, kind, path=None, method=None, mailbox=None, times=1, status=503, **options):
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}")
        fault = Fault(
            kind,
            re.compile(path) if path else None,
            method,
            mailbox,
            times,
            status,
            **options,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def remove(self, fault):
        with self._lock:
            if fault in self.faults:
                self.faults.remove(fault)
        fault.release()

    def clear(self):
        """Forget every fault; requests they hold run now (they belong to the old state)."""
        with self._lock:
            dropped, self.faults = self.faults, []
        for fault in dropped:
            fault.release()

    def release_all(self):
        """Let every held request run now (the sandbox is stopping)."""
        with self._lock:
            faults = list(self.faults)
        for fault in faults:
            fault.release()

    def pick(self, request):
        """The first matching fault that fires for this request, or None."""
        with self._lock:
            for fault in self.faults:
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if not fault.matches(request):
                    continue
                # One draw per candidate keeps a seeded run reproducible.
                if fault.probability is not None and self.rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                return fault
        return None

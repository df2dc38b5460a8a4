"""Issue 5's sending benchmark: Odoo's mail queue through Microsoft Graph against SMTP.

    /opt/odoo19venv/bin/python bench/send_throughput.py [--mails 500] [--latency 0.03]

One run, side by side, in a real Odoo 19 with the addon installed on a throwaway database:

- Graph: the mails go through Odoo's queue (``mail.mail.process_email_queue``) to the local
  Microsoft 365 sandbox, started in this process with ``latency`` seconds before every answer
  (and before every TLS handshake), through an outgoing server connected the way the Odoo
  suite does it (the sandbox plays the consent page). Twice: "Save to Sent Items" on (the
  default: MIME draft with an immutable id, then /send) and off (one sendMail).
- SMTP: the same mails through the same queue to an aiosmtpd sink on 127.0.0.1 that waits
  ``latency`` seconds before every reply (greeting, EHLO, MAIL, RCPT, DATA, end of data, QUIT).

It prints mails per second and their ratio, Graph requests per mail (under 3 MB and larger,
from the sandbox's request log), TLS connections opened, where the time of a mail goes, and
the peak memory (tracemalloc) while one 30 MB mail is sent, measured in a child process so
that the sandbox's and the sink's own allocations do not count. See bench/README.md.
"""

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import logging
import pstats
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KB,
    MB,
    SENDER,
    VAR,
    add_database_options,
    bench_main,
    connect_through_consent,
    emit,
    environment,
    find_odoo,
    free_port,
    machine,
    new_parser,
    open_registry,
    start_sandbox,
    tagged,
)

RECIPIENT = "customer@example.com"
# Size classes of issue 5, as (share, smallest, largest) MIME sizes.
SIZE_CLASSES = (("small", 0.80, 2 * KB, 50 * KB), ("medium", 0.18, 50 * KB, 2 * MB))
LARGE = ("large", 0.02, 5 * MB, 30 * MB)
# What Odoo's MIME adds around an attachment (headers, HTML and text bodies, boundaries).
MIME_OVERHEAD = 2200
ONE_REQUEST_LIMIT = 3 * MB
BODY = "<p>Dear customer,</p><p>Please find document {n} attached.</p><p>-- Contoso</p>"


# setup ---------------------------------------------------------------------------------


def ensure_aiosmtpd(python):
    """pip install aiosmtpd into Odoo's environment, Odoo's own pins frozen as constraints."""
    probe = subprocess.run([python, "-c", "import aiosmtpd"], capture_output=True, check=False)
    if not probe.returncode:
        return
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = VAR / "bench-constraints.txt"
    constraints.write_text(frozen, encoding="utf-8")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "-c", str(constraints), "aiosmtpd"], check=True
    )
    constraints.unlink()


# the mails -----------------------------------------------------------------------------


def plan_sizes(count, seed):
    """Target MIME sizes of ``count`` mails: 80% under 50 KB, 18% to 2 MB, 2% 5 to 30 MB."""
    rng = random.Random(seed)
    large = round(count * LARGE[1])
    medium = round(count * SIZE_CLASSES[1][1])
    small = count - large - medium
    sizes = [rng.randrange(SIZE_CLASSES[0][2], SIZE_CLASSES[0][3]) for _ in range(small)]
    sizes += [rng.randrange(SIZE_CLASSES[1][2], SIZE_CLASSES[1][3]) for _ in range(medium)]
    sizes += [rng.randrange(LARGE[2], LARGE[3] + 1) for _ in range(large)]
    rng.shuffle(sizes)
    return sizes


def attachment_bytes(mime_size, seed):
    """Random (incompressible) bytes whose base64 fills a MIME of about mime_size."""
    raw = max(0, mime_size - MIME_OVERHEAD) * 57 // 78  # 57 bytes -> a 76-character line + CRLF
    return random.Random(seed).randbytes(raw)


def create_attachments(env, sizes, seed):
    ids = []
    for index, size in enumerate(sizes):
        data = attachment_bytes(size, seed * 1_000_003 + index)
        if not data:
            ids.append(None)
            continue
        attachment = env["ir.attachment"].create(
            {"name": f"document-{index}.bin", "raw": data, "mimetype": "application/octet-stream"}
        )
        ids.append(attachment.id)
        env.cr.commit()
    return ids


def create_mails(env, server, attachment_ids, label):
    mails = env["mail.mail"]
    for index, attachment_id in enumerate(attachment_ids):
        mails |= env["mail.mail"].create(
            {
                "email_from": f"Contoso Admin <{SENDER}>",
                "email_to": RECIPIENT,
                "subject": f"{label} document {index}",
                "body_html": BODY.format(n=index),
                "mail_server_id": server.id,
                "auto_delete": False,
                "attachment_ids": [(6, 0, [attachment_id] if attachment_id else [])],
            }
        )
    env.cr.commit()
    return mails


# the Microsoft 365 sandbox -------------------------------------------------------------


class SandboxMeter:
    """Counts the sandbox's TLS connections and the CPU time of its own work.

    The sandbox runs in this process, so its work (TLS, parsing and storing the MIME) shares
    the CPUs and the GIL with Odoo, where Microsoft's would run elsewhere. ``cpu`` is the
    CPU time of its handler threads in handshakes and requests (bench-side wrappers).
    """

    def __init__(self, sb):
        self.connections = 0
        self.cpu = 0.0
        server = sb._server._server
        meter = self

        class TimedContext:
            def __init__(self, context):
                self.context = context

            def wrap_socket(self, *args, **kwargs):
                started = time.thread_time()
                try:
                    return self.context.wrap_socket(*args, **kwargs)
                finally:
                    meter.connections += 1
                    meter.cpu += time.thread_time() - started

            def __getattr__(self, name):
                return getattr(self.context, name)

        server.context = TimedContext(server.context)
        handle = server.pipeline.handle

        def timed_handle(handler):
            started = time.thread_time()
            try:
                return handle(handler)
            finally:
                meter.cpu += time.thread_time() - started

        server.pipeline.handle = timed_handle


def connect_graph_server(env, sb):
    """An outgoing server of type Graph, connected as tests/common.py connect_without_browser."""
    server = env["ir.mail_server"].create(
        {
            "name": "Bench Graph",
            "smtp_authentication": "microsoft_graph",
            "smtp_user": SENDER,
            "from_filter": SENDER,
            "microsoft_graph_mailbox_kind": "personal",
            "sequence": 1,
            # The transport is measured here, not Exchange's pacing (bench/send_pacing.py):
            # SMTP gets no such limits either.
            "microsoft_graph_recipients_per_day": 0,
            "microsoft_graph_messages_per_minute": 0,
        }
    )
    sb.configure_sending_limits(recipients_per_day=None, messages_per_minute=None)
    connect_through_consent(env, server, sb)
    env.cr.commit()
    return server


# the SMTP sink -------------------------------------------------------------------------


class Sink:
    """aiosmtpd handler: counts the messages, bytes and sessions, keeps nothing."""

    def __init__(self):
        self.messages = 0
        self.bytes = 0
        self.sessions = 0
        self.thread = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        self.bytes += len(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    @property
    def cpu(self):
        """CPU seconds of the sink's thread (its asyncio loop) so far."""
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))


def start_smtp_sink(latency):
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - installed by the setup step
    from aiosmtpd.smtp import SMTP  # noqa: PLC0415

    class SlowSMTP(SMTP):
        async def push(self, status):
            # One wait per reply: a multi-line reply ("250-...") waits on its last line only.
            text = status.decode() if isinstance(status, bytes) else status
            if latency and text[3:4] != "-":
                await asyncio.sleep(latency)
            await super().push(status)

    class SlowController(Controller):
        def factory(self):
            return SlowSMTP(self.handler, **self.SMTP_kwargs)

    sink = Sink()
    controller = SlowController(
        sink, hostname="127.0.0.1", port=free_port(), data_size_limit=64 * MB
    )
    controller.start()
    sink.thread = controller._thread
    return sink, controller


def create_smtp_server(env, port):
    server = env["ir.mail_server"].create(
        {
            "name": "Bench SMTP sink",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_encryption": "none",
            "smtp_authentication": "login",
            "from_filter": SENDER,
            "sequence": 2,
        }
    )
    env.cr.commit()
    return server


# measuring -----------------------------------------------------------------------------


class Probe:
    """Wraps ir.mail_server.send_email and _microsoft_graph_send on the registry's class.

    Records, per Message-Id, the seconds inside send_email (Odoo's last preparation of the
    message, then the transport), inside the Graph send, and the sandbox requests it made.
    """

    NAMES = ("send_email", "_microsoft_graph_send")

    def __init__(self, env, sb):
        self.records = {}
        self.cls = type(env["ir.mail_server"])
        self.saved = {name: self.cls.__dict__.get(name) for name in self.NAMES}
        send_email, graph_send = self.cls.send_email, self.cls._microsoft_graph_send
        record = self.record

        def timed_send_email(server, message, *args, **kwargs):
            started = time.perf_counter()
            try:
                return send_email(server, message, *args, **kwargs)
            finally:
                record(message)["send_email"] += time.perf_counter() - started

        def timed_graph_send(server, message, *args, **kwargs):
            requests = len(sb.log)
            started = time.perf_counter()
            try:
                return graph_send(server, message, *args, **kwargs)
            finally:
                entry = record(message)
                entry["graph"] += time.perf_counter() - started
                entry["requests"] += len(sb.log) - requests

        self.cls.send_email = timed_send_email
        self.cls._microsoft_graph_send = timed_graph_send

    def record(self, message):
        key = str(message["Message-Id"]).strip()
        return self.records.setdefault(key, collections.Counter())

    def close(self):
        for name, value in self.saved.items():
            if value is None:
                delattr(self.cls, name)
            else:
                setattr(self.cls, name, value)


def send_queue(registry, api, mail_ids, profile=None):
    """Send through Odoo's queue run, as the mail cron does; (seconds, states, failures)."""
    with environment(registry, api) as env:
        started = time.perf_counter()
        if profile:
            profile.enable()
        try:
            env["mail.mail"].process_email_queue(email_ids=mail_ids)
        finally:
            if profile:
                profile.disable()
        seconds = time.perf_counter() - started
        env.invalidate_all()
        mails = env["mail.mail"].browse(mail_ids)
        states = collections.Counter(mails.mapped("state"))
        failures = mails.filtered(lambda m: m.state != "sent")[:3].mapped("failure_reason")
    return seconds, states, failures


def set_save_to_sent_items(registry, api, server_id, value):
    with environment(registry, api) as env:
        env["ir.mail_server"].browse(server_id).microsoft_graph_save_to_sent_items = value
        env.cr.commit()


@contextlib.contextmanager
def one_connection_per_queue_run(active):
    """What-if (bench only): every Graph client of the run shares one requests session.

    The addon builds a GraphClient, so a requests session and a TLS connection, per mail;
    this measures what keeping one for the batch (as Odoo keeps its SMTP session) would give.
    """
    if not active:
        yield
        return
    from odoo.addons.microsoft_outlook_graph.services.endpoints import (  # noqa: PLC0415
        Endpoints,
    )

    original, sessions = Endpoints.session, {}

    def shared_session(endpoints):
        if endpoints.ca_file not in sessions:
            sessions[endpoints.ca_file] = original(endpoints)
        return sessions[endpoints.ca_file]

    Endpoints.session = shared_session
    try:
        yield
    finally:
        Endpoints.session = original
        for session in sessions.values():
            session.close()


def new_result(label):
    return {
        "label": label,
        "mails": 0,
        "seconds": 0.0,
        "cpu": 0.0,
        "server_cpu": 0.0,
        "states": collections.Counter(),
        "failures": [],
        "records": {},
        "graph_requests": 0,
        "connections": 0,
        "sizes": {},
        "profile": cProfile.Profile(),
    }


def run_path(bench, result, server_id, attachment_ids, profile=False):
    """One queue run: a mail per attachment for this server, sent; added to result."""
    label = result["label"]
    if label != "smtp":
        set_save_to_sent_items(bench.registry, bench.api, server_id, label != "graph_fast")
    with environment(bench.registry, bench.api) as env:
        mails = create_mails(env, env["ir.mail_server"].browse(server_id), attachment_ids, label)
        mail_ids = mails.ids
    bench.probe.records = result["records"]
    sb, meter, sink = bench.sb, bench.meter, bench.sink
    log_before, outbox_before, connections = len(sb.log), len(sb.outbox()), meter.connections
    server_before = meter.cpu + sink.cpu
    cpu_before = time.process_time()
    with one_connection_per_queue_run(label == "graph_reuse"):
        seconds, states, failures = send_queue(
            bench.registry, bench.api, mail_ids, result["profile"] if profile else None
        )
    result["cpu"] += time.process_time() - cpu_before
    result["server_cpu"] += meter.cpu + sink.cpu - server_before
    result["mails"] += len(mail_ids)
    result["seconds"] += seconds
    result["states"].update(states)
    result["failures"] += failures
    result["graph_requests"] += len(sb.log) - log_before
    result["connections"] += meter.connections - connections
    for delivery in sb.outbox()[outbox_before:]:
        result["sizes"][delivery.internet_message_id.strip()] = len(delivery.raw)
    return result


def graph_request_counts(run):
    """Requests per mail, under ONE_REQUEST_LIMIT and from it, from the per-mail log deltas."""
    small, large = [], []
    for message_id, record in run["records"].items():
        size = run["sizes"].get(message_id)
        if size is not None:
            (small if size < ONE_REQUEST_LIMIT else large).append(record["requests"])
    return small, large


# peak memory of one 30 MB mail, in a child process --------------------------------------


def memory_child(options):
    """Send one mail of about options.memory_size through options.server_id; print JSON.

    tracemalloc starts just before Odoo's queue run, so "whole" is everything the run
    allocated (Odoo reading the attachment, building the MIME, the transport); "transport" is
    the rise inside ir.mail_server.send_email over what was held when it was called (Odoo's
    MIME object among it), "graph" the rise inside _microsoft_graph_send, "sender" the rise
    inside GraphSender.send, which is given Odoo's message object and flattens only what goes
    into the draft: the addon's own part.
    """
    src, _python = find_odoo()
    registry, api = open_registry(src, options.database)
    with environment(registry, api) as env:
        data = attachment_bytes(options.memory_size, 424242)
        attachment = env["ir.attachment"].create(
            {"name": "big.bin", "raw": data, "mimetype": "application/octet-stream"}
        )
        del data
        server = env["ir.mail_server"].browse(options.server_id)
        mail_id = create_mails(env, server, [attachment.id], "memory").id
    measured = {"peaks": []}

    def rise_inside(name, method):
        peaks = measured["peaks"]

        def measured_call(server, message, *args, **kwargs):
            current, peak = tracemalloc.get_traced_memory()
            peaks.append(peak)
            since = len(peaks)
            tracemalloc.reset_peak()
            try:
                return method(server, message, *args, **kwargs)
            finally:
                # A nested measured call resets the peak too; it left its peaks in the list.
                peak = max([tracemalloc.get_traced_memory()[1], *peaks[since:]])
                peaks.append(peak)
                measured[name] = peak - current
                if name == "transport":
                    measured["size"] = len(message.as_bytes())

        return measured_call

    from odoo.addons.microsoft_outlook_graph.services.send import GraphSender  # noqa: PLC0415

    sender_send = GraphSender.send
    GraphSender.send = rise_inside("sender", sender_send)
    with environment(registry, api) as env:
        cls = type(env["ir.mail_server"])
        cls.send_email = rise_inside("transport", cls.send_email)
        cls._microsoft_graph_send = rise_inside("graph", cls._microsoft_graph_send)
        gc.collect()
        tracemalloc.start()
        try:
            env["mail.mail"].process_email_queue(email_ids=[mail_id])
            measured["peaks"].append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
            del cls.send_email
            del cls._microsoft_graph_send
            GraphSender.send = sender_send
        measured["whole"] = max(measured.pop("peaks"))
        env.invalidate_all()
        mail = env["mail.mail"].browse(mail_id)
        measured["state"] = mail.state
        measured["failure"] = mail.failure_reason or ""
    emit("MEMORY", measured)
    return 0


def measure_memory(python, database, server_id, size):
    answer = subprocess.run(
        [
            python,
            str(Path(__file__).resolve()),
            "--memory-child",
            f"--database={database}",
            f"--server-id={server_id}",
            f"--memory-size={size}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in answer.stdout.splitlines():
        measured = tagged(line, "MEMORY")
        if measured is not None:
            return measured
    raise RuntimeError(f"the memory run failed:\n{answer.stdout[-2000:]}\n{answer.stderr[-3000:]}")


# report --------------------------------------------------------------------------------

MEMORY_PARTS = (("graph", "_microsoft_graph_send"), ("sender", "GraphSender.send"))
PATH_NAMES = {
    "graph": "Graph, Save to Sent Items",
    "graph_fast": "Graph, no Sent Items",
    "smtp": "SMTP, aiosmtpd sink",
    "graph_reuse": "what-if: 1 conn. per run",
}


def mean(values):
    return statistics.fmean(values) if values else float("nan")


def print_report(options, sizes, runs, sink):
    smtp = next(run for run in runs if run["label"] == "smtp")
    smtp_rate = smtp["mails"] / smtp["seconds"]
    large = sum(1 for size in sizes if size >= LARGE[2])
    print(
        f"\n{len(sizes)} mails per path ({len(sizes) - large} under 2 MB, {large} of 5-30 MB, "
        f"{sum(sizes) / MB:.0f} MB), {options.latency * 1000:.0f} ms per round trip, "
        f"{options.rounds} interleaved queue runs per path, {machine()}\n"
    )
    print(
        f"{'path':<26}{'mails/s':>8}{'ratio':>7}{'s':>7}   ms per mail: wall  send_email"
        "  graph  odoo-cpu  server-cpu"
    )
    for run in runs:
        mails, records = run["mails"], run["records"].values()
        rate = mails / run["seconds"]
        states = ", ".join(f"{n} {state}" for state, n in sorted(run["states"].items()))
        print(
            f"{PATH_NAMES[run['label']]:<26}{rate:>8.2f}{rate / smtp_rate:>7.2f}"
            f"{run['seconds']:>7.1f}   {' ' * 13}{run['seconds'] / mails * 1000:4.0f}"
            f"{sum(r['send_email'] for r in records) / mails * 1000:12.0f}"
            f"{sum(r['graph'] for r in records) / mails * 1000:7.0f}"
            f"{(run['cpu'] - run['server_cpu']) / mails * 1000:10.0f}"
            f"{run['server_cpu'] / mails * 1000:12.0f}   ({states})"
        )
        for failure in run["failures"][:3]:
            print(f"    failure: {str(failure)[:200]}")
    print("\nGraph requests per mail (from the sandbox's request log):")
    for run in runs:
        if run["label"] == "smtp":
            continue
        small, big = graph_request_counts(run)
        print(
            f"  {PATH_NAMES[run['label']]:<26} under 3 MB {mean(small):.2f} ({len(small)} mails)"
            f", 3 MB and over {mean(big):.2f} ({len(big)} mails), all "
            f"{run['graph_requests'] / run['mails']:.2f}; TLS connections {run['connections']}"
        )
    print(f"  SMTP sink: {sink.messages} messages in {sink.sessions} sessions (warm-up included)")


def print_memory(label, measured):
    size = measured["size"]
    parts = [("whole queue run", measured["whole"]), ("send_email", measured["transport"])]
    parts += [(name, measured[key]) for key, name in MEMORY_PARTS if key in measured]
    figures = ", ".join(
        f"{name} {value / MB:.1f} MB ({value / size:.2f}x)" for name, value in parts
    )
    line = f"  {PATH_NAMES[label]:<26} MIME {size / MB:.1f} MB: {figures}"
    if measured["state"] != "sent":
        line += f"  [{measured['state']}: {measured['failure'][:150]}]"
    print(line, flush=True)


# main ----------------------------------------------------------------------------------


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--mails", type=int, default=500, help="mails per path (default 500)")
    parser.add_argument(
        "--latency", type=float, default=0.03, help="seconds per round trip (default 0.03)"
    )
    parser.add_argument("--seed", type=int, default=5)
    add_database_options(parser)
    parser.add_argument("--warmup", type=int, default=5, help="small mails per path first")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="queue runs per path, interleaved with the other paths' (default 5)",
    )
    parser.add_argument("--no-fast", action="store_true", help="skip the sendMail path")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also run the Sent Items path with one connection per queue run (bench patch)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the 30 MB memory run")
    parser.add_argument("--memory-size", type=int, default=30 * MB)
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile each path's run into FILE.<path>"
    )
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-id", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    options = parse_args()
    return bench_main(
        options,
        "mog_bench",
        run,
        child=memory_child if options.memory_child else None,
        setup=ensure_aiosmtpd,
    )


class Bench:
    """What a path run needs: Odoo, the sandbox, the sink and the probes."""

    def __init__(self, registry, api, sb, sink):
        self.registry, self.api, self.sb, self.sink = registry, api, sb, sink
        self.meter = SandboxMeter(sb)
        with environment(registry, api) as env:
            self.probe = Probe(env, sb)


def run(options, src, python, database):
    registry, api = open_registry(src, database)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command log
    sizes = plan_sizes(options.mails, options.seed)
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
        servers = {"graph": connect_graph_server(env, sb).id}
    servers["graph_fast"] = servers["graph_reuse"] = servers["graph"]
    sink, controller = start_smtp_sink(options.latency)
    try:
        with environment(registry, api) as env:
            servers["smtp"] = create_smtp_server(env, controller.port).id
            print(f"Creating {len(sizes)} attachments ({sum(sizes) / MB:.0f} MB)...", flush=True)
            attachment_ids = create_attachments(env, sizes, options.seed)
            warm_ids = create_attachments(env, [8 * KB] * options.warmup, options.seed + 1)
        bench = Bench(registry, api, sb, sink)
        labels = ["graph", *([] if options.no_fast else ["graph_fast"]), "smtp"]
        labels += ["graph_reuse"] if options.what_if else []
        results = {label: new_result(label) for label in labels}
        for label in labels if warm_ids else ():
            run_path(bench, new_result(f"warm-{label}"), servers[label], warm_ids)
        chunk = -(-len(attachment_ids) // options.rounds)
        for number, start in enumerate(range(0, len(attachment_ids), chunk)):
            print(f"Queue runs {number + 1}/{options.rounds}: {', '.join(labels)}", flush=True)
            order = labels[number % len(labels) :] + labels[: number % len(labels)]
            for label in order:
                part = attachment_ids[start : start + chunk]
                run_path(bench, results[label], servers[label], part, bool(options.profile))
        bench.probe.close()
        if options.profile:
            for label, result in results.items():
                with open(f"{options.profile}.{label}", "w", encoding="utf-8") as out:
                    stats = pstats.Stats(result["profile"], stream=out)
                    stats.sort_stats("tottime").print_stats(40)
        print_report(options, sizes, list(results.values()), sink)
        if not options.no_memory:
            set_save_to_sent_items(registry, api, servers["graph"], True)
            print("\nPeak traced memory (tracemalloc) sending one mail, in a child process:")
            for label in ("graph", "smtp"):
                measured = measure_memory(python, database, servers[label], options.memory_size)
                print_memory(label, measured)
    finally:
        controller.stop()
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

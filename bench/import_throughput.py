"""Issue 6's import benchmark: incoming mail through Microsoft Graph, IMAP, and no network.

    /opt/odoo19venv/bin/python bench/import_throughput.py [--messages 1000] [--latency 0.03]

One run, on the same messages (70% under 50 KB, 25% of 50 KB-1 MB, 5% of 1-10 MB with an
attachment), in a real Odoo 19 with the addon installed on a throwaway database:

- (a) Graph: a ``fetchmail.server`` of type ``microsoft_graph``, connected through the sandbox's
  consent page, imports from the sandbox (in this process, ``latency`` before every answer and
  every TLS handshake) through the cron path (``_fetch_mail`` with ``cron_id``), until drained.
- (b) IMAP: Odoo's own fetchmail (``server_type = imap``) through the same cron path, from a
  throwaway dovecot on 127.0.0.1 behind an asyncio TCP proxy that delays each direction by
  ``latency / 2`` (so a command and its reply cost ``latency``, as a sandbox request does).
- (c) ``mail.thread.message_process`` alone on the same MIME read from disk, in one transaction:
  the floor.

Each path runs in a child process, so its peak resident memory is its own (VmHWM, reset just
before the import). Every path routes to ``res.partner`` (a new partner per message) with the
same options. See bench/README.md.
"""

import argparse
import asyncio
import base64
import contextlib
import cProfile
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KB,
    MB,
    SENDER,
    add_database_options,
    bench_main,
    connect_graph_incoming,
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

# Issue 6's mix, as (name, share, smallest, largest) MIME sizes.
SIZE_CLASSES = (
    ("under 50 KB", 0.70, 2 * KB, 50 * KB),
    ("50 KB-1 MB", 0.25, 50 * KB, 1 * MB),
    ("1-10 MB", 0.05, 1 * MB, 10 * MB),
)
# A Message-ID per path, of the same length: Odoo refuses a Message-ID it already has.
MSGID_MARK = b"-@@-"
IMAP_USER = "bench"
IMAP_PASSWORD = "bench-password"
WORDS = [
    "invoice",
    "order",
    "delivery",
    "please",
    "find",
    "attached",
    "regarding",
    "your",
    "request",
    "the",
    "meeting",
    "tomorrow",
    "quarterly",
    "report",
    "update",
    "contract",
    "signed",
    "thank",
    "you",
    "kind",
    "regards",
    "support",
    "ticket",
    "status",
    "shipment",
    "customer",
    "account",
    "payment",
    "reminder",
    "project",
    "schedule",
]
PATH_NAMES = {
    "a": "(a) Graph, this addon",
    "b": "(b) IMAP, Odoo fetchmail",
    "c": "(c) message_process only",
}


# the messages --------------------------------------------------------------------------


def plan_sizes(count, seed):
    rng = random.Random(seed)
    counts = [round(count * share) for _name, share, _lo, _hi in SIZE_CLASSES]
    counts[0] = count - sum(counts[1:])
    sizes = []
    for number, (_name, _share, low, high) in zip(counts, SIZE_CLASSES, strict=True):
        sizes += [rng.randrange(low, high) for _ in range(number)]
    rng.shuffle(sizes)
    return sizes


def message_id(index, mark):
    return f"<import-{index:06d}{mark}@bench.test>"


def build_mime(index, size, seed):
    """A CRLF MIME message of about ``size`` bytes; the Message-ID holds MSGID_MARK.

    Under 50 KB: text and HTML bodies only. Larger: a short text body and one attachment of
    seeded random (incompressible) bytes that fills the size.
    """
    rng = random.Random(seed * 1_000_003 + index)
    head = (
        f"From: Customer {index} <customer{index}@example.com>\r\n"
        f"To: Contoso Admin <{SENDER}>\r\n"
        f"Subject: Import bench message {index}\r\n"
        f"Date: Mon, 02 Jun 2025 10:{index // 60 % 60:02d}:{index % 60:02d} +0000\r\n"
        f"Message-ID: {message_id(index, MSGID_MARK.decode())}\r\n"
        "MIME-Version: 1.0\r\n"
    )
    boundary = f"bench-boundary-{index}"
    if size < 50 * KB:
        words = max(20, (size - 900) // 2 // 7)
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        lines = [text[i : i + 72] for i in range(0, len(text), 72)]
        plain = "\r\n".join(lines)
        html = "<p>" + "<br>\r\n".join(lines) + "</p>"
        body = (
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
            f"--{boundary}--\r\n"
        )
        return (head + body).encode()
    raw = rng.randbytes(max(0, size - 1200) * 57 // 78)
    encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    body = (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Dear Contoso,\r\n\r\nplease find document {index} attached.\r\n\r\n-- Customer {index}\r\n"
        f'--{boundary}\r\nContent-Type: application/octet-stream; name="document-{index}.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="document-{index}.bin"\r\n\r\n'
    ).encode()
    return head.encode() + body + encoded + f"--{boundary}--\r\n".encode()


def write_messages(directory, sizes, seed):
    """The MIME files, once, shared by every path (and by import_chaos.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, size in enumerate(sizes):
        path = directory / f"{index:06d}.eml"
        if not path.exists():
            path.write_bytes(build_mime(index, size, seed))
        paths.append(path)
    return paths


def with_mark(raw, mark):
    """The MIME with its Message-ID made unique to one path (the header only is touched)."""
    end = raw.find(b"\r\n\r\n")
    assert len(mark) == len(MSGID_MARK), mark
    return raw[:end].replace(MSGID_MARK, mark.encode()) + raw[end:]


def path_mark(path, round_=0):
    """Four characters, as MSGID_MARK: "-a-x" for path a, "-a2x" in its third round."""
    return f"-{path}-x" if not round_ else f"-{path}{round_}x"


# Odoo side -----------------------------------------------------------------------------


def partner_model_id(env):
    return env["ir.model"]._get("res.partner").id


def create_imap_incoming(env, port):
    server = env["fetchmail.server"].create(
        {
            "name": "Bench IMAP (dovecot through the delay proxy)",
            "server_type": "imap",
            "server": "127.0.0.1",
            "port": port,
            "is_ssl": False,
            "user": IMAP_USER,
            "password": IMAP_PASSWORD,
            "object_id": partner_model_id(env),
        }
    )
    server.state = "done"
    env.cr.commit()
    return server


def imported_count(env, mark):
    env.cr.execute(
        "SELECT count(*) FROM mail_message WHERE message_id LIKE %s",
        [f"<import-%{mark}@bench.test>"],
    )
    return env.cr.fetchone()[0]


def run_cron_once(registry, api, server_id):
    """One call of the gateway cron's method for one server, committing as the cron does."""
    with registry.cursor() as cr:
        env = api.Environment(cr, api.SUPERUSER_ID, {})
        cron = env.ref("mail.ir_cron_mail_gateway_action")
        env = env(context={"cron_id": cron.id})
        error = env["fetchmail.server"].browse(server_id)._fetch_mail()
        server = env["fetchmail.server"].browse(server_id)
        server.invalidate_recordset()
        pending = server.server_type == "microsoft_graph" and server.microsoft_graph_pending
        cr.commit()
    return error, pending


# the child: one path, its own peak memory ----------------------------------------------


def rss_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss():
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def warm_up(registry, api, mime_dir, mark):
    """One small message through message_process first: registry caches, imports."""
    raw = with_mark(build_mime(999_999, 4 * KB, 1), mark)
    with registry.cursor() as cr:
        env = api.Environment(cr, api.SUPERUSER_ID, {})
        env["mail.thread"].message_process("res.partner", raw)
        cr.commit()


def child(options):
    src, _python = find_odoo()
    registry, api = open_registry(src, options.database)
    logging.getLogger("odoo.addons.mail.models.fetchmail").setLevel(logging.WARNING)
    mark = path_mark(options.child, options.round)
    warm_up(registry, api, options.mime_dir, f"-w{options.child}{options.round}")
    files = sorted(Path(options.mime_dir).glob("*.eml"))[: options.messages]
    rss_before = rss_kb("VmRSS")
    profiler = cProfile.Profile() if options.profile else None
    if profiler:
        profiler.enable()
    reset_peak_rss()
    cpu = time.process_time()
    started = time.perf_counter()
    runs, errors, last, idle = 0, [], -1, 0
    if options.child == "c":
        with registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            thread = env["mail.thread"]
            for path in files:
                with cr.savepoint():
                    thread.message_process(
                        "res.partner",
                        with_mark(path.read_bytes(), mark),
                        save_original=False,
                        strip_attachments=False,
                    )
            cr.commit()
    else:
        while True:
            runs += 1
            error, pending = run_cron_once(registry, api, options.server_id)
            if error is not None:
                errors.append(str(error)[:200])
            with environment(registry, api) as env:
                done = imported_count(env, mark)
            if options.child == "a" and not pending and error is None:
                break
            if options.child == "b" and done >= len(files):
                break
            idle = idle + 1 if done == last else 0
            last = done
            if idle >= 3:
                errors.append(f"no progress in 3 runs, stopped at {done}")
                break
            if runs >= options.max_runs:
                errors.append(f"stopped after {runs} runs")
                break
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    peak = rss_kb("VmHWM")
    if profiler:
        profiler.disable()
        profiler.dump_stats(f"{options.profile}.{options.child}")
    with environment(registry, api) as env:
        done = imported_count(env, mark)
    empty = {}
    if options.child == "a":
        # A run with no new mail: the parent counts its requests from the sandbox log.
        print("EMPTY-START", flush=True)
        sys.stdin.readline()
        empty["error"] = str(run_cron_once(registry, api, options.server_id)[0] or "")
    emit(
        "RESULT",
        {
            "seconds": seconds,
            "cpu": cpu,
            "imported": done,
            "runs": runs,
            "errors": errors,
            "rss_before_kb": rss_before,
            "peak_kb": peak,
            "empty": empty,
        },
    )
    return 0


def run_child(python, options, path, server_id=None, on_empty=None):
    command = [
        python,
        str(Path(__file__).resolve()),
        f"--child={path}",
        f"--database={options.database}",
        f"--mime-dir={options.mime_dir}",
        f"--messages={options.messages}",
        f"--server-id={server_id or 0}",
        f"--round={options.round}",
    ]
    if options.profile:
        command.append(f"--profile={options.profile}")
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stderr = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    drain.start()
    result = None
    for line in process.stdout:
        if line.startswith("EMPTY-START"):
            marker = on_empty() if on_empty else None
            process.stdin.write("\n")
            process.stdin.flush()
        elif (payload := tagged(line, "RESULT")) is not None:
            result = payload
            if on_empty:
                result["empty_requests"] = on_empty(marker)
    process.wait()
    drain.join(5)
    if result is None:
        raise RuntimeError(f"path {path} failed:\n{''.join(stderr)[-4000:]}")
    result["log_tail"] = "".join(stderr)[-1500:]
    return result


# dovecot and the delay proxy -----------------------------------------------------------


DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:{root}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


class Dovecot:
    """A throwaway dovecot in a temporary directory: its own config, port and maildir."""

    def __init__(self):
        import pwd  # noqa: PLC0415

        if not shutil.which("dovecot") and not Path("/usr/sbin/dovecot").exists():
            raise LookupError("dovecot is not installed (apt-get install -y dovecot-imapd)")
        self.root = Path(tempfile.mkdtemp(prefix="bench-dovecot-"))
        self.port = free_port()
        account = pwd.getpwnam("dovecot")
        self.uid, self.gid = account.pw_uid, account.pw_gid
        for sub in ("run", "state", f"home/{IMAP_USER}/Maildir/new"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("cur", "tmp"):
            (self.root / f"home/{IMAP_USER}/Maildir" / sub).mkdir(exist_ok=True)
        (self.root / "passwd").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n")
        self.config = self.root / "dovecot.conf"
        self.config.write_text(
            DOVECOT_CONF.format(root=self.root, port=self.port, uid=self.uid, gid=self.gid)
        )
        os.chmod(self.root, 0o755)
        self.process = None

    @property
    def maildir_new(self):
        return self.root / f"home/{IMAP_USER}/Maildir/new"

    def load(self, files, mark, round_=0):
        """The MIME files into the maildir's new/, as a local delivery would put them."""
        for index, path in enumerate(files):
            target = self.maildir_new / f"{1_700_000_000 + index}.M{index}R{round_}P1.bench"
            target.write_bytes(with_mark(path.read_bytes(), mark))
        for directory, _subdirs, names in os.walk(self.root / "home"):
            os.chown(directory, self.uid, self.gid)
            for name in names:
                os.chown(os.path.join(directory, name), self.uid, self.gid)

    def start(self):
        self.process = subprocess.Popen(
            [shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        import socket  # noqa: PLC0415

        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"dovecot did not start: {self.process.stderr.read().decode()[-2000:]}\n"
            + (self.root / "dovecot.log").read_text(errors="replace")[-2000:]
        )

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class DelayProxy:
    """127.0.0.1 TCP forwarder that delays every chunk by ``one_way`` seconds each way.

    A delay line, not a rate limit: each chunk leaves ``one_way`` after it arrived, in order,
    so a command and its reply cost 2 * one_way = the latency of one round trip, and a large
    reply is not slowed down chunk by chunk. A new connection reaches the server after
    ``one_way``, so its greeting comes a round trip after the connect, as the sandbox charges
    a round trip for a TLS handshake. Counts the client's command lines (IMAP: one per
    command, literals aside) by command name.
    """

    def __init__(self, upstream_port, one_way):
        self.upstream_port = upstream_port
        self.one_way = one_way
        self.port = free_port()
        self.commands = {}
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def total_commands(self):
        return sum(self.commands.values())

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self.server = server
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _count(self, buffer, data):
        buffer += data
        *lines, rest = buffer.split(b"\r\n")
        for line in lines:
            parts = line.split(b" ", 2)
            name = parts[1].decode(errors="replace").upper() if len(parts) > 1 else "?"
            if name == "UID" and len(parts) > 2:
                name += " " + parts[2].split(b" ", 1)[0].decode(errors="replace").upper()
            self.commands[name] = self.commands.get(name, 0) + 1
        return rest

    async def _handle(self, client_reader, client_writer):
        self.connections += 1
        await asyncio.sleep(self.one_way)
        try:
            server_reader, server_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, server_writer, count=True),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader, writer, count=False):
        queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send():
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        sender = asyncio.ensure_future(send())
        buffer = b""
        try:
            while data := await reader.read(256 * KB):
                if count:
                    buffer = self._count(buffer, data)
                queue.put_nowait((loop.time() + self.one_way, data))
        finally:
            queue.put_nowait((loop.time() + self.one_way, None))
            await sender


# the run -------------------------------------------------------------------------------


def sandbox_requests(sb, since):
    entries = sb.requests[since:]
    graph = [entry for entry in entries if entry.path.startswith("/v1.0")]
    return len(entries), len(graph), entries


def describe_requests(entries):
    kinds = {}
    for entry in entries:
        path = entry.path
        if "$batch" in path:
            kind = "$batch"
        elif path.endswith("/delta"):
            kind = "delta"
        elif "/oauth2/" in path:
            kind = "token"
        else:
            kind = f"{entry.method} other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))


def run(options, src, python):
    registry, api = open_registry(src, options.database)
    sizes = plan_sizes(options.messages, options.seed)
    mime_dir = Path(options.mime_dir)
    print(f"Writing {len(sizes)} messages ({sum(sizes) / MB:.0f} MB) to {mime_dir}...", flush=True)
    files = write_messages(mime_dir, sizes, options.seed)
    paths = [path for path in options.paths.split(",") if path]
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
        graph_id = connect_graph_incoming(env, sb, mark_read=not options.no_mark_read).id
    dovecot = proxy = None
    results = []
    try:
        if "b" in paths:
            dovecot = Dovecot()
            dovecot.start()
            proxy = DelayProxy(dovecot.port, options.latency / 2).start()
            with environment(registry, api) as env:
                imap_id = create_imap_incoming(env, proxy.port).id
        for round_ in range(options.rounds):
            options.round = round_
            if "b" in paths:
                dovecot.load(files, path_mark("b", round_), round_)
            if "a" in paths:
                print(f"Delivering {len(files)} messages to the sandbox mailbox...", flush=True)
                for path in files:
                    sb.deliver(SENDER, with_mark(path.read_bytes(), path_mark("a", round_)))
                # Exchange extracts a message's properties when it is delivered; the sandbox
                # parses the MIME the first time an answer needs them (the full message
                # that answers each "Mark as Read" PATCH): done here, before the timing,
                # or (a) would be charged about 8 s of sandbox CPU per 1,000 messages.
                for message in sb.messages(SENDER):
                    _ = message.parsed
            for path in paths:
                suffix = f" (round {round_ + 1})" if options.rounds > 1 else ""
                print(f"Running {PATH_NAMES[path]}{suffix}...", flush=True)
                server_id = {"a": graph_id, "b": imap_id if dovecot else None}.get(path)
                result = run_path(python, options, path, server_id, sb, proxy)
                result.update(path=path, round=round_, load=os.getloadavg()[0])
                results.append(result)
                print(
                    f"  {result['imported']} imported in {result['seconds']:.1f} s "
                    f"({result['runs']} cron calls, load average {result['load']:.1f})",
                    flush=True,
                )
        print_report(options, sizes, results)
    finally:
        if proxy:
            proxy.stop()
        if dovecot:
            dovecot.stop()
        sb.stop()
    return 0


def run_path(python, options, path, server_id, sb, proxy):
    """One path in its child process, with its request (or IMAP command) counts."""
    if path == "a":
        start = len(sb.requests)

        def empty_run(marker=None):
            if marker is None:
                return len(sb.requests)
            return sandbox_requests(sb, marker)[0]

        # This process is the sandbox: its CPU time while (a) runs is the sandbox's
        # work (TLS, JSON, base64 of the MIME), taken from the same CPUs as (a).
        sandbox_cpu = time.process_time()
        result = run_child(python, options, "a", server_id, on_empty=empty_run)
        result["sandbox_cpu"] = time.process_time() - sandbox_cpu
        end = len(sb.requests) - result["empty_requests"]
        _total, _graph, entries = sandbox_requests(sb, start)
        entries = entries[: end - start]
        result["requests"] = len(entries)
        result["graph_requests"] = sum(1 for e in entries if e.path.startswith("/v1.0"))
        result["request_kinds"] = describe_requests(entries)
    elif path == "b":
        before, commands_before = proxy.connections, dict(proxy.commands)
        result = run_child(python, options, "b", server_id)
        result["requests"] = proxy.total_commands() - sum(commands_before.values())
        result["connections"] = proxy.connections - before
        result["request_kinds"] = ", ".join(
            f"{name} {count - commands_before.get(name, 0)}"
            for name, count in sorted(proxy.commands.items())
            if count - commands_before.get(name, 0)
        )
    else:
        result = run_child(python, options, "c")
        result["requests"] = 0
        result["request_kinds"] = "no network"
    return result


def print_report(options, sizes, results):
    counts = [sum(1 for size in sizes if low <= size < high) for _n, _s, low, high in SIZE_CLASSES]
    mix = ", ".join(
        f"{count} {name}" for count, (name, *_rest) in zip(counts, SIZE_CLASSES, strict=True)
    )
    print(
        f"\n{len(sizes)} messages ({mix}; {sum(sizes) / MB:.0f} MB), "
        f"{options.latency * 1000:.0f} ms per round trip, {machine()}\n"
    )
    rounds = options.rounds > 1
    print(
        f"{'path':<28}{'round' if rounds else '':>6}{'imported':>9}{'wall s':>8}{'msg/s':>8}"
        f"{'cpu s':>7}{'req/msg':>9}{'peak MB':>9}{'(+start)':>9}{'load':>6}"
    )
    for result in results:
        imported = max(result["imported"], 1)
        print(
            f"{PATH_NAMES[result['path']]:<28}{result['round'] + 1 if rounds else '':>6}"
            f"{result['imported']:>9}{result['seconds']:>8.1f}"
            f"{result['imported'] / result['seconds']:>8.1f}{result['cpu']:>7.1f}"
            f"{result['requests'] / imported:>9.3f}{result['peak_kb'] / 1024:>9.0f}"
            f"{(result['peak_kb'] - result['rss_before_kb']) / 1024:>+9.0f}"
            f"{result['load']:>6.1f}"
        )
    print("\nrequests: (a) sandbox HTTP requests (Graph + token), (b) IMAP commands at the proxy")
    for result in results:
        path = result["path"]
        extra = f"; {result['connections']} connections" if "connections" in result else ""
        label = PATH_NAMES[path] + (f" #{result['round'] + 1}" if rounds else "")
        print(f"  {label:<31} {result['requests']}: {result['request_kinds']}{extra}")
        for error in result["errors"][:3]:
            print(f"    error: {error}")
        if path == "a":
            print(f"    a run with no new mail: {result['empty_requests']} request(s), 1 mailbox")
            print(
                f"    the sandbox's own CPU time meanwhile (this process, same CPUs): "
                f"{result['sandbox_cpu']:.1f} s"
            )
    by_round = {}
    for result in results:
        by_round.setdefault(result["round"], {})[result["path"]] = result["seconds"]
    ratios = {
        "a/b": [r["b"] / r["a"] for r in by_round.values() if "a" in r and "b" in r],
        "a/c": [r["a"] / r["c"] for r in by_round.values() if "a" in r and "c" in r],
    }
    texts = {
        "a/b": "(a) is {:.2f}x as fast as (b) (target >= 3)",
        "a/c": "(a) takes {:.2f}x the time of (c) (target <= 1.25)",
    }
    print()
    for name, values in ratios.items():
        if values:
            each = f"; rounds: {', '.join(f'{v:.2f}' for v in values)}" if rounds else ""
            median = "median " if rounds else ""
            print(f"{name}: {median}{texts[name].format(statistics.median(values))}{each}")
    print(
        "peak MB: the child's peak resident set (VmHWM, reset before the import);"
        " (+start): its rise over the resident set at the start; load: 1-minute load"
        " average when the path ended"
    )


# main ----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per round trip")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--paths", default="a,b,c", help="which of a,b,c to run (default all)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        choices=range(1, 10),
        help="run the paths this many times, interleaved, on fresh Message-IDs each time",
    )
    parser.add_argument(
        "--no-mark-read", action="store_true", help="Graph server with 'Mark as Read' off"
    )
    add_database_options(parser)
    parser.add_argument("--mime-dir", help="where the MIME files go (default: a temp dir)")
    parser.add_argument("--child", choices=("a", "b", "c"), help=argparse.SUPPRESS)
    parser.add_argument("--server-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-runs", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile", help="write each child's cProfile stats to PROFILE.a, PROFILE.b, PROFILE.c"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def mime_directory(options, prefix):
    """options.mime_dir, or a temporary directory removed at the end."""
    own_dir = not options.mime_dir
    options.mime_dir = options.mime_dir or tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(options.mime_dir)
    finally:
        if own_dir:
            shutil.rmtree(options.mime_dir, ignore_errors=True)


def run_in_mime_directory(run, prefix):
    """run(options, src, python) as a bench_main run, with options.mime_dir made if need be."""

    def run_there(options, src, python, _database):
        with mime_directory(options, prefix):
            return run(options, src, python)

    return run_there


def main():
    options = parse_args()
    return bench_main(
        options,
        "mog_import_bench",
        run_in_mime_directory(run, "bench-import-mime-"),
        child=child if options.child else None,
    )


if __name__ == "__main__":
    sys.exit(main())

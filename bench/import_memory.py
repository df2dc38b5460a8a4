"""Issue 14's import memory benchmark: a backlog of near-maximum messages through Graph.

    /opt/odoo19venv/bin/python bench/import_memory.py [--messages 22] [--size-mb 34] \
        [--modes before,after] [--no-tracemalloc]

A real Odoo 19 with the addon on a throwaway database; the sandbox in this process holds
``messages`` messages of ``size-mb`` MB of MIME (one attachment each) and one message over
the server's limit (35 MB, Exchange's default). Each mode imports all of it in a child
process through the cron path (``_fetch_mail`` with ``cron_id``, page after page, Mark as
Read off so that the sandbox's answers stay small), and prints its peak resident memory
(VmHWM, reset once Odoo is loaded), the Python heap's peak (tracemalloc), the seconds, and
what became of the messages:

- ``after``: the code as it is (sizes from the delta pages, large messages alone and
  streamed, the oversized one kept without a download);
- ``before``: the same code with every size threshold out of the way (``ALONE_FROM``,
  ``BATCH_BYTES``, ``PAGE_BYTES`` huge), so that whole pages of MIME travel in $batch
  answers of 20 and a page holds all of its messages, as the import did before issue 14.
  It needs several GB: run it on a machine that has them (``--modes after`` skips it).

It prints the bound docs/incoming.md states for the server's settings beside the figures.
Figures only: nothing here passes or fails on time or memory. See bench/README.md.
"""

import argparse
import base64
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MB,
    SENDER,
    add_database_options,
    bench_main,
    connect_graph_incoming,
    emit,
    environment,
    find_odoo,
    machine,
    new_parser,
    open_registry,
    start_sandbox,
    tagged,
)

MAX_SIZE_MB = 35


def build_mime(index, size, mark, payload):
    """About ``size`` bytes of MIME: a text part and one attachment cut from ``payload``."""
    head = (
        f"From: Customer <customer{index}@fabrikam.example>\r\n"
        f"To: {SENDER}\r\n"
        f"Subject: Large {index}\r\n"
        f"Message-ID: <large-{index}-{mark}@bench.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n"
        "--B\r\nContent-Type: application/pdf; name=report.pdf\r\n"
        "Content-Disposition: attachment; filename=report.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = b"\r\n--B--\r\n"
    room = size - len(head) - len(tail)
    # base64.encodebytes: 76 characters and a newline per 57 bytes; lines end in CRLF here.
    lines = base64.encodebytes(payload[: room * 57 // 79]).replace(b"\n", b"\r\n")
    return head + lines + tail


def imported_count(env, mark):
    env.cr.execute(
        "SELECT count(*) FROM mail_message WHERE message_id LIKE %s",
        [f"<large-%-{mark}@bench.test>"],
    )
    return env.cr.fetchone()[0]


def kept(env, server_id):
    env.cr.execute(
        "SELECT graph_id, error, size IS NOT NULL FROM microsoft_outlook_graph_failed_message "
        "WHERE server_id = %s AND state = 'failed'",
        [server_id],
    )
    return env.cr.fetchall()


def rss_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_cron_once(registry, api, server_id):
    with registry.cursor() as cr:
        env = api.Environment(cr, api.SUPERUSER_ID, {})
        cron = env.ref("mail.ir_cron_mail_gateway_action")
        env = env(context={"cron_id": cron.id})
        error = env["fetchmail.server"].browse(server_id)._fetch_mail()
        server = env["fetchmail.server"].browse(server_id)
        server.invalidate_recordset()
        pending = server.microsoft_graph_pending
        cr.commit()
    return error, pending


# the child: one mode, its own memory ---------------------------------------------------


def child(options):
    src, _python = find_odoo()
    registry, api = open_registry(src, options.database)
    from odoo.addons.microsoft_outlook_graph.services import sync  # noqa: PLC0415

    logging.getLogger("odoo.addons.microsoft_outlook_graph").setLevel(logging.INFO)
    if options.child == "before":
        # Whole pages in $batch answers of 20, sizes checked after the download only.
        sync.ALONE_FROM = sync.BATCH_BYTES = sync.PAGE_BYTES = 1 << 40
        sync.DeltaSync._plan = lambda self, messages: messages
    rss_before = rss_kb("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    if options.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    runs, errors = 0, []
    while runs < 50:
        runs += 1
        error, pending = run_cron_once(registry, api, options.server_id)
        if error is not None:
            errors.append(str(error)[:300])
            break
        if not pending:
            break
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] if options.tracemalloc else None
    tracemalloc.stop()
    peak = rss_kb("VmHWM")
    with environment(registry, api) as env:
        done = imported_count(env, options.mark)
        failed = kept(env, options.server_id)
    emit(
        "RESULT",
        {
            "seconds": seconds,
            "runs": runs,
            "errors": errors,
            "imported": done,
            "kept": [[graph_id[-12:], error[:90], has_raw] for graph_id, error, has_raw in failed],
            "rss_before_kb": rss_before,
            "peak_kb": peak,
            "traced_peak": traced,
            "load": os.getloadavg()[0],
        },
    )
    return 0


def run_child(python, options, mode, server_id, mark):
    command = [
        python,
        str(Path(__file__).resolve()),
        f"--child={mode}",
        f"--database={options.database}",
        f"--server-id={server_id}",
        f"--mark={mark}",
    ]
    if not options.tracemalloc:
        command.append("--no-tracemalloc")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    drain.start()
    result = None
    for line in process.stdout:
        if (payload := tagged(line, "RESULT")) is not None:
            result = payload
    process.wait()
    drain.join(5)
    if result is not None:
        result["log"] = [
            line.rstrip()[-220:] for line in stderr if "INFO" in line or "WARN" in line
        ]
    if result is None:
        raise RuntimeError(
            f"mode {mode} failed (exit {process.returncode}):\n{''.join(stderr)[-4000:]}"
        )
    return result


# the parent: the sandbox, the messages, the report --------------------------------------


def run(options, src, python, database):
    options.database = database
    registry, api = open_registry(src, database)
    from odoo.addons.microsoft_outlook_graph.services import sync  # noqa: PLC0415

    size = int(options.size_mb * MB)
    payload = os.urandom(size)
    print(
        f"{machine()}; {options.messages} messages of {options.size_mb} MB + 1 of "
        f"{MAX_SIZE_MB + 5} MB (over the server's {MAX_SIZE_MB} MB limit)"
    )
    results = {}
    with environment(registry, api) as env:
        sb = start_sandbox(env, 0.0)
        env.cr.commit()
    try:
        for mode in options.modes.split(","):
            mark = f"{mode}{int(time.time())}"
            with environment(registry, api) as env:
                server = connect_graph_incoming(
                    env, sb, name=f"Bench memory {mode}", mark_read=False
                )
                server.microsoft_graph_max_size = MAX_SIZE_MB
                env.cr.commit()
                server_id = server.id
            # The position "from now", before the messages arrive (if connecting did not).
            run_cron_once(registry, api, server_id)
            for index in range(options.messages):
                sb.deliver(SENDER, build_mime(index, size, mark, payload))
            oversized = (MAX_SIZE_MB + 5) * MB
            sb.deliver(SENDER, build_mime(9999, oversized, mark, payload * (oversized // size + 1)))
            print(f"{mode}: importing ({time.strftime('%H:%M:%S')}) ...", flush=True)
            since = len(sb.requests)
            results[mode] = run_child(python, options, mode, server_id, mark)
            results[mode]["requests"] = [
                f"{e.method} {e.path.rsplit('/', 2)[-2:]} {e.status}" for e in sb.requests[since:]
            ]
            # The next mode's server starts "from now"; this mode's MIME is not needed.
            with sb.lock:
                sb.mailbox(SENDER).folder("inbox").messages.clear()
            with environment(registry, api) as env:
                env["fetchmail.server"].browse(server_id).active = False
                env.cr.commit()
    finally:
        sb.stop()
    bound = 2 * sync.PAGE_BYTES + 4 * sync.BATCH_BYTES + 12 * MAX_SIZE_MB * MB
    print()
    print(
        f"{'mode':8} {'imported':>8} {'kept':>5} {'seconds':>8} {'RSS before':>11} "
        f"{'RSS peak':>9} {'peak-before':>11} {'heap peak':>10} {'load':>5}"
    )
    for mode, result in results.items():
        traced = result["traced_peak"]
        print(
            f"{mode:8} {result['imported']:>8} {len(result['kept']):>5} "
            f"{result['seconds']:>8.1f} {result['rss_before_kb'] / 1024:>9.0f}MB "
            f"{result['peak_kb'] / 1024:>7.0f}MB {(result['peak_kb'] - result['rss_before_kb']) / 1024:>9.0f}MB "
            f"{(traced or 0) / MB:>8.0f}MB {result['load']:>5.1f}"
        )
        for graph_id, error, has_raw in result["kept"]:
            print(f"    kept ...{graph_id}: {error} (MIME kept: {has_raw})")
        for error in result["errors"]:
            print(f"    error: {error}")
        for line in result["log"][-3:] if options.verbose else ():
            print(f"    {line}")
        if options.verbose:
            print(f"    requests: {result['requests'][:12]}")
    print(
        f"\nbound (docs/incoming.md): 2 x PAGE_BYTES {sync.PAGE_BYTES / MB:.0f} MB + "
        f"4 x BATCH_BYTES {sync.BATCH_BYTES / MB:.0f} MB + 12 x the {MAX_SIZE_MB} MB limit "
        f"= {bound / MB:.0f} MB above the worker's resting size"
    )
    print(f"machine after the run: {machine()}")
    return 0


def parse_args(argv=None):
    parser = new_parser(__doc__)
    parser.add_argument("--messages", type=int, default=22)
    parser.add_argument("--size-mb", type=float, default=34.0)
    parser.add_argument("--modes", default="after,before", help="after, before, or both")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")
    parser.add_argument("--verbose", action="store_true", help="the import's last log lines")
    add_database_options(parser)
    parser.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--server-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mark", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main():
    options = parse_args()
    return bench_main(options, "mog_import_memory", run, child=child if options.child else None)


if __name__ == "__main__":
    sys.exit(main())

"""Issue 6's chaos benchmark: the Graph import under faults and killed workers, exactly once?

    /opt/odoo19venv/bin/python bench/import_chaos.py [--messages 1000] [--failure-rate 0.1]

In a real Odoo 19 with the addon installed on a throwaway database:

- the Microsoft 365 sandbox runs in this process (``latency`` before every answer), with the
  messages of import_throughput.py's mix delivered to the connected mailbox, and faults on
  Graph requests (``/v1.0/...``, the token endpoint spared): 429 with Retry-After, 503,
  connection resets and timeouts, each with the same probability, together ``failure-rate``
  of the requests;
- the import runs in a child process, the gateway cron's path (``_fetch_mail`` with
  ``cron_id``: a commit per page, with its checkpoint), call after call until drained;
- this process SIGKILLs the child ``kills`` times, each once a random share (10%-80%) of the
  messages is imported plus a random 0-3 s, and starts a new one; the last one runs until
  drained (no error, nothing waiting, no kept message due for an automatic retry).

Then it compares the Message-IDs delivered with the ``mail.message`` rows: imported, lost
(delivered, not imported and not kept as failed), kept as failed, duplicated (rows beyond
one per Message-ID). Exit status 0 whatever the figures.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
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
    new_parser,
    open_registry,
    start_sandbox,
    tagged,
)
from import_throughput import (
    message_id,
    plan_sizes,
    run_cron_once,
    run_in_mime_directory,
    with_mark,
    write_messages,
)

MARK = "-k-x"
KINDS = (
    ("429", {"kind": "status", "status": 429, "retry_after": 1}),
    ("503", {"kind": "status", "status": 503}),
    ("reset", {"kind": "reset"}),
    ("timeout", {"kind": "timeout"}),
)


def imported_rows(env):
    env.cr.execute(
        "SELECT message_id, count(*) FROM mail_message WHERE message_id LIKE %s GROUP BY 1",
        [f"<import-%{MARK}@bench.test>"],
    )
    return dict(env.cr.fetchall())


# the child: the cron path until drained ------------------------------------------------


def child(options):
    src, _python = find_odoo()
    registry, api = open_registry(src, options.database)
    from odoo.addons.microsoft_outlook_graph.services.graph import GraphClient  # noqa: PLC0415

    # Bench-side: the client's 60 s timeout made short, so that a "timeout" fault (held
    # longer than this) is a client timeout without a minute's wait each.
    original_init = GraphClient.__init__

    def short_timeout_init(client, *args, **kwargs):
        original_init(client, *args, **kwargs)
        client.timeout = options.client_timeout

    GraphClient.__init__ = short_timeout_init
    for number in range(1, options.max_runs + 1):
        started = time.perf_counter()
        error, pending = run_cron_once(registry, api, options.server_id)
        with environment(registry, api) as env:
            env.cr.execute(
                "SELECT count(*) FROM microsoft_outlook_graph_failed_message "
                "WHERE server_id = %s AND state = 'failed' AND retry_automatically "
                "AND attempt_count < 5",
                [options.server_id],
            )
            due = env.cr.fetchone()[0]
            done = len(imported_rows(env))
        emit(
            "RUN",
            {
                "run": number,
                "seconds": round(time.perf_counter() - started, 2),
                "error": type(error).__name__ if error is not None else None,
                "pending": bool(pending),
                "retry_due": due,
                "imported": done,
            },
        )
        if error is None and not pending and not due:
            print("DRAINED", flush=True)
            return 0
    print("GAVE-UP", flush=True)
    return 1


# the parent ----------------------------------------------------------------------------


class Worker:
    """One child process, its RUN lines read in a thread."""

    def __init__(self, python, options, server_id):
        command = [
            python,
            str(Path(__file__).resolve()),
            "--child",
            f"--database={options.database}",
            f"--server-id={server_id}",
            f"--client-timeout={options.client_timeout}",
            f"--max-runs={options.max_runs}",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.runs, self.outcome, self.stderr = [], None, []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(
            target=lambda: self.stderr.extend(self.process.stderr), daemon=True
        ).start()

    def _read(self):
        for line in self.process.stdout:
            if (payload := tagged(line, "RUN")) is not None:
                self.runs.append(payload)
            elif line.strip() in ("DRAINED", "GAVE-UP"):
                self.outcome = line.strip()

    def alive(self):
        return self.process.poll() is None


def current_imported(registry, api):
    with environment(registry, api) as env:
        return len(imported_rows(env))


def run(options, src, python):
    registry, api = open_registry(src, options.database)
    rng = random.Random(options.seed)
    sizes = plan_sizes(options.messages, options.seed)
    mime_dir = Path(options.mime_dir)
    print(f"Writing {len(sizes)} messages ({sum(sizes) / MB:.0f} MB)...", flush=True)
    files = write_messages(mime_dir, sizes, options.seed)
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
        server_id = connect_graph_incoming(env, sb).id
    try:
        print(f"Delivering {len(files)} messages to the sandbox mailbox...", flush=True)
        delivered = set()
        for index, path in enumerate(files):
            sb.deliver(SENDER, with_mark(path.read_bytes(), MARK))
            delivered.add(message_id(index, MARK))
        # One draw per fault and request: p each gives 1 - (1 - p)^4 = failure_rate.
        share = 1 - (1 - options.failure_rate) ** (1 / len(KINDS))
        faults = {
            name: sb.inject_fault(
                path=r"^/v1\.0/",
                times=None,
                probability=share,
                seconds=options.client_timeout + 1,
                **spec,
            )
            for name, spec in KINDS
        }
        log_start = len(sb.requests)
        thresholds = sorted(rng.uniform(0.1, 0.8) * len(files) for _ in range(options.kills))
        workers, kills = [], []
        started = time.perf_counter()
        deadline = started + options.timeout
        for threshold in [*thresholds, None]:
            worker = Worker(python, options, server_id)
            workers.append(worker)
            print(f"Worker {len(workers)} started (pid {worker.process.pid})", flush=True)
            while worker.alive() and time.perf_counter() < deadline:
                if threshold is not None and current_imported(registry, api) >= threshold:
                    time.sleep(rng.uniform(0, 3.0))
                    if worker.alive():
                        worker.process.send_signal(signal.SIGKILL)
                        worker.process.wait()
                        done = current_imported(registry, api)
                        kills.append(done)
                        print(f"  SIGKILL at {done} imported (threshold {threshold:.0f})")
                    break
                time.sleep(0.05)
            if worker.alive():  # the deadline
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait()
                print("  deadline reached: worker killed, not drained", flush=True)
                break
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        entries = sb.requests[log_start:]
        with environment(registry, api) as env:
            rows = imported_rows(env)
            env.cr.execute(
                "SELECT internet_message_id, state FROM microsoft_outlook_graph_failed_message "
                "WHERE server_id = %s",
                [server_id],
            )
            kept = dict(env.cr.fetchall())
        imported = delivered & set(rows)
        kept_failed = {mid for mid, state in kept.items() if mid in delivered} - imported
        lost = delivered - imported - kept_failed
        duplicated = sum(count - 1 for count in rows.values())
        last = workers[-1]
        print(
            f"\n{len(files)} messages ({sum(sizes) / MB:.0f} MB), {options.latency * 1000:.0f} ms "
            f"per round trip, {options.failure_rate:.0%} of Graph requests failing, "
            f"{len(kills)} SIGKILLs, {os.cpu_count()} CPUs\n"
        )
        print(f"{'delivered':>10}{'imported':>10}{'lost':>6}{'kept failed':>13}{'duplicated':>12}")
        print(
            f"{len(delivered):>10}{len(imported):>10}{len(lost):>6}{len(kept_failed):>13}"
            f"{duplicated:>12}"
        )
        print(f"kills at {kills} messages imported; last worker: {last.outcome or 'no outcome'}")
        runs = [run for worker in workers for run in worker.runs]
        errors = {}
        for entry in runs:
            errors[entry["error"]] = errors.get(entry["error"], 0) + 1
        print(f"cron calls completed: {len(runs)} ({errors}); wall time {seconds:.0f} s")
        fired = ", ".join(f"{name} {fault.hits}" for name, fault in faults.items())
        graph = sum(1 for entry in entries if entry.path.startswith("/v1.0"))
        print(
            f"sandbox requests: {len(entries)} ({graph} Graph); faults fired: {fired} "
            "(faults also hit $batch steps, which the log does not list; failed requests "
            "retried by the client appear once per attempt where the sandbox logged them)"
        )
        if lost:
            print(f"lost, first ones: {sorted(lost)[:5]}")
        if not last.outcome:
            print("last worker's log tail:\n" + "".join(last.stderr)[-2000:])
    finally:
        sb.stop()
    return 0


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=2.0,
        help="GraphClient's timeout in the workers, seconds (bench patch; the addon: 60)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (seconds)")
    parser.add_argument("--max-runs", type=int, default=500, help=argparse.SUPPRESS)
    add_database_options(parser)
    parser.add_argument("--mime-dir", help="where the MIME files go (default: a temp dir)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server-id", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    options = parse_args()
    return bench_main(
        options,
        "mog_chaos_bench",
        run_in_mime_directory(run, "bench-chaos-mime-"),
        child=child if options.child else None,
    )


if __name__ == "__main__":
    sys.exit(main())

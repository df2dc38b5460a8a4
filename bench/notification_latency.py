"""Issue 7's benchmark: how long incoming mail takes to reach Odoo, notified or polled.

    /opt/odoo19venv/bin/python bench/notification_latency.py [--messages 50] [--spacing 2.5]

A real Odoo 19 server process (threaded, ``--workers=0``, one cron thread) runs the addon on a
throwaway database. The Microsoft 365 sandbox runs in this process. An incoming server of type
Microsoft Graph (a personal mailbox) is connected through the sandbox's consent page, and
``microsoft_outlook_graph.notification_url`` points at the Odoo server's http://127.0.0.1:PORT.

1. Notifications: the subscription cron creates the subscription (the sandbox's handshake goes
   to the Odoo server). Messages are delivered into the sandbox mailbox one at a time, every
   ``--spacing`` seconds. The sandbox POSTs a change notification to Odoo, whose controller
   triggers the fetchmail cron.
2. Polling only: "Use Change Notifications" is switched off (the subscription is deleted). The
   fetchmail cron runs at its default interval (Odoo 19: 5 minutes). The messages are spread
   evenly over one interval, so that their delivery times sample every phase of the cron.

For each message: the seconds from its delivery into the sandbox until a ``mail.message`` with
its Message-ID exists in the database, read every 0.1 s with psycopg2. Median and 95th
percentile (nearest rank) per mode. See bench/README.md.
"""

import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    SENDER,
    VAR,
    add_database_options,
    bench_main,
    connect_graph_incoming,
    environment,
    free_port,
    machine,
    new_parser,
    odoo_options,
    open_registry,
    start_sandbox,
)

GATEWAY_CRON = "mail.ir_cron_mail_gateway_action"
SUBSCRIPTION_CRON = "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_subscriptions"
URL_PARAM = "microsoft_outlook_graph.notification_url"
POLL = 0.1  # seconds between two looks at mail_message
INTERVAL_SECONDS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}


# Odoo ------------------------------------------------------------------------------------


def start_odoo(src, python, database, port, log_path):
    options = [opt for opt in odoo_options(src, database) if not opt.startswith("--log-level")]
    command = [
        python,
        str(REPO / "tools" / "odoo_test_runner.py"),
        f"--odoo-src={src}",
        "--",
        *options,
        "--log-level=info",
        f"--logfile={log_path}",
        f"--http-port={port}",
        "--http-interface=127.0.0.1",
        "--workers=0",
        "--max-cron-threads=1",
    ]
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Odoo exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/web/login", timeout=30):
                return process
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"Odoo did not answer on port {port}; see {log_path}")


def stop_odoo(process):
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def trigger(registry, api, xmlid):
    """ir.cron._trigger() from this process: its NOTIFY at commit wakes the server's cron."""
    with environment(registry, api) as env:
        env.ref(xmlid).sudo()._trigger()
        env.cr.commit()


def wait_until(predicate, timeout, what, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def cron_interval(registry, api):
    with environment(registry, api) as env:
        cron = env.ref(GATEWAY_CRON).sudo()
        return cron.interval_number * INTERVAL_SECONDS[cron.interval_type], cron.active


# measuring -------------------------------------------------------------------------------


class Watcher:
    """Looks every POLL seconds for the Message-IDs still missing from mail_message."""

    def __init__(self, database):
        import psycopg2  # noqa: PLC0415 - Odoo's environment has it

        self.conn = psycopg2.connect(
            dbname=database, host="127.0.0.1", user=os.environ.get("PGUSER", "root")
        )
        self.conn.autocommit = True
        self.delivered = {}  # Message-ID -> monotonic time of delivery
        self.found = {}  # Message-ID -> monotonic time first seen in mail_message
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def expect(self, message_id, delivered_at):
        with self.lock:
            self.delivered[message_id] = delivered_at

    def missing(self):
        with self.lock:
            return [mid for mid in self.delivered if mid not in self.found]

    def run(self):
        with self.conn.cursor() as cr:
            while not self.stopping.wait(POLL):
                missing = self.missing()
                if not missing:
                    continue
                cr.execute(
                    "SELECT DISTINCT message_id FROM mail_message WHERE message_id = ANY(%s)",
                    [missing],
                )
                now = time.monotonic()
                with self.lock:
                    for (message_id,) in cr.fetchall():
                        self.found.setdefault(message_id, now)

    def latency(self, message_id):
        with self.lock:
            if message_id not in self.found:
                return None
            return self.found[message_id] - self.delivered[message_id]

    def close(self):
        self.stopping.set()
        self.thread.join()
        self.conn.close()


def mime(label, number):
    message = EmailMessage()
    message_id = f"<bench-{label}-{number}-{os.getpid()}-{time.time_ns()}@example.com>"
    message["From"] = "Fabrikam Customer <customer@fabrikam.example>"
    message["To"] = SENDER
    message["Subject"] = f"Latency {label} {number}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = message_id
    message.set_content(f"Message {number} of the {label} run.\n")
    return message_id, message.as_bytes()


def deliver_series(sb, watcher, label, count, spacing, drain):
    """Deliver ``count`` messages ``spacing`` s apart; wait up to ``drain`` s after the last."""
    ids = []
    start = time.monotonic()
    for number in range(count):
        time.sleep(max(0.0, start + number * spacing - time.monotonic()))
        message_id, raw = mime(label, number)
        sb.deliver(SENDER, raw)
        watcher.expect(message_id, time.monotonic())
        ids.append(message_id)
        if count >= 10 and (number + 1) % (count // 5) == 0:
            print(f"  {label}: {number + 1}/{count} delivered", flush=True)
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and any(mid in watcher.missing() for mid in ids):
        time.sleep(POLL)
    return [watcher.latency(mid) for mid in ids]


def percentile(values, share):
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(name, latencies):
    got = [value for value in latencies if value is not None]
    lost = len(latencies) - len(got)
    if not got:
        return f"{name:<34}{len(latencies):>5}   none imported"
    return (
        f"{name:<34}{len(got):>5}{statistics.median(got):>9.2f}{percentile(got, 0.95):>9.2f}"
        f"{min(got):>9.2f}{max(got):>9.2f}{statistics.fmean(got):>9.2f}"
        + (f"   ({lost} not imported in time)" if lost else "")
    )


# main ------------------------------------------------------------------------------------


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--messages", type=int, default=50, help="per mode (default 50)")
    parser.add_argument(
        "--spacing", type=float, default=2.5, help="seconds between deliveries, notified"
    )
    parser.add_argument(
        "--polling-messages", type=int, help="messages of the polling run (default --messages)"
    )
    parser.add_argument(
        "--polling-spacing",
        type=float,
        help="seconds between deliveries, polled (default: cron interval / messages)",
    )
    parser.add_argument("--no-polling", action="store_true", help="notifications only")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted notified messages")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="sandbox seconds per answer (default 0)"
    )
    add_database_options(parser)
    return parser.parse_args()


def main():
    return bench_main(parse_args(), "mog_bench_notif", run)


def run(options, src, python, database):
    registry, api = open_registry(src, database)
    port = free_port()
    log_path = VAR / f"bench-notification-odoo-{os.getpid()}.log"
    odoo = watcher = None
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
    try:
        sb.configure_notifications(allow_http_notifications=True)
        with environment(registry, api) as env:
            env["ir.config_parameter"].set_param(URL_PARAM, f"http://127.0.0.1:{port}")
            env.cr.commit()
            server_id = connect_graph_incoming(env, sb, name="Bench Graph incoming").id
        interval, active = cron_interval(registry, api)
        print(
            f"Starting Odoo on 127.0.0.1:{port} (--workers=0, --max-cron-threads=1; log "
            f"{log_path}); fetchmail cron every {interval} s, active {active}",
            flush=True,
        )
        odoo = start_odoo(src, python, database, port, log_path)
        # The cron thread sleeps up to 60 s unless NOTIFYed: trigger again now that it listens.
        trigger(registry, api, SUBSCRIPTION_CRON)
        wait_until(lambda: sb.subscriptions(), 120, "the subscription at the sandbox")
        print(f"Subscribed: {sb.subscriptions()[0].notification_url}", flush=True)
        watcher = Watcher(database)
        if options.warmup:
            warm = deliver_series(sb, watcher, "warmup", options.warmup, options.spacing, 120)
            print(f"Warm-up (not counted): {[round(v, 2) if v else v for v in warm]}")
        changes_before = sum(1 for a in sb.notification_log if a.kind == "change")
        print(f"Notified run: {options.messages} messages, {options.spacing} s apart", flush=True)
        notified = deliver_series(sb, watcher, "notified", options.messages, options.spacing, 120)
        changes = [a for a in sb.notification_log if a.kind == "change"][changes_before:]
        statuses = sorted({str(a.status) for a in changes})
        results = [("With notifications", notified)]

        polled = None
        if not options.no_polling:
            with environment(registry, api) as env:
                env["fetchmail.server"].browse(server_id).microsoft_graph_use_notifications = False
                env.cr.commit()
            wait_until(lambda: not sb.subscriptions(), 60, "the subscription's deletion")
            count = options.polling_messages or options.messages
            spacing = options.polling_spacing or interval / count
            drain = interval + 2 * 61 + 30  # a cron interval plus the cron thread's 60 s naps
            print(
                f"Polling run: subscription deleted; {count} messages, {spacing:.1f} s apart, "
                f"then up to {drain} s for the last (about {(count * spacing + drain) / 60:.0f}"
                " min at most)",
                flush=True,
            )
            polled = deliver_series(sb, watcher, "polled", count, spacing, drain)
            results.append((f"Polling only (cron every {interval} s)", polled))

        print(
            f"\n{machine()}; seconds from "
            f"delivery into the sandbox until the mail.message exists (looked for every "
            f"{POLL} s)\n"
        )
        print(f"{'mode':<34}{'n':>5}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}{'mean':>9}")
        for name, latencies in results:
            print(summary(name, latencies))
        print(
            f"\nChange notifications POSTed to Odoo during the notified run: {len(changes)}"
            f" (HTTP statuses {', '.join(statuses) or '-'})"
        )
        got = [v for v in notified if v is not None]
        if got:
            verdict = "met" if statistics.median(got) < 5 else "NOT met"
            print(f"Target, median under 5 s with notifications: {verdict}")
    finally:
        if watcher:
            watcher.close()
        stop_odoo(odoo)
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

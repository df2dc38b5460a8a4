"""Issue 17: a 500-person company on two Odoo hosts, one Microsoft 365 tenant.

Real Odoo 19 as production starts it: two ``odoo-bin`` on one database (each with HTTP
workers and a cron worker), against the sandbox with its latency on. 500 personal outgoing
servers and 12 shared incoming servers connected through the sandbox's consent page; then, in
one run and printed side by side with the machine's load:

1. a sweep of the idle incoming servers: wall time, Graph requests, Odoo CPU per mailbox;
2. 5,000 queued mails over the 500 senders, Exchange's per-mailbox and tenant limits on
   (time-scaled as the sandbox's time_scale): drain time against the limits' own floor,
   refused, sent twice, the largest wait of a transactional mail;
3. one mailbox throttled (429, Retry-After an hour) and one answering in 10 s: the delay they
   add to everyone else, against the same mails without them; and for incoming mail, one
   shared mailbox first in line with three pages waiting and every request answered in 10 s:
   the delay it adds to a new message in each of the others (its slice, docs/incoming.md);
4. server time of the health list, the busiest server form (10,000 waiting mails) and Settings;
5. rows the ledgers add per day at that traffic, and what pruning keeps.

A benchmark: it prints figures and exits 0 whatever they are (bench/README.md).

    python3 bench/scale.py                 # the issue's sizes, about 15 minutes here
    python3 bench/scale.py --senders 40 --mails 400 --waiting 1000   # a quick look
"""

import collections
import datetime
import email.message
import email.utils
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    VAR,
    add_database_options,
    addons_path,
    bench_main,
    connect_through_consent,
    environment,
    free_port,
    machine,
    new_parser,
    open_registry,
    start_sandbox,
)

QUEUE_CRON = "mail.ir_cron_mail_scheduler_action"
FETCH_CRON = "mail.ir_cron_mail_gateway_action"
TIME_SCALE_PARAM = "microsoft_outlook_graph.sending_limits_time_scale"
TENANT_ID = "5d2f3c1a-8b7e-4f2a-9c61-0e4b7a9d3f10"
DOMAIN = "contoso.test"


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--senders", type=int, default=500)
    parser.add_argument("--shared", type=int, default=12)
    parser.add_argument("--mails", type=int, default=5_000)
    parser.add_argument("--waiting", type=int, default=10_000, help="mails on the busiest form")
    parser.add_argument("--latency", type=float, default=0.01, help="sandbox answer delay, s")
    parser.add_argument(
        "--day", type=float, default=60.0, help="seconds a limit's day lasts (time scale)"
    )
    parser.add_argument(
        "--tenant-limit", type=int, default=1_250, help="the tenant's external recipients a day"
    )
    parser.add_argument("--bystanders", type=int, default=100, help="senders in phase 3")
    add_database_options(parser)
    return parser.parse_args()


# the hosts -----------------------------------------------------------------------------------


class Host:
    """odoo-bin with 2 HTTP workers and a cron worker, in its own process group."""

    def __init__(self, src, python, database, name):
        self.src, self.python, self.database, self.name = src, python, database, name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = VAR / f"scale-{database}-{name}.log"
        self.process = None

    def start(self):
        self.log_path.write_text("", encoding="utf-8")
        command = [
            self.python,
            str(Path(self.src) / "odoo-bin"),
            f"--addons-path={addons_path(self.src)}",
            f"--database={self.database}",
            f"--db-filter=^{self.database}$",
            "--db_host=127.0.0.1",
            "--db_user=" + os.environ.get("PGUSER", "root"),
            f"--http-port={self.port}",
            f"--gevent-port={free_port()}",
            "--http-interface=127.0.0.1",
            "--workers=2",
            "--max-cron-threads=1",
            "--limit-time-real=600",
            "--limit-time-cpu=600",
            "--limit-memory-soft=2147483648",
            "--limit-memory-hard=2684354560",
            "--log-level=info",
            f"--logfile={self.log_path}",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=self.src,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/web/login", timeout=30).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer; see {self.log_path}")

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def cpu_seconds(self):
        """CPU time of the host's processes (master, workers, cron worker) so far."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[2]) == self.process.pid:
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def log_since(self, offset):
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")


class Rpc:
    def __init__(self, host):
        self.host = host
        self.session = requests.Session()
        self.session.trust_env = False
        answer = self.session.post(
            f"{host.url}/web/session/authenticate",
            json={"params": {"db": host.database, "login": "admin", "password": "admin"}},
            timeout=120,
        ).json()
        if answer.get("error"):
            raise RuntimeError(answer["error"])

    def call(self, model, method, *args, **kwargs):
        answer = self.session.post(
            f"{self.host.url}/web/dataset/call_kw",
            json={"params": {"model": model, "method": method, "args": args, "kwargs": kwargs}},
            timeout=900,
        ).json()
        if answer.get("error"):
            raise RuntimeError(answer["error"]["data"]["message"])
        return answer.get("result")

    def timed(self, model, method, *args, **kwargs):
        started = time.perf_counter()
        self.call(model, method, *args, **kwargs)
        return time.perf_counter() - started

    def trigger(self, action_id, xmlid):
        self.call("ir.actions.server", "run", [action_id], context={"bench_cron": xmlid})


# setup ----------------------------------------------------------------------------------------


def setup(env, sb, options):
    """Users, servers connected through the consent page, the limits; committed."""
    from odoo.addons.microsoft_outlook_graph.sandbox import defaults  # noqa: PLC0415

    tenant = sb.directory.tenant(defaults.TENANT_DOMAIN)
    started = time.perf_counter()
    senders = [f"p{n:03d}@{DOMAIN}" for n in range(options.senders)]
    for address in senders:
        sb.add_user(tenant, address, address.split("@")[0])
    shared = [f"shared{n:02d}@{DOMAIN}" for n in range(options.shared)]
    for address in shared:
        sb.add_shared_mailbox(tenant, address, address.split("@")[0])
        sb.grant(address, defaults.ADMIN, "FullAccess")
    servers = {}
    for n, address in enumerate(senders):
        server = env["ir.mail_server"].create(
            {
                "name": f"Personal {address}",
                "smtp_authentication": "microsoft_graph",
                "smtp_user": address,
                "from_filter": address,
                "sequence": 100 + n,
            }
        )
        connect_through_consent(env, server, sb, address)
        servers[address] = server.id
        if n % 50 == 49:
            env.cr.commit()
    incoming = []
    for address in shared:
        server = env["fetchmail.server"].create(
            {
                "name": f"Shared {address}",
                "server_type": "microsoft_graph",
                "user": address,
                "microsoft_graph_mailbox_kind": "shared",
                "object_id": env["ir.model"]._get("res.partner").id,
            }
        )
        connect_through_consent(env, server, sb, defaults.ADMIN)
        server.state = "done"
        incoming.append(server.id)
    scale = options.day / 86_400
    env["ir.config_parameter"].set_param(TIME_SCALE_PARAM, repr(scale))
    sb.configure_limits(time_scale=scale)
    cron_model = env["ir.model"]._get("ir.cron").id
    action = env["ir.actions.server"].create(
        {
            "name": "bench: trigger a cron",
            "model_id": cron_model,
            "state": "code",
            "code": "env.ref(env.context['bench_cron'])._trigger()",
        }
    )
    env.cr.commit()
    return {
        "senders": senders,
        "servers": servers,
        "incoming": incoming,
        "shared": shared,
        "action": action.id,
        "connect_seconds": time.perf_counter() - started,
    }


def queue(env, pairs, bulk_every=0, subject="scale"):
    """Queue one mail per (sender, server id) to an external recipient; {mail id: (message
    id, queued at, transactional)}."""
    values = []
    for n, (address, server_id) in enumerate(pairs):
        bulk = bool(bulk_every) and n % bulk_every != 0
        values.append(
            {
                "subject": f"{subject} {n}",
                "body_html": f"<p>{subject} {n}</p>",
                "email_from": address,
                "email_to": f"customer{n}@example.com",
                "mail_server_id": server_id,
                "auto_delete": False,
                "headers": repr({"Precedence": "bulk"}) if bulk else False,
            }
        )
    mails = env["mail.mail"].create(values)
    env.cr.commit()
    now = time.time()
    return {
        mail.id: (mail.message_id, now, not values[n]["headers"]) for n, mail in enumerate(mails)
    }


def outstanding(env, mail_ids):
    env.cr.execute(
        "SELECT count(*) FROM mail_mail WHERE id IN %s AND state = 'outgoing'", [tuple(mail_ids)]
    )
    return env.cr.fetchone()[0]


def drive(registry, api, rpcs, action_id, mail_ids, timeout, every=2.0):
    """Wake both hosts' queue crons until none of mail_ids is queued; the wall time."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with environment(registry, api) as env:
            if not outstanding(env, mail_ids):
                return time.perf_counter() - started
        for rpc in rpcs:
            rpc.trigger(action_id, QUEUE_CRON)
        time.sleep(every)
    return None


# phases ----------------------------------------------------------------------------------------


def sweep(rpc, hosts, sb, incoming, action_id):
    """One fetchmail cron run over the idle incoming servers."""
    marks = [host.log_path.stat().st_size for host in hosts]
    cpu = sum(host.cpu_seconds() for host in hosts)
    requests_before = len(sb.requests)
    started = time.perf_counter()
    rpc.trigger(action_id, FETCH_CRON)
    done = re.compile(r"Job 'Mail: Fetchmail Service' \(\d+\) (fully done|partially done)")
    while time.perf_counter() - started < 300:
        logs = [host.log_since(mark) for host, mark in zip(hosts, marks, strict=True)]
        if any(done.search(log) for log in logs):
            break
        time.sleep(0.1)
    wall = time.perf_counter() - started
    graph = [entry for entry in sb.requests[requests_before:] if entry.mailbox]
    return {
        "wall_s": wall,
        "graph_requests": len(graph),
        "per_mailbox_requests": len(graph) / max(1, len(incoming)),
        "odoo_cpu_ms_per_mailbox": 1000
        * (sum(host.cpu_seconds() for host in hosts) - cpu)
        / max(1, len(incoming)),
    }


def incoming_mime(to, subject):
    """A small new message for the Inbox of to; (bytes, its Message-ID)."""
    message = email.message.EmailMessage()
    message["From"] = "Customer <customer@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="customer.example.com")
    message["Date"] = email.utils.formatdate()
    message.set_content(f"Body of {subject}")
    return message.as_bytes(), message["Message-ID"]


def incoming_delay(registry, api, rpc, sb, state, slow):
    """Seconds until one new message in each incoming mailbox but the first is imported by
    the fetchmail cron; the first mailbox is first in line (least recently run) and, when
    slow, has three delta pages waiting and every Graph request answered in 10 s."""
    first, *others = state["shared"]
    tag = "slow" if slow else "alone"
    fault = None
    if slow:
        for n in range(120):
            sb.deliver(first, incoming_mime(first, f"backlog {n}")[0])
        fault = sb.inject_fault("timeout", mailbox=first, times=None, seconds=10.0)
    # The first in line; a cron of either host may be writing the servers: again if so.
    for _attempt in range(20):
        try:
            with environment(registry, api) as env:
                servers = env["fetchmail.server"].browse(state["incoming"])
                servers[1:].write({"date": env.cr.now()})
                servers[0].write({"date": env.cr.now() - datetime.timedelta(hours=1)})
                env.cr.commit()
            break
        except Exception:
            time.sleep(1)
    message_ids = []
    for address in others:
        raw, message_id = incoming_mime(address, f"{tag} {address}")
        sb.deliver(address, raw)
        message_ids.append(message_id)
    started = time.perf_counter()
    rpc.trigger(state["action"], FETCH_CRON)
    wall = None
    while time.perf_counter() - started < 300:
        with environment(registry, api) as env:
            env.cr.execute(
                "SELECT count(DISTINCT message_id) FROM mail_message WHERE message_id IN %s",
                [tuple(message_ids)],
            )
            if env.cr.fetchone()[0] == len(message_ids):
                wall = time.perf_counter() - started
                break
        time.sleep(0.2)
    if fault is not None:
        sb.remove_fault(fault)
        fault.release()
    return wall


def drain(registry, api, rpcs, sb, state, options):
    """The 5,000 mails over every sender with the limits on."""
    with environment(registry, api) as env:
        tenant = env["microsoft.outlook.graph.tenant"].search([("tenant_id", "=", TENANT_ID)])
        tenant.write({"licence_count": options.senders, "external_limit": options.tenant_limit})
        env.cr.commit()
        senders = state["senders"]
        pairs = [
            (senders[n % len(senders)], state["servers"][senders[n % len(senders)]])
            for n in range(options.mails)
        ]
        mails = queue(env, pairs, bulk_every=5, subject="drain")
    sb.configure_tenant_limit(DOMAIN, external_recipients_per_day=options.tenant_limit)
    load = os.getloadavg()[0]
    wall = drive(registry, api, rpcs, state["action"], list(mails), timeout=900)
    sent = collections.Counter(delivery.internet_message_id for delivery in sb.outbox())
    by_id = {message_id: sent.get(message_id, 0) for message_id, _, _ in mails.values()}
    times = {d.internet_message_id: d.time for d in sb.outbox()}
    waits = [
        times[message_id] - queued
        for message_id, queued, transactional in mails.values()
        if transactional and message_id in times
    ]
    reports = sum(
        1
        for address in senders
        for message in sb.messages(address)
        if message.subject.startswith("Undeliverable")
    )
    with environment(registry, api) as env:
        env.cr.execute(
            "SELECT count(*) FROM mail_mail WHERE id IN %s AND state = 'exception'",
            [tuple(mails)],
        )
        failed = env.cr.fetchone()[0]
        env.cr.execute(
            "SELECT count(*) FROM microsoft_outlook_graph_send_ledger WHERE mail_id IN %s",
            [tuple(mails)],
        )
        ledger_rows = env.cr.fetchone()[0]
        env.cr.execute("SELECT count(*) FROM microsoft_outlook_graph_handover")
        handover_rows = env.cr.fetchone()[0]
    windows = -(-options.mails // options.tenant_limit)  # ceil
    return {
        "load_start": load,
        "wall_s": wall,
        "floor_s": (windows - 1) * options.day,
        "windows": windows,
        "sent": sum(1 for count in by_id.values() if count),
        "sent_twice": sum(1 for count in by_id.values() if count > 1),
        "refused_reports": reports,
        "failed": failed,
        "max_transactional_wait_s": max(waits) if waits else None,
        "ledger_rows": ledger_rows,
        "handover_rows": handover_rows,
    }


def bystanders(registry, api, rpcs, sb, state, options, faulty):
    """Time for one mail from each of options.bystanders senders, with or without a throttled
    and a slow mailbox queued ahead of them."""
    senders = state["senders"]
    others = senders[2 : 2 + options.bystanders]
    faults = []
    with environment(registry, api) as env:
        pairs = [(address, state["servers"][address]) for address in others]
        extra = {}
        if faulty:
            bad = senders[:2]
            faults = [
                sb.inject_fault("status", mailbox=bad[0], times=None, status=429, retry_after=3600),
                sb.inject_fault("timeout", mailbox=bad[1], times=None, seconds=10.0),
            ]
            extra = queue(
                env, [(address, state["servers"][address]) for address in bad for _ in range(10)]
            )
        mails = queue(env, pairs, subject="bystander")
    wall = drive(registry, api, rpcs, state["action"], list(mails), timeout=600, every=1.0)
    for fault in faults:
        sb.remove_fault(fault)
    if extra:
        # The cron may be sending one of them now: cancel the queued ones, again if it is.
        for _attempt in range(20):
            try:
                with environment(registry, api) as env:
                    env.cr.execute(
                        "UPDATE mail_mail SET state = 'cancel' WHERE id IN %s "
                        "AND state = 'outgoing'",
                        [tuple(extra)],
                    )
                    env.cr.commit()
                break
            except Exception:
                time.sleep(1)
    return wall


def screens(rpc, registry, api, state, options):
    """Server time (RPC on localhost) of the health list, the busiest form and Settings."""
    busiest = state["servers"][state["senders"][-1]]
    with environment(registry, api) as env:
        far = "2999-01-01 00:00:00"
        batch = 2_000
        for start in range(0, options.waiting, batch):
            env["mail.mail"].create(
                [
                    {
                        "subject": f"waiting {n}",
                        "body_html": "<p>w</p>",
                        "email_from": state["senders"][-1],
                        "email_to": f"w{n}@example.com",
                        "mail_server_id": busiest,
                        "auto_delete": False,
                        "microsoft_graph_budget_server_id": busiest,
                        "microsoft_graph_retry_at": far,
                    }
                    for n in range(start, min(start + batch, options.waiting))
                ]
            )
            env.cr.commit()
    list_fields = [
        "direction",
        "name",
        "mailbox",
        "account_address",
        "status",
        "last_activity",
        "queued_count",
        "failed_count",
        "recipients_used",
        "waiting_count",
        "tenant_external_used",
        "tenant_external_limit",
        "last_error",
        "active",
        "needs_attention",
    ]
    spec = {name: {} for name in list_fields}
    form_fields = list(rpc.call("ir.mail_server", "fields_get", attributes=["type"]))
    settings_fields = [
        name
        for name, field in rpc.call(
            "res.config.settings", "fields_get", attributes=["type"]
        ).items()
        if field["type"] not in ("binary",)
    ]

    def median(call, runs=5):
        return statistics.median(call() for _ in range(runs))

    return {
        "health_list_80_ms": 1000
        * median(
            lambda: rpc.timed(
                "microsoft.outlook.graph.mailbox", "web_search_read", [], spec, limit=80
            )
        ),
        "health_list_all_ms": 1000
        * median(
            lambda: rpc.timed(
                "microsoft.outlook.graph.mailbox", "web_search_read", [], spec, limit=1000
            )
        ),
        "busiest_form_ms": 1000
        * median(lambda: rpc.timed("ir.mail_server", "read", [busiest], form_fields)),
        "settings_ms": 1000
        * median(lambda: rpc.timed("res.config.settings", "default_get", settings_fields)),
        "waiting_on_form": options.waiting,
    }


def run(options, src, python, database):
    registry, api = open_registry(src, database)
    print(machine(), flush=True)
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
        sb.configure_limits(concurrency=4)
        state = setup(env, sb, options)
    print(
        f"setup: {options.senders} outgoing + {options.shared} shared incoming servers "
        f"connected in {state['connect_seconds']:.0f} s; {machine()}",
        flush=True,
    )
    hosts = [Host(src, python, database, name).start() for name in ("host1", "host2")]
    try:
        rpcs = [Rpc(host) for host in hosts]
        results = {"machine_start": machine()}
        results["sweep"] = sweep(rpcs[0], hosts, sb, state["incoming"], state["action"])
        print(f"sweep: {results['sweep']}; {machine()}", flush=True)
        results["incoming_alone_s"] = incoming_delay(registry, api, rpcs[0], sb, state, False)
        results["incoming_slow_s"] = incoming_delay(registry, api, rpcs[0], sb, state, True)
        print(
            f"incoming: alone {results['incoming_alone_s']} s, behind a slow mailbox "
            f"{results['incoming_slow_s']} s; {machine()}",
            flush=True,
        )
        results["drain"] = drain(registry, api, rpcs, sb, state, options)
        print(f"drain: {results['drain']}; {machine()}", flush=True)
        with environment(registry, api) as env:
            tenant = env["microsoft.outlook.graph.tenant"].search([("tenant_id", "=", TENANT_ID)])
            tenant.write({"external_limit": 0})
            env.cr.commit()
        sb.configure_tenant_limit(DOMAIN, external_recipients_per_day=None)
        # A limit's day later, the drain's window no longer holds anyone back.
        time.sleep(options.day)
        results["baseline_s"] = bystanders(registry, api, rpcs, sb, state, options, False)
        results["faulty_s"] = bystanders(registry, api, rpcs, sb, state, options, True)
        print(
            f"bystanders: alone {results['baseline_s']} s, behind faults "
            f"{results['faulty_s']} s; {machine()}",
            flush=True,
        )
        results["screens"] = screens(rpcs[0], registry, api, state, options)
        results["machine_end"] = machine()
        report(results, options)
    finally:
        for host in hosts:
            host.stop()
        sb.stop()
    return 0


def report(results, options):
    sweep, drain_, screens_ = results["sweep"], results["drain"], results["screens"]
    per_day = drain_["ledger_rows"] * 5_000 / max(1, options.mails)
    rows = [
        ("machine at start / end", results["machine_start"], results["machine_end"]),
        ("load at the drain's start", f"{drain_['load_start']:.1f}", ""),
        ("idle sweep of the incoming servers", f"{sweep['wall_s']:.2f} s wall", ""),
        ("  Graph requests per idle mailbox", f"{sweep['per_mailbox_requests']:.1f}", ""),
        ("  Odoo CPU per idle mailbox", f"{sweep['odoo_cpu_ms_per_mailbox']:.0f} ms", ""),
        (
            f"drain of {options.mails} mails, {options.senders} senders",
            f"{drain_['wall_s']:.0f} s" if drain_["wall_s"] else "not drained",
            f"floor {drain_['floor_s']:.0f} s ({drain_['windows']} tenant windows of "
            f"{options.day:.0f} s, {options.tenant_limit} external each)",
        ),
        (
            "  sent / sent twice / failed",
            f"{drain_['sent']} / {drain_['sent_twice']}",
            drain_["failed"],
        ),
        ("  refused by Exchange (reports)", drain_["refused_reports"], ""),
        (
            "  largest wait of a transactional mail",
            f"{drain_['max_transactional_wait_s']:.1f} s"
            if drain_["max_transactional_wait_s"] is not None
            else "-",
            "",
        ),
        (
            f"{options.bystanders} bystanders' mails, alone / behind a throttled and a slow mailbox",
            f"{results['baseline_s']:.1f} s" if results["baseline_s"] else "-",
            f"{results['faulty_s']:.1f} s" if results["faulty_s"] else "-",
        ),
        (
            f"a new message in {options.shared - 1} incoming mailboxes, alone / behind a slow one",
            f"{results['incoming_alone_s']:.1f} s" if results["incoming_alone_s"] else "-",
            f"{results['incoming_slow_s']:.1f} s" if results["incoming_slow_s"] else "-",
        ),
        (
            "health list, 80 rows / all",
            f"{screens_['health_list_80_ms']:.0f} ms",
            f"{screens_['health_list_all_ms']:.0f} ms",
        ),
        (
            f"busiest server form ({screens_['waiting_on_form']} waiting)",
            f"{screens_['busiest_form_ms']:.0f} ms",
            "",
        ),
        ("Settings (default_get of every field)", f"{screens_['settings_ms']:.0f} ms", ""),
        (
            "ledger rows per mail / per day at 5,000 mails",
            f"{drain_['ledger_rows'] / max(1, options.mails):.2f}",
            f"{per_day:.0f}",
        ),
        (
            "kept after pruning (3 days' retention)",
            f"{3 * per_day:.0f} ledger rows",
            f"{3 * per_day:.0f} hand-over marks",
        ),
    ]
    width = max(len(str(row[0])) for row in rows)
    print()
    for label, first, second in rows:
        print(f"{str(label).ljust(width)}  {first!s:>24}  {second}")


def _stop(signum, _frame):
    # SIGTERM runs the finally blocks: both hosts stopped, the database dropped.
    raise SystemExit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _stop)
    options = parse_args()
    return bench_main(options, "bench_scale", run)


if __name__ == "__main__":
    sys.exit(main())

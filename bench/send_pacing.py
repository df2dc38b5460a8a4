"""Issue 10's benchmark: Odoo's queue paced to Exchange's message rate through one mailbox.

    /opt/odoo19venv/bin/python bench/send_pacing.py [--mails 2000] [--time-scale 0.1]

The Microsoft 365 sandbox runs in this process with Exchange's sending limits on (30 messages a
minute, 10,000 recipients a day, a refusal answered as an error) and its minute and day
multiplied by ``--time-scale``; Odoo's limits get the same scale
(``microsoft_outlook_graph.sending_limits_time_scale``). One outgoing Graph server (the addon's
defaults) is connected through the consent page, and ``--mails`` mails of one recipient each
are queued. The queue is then run as Odoo's mail cron runs it (``process_email_queue``, a commit
per mail), again each time the cron trigger that the addon set comes due, until the queue is
empty.

It prints the send rate achieved, as a share of the limit: the time the limit needs for the
mails (the first minute's 30 at once, then 30 a minute) over the time from the first message
leaving the sandbox to the last. Also the mails refused by the sandbox, the longest time the
sandbox held a message back, and the scheduling overhead per mail: the time spent in
the ledger's ``_admit`` (ordering, the ledger, the forecast of the waiting mails).
"""

import datetime
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    SENDER,
    add_database_options,
    bench_main,
    connect_through_consent,
    environment,
    machine,
    new_parser,
    open_registry,
    start_sandbox,
)

MAIL_CRON = "mail.ir_cron_mail_scheduler_action"
RATE = 30
SCALE_PARAM = "microsoft_outlook_graph.sending_limits_time_scale"


def parse_args():
    parser = new_parser(__doc__)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument(
        "--time-scale", type=float, default=0.1, help="minute and day multiplier (0.1: 6 s)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per Graph answer")
    parser.add_argument("--max-minutes", type=float, default=30, help="give up after this")
    add_database_options(parser)
    return parser.parse_args()


def main():
    return bench_main(parse_args(), "mog_bench_pacing", run)


def setup_odoo(env, sb, options):
    sb.configure_sending_limits(
        recipients_per_day=10_000,
        messages_per_minute=RATE,
        refusal="error",
        time_scale=options.time_scale,
    )
    env["ir.config_parameter"].set_param(SCALE_PARAM, str(options.time_scale))
    server = env["ir.mail_server"].create(
        {
            "name": "Bench pacing",
            "smtp_authentication": "microsoft_graph",
            "smtp_user": SENDER,
            "from_filter": SENDER,
            "sequence": 1,
        }
    )
    connect_through_consent(env, server, sb)
    env["mail.mail"].create(
        [
            {
                "email_from": f"Contoso Admin <{SENDER}>",
                "email_to": f"customer{n}@example.com",
                "subject": f"Reminder {n}",
                "body_html": f"<p>Reminder number {n}.</p>",
                "mail_server_id": server.id,
            }
            for n in range(options.mails)
        ]
    )
    env.cr.commit()
    return server.id


def next_trigger(env, cron):
    """When the addon asked the mail cron to run again (None: it did not)."""
    env.cr.execute("SELECT min(call_at) FROM ir_cron_trigger WHERE cron_id = %s", [cron.id])
    return env.cr.fetchone()[0]


def drain(registry, api, options):
    """Run the queue as the cron does, at each trigger, until it is empty; (runs, admit s)."""
    Ledger = registry["microsoft.outlook.graph.send.ledger"]
    admit = Ledger._admit
    spent = [0.0]

    def timed_admit(self, server, mails):
        start = time.perf_counter()
        try:
            return admit(self, server, mails)
        finally:
            spent[0] += time.perf_counter() - start

    Ledger._admit = timed_admit
    runs, deadline = 0, time.time() + options.max_minutes * 60
    try:
        while time.time() < deadline:
            with environment(registry, api) as env:
                cron = env.ref(MAIL_CRON)
                env["ir.cron.trigger"].search([("cron_id", "=", cron.id)]).unlink()
                env.cr.commit()
                env["mail.mail"].process_email_queue()
                runs += 1
                left = env["mail.mail"].search_count([("state", "=", "outgoing")])
                if not left:
                    break
                due = next_trigger(env, cron)
            # Trigger times are naive UTC, stored to the second: wait for the second after.
            due_at = due.replace(tzinfo=datetime.UTC).timestamp() if due else time.time()
            wait = due_at + 1 - time.time()
            time.sleep(max(0.05, min(wait, 60)))
    finally:
        Ledger._admit = admit
    return runs, spent[0]


def run(options, src, python, database):
    registry, api = open_registry(src, database)
    with environment(registry, api) as env:
        sb = start_sandbox(env, options.latency)
        setup_odoo(env, sb, options)
    try:
        started = time.perf_counter()
        runs, admit_seconds = drain(registry, api, options)
        wall = time.perf_counter() - started
        with environment(registry, api) as env:
            states = dict(env["mail.mail"]._read_group([], ["state"], ["__count"]))
        out = sb.outbox()
        refused = sum(
            1
            for entry in sb.requests
            if entry.status and entry.status >= 400 and entry.path.endswith(("/send", "/sendMail"))
        )
    finally:
        sb.stop()
    minute = 60 * options.time_scale
    sent = len(out)
    first = min(d.delivered_at for d in out)
    last = max(d.delivered_at for d in out)
    ideal = math.floor((sent - 1) / RATE) * minute
    held = max(d.delivered_at - d.time for d in out)
    print()
    print(f"{machine()}; minute scaled to {minute:.1f} s, limit {RATE} messages a minute")
    print(f"mails queued {options.mails}, left the sandbox {sent}, refused {refused}")
    print(f"mail states in Odoo: {states}")
    print(
        f"first to last departure {last - first:.1f} s, the limit needs {ideal:.1f} s: "
        f"send rate {100 * ideal / (last - first):.1f}% of the limit (target >= 95%)"
    )
    print(
        f"after the first minute's {RATE} at once: "
        f"{(sent - RATE) / (last - first) * minute:.2f} messages per scaled minute; "
        f"longest hold at the sandbox {held:.2f} s ({held / minute:.2f} scaled minutes)"
    )
    print(
        f"queue runs {runs}; wall {wall:.1f} s; scheduling overhead "
        f"{1000 * admit_seconds / max(sent, 1):.2f} ms per mail "
        f"({admit_seconds:.1f} s in the ledger's _admit)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

import contextlib
import logging
from datetime import timedelta

from odoo import api, fields, models
from odoo.tools import SQL, email_normalize

from odoo.addons.base.models.ir_mail_server import MailDeliveryException

from ..services.sending_limits import (
    NO_LIMITS,
    RECIPIENTS_PER_DAY,
    TENANT_EXTERNAL,
    Budget,
    admit_with_tenant,
    count_external,
    count_recipients,
    forecast_shared,
    generated_by_exchange,
    is_bulk,
    message_external,
    message_recipients,
    next_backoff,
    quota_ndr_limit,
    round_up,
)
from .committed_cursor import committed_cursor
from .microsoft_outlook_graph_mixin import GRAPH

_logger = logging.getLogger(__name__)

# Namespace of the advisory locks that serialize the budget of one account.
LEDGER_LOCK = 0x4D534C47
# Namespace of the advisory locks that serialize the external recipient budget of one tenant.
TENANT_LOCK = 0x4D53544C
# Entries are purged once they count for no limit any more (with room for a time scale > 1).
KEEP = timedelta(days=3)
# Hidden setting for tests and benchmarks (see _time_scale).
TIME_SCALE_PARAM = "microsoft_outlook_graph.sending_limits_time_scale"


class MicrosoftOutlookGraphSendLedger(models.Model):
    """What one Microsoft account handed to Exchange: the memory of its sending limits.

    One row per message, written when the message is admitted (before it is sent), in a
    transaction of its own that every Odoo worker sees at once. Exchange counts a message
    sent as a shared mailbox against the signed-in account, hence the account key.
    """

    _name = "microsoft.outlook.graph.send.ledger"
    _description = "Microsoft Graph Sending Ledger"
    _order = "sent_at, id"
    _log_access = False

    account = fields.Char(required=True, index=True, readonly=True)
    sent_at = fields.Datetime(
        "Leaves At",
        required=True,
        index=True,
        readonly=True,
        help="When Exchange lets the message leave: the time it was handed over, or later "
        "when the message rate holds it back.",
    )
    recipient_count = fields.Integer("Recipients", readonly=True)
    mail_id = fields.Integer(index="btree_not_null", readonly=True)
    message_id = fields.Char("Message-Id", index="btree_not_null", readonly=True)
    mail_server_id = fields.Many2one("ir.mail_server", ondelete="set null", readonly=True)
    confirmed = fields.Boolean(
        readonly=True, help="Microsoft accepted the message: it counts whatever Odoo does next."
    )
    tenant = fields.Char(
        "Microsoft Tenant Id",
        index="btree_not_null",
        readonly=True,
        help="The tenant whose external recipient limit the message spends.",
    )
    external_count = fields.Integer(
        "External Recipients",
        readonly=True,
        help="Recipients outside the tenant's accepted domains (Exchange's tenant limit).",
    )

    @api.model
    def _budget(self, account, limits, now):
        """The Budget of account at now, from the entries that still count."""
        since = now - timedelta(seconds=max(limits.window, limits.minute))
        rows = self.search_fetch(
            [("account", "=", account), ("sent_at", ">", since)],
            ["sent_at", "recipient_count"],
            order="sent_at",
        )
        return Budget(((row.sent_at, row.recipient_count) for row in rows), limits)

    @api.model
    def _tenant_budget(self, tenant, limits, now):
        """The Budget of the tenant's external recipients at now, every account together."""
        since = now - timedelta(seconds=limits.window)
        rows = self.search_fetch(
            [("tenant", "=", tenant), ("external_count", ">", 0), ("sent_at", ">", since)],
            ["sent_at", "external_count"],
            order="sent_at",
        )
        return Budget(((row.sent_at, row.external_count) for row in rows), limits)

    @contextlib.contextmanager
    def _locked(self, account, tenant=None):
        """This model on a cursor of its own holding account's budget lock (and the tenant's,
        taken first: every worker takes them in that order); committed on exit.

        The transaction reads committed rows at every statement (READ COMMITTED), so what the
        previous lock holder wrote is seen as soon as the lock is granted; two workers never
        spend one budget twice. Release and confirmation take the account's lock only: they
        remove entries or move them later, which never lets a tenant's budget be overspent.
        """
        with committed_cursor(self.env) as env:
            if tenant:
                env.cr.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [TENANT_LOCK, tenant],
                )
            env.cr.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [LEDGER_LOCK, account])
            yield self.with_env(env)

    @api.model
    def _confirm_sent(self, account, message_id, accepted_at):
        """Confirm the entries of a sent message, moved to when Microsoft accepted it if later.

        In the ledger's own locked transaction, where the entries were written: the caller's
        transaction may not see them yet.
        """
        with self._locked(account) as ledger:
            entries = ledger.search([("account", "=", account), ("message_id", "=", message_id)])
            entries.filtered(lambda entry: entry.sent_at < accepted_at).sent_at = accepted_at
            entries.confirmed = True

    @api.model
    def _release(self, account, mail_ids):
        """Forget the entries of mails that Microsoft did not accept: they count for nothing.

        By mail ids, whatever their state: the caller's transaction may have failed.
        """
        if mail_ids:
            with self._locked(account) as ledger:
                ledger.search(
                    [
                        ("account", "=", account),
                        ("mail_id", "in", list(mail_ids)),
                        ("confirmed", "=", False),
                    ]
                ).unlink()

    @api.model
    def _requeue_refused(self, message_id, report, incoming_server_id):
        """Exchange reported that it refused the mail of message_id for the recipient rate
        of the sending account, or for the tenant's external recipient rate (5.7.233: then
        the tenant's external mail waits, not the server's).

        Believed only when it provably comes from the sending account's own Microsoft 365
        (``_trusted_report_senders``): anyone who received one of the company's mails knows
        a Message-ID and can write such a report. The mail counted for nothing at Microsoft:
        its entries go, and it waits in the queue again, after a back-off (the ledger
        undercounted). A mail that Odoo already deleted after sending cannot wait again: its
        recipients' notifications show the failure, so the author can resend it. False when
        the report is not believed or names no mail sent through Graph.
        """
        entries = self.search([("message_id", "=", message_id)])
        if not entries:
            return False
        servers = self._trusted_report_senders(entries.mail_server_id, report, incoming_server_id)
        if not servers:
            _logger.warning(
                "[Graph API] a report claims Exchange refused mail %s for the daily recipient "
                "limit, but it was not read from the sending account's own mailbox through "
                "Microsoft Graph with Exchange's marks: nothing changed",
                message_id,
            )
            return False
        entries = entries.filtered(lambda entry: entry.mail_server_id in servers)
        for account in set(entries.mapped("account")):
            with self._locked(account) as ledger:
                ledger.search([("account", "=", account), ("message_id", "=", message_id)]).unlink()
        # The report proves the mail did not leave: its next attempt is no resend.
        self.env["microsoft.outlook.graph.handover"].search(
            [("message_id", "=", message_id)]
        ).unlink()
        server = servers[:1]
        tenant_limit = quota_ndr_limit(report) == TENANT_EXTERNAL
        Tenant = self.env["microsoft.outlook.graph.tenant"].sudo()
        tenant = Tenant._of(server.microsoft_graph_account_tid) if tenant_limit else Tenant
        paused_until = False
        if tenant:
            paused_until = tenant._quota_refused(server._microsoft_graph_now())
            reason = self.env._(
                "Exchange refused this mail: the Microsoft 365 tenant's daily limit of external "
                "recipients (%(limit)s) was reached (mail sent from Outlook counts too).",
                limit=tenant.external_recipients_per_day,
            )
        else:
            for each in servers:
                self._quota_refused(each)
            paused_until = server.microsoft_graph_paused_until
            reason = self.env._(
                "Exchange refused this mail: the daily recipient limit of %(mailbox)s was "
                "reached (mail sent from Outlook counts too).",
                mailbox=server.smtp_user or "-",
            )
        mails = self.env["mail.mail"].search(
            [("message_id", "=", message_id), ("state", "in", ("sent", "exception"))]
        )
        if mails:
            mails.write(
                {
                    "state": "outgoing",
                    "failure_type": False,
                    "failure_reason": reason,
                    "microsoft_graph_budget_server_id": server.id,
                    "microsoft_graph_tenant_id": tenant.id,
                    "microsoft_graph_send_after": paused_until,
                }
            )
            self.env["mail.notification"].search(
                [("mail_mail_id", "in", mails.ids), ("notification_type", "=", "email")]
            ).write(
                {"notification_status": "ready", "failure_type": False, "failure_reason": False}
            )
            if paused_until:
                self.env.ref("mail.ir_cron_mail_scheduler_action")._trigger(paused_until)
        else:
            self.env["mail.notification"].search(
                [
                    ("mail_message_id.message_id", "=", message_id),
                    ("notification_type", "=", "email"),
                ]
            ).write(
                {
                    "notification_status": "exception",
                    "failure_type": "unknown",
                    "failure_reason": reason,
                }
            )
        _logger.warning(
            "[Graph API] Exchange refused mail %s for the %s: %s",
            message_id,
            f"external recipient limit of tenant {tenant.tenant_id}"
            if tenant
            else f"daily recipient limit of {server.smtp_user or '-'}",
            "back in the queue" if mails else "already deleted, its notifications show the failure",
        )
        return True

    @api.model
    def _trusted_report_senders(self, servers, report, incoming_server_id):
        """The servers among servers whose Microsoft 365 provably wrote report.

        It must have been read through Graph (``incoming_server_id``, set by this addon's
        import only) from a mailbox of the same Microsoft tenant that the server sends from
        (the mailbox itself, or the account that sends as it), and carry the marks Exchange
        puts on what it generates inside the organization, which its header firewall strips
        from mail coming from outside.
        """
        if not incoming_server_id or not generated_by_exchange(report):
            return servers.browse()
        incoming = self.env["fetchmail.server"].sudo().browse(incoming_server_id).exists()
        if (
            not incoming
            or incoming.server_type != GRAPH
            or not incoming.microsoft_graph_account_tid
        ):
            return servers.browse()
        mailbox = incoming._microsoft_graph_mailbox_address()
        return servers.filtered(
            lambda server: server.smtp_authentication == GRAPH
            and server.microsoft_graph_account_tid == incoming.microsoft_graph_account_tid
            and mailbox
            in {
                server._microsoft_graph_mailbox_address(),
                email_normalize(server.microsoft_graph_account_address or ""),
            }
        )

    # sending limits: admission, holds, back-off, forecast -------------------------------

    @api.model
    def _time_scale(self):
        """Hidden setting for tests and benchmarks: multiplies the day and the minute of every
        limit, as the sandbox's time_scale does."""
        return float(self.env["ir.config_parameter"].sudo().get_param(TIME_SCALE_PARAM) or 1)

    @api.model
    def _admit(self, server, mails):
        """Of one queue batch of server, the mails that may go now, in sending order, their
        messages entered in the ledger; the others wait in the queue with the reason and a time.

        Transactional mail goes before mass mail, oldest first, and no mail overtakes one
        that waits: a newsletter never starves an invoice, and the forecast holds. Both the
        account's limits and the tenant's external recipient limit must let a mail go now.
        """
        server.ensure_one()
        limits = server._microsoft_graph_limits()
        now = server._microsoft_graph_now()
        account = server._microsoft_graph_budget_account()
        tenant = server._microsoft_graph_tenant()
        domains = tenant._accepted_domains() if tenant else None
        queue = mails._microsoft_graph_queue_order()
        if server.microsoft_graph_paused_until and server.microsoft_graph_paused_until > now:
            # Microsoft asked to wait: the first mail meets the pause and says so, the
            # others stay queued as they are.
            queue = queue[:1]
        plans = [
            (
                mail,
                mail._microsoft_graph_message_recipients(),
                mail._microsoft_graph_message_external(domains)
                if tenant
                else [0] * len(mail._microsoft_graph_message_recipients()),
            )
            for mail in queue
        ]
        admitted, waiting, refused = [], [], []
        # What holds the rest back: the mailbox's limits stop every later mail; the tenant's
        # stops later mail to external recipients only (internal mail does not count there).
        box_blocked = tenant_blocked = None
        with self.sudo()._locked(account, tenant.tenant_id if tenant else None) as ledger:
            budget = ledger._budget(account, limits, now)
            shared = (
                ledger._tenant_budget(tenant.tenant_id, tenant._limits(), now) if tenant else None
            )
            entries = []
            for mail, counts, externals in plans:
                if box_blocked is None and not (tenant_blocked and sum(externals)):
                    admission = admit_with_tenant(
                        budget,
                        shared,
                        sum(counts),
                        sum(externals),
                        now,
                        tenant.paused_until if tenant else None,
                    )
                    if admission.admitted:
                        for position, (count, external) in enumerate(
                            zip(counts, externals, strict=True)
                        ):
                            slot = admission.slot if position == 0 else budget.next_slot(0, now)
                            budget.record(slot, count)
                            if shared is not None and external:
                                shared.record(slot, external)
                            entries.append(
                                {
                                    "account": account,
                                    "sent_at": slot,
                                    "recipient_count": count,
                                    "mail_id": mail.id,
                                    "message_id": mail.message_id,
                                    "mail_server_id": server.id,
                                    "tenant": tenant.tenant_id if tenant else False,
                                    "external_count": external,
                                }
                            )
                        admitted.append(mail)
                        continue
                    if admission.retry_at is None:
                        refused.append((mail, sum(counts), admission.limit))
                        continue
                    if admission.limit == TENANT_EXTERNAL:
                        tenant_blocked = admission
                    else:
                        box_blocked = admission
                waiting.append((mail, sum(counts), sum(externals), box_blocked or tenant_blocked))
            ledger.create(entries)
        Mail = self.env["mail.mail"]
        admitted = Mail.concat(*admitted)
        admitted.filtered(
            lambda mail: mail.microsoft_graph_budget_server_id or mail.microsoft_graph_tenant_id
        ).write(
            {
                "microsoft_graph_budget_server_id": False,
                "microsoft_graph_tenant_id": False,
                "microsoft_graph_send_after": False,
                "microsoft_graph_retry_at": False,
            }
        )
        for mail, count, limit in refused:
            reason = (
                self._tenant_too_many_reason(count, tenant)
                if limit == TENANT_EXTERNAL
                else self._too_many_reason(server, count, limits)
            )
            mail._microsoft_graph_refuse(reason)
        if waiting:
            self._hold(server, waiting, budget, shared, tenant, now)
        return admitted

    @api.model
    def _admit_message(self, server, message):
        """The budget check of a message server sends without Odoo's queue (``send_email``
        called directly): enter it in the ledger, or refuse it with the reason."""
        limits = server._microsoft_graph_limits()
        now = server._microsoft_graph_now()
        account = server._microsoft_graph_budget_account()
        tenant = server._microsoft_graph_tenant()
        fields_ = (message.get_all("To"), message.get_all("Cc"), message.get_all("Bcc"))
        count = count_recipients(*fields_)
        external = count_external(tenant._accepted_domains(), *fields_) if tenant else 0
        with self.sudo()._locked(account, tenant.tenant_id if tenant else None) as ledger:
            shared = (
                ledger._tenant_budget(tenant.tenant_id, tenant._limits(), now) if tenant else None
            )
            admission = admit_with_tenant(
                ledger._budget(account, limits, now),
                shared,
                count,
                external,
                now,
                tenant.paused_until if tenant else None,
            )
            if admission.admitted:
                ledger.create(
                    {
                        "account": account,
                        "sent_at": admission.slot,
                        "recipient_count": count,
                        "message_id": message["Message-Id"],
                        "mail_server_id": server.id,
                        "tenant": tenant.tenant_id if tenant else False,
                        "external_count": external,
                    }
                )
                return
        if admission.retry_at is None:
            reason = (
                self._tenant_too_many_reason(external, tenant)
                if admission.limit == TENANT_EXTERNAL
                else self._too_many_reason(server, count, limits)
            )
        elif admission.limit == TENANT_EXTERNAL:
            reason = self.env._(
                "Sending this mail now would go past the Microsoft 365 tenant's daily limit of "
                "external recipients (%(limit)s); send it after %(time)s UTC.",
                limit=tenant.external_recipients_per_day,
                time=admission.retry_at.strftime("%Y-%m-%d %H:%M"),
            )
        else:
            reason = self.env._(
                "Sending this mail now would go past the Exchange sending limits of "
                "%(mailbox)s; send it after %(time)s UTC.",
                mailbox=server.smtp_user,
                time=admission.retry_at.strftime("%Y-%m-%d %H:%M"),
            )
        raise MailDeliveryException(self.env._("Mail Delivery Failed"), reason)

    @api.model
    def _hold(self, server, waiting, budget, shared, tenant, now):
        """Leave waiting mails of server queued, each with the time its turn comes and the
        limit it waits for, and wake the queue when the first one may go.

        waiting: [(mail, recipients, external recipients, the Admission that holds it)]."""
        account = server._microsoft_graph_budget_account()
        plan = forecast_shared(
            [(mail.id, account, count, external) for mail, count, external, _ in waiting],
            {account: budget._entries},
            {account: budget.limits},
            shared._entries if shared is not None else (),
            shared.limits if shared is not None else NO_LIMITS,
            now,
        )
        limits = budget.limits
        templates = {
            TENANT_EXTERNAL: (
                self.env._(
                    "Exchange limit of external recipients of the Microsoft 365 tenant "
                    "%(tenant)s (%(limit)s in 24 hours, every mailbox together): sends after "
                    "%(time)s UTC."
                ),
                tenant.external_recipients_per_day if tenant else 0,
            ),
            RECIPIENTS_PER_DAY: (
                self.env._(
                    "Exchange daily recipient limit of %(mailbox)s (%(limit)s recipients in 24 "
                    "hours): sends after %(time)s UTC."
                ),
                limits.recipients_per_day,
            ),
        }
        rate = (
            self.env._(
                "Exchange message rate of %(mailbox)s (%(limit)s messages a minute): sends "
                "after %(time)s UTC."
            ),
            limits.messages_per_minute,
        )
        groups = {}
        for mail, _count, _external, blocked in waiting:
            slot = max(plan.time_of(mail.id) or blocked.retry_at, blocked.retry_at)
            # Rounded up to the limits' minute: a whole minute, or its time-scaled length.
            minute = round_up(slot, limits.minute)
            groups.setdefault((minute, blocked.limit), []).append(mail.id)
        Mail = self.env["mail.mail"]
        for (minute, limit_name), mail_ids in groups.items():
            template, limit = templates.get(limit_name, rate)
            Mail.browse(mail_ids).write(
                {
                    "microsoft_graph_budget_server_id": server.id,
                    "microsoft_graph_tenant_id": tenant.id
                    if limit_name == TENANT_EXTERNAL
                    else False,
                    "microsoft_graph_send_after": minute,
                    # Short waits for the message rate stay due: the next run takes them.
                    "microsoft_graph_retry_at": minute if limit_name in templates else False,
                    "failure_reason": template
                    % {
                        "mailbox": server.smtp_user,
                        "tenant": tenant.name if tenant else "-",
                        "limit": limit,
                        "time": minute.strftime("%Y-%m-%d %H:%M"),
                    },
                }
            )
        first = min(blocked.retry_at for _mail, _count, _external, blocked in waiting)
        _logger.info(
            "[Graph API] %s mails for %s wait for the %s limit; the first may go at %s UTC",
            len(waiting),
            email_normalize(server.smtp_user),
            " and ".join(sorted({blocked.limit for *_rest, blocked in waiting})),
            first,
        )
        self.env.ref("mail.ir_cron_mail_scheduler_action").sudo()._trigger(first)

    @api.model
    def _tenant_too_many_reason(self, count, tenant):
        return self.env._(
            "This mail has %(count)s external recipients, more than the Microsoft 365 tenant "
            "%(tenant)s may send to in 24 hours (%(limit)s). Split it, or raise the tenant's "
            "licence count or limit if Microsoft's is higher.",
            count=count,
            tenant=tenant.name,
            limit=tenant.external_recipients_per_day,
        )

    @api.model
    def _too_many_reason(self, server, count, limits):
        per_message = limits.recipients_per_message
        if per_message is not None and count > per_message:
            return self.env._(
                "This mail has %(count)s recipients in one message; Exchange accepts at most "
                "%(limit)s from %(mailbox)s. Send it to fewer recipients at once (a mass "
                "mailing sends one message per recipient), or, if the Microsoft 365 admin "
                "raised the tenant's limit (up to 1,000), raise “Recipients per Message” on "
                "the outgoing server.",
                count=count,
                limit=per_message,
                mailbox=server.smtp_user,
            )
        return self.env._(
            "This mail has %(count)s recipients, more than %(mailbox)s may send in 24 hours "
            "(%(limit)s). Split it, or send it through another server.",
            count=count,
            limit=limits.recipients_per_day,
            mailbox=server.smtp_user,
        )

    @api.model
    def _quota_refused(self, server):
        """Exchange refused mail of server for the recipient rate although the ledger had
        room: mail left the mailbox outside Odoo. Wait, longer at each refusal, instead of
        asking again for every queued mail (each ask would be refused and reported)."""
        server.ensure_one()
        backoff = next_backoff(server.microsoft_graph_quota_backoff)
        until = server._microsoft_graph_now() + timedelta(minutes=backoff * self._time_scale())
        server.write(
            {"microsoft_graph_quota_backoff": backoff, "microsoft_graph_paused_until": until}
        )
        _logger.warning(
            "[Graph API] Exchange refused mail from %s for its daily recipient limit, which "
            "Odoo's ledger had not reached (mail sent outside Odoo counts too): sending waits "
            "until %s UTC",
            email_normalize(server.smtp_user),
            until,
        )
        return until

    @api.model
    def _usage(self, servers, now):
        """{server id: (recipients in the window, messages in the last minute, mails waiting
        for its limits)} of Graph servers: one query for their ledgers, one for the waiting
        mails, whatever their number (the form and the health list show them)."""
        accounts = {server.id: server._microsoft_graph_budget_account() for server in servers}
        limits = {server.id: server._microsoft_graph_limits() for server in servers}
        ledgers = self._ledgers(set(accounts.values()), limits.values(), now)
        waiting = dict(
            self.env["mail.mail"]._read_group(
                [
                    ("state", "=", "outgoing"),
                    ("microsoft_graph_budget_server_id", "in", servers.ids),
                ],
                ["microsoft_graph_budget_server_id"],
                ["__count"],
            )
        )
        result = {}
        for server in servers:
            budget = Budget(ledgers.get(accounts[server.id], ()), limits[server.id])
            result[server.id] = (
                budget.recipients_used(now),
                budget.messages_last_minute(now),
                waiting.get(server, 0),
            )
        return result

    @api.model
    def _ledgers(self, accounts, limits, now):
        """{account: [(sent_at, recipient_count)]} of the entries that still count for one
        of limits, in one query."""
        if not accounts:  # no Graph server among those asked about (a new or SMTP server)
            return {}
        longest = max(max(each.window, each.minute) for each in limits)
        rows = self.search_fetch(
            [
                ("account", "in", list(accounts)),
                ("sent_at", ">", now - timedelta(seconds=longest)),
            ],
            ["account", "sent_at", "recipient_count"],
            order="sent_at",
        )
        ledgers = {}
        for row in rows:
            ledgers.setdefault(row.account, []).append((row.sent_at, row.recipient_count))
        return ledgers

    @api.model
    def _queue_empties_at(self, servers, now):
        """{server id: when its last waiting mail may go, or False} of Graph servers, from
        one forecast per tenant of all its waiting mails (its mailboxes share the tenant's
        external budget) and one of the servers without a tenant (each on its own budget).

        A fixed number of queries per tenant, none per server or mail: one for the ledgers
        and one for the waiting mails of every server involved.
        """
        tids = {server.microsoft_graph_account_tid for server in servers} - {False, None}
        tenants = {
            tenant.tenant_id: tenant
            for tenant in self.env["microsoft.outlook.graph.tenant"]
            .sudo()
            .search([("tenant_id", "in", list(tids))])
        }
        groups = {tid: servers.browse() for tid in tenants}  # tenant id -> its servers
        alone = servers.filtered(lambda server: server.microsoft_graph_account_tid not in tenants)
        if tenants:
            # Every server of those tenants, for the forecast of their shared budgets.
            for server in servers.search([("smtp_authentication", "=", GRAPH)]):
                if server.microsoft_graph_account_tid in groups:
                    groups[server.microsoft_graph_account_tid] |= server
        spending = alone.union(*groups.values())
        limits = {server.id: server._microsoft_graph_limits() for server in spending}
        accounts = {server.id: server._microsoft_graph_budget_account() for server in spending}
        ledgers = self._ledgers(set(accounts.values()), limits.values(), now)
        box_ledgers = {
            server.id: Budget(ledgers.get(accounts[server.id], ()), limits[server.id])._entries
            for server in spending
        }
        waiting = self._waiting_mails(spending)
        empties = {}
        for tid, group in [(None, alone), *groups.items()]:
            tenant = tenants.get(tid)
            ids = set(group.ids)
            mails = [mail for mail in waiting if mail[1] in ids]
            if not mails:
                continue
            shared_limits, shared = NO_LIMITS, ()
            if tenant:
                shared_limits = tenant._limits()
                shared = self._tenant_budget(tid, shared_limits, now)._entries
            domains = tenant._accepted_domains() if tenant else frozenset()
            queue = [
                (
                    mail_id,
                    server_id,
                    sum(message_recipients(to, cc, emails)),
                    sum(message_external(domains, to, cc, emails)) if tenant else 0,
                )
                for mail_id, server_id, to, cc, emails in mails
            ]
            plan = forecast_shared(
                queue,
                {server.id: box_ledgers[server.id] for server in group},
                {server.id: limits[server.id] for server in group},
                shared,
                shared_limits,
                now,
            )
            empties.update(plan.empties_by_key)
        return {server.id: empties.get(server.id) or False for server in servers}

    @api.model
    def _waiting_mails(self, servers):
        """[(mail id, server id, email_to, email_cc, [partner emails])] of the mails waiting
        for the sending limits of servers, in sending order, in one query: the forecast reads
        every waiting mail of a tenant at each read of a server form, and reading them as
        records cost a query per thousand mails and most of the time."""
        Mail = self.env["mail.mail"]
        recipients = Mail._fields["recipient_ids"]
        from_mailing = SQL("m.mailing_id IS NOT NULL" if "mailing_id" in Mail._fields else "false")
        Mail.flush_model()
        self.env["res.partner"].flush_model(["email"])
        rows = self.env.execute_query(
            SQL(
                """
                SELECT m.id, m.microsoft_graph_budget_server_id, m.email_to, m.email_cc,
                       m.headers, %(from_mailing)s,
                       ARRAY(SELECT p.email FROM %(relation)s r
                               JOIN res_partner p ON p.id = r.%(partner)s
                              WHERE r.%(mail)s = m.id)
                  FROM mail_mail m
                 WHERE m.state = 'outgoing' AND m.microsoft_graph_budget_server_id = ANY(%(ids)s)
                """,
                from_mailing=from_mailing,
                relation=SQL.identifier(recipients.relation),
                partner=SQL.identifier(recipients.column2),
                mail=SQL.identifier(recipients.column1),
                ids=servers.ids,
            )
        )
        rows.sort(key=lambda row: (is_bulk(row[4], row[5]), row[0]))
        return [
            (mail_id, server_id, to, cc, emails) for mail_id, server_id, to, cc, *_h, emails in rows
        ]

    @api.autovacuum
    def _gc_old_entries(self):
        self.sudo().search([("sent_at", "<", fields.Datetime.now() - KEEP)]).unlink()

import logging
from datetime import timedelta

import psycopg2

from odoo import api, fields, models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

from ..services.sending_limits import (
    Limits,
    accepted_domains,
    next_backoff,
    tenant_external_limit,
)

_logger = logging.getLogger(__name__)


class MicrosoftOutlookGraphTenant(models.Model):
    """A Microsoft 365 tenant whose mailboxes send through Graph: the external recipient
    limit that Exchange Online counts for all of them together (TERRL).

    Created when a server of a new tenant connects; written only by the caller's
    transaction (an admin's edit, a believed report), never on a cursor of its own. Its
    budget lives in the sending ledger (``tenant``, ``external_count``), under the tenant's
    advisory lock.
    """

    _name = "microsoft.outlook.graph.tenant"
    _description = "Microsoft 365 Tenant Sending Limit"
    _order = "name, id"

    tenant_id = fields.Char("Microsoft Tenant Id", required=True, readonly=True, index=True)
    name = fields.Char(required=True)
    licence_count = fields.Integer(
        "Email Licences",
        help="Purchased Exchange Online email licences of the tenant. 0: unknown, Odoo counts "
        "the Microsoft accounts connected here (fewer licences give a lower, safer limit).",
    )
    trial = fields.Boolean(
        "Trial Tenant", help="A tenant with trial licences only: 5,000 external recipients a day."
    )
    external_limit = fields.Integer(
        "External Recipient Limit Override",
        help="Set the tenant's daily external recipient limit yourself (the Exchange admin "
        "center shows it in Reports > Mail flow > Tenant Outbound External Recipients). "
        "0: Microsoft's formula.",
    )
    external_recipients_per_day = fields.Integer(
        "External Recipients per Day",
        compute="_compute_external_recipients_per_day",
        help="Exchange Online's tenant external recipient rate limit: 500 x licences^0.7 + "
        "9,500 external recipients in a sliding 24 hours (5,000 for a trial tenant), counted "
        "for every mailbox of the tenant together.",
    )
    extra_domains = fields.Char(
        "Other Accepted Domains",
        help="Accepted domains of the tenant besides those of its connected mailboxes, "
        "separated by commas or spaces; *.example.com accepts every subdomain. Recipients "
        "in them are internal and do not count.",
    )
    accepted_domain_list = fields.Char("Accepted Domains", compute="_compute_accepted_domain_list")
    paused_until = fields.Datetime(
        "External Mail Paused Until",
        readonly=True,
        copy=False,
        help="Exchange refused external mail for the tenant's limit although Odoo's ledger had "
        "room (mail sent outside Odoo counts too): external mail waits until then.",
    )
    quota_backoff = fields.Integer(readonly=True, copy=False)
    external_used = fields.Integer(
        "External Recipients (24 h)", compute="_compute_budget", compute_sudo=True
    )
    external_left = fields.Integer(
        "External Recipients Left", compute="_compute_budget", compute_sudo=True
    )
    waiting_count = fields.Integer(
        "Mails Waiting for the Tenant", compute="_compute_budget", compute_sudo=True
    )

    _tenant_unique = models.Constraint("UNIQUE(tenant_id)", "One record per Microsoft tenant.")

    @api.depends("licence_count", "trial", "external_limit")
    def _compute_external_recipients_per_day(self):
        for tenant in self:
            tenant.external_recipients_per_day = tenant.external_limit or tenant_external_limit(
                tenant.licence_count or tenant._connected_accounts(), tenant.trial
            )

    @api.constrains("licence_count", "external_limit")
    def _check_numbers(self):
        for tenant in self:
            if tenant.licence_count < 0 or tenant.external_limit < 0:
                raise ValidationError(
                    self.env._("The licences and limit of “%s” cannot be negative.", tenant.name)
                )

    def _compute_accepted_domain_list(self):
        for tenant in self:
            tenant.accepted_domain_list = ", ".join(sorted(tenant._accepted_domains()))

    def _compute_budget(self):
        now = fields.Datetime.now()
        Ledger = self.env["microsoft.outlook.graph.send.ledger"].sudo()
        used = dict.fromkeys(self.ids, 0)
        rows = Ledger._read_group(
            [
                ("tenant", "in", self.mapped("tenant_id")),
                ("external_count", ">", 0),
                ("sent_at", ">", now - timedelta(seconds=self._window())),
                ("sent_at", "<=", now + timedelta(seconds=self._window())),
            ],
            ["tenant"],
            ["external_count:sum"],
        )
        by_tid = dict(rows)
        waiting = dict(
            self.env["mail.mail"]
            .sudo()
            ._read_group(
                [
                    ("state", "=", "outgoing"),
                    ("microsoft_graph_tenant_id", "in", self.ids),
                ],
                ["microsoft_graph_tenant_id"],
                ["__count"],
            )
        )
        for tenant in self:
            used[tenant.id] = by_tid.get(tenant.tenant_id, 0)
            tenant.external_used = used[tenant.id]
            tenant.external_left = max(0, tenant.external_recipients_per_day - used[tenant.id])
            tenant.waiting_count = waiting.get(tenant, 0)

    def _window(self):
        return 86_400 * self.env["microsoft.outlook.graph.send.ledger"]._time_scale()

    # ------------------------------------------------------------------

    def _connected_accounts(self):
        """Distinct Microsoft accounts connected here from this tenant (at least one)."""
        if not self.tenant_id:
            return 1
        self.env.cr.execute(
            "SELECT count(DISTINCT account_oid) FROM microsoft_outlook_graph_connection "
            "WHERE account_tid = %s AND tokens_sealed IS NOT NULL",
            [self.tenant_id],
        )
        return max(1, self.env.cr.fetchone()[0])

    def _accepted_domains(self):
        """The tenant's accepted domains as Odoo knows them: the domains of the mailboxes
        and accounts connected from it, and those the admin added."""
        self.ensure_one()
        self.env.cr.execute(
            SQL(
                """
                SELECT lower(split_part(address, '@', 2)) FROM (
                    SELECT c.account_address AS address FROM microsoft_outlook_graph_connection c
                     WHERE c.account_tid = %(tid)s
                    UNION SELECT s.smtp_user FROM ir_mail_server s
                      JOIN microsoft_outlook_graph_connection c
                        ON c.res_model = 'ir.mail_server' AND c.res_id = s.id
                     WHERE c.account_tid = %(tid)s
                    UNION SELECT f.user FROM fetchmail_server f
                      JOIN microsoft_outlook_graph_connection c
                        ON c.res_model = 'fetchmail.server' AND c.res_id = f.id
                     WHERE c.account_tid = %(tid)s
                ) AS addresses WHERE address LIKE '%%@%%'
                """,
                tid=self.tenant_id,
            )
        )
        extra = (self.extra_domains or "").replace(",", " ").split()
        return accepted_domains([row[0] for row in self.env.cr.fetchall()] + extra)

    def _limits(self):
        """The tenant's external recipient budget as Limits (time-scaled as every limit)."""
        self.ensure_one()
        return Limits(
            recipients_per_day=self.external_recipients_per_day or None,
            recipients_per_message=None,
            messages_per_minute=None,
        ).scaled(self._window() / 86_400)

    @api.model
    def _of(self, tid):
        """The tenant of tid, made if missing (a server connected before this version)."""
        if not tid:
            return self.browse()
        tenant = self.sudo().search([("tenant_id", "=", tid)], limit=1)
        if tenant:
            return tenant
        self._ensure(tid)
        return self.sudo().search([("tenant_id", "=", tid)], limit=1)

    @api.model
    def _ensure(self, tid, name=None):
        """Create the tenant of tid if no worker did; in the caller's transaction."""
        if not tid or self.sudo().search_count([("tenant_id", "=", tid)], limit=1):
            return
        try:
            with self.env.cr.savepoint():
                self.env.cr.execute(
                    "INSERT INTO microsoft_outlook_graph_tenant "
                    "(tenant_id, name, licence_count, trial, external_limit, quota_backoff, "
                    " create_uid, create_date, write_uid, write_date) "
                    "VALUES (%s, %s, 0, false, 0, 0, %s, now() at time zone 'UTC', %s, "
                    "now() at time zone 'UTC') ON CONFLICT (tenant_id) DO NOTHING "
                    "RETURNING id",
                    [tid, name or tid, self.env.uid, self.env.uid],
                    log_exceptions=False,
                )
                created = self.env.cr.fetchone()
        except psycopg2.errors.SerializationFailure:
            # Another transaction is creating it now: its row is used from the next run.
            return
        if created:
            tenant = self.sudo().browse(created[0])
            _logger.info(
                "[Graph API] Microsoft 365 tenant %s: external recipients limited to %s a day",
                tid,
                tenant.external_recipients_per_day,
            )

    def _quota_refused(self, now):
        """Exchange refused external mail for the tenant's limit although the ledger had
        room: the tenant's external mail waits, longer at each refusal."""
        self.ensure_one()
        backoff = next_backoff(self.quota_backoff)
        until = now + timedelta(minutes=backoff * self._window() / 86_400)
        self.write({"quota_backoff": backoff, "paused_until": until})
        _logger.warning(
            "[Graph API] Exchange refused external mail of tenant %s for its daily external "
            "recipient limit, which Odoo's ledger had not reached (mail sent outside Odoo "
            "counts too): external mail waits until %s UTC",
            self.tenant_id,
            until,
        )
        return until

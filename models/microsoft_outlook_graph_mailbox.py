import json
from datetime import timedelta

from odoo import api, fields, models, tools
from odoo.tools import SQL

from ..services.vault import VaultError

NOTIFIED_PARAM = "microsoft_outlook_graph.notified_problems"
SECRET_WARNING_DAYS = 30
STUCK_AFTER = timedelta(hours=1)


class MicrosoftOutlookGraphMailbox(models.Model):
    """Every Graph mail server, outgoing and incoming, on one health list.

    A database view over the servers, so filters and grouping are plain SQL and the
    list never goes stale.
    """

    _name = "microsoft.outlook.graph.mailbox"
    _description = "Microsoft Graph Mailbox Health"
    _auto = False
    _order = "needs_attention desc, name"

    direction = fields.Selection(
        [("outgoing", "Outgoing"), ("incoming", "Incoming")], readonly=True
    )
    name = fields.Char("Server", readonly=True)
    mailbox = fields.Char(readonly=True)
    mailbox_kind = fields.Selection(
        [("personal", "Personal mailbox"), ("shared", "Shared mailbox")],
        "Mailbox Type",
        readonly=True,
    )
    mail_server_id = fields.Many2one("ir.mail_server", readonly=True)
    fetchmail_server_id = fields.Many2one("fetchmail.server", readonly=True)
    active = fields.Boolean(readonly=True)
    account_address = fields.Char("Connected Account", readonly=True)
    connected = fields.Boolean(readonly=True)
    needs_reconnect = fields.Boolean("Reconnect Needed", readonly=True)
    token_expires_at = fields.Datetime("Access Token Expiry", readonly=True)
    last_activity = fields.Datetime(
        "Last Sync or Send", readonly=True, help="Last successful import or send."
    )
    paused_until = fields.Datetime("Sending Paused Until", readonly=True)
    failed_count = fields.Integer(
        "Failed", readonly=True, help="Failed mails (outgoing) or messages not imported (incoming)."
    )
    queued_count = fields.Integer("Queued", readonly=True, help="Mails waiting in Odoo's queue.")
    last_error = fields.Text(readonly=True)
    # The sender's own figures (its account key, its window): the list can never count
    # another account than the one the sender spends.
    recipients_used = fields.Integer(
        "Recipients (24 h)",
        related="mail_server_id.microsoft_graph_recipients_used",
        help="Recipients of the mail sent in the last 24 hours by the connected account, "
        "against Exchange's daily recipient limit.",
    )
    waiting_count = fields.Integer(
        "Waiting for Limits",
        related="mail_server_id.microsoft_graph_waiting_count",
        help="Queued mails waiting for the Exchange sending limits of the mailbox.",
    )
    queue_empties_at = fields.Datetime(
        "Queue Empty At", related="mail_server_id.microsoft_graph_queue_empties_at"
    )
    tenant_id = fields.Many2one(
        "microsoft.outlook.graph.tenant", "Microsoft 365 Tenant", readonly=True
    )
    tenant_external_used = fields.Integer(
        "Tenant External (24 h)",
        related="tenant_id.external_used",
        help="External recipients of every mailbox of the tenant in the last 24 hours, against "
        "Exchange's tenant limit.",
    )
    tenant_external_limit = fields.Integer(
        "Tenant External Limit", related="tenant_id.external_recipients_per_day"
    )
    needs_attention = fields.Boolean(readonly=True)
    status = fields.Selection(
        [
            ("not_connected", "Not connected"),
            ("valid", "Outlook Token Valid"),
            ("reconnect", "Reconnect needed"),
        ],
        compute="_compute_status",
    )

    def _compute_status(self):
        # The servers' own status, with one vault for the whole list instead of one per row
        # (each derives its keys): the list of 500 mailboxes answers at once.
        vault = self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_vault()
        for row in self:
            server = (row.mail_server_id or row.fetchmail_server_id).sudo()
            sealed = server.microsoft_graph_tokens_sealed if server else False
            if not sealed:
                row.status = "not_connected"
            elif server.microsoft_graph_needs_reconnect:
                row.status = "reconnect"
            else:
                try:
                    vault.open(sealed, "token")
                except VaultError:
                    row.status = "reconnect"
                else:
                    row.status = "valid"

    @api.model
    def _table_query_sql(self):
        """The servers, one row each, with only their own and their connection's columns."""
        return """
            SELECT s.id * 2 AS id,
                   'outgoing' AS direction,
                   s.name,
                   s.smtp_user AS mailbox,
                   s.microsoft_graph_mailbox_kind AS mailbox_kind,
                   s.id AS mail_server_id,
                   NULL::integer AS fetchmail_server_id,
                   s.active,
                   cs.account_address AS account_address,
                   cs.tokens_sealed IS NOT NULL AS connected,
                   COALESCE(cs.needs_reconnect, false) AS needs_reconnect,
                   cs.token_expires_at AS token_expires_at,
                   s.microsoft_graph_last_sent_at AS last_activity,
                   s.microsoft_graph_paused_until AS paused_until,
                   cs.last_error AS last_error,
                   cs.account_tid AS account_tid
              FROM ir_mail_server s
              LEFT JOIN microsoft_outlook_graph_connection cs
                ON cs.res_model = 'ir.mail_server' AND cs.res_id = s.id
             WHERE s.smtp_authentication = 'microsoft_graph'
            UNION ALL
            SELECT f.id * 2 + 1,
                   'incoming',
                   f.name,
                   f.user,
                   f.microsoft_graph_mailbox_kind,
                   NULL::integer,
                   f.id,
                   f.active,
                   cf.account_address,
                   cf.tokens_sealed IS NOT NULL,
                   COALESCE(cf.needs_reconnect, false),
                   cf.token_expires_at,
                   f.microsoft_graph_last_success,
                   NULL::timestamp,
                   COALESCE(cf.last_error, f.error_message),
                   cf.account_tid
              FROM fetchmail_server f
              LEFT JOIN microsoft_outlook_graph_connection cf
                ON cf.res_model = 'fetchmail.server' AND cf.res_id = f.id
             WHERE f.server_type = 'microsoft_graph'
        """

    def init(self):
        # The counts and the tenant are joined to the servers' rows, one row at most per
        # server, outside the union: PostgreSQL then leaves out the joins whose columns a
        # query does not read, so the count the web client makes of a full page scans the
        # servers only, not the mail queue (issue 17).
        tools.drop_view_if_exists(self.env.cr, self._table)
        self.env.cr.execute(
            SQL(
                """
                CREATE OR REPLACE VIEW %s AS (
                    SELECT servers.*,
                           COALESCE(queue.failed, failed_imports.failed, 0) AS failed_count,
                           COALESCE(queue.queued, 0) AS queued_count,
                           tenant.id AS tenant_id,
                           servers.active AND (
                               NOT servers.connected OR servers.needs_reconnect
                               OR COALESCE(queue.failed, failed_imports.failed, 0) > 0
                               OR servers.last_error IS NOT NULL
                           ) AS needs_attention
                      FROM (%s) AS servers
                      -- Failed and queued mails of every server counted in one pass
                      -- (mail_mail.state has no index: a count per row scanned the table
                      -- once per server).
                      LEFT JOIN (SELECT msg.mail_server_id AS server_id,
                                        count(*) FILTER (WHERE m.state = 'exception') AS failed,
                                        count(*) FILTER (WHERE m.state = 'outgoing') AS queued
                                   FROM mail_mail m
                                   JOIN mail_message msg ON msg.id = m.mail_message_id
                                  WHERE m.state IN ('exception', 'outgoing')
                                    AND msg.mail_server_id IS NOT NULL
                                  GROUP BY msg.mail_server_id) queue
                        ON queue.server_id = servers.mail_server_id
                      LEFT JOIN (SELECT server_id, count(*) AS failed
                                   FROM microsoft_outlook_graph_failed_message
                                  WHERE state = 'failed'
                                  GROUP BY server_id) failed_imports
                        ON failed_imports.server_id = servers.fetchmail_server_id
                      LEFT JOIN microsoft_outlook_graph_tenant tenant
                        ON tenant.tenant_id = servers.account_tid
                )
                """,
                SQL.identifier(self._table),
                SQL(self._table_query_sql()),
            )
        )

    def action_open_server(self):
        self.ensure_one()
        server = self.mail_server_id or self.fetchmail_server_id
        return {
            "type": "ir.actions.act_window",
            "res_model": server._name,
            "res_id": server.id,
            "view_mode": "form",
            "target": "current",
        }

    # ------------------------------------------------------------------
    # The daily check
    # ------------------------------------------------------------------

    @api.model
    def _cron_health_check(self):
        """Tell the administrators about each problem once, while it lasts."""
        problems = self._current_problems()
        Config = self.env["ir.config_parameter"].sudo()
        already = set(json.loads(Config.get_param(NOTIFIED_PARAM) or "[]"))
        for key, (subject, body, record) in problems.items():
            if key not in already:
                self._notify_admins(subject, body, record)
        # Solved problems are forgotten, so that they are reported again if they return.
        Config.set_param(NOTIFIED_PARAM, json.dumps(sorted(problems)))
        return len(set(problems) - already)

    @api.model
    def _current_problems(self):
        """{stable key: (subject, body, record or None)} of what needs an administrator."""
        problems = {}
        expiry = (
            self.env["ir.config_parameter"]
            .sudo()
            .get_param("microsoft_outlook_graph.secret_expiry")
        )
        if expiry:
            expires_on = fields.Date.to_date(expiry)
            days = (expires_on - fields.Date.context_today(self)).days
            if days <= SECRET_WARNING_DAYS:
                problems[f"secret_expiry:{expiry}"] = (
                    self.env._("The Outlook client secret expires on %s", expiry),
                    self.env._(
                        "Create a new client secret for the Azure app (Certificates & secrets), "
                        "enter it in Settings > General Settings > Emails > Use an Outlook Server "
                        "with its new expiry "
                        "date. Until then every Outlook (Microsoft Graph) mailbox keeps working; "
                        "after it, none does."
                    ),
                    None,
                )
        # The Azure app's certificate, when Odoo signs in with one (issue 16).
        problems.update(
            self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_certificate_problems()
        )
        rows = self.search([("active", "=", True)])
        for row in rows.filtered("needs_reconnect"):
            server = row.mail_server_id or row.fetchmail_server_id
            problems[f"reconnect:{server._name}:{server.id}"] = (
                self.env._("Outlook mailbox %s must be reconnected", row.mailbox),
                row.last_error or self.env._("Press Reconnect on the mail server form."),
                server,
            )
        stuck_before = fields.Datetime.now() - STUCK_AFTER
        for row in rows.filtered(lambda row: row.direction == "outgoing" and row.queued_count):
            stuck = (
                self.env["mail.mail"]
                .sudo()
                .search_count(
                    [
                        ("mail_server_id", "=", row.mail_server_id.id),
                        ("state", "=", "outgoing"),
                        ("create_date", "<", stuck_before),
                        # Mail paced by the sending limits is on time until its estimate.
                        "|",
                        ("microsoft_graph_send_after", "=", False),
                        ("microsoft_graph_send_after", "<", fields.Datetime.now()),
                    ]
                )
            )
            if stuck:
                problems[f"stuck:{row.mail_server_id.id}"] = (
                    self.env._("Mail waits for more than an hour on %s", row.mailbox),
                    self.env._(
                        "%(count)s mails are still queued for %(mailbox)s. Their failure "
                        "reason says why (throttling, a connection to reconnect).",
                        count=stuck,
                        mailbox=row.mailbox,
                    ),
                    row.mail_server_id,
                )
        failing = (
            self.env["microsoft.outlook.graph.subscription"]
            .sudo()
            .search(
                [
                    ("subscription_id", "=", False),
                    ("last_error", "!=", False),
                    ("server_id.active", "=", True),
                    ("server_id.microsoft_graph_use_notifications", "=", True),
                ]
            )
        )
        for record in failing:
            server = record.server_id
            problems[f"notifications:{server.id}"] = (
                self.env._("Change notifications fail for %s", server.user),
                self.env._(
                    "Microsoft cannot notify Odoo of new mail for %(mailbox)s: %(error)s Odoo "
                    "polls the mailbox meanwhile, so mail arrives later. Check that Odoo's "
                    "public https address answers (see the incoming server's New Mail "
                    "Detection).",
                    mailbox=server.user,
                    error=record.last_error,
                ),
                server,
            )
        return problems

    @api.model
    def _notify_admins(self, subject, body, record=None, owner_first=False):
        """Tell the administrators in their Odoo inbox, on record when given; with
        owner_first, the owner of a user's personal server instead (their own mailbox)."""
        partners = (
            self.env.ref("base.group_system").sudo().all_user_ids.filtered("active").partner_id
        )
        if owner_first and record and record._fields.get("owner_user_id") and record.owner_user_id:
            partners = record.owner_user_id.partner_id
        if partners:
            self.env["mail.thread"].sudo().message_notify(
                partner_ids=partners.ids,
                subject=subject,
                body=body,
                model=record._name if record else False,
                res_id=record.id if record else False,
            )

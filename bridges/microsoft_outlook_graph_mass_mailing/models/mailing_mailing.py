from odoo import api, fields, models


class MailingMailing(models.Model):
    _inherit = "mailing.mailing"

    microsoft_graph_forecast = fields.Text(
        "Exchange Sending Limits",
        compute="_compute_microsoft_graph_forecast",
        help="How long this mailing takes through a Microsoft 365 mailbox, whose sending "
        "limits Odoo keeps to.",
    )

    @api.depends("mail_server_id", "email_from", "state", "mailing_domain", "mailing_model_id")
    def _compute_microsoft_graph_forecast(self):
        for mailing in self:
            mailing.microsoft_graph_forecast = mailing._microsoft_graph_forecast_text()

    def _microsoft_graph_server(self):
        self.ensure_one()
        server = self.mail_server_id
        if not server:
            server, _smtp_from = (
                self.env["ir.mail_server"].sudo()._find_mail_server(self.email_from)
            )
        if server and server.smtp_authentication == "microsoft_graph":
            return server.sudo()
        return None

    def _microsoft_graph_forecast_text(self):
        """Before sending: how long the mailing takes when it needs more than today's budget
        and what to do about it. While sending: when its last mails leave."""
        self.ensure_one()
        if self.mailing_type != "mail" or self.state not in ("draft", "in_queue", "sending"):
            return False
        server = self._microsoft_graph_server()
        if not server or not self.id:
            return False
        now = server._microsoft_graph_now()
        budget = server._microsoft_graph_budget(now)
        waiting = (
            self.env["mail.mail"]
            .sudo()
            .search(
                [("state", "=", "outgoing"), ("microsoft_graph_budget_server_id", "=", server.id)]
            )
            ._microsoft_graph_queue_order()
        )
        queue = [(mail.id, sum(mail._microsoft_graph_message_recipients())) for mail in waiting]
        if self.state == "sending":
            mine = waiting.filtered(lambda mail: mail.mailing_id == self)
            upcoming = len(self._get_remaining_recipients())
            if not mine and not upcoming:
                return False
            plan = budget.forecast(queue + [(("next", n), 1) for n in range(upcoming)], now)
            return self.env._(
                "Exchange's sending limits pace this mailing through %(mailbox)s: its last "
                "mails leave about %(time)s UTC.",
                mailbox=server.smtp_user,
                time=plan.empties_at.strftime("%Y-%m-%d %H:%M"),
            )
        left = budget.recipients_left(now)
        if left is None or self.total <= left:
            return False
        plan = budget.forecast(queue + [(("new", n), 1) for n in range(self.total)], now)
        limits = budget.limits
        return self.env._(
            "Through %(mailbox)s this mailing of %(count)s recipients needs more than the "
            "%(left)s recipients Exchange still allows it now (%(per_day)s in 24 hours, "
            "%(per_minute)s messages a minute): its last mails would leave about %(time)s "
            "UTC. To send it sooner, choose another outgoing server, send it through a "
            "dedicated mailing service, or ask the Microsoft 365 admin to raise the "
            "mailbox's sending limits, then raise them on the outgoing server.",
            mailbox=server.smtp_user,
            count=self.total,
            left=left,
            per_day=limits.recipients_per_day,
            per_minute=limits.messages_per_minute or "-",
            time=plan.empties_at.strftime("%Y-%m-%d %H:%M"),
        )

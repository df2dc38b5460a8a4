import hashlib
from datetime import timedelta

from odoo import api, fields, models

from .committed_cursor import committed_cursor

# A mail back in the queue after this long was surely not lost in a crash of the moment.
KEEP = timedelta(days=3)


class MicrosoftOutlookGraphHandover(models.Model):
    """Each message Odoo handed to Microsoft: written, and committed, before the request.

    A mail that comes back to the queue although Microsoft accepted it (a worker killed,
    a transaction rolled back after the answer) finds its mark here: before sending it
    again, Odoo asks Graph whether Sent Items already hold it.
    """

    _name = "microsoft.outlook.graph.handover"
    _description = "Microsoft Graph Mail Handed Over"
    _log_access = False

    message_id = fields.Char("Message-Id", required=True, readonly=True)
    recipients_digest = fields.Char(required=True, readonly=True)
    handed_at = fields.Datetime(required=True, readonly=True, index=True)
    attempts = fields.Integer(default=1, readonly=True)

    _message_unique = models.Constraint(
        "UNIQUE(message_id, recipients_digest)", "A message is handed over once per recipients."
    )

    @api.model
    def _hand_over(self, message_id, recipients):
        """Mark the message as handed to Microsoft, committed at once.

        :return: True when an earlier attempt had marked it too (Microsoft may hold it)
        """
        digest = hashlib.sha256("\n".join(sorted(recipients)).encode()).hexdigest()
        with committed_cursor(self.env) as env:
            env.cr.execute(
                f"INSERT INTO {self._table} AS h (message_id, recipients_digest, handed_at, "  # noqa: S608
                "attempts) VALUES (%s, %s, now() at time zone 'UTC', 1) "
                "ON CONFLICT (message_id, recipients_digest) DO UPDATE "
                "SET attempts = h.attempts + 1, handed_at = EXCLUDED.handed_at "
                "RETURNING attempts",
                [message_id, digest],
            )
            return env.cr.fetchone()[0] > 1

    @api.autovacuum
    def _gc_old_handovers(self):
        self.sudo().search([("handed_at", "<", fields.Datetime.now() - KEEP)]).unlink()

import base64
import datetime
import email
import email.policy
import logging

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import exception_to_unicode

from ..services.clock import naive_utc
from ..services.errors import GraphError, GraphTransientError
from .graph_error_text import graph_error_text

_logger = logging.getLogger(__name__)

# Error texts are shown in lists and forms: Odoo's routing errors can be long.
ERROR_MAX_CHARS = 4000
# Imported or discarded messages (and their MIME) are kept this long for an admin to look
# back at, then pruned; messages still not imported stay until someone acts on them.
KEEP_CLOSED = datetime.timedelta(days=30)


class MicrosoftOutlookGraphFailedMessage(models.Model):
    """An incoming Outlook message the import could not process, kept for an admin.

    The import moves on past it (the delta position is not held back); Retry runs it
    through the mail gateway again with its server's settings, Discard closes it.
    """

    _name = "microsoft.outlook.graph.failed.message"
    _description = "Outlook Message Not Imported"
    _order = "received_date desc, id desc"
    _rec_name = "subject"

    server_id = fields.Many2one(
        "fetchmail.server",
        string="Incoming Server",
        required=True,
        readonly=True,
        index=True,
        ondelete="cascade",
    )
    graph_id = fields.Char("Microsoft Message Id", required=True, readonly=True)
    internet_message_id = fields.Char("Message-ID", readonly=True)
    received_date = fields.Datetime("Received", readonly=True)
    subject = fields.Char(readonly=True)
    email_from = fields.Char("From", readonly=True)
    raw = fields.Binary("Original Message", attachment=True, readonly=True)
    raw_filename = fields.Char(compute="_compute_raw_filename")
    size = fields.Integer("Size (bytes)", readonly=True)
    error = fields.Text(readonly=True)
    state = fields.Selection(
        [("failed", "Not Imported"), ("done", "Imported"), ("discarded", "Discarded")],
        default="failed",
        required=True,
        readonly=True,
        index=True,
    )
    attempt_count = fields.Integer("Attempts", default=1, readonly=True)
    retry_automatically = fields.Boolean(
        readonly=True,
        help="Microsoft was busy when the message was fetched: later runs fetch it again.",
    )
    last_attempt_date = fields.Datetime("Last Attempt", readonly=True)

    _server_graph_id_uniq = models.Constraint(
        "UNIQUE(server_id, graph_id)",
        "A message is kept once per incoming server.",
    )

    @api.autovacuum
    def _gc_closed_messages(self):
        self.sudo().search(
            [
                ("state", "in", ("done", "discarded")),
                ("write_date", "<", fields.Datetime.now() - KEEP_CLOSED),
            ]
        ).unlink()

    def _compute_raw_filename(self):
        for record in self:
            record.raw_filename = f"message-{record.id or 'new'}.eml"

    @api.model
    def _keep(self, server, message, error):
        """Keep a message of a delta page that failed (``message`` is an
        ``IncomingMessage``; its MIME may be missing when Graph failed to give it)."""
        values = {
            "server_id": server.id,
            "graph_id": message.id,
            "internet_message_id": message.internet_message_id,
            "received_date": naive_utc(message.received),
            "error": _error_text(self.env, error),
            "last_attempt_date": fields.Datetime.now(),
            "retry_automatically": isinstance(error, GraphTransientError) and not message.raw,
        }
        values.update(self._values_from_raw(message.raw))
        existing = self.search([("server_id", "=", server.id), ("graph_id", "=", message.id)])
        if existing:
            existing.write(
                {**values, "state": "failed", "attempt_count": existing.attempt_count + 1}
            )
            return existing
        return self.create(values)

    @api.model
    def _values_from_raw(self, raw):
        if not raw:
            return {}
        values = {"raw": base64.b64encode(raw), "size": len(raw)}
        try:
            headers = email.message_from_bytes(raw, policy=email.policy.default)
            values["subject"] = str(headers.get("Subject") or "")[:500]
            values["email_from"] = str(headers.get("From") or "")[:500]
            message_id = str(headers.get("Message-ID") or "").strip()
            if message_id:
                values["internet_message_id"] = message_id
        except Exception:  # a broken header is exactly what is kept here
            _logger.debug("Unreadable headers in a kept message", exc_info=True)
        return values

    def action_retry(self):
        """Run the kept messages through the mail gateway again (fetching their MIME
        again when Graph had not given it), in this transaction."""
        self.env["fetchmail.server"].check_access("write")
        done = failed = 0
        for server in self.filtered(lambda record: record.state == "failed").server_id:
            records = self.filtered(
                lambda record, server=server: record.server_id == server
                and record.state == "failed"
            )
            result = records.sudo()._retry_on(server.sudo())
            done += result[0]
            failed += result[1]
        if done and not failed:
            kind, message = (
                "success",
                self.env._("%s message(s) imported.", done),
            )
        else:
            kind, message = (
                "warning",
                self.env._(
                    "%(done)s message(s) imported, %(failed)s still failing: see their error.",
                    done=done,
                    failed=failed,
                ),
            )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Retry"),
                "message": message,
                "type": kind,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def _retry_on(self, server):
        """Retry these records of one server; returns (imported, still failing)."""
        contents = self._refetch(server)
        imported_ids = []
        for record in self:
            raw = base64.b64decode(record.raw) if record.raw else contents.get(record.graph_id)
            if isinstance(raw, Exception) or not raw:
                error = raw or UserError(self.env._("Microsoft Graph gave no content."))
                raw = None
            else:
                error = server._microsoft_graph_process(raw, check_size=False)
            record._record_attempt(raw, error)
            if error is None:
                imported_ids.append(record.graph_id)
        if imported_ids:
            server.microsoft_graph_imported_count += len(imported_ids)
            server._microsoft_graph_write_back_after_commit(
                server._connect__(allow_archived=True), imported_ids
            )
        return len(imported_ids), len(self) - len(imported_ids)

    def _record_attempt(self, raw, error):
        """One more attempt at this message: imported (``error`` None) or not."""
        self.ensure_one()
        values = {
            "attempt_count": self.attempt_count + 1,
            "last_attempt_date": fields.Datetime.now(),
        }
        if raw and not self.raw:
            values.update(self._values_from_raw(raw))
        if error is None:
            values.update(state="done", error=False, retry_automatically=False)
        else:
            values.update(
                error=_error_text(self.env, error),
                retry_automatically=isinstance(error, GraphTransientError)
                and not values.get("raw")
                and not self.raw,
            )
        self.write(values)

    def _refetch(self, server):
        """{graph id: MIME bytes or the error} of the records kept without MIME."""
        missing = self.filtered(lambda record: not record.raw)
        if not missing:
            return {}
        mailbox = server._connect__(allow_archived=True)
        try:
            return {
                message.id: message.raw if message.error is None else message.error
                for message in mailbox.sync.fetch(missing.mapped("graph_id"))
            }
        except GraphError as exc:
            server._microsoft_graph_record_error(exc)
            return dict.fromkeys(missing.mapped("graph_id"), exc)
        finally:
            mailbox.disconnect()

    def action_discard(self):
        self.filtered(lambda record: record.state == "failed").write(
            {"state": "discarded", "retry_automatically": False}
        )
        return True


def _error_text(env, error):
    if isinstance(error, GraphError):
        text = graph_error_text(env, error)
    elif isinstance(error, UserError):
        text = error.args[0] if error.args else str(error)
    else:
        text = exception_to_unicode(error)
    return text[:ERROR_MAX_CHARS]

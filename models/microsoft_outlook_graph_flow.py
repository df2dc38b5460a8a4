import hashlib
import json
from datetime import timedelta

from odoo import api, fields, models

FLOW_LIFETIME = timedelta(minutes=10)


def state_digest(state):
    """Pending flows are found by a digest of their state, never by the state itself."""
    return hashlib.sha256(state.encode()).hexdigest()


class MicrosoftOutlookGraphFlow(models.Model):
    """A sign-in started at Microsoft and not yet come back: one per Connect click.

    It holds MSAL's flow (state, PKCE verifier, nonce) sealed, is bound to the
    user who started it, expires after ten minutes and is consumed on first use,
    so several tabs, servers and users can connect at once.
    """

    _name = "microsoft.outlook.graph.flow"
    _description = "Pending Microsoft Sign-in"
    _log_access = False

    state_digest = fields.Char(required=True, index=True, readonly=True)
    flow_sealed = fields.Char(required=True, readonly=True)
    res_model = fields.Char(required=True, readonly=True)
    res_id = fields.Many2oneReference(model_field="res_model", required=True, readonly=True)
    user_id = fields.Many2one("res.users", required=True, ondelete="cascade", readonly=True)
    expires_at = fields.Datetime(required=True, readonly=True)

    _state_digest_unique = models.Constraint("UNIQUE(state_digest)", "A sign-in state is unique.")

    @api.model
    def _start(self, record, flow):
        vault = record._microsoft_graph_vault()
        return self.create(
            {
                "state_digest": state_digest(flow["state"]),
                "flow_sealed": vault.seal(json.dumps(flow), "flow"),
                "res_model": record._name,
                "res_id": record.id,
                "user_id": self.env.uid,
                "expires_at": fields.Datetime.now() + FLOW_LIFETIME,
            }
        )

    @api.model
    def _consume(self, state):
        """Take the pending flow of ``state`` out of the table.

        :return: (flow record values, None) or (None, a sentence saying why not)
        """
        if not state or not isinstance(state, str) or len(state) > 256:
            return None, self.env._("This sign-in answer carries no valid state.")
        self.env.cr.execute(
            f'SELECT id, flow_sealed, res_model, res_id, user_id, expires_at FROM "{self._table}" '  # noqa: S608
            "WHERE state_digest = %s FOR UPDATE",
            [state_digest(state)],
        )
        row = self.env.cr.fetchone()
        if not row:
            return None, self.env._(
                "This sign-in link is unknown or was already used. Start again from the "
                "mail server with “Connect your Outlook account”."
            )
        flow_id, flow_sealed, res_model, res_id, user_id, expires_at = row
        if user_id != self.env.uid:
            # Left in place: whoever holds another user's state must not be able to spoil it.
            return None, self.env._(
                "This sign-in was started by another Odoo user. Start again from your own session."
            )
        self.browse(flow_id).unlink()
        if expires_at < fields.Datetime.now():
            return None, self.env._(
                "This sign-in took more than 10 minutes and has expired. Start again from the "
                "mail server with “Connect your Outlook account”."
            )
        return {"flow_sealed": flow_sealed, "res_model": res_model, "res_id": res_id}, None

    @api.autovacuum
    def _gc_expired_flows(self):
        self.search([("expires_at", "<", fields.Datetime.now())]).unlink()

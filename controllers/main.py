import json
import logging

from odoo import http
from odoo.exceptions import AccessError, UserError
from odoo.http import request

from odoo.addons.microsoft_outlook.controllers.main import MicrosoftOutlookController

from ..models.graph_error_text import graph_error_text
from ..services.errors import GraphError, error_from_token_response

_logger = logging.getLogger(__name__)


class MicrosoftOutlookGraphController(MicrosoftOutlookController):
    """Odoo's Outlook redirect, with a branch for sign-ins this addon started.

    Odoo's own IMAP/SMTP flow carries a JSON state; ours carries MSAL's random
    state, found through its pending flow. Anything else goes to Odoo untouched.
    """

    @http.route()
    def microsoft_outlook_callback(self, code=None, state=None, error_description=None, **kwargs):
        if not _is_odoo_outlook_state(state):
            return self._microsoft_graph_callback(
                dict(kwargs, code=code, state=state, error_description=error_description)
            )
        return super().microsoft_outlook_callback(
            code=code, state=state, error_description=error_description, **kwargs
        )

    def _microsoft_graph_callback(self, params):
        params = {key: value for key, value in params.items() if value is not None}
        user = request.env.user
        if not user._is_internal():
            return self._microsoft_graph_error(
                request.env._("Only internal Odoo users can connect an Outlook mailbox."),
                status=403,
            )
        Flow = request.env["microsoft.outlook.graph.flow"].sudo()
        pending, problem = Flow._consume(params.get("state"))
        if problem:
            return self._microsoft_graph_error(problem, status=400)
        record = request.env[pending["res_model"]].sudo().browse(pending["res_id"]).exists()
        if not record:
            return self._microsoft_graph_error(
                request.env._(
                    "The mail server of this sign-in was deleted meanwhile. Nothing was saved."
                ),
                status=404,
            )
        redirect_url = self._get_redirect_url(record)
        if params.get("error"):
            error = error_from_token_response(400, params)
            _logger.info(
                "[Graph API] sign-in for %s #%s refused by Microsoft: %s",
                record._name,
                record.id,
                error.code,
            )
            return self._microsoft_graph_error(graph_error_text(request.env, error), redirect_url)
        try:
            record.with_user(user)._microsoft_graph_check_can_manage()
            record._microsoft_graph_finish_connect(pending["flow_sealed"], params)
        except GraphError as exc:
            return self._microsoft_graph_error(graph_error_text(request.env, exc), redirect_url)
        except (AccessError, UserError) as exc:
            return self._microsoft_graph_error(exc.args[0], redirect_url)
        return request.redirect(redirect_url)

    def _microsoft_graph_error(self, message, redirect_url="/odoo", status=200):
        response = request.render(
            "microsoft_outlook_graph.microsoft_outlook_graph_error",
            {"error": message, "redirect_url": redirect_url},
        )
        response.status_code = status
        return response


def _is_odoo_outlook_state(state):
    """Odoo's own flow sends a JSON object with a model name, a record id and a CSRF token.

    Only a well-formed one goes to Odoo's controller, which fails with a server error
    on a malformed one; anything else is answered here.
    """
    try:
        value = json.loads(state or "")
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and isinstance(value.get("model"), str)
        and isinstance(value.get("id"), int)
        and isinstance(value.get("csrf_token"), str)
    )

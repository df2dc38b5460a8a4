"""Outlook.com: a personal Microsoft account connects, sends and receives through Graph.

Personal Microsoft accounts live in the consumer tenant 9188040d-6c67-4c5b-b112-36a304b66dad
and sign in through the ``consumers`` (or ``common``) authority of an app registered for
"personal Microsoft accounts" ("ID token claims reference", tid; docs/azure-setup.md). The
sandbox's consumer tenant plays Outlook.com.
"""

import email
import email.policy

from odoo import api
from odoo.tests import tagged

from odoo.addons.microsoft_outlook_graph.sandbox import defaults

from .common import GraphTransactionCase, connect_without_browser
from .test_incoming import mime

CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
PAT = "pat.doe@outlook.test"


@tagged("post_install", "-at_install")
class TestOutlookCom(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.registry_enter_test_mode()
        self.patch(
            type(self.env["ir.mail_server"]), "_disable_send", classmethod(lambda cls: False)
        )
        self.sandbox.add_personal_account(PAT, "Pat Doe")
        # The Azure app accepts "personal Microsoft accounts" (docs/azure-setup.md).
        self.sandbox.directory.apps[defaults.CLIENT_ID].personal_accounts = True
        self.configure_outlook(microsoft_graph_tenant="consumers")

    def test_connect_send_and_receive_with_a_personal_account(self):
        outgoing = connect_without_browser(self, self.create_outgoing(PAT, sequence=0), login=PAT)
        self.assertEqual(outgoing.microsoft_graph_status, "valid")
        self.assertEqual(outgoing.microsoft_graph_account_tid, CONSUMER_TENANT)
        authorities = {e.path.split("/")[1] for e in self.sandbox.requests if "/oauth2/" in e.path}
        self.assertEqual(authorities, {"consumers"})

        mail = self.env["mail.mail"].create(
            {
                "email_from": f"Pat Doe <{PAT}>",
                "email_to": "friend@example.com",
                "subject": "Hello from Outlook.com",
                "body_html": "<p>Sent through Microsoft Graph.</p>",
                "mail_server_id": outgoing.id,
                "auto_delete": False,
            }
        )
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        (left,) = self.sandbox.outbox()
        self.assertEqual((left.from_, left.mailbox), (PAT, PAT))
        (copy,) = self.sandbox.sent(PAT)
        stored = email.message_from_bytes(copy.raw, policy=email.policy.default)
        self.assertEqual(stored["Message-Id"], mail.message_id)

        partner_model = self.env["ir.model"]._get("res.partner")
        incoming = self.create_incoming(PAT, object_id=partner_model.id)
        connect_without_browser(self, incoming, login=PAT)
        incoming.state = "done"
        self.assertEqual(incoming.microsoft_graph_account_tid, CONSUMER_TENANT)
        raw, message_id = mime("Reply from a friend", to=PAT, sender="friend@example.com")
        self.sandbox.deliver(PAT, raw)
        self.env.flush_all()
        cron = self.env.ref("mail.ir_cron_mail_gateway_action")
        with self.registry.cursor() as cr:
            env = api.Environment(cr, self.env.uid, {"cron_id": cron.id})
            self.assertIsNone(incoming.with_env(env)._fetch_mail())
        self.env.invalidate_all()
        message = self.env["mail.message"].search([("message_id", "=", message_id)])
        self.assertEqual(message.model, "res.partner")

    def test_a_work_account_cannot_connect_through_consumers(self):
        server = self.create_outgoing(sequence=0)
        auth_uri = self.start_connect(server)
        result = self.sandbox.sign_in(auth_uri)
        self.assertFalse(result.url)
        self.assertIn("AADSTS50020", result.page)
        self.assertEqual(server.microsoft_graph_status, "not_connected")

"""Microsoft's refusals reach an admin in the admin's language."""

from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tools import mute_logger
from odoo.tools.translate import code_translations

from ..services.errors import CATALOGUE
from .common import GraphTransactionCase, connect_without_browser

GRAPH_LOGGER = "odoo.addons.microsoft_outlook_graph.services.graph"
ACCESS_DENIED = CATALOGUE["erroraccessdenied"][1]
FRENCH = {
    "Microsoft Graph refused the connection test: %s": (
        "Microsoft Graph a refusé le test de connexion : %s"
    ),
    ACCESS_DENIED: (
        "Le compte connecté n'a pas accès à cette boîte aux lettres ou à ce dossier. "
        "Donnez-lui l'accès total (boîte partagée) dans Exchange, ou connectez le compte "
        "de la boîte elle-même."
    ),
}


@tagged("post_install", "-at_install")
class TestErrorLanguage(GraphTransactionCase):
    def setUp(self):
        super().setUp()
        self.env["res.lang"]._activate_lang("fr_FR")
        self.admin = self.env.ref("base.user_admin")
        self.admin.lang = "fr_FR"
        # What a fr.po of the addon would give Odoo (code translations are read from the
        # module's .po files, not from the database).
        self.patch(
            code_translations,
            "python_translations",
            {
                **code_translations.python_translations,
                ("microsoft_outlook_graph", "fr_FR"): FRENCH,
            },
        )

    def test_a_french_admin_reads_a_refusal_of_microsoft_in_french(self):
        server = connect_without_browser(self, self.create_outgoing())
        self.sandbox.inject_fault(
            "status", path=r"/v1\.0/me$", status=403, code="ErrorAccessDenied", times=1
        )
        # Not assertRaises: its savepoint would roll back the error kept for the health list.
        try:
            with mute_logger(GRAPH_LOGGER):
                server.with_user(self.admin).with_context(
                    lang=self.admin.lang
                ).test_smtp_connection()
        except UserError as exc:
            refusal = exc.args[0]
        else:
            self.fail("Test Connection passed despite Microsoft's refusal")
        self.assertEqual(
            refusal, "Microsoft Graph a refusé le test de connexion : " + FRENCH[ACCESS_DENIED]
        )
        self.env.invalidate_all()
        connection = self.env["microsoft.outlook.graph.connection"]._of(server)[server.id]
        self.assertEqual(connection.last_error, FRENCH[ACCESS_DENIED])

    def test_an_english_admin_reads_the_catalogue_as_written(self):
        server = connect_without_browser(self, self.create_outgoing())
        self.sandbox.inject_fault(
            "status", path=r"/v1\.0/me$", status=403, code="ErrorAccessDenied", times=1
        )
        with self.assertRaises(UserError) as caught, mute_logger(GRAPH_LOGGER):
            server.with_context(lang="en_US").test_smtp_connection()
        self.assertEqual(
            caught.exception.args[0],
            "Microsoft Graph refused the connection test: " + ACCESS_DENIED,
        )

from urllib.parse import urlsplit

from markupsafe import Markup

from odoo import api, fields, models, tools
from odoo.exceptions import UserError, ValidationError

from ..models.graph_error_text import graph_error_text
from ..models.microsoft_outlook_graph_mixin import GRAPH
from ..models.res_config_settings import CLOUD_SELECTION
from ..services.auth import (
    INCOMING,
    OUTGOING,
    SCOPE_REASONS,
    OutlookAuth,
    check_authority,
    scopes_for,
)
from ..services.endpoints import Endpoints
from ..services.errors import GraphError, GraphTransientError

# model -> (the field saying it is a Graph server, the field of the mailbox address)
SERVER_FIELDS = {
    "ir.mail_server": ("smtp_authentication", "smtp_user"),
    "fetchmail.server": ("server_type", "user"),
}
# The Settings fields the setup saves that a Settings page keeps (the secret is never kept).
SETTINGS_SHOWN = (
    "microsoft_outlook_client_identifier",
    "microsoft_graph_tenant",
    "microsoft_graph_cloud",
    "microsoft_graph_authority_url",
    "microsoft_graph_graph_url",
    "microsoft_graph_ca_file",
)
STEPS = [
    ("redirect", "Redirect URI"),
    ("app", "Azure App"),
    ("permissions", "Permissions"),
    ("servers", "Mailbox"),
]
# Asked for by every sign-in, beside the Graph permissions of the servers (OpenID Connect:
# who signed in, and a refresh token).
OPENID_PERMISSIONS = ("offline_access", "openid", "profile", "email")


class MicrosoftOutlookGraphSetup(models.TransientModel):
    """Outlook (Microsoft Graph) setup: docs/azure-setup.md one screen at a time, each
    Azure value tested at Microsoft before it is saved into Settings."""

    _name = "microsoft.outlook.graph.setup"
    _description = "Outlook (Microsoft Graph) Setup"

    step = fields.Selection(STEPS, default="redirect", required=True)
    redirect_uri = fields.Char("Redirect URI", compute="_compute_redirect_uri")
    redirect_uri_not_https = fields.Boolean(compute="_compute_redirect_uri")

    client_id = fields.Char(
        "Application (client) ID",
        default=lambda self: self._param("microsoft_outlook_client_id"),
    )
    # Sealed the moment it is typed: never stored in plaintext, not even in this table.
    client_secret = fields.Char(
        compute="_compute_client_secret",
        inverse="_inverse_client_secret",
    )
    client_secret_sealed = fields.Char(groups="base.group_system")
    secret_saved = fields.Boolean(compute="_compute_credential")
    uses_certificate = fields.Boolean(compute="_compute_credential")
    tenant = fields.Char(
        "Directory (tenant) ID",
        default=lambda self: self._param("microsoft_outlook_graph.tenant"),
        help="The Azure app's Directory (tenant) ID, or one of your verified domains.",
    )
    cloud = fields.Selection(
        CLOUD_SELECTION,
        string="Microsoft Cloud",
        default=lambda self: self._param("microsoft_outlook_graph.cloud") or "global",
        required=True,
    )
    authority_url = fields.Char(
        "Authority URL", default=lambda self: self._param("microsoft_outlook_graph.authority_url")
    )
    graph_url = fields.Char(
        "Graph URL", default=lambda self: self._param("microsoft_outlook_graph.graph_url")
    )
    ca_file = fields.Char(
        "CA Bundle File", default=lambda self: self._param("microsoft_outlook_graph.ca_file")
    )
    app_check = fields.Text("Test Result", readonly=True)
    app_check_kind = fields.Selection(
        [("success", "Passed"), ("danger", "Failed"), ("warning", "Not testable")],
        readonly=True,
    )
    app_saved = fields.Boolean(readonly=True)

    mailbox_kind = fields.Selection(
        [("personal", "Personal mailbox"), ("shared", "Shared mailbox")],
        string="Mailbox Type",
        default="personal",
        required=True,
    )
    use_outgoing = fields.Boolean("Send mail from it", default=True)
    use_incoming = fields.Boolean("Read mail from it", default=True)
    permissions = fields.Html(compute="_compute_permissions", sanitize=False)
    mailbox_address = fields.Char()
    # Odoo sends the user's messages from the user's own address: none, and the first chatter
    # message fails ("Missing from address"), as for a new database's Administrator.
    user_email_missing = fields.Boolean(compute="_compute_user_email_missing")
    outgoing_server_id = fields.Many2one("ir.mail_server", readonly=True)
    outgoing_status = fields.Selection(
        related="outgoing_server_id.microsoft_graph_status", string="Outgoing Connection"
    )
    incoming_server_id = fields.Many2one("fetchmail.server", readonly=True)
    incoming_status = fields.Selection(
        related="incoming_server_id.microsoft_graph_status", string="Incoming Connection"
    )

    @api.model
    def _param(self, key):
        return self.env["ir.config_parameter"].sudo().get_param(key) or False

    def _compute_redirect_uri(self):
        uri = self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_redirect_uri()
        host = urlsplit(uri).hostname
        for setup in self:
            setup.redirect_uri = uri
            # Azure takes http:// redirect URIs for localhost only.
            setup.redirect_uri_not_https = not uri.startswith("https://") and host not in (
                "localhost",
                "127.0.0.1",
            )

    def _compute_client_secret(self):
        self.client_secret = False

    def _inverse_client_secret(self):
        vault = self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_vault()
        for setup in self.filtered("client_secret"):
            setup.sudo().client_secret_sealed = vault.seal(
                setup.client_secret.strip(), "client_secret"
            )

    def _compute_user_email_missing(self):
        self.user_email_missing = not self.env.user.email

    def _compute_credential(self):
        mixin = self.env["microsoft.outlook.graph.mixin"]
        saved = bool(mixin._microsoft_graph_param("client_secret_sealed"))
        certificate = mixin._microsoft_graph_uses_certificate()
        for setup in self:
            setup.secret_saved = saved
            setup.uses_certificate = certificate

    @api.depends("mailbox_kind", "use_outgoing", "use_incoming")
    def _compute_permissions(self):
        for setup in self:
            shared = setup.mailbox_kind == "shared"
            names = []
            for direction, used in ((OUTGOING, setup.use_outgoing), (INCOMING, setup.use_incoming)):
                if used:
                    names += [n for n in scopes_for(direction, shared) if n not in names]
            items = [
                Markup("<li><code>%s</code>: %s</li>") % (name, self.env._(SCOPE_REASONS[name]))
                for name in sorted(names)
            ]
            items.append(
                Markup("<li>%s</li>")
                % Markup(", ").join(Markup("<code>%s</code>") % n for n in OPENID_PERMISSIONS)
            )
            setup.permissions = Markup("<ul>%s</ul>") % Markup().join(items)

    # ------------------------------------------------------------------
    # Navigation
    # ------------------------------------------------------------------

    @api.model
    def action_open(self):
        """The setup from Settings: where the current user left it (closed to fetch a value
        in Azure, or a mailbox still to connect after the sign-in of another), or a new one
        once its servers are connected."""
        latest = self.search([("create_uid", "=", self.env.uid)], order="id desc", limit=1)
        if not latest or latest._finished():
            latest = self.create({})
        return latest._reopen()

    def _finished(self):
        servers = self._servers()
        return bool(servers) and all(s.microsoft_graph_status == "valid" for s in servers)

    def _reopen(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "microsoft_outlook_graph.microsoft_outlook_graph_setup_action"
        )
        return {**action, "res_id": self.id}

    def _go(self, offset):
        keys = [key for key, _label in STEPS]
        self.step = keys[keys.index(self.step) + offset]
        return self._reopen()

    def action_next(self):
        self.ensure_one()
        if self.step == "app" and not self.app_saved:
            raise UserError(self.env._('Press "Test and save" first: it must pass to go on.'))
        if self.step == "permissions" and not (self.use_outgoing or self.use_incoming):
            raise UserError(self.env._("Choose to send mail, read mail, or both."))
        return self._go(1)

    def action_back(self):
        self.ensure_one()
        return self._go(-1)

    # ------------------------------------------------------------------
    # Step 2: the Azure app, tested before it is saved
    # ------------------------------------------------------------------

    def _settings_values(self):
        values = {
            "microsoft_outlook_client_identifier": (self.client_id or "").strip(),
            "microsoft_graph_tenant": (self.tenant or "").strip(),
            "microsoft_graph_cloud": self.cloud,
            "microsoft_graph_authority_url": (self.authority_url or "").strip() or False,
            "microsoft_graph_graph_url": (self.graph_url or "").strip() or False,
            "microsoft_graph_ca_file": (self.ca_file or "").strip() or False,
        }
        secret = self._typed_secret()
        if secret:
            values["microsoft_graph_client_secret"] = secret
        return values

    def _typed_secret(self):
        sealed = self.sudo().client_secret_sealed
        if not sealed:
            return None
        return (
            self.env["microsoft.outlook.graph.mixin"]
            ._microsoft_graph_vault()
            .open(sealed, "client_secret")
        )

    def _report(self, message, kind):
        self.write({"app_check": message, "app_check_kind": kind, "app_saved": False})
        return self._reopen()

    def action_test_app(self):
        """Test the tenant and cloud (OpenID metadata), then the client id and secret (or
        certificate: a client-credentials token request); save only if both pass."""
        self.ensure_one()
        self.env["res.config.settings"]._microsoft_graph_check_admin()
        values = self._settings_values()
        client_id = values["microsoft_outlook_client_identifier"]
        if not client_id or not values["microsoft_graph_tenant"]:
            return self._report(
                self.env._(
                    "Enter the Application (client) ID and the Directory (tenant) ID, both on "
                    "the Azure portal's App registrations > your app > Overview page."
                ),
                "danger",
            )
        settings = self.env["res.config.settings"].new(values)
        try:
            settings._microsoft_graph_check_values()
        except (UserError, ValidationError) as exc:
            return self._report(exc.args[0], "danger")
        tenant = settings.microsoft_graph_tenant
        endpoints = Endpoints.for_cloud(
            self.cloud,
            values["microsoft_graph_authority_url"],
            values["microsoft_graph_graph_url"],
            values["microsoft_graph_ca_file"],
        )
        session = endpoints.session()
        try:
            metadata = check_authority(endpoints, tenant, session)
        except GraphTransientError as exc:
            return self._report(
                self.env._(
                    "The tenant and cloud test failed: Odoo could not reach Microsoft's sign-in "
                    "service at %(url)s (%(reference)s). %(fix)s",
                    url=endpoints.authority_base,
                    reference=exc.reference,
                    fix=self._where_to_fix(exc),
                ),
                "danger",
            )
        except GraphError as exc:
            return self._report(
                self.env._(
                    "The tenant and cloud test failed: %(reason)s %(fix)s",
                    reason=graph_error_text(self.env, exc),
                    fix=self._where_to_fix(exc),
                ),
                "danger",
            )
        mixin = self.env["microsoft.outlook.graph.mixin"].sudo()
        certificates = mixin._microsoft_graph_certificate_pairs() if self.uses_certificate else ()
        secret = values.get("microsoft_graph_client_secret")
        if not certificates and not secret:
            if not self.secret_saved:
                return self._report(
                    self.env._(
                        "Enter the Client Secret: in the Azure portal, App registrations > your "
                        "app > Certificates & secrets > Client secrets > New client secret, then "
                        "copy its Value (not its Secret ID)."
                    ),
                    "danger",
                )
            secret = mixin._microsoft_graph_client_secret()
        auth = OutlookAuth(
            endpoints,
            tenant=tenant,
            client_id=client_id,
            client_secret=None if certificates else secret,
            redirect_uri=self.redirect_uri,
            session=session,
            certificates=certificates,
        )
        try:
            auth.prove_credential()
        except GraphError as exc:
            if exc.code == "tenant_required":
                return self._report(
                    self.env._(
                        "Microsoft cannot test a client secret on the tenant %(tenant)s: it "
                        "only answers that request for one directory. Enter the Directory "
                        "(tenant) ID (App registrations > your app > Overview) to have it "
                        'tested now, or press "Save without the test": a wrong client id or '
                        "secret will then show at the first Connect.",
                        tenant=tenant,
                    ),
                    "warning",
                )
            return self._report(
                self.env._(
                    "Microsoft refused the app's credential: %(reason)s %(fix)s",
                    reason=graph_error_text(self.env, exc),
                    fix=self._where_to_fix(exc),
                ),
                "danger",
            )
        self._save_app(values)
        message = self.env._(
            "Microsoft knows the tenant and accepted the client id and the %(credential)s. "
            "Saved in Settings.",
            credential=self.env._("certificate") if certificates else self.env._("client secret"),
        )
        if metadata.tenant_id and metadata.tenant_id != tenant.lower():
            message += " " + self.env._(
                "(%(tenant)s is the directory %(id)s.)", tenant=tenant, id=metadata.tenant_id
            )
        self.write({"app_check": message, "app_check_kind": "success", "app_saved": True})
        return self._reopen()

    def action_save_untested(self):
        """Save the app on common / organizations / consumers, where Microsoft cannot
        test a secret (AADSTS9001023): the admin chose to go on."""
        self.ensure_one()
        self.env["res.config.settings"]._microsoft_graph_check_admin()
        if self.app_check_kind != "warning":
            raise UserError(self.env._('Press "Test and save" first.'))
        self._save_app(self._settings_values())
        self.write(
            {
                "app_check": self.env._(
                    "Saved in Settings without the test: the first Connect will show a wrong "
                    "client id or secret."
                ),
                "app_saved": True,
            }
        )
        return self._go(1)

    def _save_app(self, values):
        """Into the same parameters as Settings, through Settings (its checks, the sealing)."""
        Settings = self.env["res.config.settings"]
        Settings.create(values).execute()
        self.sudo().client_secret_sealed = False
        # The Settings page the setup was opened from holds the values it read before, and
        # shows them again once the setup closes: its Save would write them back.
        shown = {key: value for key, value in values.items() if key in SETTINGS_SHOWN}
        Settings.search([("create_uid", "=", self.env.uid)]).write(shown)

    def _where_to_fix(self, error):
        """The Azure page and the field to correct, for what Microsoft refused."""
        overview = self.env._("App registrations > your app > Overview")
        secrets = self.env._("App registrations > your app > Certificates & secrets")
        code = str(error.code or "")
        if code in ("7000215", "7000218"):
            return self.env._(
                "In the Azure portal, %(page)s > Client secrets: copy the Value (not the "
                "Secret ID) of a secret into Client Secret here.",
                page=secrets,
            )
        if code == "7000222":
            return self.env._(
                "In the Azure portal, %(page)s > Client secrets: + New client secret, then copy "
                "its Value into Client Secret here (and delete the expired one).",
                page=secrets,
            )
        if code in ("700016", "700021", "50048"):
            return self.env._(
                "In the Azure portal, %(page)s: copy the Application (client) ID into "
                "Application (client) ID here, and check that the app lives in the Directory "
                "(tenant) ID entered here.",
                page=overview,
            )
        if code in ("90002", "900023", "50194", "tenant_required", "9001023"):
            return self.env._(
                "In the Azure portal, %(page)s: copy the Directory (tenant) ID into Directory "
                "(tenant) ID here.",
                page=overview,
            )
        if code == "700027":
            return self.env._(
                "Upload the certificate from Settings in the Azure portal, %(page)s > "
                "Certificates.",
                page=secrets,
            )
        if code == "openid-configuration" or isinstance(error, GraphTransientError):
            return self.env._(
                "Check the Microsoft Cloud here (for custom endpoints, the Authority URL and "
                "CA Bundle File) and that this Odoo server can reach it (firewall, proxy)."
            )
        return self.env._("Check the values against the Azure portal, %(page)s.", page=overview)

    # ------------------------------------------------------------------
    # Step 4: the first mailbox's servers, then the connect flow
    # ------------------------------------------------------------------

    def _servers(self):
        return [s for s in (self.outgoing_server_id, self.incoming_server_id) if s]

    def action_create_servers(self):
        self.ensure_one()
        address = tools.email_normalize(self.mailbox_address or "")
        if not address:
            raise UserError(self.env._("Enter the mailbox address, e.g. sales@contoso.com."))
        if not (self.use_outgoing or self.use_incoming):
            raise UserError(self.env._("Choose to send mail, read mail, or both."))
        values = {}
        if self.use_outgoing and not self.outgoing_server_id:
            server = self._mailbox_server("ir.mail_server", address, from_filter=address)
            values["outgoing_server_id"] = server.id
        if self.use_incoming and not self.incoming_server_id:
            values["incoming_server_id"] = self._mailbox_server("fetchmail.server", address).id
        self.write(values)
        return self._reopen()

    def action_set_user_email(self):
        """The mailbox address as the current user's email, the address Odoo sends from."""
        self.ensure_one()
        address = tools.email_normalize(self.mailbox_address or "")
        if not address:
            raise UserError(self.env._("Enter the mailbox address, e.g. sales@contoso.com."))
        if not self.env.user.email:
            # On the partner: written on the user, Odoo would mail a "Security Update: Email
            # Changed" notice to the previous address, which is empty.
            self.env.user.partner_id.email = address
        return self._reopen()

    def _mailbox_server(self, model, address, **values):
        """The Graph server of the mailbox in ``model``, or a new one named after it."""
        type_field, address_field = SERVER_FIELDS[model]
        Server = self.env[model]
        existing = Server.search(
            [(type_field, "=", GRAPH), (address_field, "=ilike", address)], limit=1
        )
        return existing or Server.create(
            {
                "name": address,
                type_field: GRAPH,
                address_field: address,
                "microsoft_graph_mailbox_kind": self.mailbox_kind,
                **values,
            }
        )

    def action_connect_outgoing(self):
        self.ensure_one()
        return self.outgoing_server_id.action_microsoft_graph_connect()

    def action_connect_incoming(self):
        self.ensure_one()
        return self.incoming_server_id.action_microsoft_graph_connect()

import datetime
import json
import logging
import os

from odoo import api, fields, models, tools
from odoo.exceptions import AccessError, UserError

from ..services import certificates as app_certificates
from ..services.auth import OutlookAuth, TokenSet, scopes_for
from ..services.clock import naive_utc
from ..services.endpoints import CaBundleError, Endpoints, EndpointsError, check_ca_file
from ..services.errors import GraphAuthError, GraphConfigError, GraphError, GraphPermanentError
from ..services.graph import GraphClient, quote_segment
from ..services.vault import Vault, VaultError, config_secrets_from
from .graph_error_text import graph_error_sentence

_logger = logging.getLogger(__name__)

# The server type (smtp_authentication, server_type) of every Graph server.
GRAPH = "microsoft_graph"
CONFIG_PREFIX = "microsoft_outlook_graph."
CONFIG_SECRET_OPTION = "microsoft_outlook_graph_vault_secret"  # noqa: S105 - an option name
REDIRECT_PATH = "/microsoft_outlook/confirm"
# Refresh a little before Microsoft would refuse the access token.
REFRESH_MARGIN = 300
# Days before the active certificate expires when the daily check warns, once each.
CERTIFICATE_WARNING_DAYS = (30, 14, 3)
# The server's fields that show its connection, and the connection's fields they show.
CONNECTION_FIELDS = {
    "microsoft_graph_tokens_sealed": "tokens_sealed",
    "microsoft_graph_token_expires_at": "token_expires_at",
    "microsoft_graph_account_oid": "account_oid",
    "microsoft_graph_account_tid": "account_tid",
    "microsoft_graph_account_name": "account_name",
    "microsoft_graph_account_address": "account_address",
    "microsoft_graph_scopes": "scopes",
    "microsoft_graph_needs_reconnect": "needs_reconnect",
    "microsoft_graph_last_error": "last_error",
    "microsoft_graph_full_access": "full_access",
}


class MicrosoftOutlookGraphMixin(models.AbstractModel):
    """An Outlook mailbox reached through Microsoft Graph: its connection and tokens.

    Tokens live only in the server's connection (``microsoft.outlook.graph.connection``),
    sealed by the vault;
    every HTTP call and every cryptographic step is made by ``services``.
    """

    _name = "microsoft.outlook.graph.mixin"
    _description = "Microsoft Graph Mailbox Connection"

    # Set by the server models: "outgoing" or "incoming".
    _microsoft_graph_direction = None

    microsoft_graph_mailbox_kind = fields.Selection(
        [("personal", "Personal mailbox"), ("shared", "Shared mailbox")],
        string="Mailbox Type",
        # Not NOT NULL: Odoo's own code (and module upgrades that load before this
        # addon) insert mail servers without knowing this column.
        default="personal",
        help="A shared mailbox is reached through the Microsoft account that connects it; "
        "that account needs Full Access (and Send As to send) in Exchange.",
    )
    # The connection lives in its own table, written only on cursors of its own
    # (microsoft.outlook.graph.connection); the server reads it through these fields. They
    # are computed without dependencies on purpose: whoever writes the connection clears
    # the caches (a trigger would look for servers by a field no query can filter on).
    microsoft_graph_connection_id = fields.Many2one(
        "microsoft.outlook.graph.connection",
        compute="_compute_microsoft_graph_connection",
        compute_sudo=True,
        groups="base.group_system",
    )
    microsoft_graph_tokens_sealed = fields.Char(
        "Sealed Microsoft Tokens",
        compute="_compute_microsoft_graph_connection",
        compute_sudo=True,
        groups="base.group_system",
    )
    microsoft_graph_token_expires_at = fields.Datetime(
        "Access Token Expiry", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_account_oid = fields.Char(
        "Microsoft Account Id", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_account_tid = fields.Char(
        "Microsoft Tenant Id", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_account_name = fields.Char(
        "Connected Account", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_account_address = fields.Char(
        "Connected Account Address",
        compute="_compute_microsoft_graph_connection",
        compute_sudo=True,
    )
    microsoft_graph_scopes = fields.Char(
        "Granted Permissions", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_needs_reconnect = fields.Boolean(
        compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_last_error = fields.Text(
        "Last Microsoft Error", compute="_compute_microsoft_graph_connection", compute_sudo=True
    )
    microsoft_graph_full_access = fields.Boolean(
        "Full Access",
        compute="_compute_microsoft_graph_connection",
        compute_sudo=True,
        help="Whether the connected account could open the shared mailbox when it connected "
        "(Exchange's Full Access right).",
    )
    microsoft_graph_status = fields.Selection(
        [
            ("not_connected", "Not connected"),
            ("valid", "Outlook Token Valid"),
            ("reconnect", "Reconnect needed"),
        ],
        string="Outlook Connection",
        compute="_compute_microsoft_graph_status",
    )
    microsoft_graph_vault_warning = fields.Boolean(compute="_compute_microsoft_graph_vault_warning")

    @api.depends("microsoft_graph_tokens_sealed", "microsoft_graph_needs_reconnect")
    def _compute_microsoft_graph_status(self):
        for record in self:
            sealed = record.sudo().microsoft_graph_tokens_sealed
            if not sealed:
                record.microsoft_graph_status = "not_connected"
            elif record.microsoft_graph_needs_reconnect or not record._microsoft_graph_can_open(
                sealed
            ):
                record.microsoft_graph_status = "reconnect"
            else:
                record.microsoft_graph_status = "valid"

    def _compute_microsoft_graph_connection(self):
        Connection = self.env["microsoft.outlook.graph.connection"].sudo()
        committed = Connection._committed_values(self._origin, list(CONNECTION_FIELDS.values()))
        for record in self:
            values = committed.get(record._origin.id, {})
            record.microsoft_graph_connection_id = Connection.browse(values.get("id"))
            for name, source in CONNECTION_FIELDS.items():
                record[name] = values.get(source, False)

    def _compute_microsoft_graph_vault_warning(self):
        self.microsoft_graph_vault_warning = not self._microsoft_graph_vault().has_config_secret

    # ------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------

    @api.model
    def _microsoft_graph_vault(self):
        uuid = self.env["ir.config_parameter"].sudo().get_param("database.uuid")
        secrets = config_secrets_from(tools.config.get(CONFIG_SECRET_OPTION), os.environ)
        return Vault(uuid, secrets)

    @api.model
    def _microsoft_graph_reseal_all(self):
        """Seal every stored Microsoft secret again with the current vault key.

        The key-rotation step (docs/security.md): with the new secret first and the old
        ones after it in the configuration, this leaves nothing that needs an old one.

        :return: (values resealed, values that no configured key opens)
        """
        vault = self._microsoft_graph_vault()
        resealed = unreadable = 0
        Connection = self.env["microsoft.outlook.graph.connection"].sudo()
        for connection in Connection.search([("tokens_sealed", "!=", False)]):
            server = self.env[connection.res_model].browse(connection.res_id)
            try:
                sealed = vault.reseal(connection.tokens_sealed, "token")
            except VaultError:
                unreadable += 1
                continue
            # Connections are written on cursors of their own only (docs/architecture.md).
            Connection._write_committed(server, {"tokens_sealed": sealed})
            resealed += 1
        subscriptions = (
            self.env["microsoft.outlook.graph.subscription"]
            .sudo()
            .search([("client_state_sealed", "!=", False)])
        )
        for subscription in subscriptions:
            try:
                subscription.client_state_sealed = vault.reseal(
                    subscription.client_state_sealed, "client_state"
                )
                resealed += 1
            except VaultError:
                unreadable += 1
        # Pending sign-ins live ten minutes: dropping them is simpler than resealing.
        self.env["microsoft.outlook.graph.flow"].sudo().search([]).unlink()
        Config = self.env["ir.config_parameter"].sudo()
        sealed_secret = self._microsoft_graph_param("client_secret_sealed")
        if sealed_secret:
            try:
                Config.set_param(
                    CONFIG_PREFIX + "client_secret_sealed",
                    vault.reseal(sealed_secret, "client_secret"),
                )
                resealed += 1
            except VaultError:
                unreadable += 1
        certificates = self._microsoft_graph_certificates()
        for entry in certificates:
            try:
                entry["key_sealed"] = vault.reseal(entry["key_sealed"], "certificate_key")
                resealed += 1
            except (KeyError, VaultError):
                unreadable += 1
        if certificates:
            self._microsoft_graph_save_certificates(certificates)
        _logger.info(
            "[Graph API] vault: %s values resealed, %s sealed with a key no longer configured",
            resealed,
            unreadable,
        )
        return resealed, unreadable

    @api.model
    def _microsoft_graph_param(self, key, default=None):
        return self.env["ir.config_parameter"].sudo().get_param(CONFIG_PREFIX + key, default)

    @api.model
    def _microsoft_graph_endpoints(self):
        try:
            endpoints = Endpoints.for_cloud(
                self._microsoft_graph_param("cloud", "global"),
                authority_base=self._microsoft_graph_param("authority_url"),
                graph_base=self._microsoft_graph_param("graph_url"),
                ca_file=self._microsoft_graph_param("ca_file"),
            )
            if endpoints.ca_file:
                check_ca_file(endpoints.ca_file)
            return endpoints
        except CaBundleError as exc:
            # Saved good, gone bad since (a file deleted or replaced): said, on the server too.
            message = self.env["res.config.settings"]._microsoft_graph_ca_message(exc)
            if len(self) == 1 and self.id and "microsoft_graph_last_error" in self._fields:
                self._microsoft_graph_record_error(GraphConfigError(user_message=message))
            raise UserError(message) from None
        except EndpointsError as exc:
            raise UserError(
                self.env._("The Microsoft Graph endpoints in Settings cannot be used: %s", exc)
            ) from None

    @api.model
    def _microsoft_graph_redirect_uri(self):
        return tools.urls.urljoin(self.get_base_url(), REDIRECT_PATH)

    @api.model
    def _microsoft_graph_client_secret(self):
        """The Azure client secret: sealed by this addon, else Odoo's plaintext one."""
        sealed = self._microsoft_graph_param("client_secret_sealed")
        if sealed:
            try:
                return self._microsoft_graph_vault().open(sealed, "client_secret")
            except VaultError:
                raise UserError(
                    self.env._(
                        "The Outlook client secret in Settings was sealed with another key "
                        "(the database was copied or the vault secret changed). "
                        "Enter it again in Settings."
                    )
                ) from None
        return self.env["ir.config_parameter"].sudo().get_param("microsoft_outlook_client_secret")

    @api.model
    def _microsoft_graph_auth(self, certificates=None, use_secret=None):
        """The app's OAuth client, proving itself with the certificates once one was
        proved ("Test the app credential"), else with the client secret.

        ``certificates`` / ``use_secret``: what "Test the app credential" proves instead.
        """
        Config = self.env["ir.config_parameter"].sudo()
        client_id = Config.get_param("microsoft_outlook_client_id")
        if certificates is None and not use_secret and self._microsoft_graph_uses_certificate():
            certificates = self._microsoft_graph_certificate_pairs()
        client_secret = None if certificates else self._microsoft_graph_client_secret()
        if not client_id or not (client_secret or certificates):
            raise UserError(
                self.env._(
                    "Enter the Client ID and the Client Secret (sealed) of your Azure app (or "
                    "use a certificate) in Settings > General Settings > Emails > Use an Outlook "
                    "Server before connecting a mailbox."
                )
            )
        endpoints = self._microsoft_graph_endpoints()
        return OutlookAuth(
            endpoints,
            tenant=self._microsoft_graph_param("tenant", "common"),
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=self._microsoft_graph_redirect_uri(),
            session=endpoints.session(),
            certificates=certificates or (),
        )

    # The app's certificates: ir.config_parameter CERTIFICATES_PARAM holds a JSON list,
    # newest first, of {"info": public part, "key_sealed": the private key sealed by the
    # vault (purpose "certificate_key"), "created": epoch, "proved": epoch or null}.
    # CREDENTIAL_PARAM says which credential signs the app in: "secret" or "certificate".

    @api.model
    def _microsoft_graph_certificates(self):
        raw = self._microsoft_graph_param("certificates")
        try:
            entries = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [e for e in entries if isinstance(e, dict) and e.get("info")]

    @api.model
    def _microsoft_graph_save_certificates(self, entries):
        entries = sorted(entries, key=lambda e: e.get("created") or 0, reverse=True)
        self.env["ir.config_parameter"].sudo().set_param(
            CONFIG_PREFIX + "certificates", json.dumps(entries) if entries else False
        )

    @api.model
    def _microsoft_graph_uses_certificate(self):
        return self._microsoft_graph_param("app_credential") == "certificate"

    @api.model
    def _microsoft_graph_certificate_pairs(self, entries=None, now=None):
        """(private key PEM, CertificateInfo) of the certificates to sign in with, newest
        first: every one valid now (an unproved newer one is tried first and Entra's 700027
        falls back to the older), or all of them when none is (Entra then says why)."""
        entries = self._microsoft_graph_certificates() if entries is None else entries
        vault = self._microsoft_graph_vault()
        pairs = []
        for entry in entries:
            info = app_certificates.CertificateInfo.from_dict(entry["info"])
            try:
                key = vault.open(entry["key_sealed"], "certificate_key")
            except VaultError:
                continue
            pairs.append((key, info))
        valid = [pair for pair in pairs if pair[1].is_valid_at(now)]
        if not pairs:
            raise UserError(
                self.env._(
                    "The Outlook certificate's private key cannot be opened (the database was "
                    "copied or the vault secret changed). Generate a new certificate in "
                    "Settings, or switch back to a client secret."
                )
            )
        return valid or pairs

    @api.model
    def _microsoft_graph_certificate_problems(self, now=None):
        """The daily check's warnings before the active certificate expires: 30, 14 and 3
        days before, each once (the key names the threshold crossed)."""
        if not self._microsoft_graph_uses_certificate():
            return {}
        proved = [e for e in self._microsoft_graph_certificates() if e.get("proved")]
        if not proved:
            return {}
        info = app_certificates.CertificateInfo.from_dict(proved[0]["info"])
        days = info.days_left(now)
        crossed = [limit for limit in CERTIFICATE_WARNING_DAYS if days <= limit]
        if not crossed:
            return {}
        expires = fields.Date.to_string(info.expires_on)
        return {
            f"certificate_expiry:{info.sha1}:{min(crossed)}": (
                self.env._("The Outlook certificate expires on %s", expires),
                self.env._(
                    "Odoo signs in to Microsoft with the certificate %(thumbprint)s, which "
                    "expires on %(date)s. In Settings > General Settings > Emails > Use an "
                    'Outlook Server, press "Prepare the next certificate", download it and '
                    'upload it in Azure (%(path)s), then press "Test the app credential". '
                    "After the date no Outlook (Microsoft Graph) mailbox works without it.",
                    thumbprint=info.sha1,
                    date=expires,
                    path=app_certificates.AZURE_UPLOAD_PATH,
                ),
                None,
            )
        }

    def _microsoft_graph_scopes_requested(self):
        self.ensure_one()
        return scopes_for(
            self._microsoft_graph_direction,
            shared=self.microsoft_graph_mailbox_kind == "shared",
            endpoints=self._microsoft_graph_endpoints(),
        )

    def _microsoft_graph_mailbox_address(self):
        self.ensure_one()
        return tools.email_normalize(self[self._email_field]) or False

    # ------------------------------------------------------------------
    # Buttons
    # ------------------------------------------------------------------

    def _microsoft_graph_check_can_manage(self):
        """Administrators manage every server; a user only their own personal server."""
        self.ensure_one()
        if self.env.is_admin():
            return
        owner = self.sudo()._fields.get("owner_user_id") and self.sudo().owner_user_id
        if not owner or owner != self.env.user or not self.env.user._is_internal():
            raise AccessError(self.env._("Only administrators can connect this mail server."))

    def action_microsoft_graph_connect(self):
        """Start the sign-in at Microsoft (Connect and Reconnect)."""
        self.ensure_one()
        self._microsoft_graph_check_can_manage()
        address = self._microsoft_graph_mailbox_address()
        if not address:
            raise UserError(self.env._("Enter the mailbox address before connecting it."))
        record = self.sudo()
        auth = record._microsoft_graph_auth()
        try:
            auth_uri, flow = auth.start_flow(
                record._microsoft_graph_scopes_requested(),
                login_hint=address if record.microsoft_graph_mailbox_kind == "personal" else None,
            )
        except GraphError as exc:
            raise UserError(graph_error_sentence(self.env, exc)) from None
        self.env["microsoft.outlook.graph.flow"].sudo()._start(record, flow)
        return {"type": "ir.actions.act_url", "url": auth_uri, "target": "self"}

    def _microsoft_graph_finish_connect(self, flow_sealed, auth_response):
        """Redeem the code, check who signed in, and only then store anything.

        A personal mailbox must belong to the account Microsoft vouches for (its
        ``oid`` from the id_token equals the ``/me`` id, and ``/me`` names the
        mailbox); a shared mailbox must be reachable by that account.
        """
        self.ensure_one()
        flow = json.loads(self._microsoft_graph_vault().open(flow_sealed, "flow"))
        token_set = self._microsoft_graph_auth().redeem(flow, auth_response)
        endpoints = self._microsoft_graph_endpoints()
        client = GraphClient(
            endpoints, endpoints.session(), lambda force_refresh=False: token_set.access_token
        )
        me = client.me()
        address = self._microsoft_graph_mailbox_address()
        signed_in = {
            tools.email_normalize(value)
            for value in (me.get("mail"), me.get("userPrincipalName"))
            if value
        }
        if me.get("id") != token_set.oid:
            raise UserError(
                self.env._("Microsoft's answers about the signed-in account disagree. Try again.")
            )
        if self.microsoft_graph_mailbox_kind == "personal" and address not in signed_in:
            raise UserError(
                self.env._(
                    "You signed in to Microsoft as %(account)s, but this server is for the "
                    "mailbox %(mailbox)s. Sign in with that mailbox's own account, or set the "
                    "mailbox type to Shared if %(account)s has access to it.",
                    account=", ".join(sorted(signed_in)) or token_set.username,
                    mailbox=address,
                )
            )
        full_access = False
        if self.microsoft_graph_mailbox_kind == "shared":
            full_access = self._microsoft_graph_can_open_mailbox(client, address)
            if not full_access and self._microsoft_graph_direction != "outgoing":
                raise UserError(
                    self.env._(
                        "The account %(account)s cannot open the shared mailbox %(mailbox)s. "
                        "Grant it Full Access (and Send As, to send) in the Exchange admin "
                        "center, then connect again.",
                        account=token_set.username,
                        mailbox=address,
                    )
                )
        self.active = True
        self._microsoft_graph_store_tokens(
            token_set,
            account={
                "account_oid": token_set.oid,
                "account_tid": token_set.tid,
                "account_name": me.get("displayName") or token_set.name,
                "account_address": me.get("mail") or token_set.username,
                "full_access": full_access,
            },
        )
        _logger.info(
            "[Graph API] %s #%s connected to the Outlook mailbox %s (%s)",
            self._name,
            self.id,
            address,
            self.microsoft_graph_mailbox_kind,
        )

    def action_microsoft_graph_switch_from_outlook(self):
        """Turn an Odoo Outlook (IMAP/SMTP OAuth) server into a Graph one, in place.

        Address, filters and options stay; Odoo's plaintext Outlook tokens are wiped;
        the admin is sent to Microsoft to grant the Graph permissions.
        """
        self.ensure_one()
        self._microsoft_graph_check_can_manage()
        self.sudo().write(
            {
                **self._microsoft_graph_switch_values(),
                "microsoft_graph_mailbox_kind": "personal",
                "microsoft_outlook_refresh_token": False,
                "microsoft_outlook_access_token": False,
                "microsoft_outlook_access_token_expiration": False,
            }
        )
        _logger.info(
            "[Graph API] %s #%s switched from Outlook IMAP/SMTP to Microsoft Graph",
            self._name,
            self.id,
        )
        return self.action_microsoft_graph_connect()

    def _microsoft_graph_switch_values(self):
        """The values that make this server use Graph; set by each server model."""
        raise NotImplementedError

    def action_microsoft_graph_disconnect(self):
        self.ensure_one()
        self._microsoft_graph_check_can_manage()
        self.sudo()._microsoft_graph_wipe()
        return True

    def _microsoft_graph_wipe(self):
        Connection = self.env["microsoft.outlook.graph.connection"]
        for record in self.filtered("microsoft_graph_connection_id"):
            Connection._write_committed(
                record,
                {
                    "tokens_sealed": False,
                    "token_expires_at": False,
                    "account_oid": False,
                    "account_tid": False,
                    "account_name": False,
                    "account_address": False,
                    "scopes": False,
                    "needs_reconnect": False,
                    "last_error": False,
                },
            )

    def unlink(self):
        connections = self.env["microsoft.outlook.graph.connection"]._of(self)
        result = super().unlink()
        self.env["microsoft.outlook.graph.connection"].concat(*connections.values()).unlink()
        return result

    def _microsoft_graph_test_action(self, checks, **params):
        """The notification that a connection test passed, with what it checked."""
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Connection Test Successful"),
                "message": "\n".join(checks),
                "type": "success",
                **params,
            },
        }

    def _microsoft_graph_test(self):
        """Call Graph as the server will, and say in plain words what works.

        :return: a list of sentences describing what was checked
        """
        self.ensure_one()
        if not self.microsoft_graph_tokens_sealed:
            # Never connected: nothing to ask Microsoft, nothing to "reconnect".
            raise UserError(self._microsoft_graph_not_connected_message())
        address = self._microsoft_graph_mailbox_address()
        client = self._microsoft_graph_client()
        try:
            me = client.me()
            checks = [
                self.env._(
                    "Signed in to Microsoft as %(name)s (%(address)s).",
                    name=me.get("displayName"),
                    address=me.get("mail") or me.get("userPrincipalName"),
                )
            ]
            if self.microsoft_graph_mailbox_kind == "shared":
                account = me.get("mail") or me.get("userPrincipalName") or me.get("displayName")
                checks += self._microsoft_graph_test_shared(client, address, account)
        except GraphError as exc:
            self._microsoft_graph_record_error(exc)
            raise UserError(
                self.env._(
                    "Microsoft Graph refused the connection test: %s",
                    graph_error_sentence(self.env, exc),
                )
            ) from None
        return checks

    def _microsoft_graph_can_open_mailbox(self, client, address):
        """Whether the signed-in account has Full Access on the mailbox at address: Graph
        lists no rights, but reading its Inbox needs exactly that."""
        answer = client.request(
            "GET",
            f"/users/{quote_segment(address)}/mailFolders/inbox",
            params={"$select": "id"},
            # Microsoft answers a delegate without Full Access 403 (or 404): an answer here.
            expected=(200, 403, 404),
        )
        return answer.status_code == 200

    def _microsoft_graph_test_shared(self, client, address, account=None):
        """What the connection test says of a shared mailbox: what it checked (Full Access,
        and the route mail takes because of it), and what it cannot check (Send As), as
        facts rather than warnings: a right that is there reads no differently from one
        that may be missing, and the step that would reveal a missing one is named."""
        full_access = self._microsoft_graph_can_open_mailbox(client, address)
        if full_access != self.microsoft_graph_full_access:
            self.env["microsoft.outlook.graph.connection"]._write_committed(
                self, {"full_access": full_access}
            )
        if self._microsoft_graph_direction != "outgoing":
            if not full_access:
                raise GraphPermanentError(
                    self.env._(
                        "The connected account cannot open the shared mailbox %s: grant it "
                        "Full Access in the Exchange admin center.",
                        address,
                    )
                )
            return [self.env._("The connected account can open the mailbox %s.", address)]
        account = account or self.microsoft_graph_account_address or self.env._("The account")
        if full_access:
            route = self.env._(
                "Checked: %(account)s has Full Access on %(mailbox)s, so mail is sent from "
                "that mailbox and its Sent Items keep the copies.",
                account=account,
                mailbox=address,
            )
        else:
            route = self.env._(
                "Checked: %(account)s has no Full Access on %(mailbox)s, which sending does "
                "not need: mail leaves from the mailbox of %(account)s with %(mailbox)s as "
                "sender, and the copies go to its Sent Items.",
                account=account,
                mailbox=address,
            )
        return [
            route,
            self.env._(
                "Not checked: the Send As (or Send on Behalf) right of %(account)s on "
                "%(mailbox)s, which Microsoft Graph shows only when a mail is sent. Without "
                "it the first mail fails, and its failure reason names the right to grant.",
                account=account,
                mailbox=address,
            ),
        ]

    # ------------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------------

    def _microsoft_graph_can_open(self, sealed):
        try:
            self._microsoft_graph_vault().open(sealed, "token")
        except VaultError:
            return False
        return True

    def _microsoft_graph_store_tokens(self, token_set, account=None, connection=None):
        """Seal a fresh token set (after connect or refresh) and commit it at once.

        connection: the server's connection already locked on a cursor of its own (a
        refresh); else one is locked for this write.
        """
        self.ensure_one()
        values = {
            "tokens_sealed": self._microsoft_graph_vault().seal(
                json.dumps(token_set.to_dict()), "token"
            ),
            "token_expires_at": naive_utc(
                datetime.datetime.fromtimestamp(token_set.expires_at, datetime.UTC)
            ),
            "scopes": " ".join(sorted(token_set.scopes)),
            "needs_reconnect": False,
            "last_error": False,
            **(account or {}),
        }
        if connection is None:
            self.env["microsoft.outlook.graph.connection"]._write_committed(self, values)
        else:
            connection.write(values)

    def _microsoft_graph_access_token(self, force_refresh=False):
        """Return a valid access token, refreshing it when it is about to expire."""
        return self._microsoft_graph_tokens(force_refresh).access_token

    def _microsoft_graph_tokens(self, force_refresh=False):
        """The TokenSet to use now, refreshed under the connection's lock when needed.

        The refresh runs on a cursor of its own and commits at once: Microsoft rotates the
        refresh token, and a rollback of the caller's transaction must not lose the new
        one. It writes only the connection's row, which the caller never writes, so the
        caller's later writes of the server row meet no concurrent update.
        """
        self.ensure_one()
        record = self.sudo()
        tokens = record._microsoft_graph_open_tokens()
        if not force_refresh and not tokens.expires_within(REFRESH_MARGIN):
            return tokens
        with self.env["microsoft.outlook.graph.connection"]._locked(record) as connection:
            fresh = record._microsoft_graph_open_tokens(connection)
            if fresh.access_token != tokens.access_token or (
                not force_refresh and not fresh.expires_within(REFRESH_MARGIN)
            ):
                # Another worker refreshed while this one waited for the lock.
                return fresh
            try:
                token_set = record._microsoft_graph_auth().refresh(
                    fresh.refresh_token, record._microsoft_graph_scopes_requested()
                )
            except GraphAuthError as exc:
                # Committed with the block: the flag must outlive the caller's rollback.
                record._microsoft_graph_mark_reconnect(exc, connection)
                refused = exc
            else:
                record._microsoft_graph_store_tokens(token_set, connection=connection)
                return token_set
        raise refused

    def _microsoft_graph_token_provider(self):
        """A token provider for one client: the token it got last, while it is valid.

        Under REPEATABLE READ the caller keeps reading the tokens it saw at its start; the
        provider keeps what a refresh returned instead of asking the connection again
        for every request.
        """
        record = self.sudo()
        last = []

        def access_token(force_refresh=False):
            if force_refresh or not last or last[0].expires_within(REFRESH_MARGIN):
                last[:] = [record._microsoft_graph_tokens(force_refresh)]
            return last[0].access_token

        return access_token

    def _microsoft_graph_not_connected_message(self):
        return self.env._(
            'The Outlook account of %s is not connected yet: connect it with "Connect your '
            'Outlook account" on the server form, then test again.',
            self.display_name,
        )

    def _microsoft_graph_open_tokens(self, connection=None):
        """The stored TokenSet, from connection when given, else from what this record reads."""
        if connection is not None:
            sealed, needs_reconnect = connection.tokens_sealed, connection.needs_reconnect
        else:
            sealed = self.microsoft_graph_tokens_sealed
            needs_reconnect = self.microsoft_graph_needs_reconnect
        if not sealed:
            raise GraphAuthError(user_message=self._microsoft_graph_not_connected_message())
        if needs_reconnect:
            raise GraphAuthError(
                user_message=self.env._(
                    'Microsoft no longer accepts the connection of %s: press "Reconnect" on '
                    "the server form and sign in again.",
                    self.display_name,
                )
            )
        try:
            return TokenSet.from_dict(
                json.loads(self._microsoft_graph_vault().open(sealed, "token"))
            )
        except VaultError:
            raise GraphAuthError(
                user_message=self.env._(
                    "The Outlook tokens of %s were sealed with another key (a copied database "
                    "or a changed vault secret): reconnect it.",
                    self.display_name,
                )
            ) from None

    def _microsoft_graph_mark_reconnect(self, error, connection=None):
        """Flag the server once and tell its administrators once, not every run.

        Committed at once, on the locked connection when given: the flag must outlive a
        rollback of the caller, or every later run would ask Microsoft again.
        """
        self.ensure_one()
        if connection is None:
            with self.env["microsoft.outlook.graph.connection"]._locked(self) as locked:
                return self._microsoft_graph_mark_reconnect(error, locked)
        already = connection.needs_reconnect
        connection.write(
            {"needs_reconnect": True, "last_error": graph_error_sentence(self.env, error)}
        )
        if already:
            return None
        _logger.warning(
            "[Graph API] %s #%s (%s) needs to be reconnected: %s",
            self._name,
            self.id,
            self._microsoft_graph_mailbox_address(),
            error.code,
        )
        # The notice is committed with the flag: told once, whatever the caller does next.
        connection.env["microsoft.outlook.graph.mailbox"]._notify_admins(
            self.env._("Outlook mailbox %s must be reconnected", self.display_name),
            graph_error_sentence(self.env, error),
            self.with_env(connection.env),
            owner_first=True,
        )
        return None

    def _microsoft_graph_record_error(self, error):
        """Note Microsoft's refusal on the connection, committed apart from the caller."""
        if isinstance(error, GraphAuthError):
            self.sudo()._microsoft_graph_mark_reconnect(error)
        elif isinstance(error, (GraphConfigError, GraphError)):
            self.env["microsoft.outlook.graph.connection"]._write_committed(
                self, {"last_error": graph_error_sentence(self.env, error)}
            )

    def _microsoft_graph_client(self):
        self.ensure_one()
        endpoints = self._microsoft_graph_endpoints()
        address = self._microsoft_graph_mailbox_address()
        return GraphClient(
            endpoints,
            endpoints.session(),
            self._microsoft_graph_token_provider(),
            mailbox=address if self.microsoft_graph_mailbox_kind == "shared" else None,
        )

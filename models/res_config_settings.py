import logging
import time

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..services import certificates as app_certificates
from ..services.endpoints import (
    CUSTOM_CLOUD,
    CaBundleError,
    Endpoints,
    EndpointsError,
    HostPathError,
    check_authority_host,
    check_ca_file,
    check_graph_host,
    check_tenant,
)
from ..services.errors import GraphError
from .graph_error_text import graph_error_sentence, graph_error_text

_logger = logging.getLogger(__name__)
CERTIFICATE_PATH = "/microsoft_outlook_graph/certificate"

CLOUD_SELECTION = [
    ("global", "Global"),
    ("usgov_l4", "US Government L4"),
    ("usgov_l5", "US Government L5 (DoD)"),
    ("china", "China (21Vianet)"),
    (CUSTOM_CLOUD, "Custom endpoints"),
]


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    microsoft_graph_tenant = fields.Char(
        "Microsoft Tenant",
        config_parameter="microsoft_outlook_graph.tenant",
        default="common",
        help="common, organizations, consumers, your tenant id or your verified domain.",
    )
    microsoft_graph_cloud = fields.Selection(
        CLOUD_SELECTION,
        string="Microsoft Cloud",
        config_parameter="microsoft_outlook_graph.cloud",
        default="global",
    )
    microsoft_graph_authority_url = fields.Char(
        "Authority URL",
        config_parameter="microsoft_outlook_graph.authority_url",
        help="Custom endpoints only: the Entra ID host, e.g. https://login.example.com",
    )
    microsoft_graph_graph_url = fields.Char(
        "Graph URL",
        config_parameter="microsoft_outlook_graph.graph_url",
        help="Custom endpoints only: the Microsoft Graph host, e.g. https://graph.example.com",
    )
    microsoft_graph_ca_file = fields.Char(
        "CA Bundle File",
        config_parameter="microsoft_outlook_graph.ca_file",
        help="Custom endpoints only: a PEM file of the certificate authorities to trust "
        "(a corporate TLS proxy). Empty: the system's trust store.",
    )
    microsoft_graph_secret_expiry = fields.Date(
        "Client Secret Expires On",
        help="From the Azure app's Certificates & secrets page: Odoo warns before it expires.",
    )
    # Never stored, not even in this transient table: sealed the moment it is given.
    microsoft_graph_client_secret = fields.Char(
        "New Client Secret",
        compute="_compute_microsoft_graph_client_secret",
        inverse="_inverse_microsoft_graph_client_secret",
        help="Stored sealed by the vault; it is never shown again.",
    )
    microsoft_graph_client_secret_set = fields.Boolean(
        compute="_compute_microsoft_graph_client_secret_set"
    )
    microsoft_graph_redirect_uri = fields.Char(
        "Redirect URI", compute="_compute_microsoft_graph_redirect_uri"
    )
    microsoft_graph_vault_warning = fields.Boolean(
        compute="_compute_microsoft_graph_client_secret_set"
    )
    # The certificate credential (issue 16): only public facts are ever shown.
    microsoft_graph_certificate_months = fields.Integer(
        "Certificate Lifetime (months)",
        config_parameter="microsoft_outlook_graph.certificate_months",
        default=24,
        help="How long a new certificate is valid. Odoo warns 30, 14 and 3 days before the "
        "active one expires.",
    )
    microsoft_graph_app_credential = fields.Selection(
        [("secret", "Client secret"), ("certificate", "Certificate")],
        string="Odoo Signs In With",
        compute="_compute_microsoft_graph_certificate",
    )
    microsoft_graph_certificate_thumbprint = fields.Char(
        "Certificate Thumbprint", compute="_compute_microsoft_graph_certificate"
    )
    microsoft_graph_certificate_expiry = fields.Date(
        "Certificate Expires On", compute="_compute_microsoft_graph_certificate"
    )
    microsoft_graph_certificate_proved = fields.Boolean(
        compute="_compute_microsoft_graph_certificate"
    )
    microsoft_graph_certificate_pending = fields.Char(
        "Next Certificate",
        compute="_compute_microsoft_graph_certificate",
        help="A newer certificate not yet proved registered in Azure.",
    )

    def _compute_microsoft_graph_client_secret_set(self):
        mixin = self.env["microsoft.outlook.graph.mixin"]
        sealed = mixin._microsoft_graph_param("client_secret_sealed")
        for settings in self:
            settings.microsoft_graph_client_secret_set = bool(sealed)
            settings.microsoft_graph_vault_warning = (
                not mixin._microsoft_graph_vault().has_config_secret
            )

    def _compute_microsoft_graph_client_secret(self):
        self.microsoft_graph_client_secret = False

    def _inverse_microsoft_graph_client_secret(self):
        for settings in self.filtered("microsoft_graph_client_secret"):
            mixin = self.env["microsoft.outlook.graph.mixin"]
            self.env["ir.config_parameter"].sudo().set_param(
                "microsoft_outlook_graph.client_secret_sealed",
                mixin._microsoft_graph_vault().seal(
                    settings.microsoft_graph_client_secret.strip(), "client_secret"
                ),
            )

    def _compute_microsoft_graph_redirect_uri(self):
        self.microsoft_graph_redirect_uri = self.env[
            "microsoft.outlook.graph.mixin"
        ]._microsoft_graph_redirect_uri()

    @api.model
    def get_values(self):
        values = super().get_values()
        expiry = (
            self.env["ir.config_parameter"]
            .sudo()
            .get_param("microsoft_outlook_graph.secret_expiry")
        )
        values["microsoft_graph_secret_expiry"] = expiry or False
        return values

    def set_values(self):
        # Checked before anything is written: a refused value changes nothing.
        self._microsoft_graph_check_values()
        res = super().set_values()
        Config = self.env["ir.config_parameter"].sudo()
        Config.set_param(
            "microsoft_outlook_graph.secret_expiry",
            fields.Date.to_string(self.microsoft_graph_secret_expiry) or "",
        )
        return res

    @api.model
    def _microsoft_graph_ca_message(self, error):
        """The admin's words for a CA bundle file that cannot be used (CaBundleError)."""
        where = self.env._(
            "Settings > General Settings > Emails > Outlook (Microsoft Graph) > CA Bundle File"
        )
        reasons = {
            "missing": self.env._("does not exist on the Odoo server"),
            "unreadable": self.env._("cannot be read by Odoo (a folder, or no permission)"),
            "not_pem": self.env._("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            "invalid": self.env._("holds PEM text that is not a valid certificate"),
        }
        return self.env._(
            "The CA Bundle File %(path)s %(reason)s. Put the PEM file of the certificate "
            "authorities to trust at that path on the Odoo server, or correct or empty the "
            "field (%(where)s); empty means the system's trust store.",
            path=error.path,
            reason=reasons.get(error.reason, error.reason),
            where=where,
        )

    def _microsoft_graph_check_values(self):
        for settings in self:
            tenant = (settings.microsoft_graph_tenant or "").strip()
            if tenant:
                try:
                    settings.microsoft_graph_tenant = check_tenant(tenant)
                except EndpointsError:
                    raise ValidationError(
                        self.env._(
                            'Microsoft Tenant "%s" is not valid: enter common, organizations, '
                            "consumers, your Directory (tenant) ID (a GUID, on the Azure app's "
                            "Overview page) or one of your verified domains (contoso.com).",
                            tenant,
                        )
                    ) from None
            custom = settings.microsoft_graph_cloud == CUSTOM_CLOUD
            for field, check in (
                ("microsoft_graph_authority_url", check_authority_host),
                ("microsoft_graph_graph_url", check_graph_host),
            ):
                url = (settings[field] or "").strip()
                if not url and not custom:
                    continue
                label = settings._fields[field].get_description(self.env)["string"]
                try:
                    check(url)
                except HostPathError as exc:
                    raise ValidationError(
                        self.env._(
                            '%(field)s "%(url)s" ends in %(part)s, which Odoo adds itself: '
                            "enter the host only, %(host)s.",
                            field=label,
                            url=url,
                            part=exc.part,
                            host=exc.base,
                        )
                    ) from None
                except EndpointsError:
                    raise ValidationError(
                        self.env._(
                            '%(field)s "%(url)s" is not valid: enter the https:// address of '
                            "a host, e.g. https://login.example.com, without a query or "
                            "credentials.",
                            field=label,
                            url=url,
                        )
                    ) from None
            ca_file = (settings.microsoft_graph_ca_file or "").strip()
            if ca_file:
                try:
                    check_ca_file(ca_file)
                except CaBundleError as exc:
                    raise ValidationError(self._microsoft_graph_ca_message(exc)) from None
            if custom:
                try:
                    Endpoints.for_cloud(
                        CUSTOM_CLOUD,
                        settings.microsoft_graph_authority_url,
                        settings.microsoft_graph_graph_url,
                    )
                except EndpointsError as exc:
                    raise UserError(
                        self.env._("Microsoft Graph custom endpoints: %s", exc)
                    ) from None

    def action_microsoft_graph_open_health(self):
        """The health list of every Graph mailbox, from Settings (no developer mode)."""
        return self.env["ir.actions.act_window"]._for_xml_id(
            "microsoft_outlook_graph.microsoft_outlook_graph_mailbox_action"
        )

    def action_microsoft_graph_open_setup(self):
        """The guided setup (docs/azure-setup.md one screen at a time), from Settings."""
        self._microsoft_graph_check_admin()
        return self.env["microsoft.outlook.graph.setup"].action_open()

    # ------------------------------------------------------------------
    # The app's certificate (issue 16)
    # ------------------------------------------------------------------

    def _compute_microsoft_graph_certificate(self):
        mixin = self.env["microsoft.outlook.graph.mixin"]
        entries = mixin._microsoft_graph_certificates()
        proved = next((e for e in entries if e.get("proved")), None)
        pending = next((e for e in entries if not e.get("proved")), None)
        shown = proved or pending
        info = app_certificates.CertificateInfo.from_dict(shown["info"]) if shown else None
        for settings in self:
            settings.microsoft_graph_app_credential = (
                "certificate" if mixin._microsoft_graph_uses_certificate() else "secret"
            )
            settings.microsoft_graph_certificate_thumbprint = info.sha1 if info else False
            settings.microsoft_graph_certificate_expiry = info.expires_on if info else False
            settings.microsoft_graph_certificate_proved = bool(proved)
            settings.microsoft_graph_certificate_pending = (
                pending["info"]["sha1"] if pending and proved else False
            )

    def _microsoft_graph_check_admin(self):
        if not self.env.is_admin():
            raise UserError(self.env._("Only administrators manage the Azure app's credentials."))

    def _microsoft_graph_new_certificate(self):
        """Generate a key pair and certificate; seal the key at once; keep the public part."""
        mixin = self.env["microsoft.outlook.graph.mixin"]
        months = int(
            self.env["ir.config_parameter"]
            .sudo()
            .get_param("microsoft_outlook_graph.certificate_months", 24)
            or 24
        )
        database = self.env.cr.dbname
        try:
            pair = app_certificates.generate(
                f"Odoo Outlook (Microsoft Graph) {database}", lifetime_days=round(months * 30.44)
            )
        except app_certificates.CertificateError as exc:
            raise UserError(graph_error_sentence(self.env, exc)) from None
        entry = {
            "info": pair.info.to_dict(),
            "key_sealed": mixin._microsoft_graph_vault().seal(
                pair.private_key_pem, "certificate_key"
            ),
            "created": time.time(),
            "proved": None,
        }
        mixin._microsoft_graph_save_certificates([entry, *mixin._microsoft_graph_certificates()])
        _logger.info(
            "[Graph API] new app certificate %s generated, valid until %s",
            entry["info"]["sha1"],
            app_certificates.CertificateInfo.from_dict(entry["info"]).expires_on,
        )
        return entry

    def _microsoft_graph_download_action(self, entry):
        return {
            "type": "ir.actions.act_url",
            "url": f"{CERTIFICATE_PATH}/{entry['info']['sha1']}.cer",
            "target": "download",
        }

    def action_microsoft_graph_generate_certificate(self):
        """ "Use a certificate instead": a key pair Odoo keeps, and its certificate to upload."""
        self._microsoft_graph_check_admin()
        mixin = self.env["microsoft.outlook.graph.mixin"]
        if not mixin._microsoft_graph_certificates():
            self._microsoft_graph_new_certificate()
        # The page then shows the thumbprint, the Download button and the Azure steps.
        return {"type": "ir.actions.client", "tag": "soft_reload"}

    def action_microsoft_graph_prepare_next_certificate(self):
        """A second certificate while the first still works; the first is kept until Azure
        accepts the new one."""
        self._microsoft_graph_check_admin()
        mixin = self.env["microsoft.outlook.graph.mixin"]
        pending = [e for e in mixin._microsoft_graph_certificates() if not e.get("proved")]
        entry = pending[0] if pending else self._microsoft_graph_new_certificate()
        return self._microsoft_graph_download_action(entry)

    def action_microsoft_graph_download_certificate(self):
        self._microsoft_graph_check_admin()
        entry = next(
            iter(self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_certificates()), None
        )
        if entry is None:
            raise UserError(
                self.env._('There is no certificate yet: press "Use a certificate instead".')
            )
        return self._microsoft_graph_download_action(entry)

    def action_microsoft_graph_test_credential(self):
        """Prove the app credential at Microsoft and report in words.

        Each certificate is proved on its own, newest first; the newest accepted one signs
        in from then on, older ones are forgotten (and may be deleted in Azure).
        """
        self._microsoft_graph_check_admin()
        mixin = self.env["microsoft.outlook.graph.mixin"].sudo()
        entries = mixin._microsoft_graph_certificates()
        if not entries:
            return self._microsoft_graph_test_secret(mixin)
        now = time.time()
        accepted, refusals = None, []
        for entry in entries:
            pair = mixin._microsoft_graph_certificate_pairs([entry], now=now)
            try:
                mixin._microsoft_graph_auth(certificates=pair).prove_credential()
            except GraphError as exc:
                refusals.append((entry, exc))
                continue
            accepted = entry
            break
        if accepted is None:
            entry, exc = refusals[0]
            message = self.env._(
                "The certificate %(thumbprint)s is refused by Microsoft: %(reason)s",
                thumbprint=entry["info"]["sha1"],
                reason=graph_error_text(self.env, exc),
            )
            return self._microsoft_graph_notify(message, "danger", sticky=True)
        accepted["proved"] = accepted.get("proved") or now
        older = [e for e in entries if e is not accepted and e["created"] < accepted["created"]]
        kept = [e for e in entries if e not in older]
        mixin._microsoft_graph_save_certificates(kept)
        Config = self.env["ir.config_parameter"].sudo()
        Config.set_param("microsoft_outlook_graph.app_credential", "certificate")
        message = self.env._(
            "The certificate %(thumbprint)s is registered in Azure: Odoo signs in with it from "
            "now on, for every mailbox.",
            thumbprint=accepted["info"]["sha1"],
        )
        if older:
            message += " " + self.env._(
                "The previous certificate(s) %(thumbprints)s are no longer used: delete them "
                "in Azure (Certificates & secrets > Certificates).",
                thumbprints=", ".join(e["info"]["sha1"] for e in older),
            )
        newer = [entry for entry, _exc in refusals if entry["created"] > accepted["created"]]
        if newer:
            message += " " + self.env._(
                "The next certificate %(thumbprint)s is not registered in Azure yet "
                "(%(reason)s): upload it, then test again.",
                thumbprint=newer[0]["info"]["sha1"],
                reason=graph_error_sentence(self.env, refusals[0][1]),
            )
        if mixin._microsoft_graph_param("client_secret_sealed"):
            message += " " + self.env._(
                "The client secret is no longer needed: remove it here and in Azure."
            )
        _logger.info(
            "[Graph API] app certificate %s accepted by Microsoft", accepted["info"]["sha1"]
        )
        return self._microsoft_graph_notify(message, "success")

    def action_microsoft_graph_save_and_test(self):
        """ "Save and test": store what was typed (checked), then prove the app at
        Microsoft at once, so that a wrong client id or secret is said before anyone
        signs in."""
        self._microsoft_graph_check_admin()
        self.execute()
        return self.action_microsoft_graph_test_credential()

    def _microsoft_graph_test_secret(self, mixin):
        try:
            mixin._microsoft_graph_auth(use_secret=True).prove_credential()
        except GraphError as exc:
            return self._microsoft_graph_notify(
                self.env._(
                    "Microsoft refused the client id or the client secret: %(reason)s Check, "
                    "in the Azure portal, App registrations > your app > Overview > "
                    "Application (client) ID against ID here, and Certificates & secrets > "
                    "Client secrets: paste the Value (not the Secret ID) of a secret that has "
                    "not expired in Client Secret (sealed).",
                    reason=graph_error_text(self.env, exc),
                ),
                "danger",
                True,
            )
        return self._microsoft_graph_notify(
            self.env._("The client secret is accepted by Microsoft."), "success"
        )

    def _microsoft_graph_notify(self, message, kind, sticky=False):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Azure app credential"),
                "message": message,
                "type": kind,
                "sticky": sticky,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_microsoft_graph_use_secret(self):
        """ "Switch back to a secret": the certificates stay, unused, until removed."""
        self._microsoft_graph_check_admin()
        mixin = self.env["microsoft.outlook.graph.mixin"].sudo()
        if not mixin._microsoft_graph_client_secret():
            raise UserError(self.env._("Enter the Client Secret (sealed) first, then switch back."))
        self.env["ir.config_parameter"].sudo().set_param(
            "microsoft_outlook_graph.app_credential", "secret"
        )
        return {"type": "ir.actions.client", "tag": "reload"}

    def action_microsoft_graph_remove_secret(self):
        """Forget the sealed client secret once the certificate signs in."""
        self._microsoft_graph_check_admin()
        if not self.env["microsoft.outlook.graph.mixin"]._microsoft_graph_uses_certificate():
            raise UserError(
                self.env._("Test the certificate first: Odoo still signs in with the secret.")
            )
        self.env["ir.config_parameter"].sudo().search(
            [("key", "=", "microsoft_outlook_graph.client_secret_sealed")]
        ).unlink()
        return {"type": "ir.actions.client", "tag": "reload"}

    def action_microsoft_graph_remove_certificates(self):
        """Forget every certificate and its key (after switching back to a secret)."""
        self._microsoft_graph_check_admin()
        mixin = self.env["microsoft.outlook.graph.mixin"]
        if mixin._microsoft_graph_uses_certificate():
            raise UserError(self.env._("Switch back to a secret before removing the certificates."))
        mixin._microsoft_graph_save_certificates([])
        return {"type": "ir.actions.client", "tag": "reload"}

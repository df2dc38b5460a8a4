from odoo import api, fields, models
from odoo.exceptions import UserError

from ..services.endpoints import CUSTOM_CLOUD, Endpoints, EndpointsError

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
        res = super().set_values()
        Config = self.env["ir.config_parameter"].sudo()
        Config.set_param(
            "microsoft_outlook_graph.secret_expiry",
            fields.Date.to_string(self.microsoft_graph_secret_expiry) or "",
        )
        if self.microsoft_graph_cloud == CUSTOM_CLOUD:
            try:
                Endpoints.for_cloud(
                    CUSTOM_CLOUD, self.microsoft_graph_authority_url, self.microsoft_graph_graph_url
                )
            except EndpointsError as exc:
                raise UserError(self.env._("Microsoft Graph custom endpoints: %s", exc)) from None
        return res

"""Download of the Azure app's certificate: the public part only, for administrators."""

from odoo import http
from odoo.http import request

from ..services.certificates import CertificateError, CertificateInfo


class MicrosoftGraphCertificateController(http.Controller):
    @http.route(
        "/microsoft_outlook_graph/certificate/<string:thumbprint>.<string:extension>",
        type="http",
        auth="user",
        methods=["GET"],
    )
    def download_certificate(self, thumbprint, extension):
        """The certificate as `.cer` (DER) or `.pem`: what Azure's Upload takes. The private
        key never leaves the vault."""
        if not request.env.user.has_group("base.group_system") or extension not in ("cer", "pem"):
            return request.not_found()
        mixin = request.env["microsoft.outlook.graph.mixin"].sudo()
        entry = next(
            (
                e
                for e in mixin._microsoft_graph_certificates()
                if e["info"].get("sha1", "").upper() == thumbprint.upper()
            ),
            None,
        )
        if entry is None:
            return request.not_found()
        try:
            info = CertificateInfo.from_dict(entry["info"])
            body = info.der() if extension == "cer" else info.certificate_pem.encode("ascii")
        except (CertificateError, ValueError):
            return request.not_found()
        kind = "application/pkix-cert" if extension == "cer" else "application/x-pem-file"
        name = f"odoo-outlook-graph-{info.sha1[:8].lower()}.{extension}"
        return request.make_response(
            body,
            headers=[
                ("Content-Type", kind),
                ("Content-Disposition", f'attachment; filename="{name}"'),
                ("Cache-Control", "no-store"),
            ],
        )

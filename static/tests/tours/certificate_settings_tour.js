/**
 * An administrator replaces the Azure app's client secret with a certificate Odoo makes:
 * "Use a certificate instead", download it (the test uploads it to the sandbox's Azure
 * as the admin would), "Test the app credential", and Odoo signs in with it.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_certificate_settings", {
    url: "/odoo/settings",
    steps: () => [
        {
            content: "Odoo still signs in with the client secret: use a certificate instead",
            trigger: "button[name='action_microsoft_graph_generate_certificate']",
            run: "click",
        },
        {
            content: "The certificate's thumbprint and Azure's upload steps are shown",
            trigger:
                "#microsoft_graph_certificate:contains('Certificates & secrets > Certificates > Upload certificate') [name='microsoft_graph_certificate_thumbprint'] span:not(:empty)",
        },
        {
            content: "The certificate can be downloaded with one click",
            trigger: "button[name='action_microsoft_graph_download_certificate']",
        },
        {
            content: "Prove it at Microsoft",
            trigger: "button[name='action_microsoft_graph_test_credential']",
            run: "click",
        },
        {
            content: "Microsoft accepts it",
            trigger: ".o_notification:contains('is registered in Azure')",
        },
        {
            content: "Odoo now signs in with the certificate",
            trigger: "[name='microsoft_graph_app_credential']:contains('Certificate')",
        },
        {
            content: "The next certificate can be prepared before this one expires",
            trigger: "button[name='action_microsoft_graph_prepare_next_certificate']",
        },
        {
            content: "Switching back to a secret stays possible",
            trigger: "button[name='action_microsoft_graph_use_secret']",
        },
        {
            content: "Show the certificate block (for the screenshot of docs/azure-setup.md)",
            trigger: "#microsoft_graph_certificate",
            run() {
                this.anchor.scrollIntoView({ block: "center" });
            },
        },
    ],
});

/**
 * An administrator moves an outgoing server of Odoo's own Outlook module (SMTP with
 * OAuth) to Microsoft Graph.
 *
 * "Switch to Microsoft Graph" asks for confirmation, saying which Graph permissions
 * the Azure app must have; confirming converts the server and sends the browser to
 * Microsoft. The Python test accepts on the consent page and the tour resumes on the
 * server form Odoo brings the browser back to.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_migration", {
    url: "/odoo/settings?debug=1",
    steps: () => [
        {
            content: "Go to the Technical menu",
            trigger: ".o_menu_sections [data-menu-xmlid='base.menu_custom']",
            run: "click",
        },
        {
            content: "List the outgoing mail servers",
            trigger: ".dropdown-item[data-menu-xmlid='base.menu_mail_servers']",
            run: "click",
        },
        {
            content: "Open the server that still uses Outlook over SMTP",
            trigger: ".o_list_view .o_data_row .o_data_cell:contains('Contoso Outlook SMTP')",
            run: "click",
        },
        {
            content: "It is connected the old way, by Odoo's Outlook module",
            trigger: ".o_field_widget[name=smtp_authentication] input[data-value=outlook]:checked",
        },
        {
            content: "Ask to switch it to Microsoft Graph",
            trigger: ".o_form_statusbar button[name=action_microsoft_graph_switch_from_outlook]",
            run: "click",
        },
        {
            content: "Odoo names the Graph permissions to add to the Azure app first",
            trigger:
                ".modal .modal-body:contains('Mail.Send'):contains('Mail.ReadWrite'):contains('offline_access')",
        },
        {
            content: "Confirm: Odoo converts the server and sends the browser to Microsoft",
            trigger: ".modal .modal-footer button.btn-primary",
            run: "click",
            expectUnloadPage: true,
        },
        // At Microsoft: the test presses Accept on the consent page.
        {
            content: "Back on the same server form, connected through Graph",
            trigger: ".o_form_view .o_field_widget[name=microsoft_graph_status]:contains('Outlook Token Valid')",
        },
        {
            content: "The server now uses Outlook (Microsoft Graph)",
            trigger: ".o_field_widget[name=smtp_authentication] input[data-value=microsoft_graph]:checked",
        },
        {
            content: "The mailbox address is still the same",
            trigger: ".o_field_widget[name=smtp_user] input:value('admin@contoso.test')",
        },
        {
            content: "Test the connection",
            trigger: ".o_form_statusbar button[name=test_smtp_connection]",
            run: "click",
        },
        {
            content: "Graph answers",
            trigger: ".o_notification:contains('Connection Test Successful')",
        },
    ],
});

/**
 * An administrator adds an outgoing mail server for their own Microsoft 365 mailbox.
 *
 * The tour stops when Odoo sends the browser to Microsoft; the Python test plays
 * the person on the consent page (Accept), Microsoft sends the browser back to the
 * server form, and the tour goes on there: Odoo keeps the tour's place in the
 * browser's storage across the round trip.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_outgoing_server", {
    url: "/odoo/settings?debug=1",
    steps: () => [
        {
            content: "Open the Technical menu of Settings",
            trigger: ".o_menu_sections [data-menu-xmlid='base.menu_custom']",
            run: "click",
        },
        {
            content: "Open Outgoing Mail Servers",
            trigger: ".dropdown-item[data-menu-xmlid='base.menu_mail_servers']",
            run: "click",
        },
        {
            content: "Create a server",
            trigger: ".o_list_view .o_list_button_add",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_form_view .o_field_widget[name=name] input",
            run: "edit Contoso administrator",
        },
        {
            content: "Choose Outlook (Microsoft Graph) as the authentication",
            trigger:
                ".o_field_widget[name=smtp_authentication] .o_radio_item:contains('Outlook (Microsoft Graph)') input",
            run: "click",
        },
        {
            content: "The Graph block asks which kind of mailbox this is",
            trigger: ".o_field_widget[name=microsoft_graph_mailbox_kind] input[data-value=personal]:checked",
        },
        {
            content: "Odoo explains the choice (its onchange has answered)",
            trigger: ".o_field_widget[name=smtp_authentication_info]:contains('Mail leaves through Microsoft Graph')",
        },
        {
            content: "Type the mailbox address as the username",
            trigger: ".o_field_widget[name=smtp_user] input",
            run: "edit admin@contoso.test",
        },
        {
            content: "Save",
            trigger: ".o_form_view .o_form_button_save",
            run: "click",
        },
        {
            content: "Wait for the save",
            trigger: ".o_form_view .o_form_saved",
        },
        {
            content: "Not connected yet",
            trigger: ".o_field_widget[name=microsoft_graph_status]:contains('Not connected')",
        },
        {
            content: "Connect: Odoo sends the browser to Microsoft",
            trigger: "button[name=action_microsoft_graph_connect]:contains('Connect your Outlook account')",
            run: "click",
            expectUnloadPage: true,
        },
        // At Microsoft: the test presses Accept on the consent page.
        {
            content: "Back on the server form, connected",
            trigger: ".o_form_view .o_field_widget[name=microsoft_graph_status]:contains('Outlook Token Valid')",
        },
        {
            content: "The signed-in account is shown",
            trigger: ".o_field_widget[name=microsoft_graph_account_name]:contains('Contoso Admin')",
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

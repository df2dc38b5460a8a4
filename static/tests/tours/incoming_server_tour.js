/**
 * An administrator adds an incoming mail server that reads their Microsoft 365 inbox.
 *
 * As for outgoing servers, the tour pauses at Microsoft (the Python test presses
 * Accept there) and resumes on the server form Odoo redirects to.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_incoming_server", {
    url: "/odoo/settings?debug=1",
    steps: () => [
        {
            content: "Open the Technical menu of Settings",
            trigger: ".o_menu_sections [data-menu-xmlid='base.menu_custom']",
            run: "click",
        },
        {
            content: "Open Incoming Mail Servers",
            trigger: ".dropdown-item[data-menu-xmlid='mail.menu_action_fetchmail_server_tree']",
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
            run: "edit Contoso administrator inbox",
        },
        {
            content: "Choose Outlook (Microsoft Graph) as the server type",
            trigger:
                ".o_field_widget[name=server_type] .o_radio_item:contains('Outlook (Microsoft Graph)') input",
            run: "click",
        },
        {
            content: "Odoo explains the choice (its onchange has answered)",
            trigger: ".o_field_widget[name=server_type_info]:contains('Mail is read through Microsoft Graph')",
        },
        {
            content: "Type the mailbox address as the username",
            trigger: ".o_field_widget[name=user] input",
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
            content: "Test and confirm the server",
            trigger: ".o_form_statusbar button[name=button_confirm_login]",
            run: "click",
        },
        {
            content: "Graph answers",
            trigger: ".o_notification:contains('Connection Test Successful')",
        },
        {
            content: "The server is confirmed",
            trigger: ".o_field_widget[name=state] .o_arrow_button_current:contains('Confirmed')",
        },
    ],
});

/**
 * An administrator looks at the health of every Microsoft Graph mailbox at once
 * from the Outlook block of Settings, without developer mode, and opens a server from it.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_health_view", {
    url: "/odoo/settings",
    steps: () => [
        {
            content: "Settings (no developer mode): the Outlook block links to the health list",
            trigger: "button[name=action_microsoft_graph_open_health]",
            run: "click",
        },
        {
            content: "The shared mailbox that lost its connection stands out, with what to do",
            trigger:
                ".o_list_view .o_data_row:contains('sales@contoso.test'):contains('Reconnect needed'):contains('Connect the Outlook account again')",
        },
        {
            content: "The connected mailboxes are listed too",
            trigger: ".o_list_view .o_data_row:contains('Outlook Token Valid'):contains('Incoming')",
        },
        {
            content: "A row click opens the server",
            trigger: ".o_list_view .o_data_row:contains('sales@contoso.test') td[name=name]",
            run: "click",
        },
        {
            content: "The server form of the shared mailbox, with Reconnect",
            trigger:
                ".o_form_view .o_field_widget[name=smtp_user] input:value('sales@contoso.test')",
        },
        {
            content: "Back to the list",
            trigger: ".o_breadcrumb .breadcrumb-item a:contains('Microsoft Graph Mailboxes')",
            run: "click",
        },
        {
            content: "The list again, every column within the screen",
            trigger: ".o_list_view .o_data_row:contains('sales@contoso.test')",
            run() {
                const list = document.querySelector(".o_list_renderer");
                if (list.scrollWidth > list.clientWidth + 1) {
                    throw new Error(
                        `The health list is ${list.scrollWidth} px wide in ${list.clientWidth} px`
                    );
                }
            },
        },
    ],
});

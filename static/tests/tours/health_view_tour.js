/**
 * An administrator looks at the health of every Microsoft Graph mailbox at once
 * (Settings > Technical > Email > Microsoft Graph Mailboxes).
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_health_view", {
    url: "/odoo/settings?debug=1",
    steps: () => [
        {
            content: "Go to the Technical menu",
            trigger: ".o_menu_sections [data-menu-xmlid='base.menu_custom']",
            run: "click",
        },
        {
            content: "Open the health list of the Microsoft Graph mailboxes",
            trigger:
                ".dropdown-item[data-menu-xmlid='microsoft_outlook_graph.microsoft_outlook_graph_mailbox_menu']",
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
    ],
});

/**
 * An employee sends their mail through their own Microsoft 365 mailbox, chosen in
 * their preferences (personal mail servers must be allowed in Settings).
 *
 * The tour pauses at Microsoft, where the Python test signs in as the employee and
 * presses Accept, and resumes on the preferences page Odoo redirects to.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_preferences", {
    url: "/odoo",
    steps: () => [
        {
            content: "Open the user menu",
            trigger: ".o_user_menu .dropdown-toggle",
            run: "click",
        },
        {
            content: "Open My Preferences",
            trigger: "[data-menu=preferences]",
            run: "click",
        },
        {
            content: "Choose Outlook (Microsoft Graph): Odoo sends the browser to Microsoft",
            trigger: ".o_field_widget[name=outgoing_mail_server_type] select",
            run: "select microsoft_graph",
            expectUnloadPage: true,
        },
        // At Microsoft: the test signs in as the employee and presses Accept.
        {
            content: "Back on the preferences, mail goes through Outlook",
            trigger:
                ".o_field_widget[name=outgoing_mail_server_type] button:contains('Emails sent via Outlook (Microsoft Graph)')",
        },
        {
            content: "Test the connection",
            trigger: ".o_field_widget[name=outgoing_mail_server_type] button.o_mail_server_configurator_selection_test_connection",
            run: "click",
        },
        {
            content: "Graph answers",
            trigger: ".o_notification:contains('Connection Test Successful!')",
        },
    ],
});

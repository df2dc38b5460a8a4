/**
 * A new administrator sets Outlook (Microsoft Graph) up from Settings with the guided
 * setup, in a database where no Azure app is configured yet: the redirect URI, the app's
 * id and secret (a wrong secret first: the setup says where to fix it), the permissions,
 * then the first mailbox's servers, created and connected one sign-in each.
 *
 * Four tours, one per visit of Settings (the admin closes the setup to fetch the secret's
 * value in Azure, and opens it again after each sign-in): the Python test plays the person
 * on Microsoft's consent page in between (see tests/test_tours.py).
 */
import { registry } from "@web/core/registry";

// The sandbox's app registered for this test (tests/test_tours.py, test_setup_wizard).
const CLIENT_ID = "55555555-5555-5555-5555-555555555555";
const CLIENT_SECRET = "guided-setup-secret-value";
const TENANT_ID = "5d2f3c1a-8b7e-4f2a-9c61-0e4b7a9d3f10";
const MAILBOX = "admin@contoso.test";

const openSetup = {
    content: "Settings (no developer mode): start the Outlook (Microsoft Graph) setup",
    trigger: "button[name=action_microsoft_graph_open_setup]",
    run: "click",
};

registry.category("web_tour.tours").add("microsoft_outlook_graph_setup_wizard", {
    url: "/odoo/settings",
    steps: () => [
        openSetup,
        {
            content: "Step 1: the redirect URI to register in Azure, with a copy button",
            trigger:
                ".modal .o_field_widget[name=redirect_uri]:contains('/microsoft_outlook/confirm') .o_clipboard_button",
        },
        {
            content: "Where in Azure",
            trigger: ".modal:contains('Authentication > Add a platform > Web')",
        },
        {
            content: "Next",
            trigger: ".modal-footer button[name=action_next]",
            run: "click",
        },
        {
            content: "Step 2: the Application (client) ID",
            trigger: ".modal .o_field_widget[name=client_id] input",
            run: `edit ${CLIENT_ID}`,
        },
        {
            content: "A secret's ID instead of its value",
            trigger: ".modal .o_field_widget[name=client_secret] input",
            run: "edit 0c6e36a0-5e0b-4f7c-a1d4-3a2f1b9e8c7d",
        },
        {
            content: "The Directory (tenant) ID",
            trigger: ".modal .o_field_widget[name=tenant] input",
            run: `edit ${TENANT_ID}`,
        },
        {
            content: "Test and save",
            trigger: ".modal button[name=action_test_app]",
            run: "click",
        },
        {
            content: "Microsoft refuses the secret: the setup names the Azure page and the field",
            trigger:
                ".modal .o_microsoft_graph_setup_failed:contains('Certificates & secrets > Client secrets'):contains('Client Secret here')",
        },
        {
            content: "Nothing saved, so no Next",
            trigger: ".modal-footer:not(:has(button[name=action_next]))",
        },
    ],
});

registry.category("web_tour.tours").add("microsoft_outlook_graph_setup_wizard_app", {
    url: "/odoo/settings",
    steps: () => [
        openSetup,
        {
            content: "Back from Azure with the secret's value: the setup is where it was left",
            trigger: ".modal .o_microsoft_graph_setup_failed:contains('Client secrets')",
        },
        {
            content: "The secret's value",
            trigger: ".modal .o_field_widget[name=client_secret] input",
            run: `edit ${CLIENT_SECRET}`,
        },
        {
            content: "Test and save again",
            trigger: ".modal button[name=action_test_app]",
            run: "click",
        },
        {
            content: "Microsoft accepts the app: saved in Settings",
            trigger: ".modal .o_microsoft_graph_setup_passed:contains('Saved in Settings')",
        },
        {
            content: "Next",
            trigger: ".modal-footer button[name=action_next]",
            run: "click",
        },
        {
            content: "Step 3: the delegated permissions to add, for sending and reading",
            trigger:
                ".modal .o_microsoft_graph_setup_permissions:contains('Mail.Send'):contains('Mail.ReadWrite'):contains('offline_access')",
        },
        {
            content: "Next",
            trigger: ".modal-footer button[name=action_next]",
            run: "click",
        },
        {
            content: "Step 4: the mailbox address",
            trigger: ".modal .o_field_widget[name=mailbox_address] input",
            run: `edit ${MAILBOX}`,
        },
        {
            content: "Create the outgoing and incoming servers",
            trigger: ".modal button[name=action_create_servers]",
            run: "click",
        },
        {
            content: "Connect the outgoing server: Odoo sends the browser to Microsoft",
            trigger: ".modal button[name=action_connect_outgoing]",
            run: "click",
            expectUnloadPage: true,
        },
        // At Microsoft: the test presses Accept on the consent page.
        {
            content: "Back on the outgoing server form, connected",
            trigger:
                ".o_form_view .o_field_widget[name=microsoft_graph_status]:contains('Outlook Token Valid')",
        },
        {
            content: "Named after the mailbox",
            trigger: `.o_form_view .o_field_widget[name=name] input:value('${MAILBOX}')`,
        },
    ],
});

registry.category("web_tour.tours").add("microsoft_outlook_graph_setup_wizard_resumed", {
    url: "/odoo/settings",
    steps: () => [
        openSetup,
        {
            content: "The setup resumes on the mailbox: outgoing connected, incoming to connect",
            trigger:
                ".modal:has(.badge:contains('Connected')) button[name=action_connect_incoming]",
        },
    ],
});

registry.category("web_tour.tours").add("microsoft_outlook_graph_setup_wizard_incoming", {
    url: "/odoo/settings",
    steps: () => [
        openSetup,
        {
            content: "Connect the incoming server: Odoo sends the browser to Microsoft",
            trigger: ".modal button[name=action_connect_incoming]",
            run: "click",
            expectUnloadPage: true,
        },
        // At Microsoft: the test presses Accept on the consent page.
        {
            content: "Back on the incoming server form, connected",
            trigger:
                ".o_form_view .o_field_widget[name=microsoft_graph_status]:contains('Outlook Token Valid')",
        },
        {
            content: "Test & Confirm, so that the fetchmail cron reads it",
            trigger: ".o_form_statusbar button[name=button_confirm_login]",
            run: "click",
        },
        {
            content: "Confirmed",
            trigger: ".o_field_widget[name=state] .o_arrow_button_current:contains('Confirmed')",
        },
    ],
});

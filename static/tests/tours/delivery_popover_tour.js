/**
 * An administrator looks at the delivery status of a message sent through Microsoft
 * Graph: the popover of its envelope icon names the ids Exchange gave the mail.
 */
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("microsoft_outlook_graph_delivery_popover", {
    steps: () => [
        {
            content: "The sent message shows its delivery status icon",
            trigger: ".o-mail-Message:contains('Your quotation is ready') .o-mail-Message-notification",
            run: "click",
        },
        {
            content: "The popover names the recipient and the ids Exchange gave the mail",
            trigger:
                ".o-mail-MessageNotificationPopover:contains('customer@example.com') .o-microsoft-graph-ids:contains('Internet message ID')",
        },
    ],
});

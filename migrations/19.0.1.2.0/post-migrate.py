"""19.0.1.2.0: the crons' display names in one style ("Microsoft Graph: ..."), and the
methods they call renamed on the addon's own models (no ``_microsoft_graph_`` prefix there).

The data file cannot change them (its records are ``noupdate``); a name an admin
changed is kept.
"""

from odoo import SUPERUSER_ID, api

OLD_NAMES = {
    "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_health_check": (
        "Outlook (Microsoft Graph): daily health check",
        "Microsoft Graph: Daily Mailbox Health Check",
    ),
    "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_poll": (
        "Outlook: Check Mailboxes Without Change Notifications",
        "Microsoft Graph: Check Mailboxes Without Change Notifications",
    ),
    "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_subscriptions": (
        "Outlook: Keep Change Notification Subscriptions",
        "Microsoft Graph: Keep Change Notification Subscriptions",
    ),
}

RENAMED_CODE = {
    "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_health_check": (
        "model._cron_microsoft_graph_health_check()",
        "model._cron_health_check()",
    ),
    "microsoft_outlook_graph.ir_cron_microsoft_outlook_graph_subscriptions": (
        "model._cron_microsoft_graph_subscriptions()",
        "model._cron_keep_subscriptions()",
    ),
}


def migrate(cr, version):
    if not version:
        return
    env = api.Environment(cr, SUPERUSER_ID, {})
    for xmlid, (old, new) in OLD_NAMES.items():
        cron = env.ref(xmlid, raise_if_not_found=False)
        if cron and cron.name == old:
            cron.name = new
    for xmlid, (old, new) in RENAMED_CODE.items():
        cron = env.ref(xmlid, raise_if_not_found=False)
        if cron and (cron.code or "").strip() == old:
            cron.code = new

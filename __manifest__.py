{
    "name": "Microsoft Outlook through Microsoft Graph",
    "summary": "Send and receive Odoo mail through Microsoft Graph, "
    "for personal and shared Microsoft 365 mailboxes",
    "version": "19.0.1.2.0",
    "category": "Hidden/Tools",
    "license": "LGPL-3",
    "author": "microsoft_outlook_graph developers",
    "depends": ["microsoft_outlook"],
    "external_dependencies": {"python": ["msal", "cryptography", "requests"]},
    "data": [
        "security/ir.model.access.csv",
        "views/ir_mail_server_views.xml",
        "views/fetchmail_server_views.xml",
        "views/microsoft_outlook_graph_failed_message_views.xml",
        "wizard/microsoft_outlook_graph_setup_views.xml",
        "views/res_config_settings_views.xml",
        "views/mail_mail_views.xml",
        "views/templates.xml",
        "views/microsoft_outlook_graph_mailbox_views.xml",
        "views/microsoft_outlook_graph_tenant_views.xml",
        "views/microsoft_outlook_graph_subscription_views.xml",
        "data/ir_cron_data.xml",
    ],
    "assets": {
        "web.assets_backend": [
            "microsoft_outlook_graph/static/src/**/*",
        ],
        "web.assets_tests": [
            "microsoft_outlook_graph/static/tests/tours/*.js",
        ],
    },
    "uninstall_hook": "uninstall_hook",
    "installable": True,
}

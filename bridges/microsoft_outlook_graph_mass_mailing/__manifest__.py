{
    "name": "Microsoft Graph Sending Limits for Email Marketing",
    "summary": "Forecast how long a mass mailing takes through a Microsoft 365 mailbox",
    "version": "19.0.1.0.0",
    "category": "Hidden/Tools",
    "license": "LGPL-3",
    "author": "microsoft_outlook_graph developers",
    "depends": ["microsoft_outlook_graph", "mass_mailing"],
    "data": ["views/mailing_mailing_views.xml"],
    "auto_install": True,
    "installable": True,
}

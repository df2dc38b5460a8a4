"""What the demo sets up in its new database, as an admin following docs/azure-setup.md would.

Run inside ``odoo-bin shell`` by tools/demo.py (which commits), and by the Odoo test
tests/test_demo.py against the test sandbox (which does not). No imports of this
checkout: the shell reads this file and calls :func:`setup`.
"""

import datetime

# The demo's mailbox: the Administrator's own, in the sandbox's demo tenant.
DEMO_MAILBOX = "admin@contoso.test"


def setup(env, *, client_id, client_secret, tenant, sandbox_url, ca_file, base_url, since=None):
    """Fill in Settings, give the Administrator the mailbox's address, and prepare one
    outgoing and one incoming Outlook (Microsoft Graph) server for it, to be connected.

    :return: (outgoing server, incoming server)
    """
    env["res.config.settings"].create(
        {
            "microsoft_outlook_client_identifier": client_id,
            "microsoft_graph_client_secret": client_secret,
            "microsoft_graph_tenant": tenant,
            "microsoft_graph_cloud": "custom",
            "microsoft_graph_authority_url": sandbox_url,
            "microsoft_graph_graph_url": sandbox_url,
            "microsoft_graph_ca_file": ca_file,
            # shows the Outlook block and the mail server links in General Settings
            "external_email_server_default": True,
        }
    ).execute()
    Config = env["ir.config_parameter"].sudo()
    Config.set_param("web.base.url", base_url)
    Config.set_param("web.base.url.freeze", "True")
    # The Administrator's address, on the partner: written on the user, Odoo would mail
    # a "Security Update: Email Changed" notice to the previous (empty) address.
    admin = env.ref("base.user_admin")
    admin.partner_id.email = DEMO_MAILBOX
    outgoing = env["ir.mail_server"].create(
        {
            "name": "Contoso administrator",
            "smtp_authentication": "microsoft_graph",
            "smtp_user": DEMO_MAILBOX,
            "from_filter": DEMO_MAILBOX,
            "microsoft_graph_mailbox_kind": "personal",
        }
    )
    # The sandbox's mailboxes already hold mail: imported from this date, into new
    # contacts ("Create a New Record"), instead of only the mail that arrives later.
    since = since or datetime.datetime.now() - datetime.timedelta(days=365)
    incoming = env["fetchmail.server"].create(
        {
            "name": "Contoso administrator inbox",
            "server_type": "microsoft_graph",
            "user": DEMO_MAILBOX,
            "microsoft_graph_mailbox_kind": "personal",
            "microsoft_graph_since": since.replace(microsecond=0),
            "object_id": env["ir.model"]._get_id("res.partner"),
        }
    )
    return outgoing, incoming

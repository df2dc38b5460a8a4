def uninstall_hook(env):
    """Leave no Microsoft secret behind, and no server pointing at a type that is gone.

    The token columns go away with the module; the Azure client secret and the app's
    certificates (their private keys sealed) in the system parameters, and the Graph
    servers themselves, do not. Subscriptions are
    deleted at Microsoft first, while the settings to reach it still exist.
    """
    env["microsoft.outlook.graph.subscription"].sudo().search([])._unsubscribe()
    env["ir.config_parameter"].sudo().search(
        [("key", "=like", "microsoft_outlook_graph.%")]
    ).unlink()
    env["ir.mail_server"].sudo().with_context(active_test=False).search(
        [("smtp_authentication", "=", "microsoft_graph")]
    ).write({"active": False})
    env["fetchmail.server"].sudo().with_context(active_test=False).search(
        [("server_type", "=", "microsoft_graph")]
    ).write({"active": False})

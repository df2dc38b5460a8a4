"""``odoo-bin microsoft_graph_reseal -c odoo.conf -d DB``: re-seal after a vault key change."""

import sys

from odoo import SUPERUSER_ID, api
from odoo.cli.command import Command
from odoo.modules.registry import Registry
from odoo.tools import config


class MicrosoftGraphReseal(Command):
    """Re-seal the Microsoft Graph tokens and client secret with the current vault key"""

    name = "microsoft_graph_reseal"

    def run(self, cmdargs):
        config.parse_config(cmdargs, setup_logging=True)
        databases = config["db_name"]
        if not databases:
            sys.exit("Name the database with -d.")
        for database in databases:
            with Registry(database).cursor() as cr:
                env = api.Environment(cr, SUPERUSER_ID, {})
                resealed, unreadable = env[
                    "microsoft.outlook.graph.mixin"
                ]._microsoft_graph_reseal_all()
            sys.stdout.write(
                f"{database}: {resealed} resealed, {unreadable} not readable with any key\n"
            )
            if unreadable:
                sys.stdout.write("  Servers whose tokens no key opens show 'Reconnect needed'.\n")

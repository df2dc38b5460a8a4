"""19.0.1.2.0: the three crons get xml ids of one style (``ir_cron_microsoft_outlook_graph_*``).

Renamed before the data files load, so that the existing crons are kept (with their
schedule, active flag and last run) rather than duplicated; all three are ``noupdate``
from now on, as the data file says.
"""

MODULE = "microsoft_outlook_graph"
RENAMED_XMLIDS = {
    "microsoft_outlook_graph_health_cron": "ir_cron_microsoft_outlook_graph_health_check",
    "ir_cron_microsoft_graph_poll": "ir_cron_microsoft_outlook_graph_poll",
    "ir_cron_microsoft_graph_subscriptions": "ir_cron_microsoft_outlook_graph_subscriptions",
}


def migrate(cr, version):
    if not version:
        return
    for old, new in RENAMED_XMLIDS.items():
        cr.execute(
            "UPDATE ir_model_data SET name = %s, noupdate = true WHERE module = %s AND name = %s",
            [new, MODULE, old],
        )

"""Time as the addon's Odoo side stores it: naive UTC datetimes, whole seconds."""

import datetime


def naive_utc(moment):
    """``moment`` (aware, or naive UTC) as Odoo's Datetime fields hold it, or None."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def aware_utc(moment):
    """A naive UTC datetime read from Odoo, made aware."""
    return moment.replace(tzinfo=datetime.UTC)

"""The addon's log filters: installed once, a deferred send logged as one warning line."""

import logging

from services.log_filters import MAIL_QUEUE_LOGGER, DeferredSendFilter, install_log_filters
from services.redact import RedactingFilter
from services.send import GraphSendDeferred


def _record(exc):
    try:
        raise exc
    except Exception as raised:
        info = (type(raised), raised, raised.__traceback__)
    return logging.LogRecord(MAIL_QUEUE_LOGGER, logging.ERROR, __file__, 1, "boom", (), info)


def test_installed_once_however_often_called():
    install_log_filters()
    install_log_filters()
    queue_filters = logging.getLogger(MAIL_QUEUE_LOGGER).filters
    assert sum(isinstance(f, DeferredSendFilter) for f in queue_filters) == 1
    root_filters = logging.getLogger("msal").filters
    assert sum(isinstance(f, RedactingFilter) for f in root_filters) == 1


def test_deferred_send_becomes_one_warning_line_other_errors_stay():
    record = _record(GraphSendDeferred("Microsoft 365 is busy", "<m1@odoo>"))
    assert DeferredSendFilter().filter(record)
    assert record.levelname == "WARNING"
    assert record.getMessage() == "[Graph API] mail <m1@odoo> stays queued: Microsoft 365 is busy"
    assert record.exc_info is None
    other = _record(ValueError("real trouble"))
    DeferredSendFilter().filter(other)
    assert other.levelname == "ERROR" and other.exc_info

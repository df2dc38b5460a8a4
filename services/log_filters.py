"""The addon's log filters, installed together once when the addon loads (``__init__.py``).

- redaction (:mod:`.redact`): no token, code or secret in any log line;
- a deferred Graph send is no error: Odoo's mail queue logs a dropped SMTP session as an
  ERROR with its traceback, then lets it stop the batch; for a :class:`GraphSendDeferred`
  that stop is the intended outcome, so the record becomes one WARNING line saying why the
  mail waits.
"""

import logging

from .redact import install_redaction
from .send import GraphSendDeferred

# The logger of Odoo's mail queue (odoo/addons/mail/models/mail_mail.py).
MAIL_QUEUE_LOGGER = "odoo.addons.mail.models.mail_mail"


class DeferredSendFilter(logging.Filter):
    """One WARNING line instead of an ERROR with a traceback for a deferred Graph send."""

    def filter(self, record):
        deferred = record.exc_info[1] if record.exc_info else None
        if isinstance(deferred, GraphSendDeferred):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "[Graph API] mail %s stays queued: %s"
            record.args = (deferred.message_id, deferred.reason)
            record.exc_info = record.exc_text = None
        return True


_DEFERRED = DeferredSendFilter()


def install_log_filters():
    """Install both filters; safe to call again (each filter is added once)."""
    install_redaction()
    queue_logger = logging.getLogger(MAIL_QUEUE_LOGGER)
    if _DEFERRED not in queue_logger.filters:
        queue_logger.addFilter(_DEFERRED)

"""One import run of one Graph incoming server (docs/incoming.md).

``fetchmail.server`` keeps the entry points (the cron, Fetch Now, the lock, the failure
recording); a :class:`GraphImportRun` holds what one run of one locked server needs and
reaches: its delta sync, its budget, its position and its counts.
"""

import contextlib
import datetime
import logging
import math

from odoo import fields
from odoo.exceptions import UserError

from ..services.clock import naive_utc
from ..services.errors import GraphError, GraphTransientError
from ..services.sync import RESYNC_MARGIN, DeltaTokenExpired, MessageTooLarge
from .microsoft_outlook_graph_subscription import GATEWAY_CRON

_logger = logging.getLogger(__name__)

MB = 1024 * 1024
# Graph's well-known folder names: used as they are, never looked up.
WELL_KNOWN_FOLDERS = frozenset(
    ("inbox", "drafts", "sentitems", "deleteditems", "junkemail", "archive", "outbox")
)
# Graph ids of the latest imports kept on the server, to skip the messages a new round
# repeats after a stale delta link (docs/incoming.md): those received within twice the
# resync margin of the newest one, and at most this many.
RECENT_IDS_KEPT = 1000
RECENT_IDS_WINDOW = 2 * RESYNC_MARGIN
# Kept messages Microsoft was too busy to give are fetched again by later runs: this
# many per run (one $batch request), at most this many attempts each.
AUTO_RETRY_BATCH = 20
AUTO_RETRY_ATTEMPTS = 5
# The server's fields a run moves forward, written before each commit (cron) or once
# every request is over (elsewhere).
POSITION_FIELDS = (
    "microsoft_graph_delta_link",
    "microsoft_graph_sync_start",
    "microsoft_graph_latest_received",
    "microsoft_graph_recent_ids",
    "microsoft_graph_imported_count",
)


class GraphImportRun:
    """Import the new mail of one locked server, page by page, within its budget and
    before ``deadline`` (a value of the server's ``_microsoft_graph_clock``).

    With ``commit`` (the cron) each page is committed with its checkpoint through
    ``ir.cron._commit_progress``, and the Graph writes (mark read, move) follow each
    commit; otherwise nothing is committed and they wait for the request's commit.
    """

    def __init__(self, server, commit, deadline=None):
        server.ensure_one()
        self.server = server
        self.env = server.env
        self.commit = commit
        self.clock = server._microsoft_graph_clock
        self.max_messages, max_seconds = server._microsoft_graph_budget()
        self.started = self.clock()
        self.deadline = self.started + max_seconds
        if deadline is not None:
            self.deadline = min(self.deadline, deadline)
        self.position = {name: server[name] for name in POSITION_FIELDS}
        self.position["microsoft_graph_recent_ids"] = dict(
            self.position["microsoft_graph_recent_ids"] or {}
        )
        self.sync = None
        self.imported = self.failed = self.skipped = self.pages = 0
        self.pending = False
        # "done", "budget" (more mail waiting), "busy" (another worker took the
        # server) or the name of the error that stopped the run.
        self.stopped = "done"
        self.error = None
        # Outside the cron: the ids to mark read and move once the request commits.
        self.handled = []
        self._last_page_seconds = 0.0

    @property
    def spent(self):
        return self.imported + self.failed + self.skipped

    def run(self):
        server = self.server
        identity = (server.id, server.name, server._microsoft_graph_mailbox_address())
        mailbox = None
        try:
            mailbox = server._connect__()
            self.sync = mailbox.sync
            self._bound_waits()
            self._walk(mailbox)
            self.position.update(
                {
                    "error_date": False,
                    "error_message": False,
                    "microsoft_graph_last_success": fields.Datetime.now(),
                    "microsoft_graph_pending": self.pending,
                    "microsoft_graph_throttled_until": False,
                }
            )
        except GraphError as exc:
            self._stop(exc)
            self._note_retry_after(exc)
        except Exception as exc:
            if not self.commit:
                raise
            # Back to the last committed page; the lock goes with the rollback.
            self.env.cr.rollback()
            server.invalidate_recordset()
            self._stop(exc)
            self.position = {}
        finally:
            if mailbox is not None:
                mailbox.disconnect()
        # Every Graph request of the run is over: the server's row may be written now.
        server.write({**self.position, "date": fields.Datetime.now()})
        if self.error is not None:
            server._microsoft_graph_record_failure(self.error)
        if self.pending:
            self.env.ref(GATEWAY_CRON).sudo()._trigger()
        _logger.info(
            "[Incoming Mail] fetchmail.server #%s %s (%s): %d imported, %d failed, "
            "%d skipped, %d page(s) in %.1fs; %s",
            *identity,
            self.imported,
            self.failed,
            self.skipped,
            self.pages,
            self.clock() - self.started,
            {"done": "up to date", "budget": "more mail waiting, run again"}.get(
                self.stopped, f"stopped ({self.stopped})"
            ),
        )
        return self

    def _stop(self, error):
        self.error = error
        self.stopped = type(error).__name__

    def _bound_waits(self):
        """Microsoft's Retry-After is waited for inside the run only within its slice; a
        longer one ends the run, so that the other mailboxes never wait for this one."""
        left = max(0.0, self.deadline - self.clock())
        self.sync.client.max_inline_wait = min(self.sync.client.max_inline_wait, left)
        self.sync.max_retry_wait = min(self.sync.max_retry_wait, left)

    def _note_retry_after(self, error):
        """Microsoft asked to wait (Retry-After), or the client gave up its retries after
        a backoff: the server is skipped until then, and run again then."""
        if not isinstance(error, GraphTransientError) or not error.retry_after:
            return
        until = fields.Datetime.now() + datetime.timedelta(seconds=math.ceil(error.retry_after))
        self.position["microsoft_graph_throttled_until"] = until
        self.env.ref(GATEWAY_CRON).sudo()._trigger(at=until)

    # -- the delta rounds ----------------------------------------------------------------

    def _walk(self, mailbox):
        """From the stored link (or a new start) through the delta pages; after a stale
        link, once through a new round."""
        link = self.position["microsoft_graph_delta_link"]
        if not link:
            self.position.update(self.server._microsoft_graph_start_values(self.sync))
            link = self.position["microsoft_graph_delta_link"]
            if self.commit:
                self._save()
        resynced = False
        while True:
            try:
                self._pages(link)
                break
            except DeltaTokenExpired:
                if resynced:
                    raise
                resynced = True
                link = self._resync()
        if not self.pending and self.stopped == "done":
            self._fetch_again()
        if self.commit:
            self._flush()
        elif self.handled:
            self.server._microsoft_graph_write_back_after_commit(mailbox, list(self.handled))

    def _resync(self):
        """After a stale delta link: a new round from shortly before the last import,
        never from before the synchronisation started; ``_known`` skips the repeats."""
        floor = self.position["microsoft_graph_sync_start"] or self.server.microsoft_graph_since
        latest = self.position["microsoft_graph_latest_received"]
        link = self.sync.resync_link(latest, floor=floor)
        _logger.info(
            "[Incoming Mail] fetchmail.server #%s: Microsoft forgot the delta position; "
            "resynchronising from %s",
            self.server.id,
            latest or floor or "the start of the folder",
        )
        self.position["microsoft_graph_delta_link"] = link
        return link

    def _pages(self, link):
        # Messages over the server's limit are kept as failed messages, never downloaded.
        self.sync.max_size = self.server.microsoft_graph_max_size * MB or None
        pages = self.sync.pages(link, known=self._known, ahead=self._ahead)
        with contextlib.closing(pages):
            for page in pages:
                started = self.clock()
                if not self._page(page):
                    return
                self._last_page_seconds = self.clock() - started

    def _ahead(self, page):
        """Fetch the next page's MIME while this one is imported, unless the budget will
        stop the run after this page: that fetch would be wasted."""
        spent = self.spent + len(page.messages) + len(page.known_ids)
        return spent < self.max_messages and self.clock() + self._last_page_seconds < self.deadline

    def _page(self, page):
        """Import one page and, in the cron, commit it. False when the run stops here."""
        self.pages += 1
        handled = self._import_page(page)
        if self.commit:
            if not self._save(len(page.messages) + len(page.known_ids)):
                self.stopped = "busy"
                return False
            self._write_back(handled, deferred=True)
        else:
            self.handled += handled
        if page.next_link and (self.spent >= self.max_messages or self.clock() >= self.deadline):
            self.pending = True
            self.stopped = "budget"
            return False
        return True

    def _save(self, processed=0):
        """Cron path: write the position with the page's messages and commit them
        together, then take the server again. False when another worker has it now."""
        server = self.server
        server.write(self.position)
        self.env["ir.cron"]._commit_progress(processed)
        if not server._microsoft_graph_lock():
            return False
        return server.microsoft_graph_delta_link == self.position["microsoft_graph_delta_link"]

    # -- messages ------------------------------------------------------------------------

    def _known(self, messages):
        """The Graph ids, among a page's new messages, already imported or kept."""
        recent = self.position["microsoft_graph_recent_ids"]
        known = {message.id for message in messages if message.id in recent}
        rest = [message for message in messages if message.id not in known]
        if rest:
            known.update(self._failed_messages([message.id for message in rest]).mapped("graph_id"))
        message_ids = {m.internet_message_id for m in rest if m.id not in known} - {None, ""}
        if message_ids:
            existing = set(
                self.env["mail.message"]
                .sudo()
                .search([("message_id", "in", list(message_ids))])
                .mapped("message_id")
            )
            known.update(m.id for m in rest if m.internet_message_id in existing)
        return known

    def _failed_messages(self, graph_ids):
        return (
            self.env["microsoft.outlook.graph.failed.message"]
            .sudo()
            .search([("server_id", "=", self.server.id), ("graph_id", "in", graph_ids)])
        )

    def _import_page(self, page):
        """Process a page's messages, each in its own savepoint, and move the run's
        position to the page's checkpoint (written with them). Returns the ids to mark
        read and move: the imported ones and the known ones that are not kept."""
        Failed = self.env["microsoft.outlook.graph.failed.message"].sudo()
        position = self.position
        recent = dict(position["microsoft_graph_recent_ids"])
        latest = position["microsoft_graph_latest_received"]
        kept_ids = set(self._failed_messages(page.known_ids).mapped("graph_id"))
        handled = [i for i in page.known_ids if i not in kept_ids]
        imported = failed = 0
        with self.env.cr.savepoint():
            # Large messages are downloaded here, one at a time, as the loop reaches them.
            for message in page.contents():
                received = naive_utc(message.received)
                if received and (not latest or received > latest):
                    latest = received
                error = self._message_error(message)
                if error is not None:
                    Failed._keep(self.server, message, error)
                    failed += 1
                else:
                    imported += 1
                    handled.append(message.id)
                    recent[message.id] = fields.Datetime.to_string(received) if received else ""
                del message  # not held while the next one downloads
        position.update(
            {
                "microsoft_graph_delta_link": page.checkpoint,
                "microsoft_graph_imported_count": position["microsoft_graph_imported_count"]
                + imported,
                "microsoft_graph_latest_received": latest,
                "microsoft_graph_recent_ids": _prune_recent(recent, latest),
            }
        )
        self.imported += imported
        self.failed += failed
        self.skipped += len(page.known_ids)
        return handled

    def _message_error(self, message):
        """Import one ``IncomingMessage`` of Graph: None, or why it is kept (the error
        Graph gave, its size over the limit, or what the mail gateway raised)."""
        if isinstance(message.error, MessageTooLarge):
            return self.server._microsoft_graph_size_error(
                message.error.size, round(message.error.limit / MB)
            )
        if message.error is not None:
            return message.error
        return self.server._microsoft_graph_process(message.raw)

    def _fetch_again(self):
        """Import the kept messages Microsoft was too busy to give (transient errors),
        a batch of them per run, at most ``AUTO_RETRY_ATTEMPTS`` times each."""
        kept = (
            self.env["microsoft.outlook.graph.failed.message"]
            .sudo()
            .search(
                [
                    ("server_id", "=", self.server.id),
                    ("state", "=", "failed"),
                    ("retry_automatically", "=", True),
                    ("attempt_count", "<", AUTO_RETRY_ATTEMPTS),
                ],
                limit=AUTO_RETRY_BATCH,
                order="id",
            )
        )
        if not kept:
            return
        handled = []
        try:
            # One message downloaded at a time (their sizes are not known here).
            records = {record.graph_id: record for record in kept}
            with self.env.cr.savepoint():
                for message in self.sync.fetch_each(list(records)):
                    record = records[message.id]
                    error = self._message_error(message)
                    record._record_attempt(message.raw, error)
                    if error is None:
                        handled.append(record.graph_id)
                    del message  # not held while the next one downloads
        except GraphError as exc:
            _logger.info(
                "[Incoming Mail] fetchmail.server #%s: kept messages not fetched again: %s",
                self.server.id,
                exc.reference or type(exc).__name__,
            )
            return
        self.imported += len(handled)
        self.position["microsoft_graph_imported_count"] += len(handled)
        if self.commit:
            if self._save(len(kept)):
                self._write_back(handled, deferred=True)
        else:
            self.handled += handled

    # -- writes back to the mailbox (after the commit) -------------------------------------

    def _write_back(self, ids, deferred):
        write_back(self.server, self.sync, ids, deferred)

    def _flush(self):
        try:
            _log_outcomes(self.server, "mark read", self.sync.flush())
        except GraphError as exc:
            _logger.warning(
                "[Incoming Mail] fetchmail.server #%s: imported messages could not be "
                "marked read in Outlook: %s",
                self.server.id,
                exc,
            )


def write_back(server, sync, ids, deferred):
    """Move and mark read the imported messages: Graph writes, cosmetic, made only once
    the import is committed (a move before it could lose a message). ``deferred``: the
    marks wait in ``sync`` for one $batch at the end of the run."""
    if not ids:
        return
    destination = server.microsoft_graph_move_folder
    try:
        if destination:
            folder = _folder_id(server, sync.client, destination)
            _log_outcomes(server, "move", sync.move(ids, folder))
        if server.microsoft_graph_mark_read:
            if deferred:
                sync.mark_read_later(ids)
            else:
                _log_outcomes(server, "mark read", sync.mark_read(ids))
    except (GraphError, UserError) as exc:
        _logger.warning(
            "[Incoming Mail] fetchmail.server #%s: imported messages could not be "
            "marked read or moved in Outlook: %s",
            server.id,
            exc,
        )


def _log_outcomes(server, action, outcomes):
    failures = [outcome for outcome in outcomes.values() if not outcome.ok]
    if failures:
        _logger.warning(
            "[Incoming Mail] fetchmail.server #%s: %s failed in Outlook for %d of %d "
            "message(s): %s",
            server.id,
            action,
            len(failures),
            len(outcomes),
            failures[0].error,
        )


def _folder_id(server, client, name):
    """A well-known folder name or an id as it is; a top-level folder's display name
    becomes its id."""
    if name.lower() in WELL_KNOWN_FOLDERS:
        return name.lower()
    wanted = name.strip().lower()
    for folder in client.iter_pages(
        client.mailbox_path("mailFolders"), params={"$select": "id,displayName", "$top": 100}
    ):
        if folder.get("id") == name or (folder.get("displayName") or "").lower() == wanted:
            return folder["id"]
    raise UserError(server.env._("The Outlook folder “%s” does not exist.", name))


def _prune_recent(recent, latest):
    """Keep the ids a resync round could repeat: received close to the newest import."""
    floor = fields.Datetime.to_string(latest - RECENT_IDS_WINDOW) if latest else ""
    kept = sorted(
        ((received, graph_id) for graph_id, received in recent.items() if received >= floor),
        reverse=True,
    )[:RECENT_IDS_KEPT]
    return {graph_id: received for received, graph_id in kept}

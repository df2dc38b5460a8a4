"""A cursor of its own for the rows that must be committed apart from the caller's work.

The sealed tokens, the sending ledger and the hand-over marks are written on such a cursor
and committed at once: a rotated refresh token, a budget spent or a mail handed to Microsoft
must survive a rollback of the caller. The caller's own transaction never writes those rows,
so the two never meet on one row (docs/architecture.md, "Who writes which row").
"""

import contextlib

from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED

from odoo.orm.environments import Transaction
from odoo.sql_db import Cursor


@contextlib.contextmanager
def committed_cursor(env, readonly=False):
    """An environment like env on a new cursor, committed when the block ends without error.

    readonly: for a read made while the caller's own cursor is read-only (Odoo serves reads
    on such cursors, and in tests refuses a read/write cursor opened from one).

    The transaction reads what is committed at every statement (READ COMMITTED): after
    waiting for a lock, it sees what the previous holder wrote, where Odoo's REPEATABLE
    READ would keep the snapshot taken before the wait. Under Odoo's test cursor the
    block shares the test's transaction instead.
    """
    with env.registry.cursor(readonly=readonly) as cr:
        if isinstance(cr, Cursor):
            cr.connection.set_isolation_level(ISOLATION_LEVEL_READ_COMMITTED)
        if cr.transaction is None:
            # This registry, without looking it up again (a lookup waits for the lock that
            # a registry being loaded or tested holds).
            cr.transaction = Transaction(env.registry)
        yield env(cr=cr)

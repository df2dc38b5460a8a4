import contextlib

from odoo import api, fields, models

from .committed_cursor import committed_cursor


class MicrosoftOutlookGraphConnection(models.Model):
    """The Microsoft connection of one Graph mail server: who signed in, and the sealed tokens.

    Its own table, apart from the server's row: every write happens on a cursor of its own
    under this row's lock and is committed at once (a token refresh, a reconnect flag, an
    error seen by a background run). The send and fetch paths only read it, so a refresh
    committed in the middle of a queue run never meets the run's own writes of the server row.
    """

    _name = "microsoft.outlook.graph.connection"
    _description = "Microsoft Graph Connection"

    res_model = fields.Char("Server Model", required=True, readonly=True)
    res_id = fields.Many2oneReference(
        "Server", model_field="res_model", required=True, readonly=True
    )
    tokens_sealed = fields.Char("Sealed Microsoft Tokens", groups="base.group_system")
    token_expires_at = fields.Datetime("Access Token Expiry", readonly=True)
    account_oid = fields.Char("Microsoft Account Id", readonly=True)
    account_tid = fields.Char("Microsoft Tenant Id", readonly=True)
    account_name = fields.Char("Connected Account", readonly=True)
    account_address = fields.Char("Connected Account Address", readonly=True)
    scopes = fields.Char("Granted Permissions", readonly=True)
    needs_reconnect = fields.Boolean(readonly=True)
    last_error = fields.Text("Last Microsoft Error", readonly=True)
    full_access = fields.Boolean(
        readonly=True, help="The account could open the shared mailbox (Exchange's Full Access)."
    )

    _server_unique = models.Constraint(
        "UNIQUE(res_model, res_id)", "A mail server has one Microsoft connection."
    )

    @api.model
    def _of(self, servers):
        """{server id: connection} of servers (records of one model)."""
        rows = self.sudo().search(
            [("res_model", "=", servers._name), ("res_id", "in", servers.ids)]
        )
        return {row.res_id: row for row in rows}

    @api.model
    def _committed_values(self, servers, fnames):
        """{server id: {field: value}} of servers' connections, as committed right now.

        Read on a cursor of its own at READ COMMITTED: the caller's snapshot may predate a
        connection, a refresh or a reconnect flag that was committed apart from it (a
        connect and the import's first position in one request, say).
        """
        if not servers.ids:
            return {}
        with committed_cursor(self.env, readonly=self.env.cr.readonly) as env:
            rows = (
                self.with_env(env)
                .sudo()
                .search_read(
                    [("res_model", "=", servers._name), ("res_id", "in", servers.ids)],
                    ["res_id", *fnames],
                )
            )
        return {row["res_id"]: row for row in rows}

    @api.model
    @contextlib.contextmanager
    def _locked(self, server):
        """server's connection (created if missing) on a committed cursor of its own, locked.

        Concurrent refreshes of one server queue here; a reader that was not locked sees
        the row as it was before the block, and what it committed afterwards.
        """
        try:
            with committed_cursor(self.env) as env:
                cr = env.cr
                cr.execute(
                    f"INSERT INTO {self._table} "  # noqa: S608 - the model's own table
                    "(res_model, res_id, needs_reconnect, full_access, create_uid, create_date, "
                    "write_uid, write_date) VALUES (%s, %s, false, false, %s, "
                    "now() at time zone 'UTC', %s, now() at time zone 'UTC') "
                    "ON CONFLICT (res_model, res_id) DO NOTHING",
                    [server._name, server.id, env.uid, env.uid],
                )
                cr.execute(
                    f"SELECT id FROM {self._table} "  # noqa: S608 - the model's own table
                    "WHERE res_model = %s AND res_id = %s FOR NO KEY UPDATE",
                    [server._name, server.id],
                )
                connection = self.with_env(env).sudo().browse(cr.fetchone()[0])
                # What the previous holder of the lock committed, not what this cursor cached.
                connection.invalidate_recordset()
                yield connection
        finally:
            # The caller's cache of this connection (and of its servers' fields) is stale;
            # cleared once the block's cursor is closed.
            self.env.invalidate_all()

    @api.model
    def _write_committed(self, server, values):
        """Write values on server's connection at once, apart from the caller's transaction."""
        with self._locked(server) as connection:
            connection.write(values)

    @api.autovacuum
    def _gc_orphans(self):
        """Connections of servers deleted without going through the ORM."""
        for res_model in ("ir.mail_server", "fetchmail.server"):
            rows = self.sudo().search([("res_model", "=", res_model)])
            existing = set(
                self.env[res_model]
                .sudo()
                .with_context(active_test=False)
                .browse(rows.mapped("res_id"))
                .exists()
                .ids
            )
            rows.filtered(lambda row, existing=existing: row.res_id not in existing).unlink()

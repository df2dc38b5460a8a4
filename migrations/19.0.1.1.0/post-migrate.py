"""19.0.1.1.0: the Microsoft connection moves from the server rows to its own table.

The old columns stay in the database (Odoo drops no column of a removed field); their
sealed tokens are copied once and then cleared, so no token is left where nothing reads it.
"""

COLUMNS = (
    "microsoft_graph_tokens_sealed",
    "microsoft_graph_token_expires_at",
    "microsoft_graph_account_oid",
    "microsoft_graph_account_tid",
    "microsoft_graph_account_name",
    "microsoft_graph_account_address",
    "microsoft_graph_scopes",
    "microsoft_graph_needs_reconnect",
    "microsoft_graph_last_error",
)


def migrate(cr, version):
    if not version:
        return
    for table, model in (
        ("ir_mail_server", "ir.mail_server"),
        ("fetchmail_server", "fetchmail.server"),
    ):
        cr.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = %s AND column_name = ANY(%s)",
            [table, list(COLUMNS)],
        )
        if cr.fetchone()[0] != len(COLUMNS):
            continue
        cr.execute(
            f"""
            INSERT INTO microsoft_outlook_graph_connection
                   (res_model, res_id, tokens_sealed, token_expires_at, account_oid,
                    account_tid, account_name, account_address, scopes, needs_reconnect,
                    last_error, create_uid, create_date, write_uid, write_date)
            SELECT %s, id, microsoft_graph_tokens_sealed, microsoft_graph_token_expires_at,
                   microsoft_graph_account_oid, microsoft_graph_account_tid,
                   microsoft_graph_account_name, microsoft_graph_account_address,
                   microsoft_graph_scopes, COALESCE(microsoft_graph_needs_reconnect, false),
                   microsoft_graph_last_error, 1, now() at time zone 'UTC', 1,
                   now() at time zone 'UTC'
              FROM {table}
             WHERE microsoft_graph_tokens_sealed IS NOT NULL
                OR microsoft_graph_account_oid IS NOT NULL
            ON CONFLICT (res_model, res_id) DO NOTHING
            """,  # noqa: S608 - fixed table names
            [model],
        )
        cr.execute(f"UPDATE {table} SET microsoft_graph_tokens_sealed = NULL")  # noqa: S608

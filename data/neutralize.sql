-- A staging copy must never read or send production mail through Microsoft Graph:
-- Odoo's own neutralization archives the servers; this also forgets their Microsoft
-- connection, so re-activating one cannot use production mailboxes.
UPDATE ir_mail_server
   SET microsoft_graph_paused_until = NULL,
       active = false
 WHERE smtp_authentication = 'microsoft_graph';

UPDATE fetchmail_server
   SET active = false
 WHERE server_type = 'microsoft_graph';

DELETE FROM microsoft_outlook_graph_connection;

DELETE FROM microsoft_outlook_graph_flow;

DELETE FROM microsoft_outlook_graph_subscription;

-- The Azure app's certificates (their sealed private keys) and the choice to sign in with
-- them: a staging copy must not prove itself as the production app.
DELETE FROM ir_config_parameter
 WHERE key IN ('microsoft_outlook_graph.certificates', 'microsoft_outlook_graph.app_credential');

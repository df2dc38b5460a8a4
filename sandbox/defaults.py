"""The standard tenant of the test suites, as constants other tests reuse."""

TENANT_DOMAIN = "contoso.test"
TENANT_ID = "5d2f3c1a-8b7e-4f2a-9c61-0e4b7a9d3f10"
CLIENT_ID = "11111111-1111-1111-1111-111111111111"
CLIENT_SECRET = "s3cret-SBXSECRET-client"
REDIRECT_URI = "https://odoo.test/microsoft_outlook/confirm"
APP_NAME = "Odoo (sandbox)"
ADMIN = "admin@contoso.test"
ADMIN_NAME = "Contoso Admin"
ALICE = "alice@contoso.test"
ALICE_NAME = "Alice Martin"
SALES = "sales@contoso.test"
SALES_NAME = "Contoso Sales"


def install(sb):
    """Create the standard tenant, app, users and shared mailbox in a (reset) sandbox."""
    tenant = sb.add_tenant(TENANT_DOMAIN, TENANT_ID)
    sb.add_app(tenant, CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI], display_name=APP_NAME)
    sb.add_user(tenant, ADMIN, ADMIN_NAME)
    sb.add_user(tenant, ALICE, ALICE_NAME)
    sb.add_shared_mailbox(tenant, SALES, SALES_NAME)
    sb.grant(SALES, ADMIN, "FullAccess")
    sb.grant(SALES, ADMIN, "SendAs")
    return tenant

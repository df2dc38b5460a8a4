"""Tenants, app registrations, users, mailboxes, folders and mailbox permissions."""

import base64
import uuid
from dataclasses import dataclass, field

from .messages import Message, conversation_id, header_ids

WELL_KNOWN_FOLDERS = (
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("junkemail", "Junk Email"),
    ("archive", "Archive"),
    ("outbox", "Outbox"),
)
ROOT_FOLDER = "msgfolderroot"
RIGHTS = ("FullAccess", "SendAs", "SendOnBehalf")
# Tenant aliases an authority may use instead of a tenant id or domain.
MULTI_TENANT_ALIASES = ("common", "organizations")
# Personal Microsoft accounts (Outlook.com, Hotmail) live in this tenant and sign in through
# the "consumers" (or "common") authority ("ID token claims reference", tid;
# https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference).
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
CONSUMERS = "consumers"


@dataclass(eq=False)
class Tenant:
    id: str
    domain: str

    @property
    def consumer(self):
        return self.id == CONSUMER_TENANT_ID


@dataclass(eq=False)
class App:
    client_id: str
    client_secret: str | None
    redirect_uris: list
    tenant: Tenant
    secret_expires_at: float | None = None
    multi_tenant: bool = False
    # Supported account types include personal Microsoft accounts (signInAudience
    # AzureADandPersonalMicrosoftAccount): the consumers authority accepts the app.
    personal_accounts: bool = False
    display_name: str = "Sandbox app"
    # Graph scopes configured on the registration (used by ".default"); None: any known scope.
    permissions: frozenset | None = None
    # Certificates & secrets > Certificates: app_certificates.KeyCredential objects.
    certificates: list = field(default_factory=list)

    @property
    def public_client(self):
        """No credential at all: a public client (it may not present one)."""
        return self.client_secret is None and not self.certificates


@dataclass(eq=False)
class Folder:
    id: str
    well_known: str | None
    display_name: str
    parent_id: str | None
    messages: dict = field(default_factory=dict)


@dataclass(eq=False)
class Mailbox:
    id: str
    address: str
    display_name: str
    tenant: Tenant
    kind: str  # "user" or "shared"
    folders: dict = field(default_factory=dict)
    # user id -> set of rights on this mailbox
    grants: dict = field(default_factory=dict)

    def folder(self, key):
        """A folder by id or well-known name (case-insensitive), or None."""
        if key in self.folders:
            return self.folders[key]
        lowered = str(key).lower()
        for folder in self.folders.values():
            if folder.well_known == lowered:
                return folder
        return None

    def find_message(self, message_id):
        for folder in self.folders.values():
            if message_id in folder.messages:
                return folder.messages[message_id]
        return None

    def all_messages(self):
        return [m for folder in self.folders.values() for m in folder.messages.values()]

    def rights_of(self, user):
        return self.grants.get(user.id, set())


@dataclass(eq=False)
class User:
    id: str
    address: str
    display_name: str
    tenant: Tenant
    mailbox: Mailbox = field(default=None, repr=False)
    # Bumped by revoke(); tokens issued under an older generation are revoked.
    generation: int = 0
    revoked_at: float | None = None
    mfa_code: int | None = None


class Directory:
    """All directory objects of the sandbox; callers hold the sandbox lock."""

    def __init__(self, rng, clock):
        self.rng = rng
        self.clock = clock
        self.tenants = []
        self.apps = {}
        self.users = {}  # id -> User
        self.mailboxes = {}  # id -> Mailbox
        self.signed_in = None
        self.delivered = 0
        # Sending (graph_send): every mail that left, and the open upload sessions by id.
        self.outbox = []
        self.upload_sessions = {}
        # Delta queries (graph_sync): token -> state, and a token's lifetime (None: no expiry).
        self.delta_tokens = {}
        self.delta_token_lifetime = None

    # ids -------------------------------------------------------------------------------

    def new_guid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_item_id(self, kind, mailbox_id):
        """An Exchange-like id: base64 of a kind byte, the mailbox guid and random bytes."""
        raw = bytes([0, 0, 0, kind]) + uuid.UUID(mailbox_id).bytes + self.rng.randbytes(14)
        return "AAMkAG" + base64.urlsafe_b64encode(raw).decode()

    # lookups ---------------------------------------------------------------------------

    def tenant(self, key):
        """A tenant by Tenant, id or domain (case-insensitive), or None."""
        if isinstance(key, Tenant):
            return key
        lowered = str(key).lower()
        for tenant in self.tenants:
            if tenant.id == lowered or tenant.domain.lower() == lowered:
                return tenant
        return None

    def require_tenant(self, key):
        tenant = self.tenant(key)
        if tenant is None:
            raise KeyError(f"unknown tenant {key!r}")
        return tenant

    def mailbox(self, key, tenant=None):
        """A mailbox (of a user or shared) by id or address, optionally within one tenant."""
        lowered = str(key).lower()
        for mailbox in self.mailboxes.values():
            named = lowered in (mailbox.id, mailbox.address.lower())
            if named and (tenant is None or mailbox.tenant is tenant):
                return mailbox
        return None

    def require_mailbox(self, key):
        mailbox = self.mailbox(key)
        if mailbox is None:
            raise KeyError(f"unknown mailbox {key!r}")
        return mailbox

    def user(self, key, tenant=None):
        """A user (never a shared mailbox) by id or address."""
        mailbox = self.mailbox(key, tenant)
        if mailbox is None or mailbox.kind != "user":
            return None
        return self.users[mailbox.id]

    def require_user(self, key):
        user = self.user(key)
        if user is None:
            raise KeyError(f"unknown user {key!r}")
        return user

    def tenant_users(self, tenant):
        return [u for u in self.users.values() if u.tenant is tenant]

    # creation --------------------------------------------------------------------------

    def add_tenant(self, domain, tenant_id=None):
        if self.tenant(domain) is not None:
            raise ValueError(f"tenant {domain!r} exists")
        tenant = Tenant(id=(tenant_id or self.new_guid()).lower(), domain=domain)
        self.tenants.append(tenant)
        return tenant

    def add_app(self, tenant, client_id, client_secret, redirect_uris, **options):
        app = App(
            client_id=client_id.lower(),
            client_secret=client_secret,
            redirect_uris=list(redirect_uris),
            tenant=self.require_tenant(tenant),
            **options,
        )
        if app.permissions is not None:
            app.permissions = frozenset(app.permissions)
        self.apps[app.client_id] = app
        return app

    def _add_mailbox(self, tenant, address, display_name, kind, mailbox_id=None):
        if self.mailbox(address) is not None:
            raise ValueError(f"address {address!r} exists")
        mailbox = Mailbox(
            id=(mailbox_id or self.new_guid()).lower(),
            address=address,
            display_name=display_name,
            tenant=self.require_tenant(tenant),
            kind=kind,
        )
        root = Folder(
            self.new_item_id(1, mailbox.id), ROOT_FOLDER, "Top of Information Store", None
        )
        mailbox.folders[root.id] = root
        for name, label in WELL_KNOWN_FOLDERS:
            folder = Folder(self.new_item_id(1, mailbox.id), name, label, root.id)
            mailbox.folders[folder.id] = folder
        self.mailboxes[mailbox.id] = mailbox
        return mailbox

    def consumer_tenant(self):
        """The tenant of personal Microsoft accounts, made on first use."""
        return self.tenant(CONSUMER_TENANT_ID) or self.add_tenant(CONSUMERS, CONSUMER_TENANT_ID)

    def add_user(self, tenant, address, display_name, user_id=None):
        mailbox = self._add_mailbox(tenant, address, display_name, "user", user_id)
        user = User(mailbox.id, address, display_name, mailbox.tenant, mailbox)
        self.users[user.id] = user
        return user

    def add_shared_mailbox(self, tenant, address, display_name, mailbox_id=None):
        return self._add_mailbox(tenant, address, display_name, "shared", mailbox_id)

    def grant(self, mailbox_address, user_address, right):
        if right not in RIGHTS:
            raise ValueError(f"right must be one of {RIGHTS}")
        mailbox = self.require_mailbox(mailbox_address)
        user = self.require_user(user_address)
        mailbox.grants.setdefault(user.id, set()).add(right)

    def deliver(self, mailbox_address, raw_mime, folder="inbox", received=None):
        mailbox = self.require_mailbox(mailbox_address)
        target = mailbox.folder(folder)
        if target is None:
            raise KeyError(f"unknown folder {folder!r}")
        raw = raw_mime.encode("utf-8") if isinstance(raw_mime, str) else bytes(raw_mime)
        own_id, root = header_ids(raw)
        if not own_id:
            own_id = f"<{self.rng.getrandbits(64):016x}@{mailbox.address.split('@')[-1]}>"
            root = root or own_id
        message = Message(
            id=self.new_item_id(2, mailbox.id),
            mailbox=mailbox,
            folder=target,
            raw=raw,
            received=received,
            internet_message_id=own_id,
            conversation_id=conversation_id(mailbox.id, root),
            change_key=base64.b64encode(self.rng.randbytes(12)).decode(),
            seq=self.delivered,
        )
        self.delivered += 1
        target.messages[message.id] = message
        return message

"""The Sandbox object: the public Python API over the directory, tokens, limits and faults."""

import datetime
import json
import random
import threading
import time
from datetime import UTC

from . import (
    app_certificates,
    entra,
    exchange_limits,
    graph_mail,
    graph_send,
    graph_subscriptions,
    graph_sync,
    graph_users,
)
from .directory import Directory
from .faults import FaultInjector
from .header_firewall import strip_organization_headers
from .limits import Limits
from .messages import parse_moment
from .server import HttpsServer, Pipeline
from .signin import sign_in
from .tokens import TokenStore, parse_scopes
from .web import Router

# Adding an endpoint family = one module with register(router, sandbox) listed here.
HANDLER_MODULES = (
    entra,
    graph_users,
    graph_send,
    graph_mail,
    graph_sync,
    graph_subscriptions,
)


class Clock:
    """Wall time plus an offset tests move forward with Sandbox.advance().

    A test that must not depend on how fast the machine runs calls freeze(): the clock then
    stands still at one moment and only advance() moves it. reset() lets it run again.
    """

    def __init__(self):
        self.offset = 0.0
        self.frozen_at = None

    def freeze(self, at=None):
        """Stop the clock at epoch seconds at (default: its current whole second)."""
        if isinstance(at, datetime.datetime):
            at = at.replace(tzinfo=at.tzinfo or UTC).timestamp()
        self.frozen_at = float(int(self.now())) if at is None else float(at)
        self.offset = 0.0
        return self

    def unfreeze(self):
        self.frozen_at = None
        self.offset = 0.0

    @property
    def frozen(self):
        return self.frozen_at is not None

    def now(self):
        base = time.time() if self.frozen_at is None else self.frozen_at
        return base + self.offset

    def datetime(self):
        return datetime.datetime.fromtimestamp(self.now(), UTC)


class Sandbox:
    """A local Microsoft 365 (Entra ID v2.0 + Graph mail) over HTTPS on 127.0.0.1."""

    def __init__(self, seed=0, host="127.0.0.1", port=0):
        self.seed = seed
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.limits = Limits(self.clock)
        self.faults = FaultInjector(self.rng)
        self.stopping = threading.Event()
        # Graph's change notifications: the thread that POSTs them (graph_subscriptions
        # starts it on demand) and a live view of every attempt since the last reset.
        self.notifications_worker = None
        self.notification_log = graph_subscriptions.NotificationLog(self)
        # Client assertion ids already redeemed, for Entra's replay check (jti).
        self.seen_assertion_ids = {}
        self.router = Router()
        for module in HANDLER_MODULES:
            module.register(self.router, self)
        self._server = None
        self.base_url = None
        self.ca_file = None
        self._clear()

    def _clear(self):
        # Requests still held (timeout faults) when a test resets belong to the old state.
        self.epoch = getattr(self, "epoch", 0) + 1
        self.rng.seed(self.seed)
        self.clock.unfreeze()
        self.directory = Directory(self.rng, self.clock)
        self.tokens = TokenStore()
        self.faults.clear()
        self.limits.reset()
        self.log = []
        # Tracebacks of handler bugs (answered 500), for tests to assert on.
        self.server_errors = []
        self.access_token_lifetime = 3600
        # Continuous access evaluation: a revoked user's access tokens fail at once.
        self.cae = True

    # life cycle ------------------------------------------------------------------------

    def start(self):
        self.stopping.clear()
        self._server = HttpsServer(self.host, self.port, Pipeline(self))
        self._server.start()
        self.port = self._server.port
        self.base_url = f"https://{self.host}:{self.port}"
        self.ca_file = self._server.ca_file
        return self

    def stop(self):
        self.stopping.set()
        self.faults.release_all()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self):
        """Forget every tenant, token, fault, limit setting and log entry; keep the server."""
        with self.lock:
            self._clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def write_ca(self, path):
        self._server.write_ca(path)

    @property
    def graph_url(self):
        return f"{self.base_url}/v1.0"

    def authority(self, tenant="organizations"):
        return f"{self.base_url}/{getattr(tenant, 'id', tenant)}"

    # directory -------------------------------------------------------------------------

    def add_tenant(self, domain="contoso.test", tenant_id=None):
        with self.lock:
            return self.directory.add_tenant(domain, tenant_id)

    def add_app(
        self, tenant, client_id, client_secret, redirect_uris, secret_expires_at=None, **options
    ):
        """Register an app. options: multi_tenant, display_name, permissions (Graph scopes).

        secret_expires_at: epoch seconds or a datetime (sandbox clock).
        """
        if isinstance(secret_expires_at, datetime.datetime):
            secret_expires_at = secret_expires_at.timestamp()
        with self.lock:
            return self.directory.add_app(
                tenant,
                client_id,
                client_secret,
                redirect_uris,
                secret_expires_at=secret_expires_at,
                **options,
            )

    def add_user(self, tenant, address, display_name, user_id=None):
        with self.lock:
            return self.directory.add_user(tenant, address, display_name, user_id)

    def add_shared_mailbox(self, tenant, address, display_name, mailbox_id=None):
        with self.lock:
            return self.directory.add_shared_mailbox(tenant, address, display_name, mailbox_id)

    def grant(self, mailbox_address, user_address, right):
        with self.lock:
            self.directory.grant(mailbox_address, user_address, right)

    def user(self, address):
        with self.lock:
            return self.directory.require_user(address)

    def mailbox(self, address):
        with self.lock:
            return self.directory.require_mailbox(address)

    def deliver(self, mailbox_address, raw_mime, folder="inbox", received=None):
        """Put a message into a folder as if it had arrived from outside the organization
        (Exchange's header firewall applied); returns its Graph id."""
        raw = raw_mime.encode("utf-8") if isinstance(raw_mime, str) else bytes(raw_mime)
        with self.lock:
            moment = parse_moment(received) if received is not None else self.clock.datetime()
            return self.directory.deliver(
                mailbox_address, strip_organization_headers(raw), folder, moment
            ).id

    def messages(self, mailbox_address, folder="inbox"):
        """The messages of a folder, oldest delivery first."""
        exchange_limits.release_due(self)
        with self.lock:
            target = self.directory.require_mailbox(mailbox_address).folder(folder)
            if target is None:
                raise KeyError(f"unknown folder {folder!r}")
            return sorted(target.messages.values(), key=lambda m: (m.received, m.seq))

    def set_signed_in(self, user_address):
        """Who the consent page signs in as (None: login_hint, else the tenant's first user)."""
        with self.lock:
            if user_address is not None:
                self.directory.require_user(user_address)
            self.directory.signed_in = user_address

    # tokens and sign-in events ---------------------------------------------------------

    def revoke(self, user_address):
        """Password change: every refresh and access token of the user stops working."""
        with self.lock:
            user = self.directory.require_user(user_address)
            user.generation += 1
            user.revoked_at = self.clock.now()

    def expire_refresh_tokens(self, user_address):
        """Refresh tokens of the user expire as after 90 days without use (AADSTS700082)."""
        with self.lock:
            user = self.directory.require_user(user_address)
            for token in self.tokens.refresh.values():
                if token.user is user:
                    token.expired = True

    def expire_access_tokens(self, user_address):
        with self.lock:
            user = self.directory.require_user(user_address)
            now = self.clock.now()
            for token in self.tokens.access.values():
                if token.user is user:
                    token.expires_at = min(token.expires_at, now)

    def require_mfa(self, user_address, code=50076):
        """Conditional access: MFA (50076) or MFA registration (50079); code=None lifts it.

        Tokens and codes obtained without MFA then fail (refresh: invalid_grant with
        suberror basic_action; code redemption: interaction_required); a new sign-in on
        the consent page counts as done with MFA.
        """
        with self.lock:
            self.directory.require_user(user_address).mfa_code = code

    def issue_token(self, user_address, scopes, client_id=None, refresh=True):
        """Tokens as if the user had consented and signed in: a shortcut for tests of Graph.

        Returns a token answer like the token endpoint's (access_token, refresh_token, ...).
        client_id defaults to the first registered app. As in Entra, consent accumulates: the
        token carries every scope the user ever granted to the app, not only these.
        """
        with self.lock:
            user = self.directory.require_user(user_address)
            app = (
                self.directory.apps[client_id.lower()]
                if client_id
                else next(iter(self.directory.apps.values()))
            )
            requested = parse_scopes(" ".join(scopes))
            if requested.unknown:
                raise ValueError(f"unknown scopes {requested.unknown}")
            self.tokens.consent(user, app, requested.graph)
            granted = self.tokens.consented(user, app)
            now = self.clock.now()
            lifetime = self.access_token_lifetime
            access = self.tokens.access_token(app, user, granted, now, lifetime, self.base_url)
            answer = {
                "token_type": "Bearer",
                "scope": requested.render(granted),
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access.value,
            }
            if refresh:
                answer["refresh_token"] = self.tokens.refresh_token(
                    app, user, now, user.mfa_code is not None
                ).value
            return answer

    def issued_secrets(self):
        with self.lock:
            return set(self.tokens.issued)

    def advance(self, seconds):
        """Move the sandbox clock forward (token and code expiry, limit windows)."""
        with self.lock:
            self.clock.offset += seconds
        # Mail the message rate held back reaches sandbox inboxes once its time has come.
        exchange_limits.release_due(self)

    def sign_in(self, auth_uri, accept=True, login=None):
        """Play the user on the consent page; see signin.SignInResult."""
        return sign_in(self.ca_file, auth_uri, accept=accept, login=login)

    def add_personal_account(self, address, display_name):
        """A personal Microsoft account (Outlook.com) in the consumer tenant."""
        return entra.add_personal_account(self, address, display_name)

    # app credentials (Certificates & secrets) ------------------------------------------

    def add_app_certificate(self, client_id, certificate, start=None, end=None, display_name=""):
        """Upload a certificate (PEM text or DER bytes) to an app; see app_certificates."""
        return app_certificates.add_app_certificate(
            self, client_id, certificate, start=start, end=end, display_name=display_name
        )

    def remove_app_certificate(self, client_id, thumbprint):
        """Delete an app's certificate by SHA-1 thumbprint; True if it was there."""
        return app_certificates.remove_app_certificate(self, client_id, thumbprint)

    def app_certificates(self, client_id):
        """The app's certificates (app_certificates.KeyCredential)."""
        return app_certificates.app_certificates(self, client_id)

    def remove_client_secret(self, client_id):
        """The app then signs in with a certificate or not at all."""
        app_certificates.remove_client_secret(self, client_id)

    # sending and Exchange's limits -----------------------------------------------------

    def sent(self, mailbox_address):
        """The Sent Items copies of a mailbox, oldest first."""
        return graph_send.sent(self, mailbox_address)

    def outbox(self):
        """Every mail Exchange took to deliver, in order (graph_send.Delivery)."""
        return graph_send.outbox(self)

    def sending_limits(self, mailbox):
        """The sending limit settings that apply to a mailbox, time_scale resolved."""
        return exchange_limits.effective(self, mailbox)

    def recipients_used(self, mailbox):
        """Recipients the mailbox sent in the current rolling day (sandbox clock)."""
        return exchange_limits.recipients_used(self, mailbox)

    def release_deliveries(self):
        """Deliver every mail the message rate held back whose time has come; how many."""
        return exchange_limits.release_due(self)

    def configure_tenant_limit(self, tenant, **settings):
        """The tenant's external recipient rate; see exchange_limits.TENANT_DEFAULTS."""
        return exchange_limits.configure_tenant(self, tenant, **settings)

    def tenant_limit(self, tenant):
        """The tenant's limit settings, formula and accepted domains resolved."""
        return exchange_limits.tenant_effective(self, tenant)

    def tenant_external_used(self, tenant):
        """External recipients of the whole tenant in the current sliding day."""
        return exchange_limits.tenant_external_used(self, tenant)

    # delta tokens and change notifications ---------------------------------------------

    def expire_delta_tokens(self, mailbox_address):
        """Every delta token issued so far for the mailbox answers 410 syncStateNotFound."""
        graph_sync.expire_delta_tokens(self, mailbox_address)

    def set_delta_token_lifetime(self, seconds):
        """Delta tokens older than this (sandbox clock) answer 410; None: never."""
        graph_sync.set_delta_token_lifetime(self, seconds)

    def subscriptions(self):
        """The live subscriptions (expired and removed ones are gone)."""
        return graph_subscriptions.subscriptions(self)

    def configure_notifications(self, **settings):
        """See graph_subscriptions.DEFAULTS (allow_http_notifications, timeouts, ...)."""
        graph_subscriptions.configure_notifications(self, **settings)

    def pause_notifications(self):
        """Changes are still noticed and queued, but nothing is POSTed."""
        graph_subscriptions.set_paused(self, True)

    def resume_notifications(self):
        graph_subscriptions.set_paused(self, False)

    def lifecycle(self, subscription_id, event):
        """Send a lifecycle event as Graph does on its own; see graph_subscriptions."""
        return graph_subscriptions.lifecycle(self, subscription_id, event)

    def flush_notifications(self, timeout=60.0):
        """Wait until every queued notification was POSTed; False at the timeout."""
        return graph_subscriptions.flush_notifications(self, timeout=timeout)

    # limits, faults, log ---------------------------------------------------------------

    def configure_limits(self, **settings):
        """See limits.DEFAULTS for the names (request_budget, time_scale, ...)."""
        self.limits.configure(**settings)

    def configure_sending_limits(self, mailbox=None, **settings):
        """Exchange Online's sending limits, for every mailbox or (mailbox=address) one.

        See exchange_limits.DEFAULTS: recipients_per_day, recipients_per_message,
        messages_per_minute (None: no limit), refusal ("ndr" | "error"), error_status,
        time_scale (None: the one of configure_limits).
        """
        exchange_limits.configure(self, mailbox, **settings)

    def account_upload(self, app_id, mailbox_address, size):
        """Count uploaded bytes against the 150 MB / 5 min budget; seconds to wait or None."""
        with self.lock:
            mailbox = self.directory.require_mailbox(mailbox_address)
        return self.limits.account_upload(app_id, mailbox.id, size)

    def inject_fault(
        self,
        kind,
        path=None,
        method=None,
        mailbox=None,
        times=1,
        status=503,
        retry_after=None,
        probability=None,
        seconds=5.0,
        code=None,
        body=None,
    ):
        """Make matching requests fail; see faults.py. times=None: every match."""
        return self.faults.add(
            kind,
            path=path,
            method=method,
            mailbox=mailbox,
            times=times,
            status=status,
            retry_after=retry_after,
            probability=probability,
            seconds=seconds,
            code=code,
            body=body,
        )

    def remove_fault(self, fault):
        self.faults.remove(fault)

    def clear_faults(self):
        self.faults.clear()

    @property
    def requests(self):
        with self.lock:
            return list(self.log)

    def clear_log(self):
        with self.lock:
            self.log.clear()

    # fixtures --------------------------------------------------------------------------

    def load_fixture(self, path_or_dict):
        """Load tenants with apps, users, shared mailboxes, grants and messages (JSON)."""
        data = path_or_dict
        if not isinstance(data, dict):
            with open(data, encoding="utf-8") as handle:
                data = json.load(handle)
        with self.lock:
            for spec in data.get("tenants", []):
                self._load_tenant(spec)

    def _load_tenant(self, spec):
        tenant = self.add_tenant(spec["domain"], spec.get("id"))
        for app in spec.get("apps", []):
            options = {
                k: app[k] for k in ("multi_tenant", "display_name", "permissions") if k in app
            }
            expires = app.get("secret_expires_at")
            self.add_app(
                tenant,
                app["client_id"],
                app.get("client_secret"),
                app.get("redirect_uris", []),
                secret_expires_at=parse_moment(expires).timestamp() if expires else None,
                **options,
            )
        boxes = [(u, self.add_user) for u in spec.get("users", [])]
        boxes += [(m, self.add_shared_mailbox) for m in spec.get("shared_mailboxes", [])]
        for box, add in boxes:
            add(tenant, box["address"], box.get("display_name", box["address"]), box.get("id"))
        for box, _ in boxes:
            for message in box.get("messages", []):
                self.deliver(
                    box["address"],
                    message["mime"],
                    message.get("folder", "inbox"),
                    message.get("received"),
                )
        for grant in spec.get("grants", []):
            for right in grant["rights"]:
                self.grant(grant["mailbox"], grant["user"], right)

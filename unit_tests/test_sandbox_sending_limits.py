"""The sandbox's Exchange Online sending limits: recipient rate (both refusal forms), recipients
per message, message rate (a delay), per-mailbox overrides and the time scale."""

import base64
import email
import email.policy

import pytest

from sandbox import defaults
from sandbox.defaults import ADMIN, ALICE, SALES
from sandbox.exchange_limits import DAY, MINUTE
from services import sending_limits
from services.endpoints import Endpoints
from services.errors import GraphTransientError
from services.graph import GraphClient
from services.send import GraphSender
from services.sending_limits import is_quota_refusal, parse_quota_ndr

# Window edges a second apart: the sandbox clock moves only when a test moves it.
pytestmark = pytest.mark.usefixtures("frozen_clock")

SEND = ("Mail.Send", "Mail.ReadWrite", "User.Read", "Mail.Send.Shared", "Mail.ReadWrite.Shared")
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def mime(message_id, to=("bob@example.test",), cc=(), bcc=(), sender=ADMIN, subject="Hi"):
    lines = [f"Message-ID: {message_id}", f"From: <{sender}>", f"Subject: {subject}"]
    for name, addresses in (("To", to), ("Cc", cc), ("Bcc", bcc)):
        if addresses:
            lines.append(f"{name}: {', '.join(addresses)}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(lines) + "\r\n\r\nBody.\r\n").encode()


def people(count, domain="example.test"):
    return [f"r{n}@{domain}" for n in range(count)]


@pytest.fixture
def graph(sandbox, graph_session):
    def call(method, path, login=ADMIN, **kwargs):
        # A new token each time: tests move the clock by days.
        token = sandbox.issue_token(login, SEND, refresh=False)["access_token"]
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return graph_session.request(method, sandbox.graph_url + path, headers=headers, **kwargs)

    return call


@pytest.fixture
def send(graph):
    """send(raw, login=ADMIN, path="/me/sendMail") through sendMail's MIME form."""

    def post(raw, login=ADMIN, path="/me/sendMail"):
        headers = {"Content-Type": "text/plain"}
        return graph("POST", path, login=login, data=base64.b64encode(raw), headers=headers)

    return post


def assert_quota_error(answer, status=403):
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == "ErrorSubmissionQuotaExceeded"
    assert "STOREDRV.Submission.Exception:SubmissionQuotaExceededException" in error["message"]
    assert "Retry-After" not in answer.headers
    assert is_quota_refusal(answer.json())


def left(sandbox):
    return [d.internet_message_id for d in sandbox.outbox()]


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


# recipient rate ---------------------------------------------------------------------------------


def test_recipient_rate_error_form_counts_to_cc_bcc_and_refuses_until_the_window_rolls(
    sandbox, send
):
    sandbox.configure_sending_limits(recipients_per_day=5, refusal="error")
    raw = mime("<a@x>", to=["b@example.test"], cc=["c@example.test"], bcc=["d@example.test"])
    assert send(raw).status_code == 202
    assert sandbox.recipients_used(ADMIN) == 3
    # 3 + 3 > 5: refused as a whole, nothing kept, nothing counted.
    assert_quota_error(send(mime("<b@x>", to=people(3))))
    assert left(sandbox) == ["<a@x>"] and len(sandbox.sent(ADMIN)) == 1
    assert sandbox.recipients_used(ADMIN) == 3
    # Ten minutes later, 3 + 2 = 5 fits exactly; then even one more does not.
    sandbox.advance(600)
    assert send(mime("<c@x>", to=people(2))).status_code == 202
    assert_quota_error(send(mime("<d@x>")))
    # One second before the first message's day ends it still counts; at the end it is gone.
    sandbox.advance(DAY - 600 - 1)
    assert_quota_error(send(mime("<e@x>")))
    sandbox.advance(1.5)
    assert sandbox.recipients_used(ADMIN) == 2
    assert send(mime("<f@x>", to=people(3))).status_code == 202
    assert left(sandbox) == ["<a@x>", "<c@x>", "<f@x>"]


def test_the_same_address_counts_again_in_every_message_but_once_within_one(sandbox, send):
    sandbox.configure_sending_limits(recipients_per_day=3, refusal="error")
    twice = mime("<a@x>", to=["bob@example.test"], cc=["Bob <BOB@example.test>"])
    assert send(twice).status_code == 202
    assert sandbox.recipients_used(ADMIN) == 1
    assert send(mime("<b@x>", to=["bob@example.test"])).status_code == 202
    assert send(mime("<c@x>", to=["bob@example.test"])).status_code == 202
    assert_quota_error(send(mime("<d@x>", to=["bob@example.test"])))


def test_recipient_rate_error_status_can_be_400_and_applies_to_drafts_sent(sandbox, graph, send):
    sandbox.configure_sending_limits(recipients_per_day=1, refusal="error", error_status=400)
    assert send(mime("<a@x>")).status_code == 202
    draft = graph(
        "POST",
        "/me/messages",
        data=base64.b64encode(mime("<b@x>")),
        headers={"Content-Type": "text/plain", **IMMUTABLE},
    ).json()
    assert_quota_error(graph("POST", f"/me/messages/{draft['id']}/send"), status=400)
    # The draft stays a draft, as on any refusal of /send.
    assert [m.id for m in sandbox.messages(ADMIN, "drafts")] == [draft["id"]]
    assert left(sandbox) == ["<a@x>"]


def test_recipient_rate_ndr_form_accepts_then_reports_into_the_sender_inbox(sandbox, send):
    sandbox.configure_sending_limits(recipients_per_day=2)  # refusal="ndr" is the default
    assert send(mime("<a@x>", to=["bob@example.test", ALICE])).status_code == 202
    over = mime("<b@x>", to=[ALICE], bcc=["hidden@example.test"], subject="Quote 7")
    answer = send(over)
    assert answer.status_code == 202
    # Kept in Sent Items as submitted; nothing left, ALICE got only the first message.
    assert [m.internet_message_id for m in sandbox.sent(ADMIN)] == ["<a@x>", "<b@x>"]
    assert left(sandbox) == ["<a@x>"]
    assert [m.internet_message_id for m in sandbox.messages(ALICE)] == ["<a@x>"]
    assert sandbox.recipients_used(ADMIN) == 2
    (ndr,) = sandbox.messages(ADMIN)
    report = parsed(ndr.raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["Subject"] == "Undeliverable: Quote 7"
    assert report["In-Reply-To"] == "<b@x>" and report["References"] == "<b@x>"
    assert "X-MS-Exchange-Message-Is-Ndr" in report
    human, status, returned = report.iter_parts()
    assert "exceeded your sending quota" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    status_text = ndr.raw.decode()
    assert (
        "Diagnostic-Code: smtp;554 5.2.0 STOREDRV.Submission.Exception:"
        "SubmissionQuotaExceededException" in status_text
    )
    assert "Final-Recipient: rfc822;hidden@example.test" in status_text
    assert "Status: 5.2.0" in status_text
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <b@x>" in returned.get_content()
    # The transmitted form is returned: no Bcc header.
    assert "Bcc" not in returned.get_content()
    assert parse_quota_ndr(ndr.raw) == "<b@x>"
    assert is_quota_refusal(ndr.raw)


def test_send_as_counts_against_the_signed_in_delegate_and_the_ndr_goes_where_it_was_sent_from(
    sandbox, send
):
    sandbox.configure_sending_limits(recipients_per_day=1)
    sandbox.configure_sending_limits(SALES, recipients_per_day=100)  # not the one that counts
    shared = mime("<a@x>", sender=SALES)
    assert send(shared, path=f"/users/{SALES}/sendMail").status_code == 202
    assert sandbox.recipients_used(ADMIN) == 1 and sandbox.recipients_used(SALES) == 0
    assert send(mime("<b@x>", sender=SALES), path=f"/users/{SALES}/sendMail").status_code == 202
    assert left(sandbox) == ["<a@x>"]
    (ndr,) = sandbox.messages(SALES)
    assert parse_quota_ndr(ndr.raw) == "<b@x>"
    assert sandbox.messages(ADMIN) == []


def test_overrides_per_mailbox_and_reset(sandbox, send):
    sandbox.configure_sending_limits(ALICE, recipients_per_day=1, refusal="error")
    assert sandbox.sending_limits(ALICE)["recipients_per_day"] == 1
    assert sandbox.sending_limits(ADMIN)["recipients_per_day"] == 10_000
    assert send(mime("<a@x>", sender=ALICE), login=ALICE).status_code == 202
    assert_quota_error(send(mime("<b@x>", sender=ALICE), login=ALICE))
    assert send(mime("<c@x>", to=people(400))).status_code == 202
    sandbox.reset()
    defaults.install(sandbox)
    assert sandbox.sending_limits(ALICE)["recipients_per_day"] == 10_000


def test_settings_are_checked(sandbox):
    with pytest.raises(TypeError):
        sandbox.configure_sending_limits(recipients_per_hour=5)
    with pytest.raises(ValueError):
        sandbox.configure_sending_limits(recipients_per_message=1_001)
    with pytest.raises(ValueError):
        sandbox.configure_sending_limits(refusal="bounce")
    with pytest.raises(ValueError):
        sandbox.configure_sending_limits(messages_per_minute=0)
    with pytest.raises(KeyError):
        sandbox.configure_sending_limits("nobody@contoso.test", recipients_per_day=1)


def test_default_day_is_ten_thousand_recipients(sandbox, send):
    sandbox.configure_sending_limits(refusal="error")
    for n in range(20):
        assert send(mime(f"<{n}@x>", to=people(500, f"d{n}.test"))).status_code == 202
    assert sandbox.recipients_used(ADMIN) == 10_000
    assert_quota_error(send(mime("<over@x>")))


# recipients per message -------------------------------------------------------------------------


def test_too_many_recipients_in_one_message_is_refused_at_once(sandbox, graph, send):
    answer = send(mime("<a@x>", to=people(300), cc=people(150, "c.test"), bcc=people(51, "b.test")))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "ErrorTooManyRecipients" and "500" in error["message"]
    assert not is_quota_refusal(answer.json())
    assert sandbox.outbox() == [] and sandbox.sent(ADMIN) == [] and sandbox.messages(ADMIN) == []
    assert sandbox.recipients_used(ADMIN) == 0
    # Refused whatever the recipient-rate form, and JSON sendMail too.
    body = {
        "message": {
            "subject": "x",
            "toRecipients": [{"emailAddress": {"address": a}} for a in people(501)],
        }
    }
    assert graph("POST", "/me/sendMail", json=body).status_code == 400
    assert send(mime("<b@x>", to=people(500))).status_code == 202


def test_recipients_per_message_override_up_to_a_thousand(sandbox, send):
    sandbox.configure_sending_limits(ADMIN, recipients_per_message=1_000)
    assert send(mime("<a@x>", to=people(1_000))).status_code == 202
    assert send(mime("<b@x>", to=people(1_001))).status_code == 400
    sandbox.configure_sending_limits(ALICE, recipients_per_message=2)
    answer = send(mime("<c@x>", to=people(3), sender=ALICE), login=ALICE)
    assert answer.json()["error"]["code"] == "ErrorTooManyRecipients"


# message rate -----------------------------------------------------------------------------------


def test_message_rate_carries_the_excess_over_to_later_minutes(sandbox, send):
    ids = [f"<{n}@x>" for n in range(65)]
    for message_id in ids:
        assert send(mime(message_id, to=[ALICE])).status_code == 202
    out = sandbox.outbox()
    assert [d.internet_message_id for d in out] == ids  # all accepted, none refused
    start = out[0].time
    assert all(d.delivered_at == d.time for d in out[:30])
    # Thirty a minute: the 31st to 60th leave a minute after the 1st to 30th, and so on.
    assert out[30].delivered_at == pytest.approx(out[0].time + MINUTE)
    assert all(out[n].delivered_at == out[n - 30].delivered_at + MINUTE for n in range(30, 65))
    assert out[64].delivered_at == pytest.approx(start + 2 * MINUTE, abs=1)
    # A sandbox inbox gets the mail when it leaves.
    assert len(sandbox.messages(ALICE)) == 30
    sandbox.advance(MINUTE)
    assert len(sandbox.messages(ALICE)) == 60
    sandbox.advance(MINUTE)
    inbox = sandbox.messages(ALICE)
    assert [m.internet_message_id for m in inbox] == ids
    assert inbox[64].received.timestamp() == pytest.approx(out[64].delivered_at, abs=1e-3)


def test_message_rate_override_and_recovery(sandbox, send):
    sandbox.configure_sending_limits(ADMIN, messages_per_minute=2)
    for n in range(3):
        send(mime(f"<{n}@x>"))
    out = sandbox.outbox()
    assert out[2].delivered_at == pytest.approx(out[0].delivered_at + MINUTE)
    # A minute after the last departure, nothing is held any more.
    sandbox.advance(2 * MINUTE)
    send(mime("<3@x>"))
    last = sandbox.outbox()[-1]
    assert last.delivered_at == last.time
    sandbox.configure_sending_limits(ADMIN, messages_per_minute=None)
    for n in range(4, 10):
        send(mime(f"<{n}@x>"))
    assert all(d.delivered_at == d.time for d in sandbox.outbox()[4:])


# time scale -------------------------------------------------------------------------------------


def test_time_scale_shrinks_the_minute_and_the_day(sandbox, send):
    sandbox.configure_limits(time_scale=0.01)  # a minute of 0.6 s, a day of 864 s
    sandbox.configure_sending_limits(messages_per_minute=1, recipients_per_day=3, refusal="error")
    assert send(mime("<a@x>", to=[ALICE])).status_code == 202
    assert send(mime("<b@x>", to=[ALICE])).status_code == 202
    first, second = sandbox.outbox()
    assert second.delivered_at == pytest.approx(first.delivered_at + 0.6)
    sandbox.advance(0.6)  # the held one reaches the inbox
    assert [m.internet_message_id for m in sandbox.messages(ALICE)] == ["<a@x>", "<b@x>"]
    assert send(mime("<c@x>")).status_code == 202
    assert_quota_error(send(mime("<d@x>")))
    sandbox.advance(864)
    assert send(mime("<e@x>", to=people(3))).status_code == 202
    # Its own time_scale wins over the one of configure_limits.
    sandbox.configure_sending_limits(time_scale=1.0)
    assert sandbox.sending_limits(ADMIN)["time_scale"] == 1.0
    sandbox.advance(864)
    assert_quota_error(send(mime("<f@x>")))


# what GraphSender makes of it -------------------------------------------------------------------


@pytest.fixture
def sender(sandbox):
    endpoints = Endpoints.for_cloud("custom", sandbox.base_url, sandbox.base_url, sandbox.ca_file)
    session = endpoints.session()
    token = sandbox.issue_token(ADMIN, SEND, refresh=False)["access_token"]
    client = GraphClient(
        endpoints, session, lambda force_refresh=False: token, sleep=lambda s: None
    )
    yield GraphSender(client)
    session.close()


def test_graph_sender_sees_a_transient_quota_error_or_a_success_then_an_ndr(sandbox, sender):
    sandbox.configure_sending_limits(recipients_per_day=1, refusal="error")
    sender.send(mime("<a@x>"))
    with pytest.raises(GraphTransientError) as caught:
        sender.send(mime("<b@x>"))
    assert caught.value.code == "ErrorSubmissionQuotaExceeded" and caught.value.retry_after is None
    assert is_quota_refusal(caught.value)
    assert sandbox.messages(ADMIN, "drafts") == []  # the sender cleaned its draft up
    sandbox.configure_sending_limits(refusal="ndr")
    sent = sender.send(mime("<c@x>"))
    assert sent.internet_message_id == "<c@x>"
    assert [parse_quota_ndr(m.raw) for m in sandbox.messages(ADMIN)] == ["<c@x>"]


# the tenant's external recipient rate (TERRL) ----------------------------------------------------
# Exchange Team blog, "Introducing Exchange Online Tenant Outbound Email Limits" (Feb 24 2025):
# every mailbox of a tenant together may send to 500 x licences^0.7 + 9,500 external recipients
# (trial tenants 5,000) in a sliding 24 hours; external = not an accepted domain of the tenant;
# past it, external mail is refused with an NDR until the window rolls on. Microsoft's NDR table
# ("Email non-delivery report (NDR) and SMTP errors in Exchange Online"): 5.7.233, and 5.7.232
# for a trial tenant.


def _ndrs(sandbox, address):
    return [
        parsed(m.raw)
        for m in sandbox.directory.mailbox(address).folder("inbox").messages.values()
        if "Undeliverable" in str(parsed(m.raw)["Subject"])
    ]


def test_tenant_limit_defaults_to_microsofts_formula(sandbox):
    tenant = sandbox.directory.tenant(defaults.TENANT_DOMAIN)
    settings = sandbox.tenant_limit(tenant)
    # Two user mailboxes in the standard tenant: two licences.
    assert settings["licences"] == 2
    assert settings["external_recipients_per_day"] == int(500 * 2**0.7 + 9_500)
    sandbox.configure_tenant_limit(tenant, trial=True)
    assert sandbox.tenant_limit(tenant)["external_recipients_per_day"] == 5_000
    sandbox.configure_tenant_limit(tenant, trial=False, licences=100)
    assert sandbox.tenant_limit(tenant)["external_recipients_per_day"] == 22_059


def test_tenant_limit_counts_every_mailbox_and_only_external_recipients(sandbox, send):
    tenant = defaults.TENANT_DOMAIN
    sandbox.configure_tenant_limit(tenant, external_recipients_per_day=4)
    # Internal recipients (an accepted domain) never count.
    assert send(mime("<i@x>", to=[ALICE, "someone@contoso.test", *people(2)])).status_code == 202
    assert sandbox.tenant_external_used(tenant) == 2
    assert (
        send(mime("<a@x>", to=people(2, "fabrikam.test"), sender=ALICE), login=ALICE).status_code
        == 202
    )
    assert sandbox.tenant_external_used(tenant) == 4
    # Full: admin's next external mail is refused (202, then a 5.7.233 report to admin).
    assert send(mime("<b@x>", to=["x@gmail.test"], cc=[ALICE])).status_code == 202
    assert "<b@x>" in left(sandbox)  # Alice (internal) still gets it
    delivered = [d for d in sandbox.outbox() if d.internet_message_id == "<b@x>"]
    assert [d.recipients for d in delivered] == [[ALICE]]
    (report,) = _ndrs(sandbox, ADMIN)
    raw = report.as_bytes()
    assert b"5.7.233" in raw and b"tenant external recipient rate limit" in raw
    assert report["X-MS-Exchange-Organization-AuthAs"] == "Internal"
    assert parse_quota_ndr(raw) == "<b@x>"
    assert sending_limits.quota_ndr_limit(raw) == sending_limits.TENANT_EXTERNAL
    assert sandbox.tenant_external_used(tenant) == 4
    # Alice is refused too: the limit is the tenant's, not a mailbox's.
    assert send(mime("<c@x>", to=["y@gmail.test"], sender=ALICE), login=ALICE).status_code == 202
    assert "<c@x>" not in left(sandbox)
    assert len(_ndrs(sandbox, ALICE)) == 1
    # The window rolls on: external mail goes again.
    sandbox.advance(DAY)
    assert send(mime("<d@x>", to=["z@gmail.test"])).status_code == 202
    assert "<d@x>" in left(sandbox)


def test_tenant_limit_accepted_domains_trial_code_and_time_scale(sandbox, send):
    tenant = defaults.TENANT_DOMAIN
    sandbox.configure_limits(time_scale=0.01)
    sandbox.configure_tenant_limit(
        tenant, trial=True, external_recipients_per_day=1, accepted_domains=["fabrikam.test"]
    )
    assert send(mime("<a@x>", to=people(3, "fabrikam.test"))).status_code == 202
    assert send(mime("<b@x>", to=["x@gmail.test"])).status_code == 202
    assert send(mime("<c@x>", to=["y@gmail.test"])).status_code == 202
    (report,) = _ndrs(sandbox, ADMIN)
    assert b"5.7.232" in report.as_bytes() and b"trial tenant" in report.as_bytes()
    # A scaled day: 864 s.
    sandbox.advance(DAY * 0.01)
    assert send(mime("<d@x>", to=["y@gmail.test"])).status_code == 202
    assert left(sandbox) == ["<a@x>", "<b@x>", "<d@x>"]


def test_a_message_goes_to_all_its_external_recipients_or_to_none(sandbox, send):
    tenant = defaults.TENANT_DOMAIN
    sandbox.configure_tenant_limit(tenant, external_recipients_per_day=3)
    assert send(mime("<a@x>", to=people(2))).status_code == 202
    assert send(mime("<b@x>", to=people(2, "gmail.test"))).status_code == 202
    assert "<b@x>" not in left(sandbox)
    assert sandbox.tenant_external_used(tenant) == 2
    # One still fits.
    assert send(mime("<c@x>", to=["solo@gmail.test"])).status_code == 202
    assert "<c@x>" in left(sandbox)

"""Before a resend: does Sent Items already hold the message, for these recipients?"""

from email.message import EmailMessage

from test_send import make_sender  # noqa: F401 - the fixture

from sandbox.defaults import ADMIN, SALES
from services.sent_items import find_sent_copy, message_recipients

MESSAGE_ID = "<7.resend@contoso.test>"


def mail(to, cc=None, bcc=None, sender=ADMIN):
    message = EmailMessage()
    message["Message-Id"] = MESSAGE_ID
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    if bcc:
        message["Bcc"] = bcc
    message["Subject"] = "Invoice"
    message.set_content("Hello")
    return message


def test_recipients_are_every_address_lowercased():
    message = mail("Bob <Bob@Example.test>, carol@example.test", cc="dan@x.test", bcc="E@x.test")
    assert message_recipients(message) == {
        "bob@example.test",
        "carol@example.test",
        "dan@x.test",
        "e@x.test",
    }


def test_nothing_sent_finds_nothing(sandbox, make_sender):  # noqa: F811
    sender = make_sender()
    found = find_sent_copy(sender.client, MESSAGE_ID, frozenset({"bob@example.test"}))
    assert found is None


def test_a_sent_message_is_found_for_its_own_recipients_only(sandbox, make_sender):  # noqa: F811
    """Odoo sends one message per recipient group under one Message-Id."""
    sender = make_sender()
    to_bob = mail("bob@example.test", bcc="hidden@example.test")
    sent = sender.send(to_bob)
    found = find_sent_copy(sender.client, MESSAGE_ID, message_recipients(to_bob))
    assert found is not None and found.id == sent.id
    to_carol = mail("carol@example.test")
    assert find_sent_copy(sender.client, MESSAGE_ID, message_recipients(to_carol)) is None


def test_a_shared_mailbox_copy_is_found_in_its_sent_items(sandbox, make_sender):  # noqa: F811
    sender = make_sender()
    message = mail("bob@example.test", sender=SALES)
    sender.send(message, from_address=SALES)
    found = find_sent_copy(
        sender.client, MESSAGE_ID, message_recipients(message), shared_address=SALES
    )
    assert found is not None

import email.policy
import os
import tracemalloc
from email.message import EmailMessage

from services.mime import flatten


def odoo_like_message(attachment):
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Admin <admin@contoso.test>"
    message["To"] = "customer@example.com"
    message["Subject"] = "Quotation"
    message["Message-Id"] = "<1.2@odoo.test>"
    message.set_content("Body\nwith\r\nmixed\rline ends\n")
    message.add_alternative("<p>Body</p>", subtype="html")
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename="q.pdf")
    return message


def test_same_bytes_as_the_standard_library():
    message = odoo_like_message(os.urandom(300_000))
    assert flatten(message) == message.as_bytes()


def test_peak_memory_stays_near_the_message_size():
    message = odoo_like_message(os.urandom(8 * 1024 * 1024))
    expected = len(message.as_bytes())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        raw = flatten(message)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(raw) == expected
    assert peak < 2.2 * expected

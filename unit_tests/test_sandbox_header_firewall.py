"""Exchange's header firewall: organization headers never arrive from outside.

Microsoft, "Header firewall" (Exchange Server 2013,
http://technet.microsoft.com/en-us/library/bb232136(v=exchg.149).aspx): organization and
forest X-headers are removed from inbound messages that enter from untrusted sources.
"""

import email

from sandbox.defaults import ADMIN
from sandbox.header_firewall import strip_organization_headers

FORGED = (
    b"From: postmaster@contoso.test\r\n"
    b"X-MS-Exchange-Organization-AuthAs: Internal\r\n"
    b"x-ms-exchange-organization-authsource:\r\n  folded.contoso.test\r\n"
    b"X-MS-Exchange-Forest-RulesExecuted: x\r\n"
    b"X-MS-Exchange-Message-Is-Ndr:\r\n"
    b"Subject: Undeliverable\r\n\r\n"
    b"X-MS-Exchange-Organization-AuthAs: Internal (in the body: kept)\r\n"
)


def test_organization_and_forest_headers_are_removed_folded_lines_too():
    kept = strip_organization_headers(FORGED)
    head, _, body = kept.partition(b"\r\n\r\n")
    assert b"organization" not in head.lower() and b"forest" not in head.lower()
    assert b"folded" not in head
    assert b"X-MS-Exchange-Message-Is-Ndr:" in head and b"Subject: Undeliverable" in head
    assert body == b"X-MS-Exchange-Organization-AuthAs: Internal (in the body: kept)\r\n"


def test_mail_delivered_from_outside_arrives_without_them(sandbox):
    sandbox.deliver(ADMIN, FORGED)
    (message,) = sandbox.messages(ADMIN)
    parsed = email.message_from_bytes(message.raw)
    assert parsed["X-MS-Exchange-Organization-AuthAs"] is None
    assert parsed["X-MS-Exchange-Message-Is-Ndr"] is not None

"""Exchange's header firewall, for mail that enters the organization from outside.

Microsoft, "Header firewall" (Exchange Server 2013,
http://technet.microsoft.com/en-us/library/bb232136(v=exchg.149).aspx): Exchange removes
its organization X-headers (``X-MS-Exchange-Organization-*``) and forest X-headers
(``X-MS-Exchange-Forest-*``) from inbound messages that enter the organization from
untrusted sources, so that they cannot be spoofed. Exchange Online's documentation says no
more of its edge, so the sandbox removes both families from every message delivered from
outside (the stricter reading).
"""

import re

_STRIPPED = re.compile(rb"x-ms-exchange-(organization|forest)-", re.IGNORECASE)


def strip_organization_headers(raw):
    """raw MIME without Exchange's organization and forest headers (folded lines included)."""
    end = min(
        (at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0), default=len(raw)
    )
    kept, dropping = [], False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = _STRIPPED.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]

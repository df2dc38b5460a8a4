"""Find sandbox-issued secrets in text that should never hold one (logs, columns, pages)."""

from .tokens import SECRET_MARKER

# The header line of every PEM private key (PKCS#8 "PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY",
# "ENCRYPTED PRIVATE KEY"): no column, log line or page may ever hold one.
PRIVATE_KEY_MARKER = "PRIVATE KEY-----"
LEAK_MARKERS = (SECRET_MARKER, PRIVATE_KEY_MARKER)


def find_leaks(texts, marker=SECRET_MARKER, context=40):
    """[(index, excerpt)] for each item of texts that contains the marker (or, given a
    tuple, any of the markers: LEAK_MARKERS for secrets and private keys).

    Items may be str, bytes or anything with a str(); None is skipped. The excerpt shows
    where the marker sits, for the failure message.
    """
    leaks = []
    for index, item in enumerate(texts):
        if item is None:
            continue
        if isinstance(item, (bytes, bytearray)):
            text = bytes(item).decode("utf-8", "replace")
        else:
            text = item if isinstance(item, str) else str(item)
        for one in (marker,) if isinstance(marker, str) else marker:
            position = text.find(one)
            if position >= 0:
                leaks.append(
                    (index, text[max(0, position - context) : position + len(one) + context])
                )
                break
    return leaks

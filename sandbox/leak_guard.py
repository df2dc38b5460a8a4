"""Find sandbox-issued secrets in text that should never hold one (logs, columns, pages)."""

from .tokens import SECRET_MARKER


def find_leaks(texts, marker=SECRET_MARKER, context=40):
    """[(index, excerpt)] for each item of texts that contains the marker.

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
        position = text.find(marker)
        if position >= 0:
            leaks.append(
                (index, text[max(0, position - context) : position + len(marker) + context])
            )
    return leaks

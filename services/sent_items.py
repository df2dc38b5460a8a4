"""Was this message already accepted by Microsoft? Asked of Sent Items before a resend.

A mail handed to Microsoft may come back to Odoo's queue although Microsoft accepted it:
the worker died, or its transaction rolled back, after the answer. Exchange keeps a Sent
Items copy of every message it accepted from the mailbox (sendMail's MIME form included),
under the message's own internetMessageId, with its recipients, Bcc included.
"""

from email.utils import getaddresses

from .errors import GraphPermanentError
from .graph import quote_segment
from .send import IMMUTABLE_ID, SentMessage

SELECT = "id,internetMessageId,toRecipients,ccRecipients,bccRecipients"


def message_recipients(message):
    """The lowercased addresses a MIME message goes to (To, Cc and Bcc)."""
    fields = [str(value) for name in ("To", "Cc", "Bcc") for value in message.get_all(name, [])]
    return frozenset(address.lower() for _name, address in getaddresses(fields) if address)


def _graph_recipients(item):
    return frozenset(
        str((entry.get("emailAddress") or {}).get("address") or "").lower()
        for key in ("toRecipients", "ccRecipients", "bccRecipients")
        for entry in item.get(key) or ()
    ) - {""}


def find_sent_copy(client, internet_message_id, recipients, shared_address=None):
    """The SentMessage of the Sent Items copy of internet_message_id sent to recipients.

    Odoo sends one message per recipient group under one Message-Id, hence the recipients.
    Looks in the account's own Sent Items and, for a shared mailbox, in the shared one's
    (where the copy lands depends on the route the message took). None when there is none.
    """
    quoted = internet_message_id.replace("'", "''")
    params = {"$filter": f"internetMessageId eq '{quoted}'", "$select": SELECT}
    homes = [("/me", None)]
    if shared_address:
        homes.insert(0, (f"/users/{quote_segment(shared_address)}", shared_address))
    for home, mailbox in homes:
        try:
            for item in client.iter_pages(
                f"{home}/mailFolders/sentitems/messages", params=params, headers=IMMUTABLE_ID
            ):
                if _graph_recipients(item) == recipients:
                    return SentMessage(item.get("id"), internet_message_id, 1, mailbox)
        except GraphPermanentError:
            if mailbox is None:
                raise
            # Send As without Full Access: the shared Sent Items cannot be read, and the
            # copy of a message sent that way is in the account's own.
    return None

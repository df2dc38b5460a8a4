"""Graph users: /me and /users/{id or address}."""

from .graph_common import add_route, selection
from .web import json_response

USER_PROPERTIES = (
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)


def register(router, sb):
    add_route(router, sb, "GET", "", get_user, need="user")


def get_user(sb, request):
    mailbox = request.target_mailbox
    values = {
        "id": mailbox.id,
        "businessPhones": [],
        "displayName": mailbox.display_name,
        "givenName": None,
        "jobTitle": None,
        "mail": mailbox.address,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": None,
        "userPrincipalName": mailbox.address,
    }
    chosen = selection(request, USER_PROPERTIES, "user") or USER_PROPERTIES
    body = {"@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity"}
    body.update((name, values[name]) for name in USER_PROPERTIES if name in chosen)
    return json_response(200, body)

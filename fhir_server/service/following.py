"""What a reference names, read as a search's chain reads it: the current version of the
resource, none when it is absent or deleted.

The access rules judge some resources through what they name (a List through its documents,
R13/R14; a List's labels through its entries, `access.list_labels`); a single read must see
the targets a search's chain clause sees, whichever reader (the store, a transaction) the
caller has at hand.
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.access.constraints import Follow
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.store.base import StoredResource


def following(read: Callable[[str, str], StoredResource | None]) -> Follow:
    """`Follow` over `read` (a store's or a transaction's `read`): a type the server does not
    serve names nothing here."""

    def follow(resource_type: str, resource_id: str) -> dict | None:
        if resource_type not in SERVED_TYPES:
            return None
        stored = read(resource_type, resource_id)
        return None if stored is None or stored.deleted else stored.json()

    return follow

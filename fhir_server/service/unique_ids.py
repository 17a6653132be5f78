"""A document's uniqueId (XDS) is its `masterIdentifier`, and it names one content.

ITI-43 retrieves a document by uniqueId alone, and ITI-41 / ITI-65 refuse a uniqueId already
held with other content (XDSNonIdenticalHash). The `identifier` search parameter finds
`masterIdentifier | identifier`, and any writer may put any value in an `identifier`: a
lookup that stopped at the first page let a writer plant decoys in front of someone else's
document, and a plain REST write could give another content the same uniqueId, to be served
in its place (issue #18 attack pass). So lookups read every match and keep the
masterIdentifiers only, and every DocumentReference write, by any door, is held to one
content per uniqueId (issue #19, deliverable 1: the same checks at every door).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from fhir_server.errors import error
from fhir_server.search.query import SearchQuery, TokenTest
from fhir_server.store.page import SearchPage

# Pages of matches read at the most; past that the lookup fails closed (finds nothing).
MAX_PAGES = 20
PAGE_SIZE = 100

Search = Callable[[SearchQuery], SearchPage]


def master_identifier(document: dict) -> tuple[str | None, str] | None:
    """(system, value) of a DocumentReference's masterIdentifier, if it has one."""
    master = document.get("masterIdentifier")
    if not isinstance(master, dict) or not isinstance(master.get("value"), str):
        return None
    system = master.get("system")
    return (system if isinstance(system, str) else None), master["value"]


def documents_with_unique_id(search: Search, system: str | None, value: str) -> list[dict]:
    """Every DocumentReference whose masterIdentifier is (system, value), read through
    `search` (the store's, or a transaction's); [] when there are too many matches to read."""
    test = TokenTest("identifier", system, value, any_system=system is None)
    query = SearchQuery("DocumentReference", where=test, count=PAGE_SIZE)
    found: list[dict] = []
    for _ in range(MAX_PAGES):
        page = search(query)
        for row in page.rows:
            document = orjson.loads(row[2])
            master = master_identifier(document)
            if master is not None and master[1] == value and system in (None, master[0]):
                found.append(document)
        if not page.next_cursor:
            return found
        query = SearchQuery(
            query.resource_type, where=query.where, count=PAGE_SIZE, cursor=page.next_cursor
        )
    return []


def check_one_content(search: Search, document: dict, document_id: str) -> None:
    """Refuse (409) DocumentReference `document_id` when its uniqueId is another document's
    with other content (hash or size of its first attachment)."""
    named = master_identifier(document)
    if named is None:
        return
    mine = _content(document)
    for other in documents_with_unique_id(search, *named):
        if other.get("id") != document_id and _content(other) != mine:
            raise error(
                409,
                "duplicate",
                f"the uniqueId {named[1]} is already another document's, with other content",
                "DocumentReference.masterIdentifier",
            )


def _content(document: dict) -> tuple[object, object]:
    content = document.get("content")
    first = content[0] if isinstance(content, list) and content else {}
    attachment = (first.get("attachment") if isinstance(first, dict) else None) or {}
    return attachment.get("hash"), attachment.get("size")

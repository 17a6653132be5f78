"""References to hidden resources are left out of what a requester is served (R14, R18).

A List (an XDS SubmissionSet or folder) names its documents, and a DocumentReference names
the documents it replaces, transforms or appends (`relatesTo`). A masked document is hidden
from a practitioner (R14), and nothing may tell that a hidden resource exists (R18): a visible
resource naming it would, with its id. The XDS face already leaves such associations out of
its answers; here the FHIR face does the same: the copy a requester is served keeps only the
elements whose target they may read. The stored resource is unchanged, and when that
requester updates it, the elements they could not see are kept (`with_hidden_kept`): what
one cannot see, one cannot remove.

Pure: whether a target may be read is the caller's `may_read(type, id)` (the gate's DMP
policy on the stored target).
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.access.constraints import reference_target

MayRead = Callable[[str, str], bool]

# Per type, the repeating element whose items name another resource, and the item's field
# holding the Reference.
NAMING_ELEMENTS: dict[str, tuple[str, str]] = {
    "List": ("entry", "item"),
    "DocumentReference": ("relatesTo", "target"),
}

# The search parameter over each naming element: a search by a hidden target matches
# nothing, as if it did not exist (the served resources do not name it either).
NAMING_PARAMS: dict[str, str] = {"List": "item", "DocumentReference": "relatesto"}


def searches_naming(resource_type: str, param: str) -> bool:
    """Whether `param` of `resource_type` searches by what its naming element names."""
    return NAMING_PARAMS.get(resource_type) == param


# Every search parameter over a naming element: the reference searched by `searches_naming`
# and, for DocumentReference, the relation's code (`relation`) and the pair (`relationship`).
# Their values are the stored items, hidden ones included.
OVER_NAMING_ELEMENTS: dict[str, frozenset[str]] = {
    "List": frozenset({"item"}),
    "DocumentReference": frozenset({"relatesto", "relation", "relationship"}),
}


def reads_naming_element(resource_type: str, param: str) -> bool:
    """Whether `param` of `resource_type` reads the type's naming element (its stored items,
    those naming a hidden resource included): a search may not order by it (R18)."""
    return param in OVER_NAMING_ELEMENTS.get(resource_type, frozenset())


def may_name_others(resource_type: str, body: bytes) -> bool:
    """A cheap test on the stored bytes: False when the resource has no naming element (most
    DocumentReferences have no relatesTo), so that it is served without being parsed."""
    needle = _NAMING_KEYS.get(resource_type)
    return needle is not None and needle in body


# The naming element's key as the stored JSON spells it, for `may_name_others`.
_NAMING_KEYS: dict[str, bytes] = {
    resource_type: f'"{naming[0]}"'.encode() for resource_type, naming in NAMING_ELEMENTS.items()
}


def target_of(resource_type: str, item: object) -> tuple[str, str] | None:
    """(type, id) of the resource an item of the type's naming element refers to by a
    relative reference, version-specific or not, else None: read as the search index and
    the other rules read it (`reference_target`), so every item a `List?item=` or
    `relatesto=` search takes for a document is one this module can hide."""
    naming = NAMING_ELEMENTS.get(resource_type)
    if naming is None or not isinstance(item, dict):
        return None
    reference = item.get(naming[1])
    literal = reference.get("reference") if isinstance(reference, dict) else None
    return reference_target(literal)


def _hidden(resource_type: str, item: object, may_read: MayRead) -> bool:
    target = target_of(resource_type, item)
    return target is not None and not may_read(*target)


def without_hidden(resource: dict, may_read: MayRead) -> dict | None:
    """The resource without the items naming what the reader may not read; None when it
    names nothing hidden (serve it as stored)."""
    resource_type = resource.get("resourceType", "")
    naming = NAMING_ELEMENTS.get(resource_type)
    if naming is None:
        return None
    items = resource.get(naming[0])
    if not isinstance(items, list):
        return None
    kept = [item for item in items if not _hidden(resource_type, item, may_read)]
    if len(kept) == len(items):
        return None
    shown = {key: value for key, value in resource.items() if key != naming[0]}
    if kept:
        shown[naming[0]] = kept
    return shown


def with_hidden_kept(new: dict, current: dict, may_read: MayRead) -> dict:
    """`new`, sent by a writer to replace `current`, with the items of `current` that name
    what the writer may not read, and that `new` does not have, appended: the writer was
    never shown them, so leaving them out is not removing them."""
    resource_type = current.get("resourceType", "")
    naming = NAMING_ELEMENTS.get(resource_type)
    if naming is None:
        return new
    items = current.get(naming[0])
    if not isinstance(items, list) or new.get("resourceType") != resource_type:
        return new
    sent = new.get(naming[0])
    sent = sent if isinstance(sent, list) else []
    present = {target_of(resource_type, item) for item in sent}
    hidden = [
        item
        for item in items
        if target_of(resource_type, item) not in present and _hidden(resource_type, item, may_read)
    ]
    if not hidden:
        return new
    return {**new, naming[0]: [*sent, *hidden]}

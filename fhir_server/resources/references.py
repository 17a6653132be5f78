"""Literal references to this server's resources, and the paths that lead to them.

The search index (`search.extract`) and the access rules (`access.constraints`) both read
references: they must read them alike, or a reference the index takes for a document would
not be one the rules take for it. Both take the pattern and the navigation from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

# A literal reference to a local resource, version-specific or not: what the index reads as
# target_type/target_id. What is still absolute after the normal form (`resources.normal_form`
# made those to this server's base relative) is foreign and designates no local resource.
# The whole text is read, to its last character (`\Z`: `$` also matches before a final
# newline), and a version id is an `id` as the resource's: `Patient/X\n`, `Patient/X/_history/
# 1 x` or `.../_history/1#x` designate nothing, so that no face reads them otherwise (refused
# where a rule needs what they name, fail closed).
RELATIVE_REFERENCE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z"
)

# A literal reference naming, however spelled (any case, spaces, a trailing `/`, `#...` or
# `?...`, on any base), a resource of a type a reader may be refused (a document, a List, a
# Binary, a message): where RELATIVE_REFERENCE does not read it, the rules cannot judge what
# it names, and it is refused rather than served as stored (R14, R18, fail closed).
RECORD_ITEM_TYPES = ("DocumentReference", "List", "Binary", "Communication")
NAMES_A_RECORD_ITEM = re.compile(
    rf"(?:^|[/\s])(?:{'|'.join(RECORD_ITEM_TYPES)})\s*/", re.IGNORECASE
)


def reference_target(reference: object) -> tuple[str, str] | None:
    """(type, id) of a relative literal reference, ignoring any _history part."""
    if not isinstance(reference, str):
        return None
    match = RELATIVE_REFERENCE.match(reference)
    return (match.group(1), match.group(2)) if match else None


def values_at(node: object, path: Sequence[str]) -> list[object]:
    """The values at a dotted path, FHIRPath-like: lists are flattened at every step."""
    found: list[object] = []
    _collect(node, path, 0, found)
    return found


def _collect(node: object, path: Sequence[str], step: int, found: list[object]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, path, step, found)
    elif step == len(path):
        found.append(node)
    elif isinstance(node, dict) and path[step] in node:
        _collect(node[path[step]], path, step + 1, found)


def all_references(node: object) -> Iterator[dict]:
    """Every Reference in a resource, outside its contained resources."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for key, value in node.items():
            if key != "contained":
                yield from all_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_references(item)

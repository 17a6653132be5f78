"""Whether a search can read resources of a given type, beyond its own.

An engine that keeps some resources out of its tables for a while (the SQLite engine's
AuditEvent journal) must bring them in before any search that could return, count or match
on them: a search of that type or a system search, a chain into that type, a `_has` from it,
an `_include` that can reach it, a `_revinclude` from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.query import And, Chain, Has, Include, Node, Not, Or, SearchQuery
from fhir_server.search.registry import SearchRegistry

# (source type, reference parameter) -> whether that reference may point to the type asked.
MayReference = Callable[[str, str], bool]


def always(_source_type: str, _param: str) -> bool:
    """Without a registry to tell, any reference may point anywhere."""
    return True


def referrers(registry: SearchRegistry, resource_type: str) -> MayReference:
    """(type, reference parameter) -> whether it may point to a `resource_type` resource:
    its targets name that type, or none at all."""
    pairs = frozenset(
        (source_type, code)
        for source_type in SERVED_TYPES
        for code, definition in registry.for_type(source_type).items()
        if definition.type == "reference"
        and (not definition.targets or resource_type in definition.targets)
    )
    return lambda source_type, param: (source_type, param) in pairs


def where_reads(node: Node, resource_type: str) -> bool:
    """Whether matching `node` reads `resource_type` resources (chains and `_has`)."""
    if isinstance(node, Chain):
        return node.target_type == resource_type or where_reads(node.where, resource_type)
    if isinstance(node, Has):
        return node.source_type == resource_type or where_reads(node.where, resource_type)
    if isinstance(node, And | Or):
        return any(where_reads(part, resource_type) for part in node.parts)
    if isinstance(node, Not):
        return where_reads(node.part, resource_type)
    return False


def includes_read(
    includes: Iterable[Include], resource_type: str, may_reference: MayReference = always
) -> bool:
    """Whether resolving `includes` can add `resource_type` resources to a page."""
    for include in includes:
        if include.reverse:
            if include.source_type == resource_type:
                return True
        elif include.target_type == resource_type or (
            include.target_type is None and may_reference(include.source_type, include.param)
        ):
            return True
    return False


def search_reads(
    query: SearchQuery, resource_type: str, may_reference: MayReference = always
) -> bool:
    """Whether `query` (its type, criteria and includes) can read `resource_type` resources."""
    return (
        query.resource_type in (None, resource_type)
        or where_reads(query.where, resource_type)
        or includes_read(query.includes, resource_type, may_reference)
    )

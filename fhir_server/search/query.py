"""The search query AST: what a FHIR search (and an access constraint) means, engine-free.

`search.parameters` turns HTTP parameters into these nodes; `access` adds its constraints as
nodes of the same kind; each store engine compiles a node tree to SQL or to a MongoDB
filter; `search.evaluate` runs it in Python as the reference semantics for property tests.

Values are already parsed and normalized here: dates are epoch-microsecond ranges, strings
are normalized, prefixes are explicit. Nothing in this module depends on an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class Prefix(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    LT = "lt"
    GE = "ge"
    LE = "le"
    SA = "sa"
    EB = "eb"
    AP = "ap"


class StringMatch(StrEnum):
    START = "start"  # default FHIR string semantics: normalized prefix
    EXACT = "exact"
    CONTAINS = "contains"


class UriMatch(StrEnum):
    EQ = "eq"
    BELOW = "below"
    ABOVE = "above"


class TokenMatch(StrEnum):
    EQ = "eq"  # system|code forms
    TEXT = "text"  # :text, normalized prefix match on the display text
    OF_TYPE = "of-type"  # Identifier type system|code|value (see TokenTest)


class Node:
    """Base of all query nodes."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Everything(Node):
    """Matches every resource of the type (an empty search)."""


@dataclass(frozen=True, slots=True)
class TokenTest(Node):
    """One token value.

    any_system=True: `code` form (system ignored). system=None and any_system=False: `|code`
    (value must have no system). code=None: `system|` (any code in that system).
    For TokenMatch.OF_TYPE: system/code are the identifier type's coding and `value` the
    identifier value. For TokenMatch.TEXT: `text` is the normalized text, and `value` the
    text as asked (matching ignores it; what the query shows, `access.query_names`).
    """

    param: str
    system: str | None = None
    code: str | None = None
    any_system: bool = False
    match: TokenMatch = TokenMatch.EQ
    text: str | None = None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class StringTest(Node):
    param: str
    value: str  # normalized for START/CONTAINS, exact for EXACT
    match: StringMatch = StringMatch.START


@dataclass(frozen=True, slots=True)
class DateTest(Node):
    """A date comparison; low/high are the inclusive range of the query value's precision."""

    param: str  # "_lastUpdated" compares the resource's last-updated instant
    prefix: Prefix
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberTest(Node):
    param: str
    prefix: Prefix
    low: Decimal
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityTest(Node):
    param: str
    prefix: Prefix
    low: Decimal
    high: Decimal
    system: str | None = None
    code: str | None = None  # matched against code or unit, as FHIR says


@dataclass(frozen=True, slots=True)
class ReferenceTest(Node):
    """A reference value: by local target (type/id), by absolute URL, or by identifier."""

    param: str
    target_type: str | None = None  # None: any type (plain `param=id`)
    target_id: str | None = None
    url: str | None = None
    identifier_system: str | None = None  # :identifier modifier
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriTest(Node):
    param: str
    value: str
    match: UriMatch = UriMatch.EQ


@dataclass(frozen=True, slots=True)
class IdTest(Node):
    """`_id`: the resource's logical id is one of `ids`."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Missing(Node):
    """`:missing=true|false`: whether the resource has any index entry for `param`."""

    param: str
    missing: bool


@dataclass(frozen=True, slots=True)
class Chain(Node):
    """`param.x=...` / `param:Type.x=...`: a reference to a `target_type` resource matching `where`."""

    param: str
    target_type: str
    where: Node


@dataclass(frozen=True, slots=True)
class Has(Node):
    """`_has:Source:param:x=...`: some `source_type` resource whose reference `param` points to
    this resource and which matches `where`."""

    source_type: str
    param: str
    where: Node


@dataclass(frozen=True, slots=True)
class InCompartment(Node):
    """The resource is in the compartment of Patient `patient_id` (CompartmentDefinition)."""

    patient_id: str


@dataclass(frozen=True, slots=True)
class And(Node):
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    """Negation over the resource: matches resources for which `part` does not match.

    FHIR's `:not` is this (a resource with no value for the parameter matches `:not`).
    """

    part: Node


def all_of(*parts: Node) -> Node:
    """And of the parts, dropping `Everything` and flattening nested Ands."""
    flat: list[Node] = []
    for part in parts:
        if isinstance(part, Everything):
            continue
        if isinstance(part, And):
            flat.extend(part.parts)
        else:
            flat.append(part)
    if not flat:
        return Everything()
    if len(flat) == 1:
        return flat[0]
    return And(tuple(flat))


class TotalMode(StrEnum):
    NONE = "none"
    ESTIMATE = "estimate"
    ACCURATE = "accurate"


class SummaryMode(StrEnum):
    TRUE = "true"
    COUNT = "count"
    DATA = "data"
    TEXT = "text"
    FALSE = "false"


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # a search parameter code, or "_id" / "_lastUpdated"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` (reverse=False) or `_revinclude` (reverse=True)."""

    source_type: str
    param: str
    target_type: str | None = None
    iterate: bool = False
    reverse: bool = False


DEFAULT_COUNT = 20
MAX_COUNT = 1000


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str | None  # None: a system-level search
    where: Node = field(default_factory=Everything)
    sort: tuple[SortKey, ...] = ()
    count: int = DEFAULT_COUNT
    total: TotalMode = TotalMode.NONE
    summary: SummaryMode | None = None
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    cursor: str | None = None  # opaque keyset cursor from a previous page
    # Top-level conjuncts of `where` that exclude few resources (the access labels that mask
    # a document): an engine may check them on a page's first candidates only, instead of on
    # every candidate, as long as its answer is the one `where` defines. Always also in `where`.
    rare_filters: tuple[Node, ...] = ()

"""Reference semantics of the search AST, by brute force over an in-memory corpus.

This is the oracle the property tests compare the SQLite and MongoDB compilers against, so
every rule is spelled out here and nowhere else. A leaf test matches a resource when SOME
index entry of the resource for the test's parameter satisfies it (FHIR: "any value
matches"); `Not` negates at the resource level, so `:not` matches resources with no value.

Leaf rules (q = query test, e = index entry):

- TokenTest EQ: `code` form (any_system) -> e.code == q.code; `|code` (system None, not
  any_system) -> e.system is None and e.code == q.code; `system|` (code None) -> e.system ==
  q.system; `system|code` -> both equal. Case-sensitive.
- TokenTest TEXT: e.display is not None and e.display starts with q.text (both normalized).
- TokenTest OF_TYPE: entries of param "<param>:of-type" with e.code == "<q.code>|<q.value>"
  and (q.system is None or e.system == q.system).
- StringTest: START e.normalized.startswith(q.value); CONTAINS q.value in e.normalized;
  EXACT e.exact == q.value.
- DateTest (inclusive integer ranges, query [ql, qh], entry [tl, th]):
  eq: ql <= tl and th <= qh; ne: not eq; gt: th > qh; lt: tl < ql;
  ge: gt or eq; le: lt or eq; sa: tl > qh; eb: th < ql; ap: tl <= qh and th >= ql.
- NumberTest / QuantityTest (entries are points, v = e.low; query [ql, qh) half-open for
  eq/ne/ap/sa/eb, ql == qh == the exact value for gt/lt/ge/le):
  eq and ap: ql <= v < qh; ne: not (ql <= v < qh); gt: v > ql; lt: v < ql; ge: v >= ql;
  le: v <= ql; sa: v >= qh; eb: v < ql. QuantityTest also needs, when q.system is set,
  e.system == q.system and (q.code is None or e.code == q.code); when only q.code is set,
  e.code == q.code or e.unit == q.code.
- ReferenceTest: by identifier (identifier_value set) -> e.identifier_value == value and
  (q.identifier_system is None or equal); by url -> e.url == q.url; else e.target_id ==
  q.target_id and (q.target_type is None or e.target_type == q.target_type).
- UriTest: EQ equal; BELOW e.value.startswith(q.value); ABOVE q.value.startswith(e.value).
- IdTest: the resource id is in q.ids. Missing(param, True): no entry of any kind for param
  (`:of-type` entries live under their own param name); Missing(param, False): at least one.
- Chain(param, T, where): some reference entry of `param` with target_type == T and a
  target_id naming an existing T resource that matches `where`.
- Has(S, param, where): some S resource with a reference entry of `param` whose target_type
  is this resource's type and target_id its id, and which matches `where`.
- InCompartment(p): p in entries.compartment. And/Or/Not/Everything: as named.

Order (`run_query`): `_sort` keys in turn; per key a resource's value is the lowest of its
values ascending, the highest descending (extract.sort_values); resources without a value come
last in both directions; remaining ties, and a query without `_sort`, are ordered by id
ascending (code point order, as SQLite BINARY and MongoDB compare UTF-8). `_id` sorts on the
id, `_lastUpdated` on the indexed meta.lastUpdated.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Protocol

from fhir_server.search.extract import OF_TYPE_SUFFIX, SortValue, extract, sort_values
from fhir_server.search.index import (
    IndexEntries,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
    Everything,
    Has,
    IdTest,
    InCompartment,
    Missing,
    Node,
    Not,
    NumberTest,
    Or,
    Prefix,
    QuantityTest,
    ReferenceTest,
    SearchQuery,
    StringMatch,
    StringTest,
    TokenMatch,
    TokenTest,
    UriMatch,
    UriTest,
)
from fhir_server.search.registry import SearchRegistry


class Lookup(Protocol):
    """Access to the other resources of the corpus, for Chain and Has."""

    def get(self, resource_type: str, resource_id: str) -> tuple[dict, IndexEntries] | None: ...

    def of_type(self, resource_type: str) -> Iterable[tuple[str, dict, IndexEntries]]: ...


class CorpusLookup:
    """A Lookup over a mapping (type, id) -> resource, extracting entries once per resource."""

    def __init__(self, corpus: Mapping[tuple[str, str], dict], registry: SearchRegistry) -> None:
        self._corpus = corpus
        self._registry = registry
        self._entries: dict[tuple[str, str], IndexEntries] = {}

    def entries(self, resource_type: str, resource_id: str) -> IndexEntries:
        key = (resource_type, resource_id)
        if key not in self._entries:
            self._entries[key] = extract(self._corpus[key], self._registry)
        return self._entries[key]

    def get(self, resource_type: str, resource_id: str) -> tuple[dict, IndexEntries] | None:
        resource = self._corpus.get((resource_type, resource_id))
        if resource is None:
            return None
        return resource, self.entries(resource_type, resource_id)

    def of_type(self, resource_type: str) -> Iterable[tuple[str, dict, IndexEntries]]:
        for (kind, resource_id), resource in self._corpus.items():
            if kind == resource_type:
                yield resource_id, resource, self.entries(kind, resource_id)


# -- leaf predicates ----------------------------------------------------------------------------


def token_matches(test: TokenTest, entry: TokenEntry) -> bool:
    if test.match is TokenMatch.TEXT:
        return entry.display is not None and entry.display.startswith(test.text or "")
    if test.match is TokenMatch.OF_TYPE:
        return entry.code == f"{test.code}|{test.value}" and (
            test.system is None or entry.system == test.system
        )
    if test.any_system:
        return entry.code == test.code
    if test.code is None:
        return entry.system == test.system
    return entry.system == test.system and entry.code == test.code


def string_matches(test: StringTest, entry: StringEntry) -> bool:
    if test.match is StringMatch.EXACT:
        return entry.exact == test.value
    if test.match is StringMatch.CONTAINS:
        return test.value in entry.normalized
    return entry.normalized.startswith(test.value)


def date_matches(prefix: Prefix, ql: int, qh: int, tl: int, th: int) -> bool:
    contained = ql <= tl and th <= qh
    if prefix is Prefix.EQ:
        return contained
    if prefix is Prefix.NE:
        return not contained
    if prefix is Prefix.GT:
        return th > qh
    if prefix is Prefix.LT:
        return tl < ql
    if prefix is Prefix.GE:
        return th > qh or contained
    if prefix is Prefix.LE:
        return tl < ql or contained
    if prefix is Prefix.SA:
        return tl > qh
    if prefix is Prefix.EB:
        return th < ql
    return tl <= qh and th >= ql  # AP: overlap with the widened range


def number_matches(test: NumberTest | QuantityTest, entry: NumberEntry | QuantityEntry) -> bool:
    value, low, high = entry.low, test.low, test.high
    prefix = test.prefix
    if prefix in (Prefix.EQ, Prefix.AP):
        return low <= value < high
    if prefix is Prefix.NE:
        return not (low <= value < high)
    if prefix is Prefix.GT:
        return value > low
    if prefix is Prefix.LT:
        return value < low
    if prefix is Prefix.GE:
        return value >= low
    if prefix is Prefix.LE:
        return value <= low
    if prefix is Prefix.SA:
        return value >= high
    return value < low  # EB


def quantity_matches(test: QuantityTest, entry: QuantityEntry) -> bool:
    if test.system is not None:
        if entry.system != test.system or (test.code is not None and entry.code != test.code):
            return False
    elif test.code is not None and test.code not in (entry.code, entry.unit):
        return False
    return number_matches(test, entry)


def reference_matches(test: ReferenceTest, entry: ReferenceEntry) -> bool:
    if test.identifier_value is not None:
        return entry.identifier_value == test.identifier_value and (
            test.identifier_system is None or entry.identifier_system == test.identifier_system
        )
    if test.url is not None:
        return entry.url == test.url
    return (
        test.target_id is not None
        and entry.target_id == test.target_id
        and (test.target_type is None or entry.target_type == test.target_type)
    )


def uri_matches(test: UriTest, entry: UriEntry) -> bool:
    if test.match is UriMatch.BELOW:
        return entry.value.startswith(test.value)
    if test.match is UriMatch.ABOVE:
        return test.value.startswith(entry.value)
    return entry.value == test.value


def _has_entry(entries: IndexEntries, param: str) -> bool:
    groups: tuple[list, ...] = (
        entries.tokens,
        entries.strings,
        entries.dates,
        entries.references,
        entries.uris,
        entries.numbers,
        entries.quantities,
    )
    return any(entry.param == param for group in groups for entry in group)


# -- the evaluator -----------------------------------------------------------------------------


def matches(
    node: Node, resource_type: str, resource: dict, entries: IndexEntries, lookup: Lookup
) -> bool:
    """Whether `resource` (of `resource_type`, with its index `entries`) matches `node`."""
    if isinstance(node, Everything):
        return True
    if isinstance(node, And):
        return all(matches(p, resource_type, resource, entries, lookup) for p in node.parts)
    if isinstance(node, Or):
        return any(matches(p, resource_type, resource, entries, lookup) for p in node.parts)
    if isinstance(node, Not):
        return not matches(node.part, resource_type, resource, entries, lookup)
    if isinstance(node, IdTest):
        return resource.get("id") in node.ids
    if isinstance(node, TokenTest):
        param = node.param + OF_TYPE_SUFFIX if node.match is TokenMatch.OF_TYPE else node.param
        return any(e.param == param and token_matches(node, e) for e in entries.tokens)
    if isinstance(node, StringTest):
        return any(e.param == node.param and string_matches(node, e) for e in entries.strings)
    if isinstance(node, DateTest):
        return any(
            e.param == node.param and date_matches(node.prefix, node.low, node.high, e.low, e.high)
            for e in entries.dates
        )
    if isinstance(node, NumberTest):
        return any(e.param == node.param and number_matches(node, e) for e in entries.numbers)
    if isinstance(node, QuantityTest):
        return any(e.param == node.param and quantity_matches(node, e) for e in entries.quantities)
    if isinstance(node, ReferenceTest):
        return any(e.param == node.param and reference_matches(node, e) for e in entries.references)
    if isinstance(node, UriTest):
        return any(e.param == node.param and uri_matches(node, e) for e in entries.uris)
    if isinstance(node, Missing):
        return _has_entry(entries, node.param) != node.missing
    if isinstance(node, InCompartment):
        return node.patient_id in entries.compartment
    if isinstance(node, Chain):
        for entry in entries.references:
            if (
                entry.param == node.param
                and entry.target_type == node.target_type
                and entry.target_id is not None
            ):
                target = lookup.get(node.target_type, entry.target_id)
                if target is not None and matches(
                    node.where, node.target_type, target[0], target[1], lookup
                ):
                    return True
        return False
    if isinstance(node, Has):
        own_id = resource.get("id")
        for _, source, source_entries in lookup.of_type(node.source_type):
            points_here = any(
                e.param == node.param and e.target_type == resource_type and e.target_id == own_id
                for e in source_entries.references
            )
            if points_here and matches(
                node.where, node.source_type, source, source_entries, lookup
            ):
                return True
        return False
    raise TypeError(f"unknown query node {node!r}")


def _sort_value(
    key_param: str, descending: bool, resource_id: str, entries: IndexEntries
) -> SortValue | None:
    if key_param == "_id":
        return resource_id
    bounds = sort_values(entries).get(key_param)
    if bounds is None:
        return None
    return bounds[1] if descending else bounds[0]


def run_query(
    query: SearchQuery, corpus: Mapping[tuple[str, str], dict], registry: SearchRegistry
) -> list[str]:
    """Ids of the corpus resources matching `query`, in the order the engines must return them.

    All matches, unpaginated (`count`, `cursor` and includes are the caller's business). For
    a system-level search (resource_type None) the results are "Type/id", tied on id then type.
    """
    lookup = CorpusLookup(corpus, registry)
    hits: list[tuple[str, str, IndexEntries]] = []
    for resource_type, resource_id in corpus:
        if query.resource_type is not None and resource_type != query.resource_type:
            continue
        entries = lookup.entries(resource_type, resource_id)
        if matches(
            query.where, resource_type, corpus[(resource_type, resource_id)], entries, lookup
        ):
            hits.append((resource_type, resource_id, entries))

    def compare(a: tuple[str, str, IndexEntries], b: tuple[str, str, IndexEntries]) -> int:
        for key in query.sort:
            va = _sort_value(key.param, key.descending, a[1], a[2])
            vb = _sort_value(key.param, key.descending, b[1], b[2])
            if va is None and vb is None:
                continue
            if va is None:
                return 1
            if vb is None:
                return -1
            if va != vb:
                smaller = va < vb  # type: ignore[operator]
                return (1 if smaller else -1) if key.descending else (-1 if smaller else 1)
        if a[1] != b[1]:
            return -1 if a[1] < b[1] else 1
        return (a[0] > b[0]) - (a[0] < b[0])

    hits.sort(key=functools.cmp_to_key(compare))
    if query.resource_type is None:
        return [f"{t}/{i}" for t, i, _ in hits]
    return [i for _, i, _ in hits]

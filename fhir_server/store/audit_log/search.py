"""AuditEvent searches over the log, with the search engines' semantics.

The log indexes one thing, the patients of an event's compartment. A search narrows its
candidates by the patient it names (every search a patient or representative makes does:
R16 binds it to their compartment), then decides its whole clause tree on each candidate's
index entries with `search.evaluate.matches`, the reference semantics the SQLite and
MongoDB compilers are tested against, and orders and pages the matches as they do
(`evaluate.run_query`'s order, keyset cursors). Events are immutable, so their index
entries are computed once per process and kept (bounded) for the next search.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

import orjson

from fhir_server.errors import error
from fhir_server.search.evaluate import matches
from fhir_server.search.extract import extract, sort_values
from fhir_server.search.index import IndexEntries
from fhir_server.search.query import (
    And,
    Chain,
    Has,
    InCompartment,
    Node,
    Not,
    Or,
    ReferenceTest,
    SearchQuery,
    SummaryMode,
    TotalMode,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.store.audit_log.port import AuditLogEngine
from fhir_server.store.audit_log.record import AUDIT_EVENT, LogRecord
from fhir_server.store.cursor import (
    CursorPosition,
    CursorValue,
    encode_cursor,
    query_position,
)
from fhir_server.store.page import SearchPage, SearchRow

ENGINE = "audit-log"
_ENTRIES_KEPT = 20_000

# (type, id) -> (resource, its index entries), for chains from an AuditEvent to a resource.
ResourceLookup = Callable[[str, str], "tuple[dict, IndexEntries] | None"]


class _Lookup:
    """`evaluate.Lookup` for AuditEvent clauses: chains reach the resource store; `_has`
    would need every resource of a type and is refused before the search runs."""

    def __init__(self, resource: ResourceLookup) -> None:
        self._resource = resource

    def get(self, resource_type: str, resource_id: str):
        return self._resource(resource_type, resource_id)

    def of_type(self, resource_type: str):  # pragma: no cover - refused by `check_supported`
        raise AssertionError("_has is refused on AuditEvent searches")


def check_supported(where: Node) -> None:
    """`_has` inside an AuditEvent search (another resource pointing to the event) is
    refused: nothing but the log's own events points to an AuditEvent in this server."""
    if isinstance(where, Has):
        raise error(
            400,
            "not-supported",
            "_has is not supported on AuditEvent searches",
            expression="_has",
        )
    if isinstance(where, (And, Or)):
        for part in where.parts:
            check_supported(part)
    elif isinstance(where, Not):
        check_supported(where.part)
    elif isinstance(where, Chain):
        check_supported(where.where)


def patients_named(where: Node) -> tuple[str, ...] | None:
    """The patients a search is bound to (a top-level compartment or `patient` clause, or
    an Or of them), or None when it names none and every event is a candidate."""
    parts = where.parts if isinstance(where, And) else (where,)
    for part in parts:
        named = _patients_of(part)
        if named is not None:
            return named
        if isinstance(part, And):
            inner = patients_named(part)
            if inner is not None:
                return inner
    return None


def _patients_of(node: Node) -> tuple[str, ...] | None:
    if isinstance(node, InCompartment):
        return (node.patient_id,)
    if (
        isinstance(node, ReferenceTest)
        and node.param == "patient"
        and node.target_id is not None
        and node.target_type in (None, "Patient")
        and node.url is None
        and node.identifier_value is None
    ):
        return (node.target_id,)
    if isinstance(node, Or) and node.parts:
        found: list[str] = []
        for part in node.parts:
            named = _patients_of(part)
            if named is None:
                return None
            found.extend(named)
        return tuple(dict.fromkeys(found))
    return None


class EntriesCache:
    """Index entries of log events by id, computed on first use (events never change)."""

    def __init__(self, registry: SearchRegistry, size: int = _ENTRIES_KEPT) -> None:
        self._registry = registry
        self._size = size
        self._kept: OrderedDict[str, tuple[dict, IndexEntries]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, record: LogRecord) -> tuple[dict, IndexEntries]:
        with self._lock:
            found = self._kept.get(record.id)
            if found is not None:
                self._kept.move_to_end(record.id)
                return found
        resource = orjson.loads(record.body)
        found = (resource, extract(resource, self._registry))
        with self._lock:
            self._kept[record.id] = found
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return found


def _cursor_value(value: object) -> CursorValue:
    if value is None or type(value) in (int, str):
        return value  # type: ignore[return-value]
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _sort_key(query: SearchQuery, resource_id: str, entries: IndexEntries) -> tuple:
    values = sort_values(entries)
    key: list[CursorValue] = []
    for sort in query.sort:
        if sort.param == "_id":
            key.append(resource_id)
            continue
        bounds = values.get(sort.param)
        key.append(None if bounds is None else _cursor_value(bounds[1 if sort.descending else 0]))
    return tuple(key)


def _compare(query: SearchQuery, a: tuple[tuple, str], b: tuple[tuple, str]) -> int:
    """`evaluate.run_query`'s order: each sort key (no value last, both directions), then id."""
    for sort, va, vb in zip(query.sort, a[0], b[0], strict=True):
        if va == vb:
            continue
        if va is None:
            return 1
        if vb is None:
            return -1
        smaller = va < vb
        return (1 if smaller else -1) if sort.descending else (-1 if smaller else 1)
    return (a[1] > b[1]) - (a[1] < b[1])


def search(
    log: AuditLogEngine,
    query: SearchQuery,
    entries: EntriesCache,
    resource: ResourceLookup,
    *,
    cursor_key: bytes,
    cursor_binding: str,
) -> SearchPage:
    check_supported(query.where)
    lookup = _Lookup(resource)
    hits: list[tuple[tuple[CursorValue, ...], str, LogRecord]] = []
    for record in log.scan(patients_named(query.where)):
        event, event_entries = entries.of(record)
        if matches(query.where, AUDIT_EVENT, event, event_entries, lookup):
            hits.append((_sort_key(query, record.id, event_entries), record.id, record))
    total = (
        len(hits)
        if query.total in (TotalMode.ACCURATE, TotalMode.ESTIMATE)
        or query.summary is SummaryMode.COUNT
        else None
    )
    if query.summary is SummaryMode.COUNT or query.count <= 0:
        return SearchPage([], total=total)
    Hit = tuple[tuple[CursorValue, ...], str, LogRecord]

    def order(a: Hit, b: Hit) -> int:
        return _compare(query, (a[0], a[1]), (b[0], b[1]))

    hits.sort(key=functools.cmp_to_key(order))

    position, forward = query_position(
        query,
        engine=ENGINE,
        cursor_key=cursor_key,
        cursor_binding=cursor_binding,
        key_length=len(query.sort),
    )
    candidates: Sequence = hits
    if position is not None:
        mark = (position.key, position.id)
        if forward:
            candidates = [h for h in hits if _compare(query, (h[0], h[1]), mark) > 0]
        else:
            candidates = [h for h in reversed(hits) if _compare(query, (h[0], h[1]), mark) < 0]
    fetched = list(candidates[: query.count + 1])
    more = len(fetched) > query.count
    fetched = fetched[: query.count]
    if not forward:
        fetched.reverse()

    def cursor_at(hit: tuple, forward_: bool) -> str:
        at = CursorPosition(tuple(hit[0]), AUDIT_EVENT, hit[1], forward_)
        return encode_cursor(
            at, query=query, engine=ENGINE, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    next_cursor = previous_cursor = None
    if fetched:
        if more if forward else True:
            next_cursor = cursor_at(fetched[-1], True)
        if position is not None if forward else more:
            previous_cursor = cursor_at(fetched[0], False)
    rows = [SearchRow(AUDIT_EVENT, hit[1], hit[2].body) for hit in fetched]
    return SearchPage(rows, next_cursor, previous_cursor, total)


def references_from(
    records: Iterable[tuple[str, bytes]], param: str, entries: EntriesCache
) -> list[tuple[str, str]]:
    """(type, id) of the local references of `param` in the given AuditEvents (`_include`)."""
    found: list[tuple[str, str]] = []
    for event_id, body in records:
        record = LogRecord(0, event_id, 0, "", (), "", "", "", "", "", body)
        _, event_entries = entries.of(record)
        for reference in event_entries.references:
            if (
                reference.param == param
                and reference.target_type is not None
                and reference.target_id is not None
                and (reference.target_type, reference.target_id) not in found
            ):
                found.append((reference.target_type, reference.target_id))
    return found

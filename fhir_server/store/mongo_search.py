"""FHIR search on MongoDB: the query AST compiled to a filter document over `mongo_index` fields.

Each value test is one `$elemMatch` on its typed array, so every part of a value (system
and code, low and high) is matched within one element. `Not` is `$nor`, `:missing` a test
on the `prm` array. `Chain` and `Has` need another collection: they are resolved first, by
a bounded query for ids on that collection, and substituted as `$in` lists (at most
SUBQUERY_LIMIT ids, else FhirError 400 too-costly rather than a silently partial answer;
and at most SUBSTITUTED_LIMIT ids in all the lists of one filter, which MongoDB takes in one
command of at most 16 MiB).
Only standard query operators are used (no `$where`, no JavaScript), the same on MongoDB and
mongomock.

Order: as on SQLite (see `sqlite_search`): `_sort` keys with missing values last, then id,
then type. Parameter sorts are MongoDB descending sorts over the `srt` keys (see
`mongo_index`), which puts missing values last. A system-level search queries each resource
collection (names starting with an upper-case letter, not ending in `_history`) and merges.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import bad_request
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
    Everything,
    Has,
    IdTest,
    Include,
    InCompartment,
    Missing,
    Node,
    Not,
    NumberTest,
    Or,
    QuantityTest,
    ReferenceTest,
    SearchQuery,
    StringMatch,
    StringTest,
    SummaryMode,
    TokenMatch,
    TokenTest,
    TotalMode,
    UriMatch,
    UriTest,
)
from fhir_server.store.cursor import CursorPosition, encode_cursor, query_position
from fhir_server.store.includes import resolve_rounds
from fhir_server.store.mongo_index import sort_path
from fhir_server.store.page import SearchPage, SearchRow
from fhir_server.store.search_values import (
    OF_TYPE_SUFFIX,
    AllOf,
    AnyOf,
    Cmp,
    Pred,
    encode_decimal,
    of_type_code,
    prefix_predicate,
    prefix_upper_bound,
    uri_prefixes,
)

ENGINE = "mongo"
SUBQUERY_LIMIT = 10_000
# Ids the Chain and Has subqueries of one filter substitute, together. A search holds up to
# a hundred parameters (`search.parameters.MAX_PARAMETERS`), each a chain of up to
# SUBQUERY_LIMIT ids: 98 chains over a record of 2,500 documents (ids of 64 characters) made
# an 18 MB filter, over the 16 MiB of a MongoDB command, a 500 where SQLite (which joins)
# answered. 50,000 ids of at most 64 characters are under 4 MB of `$in` lists.
SUBSTITUTED_LIMIT = 50_000
# Ids of one `$in` list of an include (`_forward`, `_reverse`): the targets a page's
# references name, unbounded in number (six Lists of 40,000 items made one list of 240,000,
# 18 MB, over the 16 MiB of a command: a 500). Read 500 at a time, as SQLite reads them
# (`sqlite_search._CHUNK`), so that both engines give the included rows in the same order.
INCLUDE_CHUNK = 500
LAST_UPDATED = "_lastUpdated"

NEVER: dict = {"_id": {"$in": []}}
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}

Filter = dict[str, Any]


def all_of(*parts: Filter) -> Filter:
    kept = [p for p in parts if p]
    if not kept:
        return {}
    return kept[0] if len(kept) == 1 else {"$and": kept}


def any_of(parts: Sequence[Filter]) -> Filter:
    if any(not p for p in parts):
        return {}
    if not parts:
        return NEVER
    return parts[0] if len(parts) == 1 else {"$or": list(parts)}


def none_of(part: Filter) -> Filter:
    return NEVER if not part else {"$nor": [part]}


def resource_collections(db: Any) -> list[str]:
    """The collections holding current resources (one per type, named after the type)."""
    return sorted(
        n for n in db.list_collection_names() if n[:1].isupper() and not n.endswith("_history")
    )


class Compiler:
    """Compiles query nodes for one database; Chain/Has run their id subqueries on it.
    One compiler per filter sent: it counts the ids its subqueries substitute
    (SUBSTITUTED_LIMIT)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.substituted = 0

    def filter(self, node: Node, rtype: str) -> Filter:
        """The filter matching the `rtype` documents `node` matches (deleted ones aside)."""
        match node:
            case Everything():
                return {}
            case And(parts=parts):
                return all_of(*(self.filter(p, rtype) for p in parts))
            case Or(parts=parts):
                return any_of([self.filter(p, rtype) for p in parts])
            case Not(part=part):
                return none_of(self.filter(part, rtype))
            case IdTest(ids=ids):
                return {"_id": {"$in": list(ids)}}
            case Missing(param=param, missing=missing):
                return none_of({"prm": param}) if missing else {"prm": param}
            case TokenTest():
                return _token(node)
            case StringTest(param=param, value=value, match=match):
                if match is StringMatch.EXACT:
                    cond: Filter = {"e": value}
                elif match is StringMatch.CONTAINS:
                    cond = {"n": {"$regex": _literal(value)}}
                else:
                    cond = _starts_with("n", value)
                return _elem("str", param, [cond])
            case DateTest(param=param, prefix=prefix, low=low, high=high):
                pred = prefix_predicate(prefix, low, high)
                if param == LAST_UPDATED:
                    return _render(pred, "lu", "lu", _same)
                return _elem("dt", param, [_render(pred, "lo", "hi", _same)])
            case NumberTest(param=param, prefix=prefix, low=low, high=high):
                return _elem(
                    "num", param, [_render(prefix_predicate(prefix, low, high), "lo", "hi", _enc)]
                )
            case QuantityTest():
                return _quantity(node)
            case ReferenceTest():
                return _reference(node)
            case UriTest(param=param, value=value, match=match):
                if match is UriMatch.BELOW:
                    cond = _starts_with("v", value)
                elif match is UriMatch.ABOVE:
                    cond = {"v": {"$in": uri_prefixes(value)}}
                else:
                    cond = {"v": value}
                return _elem("uri", param, [cond])
            case InCompartment(patient_id=patient_id):
                return {"pat": patient_id}
            case Chain():
                return self._chain(node)
            case Has():
                return self._has(node, rtype)
        raise TypeError(f"unsupported query node {node!r}")

    def _chain(self, n: Chain) -> Filter:
        target_filter = all_of({"del": False}, self.filter(n.where, n.target_type))
        cursor = self.db[n.target_type].find(target_filter, {"_id": 1}).limit(SUBQUERY_LIMIT + 1)
        ids = [doc["_id"] for doc in cursor]
        _check_bound(len(ids), f"{n.param}:{n.target_type}")
        self._substitute(len(ids))
        return {"ref": {"$elemMatch": {"p": n.param, "tt": n.target_type, "ti": {"$in": ids}}}}

    def _has(self, n: Has, rtype: str) -> Filter:
        source_filter = all_of(
            {"del": False},
            {"ref": {"$elemMatch": {"p": n.param, "tt": rtype}}},
            self.filter(n.where, n.source_type),
        )
        docs = list(
            self.db[n.source_type].find(source_filter, {"ref": 1}).limit(SUBQUERY_LIMIT + 1)
        )
        _check_bound(len(docs), f"_has:{n.source_type}:{n.param}")
        ids = {
            ref["ti"]
            for doc in docs
            for ref in doc.get("ref", ())
            if ref.get("p") == n.param and ref.get("tt") == rtype and ref.get("ti") is not None
        }
        self._substitute(len(ids))
        return {"_id": {"$in": sorted(ids)}}

    def _substitute(self, count: int) -> None:
        self.substituted += count
        if self.substituted > SUBSTITUTED_LIMIT:
            raise bad_request(
                f"the chains and _has of the search match more than {SUBSTITUTED_LIMIT}"
                " resources together; narrow them (SUBSTITUTED_LIMIT)",
                code="too-costly",
            )


def _check_bound(count: int, what: str) -> None:
    if count > SUBQUERY_LIMIT:
        raise bad_request(
            f"the search on {what} matches more than {SUBQUERY_LIMIT} resources; narrow it",
            code="too-costly",
        )


def _same(value: object) -> object:
    return value


def _enc(value: object) -> str:
    return encode_decimal(value)  # type: ignore[arg-type]


def _elem(array: str, param: str, conds: Sequence[Filter]) -> Filter:
    match_doc: Filter = {"p": param}
    kept = [c for c in conds if c]
    if len(kept) == 1:
        match_doc.update(kept[0])
    elif kept:
        match_doc["$and"] = kept
    return {array: {"$elemMatch": match_doc}}


def _starts_with(field: str, value: str) -> Filter:
    """Strings starting with `value`, as a range. A value with no upper bound is made only
    of U+10FFFF (`prefix_upper_bound`): every string at or above it starts with it (its
    first characters can be no higher), so `$gte` alone is the test. It was a `^` pattern,
    which a server refuses past 16,384 bytes: 4,200 of them were a 500."""
    if not value:
        return {field: {"$ne": None}}
    upper = prefix_upper_bound(value)
    if upper is None:
        return {field: {"$gte": value}}
    return {field: {"$gte": value, "$lt": upper}}


def _literal(value: str) -> str:
    """A pattern matching `value` literally, as MongoDB takes it: `re.escape` leaves a NUL
    as is, and the server refuses a regular expression holding one (BadValue: "Regular
    expression cannot contain an embedded null byte"), which made `name:contains=%00` a
    500 on MongoDB where SQLite answers. `\\x00` is the NUL for PCRE and Python alike."""
    return re.escape(value).replace("\x00", "\\x00")


def _render(pred: Pred, low: str, high: str, encode: Callable[[object], object]) -> Filter:
    match pred:
        case Cmp(bound=bound, op=op, value=value):
            return {low if bound == "low" else high: {_OPS[op]: encode(value)}}
        case AllOf(parts=parts):
            return {"$and": [_render(p, low, high, encode) for p in parts]}
        case AnyOf(parts=parts):
            return {"$or": [_render(p, low, high, encode) for p in parts]}
    raise TypeError(pred)


def _token(n: TokenTest) -> Filter:
    if n.match is TokenMatch.TEXT:
        return _elem("tok", n.param, [_starts_with("d", n.text or "")])
    if n.match is TokenMatch.OF_TYPE:
        cond: Filter = {"c": of_type_code(n.code, n.value)}
        if n.system is not None:
            cond["s"] = n.system
        return _elem("tok", n.param + OF_TYPE_SUFFIX, [cond])
    cond = {}
    if n.code is not None:
        cond["c"] = n.code
    if not n.any_system:
        cond["s"] = n.system
    return _elem("tok", n.param, [cond])


def _quantity(n: QuantityTest) -> Filter:
    conds = [_render(prefix_predicate(n.prefix, n.low, n.high), "lo", "hi", _enc)]
    if n.system is not None:
        conds.append({"s": n.system})
    if n.code is not None:
        conds.append(
            {"c": n.code} if n.system is not None else {"$or": [{"c": n.code}, {"u": n.code}]}
        )
    return _elem("qty", n.param, conds)


def _reference(n: ReferenceTest) -> Filter:
    cond = {
        key: value
        for key, value in (
            ("ti", n.target_id),
            ("tt", n.target_type),
            ("u", n.url),
            ("iv", n.identifier_value),
            ("is", n.identifier_system),
        )
        if value is not None
    }
    return _elem("ref", n.param, [cond])


# --- order and keyset -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Col:
    """A MongoDB sort field; a missing value counts as MongoDB's lowest (null)."""

    field: str
    direction: int  # 1 ascending, -1 descending
    nullable: bool

    def reversed(self) -> _Col:
        return _Col(self.field, -self.direction, self.nullable)

    def after(self, value: object, inclusive: bool = False) -> Filter | None:
        if value is None:
            if self.direction == 1:
                return {} if inclusive else {self.field: {"$ne": None}}
            return {self.field: None} if inclusive else None
        op = (
            ("$gte" if inclusive else "$gt")
            if self.direction == 1
            else ("$lte" if inclusive else "$lt")
        )
        cond = {self.field: {op: value}}
        if self.direction == -1 and self.nullable:
            return {"$or": [cond, {self.field: None}]}
        return cond

    def equal(self, value: object) -> Filter:
        return {self.field: value}  # None matches null or missing


def _keyset(cols: Sequence[_Col], values: Sequence[object], last_inclusive: bool) -> Filter:
    branches = []
    for i, (col, value) in enumerate(zip(cols, values, strict=True)):
        after = col.after(value, inclusive=last_inclusive and i == len(cols) - 1)
        if after is None:
            continue
        branches.append(
            all_of(*(c.equal(v) for c, v in zip(cols[:i], values[:i], strict=True)), after)
        )
    return any_of(branches)


def _get(doc: dict, path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _compare(a: object, b: object, direction: int) -> int:
    if a == b:
        return 0
    if a is None:
        less = True
    elif b is None:
        less = False
    else:
        less = a < b  # type: ignore[operator]
    return (-1 if less else 1) * direction


# --- search -----------------------------------------------------------------------------


def search(db: Any, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
    """One page of `query`'s results; same contract and paging guarantees as
    `sqlite_search.search` (FhirError 400 on a bad cursor or a too-broad Chain/Has)."""
    types = [query.resource_type] if query.resource_type else resource_collections(db)
    filters = {t: all_of({"del": False}, Compiler(db).filter(query.where, t)) for t in types}

    total = None
    if (
        query.total in (TotalMode.ACCURATE, TotalMode.ESTIMATE)
        or query.summary is SummaryMode.COUNT
    ):
        total = sum(db[t].count_documents(f) for t, f in filters.items())
    if query.summary is SummaryMode.COUNT or query.count <= 0:
        return SearchPage([], total=total)

    key_cols: list[_Col] = []
    for key in query.sort:
        if key.param == "_id":
            key_cols.append(_Col("_id", -1 if key.descending else 1, nullable=False))
        elif key.param == LAST_UPDATED:
            key_cols.append(_Col("lu", -1 if key.descending else 1, nullable=False))
        else:
            key_cols.append(_Col(sort_path(key.param, key.descending), -1, nullable=True))

    position, forward = query_position(
        query,
        engine=ENGINE,
        cursor_key=cursor_key,
        cursor_binding=cursor_binding,
        key_length=len(key_cols),
    )
    cols = key_cols if forward else [c.reversed() for c in key_cols]
    id_col = _Col("_id", 1 if forward else -1, nullable=False)
    # pymongo builds the sort as a document: a field may appear once (the first one decides).
    sort_spec: list[tuple[str, int]] = []
    for col in [*cols, id_col]:
        if all(field != col.field for field, _ in sort_spec):
            sort_spec.append((col.field, col.direction))
    projection = {"body": 1, "facts": 1, **{c.field: 1 for c in cols}}

    found: list[tuple[str, dict]] = []
    for t in types:
        flt = filters[t]
        if position is not None:
            # Same id in another collection: the type decides (the last tie-break).
            type_after = t > position.resource_type if forward else t < position.resource_type
            flt = all_of(flt, _keyset([*cols, id_col], [*position.key, position.id], type_after))
        cursor = db[t].find(flt, projection).sort(sort_spec).limit(query.count + 1)
        found.extend((t, doc) for doc in cursor)

    def order(a: tuple[str, dict], b: tuple[str, dict]) -> int:
        for col in cols:
            c = _compare(_get(a[1], col.field), _get(b[1], col.field), col.direction)
            if c:
                return c
        return _compare(a[1]["_id"], b[1]["_id"], id_col.direction) or _compare(
            a[0], b[0], id_col.direction
        )

    found.sort(key=functools.cmp_to_key(order))
    more = len(found) > query.count
    found = found[: query.count]
    if not forward:
        found.reverse()

    def cursor_at(item: tuple[str, dict], forward_: bool) -> str:
        t, doc = item
        pos = CursorPosition(tuple(_get(doc, c.field) for c in key_cols), t, doc["_id"], forward_)
        return encode_cursor(
            pos, query=query, engine=ENGINE, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    next_cursor = previous_cursor = None
    if found:
        if more or not forward:
            next_cursor = cursor_at(found[-1], True)
        if (position is not None) if forward else more:
            previous_cursor = cursor_at(found[0], False)
    rows = [_row(t, doc) for t, doc in found]
    return SearchPage(rows, next_cursor, previous_cursor, total)


# --- _include / _revinclude -----------------------------------------------------------------


def resolve_includes(
    db: Any,
    page_rows: Sequence[SearchRow],
    includes: Sequence[Include],
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    """Same contract as `sqlite_search.resolve_includes`."""

    def one_round(current: Sequence[SearchRow], active: Sequence[Include]) -> list[SearchRow]:
        found: list[SearchRow] = []
        for inc in active:
            reach = _reverse if inc.reverse else _forward
            found += reach(db, current, inc, allowed)
        return found

    return resolve_rounds(page_rows, includes, one_round)


def _fetch_allowed(
    db: Any, rtype: str, allowed: Callable[[str], Node], condition: Filter
) -> list[SearchRow]:
    flt = all_of({"del": False}, condition, Compiler(db).filter(allowed(rtype), rtype))
    return [
        _row(rtype, doc) for doc in db[rtype].find(flt, {"body": 1, "facts": 1}).sort([("_id", 1)])
    ]


def _forward(
    db: Any,
    rows: Iterable[SearchRow],
    inc: Include,
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    ids = [row.id for row in rows if row.resource_type == inc.source_type]
    targets: dict[str, set[str]] = {}
    for chunk in _chunks(ids):
        for doc in db[inc.source_type].find({"_id": {"$in": chunk}, "del": False}, {"ref": 1}):
            for ref in doc.get("ref", ()):
                tt, ti = ref.get("tt"), ref.get("ti")
                if ref.get("p") != inc.param or tt is None or ti is None:
                    continue
                if inc.target_type is None or tt == inc.target_type:
                    targets.setdefault(tt, set()).add(ti)
    found: list[SearchRow] = []
    for tt in sorted(targets):
        for chunk in _chunks(sorted(targets[tt])):
            found += _fetch_allowed(db, tt, allowed, {"_id": {"$in": chunk}})
    return found


def _reverse(
    db: Any,
    rows: Iterable[SearchRow],
    inc: Include,
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    by_type: dict[str, list[str]] = {}
    for row in rows:
        if inc.target_type is None or row.resource_type == inc.target_type:
            by_type.setdefault(row.resource_type, []).append(row.id)
    found: list[SearchRow] = []
    for tt, ids in sorted(by_type.items()):
        for chunk in _chunks(ids):
            condition = {"ref": {"$elemMatch": {"p": inc.param, "tt": tt, "ti": {"$in": chunk}}}}
            found += _fetch_allowed(db, inc.source_type, allowed, condition)
    return found


def _chunks(values: Sequence[str], size: int = INCLUDE_CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _row(resource_type: str, doc: dict) -> SearchRow:
    facts = doc.get("facts")
    return SearchRow(
        resource_type, doc["_id"], bytes(doc["body"]), bytes(facts) if facts is not None else None
    )

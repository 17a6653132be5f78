"""FHIR search on SQLite: the query AST compiled to one SQL statement with bound parameters.

Every clause becomes `rid IN (SELECT rid FROM ix_<kind> WHERE type = ? AND param = ? AND
...)`, an index range scan over the typed index tables (`sqlite_index`), so the planner can
drive the search from the most selective clause and check the others by membership. `Not` is
`NOT (...)`, `Chain` a subquery over the target type's resources, `Has` a subquery over the
source type's reference rows. No value ever appears in the SQL text.

Order: the `_sort` keys (ascending by each resource's lowest value, descending by its
highest, resources without a value last in both directions), then id ascending (then type,
for system-level searches). Paging is keyset paging on that total order, see `search`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fhir_server.search.normalize import normalize_string
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
from fhir_server.store import sqlite_index, sqlite_labels
from fhir_server.store.cursor import CursorPosition, encode_cursor, query_position
from fhir_server.store.includes import resolve_rounds
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
from fhir_server.store.sqlite_index import VALUE_TABLES

ENGINE = "sqlite"
_CHUNK = 500

LAST_UPDATED = "_lastUpdated"


class _Sql:
    """Named bound parameters and unique aliases for one statement."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self._n = 0

    def p(self, value: object) -> str:
        self._n += 1
        name = f"p{self._n}"
        self.params[name] = value
        return ":" + name

    def alias(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    def plist(self, values: Iterable[object]) -> str:
        return ", ".join(self.p(v) for v in values)


# --- where-clause ---------------------------------------------------------------------


def compile_where(
    sql: _Sql, node: Node, r: str, rtype: str | None, *, correlated: bool = False
) -> str:
    """SQL condition true for the rows of `resource` alias `r` that `node` matches.

    `rtype` is the resource type of `r` when known (a type-level search); None for a
    system-level search, where clauses are correlated on rid only.

    Index clauses take one of two equivalent shapes. By default a membership test,
    `r.rid IN (SELECT rid FROM ix_... WHERE ...)`, which SQLite answers by materializing the
    subquery once: right when the subquery is small or drives the search. With `correlated`,
    `EXISTS (SELECT 1 FROM ix_... WHERE rid = r.rid AND ...)`, a probe of the rid index per
    candidate row: right for the clauses that only filter the rows another clause found
    (materializing `status=current` would read 95 % of the documents; see `search`).
    A probe for masking labels only (`sqlite_labels`) tests the candidate's own row instead.
    """
    if correlated and isinstance(node, TokenTest | Or):
        mask = sqlite_labels.mask_of(node)
        if mask is not None:
            return f"({r}.labels & {sql.p(mask)}) != 0"
    match node:
        case Everything():
            return "1"
        case And(parts=parts):
            return (
                "("
                + " AND ".join(
                    compile_where(sql, p, r, rtype, correlated=correlated) for p in parts
                )
                + ")"
                if parts
                else "1"
            )
        case Or(parts=parts):
            return _or(sql, parts, r, rtype, correlated) if parts else "0"
        case Not(part=part):
            return f"NOT ({compile_where(sql, part, r, rtype, correlated=correlated)})"
        case IdTest(ids=ids):
            return f"{r}.id IN ({sql.plist(ids)})" if ids else "0"
        case Missing(param=param, missing=missing):
            exists = _has_entries(sql, r, param)
            return f"NOT {exists}" if missing else exists
        case DateTest(param=param, prefix=prefix, low=low, high=high) if param == LAST_UPDATED:
            pred = prefix_predicate(prefix, low, high)
            col = f"{r}.last_updated"
            return _render_pred(sql, pred, col, col, lambda v: v)
        case Has():
            return _has(sql, node, r, rtype)
    source = rid_source(sql, node, rtype, correlated=correlated)
    if source is None:
        raise TypeError(f"unsupported query node {node!r}")
    return source.clause(r, correlated)


# Alternatives of one index table from which an Or reads them in one subquery. Below it
# each keeps its own subquery, whose plan SQLite chooses on the composite index: grouped,
# the gate's two- and three-way Ors (a label or an author, R14) made a practitioner's
# searches of a heavy record 0.3-0.5 ms slower at 1M documents (`bench access`, 1.10x of
# the store alone against 1.49x).
_GROUPED_FROM = 8


def _or(sql: _Sql, parts: Sequence[Node], r: str, rtype: str | None, correlated: bool) -> str:
    """The alternatives of an Or; many read from the same index rows as one clause.

    `a=x,y,...` is an Or of one test per value. Written as one subquery per value, a search
    of nine `type:not` of 100 values each (3.6 KB) took 5 s on a record of 200 documents:
    SQLite's cost per row grows with the square of the correlated subqueries in the
    statement (100 of them: 2 ms for 200 rows, 300: 0.18 s, 900: 2.1 s). EXISTS and IN
    distribute over OR, so `_GROUPED_FROM` or more alternatives of one source are one
    subquery whose WHERE is the OR of their conditions, the same rows: nine subqueries
    instead of 900. Fewer keep their own (`_GROUPED_FROM`).
    """
    alternatives: list[tuple[tuple[str, str], tuple[str, ...]] | str] = []
    for part in parts:
        source = rid_source(sql, part, rtype, correlated=correlated)
        if source is None:
            alternatives.append(compile_where(sql, part, r, rtype, correlated=correlated))
        else:
            alternatives.append(((source.source, source.rid), source.conds))
    grouped: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for alternative in alternatives:
        if not isinstance(alternative, str):
            grouped.setdefault(alternative[0], []).append(alternative[1])
    clauses: list[str] = []
    for alternative in alternatives:
        if isinstance(alternative, str):
            clauses.append(alternative)
            continue
        (table, rid), conds = alternative
        group = grouped[table, rid]
        if len(group) < _GROUPED_FROM:
            clauses.append(RidSource(table, rid, conds).clause(r, correlated))
        elif group[0] is conds:  # the whole group, where its first alternative stood
            either = "(" + " OR ".join(f"({' AND '.join(c) or '1'})" for c in group) + ")"
            clauses.append(RidSource(table, rid, (either,)).clause(r, correlated))
    return "(" + " OR ".join(clauses) + ")"


@dataclass(frozen=True, slots=True)
class RidSource:
    """The index rows a leaf clause selects: `SELECT {rid} FROM {source} WHERE {conds}`."""

    source: str
    rid: str
    conds: tuple[str, ...]

    def clause(self, r: str, correlated: bool) -> str:
        if correlated:
            conds = " AND ".join((f"{self.rid} = {r}.rid", *self.conds))
            return f"EXISTS (SELECT 1 FROM {self.source} WHERE {conds})"
        return f"{r}.rid IN ({self.select()})"

    def select(self) -> str:
        return f"SELECT {self.rid} FROM {self.source} WHERE {' AND '.join(self.conds) or '1'}"


def rid_source(
    sql: _Sql, node: Node, rtype: str | None, *, correlated: bool = False
) -> RidSource | None:
    """The index rows of a leaf clause (None for a node that is not one: And, Or, Not,
    Everything, IdTest, Missing, Has, `_lastUpdated`).

    Correlated sources leave out the `type = ?` condition: the rid already implies the type,
    and without it only the rid indexes can serve the probe (with it, SQLite may pick the
    (type, param, value) index and scan every row of the value for each candidate).
    """
    match node:
        case TokenTest():
            return _token(sql, node, rtype, correlated)
        case StringTest(param=param, value=value, match=match):
            if match is StringMatch.EXACT:
                # The normalized form first: ix_string_norm finds the rows, then the text.
                conds = [f"norm = {sql.p(normalize_string(value))}", f"exact = {sql.p(value)}"]
            elif match is StringMatch.CONTAINS:
                conds = [f"instr(norm, {sql.p(value)}) > 0"]
            else:
                conds = _starts_with(sql, "norm", value)
            return _rid_set(sql, "ix_string", rtype, param, conds, correlated)
        case DateTest(param=param, prefix=prefix, low=low, high=high) if param != LAST_UPDATED:
            pred = prefix_predicate(prefix, low, high)
            cond = _render_pred(sql, pred, "low", "high", lambda v: v)
            return _rid_set(sql, "ix_date", rtype, param, [cond], correlated)
        case NumberTest(param=param, prefix=prefix, low=low, high=high):
            cond = _render_pred(sql, prefix_predicate(prefix, low, high), "low", "high", _enc)
            return _rid_set(sql, "ix_number", rtype, param, [cond], correlated)
        case QuantityTest():
            return _quantity(sql, node, rtype, correlated)
        case ReferenceTest():
            return _reference(sql, node, rtype, correlated)
        case UriTest(param=param, value=value, match=match):
            if match is UriMatch.BELOW:
                conds = _starts_with(sql, "value", value)
            elif match is UriMatch.ABOVE:
                conds = [f"value IN ({sql.plist(uri_prefixes(value))})"] if value else ["0"]
            else:
                conds = [f"value = {sql.p(value)}"]
            return _rid_set(sql, "ix_uri", rtype, param, conds, correlated)
        case InCompartment(patient_id=patient_id):
            # (patient_id, type, rid) is the primary key: a full-key lookup either way.
            conds = [f"patient_id = {sql.p(patient_id)}"]
            if rtype is not None:
                conds.append(f"type = {sql.p(rtype)}")
            return RidSource("ix_compartment", "rid", tuple(conds))
        case Chain():
            return _chain(sql, node, rtype, correlated)
    return None


def _enc(value: object) -> str:
    return encode_decimal(value)  # type: ignore[arg-type]


def _rid_set(
    sql: _Sql, table: str, rtype: str | None, param: str, conds: Sequence[str], correlated: bool
) -> RidSource:
    parts = [f"type = {sql.p(rtype)}"] if rtype is not None and not correlated else []
    parts.append(f"param = {sql.p(param)}")
    parts.extend(conds)
    return RidSource(table, "rid", tuple(parts))


def _starts_with(sql: _Sql, col: str, value: str) -> list[str]:
    if not value:
        return [f"{col} IS NOT NULL"]
    upper = prefix_upper_bound(value)
    conds = [f"{col} >= {sql.p(value)}"]
    if upper is not None:
        conds.append(f"{col} < {sql.p(upper)}")
    else:
        conds.append(f"substr({col}, 1, {len(value)}) = {sql.p(value)}")
    return conds


def _render_pred(
    sql: _Sql, pred: Pred, low_col: str, high_col: str, encode: Callable[[object], object]
) -> str:
    match pred:
        case Cmp(bound=bound, op=op, value=value):
            col = low_col if bound == "low" else high_col
            return f"{col} {op} {sql.p(encode(value))}"
        case AllOf(parts=parts):
            return (
                "("
                + " AND ".join(_render_pred(sql, p, low_col, high_col, encode) for p in parts)
                + ")"
            )
        case AnyOf(parts=parts):
            return (
                "("
                + " OR ".join(_render_pred(sql, p, low_col, high_col, encode) for p in parts)
                + ")"
            )
    raise TypeError(pred)


def _token(sql: _Sql, n: TokenTest, rtype: str | None, correlated: bool) -> RidSource:
    param = n.param
    conds: list[str] = []
    if n.match is TokenMatch.TEXT:
        conds = _starts_with(sql, "display", n.text or "")
    elif n.match is TokenMatch.OF_TYPE:
        param = n.param + OF_TYPE_SUFFIX
        if n.system is not None:
            conds.append(f"system = {sql.p(n.system)}")
        conds.append(f"code = {sql.p(of_type_code(n.code, n.value))}")
    else:
        if n.code is not None:
            conds.append(f"code = {sql.p(n.code)}")
        if not n.any_system:
            conds.append("system IS NULL" if n.system is None else f"system = {sql.p(n.system)}")
    return _rid_set(sql, "ix_token", rtype, param, conds, correlated)


def _quantity(sql: _Sql, n: QuantityTest, rtype: str | None, correlated: bool) -> RidSource:
    conds = [_render_pred(sql, prefix_predicate(n.prefix, n.low, n.high), "low", "high", _enc)]
    if n.system is not None:
        conds.append(f"system = {sql.p(n.system)}")
    if n.code is not None:
        if n.system is not None:
            conds.append(f"code = {sql.p(n.code)}")
        else:
            conds.append(f"(code = {sql.p(n.code)} OR unit = {sql.p(n.code)})")
    return _rid_set(sql, "ix_quantity", rtype, n.param, conds, correlated)


def _reference(sql: _Sql, n: ReferenceTest, rtype: str | None, correlated: bool) -> RidSource:
    conds = [
        f"{col} = {sql.p(value)}"
        for col, value in (
            ("target_id", n.target_id),
            ("target_type", n.target_type),
            ("url", n.url),
            ("identifier_value", n.identifier_value),
            ("identifier_system", n.identifier_system),
        )
        if value is not None
    ]
    return _rid_set(sql, "ix_reference", rtype, n.param, conds, correlated)


def _chain(sql: _Sql, n: Chain, rtype: str | None, correlated: bool) -> RidSource:
    x, t = sql.alias("x"), sql.alias("t")
    inner = compile_where(sql, n.where, t, n.target_type)
    # As in _search_where: when an index clause can find the targets (patient.identifier=),
    # keep SQLite from preferring a walk of every resource of the target type.
    inner_parts = n.where.parts if isinstance(n.where, And) else (n.where,)
    by_index = any(_probe_rank(part) is not None for part in inner_parts)
    target_type = f"{'+' if by_index else ''}{t}.type = {sql.p(n.target_type)}"
    conds = [f"{x}.type = {sql.p(rtype)}"] if rtype is not None and not correlated else []
    conds += [
        f"{x}.param = {sql.p(n.param)}",
        f"{x}.target_type = {sql.p(n.target_type)}",
        f"{x}.target_id IN (SELECT {t}.id FROM resource {t} WHERE {target_type}"
        f" AND {t}.deleted = 0 AND {inner})",
    ]
    return RidSource(f"ix_reference {x}", f"{x}.rid", tuple(conds))


def _has(sql: _Sql, n: Has, r: str, rtype: str | None) -> str:
    x, s = sql.alias("x"), sql.alias("s")
    inner = compile_where(sql, n.where, s, n.source_type)
    common = (
        f"FROM ix_reference {x} JOIN resource {s} ON {s}.rid = {x}.rid "
        f"WHERE {x}.type = {sql.p(n.source_type)} AND {x}.param = {sql.p(n.param)} "
        f"AND {s}.deleted = 0 AND {inner}"
    )
    if rtype is not None:
        return f"{r}.id IN (SELECT {x}.target_id {common} AND {x}.target_type = {sql.p(rtype)})"
    return f"EXISTS (SELECT 1 {common} AND {x}.target_id = {r}.id AND {x}.target_type = {r}.type)"


def _has_entries(sql: _Sql, r: str, param: str) -> str:
    """Whether resource `r` has any index entry for `param` (`:missing=false`).

    A parameter's entries all live in the typed table of its type, which the engine does
    not know here, so every value table is probed by rid (one index seek each, stopping at
    the first that has a row).
    """
    p = sql.p(param)
    return (
        "("
        + " OR ".join(
            f"EXISTS (SELECT 1 FROM {table} WHERE rid = {r}.rid AND param = {p})"
            for table in VALUE_TABLES
        )
        + ")"
    )


# Per typed table, the expression of a row's sort value: the same values as
# `extract.sort_values` (dates in microseconds, `encode_decimal` text for numbers and
# quantities, whose text order is the numeric order). A NULL (a token without a code, an
# identifier-only reference) is no value.
_SORT_VALUE: dict[str, tuple[str, str]] = {
    "ix_date": ("low", "high"),
    "ix_token": ("code", "code"),
    "ix_string": ("norm", "norm"),
    "ix_reference": (
        "CASE WHEN target_id IS NOT NULL THEN target_type || '/' || target_id ELSE url END",
    )
    * 2,
    "ix_uri": ("value", "value"),
    "ix_number": ("low", "high"),
    "ix_quantity": ("low", "high"),
}


def _sort_value(sql: _Sql, r: str, param: str, descending: bool) -> str:
    """The `_sort` key of resource `r` for `param`: its lowest value (ascending) or highest
    (descending) over its index rows of that parameter, NULL when it has none.

    Computed from the typed rows (`extract.sort_values` semantics: `:of-type` token rows are
    never a key, and they are stored under their own parameter name), so writes keep no
    per-parameter sort table. COALESCE stops at the first table holding the parameter.
    """
    p = sql.p(param)
    aggregate = "MAX" if descending else "MIN"
    probes = [
        f"(SELECT {aggregate}({columns[1 if descending else 0]}) FROM {table}"
        f" WHERE rid = {r}.rid AND param = {p})"
        for table, columns in _SORT_VALUE.items()
        if not (table == "ix_token" and param.endswith(OF_TYPE_SUFFIX))
    ]
    return f"COALESCE({', '.join(probes)})"


# --- order and keyset -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Col:
    expr: str
    descending: bool
    nullable: bool
    nulls_last: bool = True

    def reversed(self) -> _Col:
        return _Col(self.expr, not self.descending, self.nullable, not self.nulls_last)

    def order_by(self) -> str:
        direction = "DESC" if self.descending else "ASC"
        if not self.nullable:
            return f"{self.expr} {direction}"
        nulls = "ASC" if self.nulls_last else "DESC"
        return f"({self.expr} IS NULL) {nulls}, {self.expr} {direction}"

    def after(self, sql: _Sql, value: object) -> str | None:
        """Rows strictly after `value` in this column's order (None: no such rows)."""
        if value is None:
            return None if self.nulls_last else f"{self.expr} IS NOT NULL"
        cmp = f"{self.expr} {'<' if self.descending else '>'} {sql.p(value)}"
        if self.nullable and self.nulls_last:
            return f"({cmp} OR {self.expr} IS NULL)"
        return cmp

    def equal(self, sql: _Sql, value: object) -> str:
        return f"{self.expr} IS NULL" if value is None else f"{self.expr} = {sql.p(value)}"


def _keyset(sql: _Sql, cols: Sequence[_Col], values: Sequence[object]) -> str:
    """Rows strictly after `values` in the lexicographic order of `cols`."""
    branches = []
    for i, (col, value) in enumerate(zip(cols, values, strict=True)):
        after = col.after(sql, value)
        if after is None:
            continue
        eqs = [c.equal(sql, v) for c, v in zip(cols[:i], values[:i], strict=True)]
        branches.append("(" + " AND ".join([*eqs, after]) + ")")
    return "(" + " OR ".join(branches) + ")" if branches else "0"


def _sort_columns(sql: _Sql, query: SearchQuery) -> list[_Col]:
    cols: list[_Col] = []
    for key in query.sort:
        if key.param == "_id":
            cols.append(_Col("r.id", key.descending, nullable=False))
        elif key.param == LAST_UPDATED:
            cols.append(_Col("r.last_updated", key.descending, nullable=False))
        else:
            expr = _sort_value(sql, "r", key.param, key.descending)
            cols.append(_Col(expr, key.descending, nullable=True))
    return cols


# --- search -----------------------------------------------------------------------------

# A leaf clause matching fewer index rows than this drives the search (see _search_where).
DRIVER_LIMIT = 2000
# Probing stops at the first clause matching fewer rows than this.
DRIVER_GOOD_ENOUGH = 200


def _probe_rank(node: Node) -> int | None:
    """The order in which to probe top-level clauses as drivers (most often selective
    first: a patient or other reference, a chain, then values); None: never a driver."""
    match node:
        case ReferenceTest() | InCompartment():
            return 0
        case Chain():
            return 1
        case TokenTest() | StringTest() | UriTest():
            return 2
        case DateTest(param=param) if param != LAST_UPDATED:
            return 3
        case NumberTest() | QuantityTest():
            return 3
    return None


def _choose_driver(
    conn: sqlite3.Connection, parts: Sequence[Node], rtype: str
) -> tuple[int, int] | None:
    """(index, index rows) of the top-level clause that should drive the search, or None.

    Each candidate's index rows are counted up to DRIVER_LIMIT (an index range count, well
    under a millisecond); the smallest below the limit wins. When every clause matches many
    rows, no clause drives: the search walks the resources of the type in result order and
    stops at the page's end, which is fastest for dense matches (`status=current`).
    """
    candidates = sorted(
        (rank, i) for i, part in enumerate(parts) if (rank := _probe_rank(part)) is not None
    )
    best: tuple[int, int] | None = None
    for _, i in candidates:
        probe = _Sql()
        source = rid_source(probe, parts[i], rtype)
        if source is None:
            continue
        count = conn.execute(
            f"SELECT COUNT(*) FROM ({source.select()} LIMIT {DRIVER_LIMIT})", probe.params
        ).fetchone()[0]
        if count < DRIVER_LIMIT and (best is None or count < best[0]):
            best = (count, i)
        if best is not None and best[0] < DRIVER_GOOD_ENOUGH:
            break
    return (best[1], best[0]) if best else None


def _search_where(
    conn: sqlite3.Connection, sql: _Sql, where: Node, rtype: str | None
) -> tuple[str, int | None]:
    """The WHERE clause of a search on `resource r`, shaped so that SQLite reads few rows,
    and the number of index rows of its driving clause (None: no clause drives).

    SQLite plans without statistics about our values, and `type = ?` on the (type, id)
    index looks selective to it, so left alone it walks every resource of the type and
    tests each clause against a materialized list of all matching rids: every search reads
    the whole type. Instead, one top-level clause is chosen to drive (_choose_driver): it
    stays a membership test, `r.type = ?` is written `+r.type = ?` so that the type index
    is not preferred, and every other clause becomes a correlated probe by rid. Without a
    driver (an id search, or only dense clauses), the type index walk in id order is kept,
    with the clauses as probes.
    """
    if rtype is None:
        return " AND ".join(("r.deleted = 0", compile_where(sql, where, "r", rtype))), None
    parts = list(where.parts) if isinstance(where, And) else [where]
    has_ids = any(isinstance(part, IdTest) for part in parts)
    chosen = None if has_ids else _choose_driver(conn, parts, rtype)
    driver, driver_rows = chosen if chosen else (None, None)
    base = ["r.deleted = 0"]
    if driver is None:
        base.append(f"r.type = {sql.p(rtype)}")
    else:
        base.append(f"+r.type = {sql.p(rtype)}")
        base.append(compile_where(sql, parts[driver], "r", rtype))
    base += [
        compile_where(sql, part, "r", rtype, correlated=True)
        for i, part in enumerate(parts)
        if i != driver
    ]
    return " AND ".join(base), driver_rows


def search(
    conn: sqlite3.Connection, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str
) -> SearchPage:
    """One page of `query`'s results (and its total when asked for).

    Keyset paging guarantees, while resources are created, updated or deleted between pages:
    each page holds the rows strictly after (or, for `previous_cursor`, strictly before) the
    row the cursor was taken from, in the order (sort keys, id[, type]) as stored when the
    page is read. So a resource that matches throughout and whose sort values do not change
    is returned exactly once over a full traversal; a resource created (or changed to match)
    after a page was read appears iff its position is after that page; a resource whose
    sort values change can move (be skipped if it moves behind the cursor, or be seen again
    if it moves ahead of it); deleted resources vanish. Totals are recomputed per page.

    `query.rare_filters` are checked late (`_late_page`): on the page's first candidates only.

    Raises FhirError 400 for a cursor that is malformed, tampered with, or issued for another
    query or requester.
    """
    rtype = query.resource_type
    sql = _Sql()
    main, late = _split_rare(query)
    where, driver_rows = _search_where(conn, sql, main, rtype)
    late_where = compile_where(sql, late, "r", rtype, correlated=True) if late else None
    full_where = f"{where} AND {late_where}" if late_where else where
    if late_where and not _late_pays(driver_rows, query.count + 1):
        where, late_where = full_where, None

    total = None
    if (
        query.total in (TotalMode.ACCURATE, TotalMode.ESTIMATE)
        or query.summary is SummaryMode.COUNT
    ):
        total = conn.execute(
            f"SELECT COUNT(*) FROM resource r WHERE {full_where}", sql.params
        ).fetchone()[0]
    if query.summary is SummaryMode.COUNT or query.count <= 0:
        return SearchPage([], total=total)

    key_cols = _sort_columns(sql, query)
    position, forward = query_position(
        query,
        engine=ENGINE,
        cursor_key=cursor_key,
        cursor_binding=cursor_binding,
        key_length=len(key_cols),
    )

    def fetch(condition: str, limit: int, *, candidates: bool = False) -> list[tuple]:
        """Up to `limit` rows (type, id, body, facts, *sort keys) matching `condition`, in
        the page's order, after the cursor's row; `candidates`: (type, id, rid, *sort keys)."""
        return conn.execute(
            _page_statement(sql, query, condition, key_cols, position, limit, candidates),
            sql.params,
        ).fetchall()

    if late_where is not None:
        fetched = _late_page(conn, sql, fetch, where, late_where, query.count + 1)
    elif _late_pays(driver_rows, query.count + 1):
        # Many rows to order for a short page: ordered without their bodies, as above.
        fetched = _late_page(conn, sql, fetch, where, None, query.count + 1)
    else:
        fetched = fetch(where, query.count + 1)
    more = len(fetched) > query.count
    fetched = fetched[: query.count]
    if not forward:
        fetched.reverse()

    def cursor_at(row: tuple, forward_: bool) -> str:
        pos = CursorPosition(tuple(row[4:]), row[0], row[1], forward_)
        return encode_cursor(
            pos, query=query, engine=ENGINE, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    next_cursor = previous_cursor = None
    if fetched:
        has_next = more if forward else True
        has_previous = position is not None if forward else more
        if has_next:
            next_cursor = cursor_at(fetched[-1], True)
        if has_previous:
            previous_cursor = cursor_at(fetched[0], False)
    rows = [SearchRow(t, i, bytes(b), f) for t, i, b, f, *_ in fetched]
    return SearchPage(rows, next_cursor, previous_cursor, total)


def _split_rare(query: SearchQuery) -> tuple[Node, Node | None]:
    """(`where` without its rare filters, the rare filters), or (`where`, None) when they
    are not checked late: a system-level search, or nothing rare among its conjuncts."""
    if query.resource_type is None or not query.rare_filters or not isinstance(query.where, And):
        return query.where, None
    # Membership by identity first (the gate passes the very nodes): no deep hashing.
    rare = query.rare_filters
    kept = tuple(part for part in query.where.parts if part not in rare)
    late = tuple(part for part in query.where.parts if part in rare)
    if not late or not kept:
        return query.where, None
    return (kept[0] if len(kept) == 1 else And(kept)), (late[0] if len(late) == 1 else And(late))


# Rare filters are checked late only when the driving clause finds more than this many rows
# per row wanted: below, probing every candidate costs less than the extra statements.
LATE_MIN_ROWS_PER_WANTED = 4


def _late_pays(driver_rows: int | None, wanted: int) -> bool:
    """Whether checking rare filters late is cheaper than probing them on every candidate.

    Without a driving clause the search walks the type in result order and stops at the
    page's end: its probes are already limited to the rows walked.
    """
    return driver_rows is not None and driver_rows > LATE_MIN_ROWS_PER_WANTED * wanted


def _late_margin(wanted: int) -> int:
    """Extra candidates read when rare filters are checked late, for those they exclude: with
    5 % of a record's documents masked, 4 extra on a 21-row page miss once in ~150 pages."""
    return max(4, wanted // 4)


def _late_page(
    conn: sqlite3.Connection,
    sql: _Sql,
    fetch: Callable[..., list[tuple]],
    where: str,
    late_where: str | None,
    wanted: int,
) -> list[tuple]:
    """The first `wanted` rows matching `where AND late_where`, the late clauses checked on
    the first candidates of `where` only (`late_where` None: no late clause, the rows are
    only ordered without their bodies).

    A correlated probe per candidate costs about a microsecond: a patient's 600 documents
    sorted for a 20-row page would pay 1200 probes for the two masking labels, most of them
    for rows beyond the page. Instead the first `wanted` + margin rows of `where` are read,
    without their bodies (a sort carrying 2 KB bodies costs about as much as the probes
    saved), then the bodies of those that pass the late clauses, in one statement. Exact: any
    row of the full condition that comes before the `wanted`-th kept candidate is itself a
    candidate (the candidates are a prefix of `where`'s order), so when enough candidates
    pass they are the answer; when fewer pass and `where` had more rows, the page is read
    again with every clause in the statement (a record whose documents are mostly masked).
    The statements read one snapshot, as the single statement of a search without late
    clauses does.
    """
    with _snapshot(conn):
        limit = wanted + _late_margin(wanted) if late_where else wanted
        candidates = fetch(where, limit, candidates=True)
        kept: list[tuple] = []
        if candidates:
            late = f" AND {late_where}" if late_where else ""
            bodies = {
                rid: (body, facts)
                for rid, body, facts in conn.execute(
                    f"SELECT r.rid, r.body, {sqlite_index.FACTS_COLUMN.format(r='r')}"
                    f" FROM resource r"
                    f" WHERE r.rid IN ({sql.plist(row[2] for row in candidates)}){late}",
                    sql.params,
                )
            }
            kept = [
                (type_, id_, *bodies[rid], *keys)
                for type_, id_, rid, *keys in candidates
                if rid in bodies
            ]
        if len(kept) >= wanted or len(candidates) < limit:
            return kept[:wanted]
        return fetch(f"{where} AND {late_where}", wanted)


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around several statements (unless one is open already)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _page_statement(
    sql: _Sql,
    query: SearchQuery,
    where: str,
    key_cols: list[_Col],
    position: CursorPosition | None,
    limit: int,
    candidates: bool,
) -> str:
    """The SELECT of a page: rows (type, id, body, facts, *sort keys) matching `where`, after the
    cursor's `position`, in the page's order, at most `limit`. `candidates`: (type, id, rid,
    *sort keys) instead, bodies left to be read for the rows kept (`_late_page`)."""
    source, prefix = "resource r", ""
    if any(c.nullable for c in key_cols):
        # `_sort` values are aggregates over index rows: computed once per matching resource
        # in a materialized list, instead of once per use (sort, keyset, result columns).
        computed = [f"{c.expr} AS k{i}" for i, c in enumerate(key_cols) if c.nullable]
        prefix = (
            f"WITH k AS MATERIALIZED (SELECT r.rid AS rid, {', '.join(computed)}"
            f" FROM resource r WHERE {where}) "
        )
        source, where = "k JOIN resource r ON r.rid = k.rid", "1"
        key_cols = [
            _Col(f"k.k{i}", c.descending, nullable=True) if c.nullable else c
            for i, c in enumerate(key_cols)
        ]
    tie = [_Col("r.id", False, nullable=False)]
    if query.resource_type is None:
        tie.append(_Col("r.type", False, nullable=False))
    cols = key_cols + tie
    if position is not None:
        if not position.forward:
            cols = [c.reversed() for c in cols]
        anchor = [*position.key, position.id] + (
            [position.resource_type] if query.resource_type is None else []
        )
        where += " AND " + _keyset(sql, cols, anchor)
    select_keys = "".join(f", {c.expr}" for c in key_cols)
    third = "r.rid" if candidates else f"r.body, {sqlite_index.FACTS_COLUMN.format(r='r')}"
    return (
        f"{prefix}SELECT r.type, r.id, {third}{select_keys} FROM {source} "
        f"WHERE {where} ORDER BY {', '.join(c.order_by() for c in cols)} "
        f"LIMIT {sql.p(limit)}"
    )


# --- _include / _revinclude -----------------------------------------------------------------


def resolve_includes(
    conn: sqlite3.Connection,
    page_rows: Sequence[SearchRow],
    includes: Sequence[Include],
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    """Resources named by `_include` / `_revinclude` for a page, each one filtered by
    `allowed(its type)` (the access layer's clause), without the page's own rows or repeats,
    in the rounds and within the caps of `store.includes.resolve_rounds`."""

    def one_round(current: Sequence[SearchRow], active: Sequence[Include]) -> list[SearchRow]:
        found: list[SearchRow] = []
        for inc in active:
            reach = _reverse if inc.reverse else _forward
            found += reach(conn, current, inc, allowed)
        return found

    return resolve_rounds(page_rows, includes, one_round)


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _fetch_allowed(
    conn: sqlite3.Connection,
    rtype: str,
    allowed: Callable[[str], Node],
    condition: Callable[[_Sql], str],
    *,
    by_rid: bool = False,
) -> list[SearchRow]:
    """The resources of `rtype` meeting `condition` (by id; by rid when `by_rid`) that the
    access clause `allowed(rtype)` lets through. The condition names the rows, so the access
    clause is a probe per row (correlated), and with `by_rid` the type test is kept off the
    (type, id) index so that the rids drive."""
    sql = _Sql()
    where = compile_where(sql, allowed(rtype), "t", rtype, correlated=True)
    type_test = f"{'+' if by_rid else ''}t.type = {sql.p(rtype)}"
    statement = (
        f"SELECT t.type, t.id, t.body, {sqlite_index.FACTS_COLUMN.format(r='t')}"
        f" FROM resource t WHERE {type_test} "
        f"AND t.deleted = 0 AND {condition(sql)} AND {where} ORDER BY t.id"
    )
    return [SearchRow(t, i, bytes(b), f) for t, i, b, f in conn.execute(statement, sql.params)]


def _forward(
    conn: sqlite3.Connection,
    rows: Sequence[SearchRow],
    inc: Include,
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    ids = [row.id for row in rows if row.resource_type == inc.source_type]
    targets: dict[str, set[str]] = {}
    for chunk in _chunks(ids):
        sql = _Sql()
        # `+x.type`: the page's rids drive (ix_reference_rid), not the (type, param) prefix
        # of ix_reference_target, which would read every reference of that parameter.
        conds = [
            f"+x.type = {sql.p(inc.source_type)}",
            f"x.param = {sql.p(inc.param)}",
            "x.target_type IS NOT NULL AND x.target_id IS NOT NULL",
            f"x.rid IN (SELECT rid FROM resource WHERE type = {sql.p(inc.source_type)} "
            f"AND id IN ({sql.plist(chunk)}))",
        ]
        if inc.target_type is not None:
            conds.append(f"x.target_type = {sql.p(inc.target_type)}")
        statement = f"SELECT DISTINCT x.target_type, x.target_id FROM ix_reference x WHERE {' AND '.join(conds)}"
        for target_type, target_id in conn.execute(statement, sql.params):
            targets.setdefault(target_type, set()).add(target_id)
    found: list[SearchRow] = []
    for target_type in sorted(targets):
        for chunk in _chunks(sorted(targets[target_type])):

            def condition(sql: _Sql, c: Sequence[str] = chunk) -> str:
                return f"t.id IN ({sql.plist(c)})"

            found += _fetch_allowed(conn, target_type, allowed, condition)
    return found


def _reverse(
    conn: sqlite3.Connection,
    rows: Sequence[SearchRow],
    inc: Include,
    allowed: Callable[[str], Node],
) -> list[SearchRow]:
    by_type: dict[str, list[str]] = {}
    for row in rows:
        if inc.target_type is None or row.resource_type == inc.target_type:
            by_type.setdefault(row.resource_type, []).append(row.id)
    found: list[SearchRow] = []
    for target_type, ids in sorted(by_type.items()):
        for chunk in _chunks(ids):

            def condition(sql: _Sql, c: Sequence[str] = chunk, tt: str = target_type) -> str:
                return (
                    f"t.rid IN (SELECT rid FROM ix_reference WHERE type = {sql.p(inc.source_type)} "
                    f"AND param = {sql.p(inc.param)} AND target_type = {sql.p(tt)} "
                    f"AND target_id IN ({sql.plist(c)}))"
                )

            found += _fetch_allowed(conn, inc.source_type, allowed, condition, by_rid=True)
    return found

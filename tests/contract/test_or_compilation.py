"""An Or answers as its alternatives do, however the SQLite compiler groups them.

`sqlite_search._or` reads `_GROUPED_FROM` or more alternatives of one index table in ONE
subquery whose WHERE is the OR of their conditions ("EXISTS and IN distribute over OR");
fewer keep a subquery each. That is only the same answer when every grouped alternative is a
per-row condition of that table. These properties generate Ors of 1 to 20 alternatives (one
parameter, several parameters of one table, several tables, nested Ors, Not(Or), And inside
Or, Or inside Chain and _has, a system-level search, the Or as a late "rare" filter, the
masking-label bits) over every leaf kind, modifier and prefix, and check that SQLite (grouping
everything, grouping from the real threshold, grouping nothing; driven by a clause or walking
the type) and MongoDB (mongomock) return the ids of the reference evaluator
(`fhir_server.search.evaluate.matches`), FHIR R4 search.html#combining (`,` is OR) and
search.html#modifiers (`:not`, `:missing`, `:text`, `:of-type`, `:above`, `:below`).

Two levels:
- the query AST over hand-made IndexEntries (like tests/unit/test_engine_search_contract.py),
  which reaches what no served parameter has (numbers, quantities, composites, URIs);
- HTTP parameters with comma lists of 1 to 20 values (tests/search_strategies.py's values,
  each modifier and prefix it knows) over random records, parsed by `parse_search`, indexed
  by the real extractor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.errors import FhirError
from fhir_server.search.evaluate import matches, run_query
from fhir_server.search.extract import extract
from fhir_server.search.index import (
    DateEntry,
    IndexEntries,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
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
from fhir_server.service import versions
from fhir_server.store import sqlite_search
from fhir_server.terminology import INVISIBLE_PATIENT, MASQUE_PS, SYSTEM_DMP_CONFIDENTIALITY
from tests import search_strategies
from tests.unit.search_engines import MongoEngine, SqliteEngine

EXAMPLES = int(os.environ.get("FHIR_OR_PROPERTY_EXAMPLES", "150"))
OR_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# SQLite's grouping threshold as it is, everything grouped (1) and nothing grouped.
GROUPINGS = (sqlite_search._GROUPED_FROM, 1, 2, 10**9)


@contextmanager
def sqlite_shape(grouped_from: int, driven: bool) -> Iterator[None]:
    """SQLite compiling with this grouping threshold, driven by a clause or walking the type
    (every clause then a correlated probe: the EXISTS shape instead of the IN shape)."""
    driver_limit = sqlite_search.DRIVER_LIMIT if driven else 0
    with (
        patch.object(sqlite_search, "_GROUPED_FROM", grouped_from),
        patch.object(sqlite_search, "DRIVER_LIMIT", driver_limit),
    ):
        yield


def engine_ids(engine, query: SearchQuery) -> list[str]:
    page = engine.search(query)
    assert page.next_cursor is None
    if query.resource_type is None:
        return sorted(f"{row.resource_type}/{row.id}" for row in page.rows)
    return sorted(row.id for row in page.rows)


# =============================================================================================
# The query AST over hand-made index entries
# =============================================================================================

TYPES = ("DocumentReference", "Patient")
IDS = {"DocumentReference": ("d1", "d2", "d3", "d4", "d5", "d6"), "Patient": ("p1", "p2", "p3")}
SYSTEMS = (None, "s1", "s2")
CODES = ("a", "b", "c")
DISPLAYS = ("alpha", "alphabet", "beta")
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NORMALIZED = ("dupont", "dupre", "zoe", "du pont")
URIS = ("http://a/b", "http://a/b/c", "http://x", "urn:oid:1.2")
REF_URLS = ("http://other/Patient/p1", "http://other/Patient/p2")
IDENT_SYSTEMS = ("rpps", "adeli")
IDENT_VALUES = ("81", "82")
LABELS = (MASQUE_PS, INVISIBLE_PATIENT)
LU_BASE = 1_000_000


@st.composite
def entries_of(draw: st.DrawFn, resource_type: str, own_id: str) -> IndexEntries:
    """Index entries of one resource: every table, several parameters of the same table."""
    tokens = [
        TokenEntry(
            draw(st.sampled_from(("tk", "tk2"))),
            draw(st.sampled_from(SYSTEMS)),
            draw(st.sampled_from((*CODES, None))),
            draw(st.sampled_from((None, *DISPLAYS))),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    tokens += [
        TokenEntry("tk:of-type", V2, f"{draw(st.sampled_from(('NH', 'MR')))}|{value}")
        for value in draw(st.lists(st.sampled_from(("1", "2")), max_size=2))
    ]
    tokens += [
        TokenEntry("comp", None, draw(st.sampled_from(("a$1", "a$2", "b$1"))))
        for _ in range(draw(st.integers(0, 1)))
    ]
    tokens += [
        TokenEntry(param, SYSTEM_DMP_CONFIDENTIALITY, code)
        for param, code in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(("security-label", "_security")), st.sampled_from(LABELS)
                ),
                max_size=2,
                unique=True,
            )
        )
    ]
    strings = []
    for _ in range(draw(st.integers(0, 2))):
        normalized = draw(st.sampled_from(NORMALIZED))
        exact = draw(st.sampled_from((normalized, normalized.title())))
        strings.append(StringEntry(draw(st.sampled_from(("st", "st2"))), normalized, exact))
    dates = []
    for _ in range(draw(st.integers(0, 2))):
        low = draw(st.integers(0, 10))
        dates.append(
            DateEntry(draw(st.sampled_from(("dt", "dt2"))), low, low + draw(st.integers(0, 3)))
        )
    # Numbers and quantities are points with whole values: the query ranges are [v-0.5, v+0.5),
    # so no stored value falls on a half-open bound (the evaluator reads a point, e.low).
    numbers = [
        NumberEntry("nb", Decimal(v), Decimal(v))
        for v in draw(st.lists(st.integers(0, 5), max_size=2))
    ]
    quantities = []
    for _ in range(draw(st.integers(0, 2))):
        v = Decimal(draw(st.integers(0, 5)))
        quantities.append(
            QuantityEntry(
                "qt",
                v,
                v,
                draw(st.sampled_from((None, "ucum"))),
                draw(st.sampled_from((None, "mg", "g"))),
                draw(st.sampled_from((None, "mg", "g"))),
            )
        )
    references = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(("local", "url", "identifier")))
        param = draw(st.sampled_from(("subject", "ref")))
        if kind == "local":
            target_type = draw(st.sampled_from(TYPES))
            target_id = draw(st.sampled_from(IDS[target_type]))
            references.append(ReferenceEntry(param, target_type, target_id))
        elif kind == "url":
            references.append(ReferenceEntry(param, None, None, draw(st.sampled_from(REF_URLS))))
        else:
            references.append(
                ReferenceEntry(
                    param,
                    None,
                    None,
                    identifier_system=draw(st.sampled_from(IDENT_SYSTEMS)),
                    identifier_value=draw(st.sampled_from(IDENT_VALUES)),
                )
            )
    uris = [UriEntry("ur", u) for u in draw(st.lists(st.sampled_from(URIS), max_size=2))]
    compartment = draw(st.lists(st.sampled_from(IDS["Patient"]), max_size=2, unique=True))
    return IndexEntries(
        tokens=tokens,
        strings=strings,
        dates=dates,
        references=references,
        uris=uris,
        numbers=numbers,
        quantities=quantities,
        compartment=compartment,
    )


@st.composite
def records(draw: st.DrawFn) -> dict[tuple[str, str], tuple[IndexEntries, int]]:
    """Some DocumentReferences and Patients: (type, id) -> (entries, last-updated)."""
    record = {}
    for resource_type in TYPES:
        for resource_id in IDS[resource_type][: draw(st.integers(0, len(IDS[resource_type])))]:
            entries = draw(entries_of(resource_type, resource_id))
            record[(resource_type, resource_id)] = (entries, LU_BASE + draw(st.integers(0, 4)))
    return record


# -- leaves: every kind, modifier and prefix --------------------------------------------------


@st.composite
def token_tests(draw: st.DrawFn) -> TokenTest:
    param = draw(st.sampled_from(("tk", "tk2")))
    form = draw(st.sampled_from(("code", "system|code", "|code", "system|", "text", "of-type")))
    code = draw(st.sampled_from(CODES))
    system = draw(st.sampled_from(("s1", "s2")))
    if form == "code":
        return TokenTest(param, code=code, any_system=True)
    if form == "system|code":
        return TokenTest(param, system, code)
    if form == "|code":
        return TokenTest(param, None, code)
    if form == "system|":
        return TokenTest(param, system, None)
    if form == "text":
        text = draw(st.sampled_from(("al", "alpha", "alphabet", "b", "z")))
        return TokenTest(param, match=TokenMatch.TEXT, text=text, value=text)
    return TokenTest(
        "tk",
        draw(st.sampled_from((V2, None, "other"))),
        draw(st.sampled_from(("NH", "MR"))),
        match=TokenMatch.OF_TYPE,
        value=draw(st.sampled_from(("1", "2"))),
    )


composite_tests = st.sampled_from(("a$1", "a$2", "b$1", "b$2")).map(
    lambda code: TokenTest("comp", code=code, any_system=True)
)
label_tests = st.builds(
    TokenTest,
    st.sampled_from(("security-label", "_security")),
    st.sampled_from((SYSTEM_DMP_CONFIDENTIALITY, "other")),
    st.sampled_from((*LABELS, "N")),
)
string_tests = st.builds(
    StringTest,
    st.sampled_from(("st", "st2")),
    st.sampled_from(("du", "dupont", "Dupont", "zoe", "pon", "du p", "x")),
    st.sampled_from(tuple(StringMatch)),
)
_PREFIXES = tuple(Prefix)


@st.composite
def date_tests(draw: st.DrawFn) -> DateTest:
    low = draw(st.integers(0, 12))
    return DateTest(
        draw(st.sampled_from(("dt", "dt2"))),
        draw(st.sampled_from(_PREFIXES)),
        low,
        low + draw(st.integers(0, 3)),
    )


@st.composite
def last_updated_tests(draw: st.DrawFn) -> DateTest:
    low = LU_BASE + draw(st.integers(-1, 5))
    return DateTest(
        "_lastUpdated", draw(st.sampled_from(_PREFIXES)), low, low + draw(st.integers(0, 2))
    )


def _number_range(prefix: Prefix, value: int) -> tuple[Decimal, Decimal]:
    """As the parser makes it: the precision range for eq/ne/sa/eb/ap, the value otherwise."""
    if prefix in (Prefix.GT, Prefix.LT, Prefix.GE, Prefix.LE):
        return Decimal(value), Decimal(value)
    return Decimal(value) - Decimal("0.5"), Decimal(value) + Decimal("0.5")


@st.composite
def number_tests(draw: st.DrawFn) -> NumberTest:
    prefix = draw(st.sampled_from(_PREFIXES))
    return NumberTest("nb", prefix, *_number_range(prefix, draw(st.integers(0, 5))))


@st.composite
def quantity_tests(draw: st.DrawFn) -> QuantityTest:
    prefix = draw(st.sampled_from(_PREFIXES))
    return QuantityTest(
        "qt",
        prefix,
        *_number_range(prefix, draw(st.integers(0, 5))),
        system=draw(st.sampled_from((None, "ucum"))),
        code=draw(st.sampled_from((None, "mg", "g"))),
    )


@st.composite
def reference_tests(draw: st.DrawFn) -> ReferenceTest:
    param = draw(st.sampled_from(("subject", "ref")))
    kind = draw(st.sampled_from(("typed", "id", "url", "identifier")))
    if kind in ("typed", "id"):
        target_type = draw(st.sampled_from(TYPES))
        target_id = draw(st.sampled_from(IDS[target_type]))
        return ReferenceTest(param, target_type if kind == "typed" else None, target_id)
    if kind == "url":
        return ReferenceTest(param, url=draw(st.sampled_from(REF_URLS)))
    return ReferenceTest(
        param,
        identifier_system=draw(st.sampled_from((None, *IDENT_SYSTEMS))),
        identifier_value=draw(st.sampled_from(IDENT_VALUES)),
    )


uri_tests = st.builds(
    UriTest,
    st.just("ur"),
    st.sampled_from((*URIS, "http://a", "http://a/b/c/d", "urn:oid:1.2.3")),
    st.sampled_from(tuple(UriMatch)),
)
id_tests = st.lists(
    st.sampled_from((*IDS["DocumentReference"], *IDS["Patient"])), min_size=1, max_size=3
).map(lambda ids: IdTest(tuple(ids)))
missing_tests = st.builds(
    Missing,
    st.sampled_from(("tk", "st", "dt", "nb", "qt", "subject", "ur", "comp", "security-label")),
    st.booleans(),
)
compartment_tests = st.sampled_from(IDS["Patient"]).map(InCompartment)

# Leaves of one index table each: an Or of many of them is what SQLite groups.
ONE_TABLE = {
    "ix_token": st.one_of(token_tests(), composite_tests, label_tests),
    "ix_string": string_tests,
    "ix_date": date_tests(),
    "ix_number": number_tests(),
    "ix_quantity": quantity_tests(),
    "ix_reference": reference_tests(),
    "ix_uri": uri_tests,
    "ix_compartment": compartment_tests,
}
leaves = st.one_of(*ONE_TABLE.values(), last_updated_tests(), id_tests, missing_tests)


def or_of(children: st.SearchStrategy[Node], max_size: int = 20) -> st.SearchStrategy[Node]:
    return st.lists(children, min_size=1, max_size=max_size).map(lambda parts: Or(tuple(parts)))


# An Or of 1..20 alternatives of one table (one parameter or several), below and above the
# threshold; the same with other tables' alternatives and non-leaf alternatives mixed in.
one_table_ors = st.sampled_from(sorted(ONE_TABLE)).flatmap(lambda table: or_of(ONE_TABLE[table]))
negated_leaves = leaves.map(Not)


@st.composite
def mixed_ors(draw: st.DrawFn) -> Node:
    table = draw(st.sampled_from(sorted(ONE_TABLE)))
    many = draw(st.lists(ONE_TABLE[table], min_size=0, max_size=20))
    others = draw(st.lists(st.one_of(leaves, negated_leaves), max_size=6))
    parts = many + others
    if not parts:
        parts = [draw(leaves)]
    return Or(tuple(draw(st.permutations(parts))))


def _wrap(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    """One more level: Or / And / Not around them, Or inside a chain and a _has."""
    return st.one_of(
        or_of(children, 12),
        st.lists(children, min_size=2, max_size=3).map(lambda parts: And(tuple(parts))),
        children.map(Not),
        children.map(lambda where: Chain("subject", "Patient", where)),
        children.map(lambda where: Chain("ref", "DocumentReference", where)),
        children.map(lambda where: Has("DocumentReference", "subject", where)),
        children.map(lambda where: Has("Patient", "ref", where)),
    )


# Two levels at most: a search chains at most MAX_CHAIN (3) references (chains and _has).
_base = st.one_of(one_table_ors, mixed_ors(), leaves)
clauses = st.one_of(_base, _wrap(_base), _wrap(_wrap(_base)))


class RecordLookup:
    """The evaluator's Lookup over a hand-made record (for Chain and _has)."""

    def __init__(self, record: Mapping[tuple[str, str], tuple[IndexEntries, int]]) -> None:
        self.record = record

    def get(self, resource_type: str, resource_id: str) -> tuple[dict, IndexEntries] | None:
        held = self.record.get((resource_type, resource_id))
        if held is None:
            return None
        return {"resourceType": resource_type, "id": resource_id}, held[0]

    def of_type(self, resource_type: str) -> Iterable[tuple[str, dict, IndexEntries]]:
        for (kind, resource_id), (entries, _) in self.record.items():
            if kind == resource_type:
                yield resource_id, {"resourceType": kind, "id": resource_id}, entries


def reference_ids(
    record: Mapping[tuple[str, str], tuple[IndexEntries, int]], query: SearchQuery
) -> list[str]:
    lookup = RecordLookup(record)
    found = []
    for (resource_type, resource_id), (entries, _) in record.items():
        if query.resource_type not in (None, resource_type):
            continue
        resource = {"resourceType": resource_type, "id": resource_id}
        if matches(query.where, resource_type, resource, entries, lookup):
            found.append(resource_id if query.resource_type else f"{resource_type}/{resource_id}")
    return sorted(found)


def with_last_updated(entries: IndexEntries, lu: int) -> IndexEntries:
    """The entries with `_lastUpdated` among the dates, as the extractor indexes it."""
    return IndexEntries(
        tokens=entries.tokens,
        strings=entries.strings,
        dates=[*entries.dates, DateEntry("_lastUpdated", lu, lu)],
        references=entries.references,
        uris=entries.uris,
        numbers=entries.numbers,
        quantities=entries.quantities,
        compartment=entries.compartment,
    )


@st.composite
def ast_searches(draw: st.DrawFn) -> SearchQuery:
    """A search whose clause is an Or (or holds one), type-level or system-level, with the Or
    sometimes one of the late "rare" filters next to another clause."""
    resource_type = draw(st.sampled_from((*TYPES, None)))
    where = draw(clauses)
    if resource_type is None:
        # A system-level search takes no chain nor _has (the parser refuses them).
        where = draw(st.one_of(one_table_ors, mixed_ors()))
        return SearchQuery(None, where, count=1000)
    rare: tuple[Node, ...] = ()
    if draw(st.booleans()):
        late = draw(st.one_of(one_table_ors, mixed_ors(), label_tests.map(lambda t: Or((t, t)))))
        first = draw(st.one_of(leaves, one_table_ors))
        where = And((first, late))
        rare = (late,)
    return SearchQuery(resource_type, where, count=1000, rare_filters=rare)


@OR_SETTINGS
@given(
    record=records(),
    queries=st.lists(ast_searches(), min_size=1, max_size=4),
    grouped_from=st.sampled_from(GROUPINGS),
    driven=st.booleans(),
)
def test_an_or_of_any_alternatives_matches_what_the_reference_evaluator_matches(
    record, queries, grouped_from, driven
):
    """search.html#combining: `a=x,y` matches what x matches or y matches. Whatever SQLite
    reads in one subquery (every alternative of a table, from 2, from 8, none) and however
    it shapes the statement (IN or correlated EXISTS), and on MongoDB, the ids are the
    reference evaluator's, for Ors of 1 to 20 alternatives of every leaf kind, mixed and
    nested (Not(Or), Or in a chain and a _has, Or as a late filter)."""
    sqlite, mongo = SqliteEngine(), MongoEngine()
    try:
        for (resource_type, resource_id), (entries, lu) in sorted(record.items()):
            indexed = with_last_updated(entries, lu)
            sqlite.put(resource_type, resource_id, indexed, lu)
            mongo.put(resource_type, resource_id, indexed, lu)
        indexed_record = {
            key: (with_last_updated(entries, lu), lu) for key, (entries, lu) in record.items()
        }
        for query in queries:
            expected = reference_ids(indexed_record, query)
            with sqlite_shape(grouped_from, driven):
                assert engine_ids(sqlite, query) == expected, (
                    f"sqlite (grouped from {grouped_from}, driven {driven}) on {query}"
                )
            assert engine_ids(mongo, query) == expected, f"mongo on {query}"
    finally:
        sqlite.close()
        mongo.close()


# =============================================================================================
# HTTP parameters with comma lists, over records the real extractor indexes
# =============================================================================================

# The strategies' values, and versioned references (`Patient/p1/_history/1` names p1).
_VERSIONED = {
    ("DocumentReference", "patient"): ("Patient/p1/_history/1", "Patient/p2/_history/7"),
    ("DocumentReference", "relatesto"): ("DocumentReference/d1/_history/2",),
    ("Patient", "link"): ("Patient/p3/_history/1",),
    ("List", "item"): ("DocumentReference/d2/_history/1",),
}
_CRITERIA = {
    resource_type: {
        name: values | st.sampled_from(_VERSIONED[resource_type, name])
        if (resource_type, name) in _VERSIONED
        else values
        for name, values in criteria.items()
    }
    for resource_type, criteria in search_strategies._CRITERIA.items()
}


@st.composite
def comma_lists(draw: st.DrawFn, resource_type: str) -> list[tuple[str, str]]:
    """One to three parameters, each a list of 1 to 20 values drawn from the strategies'
    values of that parameter (`:missing` takes a single value)."""
    criteria = _CRITERIA[resource_type]
    params = []
    for name in draw(st.lists(st.sampled_from(sorted(criteria)), min_size=1, max_size=3)):
        if name.endswith(":missing") or name == "_id":
            params.append((name, draw(criteria[name])))
            continue
        values = draw(st.lists(criteria[name], min_size=1, max_size=20))
        params.append((name, ",".join(values)))
    return params


@st.composite
def http_searches(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    resource_type = draw(st.sampled_from(search_strategies.SEARCH_TYPES))
    return resource_type, draw(comma_lists(resource_type))


def _lu(resource: dict) -> int:
    claimed = (resource.get("meta") or {}).get("lastUpdated") or "2024-01-01T00:00:00Z"
    return versions.parse_instant(claimed)


@OR_SETTINGS
@given(
    corpus=search_strategies.corpora(),
    queries=st.lists(http_searches(), min_size=1, max_size=4),
    grouped_from=st.sampled_from(GROUPINGS),
    driven=st.booleans(),
)
def test_comma_separated_values_match_what_the_reference_evaluator_matches(
    registry, corpus, queries, grouped_from, driven
):
    """search.html#combining over the served parameters: each parameter a list of 1 to 20
    values (tokens in every form, `:not`, `:text`, `:of-type`, dates with every prefix,
    strings with `:exact` and `:contains`, references (versioned too), chains, `_has`, `_lastUpdated`),
    SQLite grouped or not and MongoDB return the reference evaluator's ids."""
    sqlite, mongo = SqliteEngine(), MongoEngine()
    try:
        for key in sorted(corpus):
            entries = extract(corpus[key], registry)
            sqlite.put(*key, entries, _lu(corpus[key]))
            mongo.put(*key, entries, _lu(corpus[key]))
        for resource_type, params in queries:
            try:
                parsed = parse_search(resource_type, params, registry).query
            except FhirError:
                continue
            query = SearchQuery(resource_type, parsed.where, count=1000)
            expected = sorted(run_query(query, corpus, registry))
            with sqlite_shape(grouped_from, driven):
                assert engine_ids(sqlite, query) == expected, (
                    f"sqlite (grouped from {grouped_from}, driven {driven}) on"
                    f" {resource_type}?{params}"
                )
            assert engine_ids(mongo, query) == expected, f"mongo on {resource_type}?{params}"
    finally:
        sqlite.close()
        mongo.close()


# =============================================================================================
# Both sides of the threshold, by hand
# =============================================================================================


def _documents(engine) -> None:
    """d1..d9: document dN has type code cN; d9 none; d5 also a MASQUE_PS label."""
    for n in range(1, 10):
        tokens = [TokenEntry("type", "s", f"c{n}")] if n < 9 else []
        if n == 5:
            tokens.append(TokenEntry("security-label", SYSTEM_DMP_CONFIDENTIALITY, MASQUE_PS))
        engine.put(
            "DocumentReference",
            f"d{n}",
            IndexEntries(tokens=tokens, dates=[DateEntry("date", n, n)]),
        )


@pytest.mark.parametrize("engine_kind", ["sqlite", "mongo"])
@pytest.mark.parametrize("size", [1, 7, 8, 9, 20])
def test_type_not_of_n_codes_leaves_out_exactly_those_documents(engine_kind, size):
    """`type:not=c1,...,cN` (search.html#modifiers: neither value), on both sides of the
    threshold where SQLite reads the N alternatives in one subquery: the documents without
    one of those codes, including the one without a type."""
    engine = SqliteEngine() if engine_kind == "sqlite" else MongoEngine()
    try:
        _documents(engine)
        codes = Or(tuple(TokenTest("type", "s", f"c{n}") for n in range(1, size + 1)))
        mixed = Or((*codes.parts, DateTest("date", Prefix.EQ, 9, 9), Not(IdTest(("d2",)))))
        for driven in (True, False):
            with sqlite_shape(sqlite_search._GROUPED_FROM, driven):
                where = Not(codes)
                found = engine_ids(engine, SearchQuery("DocumentReference", where, count=100))
                assert found == sorted(f"d{n}" for n in range(min(size, 8) + 1, 10))
                found = engine_ids(engine, SearchQuery("DocumentReference", mixed, count=100))
                assert found == sorted(f"d{n}" for n in range(1, 10) if n != 2 or size >= 2)
                with_label = And((DateTest("date", Prefix.GE, 1, 1), Not(codes)))
                query = SearchQuery(
                    "DocumentReference", with_label, count=100, rare_filters=(Not(codes),)
                )
                assert engine_ids(engine, query) == sorted(
                    f"d{n}" for n in range(min(size, 8) + 1, 10)
                )
    finally:
        engine.close()


# Searches as deep as the parser takes (MAX_CHAIN hops, MAX_VALUES values, repeated): a grouped
# Or nests its alternatives two parentheses deeper, where SQLite's parser stack is short (an
# unguarded five-hop chain of one value overflows it).
DEEPEST = [
    (
        "DocumentReference",
        "subject:Patient._has:DocumentReference:subject:relatesto:DocumentReference.date",
        "ne2023-0{}",
    ),
    (
        "DocumentReference",
        "_has:List:item:subject:Patient._has:DocumentReference:subject:type:not",
        "s|x{}",
    ),
    ("Patient", "_has:DocumentReference:subject:subject:Patient._has:List:subject:code:not", "c{}"),
    ("List", "item:DocumentReference.subject:Patient._has:Communication:subject:status:not", "s{}"),
    ("Patient", "link:Patient.link:Patient.birthdate", "le198{}"),
]


@pytest.mark.parametrize(("resource_type", "key", "value"), DEEPEST)
def test_the_deepest_search_the_parser_takes_compiles_with_its_ors_grouped(
    registry, resource_type, key, value
):
    """A chain of MAX_CHAIN hops ending in 100 values, three times: answered (no parser
    stack overflow, which would be a 500) whether SQLite groups the values or not."""
    values = ",".join(value.format(n % 9 + 1) for n in range(100))
    parsed = parse_search(resource_type, [(key, values)] * 3, registry).query
    query = SearchQuery(resource_type, parsed.where, count=10)
    engine = SqliteEngine()
    try:
        engine.put("Patient", "p1", IndexEntries(dates=[DateEntry("birthdate", 1, 2)]))
        for grouped_from in (sqlite_search._GROUPED_FROM, 10**9):
            for driven in (True, False):
                with sqlite_shape(grouped_from, driven):
                    assert engine_ids(engine, query) == []
    finally:
        engine.close()

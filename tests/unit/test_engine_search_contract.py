"""One search contract, both engines (SQLite and MongoDB via mongomock): same cases, same answers.

Each test builds a small corpus with hand-made IndexEntries and asserts what a FHIR client
would see (FHIR R4 search.html section named in each test).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.errors import FhirError
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
    Not,
    NumberTest,
    Or,
    Prefix,
    QuantityTest,
    ReferenceTest,
    SearchQuery,
    SortKey,
    StringMatch,
    StringTest,
    SummaryMode,
    TokenMatch,
    TokenTest,
    TotalMode,
    UriMatch,
    UriTest,
)
from tests.unit.search_engines import ENGINES, ids, typed_ids

DAY = 86_400_000_000


ENGINE_PARAMS = [
    pytest.param(name, marks=pytest.mark.mongodb) if name == "mongodb" else name
    for name in sorted(ENGINES)
]


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request):
    created = ENGINES[request.param]()
    yield created
    created.close()


@pytest.fixture(params=ENGINE_PARAMS)
def engine_name_factory(request):
    """A maker of fresh engines of one kind (hypothesis needs one per example)."""
    created = []

    def make():
        created.append(ENGINES[request.param]())
        return created[-1]

    yield make
    for made in created:
        made.close()


def q(where=None, rtype="Observation", **kw) -> SearchQuery:
    return SearchQuery(rtype, where if where is not None else Everything(), **kw)


def found(engine, where, rtype="Observation", **kw) -> list[str]:
    return sorted(ids(engine.search(q(where, rtype, count=1000, **kw))))


# --- token (search.html#token) ----------------------------------------------------------


def test_token_system_and_code_match_within_the_same_coding(engine):
    engine.put(
        "Observation",
        "o1",
        IndexEntries(
            tokens=[
                TokenEntry("code", "http://loinc.org", "1"),
                TokenEntry("code", "http://snomed.info/sct", "2"),
            ]
        ),
    )
    engine.put(
        "Observation", "o2", IndexEntries(tokens=[TokenEntry("code", "http://loinc.org", "2")])
    )
    assert found(engine, TokenTest("code", "http://loinc.org", "2")) == ["o2"]
    assert found(engine, TokenTest("code", "http://loinc.org", "1")) == ["o1"]


def test_token_code_only_any_system_pipe_code_no_system_and_system_pipe(engine):
    engine.put("Observation", "a", IndexEntries(tokens=[TokenEntry("code", "S", "x")]))
    engine.put("Observation", "b", IndexEntries(tokens=[TokenEntry("code", None, "x")]))
    engine.put("Observation", "c", IndexEntries(tokens=[TokenEntry("code", "S", "y")]))
    assert found(engine, TokenTest("code", code="x", any_system=True)) == ["a", "b"]
    assert found(engine, TokenTest("code", None, "x")) == ["b"]
    assert found(engine, TokenTest("code", "S", None)) == ["a", "c"]


def test_token_text_is_a_normalized_prefix_of_the_display(engine):
    engine.put(
        "Observation", "a", IndexEntries(tokens=[TokenEntry("code", "S", "x", "glycemie a jeun")])
    )
    engine.put(
        "Observation", "b", IndexEntries(tokens=[TokenEntry("code", "S", "y", "hemoglobine")])
    )
    assert found(engine, TokenTest("code", match=TokenMatch.TEXT, text="glyc")) == ["a"]
    assert found(engine, TokenTest("code", match=TokenMatch.TEXT, text="jeun")) == []


def test_token_of_type_matches_identifier_type_and_value_together(engine):
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    engine.put(
        "Patient",
        "p1",
        IndexEntries(
            tokens=[
                TokenEntry("identifier", "urn:oid:1.2.250.1.213.1.4.8", "123"),
                TokenEntry("identifier:of-type", v2, "NH|123"),
            ]
        ),
    )
    engine.put(
        "Patient", "p2", IndexEntries(tokens=[TokenEntry("identifier:of-type", v2, "MR|123")])
    )
    test = TokenTest("identifier", v2, "NH", match=TokenMatch.OF_TYPE, value="123")
    assert found(engine, test, "Patient") == ["p1"]


# --- string (search.html#string) --------------------------------------------------------


def test_string_default_is_normalized_prefix_exact_is_case_sensitive_contains_anywhere(engine):
    engine.put("Patient", "p1", IndexEntries(strings=[StringEntry("family", "durand", "Durand")]))
    engine.put("Patient", "p2", IndexEntries(strings=[StringEntry("family", "dupont", "Dupont")]))
    engine.put(
        "Patient", "p3", IndexEntries(strings=[StringEntry("family", "le durandal", "Le Durandal")])
    )
    assert found(engine, StringTest("family", "du"), "Patient") == ["p1", "p2"]
    assert found(engine, StringTest("family", "durand"), "Patient") == ["p1"]
    assert found(engine, StringTest("family", "Durand", StringMatch.EXACT), "Patient") == ["p1"]
    assert found(engine, StringTest("family", "durand", StringMatch.EXACT), "Patient") == []
    assert found(engine, StringTest("family", "uran", StringMatch.CONTAINS), "Patient") == [
        "p1",
        "p3",
    ]
    assert found(engine, StringTest("family", "a.d", StringMatch.CONTAINS), "Patient") == []


def test_string_prefix_with_non_ascii_and_last_code_point(engine):
    engine.put("Patient", "p1", IndexEntries(strings=[StringEntry("name", "zoé", "Zoé")]))
    engine.put("Patient", "p2", IndexEntries(strings=[StringEntry("name", "zof", "Zof")]))
    assert found(engine, StringTest("name", "zoé"), "Patient") == ["p1"]
    assert found(engine, StringTest("name", "zo"), "Patient") == ["p1", "p2"]


# --- date / number / quantity prefixes (search.html#prefix) -----------------------------

# Stored ranges: day 10 (a whole day), days 10..12 (a period), an instant on day 11.
DATES = {
    "d10": (10 * DAY, 11 * DAY - 1),
    "p10_12": (10 * DAY, 13 * DAY - 1),
    "i11": (11 * DAY + 5, 11 * DAY + 5),
    "d20": (20 * DAY, 21 * DAY - 1),
}


def _date_corpus(engine):
    for rid, (low, high) in DATES.items():
        engine.put("Observation", rid, IndexEntries(dates=[DateEntry("date", low, high)]))
    engine.put("Observation", "none")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (Prefix.EQ, ["d10"]),  # search range (day 10) contains the target range
        (Prefix.NE, ["d20", "i11", "p10_12"]),
        (Prefix.GT, ["d20", "i11", "p10_12"]),  # target ends after day 10
        (Prefix.LT, []),  # nothing starts before day 10
        (Prefix.GE, ["d10", "d20", "i11", "p10_12"]),
        (Prefix.LE, ["d10"]),
        (Prefix.SA, ["d20", "i11"]),  # starts after day 10 ends
        (Prefix.EB, []),
    ],
)
def test_date_prefixes_compare_precision_ranges(engine, prefix, expected):
    _date_corpus(engine)
    assert found(engine, DateTest("date", prefix, 10 * DAY, 11 * DAY - 1)) == expected


def test_date_eb_and_lt_against_a_later_day(engine):
    _date_corpus(engine)
    assert found(engine, DateTest("date", Prefix.EB, 12 * DAY, 13 * DAY - 1)) == ["d10", "i11"]
    assert found(engine, DateTest("date", Prefix.LT, 12 * DAY, 13 * DAY - 1)) == [
        "d10",
        "i11",
        "p10_12",
    ]


def test_date_ap_matches_what_overlaps_the_range_it_is_given(engine):
    # search.html#prefix `ap`: the parser widens the value's range (10% of its distance to
    # now, `search.parameters`); the engine matches what overlaps that range, and widens it
    # no further (it did: twice the tolerance).
    target = 1_000 * DAY
    engine.put(
        "Observation", "old", IndexEntries(dates=[DateEntry("date", target, target + DAY - 1)])
    )
    assert found(engine, DateTest("date", Prefix.AP, target + DAY - 1, target + 9 * DAY)) == ["old"]
    assert found(engine, DateTest("date", Prefix.AP, target - 9 * DAY, target)) == ["old"]
    assert found(engine, DateTest("date", Prefix.AP, target + DAY, target + 9 * DAY)) == []
    assert found(engine, DateTest("date", Prefix.AP, target - 9 * DAY, target - 1)) == []


def test_last_updated_compares_the_resource_last_updated_instant(engine):
    engine.put("Observation", "early", lu=5 * DAY)
    engine.put("Observation", "late", lu=9 * DAY)
    assert found(engine, DateTest("_lastUpdated", Prefix.GE, 6 * DAY, 7 * DAY - 1)) == ["late"]
    assert found(engine, DateTest("_lastUpdated", Prefix.EQ, 5 * DAY, 6 * DAY - 1)) == ["early"]


def _interval(lo, hi):
    return lo, max(lo, hi)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stored=st.lists(st.tuples(st.integers(-20, 20), st.integers(0, 6)), min_size=1, max_size=8),
    query=st.tuples(st.integers(-20, 20), st.integers(0, 6)),
    prefix=st.sampled_from([p for p in Prefix if p is not Prefix.AP]),
)
def test_number_prefixes_agree_with_the_range_definitions(
    engine_name_factory, stored, query, prefix
):
    """search.html#prefix, with negative numbers and decimals (order-preserving encoding)."""
    engine = engine_name_factory()
    for i, (lo, width) in enumerate(stored):
        low, high = Decimal(lo) / 4, Decimal(lo + width) / 4
        engine.put(
            "RiskAssessment", f"r{i}", IndexEntries(numbers=[NumberEntry("probability", low, high)])
        )
    ql, qh = Decimal(query[0]) / 4, Decimal(query[0] + query[1]) / 4
    rule = {
        Prefix.EQ: lambda tl, th: ql <= tl and th <= qh,
        Prefix.NE: lambda tl, th: not (ql <= tl and th <= qh),
        Prefix.GT: lambda tl, th: th > qh,
        Prefix.LT: lambda tl, th: tl < ql,
        Prefix.GE: lambda tl, th: th > qh or (ql <= tl and th <= qh),
        Prefix.LE: lambda tl, th: tl < ql or (ql <= tl and th <= qh),
        Prefix.SA: lambda tl, th: tl > qh,
        Prefix.EB: lambda tl, th: th < ql,
    }[prefix]
    expected = sorted(
        f"r{i}"
        for i, (lo, width) in enumerate(stored)
        if rule(Decimal(lo) / 4, Decimal(lo + width) / 4)
    )
    assert found(engine, NumberTest("probability", prefix, ql, qh), "RiskAssessment") == expected


def test_number_ap_matches_what_overlaps_the_range_it_is_given(engine):
    # `ap105` is [94.5, 115.5] once parsed (10% of the value, `search.parameters`): r100 is
    # approximately 105, r120 is not (the engine widened the range again: 84-126).
    engine.put(
        "RiskAssessment",
        "r100",
        IndexEntries(numbers=[NumberEntry("probability", Decimal(100), Decimal(100))]),
    )
    engine.put(
        "RiskAssessment",
        "r120",
        IndexEntries(numbers=[NumberEntry("probability", Decimal(120), Decimal(120))]),
    )
    assert found(
        engine,
        NumberTest("probability", Prefix.AP, Decimal("94.5"), Decimal("115.5")),
        "RiskAssessment",
    ) == ["r100"]


def test_quantity_code_matches_code_or_unit_and_system_code_matches_both(engine):
    ucum = "http://unitsofmeasure.org"
    engine.put(
        "Observation",
        "mg",
        IndexEntries(
            quantities=[
                QuantityEntry("value-quantity", Decimal("5.4"), Decimal("5.4"), ucum, "mg", "mg")
            ]
        ),
    )
    engine.put(
        "Observation",
        "unitonly",
        IndexEntries(
            quantities=[
                QuantityEntry("value-quantity", Decimal("5.4"), Decimal("5.4"), None, None, "mg")
            ]
        ),
    )
    engine.put(
        "Observation",
        "g",
        IndexEntries(
            quantities=[
                QuantityEntry("value-quantity", Decimal("5.4"), Decimal("5.4"), ucum, "g", "g")
            ]
        ),
    )
    engine.put(
        "Observation",
        "neg",
        IndexEntries(
            quantities=[
                QuantityEntry("value-quantity", Decimal("-3"), Decimal("-3"), ucum, "mg", "mg")
            ]
        ),
    )
    five = (Decimal("5.35"), Decimal("5.45"))
    assert found(engine, QuantityTest("value-quantity", Prefix.EQ, *five, ucum, "mg")) == ["mg"]
    assert found(engine, QuantityTest("value-quantity", Prefix.EQ, *five, None, "mg")) == [
        "mg",
        "unitonly",
    ]
    assert found(engine, QuantityTest("value-quantity", Prefix.EQ, *five)) == [
        "g",
        "mg",
        "unitonly",
    ]
    assert found(engine, QuantityTest("value-quantity", Prefix.LT, Decimal(0), Decimal(0))) == [
        "neg"
    ]


# --- reference, uri, id, missing, not, and/or ---------------------------------------------


def test_reference_by_type_and_id_by_id_by_url_and_by_identifier(engine):
    engine.put(
        "Observation", "o1", IndexEntries(references=[ReferenceEntry("subject", "Patient", "p1")])
    )
    engine.put(
        "Observation", "o2", IndexEntries(references=[ReferenceEntry("subject", "Group", "p1")])
    )
    engine.put(
        "Observation",
        "o3",
        IndexEntries(
            references=[
                ReferenceEntry("subject", None, None, "https://other.example/fhir/Patient/9")
            ]
        ),
    )
    engine.put(
        "Observation",
        "o4",
        IndexEntries(
            references=[
                ReferenceEntry(
                    "subject",
                    None,
                    None,
                    identifier_system="urn:oid:1.2.250.1.213.1.4.8",
                    identifier_value="1234",
                )
            ]
        ),
    )
    assert found(engine, ReferenceTest("subject", "Patient", "p1")) == ["o1"]
    assert found(engine, ReferenceTest("subject", None, "p1")) == ["o1", "o2"]
    assert found(engine, ReferenceTest("subject", url="https://other.example/fhir/Patient/9")) == [
        "o3"
    ]
    assert found(
        engine,
        ReferenceTest(
            "subject", identifier_system="urn:oid:1.2.250.1.213.1.4.8", identifier_value="1234"
        ),
    ) == ["o4"]
    assert found(engine, ReferenceTest("subject", identifier_value="1234")) == ["o4"]


def test_uri_equal_below_and_above(engine):
    engine.put("ValueSet", "root", IndexEntries(uris=[UriEntry("url", "http://acme.org/fhir/")]))
    engine.put(
        "ValueSet", "vs", IndexEntries(uris=[UriEntry("url", "http://acme.org/fhir/ValueSet/123")])
    )
    engine.put("ValueSet", "other", IndexEntries(uris=[UriEntry("url", "http://other.org/")]))
    assert found(engine, UriTest("url", "http://acme.org/fhir/"), "ValueSet") == ["root"]
    assert found(engine, UriTest("url", "http://acme.org/fhir/", UriMatch.BELOW), "ValueSet") == [
        "root",
        "vs",
    ]
    above = UriTest("url", "http://acme.org/fhir/ValueSet/123/_history/5", UriMatch.ABOVE)
    assert found(engine, above, "ValueSet") == ["root", "vs"]


def test_id_missing_not_and_or(engine):
    engine.put("Observation", "a", IndexEntries(tokens=[TokenEntry("status", None, "final")]))
    engine.put("Observation", "b", IndexEntries(tokens=[TokenEntry("status", None, "amended")]))
    engine.put("Observation", "c")
    final = TokenTest("status", code="final", any_system=True)
    assert found(engine, IdTest(("a", "c", "zz"))) == ["a", "c"]
    assert found(engine, IdTest(())) == []
    assert found(engine, Missing("status", True)) == ["c"]
    assert found(engine, Missing("status", False)) == ["a", "b"]
    # :not matches resources without any value too (search.html#token, :not)
    assert found(engine, Not(final)) == ["b", "c"]
    assert found(engine, Or((final, IdTest(("c",))))) == ["a", "c"]
    assert found(engine, And((final, IdTest(("b",))))) == []
    assert found(engine, Or(())) == []
    assert found(engine, Not(Everything())) == []


def test_deleted_resources_are_never_found(engine):
    engine.put("Observation", "a", IndexEntries(tokens=[TokenEntry("status", None, "final")]))
    engine.put("Observation", "b", IndexEntries(tokens=[TokenEntry("status", None, "final")]))
    engine.delete("Observation", "a")
    assert found(engine, TokenTest("status", code="final", any_system=True)) == ["b"]
    assert found(engine, Everything()) == ["b"]
    assert found(engine, Not(IdTest(("b",)))) == []


def test_update_replaces_previous_index_entries(engine):
    engine.put("Observation", "a", IndexEntries(tokens=[TokenEntry("status", None, "preliminary")]))
    engine.put("Observation", "a", IndexEntries(tokens=[TokenEntry("status", None, "final")]))
    assert found(engine, TokenTest("status", code="preliminary", any_system=True)) == []
    assert found(engine, TokenTest("status", code="final", any_system=True)) == ["a"]


# --- chain, _has, compartment (search.html#chaining, #has) -----------------------------


def _clinic(engine):
    engine.put(
        "Organization",
        "org1",
        IndexEntries(strings=[StringEntry("name", "ch exemple", "CH Exemple")]),
    )
    engine.put(
        "Patient",
        "p1",
        IndexEntries(
            strings=[StringEntry("family", "durand", "Durand")],
            references=[ReferenceEntry("organization", "Organization", "org1")],
            compartment=["p1"],
        ),
    )
    engine.put(
        "Patient",
        "p2",
        IndexEntries(strings=[StringEntry("family", "martin", "Martin")], compartment=["p2"]),
    )
    for oid, pid, code in (("o1", "p1", "1"), ("o2", "p2", "1"), ("o3", "p1", "2")):
        engine.put(
            "Observation",
            oid,
            IndexEntries(
                tokens=[TokenEntry("code", "L", code)],
                references=[ReferenceEntry("subject", "Patient", pid)],
                compartment=[pid],
            ),
        )


def test_chain_matches_references_to_targets_matching_the_chained_clause(engine):
    _clinic(engine)
    assert found(engine, Chain("subject", "Patient", StringTest("family", "dur"))) == ["o1", "o3"]
    nested = Chain(
        "subject", "Patient", Chain("organization", "Organization", StringTest("name", "ch"))
    )
    assert found(engine, nested) == ["o1", "o3"]
    assert found(engine, Chain("subject", "Patient", StringTest("family", "zz"))) == []


def test_has_matches_targets_of_matching_source_references(engine):
    _clinic(engine)
    has = Has("Observation", "subject", TokenTest("code", "L", "2"))
    assert found(engine, has, "Patient") == ["p1"]
    assert found(engine, Not(has), "Patient") == ["p2"]
    assert found(engine, Has("Observation", "subject", Everything()), "Patient") == ["p1", "p2"]


def test_in_compartment_binds_the_search_to_a_patient(engine):
    _clinic(engine)
    assert found(engine, InCompartment("p1")) == ["o1", "o3"]
    assert found(engine, InCompartment("p1"), "Patient") == ["p1"]


def test_system_level_search_spans_types(engine):
    _clinic(engine)
    page = engine.search(SearchQuery(None, InCompartment("p1"), count=100))
    assert sorted(typed_ids(page.rows)) == ["Observation/o1", "Observation/o3", "Patient/p1"]


# --- sorting (search.html#_sort) -------------------------------------------------------


def _sort_corpus(engine):
    # b: 1..5, a: 3..4, c: no date, d: 2..2, e: 3..4 (ties with a)
    spans = {"b": (1, 5), "a": (3, 4), "d": (2, 2), "e": (3, 4)}
    for rid, (lo, hi) in spans.items():
        engine.put(
            "Observation",
            rid,
            IndexEntries(
                dates=[DateEntry("date", lo * DAY, lo * DAY), DateEntry("date", hi * DAY, hi * DAY)]
            ),
        )
    engine.put("Observation", "c")


def test_sort_ascending_by_lowest_value_missing_last_ties_by_id(engine):
    _sort_corpus(engine)
    page = engine.search(q(sort=(SortKey("date"),)))
    assert ids(page) == ["b", "d", "a", "e", "c"]


def test_sort_descending_by_highest_value_missing_last_ties_by_id(engine):
    _sort_corpus(engine)
    page = engine.search(q(sort=(SortKey("date", descending=True),)))
    assert ids(page) == ["b", "a", "e", "d", "c"]


def test_no_sort_orders_by_id_and_sort_by_id_descending(engine):
    _sort_corpus(engine)
    assert ids(engine.search(q())) == ["a", "b", "c", "d", "e"]
    assert ids(engine.search(q(sort=(SortKey("_id", True),)))) == ["e", "d", "c", "b", "a"]


def test_sort_on_two_keys_and_last_updated(engine):
    engine.put("Observation", "x", IndexEntries(tokens=[TokenEntry("status", None, "final")]), lu=3)
    engine.put(
        "Observation", "y", IndexEntries(tokens=[TokenEntry("status", None, "amended")]), lu=2
    )
    engine.put("Observation", "z", IndexEntries(tokens=[TokenEntry("status", None, "final")]), lu=1)
    engine.put("Observation", "w", lu=4)
    keys = (SortKey("status"), SortKey("_lastUpdated", True))
    assert ids(engine.search(q(sort=keys))) == ["y", "x", "z", "w"]
    assert ids(engine.search(q(sort=(SortKey("_lastUpdated"),)))) == ["z", "y", "x", "w"]


def test_sort_numbers_exactly_including_negatives(engine):
    values = {"n1": "-10.5", "n2": "-2", "n3": "0", "n4": "0.25", "n5": "3", "n6": "12"}
    for rid, v in values.items():
        engine.put(
            "RiskAssessment",
            rid,
            IndexEntries(numbers=[NumberEntry("probability", Decimal(v), Decimal(v))]),
        )
    page = engine.search(q(rtype="RiskAssessment", sort=(SortKey("probability", True),)))
    assert ids(page) == ["n6", "n5", "n4", "n3", "n2", "n1"]


# --- paging (search.html#count, keyset cursors) ----------------------------------------


def _walk(engine, query, limit=50):
    seen, page = [], engine.search(query)
    seen.extend(ids(page))
    while page.next_cursor and limit:
        page = engine.search(
            SearchQuery(
                query.resource_type, query.where, query.sort, query.count, cursor=page.next_cursor
            )
        )
        seen.extend(ids(page))
        limit -= 1
    return seen


@pytest.mark.parametrize(
    "sort",
    [(), (SortKey("date"),), (SortKey("date", True),), (SortKey("date"), SortKey("_id", True))],
)
def test_paging_walks_every_result_once_in_order(engine, sort):
    _sort_corpus(engine)
    full = ids(engine.search(q(sort=sort)))
    for count in (1, 2, 3, 5):
        assert _walk(engine, q(sort=sort, count=count)) == full


def test_paging_with_inserts_between_pages_neither_skips_nor_repeats(engine):
    for i in range(0, 20, 2):
        engine.put(
            "Observation", f"r{i:02d}", IndexEntries(dates=[DateEntry("date", i * DAY, i * DAY)])
        )
    query = q(sort=(SortKey("date"),), count=4)
    page = engine.search(query)
    assert ids(page) == ["r00", "r02", "r04", "r06"]
    engine.put(
        "Observation", "r01", IndexEntries(dates=[DateEntry("date", DAY, DAY)])
    )  # behind the cursor
    engine.put(
        "Observation", "r07", IndexEntries(dates=[DateEntry("date", 7 * DAY, 7 * DAY)])
    )  # ahead
    engine.put(
        "Observation", "r05", IndexEntries(dates=[DateEntry("date", 5 * DAY, 5 * DAY)])
    )  # behind
    rest = []
    while page.next_cursor:
        page = engine.search(
            SearchQuery("Observation", sort=query.sort, count=4, cursor=page.next_cursor)
        )
        rest.extend(ids(page))
    assert rest == ["r07", "r08", "r10", "r12", "r14", "r16", "r18"]


def test_previous_cursor_returns_the_previous_page(engine):
    for i in range(9):
        engine.put("Observation", f"r{i}")
    first = engine.search(q(count=3))
    second = engine.search(q(count=3, cursor=first.next_cursor))
    assert first.previous_cursor is None
    assert ids(second) == ["r3", "r4", "r5"]
    back = engine.search(q(count=3, cursor=second.previous_cursor))
    assert ids(back) == ["r0", "r1", "r2"]
    assert back.previous_cursor is None
    assert ids(engine.search(q(count=3, cursor=back.next_cursor))) == ["r3", "r4", "r5"]


def test_system_level_paging_orders_by_id_then_type(engine):
    for rtype in ("Patient", "Observation"):
        for rid in ("a", "b", "c"):
            engine.put(rtype, rid)
    query = SearchQuery(None, count=2)
    seen, page = [], engine.search(query)
    seen += typed_ids(page.rows)
    while page.next_cursor:
        page = engine.search(SearchQuery(None, count=2, cursor=page.next_cursor))
        seen += typed_ids(page.rows)
    assert seen == [
        "Observation/a",
        "Patient/a",
        "Observation/b",
        "Patient/b",
        "Observation/c",
        "Patient/c",
    ]


def test_total_accurate_and_summary_count(engine):
    _sort_corpus(engine)
    page = engine.search(q(count=2, total=TotalMode.ACCURATE))
    assert page.total == 5 and len(page.rows) == 2
    counted = engine.search(q(Not(IdTest(("a",))), summary=SummaryMode.COUNT))
    assert counted.total == 4 and counted.rows == [] and counted.next_cursor is None
    assert engine.search(q(count=2)).total is None


def test_cursor_from_another_requester_or_query_is_rejected(engine):
    _sort_corpus(engine)
    page = engine.search(q(count=2))
    with pytest.raises(FhirError) as exc:
        engine.search(q(count=2, cursor=page.next_cursor), binding="requester-b")
    assert exc.value.status == 400 and "invalid or expired paging cursor" in exc.value.message
    with pytest.raises(FhirError):
        engine.search(q(IdTest(("a", "b")), count=2, cursor=page.next_cursor))
    with pytest.raises(FhirError):
        engine.search(q(count=2, cursor=page.next_cursor), key=b"x" * 32)
    with pytest.raises(FhirError):
        engine.search(q(count=2, cursor=page.next_cursor[:-2] + "AA"))


# --- _include / _revinclude (search.html#include) --------------------------------------


def test_include_and_revinclude_are_filtered_by_allowed(engine):
    _clinic(engine)
    engine.put(
        "Observation",
        "hidden",
        IndexEntries(
            tokens=[TokenEntry("code", "L", "9")],
            references=[ReferenceEntry("subject", "Patient", "p1")],
            compartment=["p1"],
        ),
    )
    page = engine.search(q(IdTest(("o1", "o2"))))
    include = Include("Observation", "subject", "Patient")
    assert sorted(typed_ids(engine.includes(page.rows, [include]))) == ["Patient/p1", "Patient/p2"]
    only_p1 = {"Patient": IdTest(("p1",))}
    got = engine.includes(page.rows, [include], lambda t: only_p1.get(t, Everything()))
    assert typed_ids(got) == ["Patient/p1"]

    patients = engine.search(q(IdTest(("p1",)), "Patient"))
    rev = Include("Observation", "subject", reverse=True)
    assert sorted(typed_ids(engine.includes(patients.rows, [rev]))) == [
        "Observation/hidden",
        "Observation/o1",
        "Observation/o3",
    ]
    no_hidden = {"Observation": Not(IdTest(("hidden",)))}
    got = engine.includes(patients.rows, [rev], lambda t: no_hidden.get(t, Everything()))
    assert sorted(typed_ids(got)) == ["Observation/o1", "Observation/o3"]


def test_include_iterate_follows_included_resources_and_skips_page_rows(engine):
    _clinic(engine)
    page = engine.search(q(IdTest(("o1",))))
    plain = [Include("Observation", "subject"), Include("Patient", "organization")]
    assert typed_ids(engine.includes(page.rows, plain)) == ["Patient/p1"]
    iterating = [
        Include("Observation", "subject"),
        Include("Patient", "organization", iterate=True),
    ]
    assert typed_ids(engine.includes(page.rows, iterating)) == ["Patient/p1", "Organization/org1"]
    # _revinclude:iterate from the patient back to its observations, o1 (the page row) excluded
    rev = [
        Include("Observation", "subject"),
        Include("Observation", "subject", reverse=True, iterate=True),
    ]
    assert typed_ids(engine.includes(page.rows, rev)) == ["Patient/p1", "Observation/o3"]


def test_include_of_deleted_target_is_left_out(engine):
    _clinic(engine)
    engine.delete("Patient", "p2")
    page = engine.search(q(IdTest(("o2",))))
    assert engine.includes(page.rows, [Include("Observation", "subject")]) == []


# --- property: order and paging against the FHIR _sort definition ----------------------

_maybe_span = st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 3)))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spans=st.lists(
        st.tuples(_maybe_span, st.sampled_from([None, "a", "b", "c"])), min_size=1, max_size=9
    ),
    keys=st.lists(
        st.tuples(st.sampled_from(["date", "status", "_lastUpdated"]), st.booleans()), max_size=2
    ),
    count=st.integers(1, 4),
)
def test_sort_and_paging_follow_the_fhir_sort_rules(engine_name_factory, spans, keys, count):
    """search.html#_sort: ascending by lowest, descending by highest, missing last, then id."""
    engine = engine_name_factory()
    values = {}
    for i, (span, status) in enumerate(spans):
        rid = f"r{i}"
        entries = IndexEntries()
        if span is not None:
            entries.dates.append(DateEntry("date", span[0], span[0] + span[1]))
        if status is not None:
            entries.tokens.append(TokenEntry("status", None, status))
        lu = (i * 7) % 5  # ties on purpose
        engine.put("Observation", rid, entries, lu=lu)
        values[rid] = {
            "date": None if span is None else (span[0], span[0] + span[1]),
            "status": None if status is None else (status, status),
            "_lastUpdated": (lu, lu),
        }

    def order_key(rid):
        parts = []
        for param, desc in keys:
            v = values[rid][param]
            if v is None:
                parts.append((1, 0))
            elif desc:
                x = v[1]
                parts.append((0, -x if isinstance(x, int) else tuple(-ord(c) for c in x) + (1,)))
            else:
                parts.append((0, v[0]))
        return (*parts, rid)

    expected = sorted(values, key=order_key)
    sort = tuple(SortKey(p, d) for p, d in keys)
    assert _walk(engine, q(sort=sort, count=count)) == expected

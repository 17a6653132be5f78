"""MongoDB specifics of search: index models MongoDB accepts, filters without JavaScript,
bounded Chain/_has subqueries, exact number encoding in the documents."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.errors import FhirError
from fhir_server.search.index import (
    IndexEntries,
    NumberEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
)
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
    Has,
    Missing,
    Not,
    NumberTest,
    Or,
    Prefix,
    QuantityTest,
    SearchQuery,
    StringMatch,
    StringTest,
    TokenMatch,
    TokenTest,
    UriMatch,
    UriTest,
)
from fhir_server.store import mongo_index, mongo_search
from tests.unit.search_engines import MongoEngine

ARRAYS = {"tok", "str", "dt", "ref", "uri", "num", "qty", "pat", "prm"}


def test_index_specs_use_at_most_one_array_per_compound_index_and_fit_the_64_index_limit():
    codes = [f"p{i}" for i in range(80)] + sorted(mongo_index.DEFAULT_SORT_PARAMS)
    specs = mongo_index.index_specs("Observation", codes)
    names = [spec.document["name"] for spec in specs]
    assert len(names) == len(set(names))
    assert len(specs) + 1 <= 64  # plus _id
    for spec in specs:
        roots = {field.split(".")[0] for field in spec.document["key"]} & ARRAYS
        assert len(roots) <= 1, spec.document


def test_index_specs_are_created_by_mongomock():
    engine = MongoEngine()
    engine.db["Observation"].create_indexes(
        mongo_index.index_specs("Observation", ["date", "code"])
    )
    assert "ix_srt_date_a" in engine.db["Observation"].index_information()


def _operators(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _operators(v)
    elif isinstance(value, list):
        for v in value:
            yield from _operators(v)


def test_filters_use_no_server_side_javascript():
    engine = MongoEngine()
    node = And(
        (
            Or((TokenTest("code", "S", "1"), TokenTest("code", match=TokenMatch.TEXT, text="gly"))),
            Not(Missing("status", True)),
            StringTest("name", "a.b", StringMatch.CONTAINS),
            UriTest("url", "http://x/", UriMatch.ABOVE),
            QuantityTest("value-quantity", Prefix.AP, Decimal(1), Decimal(1), None, "mg"),
            DateTest("_lastUpdated", Prefix.NE, 1, 2),
            Chain("subject", "Patient", StringTest("family", "d")),
            Has("Observation", "subject", NumberTest("n", Prefix.GE, Decimal(1), Decimal(2))),
        )
    )
    ops = set(_operators(mongo_search.Compiler(engine.db).filter(node, "Observation")))
    assert not ops & {"$where", "$function", "$accumulator", "$expr"}


def _regexes(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$regex":
                yield v
            else:
                yield from _regexes(v)
    elif isinstance(value, list):
        for v in value:
            yield from _regexes(v)


def test_regular_expressions_hold_no_nul_and_match_it_literally():
    """MongoDB refuses a `$regex` with an embedded NUL (BadValue), which mongomock takes:
    a value with one must still be searched for, as on SQLite, not crash the search."""
    engine = MongoEngine()
    engine.put("Patient", "p1", IndexEntries(strings=[StringEntry("name", "a\x00b", "a\x00b")]))
    top = chr(0x10FFFF)  # no upper bound: starts-with is a regular expression too
    engine.put("Patient", "p2", IndexEntries(strings=[StringEntry("name", "\x00" + top, "x")]))
    for node, found in (
        (StringTest("name", "a\x00", StringMatch.CONTAINS), ["p1"]),
        (StringTest("name", "\x00b", StringMatch.CONTAINS), ["p1"]),
        (StringTest("name", "\x00" + top, StringMatch.START), ["p2"]),
    ):
        flt = mongo_search.Compiler(engine.db).filter(node, "Patient")
        assert all("\x00" not in pattern for pattern in _regexes(flt)), flt
        assert [row.id for row in engine.search(SearchQuery("Patient", node)).rows] == found


def test_chain_and_has_subqueries_are_bounded(monkeypatch):
    engine = MongoEngine()
    for i in range(4):
        engine.put(
            "Patient", f"p{i}", IndexEntries(strings=[StringEntry("family", "durand", "Durand")])
        )
        engine.put(
            "Observation",
            f"o{i}",
            IndexEntries(references=[ReferenceEntry("subject", "Patient", f"p{i}")]),
        )
    monkeypatch.setattr(mongo_search, "SUBQUERY_LIMIT", 3)
    for rtype, node in (
        ("Observation", Chain("subject", "Patient", StringTest("family", "dur"))),
        ("Patient", Has("Observation", "subject", Missing("subject", False))),
    ):
        with pytest.raises(FhirError) as exc:
            engine.search(SearchQuery(rtype, node))
        assert exc.value.status == 400 and exc.value.issues[0].code == "too-costly"
    monkeypatch.setattr(mongo_search, "SUBQUERY_LIMIT", 4)
    assert (
        len(
            engine.search(
                SearchQuery("Observation", Chain("subject", "Patient", StringTest("family", "dur")))
            ).rows
        )
        == 4
    )


def test_index_document_keeps_token_parts_together_and_numbers_as_ordered_text():
    doc = mongo_index.index_document(
        IndexEntries(
            tokens=[TokenEntry("code", "S", "1", "glucose")],
            numbers=[NumberEntry("n", Decimal("-1.5"), Decimal("2"))],
        ),
        {"n": (Decimal("-1.5"), Decimal("2")), "code": ("1", "1")},
    )
    assert doc["tok"] == [{"p": "code", "s": "S", "c": "1", "d": "glucose"}]
    assert doc["num"][0]["lo"] < doc["num"][0]["hi"]
    assert doc["prm"] == ["code", "n"]
    # ascending sorts read the reversed lowest value (sorted descending, missing last)
    assert (
        doc["srt"]["code"]["a"]
        > mongo_index.index_document(IndexEntries(), {"code": ("2", "2")})["srt"]["code"]["a"]
    )

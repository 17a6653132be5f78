"""The reference evaluator: R4 search semantics over a small hand-made record."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fhir_server.search.evaluate import CorpusLookup, matches, run_query
from fhir_server.search.index import IndexEntries, NumberEntry
from fhir_server.search.normalize import date_range
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import InCompartment, Not, NumberTest, Prefix, SearchQuery
from fhir_server.search.registry import SearchRegistry
from tests.search_strategies import corpora, searches

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


def _doc(doc_id, patient, status, date=None, type_code="11488-4", **extra):
    doc = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": status,
        "type": {
            "coding": [{"system": LOINC, "code": type_code, "display": "Note de consultation"}]
        },
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }
    if date:
        doc["date"] = date
    return doc


CORPUS = {
    ("Patient", "p1"): {
        "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-05-17",
        "identifier": [{"system": INS, "value": "111"}], "name": [{"family": "Dupré", "given": ["Zoé"]}],
        "meta": {"lastUpdated": "2024-01-02T00:00:00Z"},
    },
    ("Patient", "p2"): {
        "resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1980",
        "identifier": [{"value": "222"}], "name": [{"family": "Dupont", "given": ["Éloïse"]}],
        "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
    },
    ("Patient", "p3"): {"resourceType": "Patient", "id": "p3", "name": [{"family": "Martin"}]},
    ("DocumentReference", "d1"): _doc("d1", "p1", "current", "2024-01-15T10:00:00Z"),
    ("DocumentReference", "d2"): _doc("d2", "p1", "superseded", "2023-06-15T10:00:00+02:00", "34133-9"),
    ("DocumentReference", "d3"): _doc(
        "d3", "p2", "current", "2024-01-15",
        securityLabel=[{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]}],
    ),
    ("DocumentReference", "d4"): _doc("d4", "p2", "entered-in-error"),
}  # fmt: skip


def ids(registry, resource_type, *params):
    return run_query(parse_search(resource_type, list(params), registry).query, CORPUS, registry)


def test_token_system_bar_code(registry):
    assert ids(registry, "Patient", ("identifier", f"{INS}|111")) == ["p1"]
    assert ids(registry, "Patient", ("identifier", "|222")) == ["p2"]
    assert ids(registry, "Patient", ("identifier", "|111")) == []
    assert ids(registry, "Patient", ("identifier", f"{INS}|")) == ["p1"]


def test_token_not_matches_resources_without_a_value(registry):
    assert ids(registry, "Patient", ("gender:not", "male")) == ["p1", "p3"]
    labelled = "urn:oid:1.2.250.1.213.1.1.4.13|MASQUE_PS"
    assert ids(registry, "DocumentReference", ("security-label:not", labelled)) == [
        "d1",
        "d2",
        "d4",
    ]


def test_token_text_is_a_normalized_prefix_of_the_display(registry):
    assert ids(registry, "DocumentReference", ("type:text", "NOTE de")) == ["d1", "d2", "d3", "d4"]
    assert ids(registry, "DocumentReference", ("type:text", "consultation")) == []


def test_string_start_contains_exact(registry):
    assert ids(registry, "Patient", ("name", "dup")) == ["p1", "p2"]
    assert ids(registry, "Patient", ("name", "eloise")) == ["p2"]
    assert ids(registry, "Patient", ("name:contains", "OIS")) == ["p2"]
    assert ids(registry, "Patient", ("name:exact", "Dupre")) == []
    assert ids(registry, "Patient", ("name:exact", "Dupré")) == ["p1"]


def test_date_prefix_eq_requires_the_search_range_to_contain_the_value(registry):
    # birthDate 1980 (a whole year) is not contained in 1980-05-17; 1980-05-17 is in 1980
    assert ids(registry, "Patient", ("birthdate", "1980-05-17")) == ["p1"]
    assert ids(registry, "Patient", ("birthdate", "1980")) == ["p1", "p2"]
    assert ids(registry, "Patient", ("birthdate", "ne1980-05-17")) == ["p2"]


def test_date_prefix_gt_lt_ge_le(registry):
    assert ids(registry, "Patient", ("birthdate", "gt1980-05-17")) == ["p2"]  # year ends later
    assert ids(registry, "Patient", ("birthdate", "lt1980-05-17")) == ["p2"]  # year starts earlier
    assert ids(registry, "Patient", ("birthdate", "ge1980-05-17")) == ["p1", "p2"]
    assert ids(registry, "Patient", ("birthdate", "le1980-05-16")) == ["p2"]


def test_date_prefix_sa_and_eb_exclude_overlap(registry):
    assert ids(registry, "Patient", ("birthdate", "sa1980-05-16")) == ["p1"]
    assert ids(registry, "Patient", ("birthdate", "sa1979")) == ["p1", "p2"]
    assert ids(registry, "Patient", ("birthdate", "eb1980-06")) == ["p1"]
    assert ids(registry, "Patient", ("birthdate", "eb1981")) == ["p1", "p2"]


def test_date_timezones_compare_in_utc(registry):
    # 2023-06-15T10:00:00+02:00 is 08:00Z
    assert ids(registry, "DocumentReference", ("date", "2023-06-15T08:00:00Z")) == ["d2"]
    assert ids(registry, "DocumentReference", ("date", "2024-01-15")) == ["d1", "d3"]


def test_number_prefixes_on_points():
    entries = IndexEntries(numbers=[NumberEntry("n", Decimal("100.2"), Decimal("100.2"))])

    def check(prefix, low, high):
        node = NumberTest("n", prefix, Decimal(low), Decimal(high))
        return matches(node, "Patient", {"id": "x"}, entries, CorpusLookup({}, None))  # type: ignore[arg-type]

    assert check(Prefix.EQ, "99.5", "100.5")
    assert not check(Prefix.EQ, "100.15", "100.2")  # half-open: high excluded
    assert check(Prefix.GT, "100", "100") and not check(Prefix.LT, "100", "100")
    assert check(Prefix.GE, "100.2", "100.2") and check(Prefix.LE, "100.2", "100.2")
    assert not check(Prefix.SA, "99.5", "100.5") and check(Prefix.SA, "99.5", "100.2")
    assert check(Prefix.NE, "100.25", "100.35")


def test_missing_modifier(registry):
    assert ids(registry, "DocumentReference", ("date:missing", "true")) == ["d4"]
    assert ids(registry, "Patient", ("gender:missing", "false")) == ["p1", "p2"]


def test_reference_by_id_type_and_type_modifier(registry):
    assert ids(registry, "DocumentReference", ("subject", "p1")) == ["d1", "d2"]
    assert ids(registry, "DocumentReference", ("patient", "Patient/p2")) == ["d3", "d4"]
    assert ids(registry, "DocumentReference", ("subject:Patient", "p9")) == []


def test_chain_patient_identifier(registry):
    assert ids(registry, "DocumentReference", ("patient.identifier", f"{INS}|111")) == ["d1", "d2"]
    assert ids(registry, "DocumentReference", ("subject:Patient.name", "eloise")) == ["d3", "d4"]


def test_has_documentreference_status(registry):
    assert ids(
        registry, "Patient", ("_has:DocumentReference:patient:status", "entered-in-error")
    ) == ["p2"]
    assert ids(registry, "Patient", ("_has:DocumentReference:subject:type", "34133-9")) == ["p1"]


def test_in_compartment(registry):
    query = SearchQuery("DocumentReference", where=InCompartment("p2"))
    assert run_query(query, CORPUS, registry) == ["d3", "d4"]


def test_sort_ascending_by_lowest_descending_by_highest_missing_last(registry):
    assert ids(registry, "DocumentReference", ("_sort", "date")) == ["d2", "d3", "d1", "d4"]
    assert ids(registry, "DocumentReference", ("_sort", "-date")) == ["d3", "d1", "d2", "d4"]
    # p2 (1980, whole year) starts before p1 (1980-05-17) and ends after it
    assert ids(registry, "Patient", ("_sort", "birthdate")) == ["p2", "p1", "p3"]
    assert ids(registry, "Patient", ("_sort", "-birthdate")) == ["p2", "p1", "p3"]


def test_sort_ties_break_on_next_key_then_id(registry):
    assert ids(registry, "DocumentReference", ("_sort", "status,-date")) == ["d3", "d1", "d4", "d2"]
    assert ids(registry, "DocumentReference", ("_sort", "type")) == ["d1", "d3", "d4", "d2"]
    assert ids(registry, "Patient", ("_sort", "-_lastUpdated")) == ["p1", "p2", "p3"]
    assert ids(registry, "Patient", ("_sort", "-_id")) == ["p3", "p2", "p1"]


def test_default_order_is_id_ascending_and_system_search_returns_type_and_id(registry):
    assert ids(registry, "DocumentReference") == ["d1", "d2", "d3", "d4"]
    query = parse_search(None, [("_lastUpdated", "ge2024-01-01")], registry).query
    assert run_query(query, CORPUS, registry) == ["Patient/p1", "Patient/p2"]


def test_lastupdated_compares_the_instant(registry):
    assert ids(registry, "Patient", ("_lastUpdated", "gt2024-01-01T00:00:00Z")) == ["p1"]
    assert ids(registry, "Patient", ("_lastUpdated", "eq2024-01-01")) == ["p2"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(corpora(), searches())
def test_not_is_the_complement_of_a_random_search(registry, corpus, search):
    resource_type, params = search
    query = parse_search(resource_type, params, registry).query
    hits = run_query(query, corpus, registry)
    negated = run_query(SearchQuery(resource_type, where=Not(query.where)), corpus, registry)
    every = sorted(i for t, i in corpus if t == resource_type)
    assert sorted(hits + negated) == every
    assert not set(hits) & set(negated)


def test_date_range_sanity_for_the_corpus():
    assert date_range("2023-06-15T10:00:00+02:00")[0] == date_range("2023-06-15T08:00:00Z")[0]

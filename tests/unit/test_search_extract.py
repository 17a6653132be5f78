"""Index extraction (R4 search page, "Search types" sections) and sort values."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fhir_server.search.extract import extract, sort_values
from fhir_server.search.index import DateEntry, ReferenceEntry, StringEntry, TokenEntry
from fhir_server.search.normalize import (
    MAX_INSTANT,
    date_range,
    decimal_range,
    normalize_string,
)
from fhir_server.search.registry import SearchRegistry
from tests.search_strategies import corpora

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
DAY = 86_400_000_000


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


def tokens(entries, param):
    return [t for t in entries.tokens if t.param == param]


def test_string_normalization_strips_accents_case_and_whitespace():
    assert normalize_string("  Éloïse   DUPRÉ\t") == "eloise dupre"
    assert normalize_string("Zoé") == normalize_string("ZOE")


def test_date_precision_ranges_are_inclusive_microseconds_utc():
    low, high = date_range("2024")
    assert high - low + 1 == 366 * DAY
    assert date_range("2024-02")[1] - date_range("2024-02")[0] + 1 == 29 * DAY
    midnight = date_range("2024-01-01")[0]
    assert date_range("2024-01-01T01:00:00+01:00") == (midnight, midnight + 999_999)
    assert (
        date_range("2024-01-01T00:00:00.5Z")[1] - date_range("2024-01-01T00:00:00.5Z")[0] == 99_999
    )


def test_number_precision_range_is_half_a_unit_of_the_last_digit():
    assert decimal_range("100") == (Decimal("99.5"), Decimal("100.5"))
    assert decimal_range("100.00") == (Decimal("99.995"), Decimal("100.005"))


def test_token_codeableconcept_codings_and_text(registry):
    doc = {
        "resourceType": "DocumentReference",
        "id": "d",
        "status": "current",
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": "11488-4", "display": "Note de Consultation"}
            ],
            "text": "Compte rendu",
        },
    }
    entries = extract(doc, registry)
    assert tokens(entries, "type") == [
        TokenEntry("type", "http://loinc.org", "11488-4", "note de consultation"),
        TokenEntry("type", None, None, "compte rendu"),
    ]
    assert tokens(entries, "status") == [TokenEntry("status", None, "current")]


def test_token_identifier_keeps_system_value_and_of_type(registry):
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [
            {
                "system": "urn:oid:1.2.250.1.213.1.4.8",
                "value": "123",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NH"}
                    ]
                },
            }
        ],
    }
    entries = extract(patient, registry)
    assert TokenEntry("identifier", "urn:oid:1.2.250.1.213.1.4.8", "123") in entries.tokens
    assert (
        TokenEntry("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203", "NH|123")
        in entries.tokens
    )


def test_token_contactpoint_boolean_and_deceased_expression(registry):
    def patient(**extra):
        return extract({"resourceType": "Patient", "id": "p", **extra}, registry)

    entries = patient(telecom=[{"system": "email", "value": "a@b.fr"}], active=False)
    assert tokens(entries, "email") == [TokenEntry("email", "email", "a@b.fr")]
    assert tokens(entries, "phone") == []
    assert tokens(entries, "active") == [TokenEntry("active", None, "false")]
    # Patient.deceased.exists() and Patient.deceased != false
    assert tokens(entries, "deceased") == [TokenEntry("deceased", None, "false")]
    assert tokens(patient(deceasedBoolean=True), "deceased")[0].code == "true"
    assert tokens(patient(deceasedBoolean=False), "deceased")[0].code == "false"
    dead = patient(deceasedDateTime="2020-05-01")
    assert tokens(dead, "deceased")[0].code == "true"
    assert [d.param for d in dead.dates] == ["death-date"]


def test_reference_forms_relative_absolute_urn_contained_identifier(registry):
    doc = {
        "resourceType": "DocumentReference",
        "id": "d",
        "status": "current",
        "subject": {"reference": "Patient/p1/_history/3"},
        "author": [
            {"reference": "#a1"},
            {"reference": "http://other.example/fhir/Practitioner/9"},
            {"reference": "urn:uuid:0f1e"},
            {
                "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8101"},
                "type": "Practitioner",
            },
        ],
        "contained": [{"resourceType": "Practitioner", "id": "a1"}],
    }
    refs = [r for r in extract(doc, registry).references if r.param == "author"]
    assert refs == [
        ReferenceEntry("author", None, None, "http://other.example/fhir/Practitioner/9"),
        ReferenceEntry("author", None, None, "urn:uuid:0f1e"),
        ReferenceEntry("author", "Practitioner", None, None, "urn:oid:1.2.250.1.71.4.2.1", "8101"),
    ]
    subject = [r for r in extract(doc, registry).references if r.param == "subject"]
    assert subject == [ReferenceEntry("subject", "Patient", "p1")]


def test_where_resolve_is_patient_keeps_only_patient_references(registry):
    def patient_refs(reference):
        doc = {
            "resourceType": "DocumentReference",
            "id": "d",
            "status": "current",
            "subject": reference,
        }
        return [r for r in extract(doc, registry).references if r.param == "patient"]

    assert patient_refs({"reference": "Patient/p1"}) == [ReferenceEntry("patient", "Patient", "p1")]
    assert patient_refs({"reference": "Group/g1"}) == []


def test_string_humanname_parts_are_separate_normalized_entries(registry):
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"family": "Dupré", "given": ["Zoé", "Anne"]}],
    }
    names = [s for s in extract(patient, registry).strings if s.param == "name"]
    assert names == [
        StringEntry("name", "dupre", "Dupré"),
        StringEntry("name", "zoe", "Zoé"),
        StringEntry("name", "anne", "Anne"),
    ]


def test_date_period_open_end_extends_to_max_instant(registry):
    doc = {
        "resourceType": "DocumentReference",
        "id": "d",
        "status": "current",
        "context": {"period": {"start": "2024-01-01"}},
    }
    period = [d for d in extract(doc, registry).dates if d.param == "period"]
    assert period == [DateEntry("period", date_range("2024-01-01")[0], MAX_INSTANT)]


def test_lastupdated_is_indexed_as_a_point(registry):
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "meta": {"lastUpdated": "2024-01-01T00:00:00.123Z"},
    }
    (entry,) = [d for d in extract(patient, registry).dates if d.param == "_lastUpdated"]
    assert entry.low == entry.high == date_range("2024-01-01T00:00:00.123Z")[0]


def test_mhd_list_sourceid_and_designationtype_extensions(registry):
    ihe = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
    lst = {
        "resourceType": "List",
        "id": "l",
        "status": "current",
        "mode": "working",
        "extension": [
            {"url": ihe + "ihe-sourceId", "valueIdentifier": {"value": "urn:oid:1.2.250.1"}},
            {
                "url": ihe + "ihe-designationType",
                "valueCodeableConcept": {
                    "coding": [{"system": "http://loinc.org", "code": "11488-4"}]
                },
            },
        ],
    }
    entries = extract(lst, registry)
    assert tokens(entries, "sourceId") == [TokenEntry("sourceId", None, "urn:oid:1.2.250.1")]
    assert tokens(entries, "designationType") == [
        TokenEntry("designationType", "http://loinc.org", "11488-4")
    ]


def test_author_identifier_from_reference_contained_practitioner_and_role(registry):
    rpps = "urn:oid:1.2.250.1.71.4.2.1"
    doc = {
        "resourceType": "DocumentReference",
        "id": "d",
        "status": "current",
        "contained": [
            {
                "resourceType": "Practitioner",
                "id": "a1",
                "identifier": [{"system": rpps, "value": "1"}],
            },
            {
                "resourceType": "Practitioner",
                "id": "a2",
                "identifier": [{"system": rpps, "value": "2"}],
            },
            {"resourceType": "PractitionerRole", "id": "r2", "practitioner": {"reference": "#a2"}},
            {"resourceType": "Organization", "id": "o", "identifier": [{"value": "org"}]},
        ],
        "author": [
            {"reference": "#a1"},
            {"reference": "#r2"},
            {"reference": "#o"},
            {"identifier": {"system": rpps, "value": "3"}},
        ],
    }
    values = sorted(t.code for t in tokens(extract(doc, registry), "author-identifier"))
    assert values == ["1", "2", "3"]


def test_compartment_of_patient_document_and_relatedperson(registry):
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "link": [{"other": {"reference": "Patient/p0"}, "type": "seealso"}],
    }
    assert extract(patient, registry).compartment == ["p1", "p0"]
    doc = {
        "resourceType": "DocumentReference",
        "id": "d",
        "status": "current",
        "subject": {"reference": "Patient/p2"},
        "author": [{"reference": "Practitioner/x"}],
    }
    assert extract(doc, registry).compartment == ["p2"]
    related = {"resourceType": "RelatedPerson", "id": "r", "patient": {"reference": "Patient/p3"}}
    assert extract(related, registry).compartment == ["p3"]
    assert (
        extract(
            {"resourceType": "Binary", "id": "b", "contentType": "text/plain"}, registry
        ).compartment
        == []
    )


def test_sort_values_are_lowest_and_highest_per_parameter(registry):
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "birthDate": "1980",
        "name": [{"family": "Martin", "given": ["Zoé", "Anne"]}],
        "identifier": [{"value": "b"}, {"value": "a"}],
    }
    values = sort_values(extract(patient, registry))
    assert values["birthdate"] == date_range("1980")
    assert values["name"] == ("anne", "zoe")
    assert values["identifier"] == ("a", "b")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(corpora())
def test_compiled_extractors_agree_with_fhirpathpy(registry, corpus):
    for resource in corpus.values():
        assert extract(resource, registry) == extract(resource, registry, engine="fhirpathpy")

"""What a search's criteria name (`access.query_names`), read as the query a patient is
shown in a search's AuditEvent (R14, R18): every spelling of a document's id or uniqueId
that the query may carry, parsed as the server parses a client's query."""

from __future__ import annotations

import pytest

from fhir_server.access.query_names import (
    identifier_spellings,
    named_identifiers,
    named_targets,
    spellings,
)
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import ReferenceTest

DOC = "0b0b0b0b-1111-4222-8333-444444444444"
UID = "urn:oid:1.2.250.1.999.1.1.7"
BASE = "https://dmp.example.fr/fhir"


def where(registry, resource_type: str, *params: tuple[str, str]):
    return parse_search(resource_type, list(params), registry, base_url=BASE).query.where


@pytest.mark.parametrize(
    ("resource_type", "params", "named"),
    [
        ("DocumentReference", [("_id", DOC)], (None, DOC)),
        ("DocumentReference", [("relatesto", DOC)], (None, DOC)),
        (
            "DocumentReference",
            [("relatesto", f"DocumentReference/{DOC}")],
            ("DocumentReference", DOC),
        ),
        (
            "List",
            [("item", f"https://elsewhere.example/fhir/DocumentReference/{DOC}")],
            ("DocumentReference", DOC),
        ),
        ("DocumentReference", [("relatesto", f"urn:uuid:{DOC}")], (None, DOC)),
        ("DocumentReference", [("_has:List:item:_id", DOC)], (None, DOC)),
        ("DocumentReference", [("subject", DOC)], (None, DOC)),
    ],
    ids=["_id", "plain", "typed", "absolute-elsewhere", "urn-uuid", "has", "any-parameter"],
)
def test_r18_a_documents_id_is_named_however_the_query_spells_it(
    registry, resource_type, params, named
):
    assert named in named_targets(where(registry, resource_type, *params))


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("DocumentReference", [("identifier", UID)]),
        ("DocumentReference", [("identifier", f"|{UID}")]),
        ("DocumentReference", [("identifier", f"urn:ietf:rfc:3986|{UID}")]),
        ("DocumentReference", [("identifier:of-type", f"http://x|MR|{UID}")]),
        ("DocumentReference", [("_has:List:item:identifier", UID)]),
        ("List", [("identifier", UID)]),
        ("DocumentReference", [("related", UID)]),
        ("DocumentReference", [("relatesto:identifier", UID)]),
        ("DocumentReference", [("identifier:text", UID)]),
        ("DocumentReference", [("identifier", f"{UID}|")]),
        ("DocumentReference", [("identifier", f"{UID}|decoy")]),
        ("DocumentReference", [("identifier:of-type", f"{UID}|MR|decoy")]),
        ("DocumentReference", [("relatesto:identifier", f"{UID}|decoy")]),
    ],
    ids=[
        "plain",
        "no-system",
        "system",
        "of-type",
        "has-list",
        "list",
        "related-urn",
        "ref-identifier",
        "text",
        "as-a-system",
        "as-a-system-before-a-value",
        "as-an-of-type-system",
        "as-a-ref-identifier-system",
    ],
)
def test_r18_a_documents_unique_id_is_named_however_the_query_spells_it(
    registry, resource_type, params
):
    found = named_identifiers(where(registry, resource_type, *params), resource_type, registry)
    assert UID in found


@pytest.mark.parametrize(
    "params",
    [
        [("patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|279047500099953")],
        [("patient:identifier", "urn:oid:1.2.250.1.213.1.4.8|279047500099953")],
        [("patient", "p1"), ("status", "current")],
    ],
    ids=["chained-ins", "ins-by-identifier", "patient-and-status"],
)
def test_the_common_patient_searches_name_no_identifier_to_look_up(registry, params):
    """MHD's usual searches name a Patient, never a document by identifier: no lookup."""
    found = named_identifiers(
        where(registry, "DocumentReference", *params),
        "DocumentReference",
        registry,
    )
    assert found == []


def test_spellings_add_the_lower_case_of_a_uuid_and_the_urn_of_an_oid():
    assert spellings(f" {DOC} ") == [DOC]  # a lower-case value is one lookup
    assert spellings(DOC.upper()) == [DOC.upper(), DOC]
    assert spellings(f"URN:UUID:{DOC.upper()}") == [f"URN:UUID:{DOC.upper()}", f"urn:uuid:{DOC}"]
    assert spellings("Not-A-Uuid") == ["Not-A-Uuid"]
    assert identifier_spellings("1.2.250.1.999.1.1.7") == ["1.2.250.1.999.1.1.7", UID]


def test_r18_a_unique_id_in_a_text_criterion_is_named_as_asked_not_lower_cased(registry):
    """`identifier:text=` matches on normalized (lower-case) text, but the event shows the
    value as asked: an XDS uniqueId with an extension in capitals (`OID^AbC`) is looked up
    as written, or a hidden document's would reach the patient's trace unlabelled."""
    unique_id = "urn:oid:1.2.250.1.999.1.1.7^AbC-12"
    found = named_identifiers(
        where(registry, "DocumentReference", ("identifier:text", unique_id)),
        "DocumentReference",
        registry,
    )
    assert unique_id in found


@pytest.mark.parametrize(
    "tail",
    ["/", "#x", "?x=1", " ", "\n", "/_history/1/", "/_history/1"],
    ids=["slash", "fragment", "query", "space", "newline", "versioned-slash", "versioned"],
)
@pytest.mark.parametrize("base", [f"{BASE}/", "https://elsewhere.example/fhir/"])
def test_r18_a_documents_id_in_an_absolute_reference_is_named_whatever_follows_it(
    registry, base, tail
):
    """R14/R18: an absolute reference names the id after its type whatever follows it. Read
    as the `Type/id` ending the url, `.../DocumentReference/<id>/` (or `#x`, `?x=1`, ` `)
    named nothing: the search's event carried no label and was shown, with the hidden
    document's id in its query, to the patient it is hidden from."""
    url = f"{base}DocumentReference/{DOC}{tail}"
    named = named_targets(ReferenceTest("relatesto", url=url))
    assert ("DocumentReference", DOC) in named


def test_r18_an_id_after_a_type_spelled_otherwise_is_named_as_any_type():
    """A type in another case names its id as a plain id (looked up as every labelled type)."""
    url = f"https://elsewhere.example/fhir/documentreference/{DOC}/"
    assert (None, DOC) in named_targets(ReferenceTest("relatesto", url=url))

"""`_summary` and `_elements` in both formats (search.html#summary, search.html#elements).

Attack pass on the AuditEvent trail (issue #21): the patient's trace asked with
`_format=xml&_summary=true`, `_summary=text` or `_elements=` answered 500 with a stack trace
in the log. The subset left out an AuditEvent's mandatory `agent` and `source`, and the XML
form, rendered through the models, refused the resource. Every subset now keeps the
mandatory top-level elements, as the specification asks of servers (`_elements`: "SHOULD
always return mandatory elements"; `_summary=text`: "text, id, meta, and top-level mandatory
elements"), and stays tagged SUBSETTED.
"""

from __future__ import annotations

import pytest
from lxml import etree

from tests.http.conftest import auth
from tests.http.test_r18_matrix import GP, PATIENT_A, _build_world, doc_id

FHIR = "{http://hl7.org/fhir}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    app, built = _build_world(tmp_path_factory.mktemp("subsets") / "var")
    gp = built.tokens.practitioner(GP)
    for key in ("a-visible", "a-masked"):  # events in A's trace
        built.get(gp, f"/fhir/DocumentReference/{doc_id(key)}")
    yield built
    app.extensions["fhir"].store.close()


def _xml(response) -> etree._Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("application/fhir+xml")
    return etree.fromstring(response.get_data())


def _subsetted(resource: etree._Element) -> bool:
    codes = resource.findall(f"{FHIR}meta/{FHIR}tag/{FHIR}code")
    return any(code.get("value") == "SUBSETTED" for code in codes)


@pytest.mark.parametrize("subset", ["_summary=true", "_summary=text", "_elements=type"])
def test_r16_the_patients_trace_in_xml_is_served_subsetted(world, subset):
    """The patient's AuditEvents, subsetted, in XML: each event keeps its type, agents and
    source (mandatory), is tagged SUBSETTED, and leaves out what the subset does not ask."""
    patient = world.tokens.patient(PATIENT_A)
    url = f"/fhir/AuditEvent?patient={PATIENT_A}&_format=xml&{subset}"
    bundle = _xml(world.client.get(url, headers=auth(patient)))
    events = bundle.findall(f"{FHIR}entry/{FHIR}resource/{FHIR}AuditEvent")
    assert events, "the trace is empty: the check proves nothing"
    for event in events:
        assert _subsetted(event)
        for mandatory in ("type", "agent", "source", "recorded"):
            assert event.find(f"{FHIR}{mandatory}") is not None, mandatory
        if subset != "_summary=true":
            assert event.find(f"{FHIR}entity") is None, "the subset is not applied"


def test_r16_one_audit_event_read_in_xml_with_elements(world):
    patient = world.tokens.patient(PATIENT_A)
    found = world.client.get(f"/fhir/AuditEvent?patient={PATIENT_A}", headers=auth(patient))
    event_id = found.get_json()["entry"][0]["resource"]["id"]
    event = _xml(
        world.client.get(
            f"/fhir/AuditEvent/{event_id}?_format=xml&_elements=outcome", headers=auth(patient)
        )
    )
    assert _subsetted(event) and event.find(f"{FHIR}agent") is not None
    assert event.find(f"{FHIR}entity") is None


def test_a_document_search_in_xml_with_elements_keeps_the_mandatory_ones(world):
    gp = world.tokens.practitioner(GP)
    url = f"/fhir/DocumentReference?patient={PATIENT_A}&_format=xml&_elements=type"
    bundle = _xml(world.client.get(url, headers=auth(gp)))
    documents = bundle.findall(f"{FHIR}entry/{FHIR}resource/{FHIR}DocumentReference")
    assert documents
    for document in documents:
        assert document.find(f"{FHIR}status") is not None
        assert document.find(f"{FHIR}content") is not None
        assert document.find(f"{FHIR}subject") is None, "the subset is not applied"

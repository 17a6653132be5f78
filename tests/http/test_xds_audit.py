"""R16 for XDS.b: each transaction's ATNA-shaped event (ITI-41, ITI-18, ITI-43).

A deposit is audited by one event (IHE ATNA: one per transaction), stored in the deposit's
own transaction (both or neither), carrying its documents' labels; a refused deposit leaves
a failure event; a query's events (the service's BALP search event and the ITI-18 event)
are committed together, before the answer. R17 notifications are unchanged.
"""

from __future__ import annotations

import orjson
import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import INVISIBLE_PATIENT, SYSTEM_DMP_CONFIDENTIALITY
from ihe_xds import vocabulary as v
from tests.http.conftest import auth
from tests.http.test_xds_endpoints import OTHER_PS, Xds, registry_status


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def _events(xds: Xds, patient_id: str) -> list[dict]:
    page = xds.runtime.service.search(
        INTERNAL, "AuditEvent", [("patient", patient_id), ("_count", "100")]
    )
    return [orjson.loads(body) for _, _, body, _ in page.matches]


def _subtypes(event: dict) -> set[str]:
    return {coding.get("code") for coding in event.get("subtype", [])}


def test_r16_iti41_event_is_stored_with_the_deposit(xds):
    patient_id, nir = xds.patient(41)
    request, response = xds.deposit(nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    deposits = [e for e in _events(xds, patient_id) if "ITI-41" in _subtypes(e)]
    assert len(deposits) == 1
    (event,) = deposits
    assert event["outcome"] == "0"
    named = {
        entity["what"]["identifier"]["value"]
        for entity in event["entity"]
        if "identifier" in entity.get("what", {})
    }
    assert f"urn:oid:{request.document_unique_ids['Document01']}" in named


def test_r16_a_deposit_is_one_event_not_one_per_resource_written(xds):
    """The Binary, DocumentReference and List a deposit writes are named by its ITI-41
    event; no separate BALP create event is written for each of them."""
    patient_id, nir = xds.patient(44)
    before = {event["id"] for event in _events(xds, patient_id)}
    xds.deposit(nir)
    new = [event for event in _events(xds, patient_id) if event["id"] not in before]
    assert [sorted(_subtypes(event)) for event in new] == [["ITI-41"]]


def test_r17_a_deposit_still_notifies_the_patient(xds):
    patient_id, nir = xds.patient(45)
    xds.deposit(nir)
    page = xds.runtime.service.search(
        INTERNAL, "Communication", [("subject", f"Patient/{patient_id}")]
    )
    texts = [orjson.loads(body)["payload"][0]["contentString"] for _, _, body, _ in page.matches]
    assert len(texts) == 1


def test_r14_the_patient_does_not_see_the_deposit_event_of_a_document_hidden_from_them(
    xds, client, tokens
):
    """The ITI-41 event carries its documents' labels (meta.security), so an
    INVISIBLE_PATIENT document is not revealed to the patient by the audit trail."""
    patient_id, nir = xds.patient(46)
    _, response = xds.deposit(nir, masking=(INVISIBLE_PATIENT,))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    (event,) = [e for e in _events(xds, patient_id) if "ITI-41" in _subtypes(e)]
    assert {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_PATIENT} in [
        {"system": c.get("system"), "code": c.get("code")} for c in event["meta"]["security"]
    ]
    seen = client.get(
        f"/fhir/AuditEvent?patient={patient_id}&_count=100",
        headers=auth(tokens.patient(patient_id)),
    )
    assert seen.status_code == 200
    ids = {entry["resource"]["id"] for entry in seen.get_json().get("entry", [])}
    assert ids  # the patient reads their audit trail (the record's creation, at least)
    assert event["id"] not in ids


def test_r16_a_refused_deposit_leaves_one_failure_event_and_no_success(xds):
    """R09: a blocked practitioner's deposit is refused; its ITI-41 event says so."""
    patient_id, nir = xds.patient(42)
    xds.block(patient_id, OTHER_PS)
    _, response = xds.deposit(nir, idnat=OTHER_PS)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])
    deposits = [e for e in _events(xds, patient_id) if "ITI-41" in _subtypes(e)]
    assert [event["outcome"] for event in deposits] == ["8"]


def test_r16_a_query_records_its_search_and_its_iti18_event(xds):
    patient_id, nir = xds.patient(43)
    xds.deposit(nir)
    before = {event["id"] for event in _events(xds, patient_id)}
    response = xds.find_documents(nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    new = [event for event in _events(xds, patient_id) if event["id"] not in before]
    assert any("ITI-18" in _subtypes(event) for event in new)
    assert any("search-type" in _subtypes(event) for event in new)

"""R16 for XDS.b: each transaction's ATNA-shaped event (ITI-41, ITI-18, ITI-43).

A deposit's event is stored in the deposit's own transaction (both or neither); a refused
deposit leaves a failure event; a query's events (the service's BALP search event and the
ITI-18 event) are committed together, before the answer.
"""

from __future__ import annotations

import orjson
import pytest

from fhir_server.access.requester import INTERNAL
from ihe_xds import vocabulary as v
from tests.http.test_xds_endpoints import OTHER_PS, Xds, registry_status


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def _events(xds: Xds, patient_id: str) -> list[dict]:
    page = xds.runtime.service.search(
        INTERNAL, "AuditEvent", [("patient", patient_id), ("_count", "100")]
    )
    return [orjson.loads(body) for _, _, body in page.matches]


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

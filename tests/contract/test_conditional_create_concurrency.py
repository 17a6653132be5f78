"""Concurrent conditional creates with the same criteria create exactly one resource, on
every engine (issue #18, finding 7; `FhirService.recheck`, `StoreTransaction.claim`)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import SearchQuery
from tests.http.conftest import dmp_consent

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
INS = "185077512345608"
WRITERS = 20


def patient() -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"family": "Durand", "given": ["Marie"]}],
        "gender": "female",
        "birthDate": "1985-07-01",
    }


def consent(patient_id: str) -> dict:
    return dmp_consent(patient_id)


def _all_at_once(call, count: int = WRITERS) -> list:
    """`call()` from `count` threads released together; each outcome or FhirError."""
    start = threading.Barrier(count)

    def run(_):
        start.wait()
        try:
            return call()
        except FhirError as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _stored(service, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
    query = parse_search(resource_type, params, service.registry).query
    page = service.store.search(
        SearchQuery(resource_type, where=query.where, count=100),
        cursor_key=b"k" * 32,
        cursor_binding="test",
    )
    return [row[1] for row in page.rows]


def test_r15_parallel_conditional_patient_creates_make_one_patient(engine_service):
    """Twenty `POST Patient` with the same If-None-Exist INS: one Patient, found by INS,
    and every answer names it (created once, found by the others)."""
    service, _ = engine_service
    criteria = [("identifier", f"{INS_SYSTEM}|{INS}")]
    results = _all_at_once(
        lambda: service.create(INTERNAL, "Patient", patient(), if_none_exist=criteria)
    )
    assert not [r for r in results if isinstance(r, FhirError)], results
    stored = _stored(service, "Patient", criteria)
    assert len(stored) == 1, f"{len(stored)} Patients for one INS"
    assert sum(r.created for r in results) == 1
    assert {r.stored.id for r in results} == set(stored)


def test_r10_parallel_conditional_consent_creates_make_one_consent(engine_service):
    service, _ = engine_service
    patient_id = service.create(INTERNAL, "Patient", patient()).stored.id
    criteria = [("patient", f"Patient/{patient_id}"), ("scope", "patient-privacy")]
    results = _all_at_once(
        lambda: service.create(INTERNAL, "Consent", consent(patient_id), if_none_exist=criteria)
    )
    assert not [r for r in results if isinstance(r, FhirError)], results
    assert len(_stored(service, "Consent", criteria)) == 1
    assert sum(r.created for r in results) == 1


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_r15_parallel_bundle_conditional_creates_make_one_patient(engine_service, kind):
    """The same through transaction and batch entries with `ifNoneExist`."""
    service, bundles = engine_service
    criteria = f"identifier={INS_SYSTEM}|{INS}"
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": "urn:uuid:3f1c8a52-0000-4000-8000-000000000001",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
            }
        ],
    }
    results = _all_at_once(lambda: bundles.process(INTERNAL, bundle))
    assert not [r for r in results if isinstance(r, FhirError)], results
    assert len(_stored(service, "Patient", [("identifier", f"{INS_SYSTEM}|{INS}")])) == 1
    statuses = sorted(answers[0].status for _, answers in results)
    assert statuses.count("201 Created") == 1, statuses


def test_r15_conditional_creates_with_other_criteria_are_not_held_back(engine_service):
    """The claim is per criteria: different INS create their own Patients."""
    service, _ = engine_service
    created = []
    for n, value in enumerate(("185077512345608", "285077512345655")):
        body = {**patient(), "identifier": [{"system": INS_SYSTEM, "value": value}]}
        created.append(
            service.create(
                INTERNAL, "Patient", body, if_none_exist=[("identifier", f"{INS_SYSTEM}|{value}")]
            )
        )
        assert created[n].created
    assert created[0].stored.id != created[1].stored.id

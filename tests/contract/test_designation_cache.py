"""R04: a search designates its patient by INS (`patient.identifier=...`); the gate keeps
what an INS resolved to while no Patient has been written (PATIENTS_EPOCH), on every engine,
and never answers from a resolution a Patient write has made stale."""

from __future__ import annotations

from fhir_server.access.requester import INTERNAL
from fhir_server.search.query import TokenTest
from tests.http.conftest import a_patient, valid_nir

INS_SYSTEM = a_patient(0)["identifier"][0]["system"]


def test_r04_an_ins_moved_to_another_patient_designates_that_patient(engine_service):
    service, _ = engine_service
    gate = service.gate
    ins = TokenTest("identifier", INS_SYSTEM, valid_nir(7))
    first = service.create(INTERNAL, "Patient", a_patient(7)).stored.id
    assert gate.patients_matching(ins) == [first]
    assert gate.patients_matching(ins) == [first]  # cached: no Patient written since

    # The INS is taken off the first Patient and given to a new one.
    service.update(INTERNAL, "Patient", first, {**a_patient(8), "id": first})
    second = service.create(INTERNAL, "Patient", a_patient(7)).stored.id
    assert gate.patients_matching(ins) == [second]


def test_r04_a_second_patient_with_the_same_ins_makes_it_ambiguous(engine_service):
    service, _ = engine_service
    ins = TokenTest("identifier", INS_SYSTEM, valid_nir(9))
    service.create(INTERNAL, "Patient", a_patient(9))
    assert len(service.gate.patients_matching(ins)) == 1
    service.create(INTERNAL, "Patient", a_patient(9))
    assert len(service.gate.patients_matching(ins)) == 2

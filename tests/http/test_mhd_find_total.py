"""ITI-66 / ITI-67 answers carry `Bundle.total` (issue #19, point 9 and deliverable 6).

IHE MHD's Find Document References and Find Document Lists response profiles require
`Bundle.total` (1..1), and fhirpy's `count()` reads it; the server answered it only to
`_total=accurate`. It is the exact count within the access rules (R18): what the requester
may not see is not counted, whatever the page size.
"""

from __future__ import annotations

import pytest

from tests.http.test_r18_matrix import AUTHORIZED, GP, PATIENT_A, World, _build_world


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def search(world: World, token: str, path: str) -> dict:
    response = world.get(token, path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.mark.parametrize("total", ["", "&_total=none"])
def test_iti67_find_document_references_carries_total_within_the_rules(world, total):
    """The authorized practitioner does not see the MASQUE_PS document (R14): it is not
    counted; the médecin traitant (R08) sees, and counts, all of them; one entry per page."""
    path = f"/fhir/DocumentReference?patient={PATIENT_A}&_count=1{total}"
    authorized = search(world, world.tokens.practitioner(AUTHORIZED), path)
    everything = search(world, world.tokens.practitioner(GP), path)
    assert len(authorized["entry"]) == len(everything["entry"]) == 1
    visible = search(
        world, world.tokens.practitioner(AUTHORIZED), path.replace("_count=1", "_count=100")
    )
    assert authorized["total"] == len(visible["entry"])
    assert everything["total"] == authorized["total"] + 1


def test_iti66_find_document_lists_carries_total(world):
    found = search(world, world.tokens.patient(PATIENT_A), f"/fhir/List?patient={PATIENT_A}")
    assert found["total"] == len(found.get("entry", [])) == 1

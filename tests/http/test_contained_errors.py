"""Issue #2 item 8 over HTTP: a Patient whose contained resource has no readable
resourceType is a 400 OperationOutcome naming it, and nothing is stored."""

from __future__ import annotations

from tests.http.conftest import FHIR_JSON, a_patient, auth


def test_a_contained_resource_without_a_type_is_a_400_naming_it(client, tokens):
    patient = {**a_patient(31), "contained": [{"resourceType": None}]}
    headers = auth(tokens.system(), **{"Content-Type": FHIR_JSON})
    response = client.post("/fhir/Patient", json=patient, headers=headers)
    assert response.status_code == 400
    (issue,) = response.get_json()["issue"]
    assert issue["expression"] == ["Patient.contained[0].resourceType"]
    found = client.get(
        f"/fhir/Patient?identifier={patient['identifier'][0]['value']}", headers=headers
    )
    assert found.get_json().get("total", 0) == 0 and not found.get_json().get("entry")

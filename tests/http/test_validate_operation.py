"""`$validate` (FHIR R4 Resource-validate) over HTTP: one test per profile constraint kind, with
the OperationOutcome expression pointing at the element; a token but no write permission."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_server.resources.profiles import DMP_DOCUMENT_REFERENCE
from tests.http.conftest import FHIR_JSON, a_patient, auth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
FHIR_XML = "application/fhir+xml"


def dmp_document() -> dict:
    """doc-x-id of PDSm4DMP with its entryUUID: valid against dmp-document-reference."""
    document = json.loads(
        (FIXTURES / "DocumentReference-doc-x-id.json").read_text(encoding="utf-8")
    )
    document["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:6f1c9a8e-3b0d-4b7e-9a51-4f0c2d7e8a10"}
    ]
    return document


def validate(
    client, token, resource_type: str, body: dict, path_suffix: str = "$validate", **query
):
    return client.post(
        f"/fhir/{resource_type}/{path_suffix}",
        data=json.dumps(body),
        query_string=query,
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def errors(response) -> list[tuple[str, list[str]]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [
        (i["code"], i.get("expression", []))
        for i in outcome["issue"]
        if i["severity"] in ("error", "fatal")
    ]


@pytest.fixture
def read_only(tokens):
    """A token without any write scope: $validate stores nothing."""
    return tokens.system("reader", scope="system/*.rs")


def test_validate_valid_document_is_all_ok(client, read_only):
    response = validate(client, read_only, "DocumentReference", dmp_document())
    assert errors(response) == []
    assert response.get_json()["issue"][-1]["diagnostics"] == "All OK"


def test_validate_needs_a_token(client):
    response = client.post("/fhir/DocumentReference/$validate", json=dmp_document())
    assert response.status_code == 401


def test_validate_stores_nothing(client, tokens, read_only):
    validate(client, read_only, "Patient", a_patient(1))
    search = client.get("/fhir/Patient", headers=auth(tokens.system()))
    assert search.get_json().get("total", 0) == 0 and not search.get_json().get("entry")


def test_validate_cardinality_min_points_at_the_element(client, read_only):
    document = dmp_document()
    del document["content"][0]["attachment"]["language"]
    assert errors(validate(client, read_only, "DocumentReference", document)) == [
        ("required", ["DocumentReference.content[0].attachment.language"])
    ]


def test_validate_cardinality_max_points_at_the_element(client, read_only):
    document = dmp_document()
    document["securityLabel"] = document["securityLabel"] * 5
    assert ("structure", ["DocumentReference.securityLabel"]) in errors(
        validate(client, read_only, "DocumentReference", document)
    )


def test_validate_pattern_points_at_the_element(client, read_only):
    document = dmp_document()
    document["masterIdentifier"]["system"] = "urn:oid:1.2.3"
    assert [e for _, e in errors(validate(client, read_only, "DocumentReference", document))] == [
        ["DocumentReference.masterIdentifier"]
    ]


def test_validate_required_binding_points_at_the_element(client, read_only):
    document = dmp_document()
    document["type"]["coding"][0]["code"] = "00000-0"
    assert errors(validate(client, read_only, "DocumentReference", document)) == [
        ("code-invalid", ["DocumentReference.type"])
    ]


def test_validate_slice_points_at_the_element(client, read_only):
    document = dmp_document()
    document["identifier"] = [{"system": "urn:oid:1.2.3", "value": "x"}]  # no entryUUID slice
    assert ("required", ["DocumentReference.identifier"]) in errors(
        validate(client, read_only, "DocumentReference", document)
    )


def test_validate_reference_target_points_at_the_element(client, read_only):
    document = dmp_document()
    document["subject"] = {"reference": "RelatedPerson/123"}
    assert errors(validate(client, read_only, "DocumentReference", document)) == [
        ("value", ["DocumentReference.subject"])
    ]


def test_validate_invariant_points_at_the_element(client, read_only):
    patient = a_patient(2)
    patient["identifier"][0]["value"] = patient["identifier"][0]["value"][:-2] + "00"
    assert errors(validate(client, read_only, "Patient", patient)) == [
        ("invariant", ["Patient.identifier[0].value"])
    ]


def test_validate_structure_points_at_the_element(client, read_only):
    patient = a_patient(3, birthDate="not-a-date")
    assert [e for _, e in errors(validate(client, read_only, "Patient", patient))] == [
        ["Patient.birthDate"]
    ]


def test_validate_parameters_body_with_profile(client, read_only):
    """A plain DocumentReference is not held to the DMP profile unless `profile` names it."""
    document = dmp_document()
    del document["meta"]
    del document["context"]
    assert errors(validate(client, read_only, "DocumentReference", document)) == []
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": document},
            {"name": "profile", "valueUri": DMP_DOCUMENT_REFERENCE},
        ],
    }
    assert errors(validate(client, read_only, "DocumentReference", parameters)) == [
        ("required", ["DocumentReference.context"])
    ]


def test_validate_instance_level_mode_update(client, read_only):
    document = dmp_document()
    assert (
        errors(
            validate(
                client,
                read_only,
                "DocumentReference",
                document,
                "doc-x-id/$validate",
                mode="update",
            )
        )
        == []
    )
    other = copy.deepcopy(document)
    other["id"] = "another"
    assert errors(
        validate(client, read_only, "DocumentReference", other, "doc-x-id/$validate", mode="update")
    ) == [("invalid", ["DocumentReference.id"])]


def test_validate_unknown_mode_is_400(client, read_only):
    response = validate(client, read_only, "Patient", a_patient(4), mode="bogus")
    assert response.status_code == 400


def test_validate_wrong_type_for_endpoint(client, read_only):
    assert errors(validate(client, read_only, "Patient", dmp_document())) == [
        ("invalid", ["resourceType"])
    ]


def test_validate_xml(client, read_only):
    response = client.post(
        "/fhir/Patient/$validate",
        data='<Patient xmlns="http://hl7.org/fhir"><birthDate value="1985-07-01"/></Patient>',
        headers=auth(read_only, **{"Content-Type": FHIR_XML, "Accept": FHIR_XML}),
    )
    assert response.status_code == 200
    assert response.mimetype == FHIR_XML
    text = response.get_data(as_text=True)
    assert "<OperationOutcome" in text and '<expression value="Patient.identifier"/>' in text

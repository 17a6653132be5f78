"""MHD driven by a real FHIR client library (fhirpy, sync client over `requests`) against
`fhir-server serve` running as a subprocess (gunicorn), with bearer tokens: ITI-65 deposit,
ITI-66 and ITI-67 searches, ITI-68 retrieve, and `$validate`."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import INS_SYSTEM, Tokens, a_patient, valid_nir
from tests.http.test_serve import _free_port, _start, _stop
from tests.support.documents import with_submission_set_unique_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
AUTHOR = "899700218896"
CONTENT = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>fhirpy</title></ClinicalDocument>'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fhirpy") / "var"
    port = _free_port()
    process = _start(data_dir, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir", Tokens(data_dir)
    finally:
        assert _stop(process) == 0


def _bundle(nir: str) -> dict:
    text = (FIXTURES / "Bundle-example-td2-iti65-lot-soumission.json").read_text(encoding="utf-8")
    bundle = with_submission_set_unique_id(json.loads(text.replace("123456789012345", nir)))
    bundle["entry"][2]["resource"]["data"] = base64.b64encode(CONTENT).decode()
    document = bundle["entry"][1]["resource"]
    document["contained"][1]["name"] = [{"family": "Martin", "given": ["Claire"]}]
    attachment = document["content"][0]["attachment"]
    attachment["size"] = len(CONTENT)
    attachment["hash"] = base64.b64encode(hashlib.sha1(CONTENT).digest()).decode()
    return bundle


@pytest.fixture(scope="module")
def deposited(server):
    """A patient (médecin traitant AUTHOR) and the ITI-65 deposit of one document by AUTHOR."""
    url, tokens = server
    system = SyncFHIRClient(url, authorization=f"Bearer {tokens.system()}")
    patient = system.resource(
        "Patient",
        **a_patient(
            70, generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHOR}}]
        ),
    )
    patient.save()
    client = SyncFHIRClient(url, authorization=f"Bearer {tokens.practitioner(AUTHOR)}")
    answer = client.execute("", method="post", data=_bundle(valid_nir(70)))
    assert answer["type"] == "transaction-response"
    return client, patient.id


def test_fhirpy_iti65_then_iti67_search_by_mhd_parameters(deposited):
    client, patient_id = deposited
    documents = client.resources("DocumentReference")
    by_patient = documents.search(patient=patient_id, status="current").fetch_all()
    assert len(by_patient) == 1
    (document,) = by_patient
    assert (
        document["content"][0]["attachment"]["hash"]
        == base64.b64encode(hashlib.sha1(CONTENT).digest()).decode()
    )
    searches = [
        {"patient.identifier": f"{INS_SYSTEM}|{valid_nir(70)}", "status": "current"},
        {"patient": patient_id, "author.given": "Claire"},
        {"patient": patient_id, "author.family": "martin"},
        {"patient": patient_id, "type": "http://loinc.org|11488-4", "creation": "2026-06-12"},
        {
            "patient": patient_id,
            "security-label": "N",
            "setting": "394802001",
            "facility": "22232009",
        },
    ]
    for criteria in searches:
        assert [d.id for d in documents.search(**criteria).fetch_all()] == [document.id], criteria
    assert documents.search(patient=patient_id, **{"author.family": "Durand"}).fetch_all() == []


def test_fhirpy_iti66_submission_set(deposited):
    client, patient_id = deposited
    lists = (
        client.resources("List")
        .search(
            patient=patient_id,
            code="https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset",
        )
        .fetch_all()
    )
    assert len(lists) == 1
    assert lists[0]["entry"][0]["item"]["reference"].startswith("DocumentReference/")


def test_fhirpy_iti68_retrieve(deposited, server):
    client, patient_id = deposited
    (document,) = client.resources("DocumentReference").search(patient=patient_id).fetch_all()
    binary_ref = document["content"][0]["attachment"]["url"]
    binary = client.reference(reference=binary_ref).to_resource()  # FHIR form (Accept fhir+json)
    assert base64.b64decode(binary["data"]) == CONTENT
    url, tokens = server
    raw = requests.get(
        f"{url}/{binary_ref}",
        headers={"Authorization": f"Bearer {tokens.practitioner(AUTHOR)}"},
        timeout=30,
    )
    assert raw.status_code == 200 and raw.content == CONTENT
    assert (
        raw.headers["Content-Type"].startswith("application/xml") and raw.headers["ETag"] == 'W/"1"'
    )
    other = SyncFHIRClient(url, authorization=f"Bearer {tokens.practitioner('810009999999')}")
    with pytest.raises(ResourceNotFound):  # R18: answered like an unknown Binary
        other.reference(reference=binary_ref).to_resource()


def test_fhirpy_iti65_error_is_an_operationoutcome_with_xds_code(deposited):
    client, _ = deposited
    bundle = _bundle(valid_nir(70))
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["size"] = 1
    with pytest.raises(OperationOutcome) as raised:
        client.execute("", method="post", data=bundle)
    assert "XDSRepositoryMetadataError" in json.dumps(raised.value.resource)


def test_fhirpy_validate_operation(server):
    url, tokens = server
    reader = SyncFHIRClient(
        url, authorization=f"Bearer {tokens.system('reader', scope='system/*.rs')}"
    )
    outcome = reader.execute(
        "Patient/$validate", method="post", data=a_patient(71, birthDate="1985-13-01")
    )
    assert [i["expression"] for i in outcome["issue"] if i["severity"] == "error"] == [
        ["Patient.birthDate"]
    ]

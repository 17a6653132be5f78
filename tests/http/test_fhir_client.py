"""MHD driven by real FHIR client libraries against `fhir-server serve` running as a
subprocess (gunicorn), with bearer tokens: fhirpy (sync client over `requests`) for ITI-65
deposit, ITI-66 and ITI-67 searches, their `count()` and paging, ITI-68 retrieve and
`$validate`; fhir-kit-client (Node, tests/clients/fhir-kit-client, installed by
`npm ci --prefix tests/clients/fhir-kit-client`) for paging forward and back through the
Bundle links (issue #19, "Shown by": fhirpy `count()` and fhir-kit-client's paging work
against `fhir-server serve`)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.dmp_codes import with_admitted_class
from tests.http.conftest import INS_SYSTEM, Tokens, a_patient, valid_nir
from tests.http.test_serve import _free_port, _start, _stop
from tests.support.documents import with_submission_set_unique_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
FHIR_KIT = Path(__file__).resolve().parents[1] / "clients" / "fhir-kit-client"
SUBMISSION_SET = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"
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


def _bundle(nir: str, unique: str = "") -> dict:
    """The PDSm4DMP ITI-65 example for the patient of `nir`; `unique`, appended to the
    document's uniqueId, makes another document of the same content."""
    text = (FIXTURES / "Bundle-example-td2-iti65-lot-soumission.json").read_text(encoding="utf-8")
    # the class ASS_X16 gives the example's type (the published example's class 11 is refused)
    bundle = with_admitted_class(json.loads(text.replace("123456789012345", nir)))
    bundle = with_submission_set_unique_id(bundle)
    bundle["entry"][1]["resource"]["masterIdentifier"]["value"] += unique
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


PAGED = 5  # documents of the paged patient: three pages of two


@pytest.fixture(scope="module")
def paged(server):
    """A second patient (médecin traitant AUTHOR) with PAGED documents deposited by AUTHOR,
    one ITI-65 submission each: PAGED documents and PAGED SubmissionSets in their record."""
    url, tokens = server
    system = SyncFHIRClient(url, authorization=f"Bearer {tokens.system()}")
    gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHOR}}]
    patient = system.resource("Patient", **a_patient(72, generalPractitioner=gp))
    patient.save()
    client = SyncFHIRClient(url, authorization=f"Bearer {tokens.practitioner(AUTHOR)}")
    for n in range(PAGED):
        answer = client.execute("", method="post", data=_bundle(valid_nir(72), f".{n}"))
        assert answer["type"] == "transaction-response"
    return client, patient.id


def test_fhirpy_count_on_iti67_and_iti66_searches(deposited, paged):
    """fhirpy's `count()` asks `_count=0` and reads `Bundle.total`: IHE MHD's Find Document
    References and Find Document Lists responses carry it (1..1, #19 point 9), counted in
    the requester's record; `_count=0` serves no entry."""
    client, patient_id = paged
    documents = client.resources("DocumentReference")
    assert documents.search(patient=patient_id).count() == PAGED
    assert documents.search(patient=patient_id, status="current").count() == PAGED
    assert documents.search(patient=patient_id, **{"author.family": "Durand"}).count() == 0
    lists = client.resources("List")
    assert lists.search(patient=patient_id, code=SUBMISSION_SET).count() == PAGED
    _, other_patient = deposited
    assert documents.search(patient=other_patient).count() == 1


def test_fhirpy_fetch_all_follows_next_links_over_pages(paged, server):
    """fetch_all() follows `Bundle.link` next until there is none (FHIR R4 http.html#paging):
    every document once, over three pages of `_count=2`, each page carrying the total."""
    client, patient_id = paged
    url, tokens = server
    documents = client.resources("DocumentReference").search(patient=patient_id).limit(2)
    found = documents.fetch_all()
    assert len(found) == PAGED and len({d.id for d in found}) == PAGED
    assert {d.id for d in found} == {d.id for d in documents.limit(50).fetch()}
    first = requests.get(
        f"{url}/DocumentReference",
        params={"patient": patient_id, "_count": "2"},
        headers={"Authorization": f"Bearer {tokens.practitioner(AUTHOR)}"},
        timeout=30,
    ).json()
    assert first["total"] == PAGED and len(first["entry"]) == 2
    lists = client.resources("List").search(patient=patient_id, code=SUBMISSION_SET).limit(2)
    assert len({item.id for item in lists.fetch_all()}) == PAGED


def _npm_ci() -> None:
    """Installs the version of fhir-kit-client pinned in its package-lock.json, once."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to install fhir-kit-client"
    ran = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FHIR_KIT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, "npm ci in tests/clients/fhir-kit-client: " + ran.stderr


def _fhir_kit_search(url: str, token: str, resource_type: str, params: dict) -> dict:
    """tests/clients/fhir-kit-client/search_pages.mjs: the client's pages forward, then back."""
    node = shutil.which("node")
    assert node is not None, "Node.js (node) is needed to run fhir-kit-client"
    if not (FHIR_KIT / "node_modules" / "fhir-kit-client").is_dir():
        _npm_ci()
    ran = subprocess.run(
        [node, "search_pages.mjs", url, token, resource_type, json.dumps(params)],
        cwd=FHIR_KIT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return json.loads(ran.stdout)


@pytest.mark.parametrize(
    ("resource_type", "criteria"),
    [("DocumentReference", {}), ("List", {"code": SUBMISSION_SET})],
)
def test_fhir_kit_client_pages_forward_and_back(paged, server, resource_type, criteria):
    """fhir-kit-client's nextPage/prevPage follow the `next` and `previous` links (FHIR R4
    http.html#paging, bundle.html Bundle.link): absolute URLs on this server's base that the
    client requests as given. Forward, three pages of two hold every match once; back from
    the last page, the same pages in reverse; every page carries the total (ITI-66/67)."""
    _, patient_id = paged
    url, tokens = server
    params = {"patient": patient_id, "_count": 2, **criteria}
    answer = _fhir_kit_search(url, tokens.practitioner(AUTHOR), resource_type, params)
    forward, backward = answer["forward"], answer["backward"]
    assert [len(p["ids"]) for p in forward] == [2, 2, 1]
    ids = [i for p in forward for i in p["ids"]]
    assert len(set(ids)) == len(ids) == PAGED
    assert [p["ids"] for p in backward] == [p["ids"] for p in reversed(forward[:-1])]
    assert {p["total"] for p in forward + backward} == {PAGED}
    links = [u for p in forward + backward for r, u in p["links"].items() if r != "self"]
    assert links and all(u.startswith(f"{url}/{resource_type}?") for u in links)

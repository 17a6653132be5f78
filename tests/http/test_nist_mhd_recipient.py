"""The NIST MHD Document Recipient collections (usnistgov/asbestos), adapted to the DMP.

Fixtures: `tests/fixtures/external/nist-mhd/` (originals, LICENSE, SOURCE, `convert.py`,
its output `converted/`, and `manifest.json`). One case per asbestos test of the
MHDv4 and MHDv420 Document Recipient collections (minimal and comprehensive), asserting
what its asbestos module asserts:
- MHDPDBSuccess / MHDPDBSuccess2: the ITI-65 Provide Document Bundle is accepted (200, a
  transaction-response whose every entry is 201 Created);
- MHDPDBFails: it is refused (4xx, an OperationOutcome) and nothing is persisted (no
  DocumentReference, no List of the patient); the manifest names, per test, what the
  OperationOutcome must be about (the element the test removes or breaks), so a refusal
  for another reason does not count;
- DocumentAddendum / DocumentReplace / DocumentTransforms: the original, then the bundle
  that relates to it (`${original}`: the DocumentReference the server created), are both
  accepted; a replaced original is then superseded.
Where the DMP deliberately answers otherwise, the manifest gives the DMP's result and why.

The runner, as asbestos does, fills `${patientResourceId}` (a patient registered on the
server, whose médecin traitant deposits) and gives each masterIdentifier and SubmissionSet
uniqueId a fresh value.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from fhir_server.config import load_settings
from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, Tokens, a_patient, auth, create_test_app

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "nist-mhd"
STEPS = json.loads((HERE / "converted" / "steps.json").read_text())
MANIFEST = json.loads((HERE / "manifest.json").read_text())
ISSUES, DIFFERS = MANIFEST["issues"], MANIFEST["steps"]
IDNAT_PS = "810001234567"  # the adapted bundles' author (convert.py)


class Recipient:
    """The app as an MHD Document Recipient, a patient, and the author's token."""

    def __init__(self, client, tokens, n: int) -> None:
        self.client, self.tokens = client, tokens
        self.token = tokens.practitioner(IDNAT_PS)
        resource = a_patient(
            n, generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": IDNAT_PS}}]
        )
        response = client.post(
            "/fhir/Patient",
            json=resource,
            headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        self.patient_id = response.get_json()["id"]

    def bundle(
        self,
        path: str,
        original: str | None,
        base: Path = HERE / "converted",
        keep_repeats: bool = False,
    ) -> dict:
        """The converted bundle with its variables filled in and fresh unique ids: one per
        resource, as asbestos allocates them, or (`keep_repeats`) one per published value,
        so that ids a bundle repeats stay repeated."""
        text = (base / path).read_text()
        text = text.replace("${patientResourceId}", f"Patient/{self.patient_id}")
        text = text.replace("${original}", original or "DocumentReference/unknown")
        text = re.sub(r"@\{RandomUUID\}", lambda _: str(uuid.uuid4()), text)
        bundle = json.loads(text)
        fresh: dict[str, str] = {}
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            identifiers = [resource.get("masterIdentifier") or {}]
            if resource.get("resourceType") == "List":
                identifiers += [
                    i for i in resource.get("identifier", []) if i.get("use") == "usual"
                ]
            for identifier in identifiers:
                if identifier.get("value"):
                    value = identifier["value"]
                    key = value if keep_repeats else f"{id(identifier)}"
                    identifier["value"] = fresh.setdefault(key, _fresh_oid())
        return bundle

    def provide(self, bundle: dict):
        return self.client.post(
            "/fhir",
            data=json.dumps(bundle),
            headers=auth(self.token, **{"Content-Type": FHIR_JSON}),
        )

    def stored(self, resource_type: str) -> list[dict]:
        found = self.client.get(
            f"/fhir/{resource_type}",
            query_string={"patient": self.patient_id},
            headers=auth(self.token),
        )
        assert found.status_code == 200, found.get_data(as_text=True)
        return [e["resource"] for e in found.get_json().get("entry", [])]


def _fresh_oid() -> str:
    return f"urn:oid:1.2.250.1.999.88.{uuid.uuid4().int % 10**15}"


def _cases():
    for step in STEPS:
        yield pytest.param(step, id=step["id"])


@contextmanager
def shared_server(tmp_path_factory, name: str, first_patient: int):
    """One server for a whole collection (each case registers its own patient): its test
    client, tokens, and the numbers of the patients still to register."""
    data_dir = tmp_path_factory.mktemp(name) / "var"
    app = create_test_app(
        load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
    )
    try:
        yield app.test_client(), Tokens(data_dir), itertools.count(first_patient)
    finally:
        app.extensions["fhir"].store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with shared_server(tmp_path_factory, "nist-mhd", 400) as shared:
        yield shared


@pytest.mark.parametrize("step", list(_cases()))
def test_nist_mhd_recipient(server, step):
    """One asbestos test: its module's expected result, or the DMP's (manifest.json)."""
    client, tokens, numbers = server
    recipient = Recipient(client, tokens, next(numbers))
    entry = DIFFERS.get(step["id"], {})
    expected = entry["expected"] if entry.get("kind") == "dmp-differs" else step["expected"]
    original = None
    responses = []
    for fixture in step["fixtures"]:
        response = recipient.provide(recipient.bundle(fixture["bundle"], original))
        responses.append(response)
        if response.status_code == 200 and original is None:
            original = next(
                (
                    e["response"]["location"].split("/_history")[0]
                    for e in response.get_json().get("entry", [])
                    if e["response"].get("location", "").startswith("DocumentReference/")
                ),
                None,
            )
    last = responses[-1]
    body = last.get_data(as_text=True)
    if expected == "success":
        for response in responses:
            answer = response.get_json()
            assert response.status_code == 200, response.get_data(as_text=True)[:1500]
            assert answer["type"] == "transaction-response"
            assert {e["response"]["status"].split()[0] for e in answer["entry"]} == {"201"}
        if step["module"] == "DocumentReplace":
            statuses = {d["id"]: d["status"] for d in recipient.stored("DocumentReference")}
            assert statuses[original.split("/")[1]] == "superseded"
    else:
        assert 400 <= last.status_code < 500, body[:1500]
        assert last.get_json()["resourceType"] == "OperationOutcome"
        about = ISSUES[step["test"]]  # what the refusal must name: the element the test breaks
        assert re.search(about, body), (about, body[:1500])
        assert recipient.stored("DocumentReference") == []
        assert recipient.stored("List") == []


def test_manifest_only_documents_deliberate_differences():
    """Every manifest step names an asbestos test brought and is a DMP difference with its
    reason: no test is excused as a known gap (issue #19 "Shown by")."""
    brought = {step["id"] for step in STEPS}
    for step_id, entry in DIFFERS.items():
        assert step_id in brought, step_id
        assert entry["kind"] == "dmp-differs" and entry["reason"], step_id

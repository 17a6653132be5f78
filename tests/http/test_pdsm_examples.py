"""Every PDSm and PDSm4DMP example, sent through the door it illustrates (issue #20, "Shown by").

Fixtures: tests/fixtures/external/pdsm/ (PDSm 3.1.1, FSH transcribed by its convert.py) and
tests/fixtures/external/pdsm4dmp/ (PDSm4DMP: its input/examples JSON, its FSH examples and page
examples written out by its convert.py); each folder's manifest.json lists every example, the
door, the expected outcome and, for a refusal, the documented reason. Doors:

- `iti65`: ITI-65 Provide Document Bundle, `POST /fhir` (the example is the transaction);
- `iti65-assembled`: ITI-65 of the PDSm SubmissionSet example with the DocumentReference and
  Binary examples it names (PDSm publishes no Bundle; the three name one another);
- `iti105`: ITI-105 Simplified Publish, `POST /fhir/DocumentReference`;
- `patch`: TD3.3 / PDSm Flux 03, `PATCH /fhir/DocumentReference?identifier=...` of a document
  deposited first (with the labels the manifest gives), by the actor the manifest names;
- `validate`: `$validate` of a resource example against the server's profiles;
- `response`: an answer example (ITI-67 result, transaction-response, TD0.2): each resource in
  it through `$validate`, and, where the manifest says so, its shape against the server's own
  answer to the same request.

What is adapted, in code and nothing else: the patient (the examples' INS 123456789012345 fails
its NIR key, so no such record can exist: a patient of this server takes its place, whose
médecin traitant is the examples' author 899700218896), the author where the example's author
is a reference to a resource the server cannot hold (replaced by that professional), and ids
that must be fresh. The expected outcome is asserted: accepted (the status, and the document
found), or refused (the status, and each element or reason the manifest names, as patterns in
the OperationOutcome), nothing written.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, a_patient, auth, valid_nir
from tests.support.documents import dmp_document, new_entry_uuid, new_unique_id, transaction

EXTERNAL = Path(__file__).resolve().parents[1] / "fixtures" / "external"
FOLDERS = ("pdsm", "pdsm4dmp")
EXAMPLE_INS = "123456789012345"
AUTHOR = "899700218896"  # the IdNat_PS of the PDSm4DMP examples' author
JSON_PATCH = "application/json-patch+json"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
A07 = "urn:oid:1.2.250.1.213.1.1.4.13"


def manifest(folder: str) -> list[dict]:
    return json.loads((EXTERNAL / folder / "manifest.json").read_text(encoding="utf-8"))


CASES = [(folder, case) for folder in FOLDERS for case in manifest(folder)]


def load(folder: str, name: str) -> dict | list:
    return json.loads((EXTERNAL / folder / name).read_text(encoding="utf-8"))


# -- the world ---------------------------------------------------------------------------------


@dataclass
class Dmp:
    """A record whose médecin traitant is the examples' author, and the requests of the doors."""

    client: object
    tokens: object
    patient: str = ""
    nir: str = ""
    stored: dict[str, str] = field(default_factory=dict)

    def token(self, actor: str) -> str:
        match actor:
            case "author":
                return self.tokens.practitioner(AUTHOR)
            case "patient":
                return self.tokens.patient(self.patient)
            case "reader":
                return self.tokens.system("reader", scope="system/*.rs")
            case "stranger":
                return self.tokens.practitioner("810000009999")
        raise ValueError(actor)

    def send(self, method: str, path: str, body, actor: str = "author", **headers: str):
        headers = {"Content-Type": FHIR_JSON, **headers}
        data = body if isinstance(body, str) else json.dumps(body)
        return self.client.open(
            path, method=method, data=data, headers=auth(self.token(actor), **headers)
        )

    def documents(self) -> list[dict]:
        response = self.client.get(
            f"/fhir/DocumentReference?patient={self.patient}&_count=100",
            headers=auth(self.token("author")),
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return [e["resource"] for e in response.get_json().get("entry", [])]


@pytest.fixture
def dmp(client, tokens) -> Dmp:
    world = Dmp(client, tokens)
    resource = a_patient(
        20, generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHOR}}]
    )
    response = client.post(
        "/fhir/Patient", json=resource, headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    world.patient, world.nir = response.get_json()["id"], valid_nir(20)
    return world


# -- adaptations (patient, author, fresh ids) --------------------------------------------------


def for_patient(example, dmp: Dmp):
    """The example for this server's patient: its INS replaced by the patient's, and a
    reference to the PDSm example patient (Patient/fr-patient-123) by the patient's."""
    text = json.dumps(example).replace(EXAMPLE_INS, dmp.nir)
    return json.loads(text.replace('"Patient/fr-patient-123"', f'"Patient/{dmp.patient}"'))


def with_known_author(document: dict) -> dict:
    """A PDSm example's author is `PractitionerRole/practitionerrole-example`, a resource of the
    Annuaire Santé the server does not hold: the author becomes a contained Practitioner with
    the IdNat_PS of the record's médecin traitant, as PDSm4DMP writes its authors (in place of
    the example's contained Practitioner, the Annuaire's, which nothing references)."""
    document = copy.deepcopy(document)
    author = {
        "resourceType": "Practitioner",
        "id": "author",
        "identifier": [{"system": SYSTEM_IDNAT_PS, "value": AUTHOR}],
    }
    document["contained"] = [
        r for r in document.get("contained", []) if r["resourceType"] != "Practitioner"
    ] + [author]
    document["author"] = [{"reference": "#author"}]
    if "PractitionerRole/" in json.dumps(document.get("authenticator")):
        document["authenticator"] = {"reference": "#author"}
    return document


def fresh_unique_ids(bundle: dict) -> dict:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "DocumentReference":
            resource["masterIdentifier"]["value"] = new_unique_id()
    return bundle


# -- doors -------------------------------------------------------------------------------------


def iti65(dmp: Dmp, folder: str, case: dict):
    """The example Bundle; a document it replaces (`stored_first`) is deposited first, current,
    and the Bundle's references to it (`DocumentReference/<example id>`) name the id the
    server gave it: clients create no ids here (CapabilityStatement updateCreate false)."""
    text = json.dumps(for_patient(load(folder, case["file"]), dmp))
    for example_id, stored_id in dmp.stored.items():
        text = text.replace(f'"DocumentReference/{example_id}"', f'"DocumentReference/{stored_id}"')
    return dmp.send("POST", "/fhir", fresh_unique_ids(json.loads(text)))


def store_first(dmp: Dmp, folder: str, case: dict) -> None:
    """Deposit the documents the example replaces (`stored_first`); `dmp.stored` maps their
    example ids to the ids the server gave them."""
    for name in case.get("stored_first", []):
        replaced = load(folder, name)
        answer = deposit_current(dmp, replaced)
        dmp.stored[replaced["id"]] = answer["entry"][1]["response"]["location"].split("/")[1]


def deposit_current(dmp: Dmp, example: dict) -> dict:
    """An ITI-65 storing a current DMP document with `example`'s uniqueId; its answer."""
    document = dmp_document(dmp.patient, "", masterIdentifier=example["masterIdentifier"])
    bundle = transaction(dmp.patient, document, with_submission_set=True)
    response = dmp.send("POST", "/fhir", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def iti65_assembled(dmp: Dmp, folder: str, case: dict):
    """The PDSm SubmissionSet, DocumentReference and Binary examples as one ITI-65: urn:uuid
    fullUrls for the references they make to one another (List.entry, attachment.url)."""
    submission_set, document, binary = (for_patient(load(folder, n), dmp) for n in case["members"])
    document = with_known_author(document)
    urls = {kind: new_entry_uuid() for kind in ("List", "DocumentReference", "Binary")}
    submission_set["entry"][0]["item"]["reference"] = urls["DocumentReference"]
    document["content"][0]["attachment"]["url"] = urls["Binary"]
    document["masterIdentifier"]["value"] = f"urn:uuid:{new_entry_uuid()[9:]}"
    entries = [
        {
            "fullUrl": urls[r["resourceType"]],
            "resource": r,
            "request": {"method": "POST", "url": r["resourceType"]},
        }
        for r in (submission_set, document, binary)
    ]
    for entry in entries:
        entry["resource"].pop("id", None)
    return dmp.send(
        "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )


def iti105(dmp: Dmp, folder: str, case: dict):
    document = for_patient(load(folder, case["file"]), dmp)
    if "PractitionerRole/" in json.dumps(document.get("author")):
        document = with_known_author(document)
    document.pop("id", None)
    return dmp.send("POST", "/fhir/DocumentReference", document)


def patch(dmp: Dmp, folder: str, case: dict):
    """Deposit a document (uniqueId of the request line, or a fresh one for `[uniqueId]`;
    labels as the manifest gives), then the page's PATCH by the manifest's actor."""
    match = re.search(r"identifier=([^ ]+)\|([^ ]+) HTTP", case["request"])
    system, unique = match.groups()
    if "[" in unique or system != "urn:ietf:rfc:3986":
        # `[uniqueId]` stands for any; PDSm's `http://my-lab-system|123` is no DMP uniqueId
        # (an OID as urn:ietf:rfc:3986, CI-SIS): the document gets a fresh one.
        system, unique = "urn:ietf:rfc:3986", new_unique_id()
    document = dmp_document(dmp.patient, "", masterIdentifier={"system": system, "value": unique})
    document["securityLabel"] = [
        {"coding": [{"system": V3 if code in "NRV" else A07, "code": code}]}
        for code in case.get("labels", ["N"])
    ]
    if case.get("archived") is not None:
        document["extension"] = [
            {
                "url": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived",
                "valueBoolean": case["archived"],
            }
        ]
    deposited = dmp.send(
        "POST", "/fhir", transaction(dmp.patient, document, with_submission_set=True)
    )
    assert deposited.status_code == 200, deposited.get_data(as_text=True)
    body = (EXTERNAL / folder / case["file"]).read_text(encoding="utf-8")
    return dmp.send(
        "PATCH",
        f"/fhir/DocumentReference?identifier={system}|{unique}",
        body,
        actor=case.get("actor", "author"),
        **{"Content-Type": JSON_PATCH},
    )


def validate(dmp: Dmp, folder: str, case: dict):
    resource = load(folder, case["file"])
    return dmp.send("POST", f"/fhir/{resource['resourceType']}/$validate", resource, "reader")


DOORS = {
    "iti65": iti65,
    "iti65-assembled": iti65_assembled,
    "iti105": iti105,
    "patch": patch,
    "validate": validate,
}


# -- verdicts ----------------------------------------------------------------------------------


def errors(outcome: dict) -> str:
    """The errors of an OperationOutcome, one line each: severity, code, expression, text."""
    return "\n".join(
        " ".join(
            [
                issue.get("severity", ""),
                issue.get("code", ""),
                ",".join(issue.get("expression", [])),
                (issue.get("details") or {}).get("text", ""),
                " ".join(c.get("code", "") for c in (issue.get("details") or {}).get("coding", [])),
                issue.get("diagnostics", ""),
            ]
        )
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    )


def assert_refusal(text: str, expected: dict) -> None:
    for pattern in expected["names"]:
        assert re.search(pattern, text), (pattern, text)


@pytest.mark.parametrize(
    ("folder", "case"), CASES, ids=[f"{folder}:{case['id']}" for folder, case in CASES]
)
def test_pdsm_example(dmp, folder, case):
    """The example through its door: the manifest's outcome, for the manifest's reason."""
    expected = case["expected"]
    if case["door"] == "response":
        check_response(dmp, folder, case)
        return
    store_first(dmp, folder, case)
    before = {d["id"] for d in dmp.documents()}
    response = DOORS[case["door"]](dmp, folder, case)
    body = response.get_data(as_text=True)
    assert response.status_code == expected["status"], body[:3000]
    if case["door"] == "validate":
        text = errors(response.get_json())
        if expected["outcome"] == "accepted":
            assert text == "", text
        else:
            assert_refusal(text, expected)
        return
    if expected["outcome"] == "accepted":
        check_accepted(dmp, case, response, before)
    else:
        assert response.get_json()["resourceType"] == "OperationOutcome", body[:3000]
        assert_refusal(errors(response.get_json()), expected)
        if case["door"] in ("iti65", "iti65-assembled", "iti105"):
            assert {d["id"] for d in dmp.documents()} == before, "nothing written"


def check_accepted(dmp: Dmp, case: dict, response, before: set[str]) -> None:
    if case["door"] == "patch":
        document = response.get_json()
        assert document["meta"]["versionId"] == "2"
        for key, value in case["expected"].get("then", {}).items():
            assert stated(document, key) == value, (key, document)
        return
    new = {d["id"] for d in dmp.documents()} - before
    assert len(new) == case["expected"].get("documents", 1), (new, response.get_data(as_text=True))


def stated(document: dict, key: str):
    """What a PATCH example changes, read back: `status`, `labels`, `archived`."""
    match key:
        case "status":
            return document["status"]
        case "labels":
            return sorted(
                c["code"] for label in document.get("securityLabel", []) for c in label["coding"]
            )
        case "archived":
            return any(
                e.get("url", "").endswith("pdsm-ext-is-archived") and e.get("valueBoolean")
                for e in document.get("extension", [])
            )
    raise ValueError(key)


def check_response(dmp: Dmp, folder: str, case: dict) -> None:
    """An answer example: each resource it holds against the profiles (`$validate`), the
    verdicts the manifest gives per resource, and its shape against the server's answer."""
    example = load(folder, case["file"])
    resources = (
        [e["resource"] for e in example.get("entry", []) if "resource" in e]
        if example["resourceType"] == "Bundle"
        else [example]
    )
    verdicts = case["expected"]["resources"]
    assert len(verdicts) == len(resources)
    for resource, verdict in zip(resources, verdicts, strict=True):
        response = dmp.send(
            "POST", f"/fhir/{resource['resourceType']}/$validate", resource, "reader"
        )
        assert response.status_code == verdict["status"], response.get_data(as_text=True)
        text = errors(response.get_json())
        if verdict["outcome"] == "accepted":
            assert text == "", text
        else:
            assert_refusal(text, verdict)
    shape = case["expected"].get("shape")
    if shape:
        SHAPES[shape](dmp, example)


def transaction_response_shape(dmp: Dmp, example: dict) -> None:
    """PDSm's transaction-response: one entry per entry sent, `response.status` 201 and a
    `Type/id` location; the server's answer to an ITI-65 has the same, its status "201 Created"
    (FHIR R4 Bundle.entry.response.status: the code, optionally the text)."""
    answer = deposit_current(
        dmp, {"masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": new_unique_id()}}
    )
    assert answer["type"] == example["type"] == "transaction-response"
    ours = [
        (e["response"]["status"].split()[0], e["response"]["location"].split("/")[0])
        for e in answer["entry"]
    ]
    theirs = [
        (e["response"]["status"], e["response"]["location"].split("/")[0]) for e in example["entry"]
    ]
    assert ours == theirs


def td02_shape(dmp: Dmp, example: dict) -> None:
    """TD0.2's answer: a searchset of one Patient whose `active` says whether the record is
    open; the server answers a professional the record does not authorize the same way."""
    response = dmp.client.get(
        f"/fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{dmp.nir}",
        headers=auth(dmp.token("stranger")),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    ours = response.get_json()
    assert (ours["type"], ours["total"], len(ours["entry"])) == ("searchset", 1, 1)
    patient = ours["entry"][0]["resource"]
    assert patient["resourceType"] == "Patient" and patient["active"] is True
    assert {"active", "identifier"} <= set(example["entry"][0]["resource"])


SHAPES = {"transaction-response": transaction_response_shape, "td02": td02_shape}

"""HL7 France FR Core examples of the types this server stores, through the REST door.

Fixtures: `tests/fixtures/external/fr-core/` (the examples as the repository holds them or as
the IG Publisher built them, LICENSE, SOURCE, `manifest.json`). Every example is sent as
published by the actor who may write it (Patient and RelatedPerson: the health insurer's
system, R15) and must be either accepted (201, and read back equal to what was sent, but for
`id` and `meta`) or refused with the DMP's deliberate difference the manifest records (the
status, an OperationOutcome naming what the manifest's pattern names, the reason and the rule
it comes from), nothing written. Never a 500.

A refused example is then sent once more with only the refused fact adapted, in code: its INS
(`ins`: the INS-NIR value replaced by a valid NIR, or an INS-NIR identifier added before the
example's own identifiers when it has none), or its patient reference (`patient-reference`: the
FR Core Patient example, stored first, instead of a Patient this server cannot hold). The
adapted example must be accepted and read back equal: what FR Core spells otherwise (INS
identifier types, the birthPlace and identity-reliability extensions, name, address and
telecom shapes, dates) is read as FR Core means it, and a refusal for anything but the
recorded difference would be a bug.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest

from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth, valid_nir

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "fr-core"
MANIFEST: list[dict] = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
INS_SYSTEMS = {f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11)}
FR_CORE_PATIENT = "Patient-FRCorePatientExample.json"
_numbers = itertools.count(9000)


def example(name: str) -> dict:
    """The example as published, without the id the server assigns in its place."""
    resource = json.loads((HERE / name).read_text(encoding="utf-8"))
    resource.pop("id", None)
    return resource


def without_server_fields(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def with_valid_ins(patient: dict) -> dict:
    """`patient` identified by a valid INS-NIR: its INS identifier's value replaced, or one
    added before its own identifiers (the rest, type codings included, as published)."""
    adapted = copy.deepcopy(patient)
    nir = valid_nir(next(_numbers))
    identifiers = adapted.get("identifier", [])
    ins = [i for i in identifiers if i.get("system") in INS_SYSTEMS]
    if ins:
        ins[0]["value"] = nir
    else:
        adapted["identifier"] = [{"use": "official", "system": INS_SYSTEM, "value": nir}]
        adapted["identifier"] += identifiers
    return adapted


def stored(app, resource_type: str) -> list[dict]:
    """Every version of `resource_type` the store holds (the check that nothing was written)."""
    store = app.extensions["fhir"].store
    page = store.history(resource_type, None, since=None, count=1000, cursor=None)
    return [entry.resource.json() for entry in page.entries]


class Door:
    """The REST door as the health insurer's identity feed (organization type health_insurer)."""

    def __init__(self, client, tokens) -> None:
        self.client = client
        self.token = tokens.system(client_id="cnam-feed", organization_type="health_insurer")

    def create(self, resource: dict):
        return self.client.post(
            f"/fhir/{resource['resourceType']}",
            json=resource,
            headers=auth(self.token, **{"Content-Type": FHIR_JSON}),
        )

    def read(self, resource_type: str, resource_id: str) -> dict:
        response = self.client.get(f"/fhir/{resource_type}/{resource_id}", headers=auth(self.token))
        assert response.status_code == 200, response.get_data(as_text=True)[:1000]
        return response.get_json()

    def accepted(self, resource: dict) -> str:
        """`resource` created (201) and read back as sent, but for id and meta: its id."""
        response = self.create(resource)
        body = response.get_data(as_text=True)
        assert response.status_code == 201, body[:1500]
        created = response.get_json()
        assert without_server_fields(created) == without_server_fields(resource)
        back = self.read(resource["resourceType"], created["id"])
        assert without_server_fields(back) == without_server_fields(resource)
        assert back["meta"].get("profile") == resource.get("meta", {}).get("profile")
        return created["id"]


@pytest.fixture
def door(client, tokens) -> Door:
    return Door(client, tokens)


def adapted(door: Door, case: dict) -> dict:
    resource = example(case["example"])
    match case["adapted"]["change"]:
        case "ins":
            return with_valid_ins(resource)
        case "patient-reference":
            patient_id = door.accepted(with_valid_ins(example(FR_CORE_PATIENT)))
            return {**resource, "patient": {"reference": f"Patient/{patient_id}"}}
    raise AssertionError(f"unknown adaptation {case['adapted']}")


def test_manifest_names_every_example_once():
    """Every example brought is in the manifest, and every refusal says why and by what rule."""
    names = [case["example"] for case in MANIFEST]
    assert sorted(names) == sorted(p.name for p in HERE.glob("*.json") if p.name != "manifest.json")
    assert len(set(names)) == len(names)
    for case in MANIFEST:
        outcome = case["as_published"]
        if outcome["status"] != 201:
            assert outcome["issue"] and outcome["reason"] and outcome["rule"], case
            assert case.get("adapted"), f"{case['example']}: a refusal with nothing adapted"


@pytest.mark.parametrize("case", MANIFEST, ids=[c["example"] for c in MANIFEST])
def test_fr_core_example_as_published(app, door, case):
    """The example as published: accepted and read back, or the DMP's recorded refusal."""
    resource = example(case["example"])
    outcome = case["as_published"]
    assert case["door"] == f"POST /fhir/{resource['resourceType']}"
    if outcome["status"] == 201:
        door.accepted(resource)
        return
    before = stored(app, resource["resourceType"])
    response = door.create(resource)
    body = response.get_data(as_text=True)
    assert response.status_code == outcome["status"], body[:1500]
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert re.search(outcome["issue"], body), (outcome["issue"], body[:1500])
    assert stored(app, resource["resourceType"]) == before, "nothing written"


@pytest.mark.parametrize(
    "case",
    [c for c in MANIFEST if c.get("adapted")],
    ids=[c["example"] for c in MANIFEST if c.get("adapted")],
)
def test_fr_core_example_adapted_is_accepted(app, door, case):
    """With only the recorded difference adapted, the example is accepted and read back (and
    found by `stored`, so that its "nothing written" above is no empty check)."""
    assert case["adapted"]["status"] == 201
    resource = adapted(door, case)
    resource_id = door.accepted(resource)
    assert resource_id in {r["id"] for r in stored(app, resource["resourceType"])}

"""A record for the metadata-update tests (PATCH, ITI-57, archiving; issue #20).

Adult patient Paul authorizes the AUTHOR and the OTHER professional (R10); the AUTHOR
deposits documents; a minor, Léa, has her parent as representative (R07). STRANGER is a
professional nobody authorized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fhir_server.terminology import (
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_RFC3986,
    SYSTEM_V3_ROLE_CODE,
)
from tests.http.conftest import FHIR_JSON, a_patient, auth, dmp_consent, permit
from tests.support.documents import dmp_document

AUTHOR = "810000002001"
OTHER = "810000002002"
STRANGER = "810000002003"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
A07 = SYSTEM_DMP_CONFIDENTIALITY
A07_URL = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)
IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
JSON_PATCH = "application/json-patch+json"
CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"


def label(code: str) -> dict:
    system = V3 if code in ("N", "R", "V") else A07
    return {"coding": [{"system": system, "code": code}]}


@dataclass
class World:
    client: object
    tokens: object
    paul: str = ""
    lea: str = ""
    parent: str = ""
    serial: list[int] = field(default_factory=lambda: [0])

    # -- tokens ------------------------------------------------------------------------------

    def token(self, actor: str) -> str:
        match actor:
            case "patient":
                return self.tokens.patient(self.paul)
            case "lea":
                return self.tokens.patient(self.lea)
            case "representative":
                return self.tokens.issuer.issue(
                    subject=self.parent,
                    scopes="patient/*.cruds",
                    fhir_user=f"RelatedPerson/{self.parent}",
                    patient=self.lea,
                )
            case "author":
                return self.tokens.practitioner(AUTHOR)
            case "other":
                return self.tokens.practitioner(OTHER)
            case "stranger":
                return self.tokens.practitioner(STRANGER)
        raise ValueError(actor)

    # -- documents ---------------------------------------------------------------------------

    def document(self, *labels: str, patient: str | None = None, unique: str | None = None) -> dict:
        """A DMP document by AUTHOR (`tests.support.documents`, its bytes inline: ITI-105),
        uniqueId `urn:oid:<unique>`, with `labels` (N/R/V and TRE_A07 codes) as its labels."""
        self.serial[0] += 1
        unique = unique or f"1.2.250.1.999.20.{self.serial[0]}"
        resource = dmp_document(
            patient or self.paul,
            author=AUTHOR,
            class_code="10",
            description=f"report {self.serial[0]}",
            masterIdentifier={"system": SYSTEM_RFC3986, "value": f"urn:oid:{unique}"},
        )
        if labels:
            resource["securityLabel"] = [label(code) for code in labels]
        return resource

    def deposit(self, *labels: str, patient: str | None = None, unique: str | None = None) -> dict:
        response = self.post(
            self.token("author"), self.document(*labels, patient=patient, unique=unique)
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def post(self, bearer: str, resource: dict):
        return self.client.post(
            f"/fhir/{resource['resourceType']}",
            data=json.dumps(resource),
            headers=auth(bearer, **{"Content-Type": FHIR_JSON}),
        )

    def stored(self, document_id: str) -> dict:
        response = self.client.get(
            f"/fhir/DocumentReference/{document_id}", headers=auth(self.token("author"))
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    # -- PATCH -------------------------------------------------------------------------------

    def patch(
        self,
        actor: str,
        target: str,
        body,
        *,
        content_type: str = JSON_PATCH,
        if_match: str | None = None,
    ):
        """PATCH `target` (`{id}` or `?identifier=...`) with a JSON Patch (a list) or a
        FHIRPath Patch (a Parameters)."""
        headers = {"Content-Type": content_type}
        if isinstance(body, dict):
            headers["Content-Type"] = FHIR_JSON if content_type == JSON_PATCH else content_type
        if if_match:
            headers["If-Match"] = if_match
        url = f"/fhir/DocumentReference{target if target.startswith('?') else '/' + target}"
        return self.client.patch(
            url, data=json.dumps(body), headers=auth(self.token(actor), **headers)
        )

    def finds(self, actor: str, document_id: str) -> bool:
        patient = self.lea if actor in ("lea", "representative") else self.paul
        response = self.client.get(
            f"/fhir/DocumentReference?patient={patient}", headers=auth(self.token(actor))
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return document_id in {e["resource"]["id"] for e in response.get_json().get("entry", [])}


def mask_as_patient(client, token: str, document_id: str) -> None:
    """The patient masks a document from professionals: a JSON Patch adding MASQUE_PS to its
    securityLabel (R06, R14)."""
    response = client.patch(
        f"/fhir/DocumentReference/{document_id}",
        json=[{"op": "add", "path": "/securityLabel/-", "value": label("MASQUE_PS")}],
        headers=auth(token, **{"Content-Type": "application/json-patch+json", "Accept": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def labels(document: dict) -> set[tuple[str, str]]:
    return {
        (c.get("system"), c.get("code"))
        for concept in document.get("securityLabel") or []
        for c in concept.get("coding") or []
    }


def fhirpath_patch(*operations: tuple) -> dict:
    """A Parameters of operations (type, path, [name,] value part or None)."""
    parameters = []
    for operation in operations:
        kind, path, *rest = operation
        parts: list[dict] = [
            {"name": "type", "valueCode": kind},
            {"name": "path", "valueString": path},
        ]
        if kind == "add":
            name, value = rest
            parts.append({"name": "name", "valueString": name})
            parts.append({"name": "value", **value})
        elif kind == "insert":
            index, value = rest
            parts.append({"name": "index", "valueInteger": index})
            parts.append({"name": "value", **value})
        elif kind == "replace":
            parts.append({"name": "value", **rest[0]})
        parameters.append({"name": "operation", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def build_world(client, tokens) -> World:
    world = World(client, tokens)
    system = tokens.system()
    world.paul = _created(world.post(system, a_patient(31)))
    world.lea = _created(world.post(system, a_patient(32, birthDate="2016-03-01")))
    world.parent = _created(
        world.post(
            system,
            {
                "resourceType": "RelatedPerson",
                "patient": {"reference": f"Patient/{world.lea}"},
                "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
                "name": [{"family": "Durand31", "given": ["Marie"]}],
            },
        )
    )
    for patient in (world.paul, world.lea):
        _created(
            world.post(tokens.patient(patient), dmp_consent(patient, permit(AUTHOR), permit(OTHER)))
        )
    return world


def _created(response) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]

"""R13 on (JDV_J65 role, JDV_J66 type), through every door (R18).

What a user checks: once a cell of the annex of the arrêté of 26 October 2023 is
transcribed (profiles/habilitation/annex-transcription.csv) to say that a role may not read
one document type, a requester of that role no longer finds, reads nor queries a document
of that type, although the placeholder matrix lets it read the type's class; a document of
another type of the same class stays visible to them, and a médecin still sees both.

The server runs on a copy of profiles/ whose annex transcription holds that one cell, as an
operator who drops a transcription in would run it (docs/access-rules.md, R13).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lxml import etree

from fhir_server.auth.vihf import WSSE, load_or_create_structure_credential, mint_vihf
from fhir_server.config import load_settings
from fhir_server.rest.app import auth_settings
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    a_patient,
    auth,
    create_test_app,
    dmp_consent,
    valid_nir,
)
from tests.http.conftest import permit as permit_provision
from tests.http.test_xds_endpoints import envelope_of, registry_status
from tests.support.documents import dmp_document
from tests.support.habilitation import profiles_denying
from tests.xds_builders import patient_cx

LOINC = "http://loinc.org"
CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"
AUTHOR = "810000000001"  # a médecin who deposits
PHARMACIST = "810000000021"  # a pharmacien the patient authorized
DOCTOR = "810000000010"  # a médecin the patient authorized
HIDDEN_TYPE = "11506-3"  # a J66 type that ASS_X16 files under class 10 (compte rendu)
SEEN_TYPE = "11488-4"  # another type of class 10
NIR_N = 41


@pytest.fixture
def world(tmp_path):
    """A server whose annex transcription says: pharmacien (21) may not read 11506-3."""
    world = annex_world(tmp_path)
    yield world
    world.close()


def annex_world(directory: Path) -> World:
    """A World on a server whose profiles (a copy in `directory`) carry the annex cell
    "pharmacien (21) may not read 11506-3"; `close()` it after use."""
    profiles = profiles_denying(
        directory / "profiles", "21", "urn:oid:2.16.840.1.113883.6.1", HIDDEN_TYPE
    )
    data_dir = directory / "var"
    settings = load_settings(
        {"data_dir": data_dir, "profiles_dir": profiles, "max_body_bytes": 200_000}, environ={}
    )
    return World(create_test_app(settings), data_dir)


class World:
    def __init__(self, app, data_dir: Path) -> None:
        self.app = app
        self.client = app.test_client()
        self.tokens = Tokens(data_dir)
        runtime = app.extensions["fhir"]
        self.credential = load_or_create_structure_credential(data_dir)
        self.audience = auth_settings(runtime.settings).effective_audience
        self.nir = valid_nir(NIR_N)
        self.patient_id = self._post(self.tokens.system(), a_patient(NIR_N))["id"]
        consent = dmp_consent(
            self.patient_id, permit_provision(PHARMACIST), permit_provision(DOCTOR)
        )
        self._post(self.tokens.patient(self.patient_id), consent)
        self.docs = {
            kind: self._post(self.tokens.practitioner(AUTHOR), self.document(kind))
            for kind in (HIDDEN_TYPE, SEEN_TYPE)
        }

    def close(self) -> None:
        self.app.extensions["fhir"].store.close()

    def _post(self, bearer: str, resource: dict) -> dict:
        response = self.client.post(
            f"/fhir/{resource['resourceType']}",
            json=resource,
            headers=auth(bearer, **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def document(self, type_code: str) -> dict:
        """A DMP document of class 10 and `type_code` by AUTHOR, its bytes inline (ITI-105)."""
        return dmp_document(
            self.patient_id,
            author=AUTHOR,
            class_code="10",
            type={"coding": [{"system": LOINC, "code": type_code}]},
            description=type_code,
            masterIdentifier={
                "system": "urn:ietf:rfc:3986",
                "value": f"urn:oid:{unique_id(type_code)}",
            },
        )

    def searched(self, bearer: str) -> set[str]:
        response = self.client.get(
            f"/fhir/DocumentReference?patient={self.patient_id}", headers=auth(bearer)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return {e["resource"]["description"] for e in response.get_json().get("entry", [])}

    def read_status(self, bearer: str, type_code: str) -> int:
        doc_id = self.docs[type_code]["id"]
        return self.client.get(
            f"/fhir/DocumentReference/{doc_id}", headers=auth(bearer)
        ).status_code

    def iti18_unique_ids(self, idnat: str, profession: str) -> set[str]:
        """ITI-18 FindDocuments with the VIHF of a practitioner of that TRE_G15 profession."""
        response = self.iti18(
            idnat,
            profession,
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(self.nir)}'"),
                ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
        )
        assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
        root, _ = envelope_of(response)
        return {
            e.get("value")
            for e in root.iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
            if e.get("identificationScheme") == v.DE_UNIQUE_ID
        }

    def iti18(
        self,
        idnat: str,
        profession: str,
        query_id: str,
        slots: list[tuple[str, str]],
        return_type: str = "LeafClass",
    ):
        """An ITI-18 stored query (`slots`: name, value) with that practitioner's VIHF."""
        request = etree.Element(
            f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
        )
        etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type)
        query = etree.SubElement(request, f"{{{v.NS_RIM}}}AdhocQuery", id=query_id)
        for name, value in slots:
            slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name=name)
            values = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
            etree.SubElement(values, f"{{{v.NS_RIM}}}Value").text = value
        return self.soap("/xds/registry", v.ACTION_ITI18, request, idnat, profession)

    def iti43(self, idnat: str, profession: str, unique_id: str):
        """An ITI-43 retrieve of one document by its uniqueId, with that practitioner's VIHF."""
        request = etree.Element(
            f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB}
        )
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        repository = self.app.extensions["fhir"].settings.xds_repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = repository
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = unique_id
        return self.soap("/xds/repository", v.ACTION_ITI43, request, idnat, profession)

    def soap(self, path: str, action: str, body, idnat: str, profession: str):
        security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        security.append(
            mint_vihf(
                self.credential,
                practitioner_id=idnat,
                profession=profession,
                audience=self.audience,
                patient_ins=f"{INS_SYSTEM}|{self.nir}",
            )
        )
        envelope = etree.Element(
            f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
        )
        header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = action
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
        header.append(security)
        etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body").append(body)
        return self.client.post(
            path,
            data=etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"),
            headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
        )


def unique_id(type_code: str) -> str:
    """The XDS uniqueId (an OID) of the test document of that type."""
    return "1.2.250.1.999.41." + type_code.replace("-", ".")


def test_r13_transcribed_cell_hides_the_type_from_the_role_in_search_and_read(world):
    pharmacist = world.tokens.practitioner(PHARMACIST, profession="21")
    assert world.searched(pharmacist) == {SEEN_TYPE}
    assert world.read_status(pharmacist, HIDDEN_TYPE) == 404  # R18: as a missing one
    assert world.read_status(pharmacist, SEEN_TYPE) == 200
    # A cell of one role leaves the others as they were: a médecin reads both.
    doctor = world.tokens.practitioner(DOCTOR, profession="10")
    assert world.searched(doctor) == {HIDDEN_TYPE, SEEN_TYPE}
    assert world.read_status(doctor, HIDDEN_TYPE) == 200


def test_r13_transcribed_cell_hides_the_type_from_the_role_in_iti18(world):
    assert world.iti18_unique_ids(PHARMACIST, "21") == {unique_id(SEEN_TYPE)}
    assert world.iti18_unique_ids(DOCTOR, "10") == {unique_id(HIDDEN_TYPE), unique_id(SEEN_TYPE)}

"""R05 at the XDS doors: the VIHF's Secteur_Activite (TRE_R02-SecteurActivite).

R05 (no reading, no writing for insurers, mutual insurers, employers; the health insurer
deposits only) was enforced from a token's organization type; a VIHF carries the structure's
activity sector instead, and it was not read. An occupational health service (SA66 SPST,
SA13 prévention et soins en entreprise) or an insurer (SA23 assurance privée) presenting the
VIHF of the patient's médecin traitant was served as any care structure: ITI-18
FindDocuments listed the record, ITI-43 returned the documents, ITI-41 deposited and ITI-57
archived. Code de la santé publique L1111-18 closes the DMP to occupational medicine, to
insurers and mutual insurers.

Each excluded sector now stands for its R05 organization type (`fhir_server/auth/sectors.py`)
and each door refuses it as R05, the refusal audited with its rule (R16); a care sector is
still served. A Secteur_Activite the rules cannot read (another case, spaces, another code
system, two sectors) refuses the VIHF with a SOAP Fault naming the attribute, rather than
serving the requester as a care structure.
"""

from __future__ import annotations

import json

import pytest
from lxml import etree

from fhir_server.access.requester import INTERNAL
from fhir_server.auth.vihf import HL7
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.http.test_xds_endpoints import (
    GP,
    Xds,
    envelope_of,
    fault_of,
    registry_status,
)
from tests.http.test_xds_stored_queries import adhoc
from tests.http.test_xds_update_document_set import ITI57, entry_of, status_update
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
TRE_R02 = "1.2.250.1.71.4.2.4"

# The excluded sectors of TRE_R02 and the R05 organization type each stands for.
EXCLUDED = {
    "SA66": "employer",  # Services de Prévention et de Santé au Travail (SPST)
    "SA13": "employer",  # Prévention et soins en entreprise
    "SA44": "employer",  # Recrutement ou Gestion RH
    "SA48": "employer",  # Entreprise industrielle et tertiaire
    "SA11": "employer",  # Entreprise d'intérim (closed 2020)
    "SA23": "insurer",  # Assurance privée
    "SA24": "health_insurer",  # Organisme de sécurité sociale
}
# Sectors that write nothing at all under R05 (the health insurer deposits, R05/R15).
NO_WRITE = [code for code, kind in EXCLUDED.items() if kind != "health_insurer"]
CARE = "SA01"  # Etablissement public de santé


def sector(code: str) -> str:
    return f"{code}^{TRE_R02}"


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


@pytest.fixture
def record(xds):
    """A patient whose médecin traitant GP deposited one document (no sector given)."""
    patient_id, nir = xds.patient(5)
    request, response = xds.deposit(nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    (unique_id,) = request.document_unique_ids.values()
    return patient_id, nir, unique_id


def _events(xds: Xds, patient_id: str) -> dict[str, dict]:
    page = xds.runtime.service.search(
        INTERNAL, "AuditEvent", [("patient", patient_id), ("_count", "1000")]
    )
    return {event["id"]: event for event in (json.loads(body) for _, _, body, _ in page.matches)}


def _denied_rules(events: list[dict]) -> list[str]:
    """The rules of the refusal events (R16: outcome failure, the rule in denied-rule)."""
    return [
        detail.get("valueString")
        for event in events
        if event.get("outcome") != "0"
        for entity in event.get("entity", [])
        for detail in entity.get("detail", [])
        if detail.get("type") == "denied-rule"
    ]


class Doors:
    """The four XDS doors, called by GP with a VIHF carrying `sectors`."""

    def __init__(self, xds: Xds, nir: str, sectors: list[str]) -> None:
        self.xds, self.nir, self.sectors = xds, nir, sectors

    def security(self):
        return self.xds.security(GP, self.nir, sectors=self.sectors)

    def find_documents(self):
        query = adhoc(
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(self.nir)}'"),
                ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
        )
        return self.xds.soap("/xds/registry", v.ACTION_ITI18, query, self.security())

    def retrieve(self, unique_id: str):
        request = etree.Element(
            f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB}
        )
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = self.xds.repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = unique_id
        return self.xds.soap("/xds/repository", v.ACTION_ITI43, request, self.security())

    def deposit(self):
        request = build_iti41(nir=self.nir, security=self.security(), documents=[b"<r05/>"])
        return self.xds.client.post(
            "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
        )

    def archive(self, unique_id: str):
        stored = entry_of(self.xds, self.nir, unique_id)
        body = status_update(self.nir, stored.get("id"), v.STATUS_APPROVED, v.STATUS_ARCHIVED)
        return self.xds.soap("/xds/registry", ITI57, body, self.security())


def _listed(response) -> list[etree._Element]:
    root, _ = envelope_of(response)
    return root.findall(f".//{RIM}ExtrinsicObject")


def _stored_status(xds: Xds, nir: str, unique_id: str) -> str:
    return entry_of(xds, nir, unique_id).get("status")


def _refused_r05(xds: Xds, patient_id: str, before: set[str], response) -> None:
    """A RegistryResponse Failure, and one new refusal event of the record under R05."""
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE, codes
    assert codes, "a refusal names its error"
    new = [event for key, event in _events(xds, patient_id).items() if key not in before]
    assert "R05" in _denied_rules(new), [e.get("outcomeDesc") for e in new]


# -- each excluded sector, at each door ----------------------------------------------------------


@pytest.mark.parametrize("code", list(EXCLUDED))
def test_r05_iti18_find_documents_refused_to_an_excluded_sector(xds, record, code):
    patient_id, nir, _ = record
    before = set(_events(xds, patient_id))
    response = Doors(xds, nir, [sector(code)]).find_documents()
    assert response.status_code == 200, response.get_data()[:2000]
    assert _listed(response) == []
    _refused_r05(xds, patient_id, before, response)


@pytest.mark.parametrize("code", list(EXCLUDED))
def test_r05_iti43_retrieve_refused_to_an_excluded_sector(xds, record, code):
    patient_id, nir, unique_id = record
    before = set(_events(xds, patient_id))
    response = Doors(xds, nir, [sector(code)]).retrieve(unique_id)
    assert response.status_code == 200, response.get_data()[:2000]
    assert b"<r05/>" not in response.get_data()
    assert b"<ClinicalDocument" not in response.get_data()
    _refused_r05(xds, patient_id, before, response)


@pytest.mark.parametrize("code", NO_WRITE)
def test_r05_iti41_deposit_refused_to_an_excluded_sector(xds, record, code):
    patient_id, nir, _ = record
    before = set(_events(xds, patient_id))
    response = Doors(xds, nir, [sector(code)]).deposit()
    assert response.status_code == 200, response.get_data()[:2000]
    _refused_r05(xds, patient_id, before, response)
    assert len(_listed(Doors(xds, nir, [sector(CARE)]).find_documents())) == 1


@pytest.mark.parametrize("code", list(EXCLUDED))
def test_r05_iti57_update_refused_to_an_excluded_sector(xds, record, code):
    patient_id, nir, unique_id = record
    before = set(_events(xds, patient_id))
    response = Doors(xds, nir, [sector(code)]).archive(unique_id)
    assert response.status_code == 200, response.get_data()[:2000]
    _refused_r05(xds, patient_id, before, response)
    assert _stored_status(xds, nir, unique_id) == v.STATUS_APPROVED


# -- the control: a care sector is served ------------------------------------------------------


def test_r05_a_care_sector_is_served_at_every_door(xds, record):
    patient_id, nir, unique_id = record
    doors = Doors(xds, nir, [sector(CARE)])
    assert registry_status(doors.find_documents()) == (v.RESPONSE_SUCCESS, [])
    assert len(_listed(doors.find_documents())) == 1
    retrieved = doors.retrieve(unique_id)
    assert registry_status(retrieved) == (v.RESPONSE_SUCCESS, [])
    assert registry_status(doors.deposit()) == (v.RESPONSE_SUCCESS, [])
    assert registry_status(doors.archive(unique_id)) == (v.RESPONSE_SUCCESS, [])
    assert _stored_status(xds, nir, unique_id) == v.STATUS_ARCHIVED
    assert "R05" not in _denied_rules(list(_events(xds, patient_id).values()))


def test_r05_the_same_sector_given_twice_is_one_sector(xds, record):
    _, nir, _ = record
    doors = Doors(xds, nir, [sector(CARE), sector(CARE)])
    assert registry_status(doors.find_documents()) == (v.RESPONSE_SUCCESS, [])
    refused = Doors(xds, nir, [sector("SA66"), sector("SA66")]).find_documents()
    assert registry_status(refused)[0] == v.RESPONSE_FAILURE


# -- spellings the rules cannot read: the VIHF is refused, naming the attribute ----------------

SPELLINGS = {
    "lower case": ["sa66^1.2.250.1.71.4.2.4"],
    "space before": [" SA66^1.2.250.1.71.4.2.4"],
    "space after": ["SA66^1.2.250.1.71.4.2.4 "],
    "spaces inside": ["SA66 ^ 1.2.250.1.71.4.2.4"],
    "no code system": ["SA66"],
    "another OID": ["SA66^1.2.250.1.71.4.2.5"],
    "OID as urn": ["SA66^urn:oid:1.2.250.1.71.4.2.4"],
    "not a TRE_R02 code": ["SA99^1.2.250.1.71.4.2.4"],
    "empty": [""],
    # No Secteur_Activite read: absent, or spelled so that it is not read (another Name, a
    # namespace prefix, no Name); R05 cannot be judged, the VIHF is refused (fail closed).
    "absent": [],
    "twice, care first": [sector(CARE), sector("SA66")],
    "twice, excluded first": [sector("SA23"), sector(CARE)],
    "lower case beside a care sector": [sector(CARE), "sa23^1.2.250.1.71.4.2.4"],
}


def _refused_vihf(response) -> None:
    assert response.status_code >= 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender" or code.endswith(":Sender"), code
    assert "Secteur_Activite" in reason, reason


@pytest.mark.parametrize("values", list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_r05_an_unreadable_sector_refuses_the_vihf_at_iti18(xds, record, values):
    _, nir, _ = record
    response = Doors(xds, nir, values).find_documents()
    _refused_vihf(response)


@pytest.mark.parametrize("values", list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_r05_an_unreadable_sector_refuses_the_vihf_at_iti43_iti41_iti57(xds, record, values):
    patient_id, nir, unique_id = record
    doors = Doors(xds, nir, values)
    _refused_vihf(doors.retrieve(unique_id))
    _refused_vihf(doors.deposit())
    _refused_vihf(doors.archive(unique_id))
    assert _stored_status(xds, nir, unique_id) == v.STATUS_APPROVED
    care = Doors(xds, nir, [sector(CARE)])
    assert len(_listed(care.find_documents())) == 1  # nothing deposited


def test_r05_a_coded_sector_is_read_as_the_text_one(xds, record):
    """The sector as an HL7 CE element (code, codeSystem) is judged as its text form: under
    TRE_R02 an excluded one is refused as R05, under another code system the VIHF is."""
    patient_id, nir, _ = record

    def coded(code: str, system: str) -> etree._Element:
        element = etree.Element(f"{{{HL7}}}CE", nsmap={None: HL7})
        element.set("code", code)
        element.set("codeSystem", system)
        return element

    before = set(_events(xds, patient_id))
    response = Doors(xds, nir, [coded("SA66", TRE_R02)]).find_documents()
    _refused_r05(xds, patient_id, before, response)
    _refused_vihf(Doors(xds, nir, [coded("SA66", "1.2.250.1.71.4.2.5")]).find_documents())
    served = Doors(xds, nir, [coded(CARE, TRE_R02)]).find_documents()
    assert registry_status(served) == (v.RESPONSE_SUCCESS, [])


def test_r05_the_health_insurer_sector_still_deposits(xds, record):
    """SA24 (organisme de sécurité sociale) stands for the health insurer, whose deposits R05
    allows (care history, vaccination certificates): refused its reads and changes above, its
    ITI-41 is served as the health insurer's token deposit is."""
    _, nir, _ = record
    assert registry_status(Doors(xds, nir, [sector("SA24")]).deposit()) == (
        v.RESPONSE_SUCCESS,
        [],
    )


def test_r05_a_payers_conditional_patch_is_refused_as_r05_not_as_a_missing_document(
    xds, record, tokens
):
    """The REST face of the same implementation (`MetadataUpdates.conditional_target`): an
    employer's conditional PATCH of a document by its uniqueId was answered 404 (the document
    it may not read counted as missing) and left no refusal; it is R05's 403, as a PATCH by
    id is, traced in the record's trail."""
    patient_id, _, unique_id = record
    before = set(_events(xds, patient_id))
    token = tokens.practitioner_claims(GP, dmp={"organization_type": "employer"})
    response = xds.client.patch(
        f"/fhir/DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{unique_id}",
        json=[{"op": "add", "path": "/description", "value": "r05"}],
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json-patch+json",
        },
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    details = response.get_json()["issue"][0]["details"]["coding"][0]["code"]
    assert details == "R05"
    new = [event for key, event in _events(xds, patient_id).items() if key not in before]
    assert "R05" in _denied_rules(new)

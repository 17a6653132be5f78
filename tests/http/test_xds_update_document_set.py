"""ITI-57 Update Document Set (IHE ITI TF-2b 3.57): the XDS door of the DMP's TD3.3
(issue #20, deliverable 1), the same implementation as PATCH.

A metadata update (a new DocumentEntry version, `lid` = the stored logicalId, HasMember with
PreviousVersion) changes the confidentialityCode (TD3.3a/b); an UpdateAvailabilityStatus
association archives (urn:asip:ci-sis:2010:StatusType:Archived, TD3.3d), unarchives or
deletes (Deleted, TD3.3c). Refusals are RegistryErrors with the ITI-57 codes.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import GET_DOCUMENTS
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.test_xds_endpoints import GP, OTHER_PS, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import adhoc
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
A07_OID = "1.2.250.1.213.1.1.4.13"
V3_OID = "2.16.840.1.113883.5.25"
A07 = "urn:oid:1.2.250.1.213.1.1.4.13"
IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


@pytest.fixture
def record(xds):
    """A patient whose médecin traitant GP deposits documents (ITI-41), and who authorized
    OTHER_PS (R10)."""
    patient_id, nir = xds.patient(57)
    response = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(OTHER_PS)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return patient_id, nir


def deposit(xds: Xds, nir: str, masking: tuple[str, ...] = ()) -> str:
    request = build_iti41(nir=nir, security=xds.security(GP, nir), masking=masking)
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    return next(iter(request.document_unique_ids.values()))


def entry_of(xds: Xds, nir: str, unique_id: str, idnat: str = GP) -> etree._Element | None:
    """The DocumentEntry ITI-18 GetDocuments answers for a uniqueId (None: not found)."""
    query = adhoc(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"('{unique_id}')")])
    response = xds.soap("/xds/registry", v.ACTION_ITI18, query, xds.security(idnat, nir))
    root, _ = envelope_of(response)
    return root.find(f".//{RIM}ExtrinsicObject")


def submission_set(objects: etree._Element, nir: str) -> str:
    package = etree.SubElement(objects, f"{RIM}RegistryPackage", id="SubmissionSet01")
    etree.SubElement(
        objects,
        f"{RIM}Classification",
        id="cl-ss",
        classifiedObject="SubmissionSet01",
        classificationNode=v.SS_NODE,
    )
    for scheme, value, name in (
        (
            "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8",
            f"1.2.250.1.999.57.{uuid.uuid4().int % 10**9}",
            "XDSSubmissionSet.uniqueId",
        ),
        (
            "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832",
            "1.2.250.1.999.1",
            "XDSSubmissionSet.sourceId",
        ),
        (
            "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446",
            patient_cx(nir),
            "XDSSubmissionSet.patientId",
        ),
    ):
        external = etree.SubElement(
            package,
            f"{RIM}ExternalIdentifier",
            id=f"ei-{uuid.uuid4().hex[:8]}",
            registryObject="SubmissionSet01",
            identificationScheme=scheme,
            value=value,
        )
        holder = etree.SubElement(external, f"{RIM}Name")
        etree.SubElement(holder, f"{RIM}LocalizedString", value=name)
    return "SubmissionSet01"


def request_with(nir: str) -> tuple[etree._Element, etree._Element]:
    submit = etree.Element(
        f"{{{v.NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": v.NS_LCM, "rim": v.NS_RIM}
    )
    objects = etree.SubElement(submit, f"{RIM}RegistryObjectList")
    submission_set(objects, nir)
    return submit, objects


def association(objects, kind: str, source: str, target: str, **slots: str) -> None:
    element = etree.SubElement(
        objects,
        f"{RIM}Association",
        id=f"urn:uuid:{uuid.uuid4()}",
        associationType=kind,
        sourceObject=source,
        targetObject=target,
    )
    for name, value in slots.items():
        slot = etree.SubElement(element, f"{RIM}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{RIM}ValueList"), f"{RIM}Value").text = value


def status_update(nir: str, entry_uuid: str, original: str, new: str) -> etree._Element:
    submit, objects = request_with(nir)
    association(
        objects,
        UPDATE_STATUS,
        "SubmissionSet01",
        entry_uuid,
        OriginalStatus=original,
        NewStatus=new,
    )
    return submit


def metadata_update(
    nir: str, stored: etree._Element, codes: list[tuple[str, str]], **changes: str
) -> etree._Element:
    """A new version of the stored DocumentEntry with these confidentiality codes."""
    submit, objects = request_with(nir)
    entry = copy.deepcopy(stored)
    previous = entry.find(f"{RIM}VersionInfo").get("versionName")
    entry.set("lid", stored.get("id"))
    entry.set("id", "NewVersion01")
    entry.attrib.pop("status", None)
    for child in list(entry):
        if child.get("classificationScheme") == v.DE_CONFIDENTIALITY_CODE:
            entry.remove(child)
        if child.tag == f"{RIM}VersionInfo":
            entry.remove(child)
    for child in entry.iter():
        if child.get("classifiedObject") or child.get("registryObject"):
            child.set(
                "classifiedObject" if child.get("classifiedObject") else "registryObject",
                "NewVersion01",
            )
    for code, scheme in codes:
        element = etree.SubElement(
            entry,
            f"{RIM}Classification",
            id=f"cl-{uuid.uuid4().hex[:8]}",
            classificationScheme=v.DE_CONFIDENTIALITY_CODE,
            classifiedObject="NewVersion01",
            nodeRepresentation=code,
        )
        slot = etree.SubElement(element, f"{RIM}Slot", name="codingScheme")
        etree.SubElement(etree.SubElement(slot, f"{RIM}ValueList"), f"{RIM}Value").text = scheme
        name = etree.SubElement(element, f"{RIM}Name")
        etree.SubElement(name, f"{RIM}LocalizedString", value=code)
    for name, value in changes.items():  # a change of another attribute (refused)
        for slot in entry.findall(f"{RIM}Slot"):
            if slot.get("name") == name:
                slot.find(f"{RIM}ValueList/{RIM}Value").text = value
    objects.append(entry)
    association(
        objects, v.ASSOC_HAS_MEMBER, "SubmissionSet01", "NewVersion01", PreviousVersion=previous
    )
    return submit


def update(xds: Xds, nir: str, body: etree._Element, idnat: str = GP):
    response = xds.soap("/xds/registry", ITI57, body, xds.security(idnat, nir))
    assert response.status_code == 200, response.get_data()[:2000]
    return registry_status(response)


def document(xds: Xds, unique_id: str) -> dict:
    found = xds.runtime.service.documents_with_unique_id(
        "urn:ietf:rfc:3986", f"urn:oid:{unique_id}"
    )
    assert len(found) == 1
    return found[0]


def confidentiality(entry: etree._Element) -> set[str]:
    return {
        c.get("nodeRepresentation")
        for c in entry.findall(f"{RIM}Classification")
        if c.get("classificationScheme") == v.DE_CONFIDENTIALITY_CODE
    }


# -- status updates: archive, unarchive, delete ------------------------------------------------


def test_td33d_archive_then_unarchive_through_iti57(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id)
    assert stored.get("status") == v.STATUS_APPROVED
    assert update(
        xds, nir, status_update(nir, stored.get("id"), v.STATUS_APPROVED, v.STATUS_ARCHIVED)
    ) == (v.RESPONSE_SUCCESS, [])
    archived = entry_of(xds, nir, unique_id)
    assert archived.get("status") == v.STATUS_ARCHIVED
    assert document(xds, unique_id)["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]
    assert update(
        xds, nir, status_update(nir, stored.get("id"), v.STATUS_ARCHIVED, v.STATUS_APPROVED)
    ) == (v.RESPONSE_SUCCESS, [])
    assert entry_of(xds, nir, unique_id).get("status") == v.STATUS_APPROVED


def test_original_status_must_be_the_stored_one(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id)
    status = update(
        xds, nir, status_update(nir, stored.get("id"), v.STATUS_ARCHIVED, v.STATUS_APPROVED)
    )
    assert status == (v.RESPONSE_FAILURE, ["XDSMetadataUpdateError"])


def test_td33c_the_author_deletes_and_others_no_longer_find_it(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id)
    refused = update(
        xds,
        nir,
        status_update(nir, stored.get("id"), v.STATUS_APPROVED, v.STATUS_DELETED),
        OTHER_PS,
    )
    assert refused == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])
    deleted = update(
        xds, nir, status_update(nir, stored.get("id"), v.STATUS_APPROVED, v.STATUS_DELETED)
    )
    assert deleted == (v.RESPONSE_SUCCESS, [])
    assert document(xds, unique_id)["status"] == "entered-in-error"
    assert entry_of(xds, nir, unique_id, OTHER_PS) is None, "hidden from all but the author"
    assert entry_of(xds, nir, unique_id).get("status") == v.STATUS_DELETED


def test_an_unknown_entry_is_an_unresolved_reference(xds, record):
    _, nir = record
    body = status_update(nir, f"urn:uuid:{uuid.uuid4()}", v.STATUS_APPROVED, v.STATUS_ARCHIVED)
    assert update(xds, nir, body) == (v.RESPONSE_FAILURE, ["UnresolvedReferenceException"])


# -- metadata updates: the confidentiality codes -----------------------------------------------


def test_td33b_a_professional_lifts_invisible_patient_by_a_metadata_update(xds, record):
    patient_id, nir = record
    unique_id = deposit(xds, nir, masking=("INVISIBLE_PATIENT",))
    stored = entry_of(xds, nir, unique_id, OTHER_PS)
    assert confidentiality(stored) == {"N", "INVISIBLE_PATIENT"}
    patient = xds.tokens.patient(patient_id)
    search = f"/fhir/DocumentReference?patient={patient_id}"
    assert xds.client.get(search, headers=auth(patient)).get_json()["total"] == 0
    body = metadata_update(nir, stored, [("N", V3_OID)])
    assert update(xds, nir, body, OTHER_PS) == (v.RESPONSE_SUCCESS, [])
    assert confidentiality(entry_of(xds, nir, unique_id)) == {"N"}
    assert xds.client.get(search, headers=auth(patient)).get_json()["total"] == 1


def test_a_professional_may_not_mask_by_a_metadata_update(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id, OTHER_PS)
    body = metadata_update(nir, stored, [("N", V3_OID), ("MASQUE_PS", A07_OID)])
    assert update(xds, nir, body, OTHER_PS) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])
    assert confidentiality(entry_of(xds, nir, unique_id)) == {"N"}


def test_previous_version_must_be_the_current_one(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id)
    first = metadata_update(nir, stored, [("N", V3_OID), ("MASQUE_PS", A07_OID)])
    assert update(xds, nir, first) == (v.RESPONSE_SUCCESS, [])
    again = metadata_update(nir, stored, [("N", V3_OID)])  # PreviousVersion 1, now 2
    assert update(xds, nir, again) == (v.RESPONSE_FAILURE, ["XDSMetadataVersionError"])


def test_a_metadata_update_changing_another_attribute_is_refused(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = entry_of(xds, nir, unique_id)
    body = metadata_update(nir, stored, [("N", V3_OID)], languageCode="en-US")
    assert update(xds, nir, body) == (v.RESPONSE_FAILURE, ["XDSMetadataUpdateOperationError"])
    assert entry_of(xds, nir, unique_id).find(f"{RIM}VersionInfo").get("versionName") == "1"


# -- the same change through both doors --------------------------------------------------------


@pytest.mark.parametrize("change", ["mask", "archive", "delete"])
def test_iti57_and_patch_give_the_same_stored_result_and_audit(xds, record, change):
    patient_id, nir = record
    by_patch, by_xds = deposit(xds, nir), deposit(xds, nir)
    token = xds.tokens.practitioner(GP)
    patched = document(xds, by_patch)
    operations = {
        "mask": [
            {
                "op": "add",
                "path": "/securityLabel/-",
                "value": {"coding": [{"system": A07, "code": "MASQUE_PS", "display": "MASQUE_PS"}]},
            }
        ],
        "archive": [
            {
                "op": "add",
                "path": "/extension",
                "value": [{"url": IS_ARCHIVED, "valueBoolean": True}],
            }
        ],
        "delete": [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
    }[change]
    response = xds.client.patch(
        f"/fhir/DocumentReference/{patched['id']}",
        json=operations,
        headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = entry_of(xds, nir, by_xds)
    if change == "mask":
        body = metadata_update(nir, stored, [("N", V3_OID), ("MASQUE_PS", A07_OID)])
    else:
        new = v.STATUS_ARCHIVED if change == "archive" else v.STATUS_DELETED
        body = status_update(nir, stored.get("id"), v.STATUS_APPROVED, new)
    assert update(xds, nir, body) == (v.RESPONSE_SUCCESS, [])

    def essentials(document: dict) -> dict:
        labels = sorted(
            (c.get("system"), c.get("code"))
            for concept in document.get("securityLabel") or []
            for c in concept.get("coding") or []
        )
        return {
            "versionId": document["meta"]["versionId"],
            "security": document["meta"].get("security"),
            "status": document["status"],
            "labels": labels,
            "extension": document.get("extension"),
        }

    first, second = document(xds, by_patch), document(xds, by_xds)
    assert essentials(first) == essentials(second)
    events = xds.client.get(
        f"/fhir/AuditEvent?patient={patient_id}&subtype=update",
        headers=auth(xds.tokens.patient(patient_id)),
    ).get_json()

    def updates_of(document_id: str) -> list[tuple]:
        return [
            (e["resource"]["action"], e["resource"]["outcome"])
            for e in events.get("entry", [])
            if any(
                (entity.get("what") or {})
                .get("reference", "")
                .startswith(f"DocumentReference/{document_id}")
                for entity in e["resource"].get("entity", [])
            )
        ]

    assert updates_of(first["id"]) == updates_of(second["id"]) == [("U", "0")]

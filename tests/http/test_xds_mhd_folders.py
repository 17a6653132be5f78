"""Folders across the two faces over one store (ITI TF-3 4.2.3.3; ITI TF-2a 3.18.4.1.2.3.7
FindFolders .7.3, GetAll .7.4, GetFolders .7.6, GetFolderAndContents .7.11,
GetFoldersForDocument .7.12; MHD Vol 3 4.5.1, Table 4.5.1.1-1 "XDS to FHIR").

A folder List written through the FHIR face (the médecin traitant's REST create, as R08
lets them write Lists) is an XDSFolder for the XDS face: entryUUID its official identifier,
uniqueId its usual one, codeList its designationType, lastUpdateTime its date,
availabilityStatus its status, its entries HasMember associations. Before, every Folder
query answered Success and nothing: "the DMP holds no Folders", while `List?code=folder`
served it (the same record read two ways).

Access (R06, R14, R18): the Folder queries run as the requester's FHIR searches, so a
folder is judged as any List (one naming only documents hidden from the reader reads as
missing) and its entries as the documents they name: no door of a folder (the Folder,
its contents, the folders of a document named by the hidden one's entryUUID or uniqueId,
ITI-66 and `_include`) names a document hidden from the reader, and another record's
folder is out of reach of a VIHF bound to this one.
"""

from __future__ import annotations

import json
import uuid

import pytest
from lxml import etree

from fhir_server.terminology import SYSTEM_IDNAT_PS
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    FIND_FOLDERS,
    GET_ALL,
    GET_ASSOCIATIONS,
    GET_FOLDER_AND_CONTENTS,
    GET_FOLDERS,
    GET_FOLDERS_FOR_DOCUMENT,
    GET_SUBMISSION_SET_AND_CONTENTS,
    GET_SUBMISSION_SETS,
)
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import label
from tests.http.test_attack_pass_xds import (  # noqa: F401 - fixtures
    AUTHORIZED,
    deposit,
    entry_uuid,
    errors,
    record,
    stored,
    xds,
)
from tests.http.test_mhd import SUBMISSION as MHD_SUBMISSION
from tests.http.test_mhd import expressions, xds_codes
from tests.http.test_mhd import fixture as mhd_fixture
from tests.http.test_xds_endpoints import GP, envelope_of, registry_status
from tests.http.test_xds_stored_queries import APPROVED, adhoc
from tests.support.documents import MHD_LIST_TYPES
from tests.xds_builders import patient_cx

# ruff: noqa: F811

RIM = f"{{{v.NS_RIM}}}"
DESIGNATION_TYPE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
FOLDER_CODE = {"system": "http://snomed.info/sct", "code": "80146002"}


def folder(patient_id: str, documents: list[dict], title: str = "Suivi diabète") -> dict:
    """A folder List (MHD Folder) of `patient_id` naming `documents`."""
    return {
        "resourceType": "List",
        "extension": [{"url": DESIGNATION_TYPE, "valueCodeableConcept": {"coding": [FOLDER_CODE]}}],
        "identifier": [
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            {
                "use": "usual",
                "system": "urn:ietf:rfc:3986",
                "value": f"urn:oid:1.2.250.1.999.7.{uuid.uuid4().int % 10**9}",
            },
        ],
        "status": "current",
        "mode": "working",
        "title": title,
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "folder"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": "2026-06-12T10:00:00+02:00",
        "note": [{"text": "classeur"}],
        "entry": [{"item": {"reference": f"DocumentReference/{d['id']}"}} for d in documents],
    }


def post_folder(api, listing: dict, idnat: str = GP) -> dict:
    """The folder created by `idnat` through REST (R08: the médecin traitant writes Lists)."""
    response = api.client.post(
        "/fhir/List",
        data=json.dumps(listing),
        headers=auth(
            api.tokens.practitioner(idnat),
            **{"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
        ),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def identifiers(listing: dict) -> tuple[str, str]:
    """(entryUUID, uniqueId) of a folder List."""
    by_use = {i["use"]: i["value"] for i in listing["identifier"]}
    return by_use["official"], by_use["usual"].removeprefix("urn:oid:")


def query(api, nir: str, idnat: str, query_id: str, slots) -> tuple[etree._Element, bytes]:
    """The RegistryObjectList of a successful ITI-18 by `idnat` (VIHF bound to `nir`), and
    the whole answer's bytes."""
    response = api.soap(
        "/xds/registry", v.ACTION_ITI18, adhoc(query_id, slots), api.security(idnat, nir)
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return root.find(f".//{RIM}RegistryObjectList"), response.get_data()


def folders_in(objects: etree._Element) -> dict[str, etree._Element]:
    """The RegistryPackages classified as Folder, by id."""
    return {
        p.get("id"): p
        for p in objects.iter(f"{RIM}RegistryPackage")
        if any(c.get("classificationNode") == v.FOLDER_NODE for c in p.iter(f"{RIM}Classification"))
    }


def members(objects: etree._Element) -> set[tuple[str, str]]:
    return {
        (a.get("sourceObject"), a.get("targetObject"))
        for a in objects.iter(f"{RIM}Association")
        if a.get("associationType") == v.ASSOC_HAS_MEMBER
    }


def entries_in(objects: etree._Element) -> set[str]:
    return {e.get("id") for e in objects.iter(f"{RIM}ExtrinsicObject")}


def find_folders(api, nir: str, idnat: str, *extra) -> etree._Element:
    slots = [("$XDSFolderPatientId", f"'{patient_cx(nir)}'"), ("$XDSFolderStatus", APPROVED)]
    return query(api, nir, idnat, FIND_FOLDERS, [*slots, *extra])[0]


@pytest.fixture
def visible(xds, record):
    """A document of the record every party reads, deposited by ITI-41."""
    request, response = deposit(xds, record["nir"], documents=[b"<visible/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    return stored(xds, request)


def test_mhd_4_5_1_a_folder_list_posted_by_rest_is_an_xds_folder_of_find_folders(
    xds, record, visible
):
    """ITI TF-2a 3.18.4.1.2.3.7.3 and MHD Table 4.5.1.1-1: FindFolders of the record answers
    the folder List as a Folder: entryUUID, uniqueId, patientId, title, comments, codeList,
    lastUpdateTime and Approved. Before: nothing (Success, empty)."""
    listing = post_folder(xds, folder(record["patient"], [visible]))
    folder_uuid, folder_unique_id = identifiers(listing)
    found = folders_in(find_folders(xds, record["nir"], GP))
    assert list(found) == [folder_uuid]
    package = found[folder_uuid]
    assert package.get("status") == v.STATUS_APPROVED
    external = {
        e.get("identificationScheme"): e.get("value")
        for e in package.iter(f"{RIM}ExternalIdentifier")
    }
    assert external == {
        v.FOLDER_UNIQUE_ID: folder_unique_id,
        v.FOLDER_PATIENT_ID: patient_cx(record["nir"]),
    }
    assert package.find(f"{RIM}Name/{RIM}LocalizedString").get("value") == "Suivi diabète"
    assert package.find(f"{RIM}Description/{RIM}LocalizedString").get("value") == "classeur"
    (code,) = [
        c
        for c in package.iter(f"{RIM}Classification")
        if c.get("classificationScheme") == v.FOLDER_CODE_LIST
    ]
    assert code.get("nodeRepresentation") == FOLDER_CODE["code"]
    slots = {s.get("name"): [x.text for x in s.iter(f"{RIM}Value")] for s in package}
    assert slots["lastUpdateTime"] == ["20260612080000"]
    # $XDSFolderCodeList and $XDSFolderLastUpdateTime select (3.18.4.1.2.3.7.3).
    other_code = ("$XDSFolderCodeList", "('11^^1.2.250.1.213.1.1.4.1')")
    assert folders_in(find_folders(xds, record["nir"], GP, other_code)) == {}
    later = ("$XDSFolderLastUpdateTimeFrom", "20260613")
    assert folders_in(find_folders(xds, record["nir"], GP, later)) == {}
    same_code = ("$XDSFolderCodeList", f"('80146002^^{'2.16.840.1.113883.6.96'}')")
    assert list(folders_in(find_folders(xds, record["nir"], GP, same_code))) == [folder_uuid]


def test_iti18_get_folders_and_get_folder_and_contents_answer_the_folder_and_its_members(
    xds, record, visible
):
    """GetFolders (.7.6) by entryUUID and by uniqueId, GetFolderAndContents (.7.11) with its
    document and the Folder's HasMember association to it, GetFoldersForDocument (.7.12)
    of the document, GetAll (.7.4) with the Folder and its association."""
    listing = post_folder(xds, folder(record["patient"], [visible]))
    folder_uuid, folder_unique_id = identifiers(listing)
    document_uuid = entry_uuid(visible)
    nir = record["nir"]
    for slot in (
        ("$XDSFolderEntryUUID", f"('{folder_uuid}')"),
        ("$XDSFolderUniqueId", f"('{folder_unique_id}')"),
    ):
        objects, _ = query(xds, nir, GP, GET_FOLDERS, [slot])
        assert list(folders_in(objects)) == [folder_uuid]
    objects, _ = query(
        xds, nir, GP, GET_FOLDER_AND_CONTENTS, [("$XDSFolderEntryUUID", f"'{folder_uuid}'")]
    )
    assert list(folders_in(objects)) == [folder_uuid]
    assert entries_in(objects) == {document_uuid}
    assert members(objects) == {(folder_uuid, document_uuid)}
    # A Folder's HasMember carries no SubmissionSetStatus (ITI TF-3 4.2.2.1.3).
    assert "SubmissionSetStatus" not in etree.tostring(objects).decode()
    objects, _ = query(
        xds,
        nir,
        GP,
        GET_FOLDERS_FOR_DOCUMENT,
        [("$XDSDocumentEntryEntryUUID", f"'{document_uuid}'")],
    )
    assert list(folders_in(objects)) == [folder_uuid]
    objects, _ = query(
        xds,
        nir,
        GP,
        GET_ALL,
        [
            ("$patientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSSubmissionSetStatus", APPROVED),
            ("$XDSFolderStatus", APPROVED),
        ],
    )
    assert folder_uuid in folders_in(objects)
    assert (folder_uuid, document_uuid) in members(objects)


def test_mhd_4_5_1_the_folder_list_is_served_by_iti66_with_its_entries(xds, record, visible):
    """The control on the FHIR face: `List?code=folder` of the record (ITI-66) serves it."""
    listing = post_folder(xds, folder(record["patient"], [visible]))
    found = xds.client.get(
        f"/fhir/List?patient={record['patient']}&code={MHD_LIST_TYPES}|folder",
        headers=auth(xds.tokens.practitioner(GP)),
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    (served,) = [e["resource"] for e in found.get_json()["entry"]]
    assert served["id"] == listing["id"]
    assert served["entry"] == [{"item": {"reference": f"DocumentReference/{visible['id']}"}}]


# -- access: R14, R18 --------------------------------------------------------------------------


def test_r14_r18_a_folder_names_no_masked_document_to_another_professional_by_any_door(
    xds, record, visible
):
    """The médecin traitant's folder of a visible and a MASQUE_PS document: the authorized
    practitioner finds the Folder with the visible document only (FindFolders,
    GetFolderAndContents: no entry, no association, no id of the masked one), and
    GetFoldersForDocument by the masked document's entryUUID or uniqueId answers as for an
    unknown document. The médecin traitant gets both."""
    masked_request, masked = record["masked"]
    listing = post_folder(xds, folder(record["patient"], [visible, masked]))
    folder_uuid, _ = identifiers(listing)
    nir = record["nir"]
    masked_uuid, visible_uuid = entry_uuid(masked), entry_uuid(visible)
    masked_unique_id = masked_request.document_unique_ids["Document01"]
    assert folder_uuid in folders_in(find_folders(xds, nir, AUTHORIZED))
    contents = [("$XDSFolderEntryUUID", f"'{folder_uuid}'")]
    objects, body = query(xds, nir, AUTHORIZED, GET_FOLDER_AND_CONTENTS, contents)
    assert entries_in(objects) == {visible_uuid}
    assert members(objects) == {(folder_uuid, visible_uuid)}
    for secret in (masked_uuid, masked["id"], masked_unique_id):
        assert secret.encode() not in body
    objects, _ = query(xds, nir, GP, GET_FOLDER_AND_CONTENTS, contents)
    assert entries_in(objects) == {visible_uuid, masked_uuid}
    for slot in (
        ("$XDSDocumentEntryEntryUUID", f"'{masked_uuid}'"),
        ("$XDSDocumentEntryUniqueId", f"'{masked_unique_id}'"),
    ):
        hidden, _ = query(xds, nir, AUTHORIZED, GET_FOLDERS_FOR_DOCUMENT, [slot])
        unknown, _ = query(
            xds,
            nir,
            AUTHORIZED,
            GET_FOLDERS_FOR_DOCUMENT,
            [("$XDSDocumentEntryEntryUUID", f"'urn:uuid:{uuid.uuid4()}'")],
        )
        assert len(hidden) == len(unknown) == 0
        seen, _ = query(xds, nir, GP, GET_FOLDERS_FOR_DOCUMENT, [slot])
        assert list(folders_in(seen)) == [folder_uuid]


def test_r14_r18_a_folder_of_masked_documents_only_is_as_missing_to_another_professional(
    xds, record
):
    """A folder naming only the MASQUE_PS document reads as a missing one (R18): no Folder
    query of the authorized practitioner answers it, by search or by its ids; the médecin
    traitant finds it."""
    _, masked = record["masked"]
    listing = post_folder(xds, folder(record["patient"], [masked], title="Masqué"))
    folder_uuid, folder_unique_id = identifiers(listing)
    nir = record["nir"]
    assert folder_uuid not in folders_in(find_folders(xds, nir, AUTHORIZED))
    assert folder_uuid in folders_in(find_folders(xds, nir, GP))
    for query_id, slot in (
        (GET_FOLDERS, ("$XDSFolderEntryUUID", f"('{folder_uuid}')")),
        (GET_FOLDERS, ("$XDSFolderUniqueId", f"('{folder_unique_id}')")),
        (GET_FOLDER_AND_CONTENTS, ("$XDSFolderEntryUUID", f"'{folder_uuid}'")),
    ):
        objects, body = query(xds, nir, AUTHORIZED, query_id, [slot])
        assert len(objects) == 0 and b"Masqu" not in body


def test_r14_r18_the_patient_reads_no_invisible_document_through_a_folder(xds, record, visible):
    """The patient (FHIR face: ITI-66, the List read, `_include=List:item`) reads the folder
    with the visible document only, never the INVISIBLE_PATIENT one it also names."""
    _, invisible = record["invisible"]
    listing = post_folder(xds, folder(record["patient"], [visible, invisible]))
    token = xds.tokens.patient(record["patient"])
    for url in (
        f"/fhir/List/{listing['id']}",
        f"/fhir/List?patient={record['patient']}&code={MHD_LIST_TYPES}|folder",
        f"/fhir/List?patient={record['patient']}&code=folder&_include=List:item",
    ):
        response = xds.client.get(url, headers=auth(token))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_data(as_text=True)
        assert listing["id"] in body and visible["id"] in body
        assert invisible["id"] not in body and entry_uuid(invisible) not in body


def test_r06_another_records_folder_is_out_of_reach(xds, record):
    """A folder of another patient's record (deposited there by its médecin traitant) is
    answered by no Folder query bound to this record, by its entryUUID or uniqueId."""
    _, other = record["other"]
    listing = post_folder(xds, folder(other["subject"]["reference"].split("/")[1], [other]))
    folder_uuid, folder_unique_id = identifiers(listing)
    nir = record["nir"]
    for query_id, slot in (
        (GET_FOLDERS, ("$XDSFolderEntryUUID", f"('{folder_uuid}')")),
        (GET_FOLDERS, ("$XDSFolderUniqueId", f"('{folder_unique_id}')")),
        (GET_FOLDER_AND_CONTENTS, ("$XDSFolderEntryUUID", f"'{folder_uuid}'")),
        (GET_FOLDERS_FOR_DOCUMENT, ("$XDSDocumentEntryEntryUUID", f"'{entry_uuid(other)}'")),
    ):
        for idnat in (GP, AUTHORIZED):
            objects, _ = query(xds, nir, idnat, query_id, [slot])
            assert len(objects) == 0


def test_iti18_get_associations_names_the_folders_hasmember_and_get_submission_sets_does_not(
    xds, record, visible
):
    """GetAssociations (.7.7) of the document, or of the Folder, answers the Folder's
    HasMember association (every association with that source or target); GetSubmissionSets
    (.7.9) of the document answers SubmissionSets and their associations only."""
    listing = post_folder(xds, folder(record["patient"], [visible]))
    folder_uuid, _ = identifiers(listing)
    document_uuid = entry_uuid(visible)
    nir = record["nir"]
    for named in (document_uuid, folder_uuid):
        objects, _ = query(xds, nir, GP, GET_ASSOCIATIONS, [("$uuid", f"('{named}')")])
        assert (folder_uuid, document_uuid) in members(objects)
    objects, _ = query(xds, nir, GP, GET_SUBMISSION_SETS, [("$uuid", f"('{document_uuid}')")])
    assert folders_in(objects) == {}
    assert {source for source, _ in members(objects)} and folder_uuid not in {
        source for source, _ in members(objects)
    }


@pytest.mark.parametrize("door", ["create", "transaction"])
def test_pdsm4dmp_the_registry_assigns_the_entry_uuid_of_a_folder_written_without_one(
    xds, record, visible, door
):
    """A folder List written without an entryUUID (REST create, or a transaction's POST)
    gets one from the registry, as a DocumentReference does (PDSm4DMP; MHD Vol 3 4.5.1:
    the official identifier). Before, ITI-18 named it by an id derived from its FHIR id,
    which FindFolders answered and GetFolders / GetFolderAndContents by it never found."""
    listing = folder(record["patient"], [visible])
    listing["identifier"] = [i for i in listing["identifier"] if i["use"] != "official"]
    headers = auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON})
    if door == "create":
        created = xds.client.post("/fhir/List", data=json.dumps(listing), headers=headers)
        assert created.status_code == 201, created.get_data(as_text=True)
        list_id = created.headers["Location"].split("/List/")[1].split("/")[0]
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": listing, "request": {"method": "POST", "url": "List"}}],
        }
        answered = xds.client.post("/fhir", data=json.dumps(bundle), headers=headers)
        assert answered.status_code == 200, answered.get_data(as_text=True)
        location = answered.get_json()["entry"][0]["response"]["location"]
        list_id = location.split("List/")[1].split("/")[0]
    served = xds.client.get(f"/fhir/List/{list_id}", headers=auth(xds.tokens.practitioner(GP)))
    (official,) = [i for i in served.get_json()["identifier"] if i.get("use") == "official"]
    assert official["value"].startswith("urn:uuid:")
    nir = record["nir"]
    assert list(folders_in(find_folders(xds, nir, GP))) == [official["value"]]
    objects, _ = query(
        xds, nir, GP, GET_FOLDER_AND_CONTENTS, [("$XDSFolderEntryUUID", f"'{official['value']}'")]
    )
    assert members(objects) == {(official["value"], entry_uuid(visible))}


# -- ITI-65 with a Folder (MHD Vol 2 3.65.4.1.2, Vol 3 4.5.1) ----------------------------------

FOLDER_URL = "urn:uuid:aaaaaaaa-0000-0000-0000-0000000000f0"


def provide_with_folder(nir: str, unique: str, folder_entries: list[str] | None = None) -> dict:
    """The PDSm4DMP ITI-65 example for `nir`, with a folder List holding its document and
    named by its SubmissionSet (MHD: the SubmissionSet lists the Folder it creates)."""
    bundle = mhd_fixture(MHD_SUBMISSION, nir)
    submission_set, document = bundle["entry"][0], bundle["entry"][1]
    document["resource"]["masterIdentifier"]["value"] += f".{unique}"
    listing = folder("x", [])
    listing["subject"] = submission_set["resource"]["subject"]
    listing["identifier"] = [i for i in listing["identifier"] if i["use"] != "official"]
    named = folder_entries if folder_entries is not None else [document["fullUrl"]]
    listing["entry"] = [{"item": {"reference": reference}} for reference in named]
    submission_set["resource"]["entry"].append({"item": {"reference": FOLDER_URL}})
    bundle["entry"].append(
        {"fullUrl": FOLDER_URL, "resource": listing, "request": {"method": "POST", "url": "List"}}
    )
    return bundle


def test_iti65_a_folder_list_is_deposited_and_found_by_iti18_and_iti66(xds):
    """ITI-65 with a folder List (MHD Vol 3 4.5.1): stored with a registry-assigned
    entryUUID, served by `List?code=folder` (ITI-66) with its document, and answered by
    FindFolders / GetFolderAndContents with the Folder's HasMember to the document. Before:
    refused ("folders are not supported"), while REST wrote the same List."""
    patient_id, nir = xds.patient(65)
    response = xds.client.post(
        "/fhir",
        data=json.dumps(provide_with_folder(nir, "65")),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    found = xds.client.get(
        f"/fhir/List?patient={patient_id}&code={MHD_LIST_TYPES}|folder",
        headers=auth(xds.tokens.practitioner(GP)),
    )
    (served,) = [e["resource"] for e in found.get_json()["entry"]]
    (document_id,) = [
        e["item"]["reference"].removeprefix("DocumentReference/") for e in served["entry"]
    ]
    (folder_uuid,) = [i["value"] for i in served["identifier"] if i.get("use") == "official"]
    assert list(folders_in(find_folders(xds, nir, GP))) == [folder_uuid]
    objects, _ = query(
        xds, nir, GP, GET_FOLDER_AND_CONTENTS, [("$XDSFolderEntryUUID", f"'{folder_uuid}'")]
    )
    document = xds.client.get(
        f"/fhir/DocumentReference/{document_id}", headers=auth(xds.tokens.practitioner(GP))
    ).get_json()
    assert members(objects) == {(folder_uuid, entry_uuid(document))}


def test_iti18_get_submission_set_and_contents_answers_the_folder_the_iti65_created(xds):
    """GetSubmissionSetAndContents (.7.10) of an ITI-65 that created a Folder: the
    SubmissionSet, its document and the Folder, with the HasMember associations from the
    SubmissionSet to both and from the Folder to the document."""
    patient_id, nir = xds.patient(68)
    bundle = provide_with_folder(nir, "68")
    response = xds.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    (unique_id,) = [
        i["value"].removeprefix("urn:oid:")
        for i in bundle["entry"][0]["resource"]["identifier"]
        if i.get("use") == "usual"
    ]
    objects, _ = query(
        xds,
        nir,
        GP,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{unique_id}'")],
    )
    (folder_uuid,) = folders_in(objects)
    (document_uuid,) = entries_in(objects)
    (submission_set_uuid,) = {
        p.get("id") for p in objects.iter(f"{RIM}RegistryPackage") if p.get("id") != folder_uuid
    }
    assert members(objects) == {
        (submission_set_uuid, document_uuid),
        (submission_set_uuid, folder_uuid),
        (folder_uuid, document_uuid),
    }


@pytest.mark.parametrize("named", ["stored", "unknown"])
def test_iti65_a_folder_names_documents_of_the_submission_only(xds, record, named):
    """A Folder entry naming a stored document (another record's, or an unknown id) is
    refused (422, XDSRepositoryMetadataError at the entry), nothing looked up: adding a
    stored document would name one the depositor may not read, or another record's (R06,
    R18), and the two answers are one."""
    _, other = record["other"]
    patient_id, nir = xds.patient(66)
    reference = f"DocumentReference/{other['id'] if named == 'stored' else 'no-such-document'}"
    response = xds.client.post(
        "/fhir",
        data=json.dumps(provide_with_folder(nir, "66", [reference])),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert expressions(response) == ["Bundle.entry[3].resource.entry[0].item"]
    lists = xds.client.get(
        f"/fhir/List?patient={patient_id}", headers=auth(xds.tokens.practitioner(GP))
    )
    assert lists.get_json().get("total", 0) == 0 and not lists.get_json().get("entry")


def test_r14_r18_an_iti65_folder_of_a_masked_document_is_as_missing_to_another_professional(
    xds, record
):
    """An ITI-65 of a MASQUE_PS document and a Folder holding it: the authorized
    practitioner finds neither the Folder (FindFolders, `List?code=folder`) nor its
    title; the médecin traitant, who deposited it, finds it."""
    bundle = provide_with_folder(record["nir"], "67")
    labels = bundle["entry"][1]["resource"].setdefault("securityLabel", [])
    labels.append(label("MASQUE_PS"))
    bundle["entry"][3]["resource"]["title"] = "Classeur masqué"
    response = xds.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    nir, patient_id = record["nir"], record["patient"]
    assert len(folders_in(find_folders(xds, nir, GP))) == 1
    assert folders_in(find_folders(xds, nir, AUTHORIZED)) == {}
    found = xds.client.get(
        f"/fhir/List?patient={patient_id}&code={MHD_LIST_TYPES}|folder",
        headers=auth(xds.tokens.practitioner(AUTHORIZED)),
    )
    assert found.status_code == 200 and "Classeur" not in found.get_data(as_text=True)


@pytest.mark.parametrize("change", ["dropped", "replaced"])
def test_iti_tf3_4_2_3_3_a_folders_entry_uuid_stays_through_a_rest_update(
    xds, record, visible, change
):
    """ITI TF-3 4.2.3.3 (entryUUID, registry-assigned, never changes) and MHD Vol 3 4.5.1
    (the official identifier): a REST PUT of a folder List without its entryUUID, or with
    another, was stored (200), and ITI-18 then named the same Folder by another id, or by
    one derived from its FHIR id that no Get query finds. An update keeps it or is refused
    (422 naming List.identifier), as a document's update is; nothing is written."""
    listing = folder(record["patient"], [visible])
    listing["source"] = {"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}  # may change it
    created = post_folder(xds, listing)
    entry, _ = identifiers(created)
    changed = dict(created)
    changed["identifier"] = [i for i in created["identifier"] if i["use"] != "official"]
    if change == "replaced":
        changed["identifier"].append(
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}
        )
    headers = auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON})
    response = xds.client.put(
        f"/fhir/List/{created['id']}", data=json.dumps(changed), headers=headers
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "List.identifier" in json.dumps(response.get_json())
    assert list(folders_in(find_folders(xds, record["nir"], GP))) == [entry]

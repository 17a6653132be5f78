"""Metadata versions of a DocumentEntry (issue #20, deliverable 1: ITI-57 as XDS Metadata Update
defines it).

IHE ITI TF-2b 3.57.4.1.3.3.1 (Update Document Set, DocumentEntry metadata update) and ITI TF-3
4.1.4 (DocumentEntry.logicalID, DocumentEntry.version): each metadata version of a
DocumentEntry is a registry object of its own, with its own entryUUID, the logicalID of the
first version and a version counted from 1; the replaced version becomes Deprecated;
PreviousVersion must name the latest version (XDSMetadataVersionError otherwise). ITI TF-2a
3.18.4.1.2.3.7.5: GetDocuments by $XDSDocumentEntryLogicalID answers every version. The checks
are those the NIST XDS Toolkit's Metadata Update test 20003 (query_success_update) makes:
same logicalId, different entryUUIDs, version 1 and 2, the original's id equal to its lid,
the update's not, one uniqueId, the original Deprecated.

A PATCH that changes the labels is the same new version (one implementation), and the access
rules judge every version: what a mask hides is never served through an earlier version.
"""

from __future__ import annotations

import uuid

from lxml import etree

from fhir_server.documents.model import EARLIER_ENTRY_UUID_SYSTEM
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import GET_DOCUMENTS
from tests.http.conftest import auth
from tests.http.test_xds_endpoints import GP, OTHER_PS, envelope_of, registry_status
from tests.http.test_xds_stored_queries import adhoc

# The fixtures `xds` and `record` are those of the ITI-57 tests (imported, hence F811).
# ruff: noqa: F811
from tests.http.test_xds_update_document_set import (  # noqa: F401 - fixtures
    A07,
    A07_OID,
    RIM,
    V3_OID,
    confidentiality,
    deposit,
    document,
    entry_of,
    metadata_update,
    record,
    status_update,
    update,
    xds,
)

UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"


def get_documents(xds, nir: str, slots: list[tuple[str, str]], idnat: str = GP) -> list:
    """The ExtrinsicObjects a GetDocuments answers, after checking it succeeded."""
    response = xds.soap(
        "/xds/registry", v.ACTION_ITI18, adhoc(GET_DOCUMENTS, slots), xds.security(idnat, nir)
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return root.findall(f".//{RIM}ExtrinsicObject")


def by_logical_id(xds, nir: str, logical_id: str, idnat: str = GP) -> list:
    slots = [("$XDSDocumentEntryLogicalID", f"('{logical_id}')"), ("$MetadataLevel", "2")]
    return get_documents(xds, nir, slots, idnat)


def by_entry_uuid(xds, nir: str, entry_uuid: str, idnat: str = GP) -> list:
    return get_documents(xds, nir, [("$XDSDocumentEntryEntryUUID", f"('{entry_uuid}')")], idnat)


def version_of(entry: etree._Element) -> str:
    return entry.find(f"{RIM}VersionInfo").get("versionName")


def unique_id_of(entry: etree._Element) -> str:
    return next(
        e.get("value")
        for e in entry.findall(f"{RIM}ExternalIdentifier")
        if e.get("identificationScheme") == UNIQUE_ID_SCHEME
    )


def new_version(nir: str, stored: etree._Element, codes, entry_uuid: str) -> etree._Element:
    """ITI-57's new DocumentEntry, submitted with the entryUUID `entry_uuid`."""
    body = metadata_update(nir, stored, codes)
    for element in body.iter():
        for name, value in element.attrib.items():
            if value == "NewVersion01":
                element.set(name, entry_uuid)
    return body


def masked(xds, nir: str, unique_id: str, *, symbolic: bool = False) -> tuple[str, str]:
    """The author masks the document by ITI-57: (the first version's, the submitted id of
    the new one: a UUID, or the symbolic NewVersion01)."""
    stored = entry_of(xds, nir, unique_id)
    codes = [("N", V3_OID), ("MASQUE_PS", A07_OID)]
    second = "NewVersion01" if symbolic else f"urn:uuid:{uuid.uuid4()}"
    body = (
        metadata_update(nir, stored, codes) if symbolic else new_version(nir, stored, codes, second)
    )
    assert update(xds, nir, body) == (v.RESPONSE_SUCCESS, [])
    return stored.get("id"), second


# -- 3.57.4.1.3.3.1: a new version is a registry object of its own ------------------------------


def test_iti57_new_version_has_its_own_entry_uuid_and_the_first_is_deprecated(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    first, second = masked(xds, nir, unique_id)
    versions = {e.get("id"): e for e in by_logical_id(xds, nir, first)}
    assert set(versions) == {first, second}  # different_id
    assert {e.get("lid") for e in versions.values()} == {first}  # same_logicalId, id == lid
    assert version_of(versions[first]) == "1" and version_of(versions[second]) == "2"
    assert versions[first].get("status") == v.STATUS_DEPRECATED  # original_is_deprecated
    assert versions[second].get("status") == v.STATUS_APPROVED  # update_is_approved
    assert unique_id_of(versions[first]) == unique_id_of(versions[second]) == unique_id
    assert confidentiality(versions[first]) == {"N"}
    assert confidentiality(versions[second]) == {"N", "MASQUE_PS"}


def test_iti18_by_entry_uuid_answers_that_version(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    first, second = masked(xds, nir, unique_id)
    [old] = by_entry_uuid(xds, nir, first)
    assert (old.get("id"), version_of(old), old.get("status")) == (
        first,
        "1",
        v.STATUS_DEPRECATED,
    )
    [new] = by_entry_uuid(xds, nir, second)
    assert (new.get("id"), new.get("lid"), version_of(new), new.get("status")) == (
        second,
        first,
        "2",
        v.STATUS_APPROVED,
    )
    # $MetadataLevel 1 (the default): the latest version only, whose consumers know no versions.
    slots = [("$XDSDocumentEntryUniqueId", f"('{unique_id}')")]
    assert [e.get("id") for e in get_documents(xds, nir, slots)] == [second]
    both = get_documents(xds, nir, [*slots, ("$MetadataLevel", "2")])
    assert {e.get("id") for e in both} == {first, second}


def test_a_symbolic_id_gets_an_entry_uuid_from_the_registry(xds, record):
    _, nir = record
    first, symbolic = masked(xds, nir, deposit(xds, nir), symbolic=True)
    versions = by_logical_id(xds, nir, first)
    assert len(versions) == 2
    new = next(e for e in versions if e.get("id") != first)
    assert new.get("id").startswith("urn:uuid:") and new.get("id") != symbolic


# -- 3.57.4.1.3.3.1: only the latest version is updated ------------------------------------------


def test_a_status_update_of_a_deprecated_version_is_a_version_error(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    first, second = masked(xds, nir, unique_id)
    body = status_update(nir, first, v.STATUS_DEPRECATED, v.STATUS_ARCHIVED)
    assert update(xds, nir, body) == (v.RESPONSE_FAILURE, ["XDSMetadataVersionError"])
    body = status_update(nir, first, v.STATUS_APPROVED, v.STATUS_ARCHIVED)
    assert update(xds, nir, body) == (v.RESPONSE_FAILURE, ["XDSMetadataVersionError"])
    # The latest version is archived: a status change is no new version.
    body = status_update(nir, second, v.STATUS_APPROVED, v.STATUS_ARCHIVED)
    assert update(xds, nir, body) == (v.RESPONSE_SUCCESS, [])
    [archived] = by_entry_uuid(xds, nir, second)
    assert (version_of(archived), archived.get("status")) == ("2", v.STATUS_ARCHIVED)


def test_a_metadata_update_from_a_deprecated_version_is_a_version_error(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    first, second = masked(xds, nir, unique_id)
    [old] = by_entry_uuid(xds, nir, first)
    stale = new_version(nir, old, [("N", V3_OID)], f"urn:uuid:{uuid.uuid4()}")
    assert update(xds, nir, stale) == (v.RESPONSE_FAILURE, ["XDSMetadataVersionError"])
    # The latest (version 2) updated: version 3, lid still the first entryUUID. Its
    # MASQUE_PS kept: only the patient lifts it (R14, test_attack_pass_governance).
    [latest] = by_entry_uuid(xds, nir, second)
    third = f"urn:uuid:{uuid.uuid4()}"
    body = new_version(nir, latest, [("R", V3_OID), ("MASQUE_PS", A07_OID)], third)
    body.find(f".//{RIM}ExtrinsicObject").set("lid", first)
    assert update(xds, nir, body) == (v.RESPONSE_SUCCESS, [])
    versions = {e.get("id"): e for e in by_logical_id(xds, nir, first)}
    assert {k: (version_of(e), e.get("status")) for k, e in versions.items()} == {
        first: ("1", v.STATUS_DEPRECATED),
        second: ("2", v.STATUS_DEPRECATED),
        third: ("3", v.STATUS_APPROVED),
    }
    # lid naming version 2's entryUUID is no logicalID.
    [now] = by_entry_uuid(xds, nir, third)
    body = new_version(nir, now, [("N", V3_OID)], f"urn:uuid:{uuid.uuid4()}")
    body.find(f".//{RIM}ExtrinsicObject").set("lid", second)
    assert update(xds, nir, body) == (v.RESPONSE_FAILURE, ["XDSMetadataVersionError"])
    assert by_logical_id(xds, nir, second) == []


def test_a_new_version_may_not_take_an_entry_uuid_already_in_the_registry(xds, record):
    _, nir = record
    unique_id, other = deposit(xds, nir), deposit(xds, nir)
    taken = entry_of(xds, nir, other).get("id")
    stored = entry_of(xds, nir, unique_id)
    body = new_version(nir, stored, [("N", V3_OID), ("MASQUE_PS", A07_OID)], taken)
    status, codes = update(xds, nir, body)
    assert status == v.RESPONSE_FAILURE and codes
    assert [e.get("id") for e in by_logical_id(xds, nir, stored.get("id"))] == [stored.get("id")]


# -- the access rules judge every version -------------------------------------------------------


def test_a_mask_hides_every_earlier_version_from_a_professional(xds, record):
    """R14 on every version: the first version carried no mask, but masking the document
    hides it too (GetDocuments by its entryUUID or the logicalID); the author still sees
    both."""
    _, nir = record
    unique_id = deposit(xds, nir)
    assert len(by_entry_uuid(xds, nir, entry_of(xds, nir, unique_id).get("id"), OTHER_PS)) == 1
    first, second = masked(xds, nir, unique_id)
    assert by_entry_uuid(xds, nir, first, OTHER_PS) == []
    assert by_entry_uuid(xds, nir, second, OTHER_PS) == []
    assert by_logical_id(xds, nir, first, OTHER_PS) == []
    assert len(by_logical_id(xds, nir, first, GP)) == 2


# -- PATCH makes the same versions ---------------------------------------------------------------


def test_a_patch_of_the_labels_is_a_new_version_with_its_own_entry_uuid(xds, record):
    _, nir = record
    unique_id = deposit(xds, nir)
    first = entry_of(xds, nir, unique_id).get("id")
    stored = document(xds, unique_id)
    token = xds.tokens.practitioner(GP)
    headers = auth(token, **{"Content-Type": "application/json-patch+json"})
    mask = [
        {
            "op": "add",
            "path": "/securityLabel/-",
            "value": {"coding": [{"system": A07, "code": "MASQUE_PS"}]},
        }
    ]
    response = xds.client.patch(
        f"/fhir/DocumentReference/{stored['id']}", json=mask, headers=headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    patched = response.get_json()
    second = next(i["value"] for i in patched["identifier"] if i["system"] == "urn:ietf:rfc:3986")
    assert second != first
    assert {"use": "old", "system": EARLIER_ENTRY_UUID_SYSTEM, "value": first} in patched[
        "identifier"
    ]
    versions = {e.get("id"): e for e in by_logical_id(xds, nir, first)}
    assert {k: (version_of(e), e.get("status")) for k, e in versions.items()} == {
        first: ("1", v.STATUS_DEPRECATED),
        second: ("2", v.STATUS_APPROVED),
    }
    # A change of status alone (archiving) keeps the entryUUID and the version.
    archive = [
        {
            "op": "add",
            "path": "/extension",
            "value": [
                {
                    "url": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
                    "pdsm-ext-is-archived",
                    "valueBoolean": True,
                }
            ],
        }
    ]
    response = xds.client.patch(
        f"/fhir/DocumentReference/{stored['id']}", json=archive, headers=headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    [latest] = by_entry_uuid(xds, nir, second)
    assert (version_of(latest), latest.get("status")) == ("2", v.STATUS_ARCHIVED)


def test_a_deposit_names_no_earlier_version(xds, record):
    """A deposit is version 1: an earlier version's entryUUID is the registry's to make."""
    _, nir = record
    unique_id = deposit(xds, nir)
    stored = document(xds, unique_id)
    token = xds.tokens.practitioner(GP)
    candidate = {k: v for k, v in stored.items() if k not in ("id", "meta")}
    candidate["identifier"] = [
        {"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        {"use": "old", "system": EARLIER_ENTRY_UUID_SYSTEM, "value": f"urn:uuid:{uuid.uuid4()}"},
    ]
    candidate["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4.57"}
    response = xds.client.post(
        "/fhir/DocumentReference",
        json=candidate,
        headers=auth(token, **{"Content-Type": "application/fhir+json"}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "version 1" in response.get_data(as_text=True)

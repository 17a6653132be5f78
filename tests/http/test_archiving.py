"""Archive and logical delete, on both faces, searchable (issue #20, deliverable 3).

PDSm 3.1.1: the PDSm_IsArchived extension and the `isArchived` search parameter; XDS
availabilityStatus urn:asip:ci-sis:2010:StatusType:Archived (st_maj.md's table). PDSm4DMP
TD3.3c: logical deletion is status entered-in-error, by the author only; PDSm: a deleted
entry is no longer returned by searches and answers as missing. Archiving is the author's
(TD3.3d), and an archived document stays readable: it is only set apart.
"""

from __future__ import annotations

import base64
import json

import pytest

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.metadata_world import IS_ARCHIVED, build_world
from tests.http.test_xds_endpoints import GP, OTHER_PS, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import adhoc
from tests.support.documents import sha1_base64
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
PDF = b"%PDF-1.4 report"
ARCHIVE = [
    {"op": "add", "path": "/extension", "value": [{"url": IS_ARCHIVED, "valueBoolean": True}]}
]
UNARCHIVE = [{"op": "remove", "path": "/extension/0"}]
DELETE = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


@pytest.fixture
def world(client, tokens):
    return build_world(client, tokens)


def ids(world, actor: str, query: str) -> set[str]:
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&{query}", headers=auth(world.token(actor))
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return {e["resource"]["id"] for e in response.get_json().get("entry", [])}


# -- archive -----------------------------------------------------------------------------------


def test_the_isarchived_search_parameter_finds_archived_documents(world):
    archived, active = world.deposit("N"), world.deposit("N")
    assert world.patch("author", archived["id"], ARCHIVE).status_code == 200
    assert ids(world, "other", "isArchived=true") == {archived["id"]}
    assert ids(world, "other", "isArchived:not=true") == {active["id"]}
    assert ids(world, "patient", "isArchived=true") == {archived["id"]}
    # Archived is set apart, not hidden: still read by whoever may read it.
    read = world.client.get(
        f"/fhir/DocumentReference/{archived['id']}", headers=auth(world.token("other"))
    )
    assert read.status_code == 200
    # Unarchived: no longer found as archived.
    assert world.patch("author", archived["id"], UNARCHIVE).status_code == 200
    assert ids(world, "other", "isArchived=true") == set()


def test_only_the_author_archives_or_unarchives(world):
    document = world.deposit("N")
    assert world.patch("other", document["id"], ARCHIVE).status_code == 403
    assert world.patch("patient", document["id"], ARCHIVE).status_code == 403
    assert world.patch("author", document["id"], ARCHIVE).status_code == 200
    assert world.patch("other", document["id"], UNARCHIVE).status_code == 403
    assert world.patch("patient", document["id"], UNARCHIVE).status_code == 403


def test_is_archived_holds_a_boolean(world):
    document = world.deposit("N")
    bad = [
        {"op": "add", "path": "/extension", "value": [{"url": IS_ARCHIVED, "valueString": "yes"}]}
    ]
    response = world.patch("author", document["id"], bad)
    assert response.status_code == 422
    assert IS_ARCHIVED in json.dumps(response.get_json())


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def find(xds: Xds, nir: str, status: str, idnat: str = GP) -> dict[str, str]:
    """FindDocuments by availability status: uniqueId -> the answered status."""
    query = adhoc(
        FIND_DOCUMENTS,
        [
            ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", f"('{status}')"),
        ],
    )
    response = xds.soap("/xds/registry", v.ACTION_ITI18, query, xds.security(idnat, nir))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    found = {}
    for entry in root.iter(f"{RIM}ExtrinsicObject"):
        for external in entry.findall(f"{RIM}ExternalIdentifier"):
            if external.get("identificationScheme") == v.DE_UNIQUE_ID:
                found[external.get("value")] = entry.get("status")
    return found


def test_archived_by_patch_is_archived_in_xds(xds):
    """The FHIR face archives, the XDS face answers Archived: FindDocuments Archived finds
    it (with availabilityStatus Archived), FindDocuments Approved no longer does."""
    patient_id, nir = xds.patient(58)
    request = build_iti41(nir=nir, security=xds.security(GP, nir), documents=[b"<a/>", b"<b/>"])
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    archived, active = request.document_unique_ids.values()
    response = xds.client.patch(
        f"/fhir/DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{archived}",
        data=json.dumps(ARCHIVE),
        headers=auth(
            xds.tokens.practitioner(GP), **{"Content-Type": "application/json-patch+json"}
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert find(xds, nir, v.STATUS_ARCHIVED) == {archived: v.STATUS_ARCHIVED}
    assert find(xds, nir, v.STATUS_APPROVED) == {active: v.STATUS_APPROVED}


# -- logical delete ----------------------------------------------------------------------------


def with_binary(world) -> tuple[dict, str]:
    """A document whose content is a Binary deposited by the author."""
    binary = world.post(
        world.token("author"),
        {
            "resourceType": "Binary",
            "contentType": "application/pdf",
            "data": base64.b64encode(PDF).decode(),
        },
    )
    assert binary.status_code == 201, binary.get_data(as_text=True)
    binary_id = binary.get_json()["id"]
    document = world.document("N")
    attachment = document["content"][0]["attachment"]
    del attachment["data"]  # the content is the stored Binary, not inline bytes
    attachment.update(
        url=f"Binary/{binary_id}",
        contentType="application/pdf",
        size=len(PDF),
        hash=sha1_base64(PDF),
    )
    created = world.post(world.token("author"), document)
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.get_json(), binary_id


def test_td33c_a_deleted_document_is_seen_by_its_author_only(world):
    document, binary_id = with_binary(world)
    other = world.client.get(f"/fhir/Binary/{binary_id}", headers=auth(world.token("other")))
    assert other.status_code == 200
    assert world.patch("author", document["id"], DELETE).status_code == 200
    for actor in ("other", "patient"):
        assert document["id"] not in ids(world, actor, "status=entered-in-error")
        assert document["id"] not in ids(world, actor, "")
        read = world.client.get(
            f"/fhir/DocumentReference/{document['id']}", headers=auth(world.token(actor))
        )
        assert read.status_code == 404, (actor, read.get_data(as_text=True))
        binary = world.client.get(f"/fhir/Binary/{binary_id}", headers=auth(world.token(actor)))
        assert binary.status_code == 404, actor
    assert ids(world, "author", "status=entered-in-error") == {document["id"]}


def test_a_deleted_document_changes_no_more_even_for_its_author(world):
    document = world.deposit("N")
    assert world.patch("author", document["id"], DELETE).status_code == 200
    again = world.patch("author", document["id"], ARCHIVE)
    assert again.status_code == 404
    back = [{"op": "replace", "path": "/status", "value": "current"}]
    assert world.patch("author", document["id"], back).status_code == 404
    assert world.stored(document["id"])["status"] == "entered-in-error"


def test_only_the_author_deletes(world):
    document = world.deposit("N")
    for actor in ("patient", "other"):
        assert world.patch(actor, document["id"], DELETE).status_code == 403
    assert world.stored(document["id"])["status"] == "current"


def test_a_patient_deletes_a_document_they_deposited_and_still_sees_it(world):
    own = world.document("N")
    own["author"] = [{"reference": f"Patient/{world.paul}"}]
    created = world.post(world.token("patient"), own)
    assert created.status_code == 201, created.get_data(as_text=True)
    document_id = created.get_json()["id"]
    assert world.patch("patient", document_id, DELETE).status_code == 200
    assert ids(world, "patient", "status=entered-in-error") == {document_id}
    assert document_id not in ids(world, "other", "")


def test_deleted_is_the_xds_deleted_status_and_hidden_from_other_professionals(xds):
    patient_id, nir = xds.patient(60)
    consent = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(OTHER_PS)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert consent.status_code == 201
    request = build_iti41(nir=nir, security=xds.security(GP, nir))
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    (unique_id,) = request.document_unique_ids.values()
    assert find(xds, nir, v.STATUS_APPROVED, OTHER_PS) == {unique_id: v.STATUS_APPROVED}
    response = xds.client.patch(
        f"/fhir/DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{unique_id}",
        data=json.dumps(DELETE),
        headers=auth(
            xds.tokens.practitioner(GP), **{"Content-Type": "application/json-patch+json"}
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert find(xds, nir, v.STATUS_DELETED) == {unique_id: v.STATUS_DELETED}
    assert find(xds, nir, v.STATUS_DELETED, OTHER_PS) == {}
    assert find(xds, nir, v.STATUS_APPROVED, OTHER_PS) == {}

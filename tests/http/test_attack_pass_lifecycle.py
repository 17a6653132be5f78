"""Attack pass on a document's lifecycle: replace, append, deprecate, delete (logical and
REST), archive, and what each actor sees after each step, through each door.

What got through, each reproduced over HTTP before its fix:

- R15: a system client's PUT of a document "changing its status only" was permitted whatever
  the statuses: a system deleted its own deposit (status `entered-in-error`, PDSm4DMP TD3.3c's
  logical deletion, a DELETE by another name: the document vanished from every reader but its
  author), deprecated one nothing replaced, and brought a superseded one back to `current`.
  It may now only deprecate: `current` to `superseded` (`policy.writes.system_write`).
- R18 / Binary ownership: a PUT of a REST-deleted DocumentReference's id (in a transaction:
  its Binary beside it) created the document again at that id, for anyone who may deposit
  (another professional, a system, the author), though clients never choose ids
  (`updateCreate` false); the deleted document's Binary, owned by `DocumentReference/<id>`
  and judged as that id's current version, was then read by whoever read the new document.
  A deleted id now answers a client's PUT as a free one does (404, `FhirService.update_in`).
- TD3.3c: a REST-deleted document's `_history` and `vread` stayed open to every professional
  and the patient who read its last version, where a logical deletion hides the document
  from all but its author. A deletion is now judged as the last version deleted logically
  (`Facts.content`): seen by its author only.

- R14: a message naming a document (an attachment, `about`...) takes the document's labels
  when sent, and only then: once the patient masked the document (MASQUE_PS), or its author
  labelled it INVISIBLE_PATIENT, the message, and the answers in its thread, were still
  served, naming it, to the recipient it was now hidden from. A document that gains a label
  now gives it to the messages naming it and their answers, in its transaction
  (`FhirService._label_messages_naming`), as it does to its Lists.

What held (kept below as controls): a replacement of another professional's document
(refused, the original stays current); a logically deleted original named by a visible
appendix, through the XDS face (GetAssociations, GetRelatedDocuments, GetDocuments by
entryUUID and by LogicalID, FindDocuments with each status, ITI-43) for an authorized
professional; a logically deleted document's id taken again (404); a system's deprecation
(current to superseded).
"""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_IDNAT_PS
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    FIND_DOCUMENTS,
    GET_ASSOCIATIONS,
    GET_DOCUMENTS,
    GET_RELATED_DOCUMENTS,
)
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.metadata_world import AUTHOR, OTHER, World, build_world, label, mask_as_patient
from tests.http.test_attack_pass_xds import deposit as xds_deposit
from tests.http.test_xds_endpoints import GP, OTHER_PS, Xds, registry_status
from tests.http.test_xds_stored_queries import adhoc
from tests.xds_builders import patient_cx

DELETE = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
SYSTEM_SCOPES = "system/DocumentReference.cu system/Binary.c system/List.c"


@pytest.fixture
def world(client, tokens) -> World:
    return build_world(client, tokens)


def system_token(world: World) -> str:
    return world.tokens.system("his", SYSTEM_SCOPES, "hospital")


def put(world: World, token: str, document: dict):
    return world.client.put(
        f"/fhir/DocumentReference/{document['id']}",
        data=json.dumps(document),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def status_of(world: World, document_id: str) -> str:
    return world.stored(document_id)["status"]


# -- R15: a system deprecates, nothing else ---------------------------------------------------


def system_deposit(world: World) -> tuple[str, dict]:
    token = system_token(world)
    response = world.post(token, world.document("N"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return token, response.get_json()


def with_status(document: dict, status: str) -> dict:
    body = copy.deepcopy(document)
    body["status"] = status
    body.pop("meta", None)
    return body


def test_r15_a_system_may_not_delete_its_deposit_by_a_status_put(world):
    """A system's PUT of its deposit with status entered-in-error (a logical deletion) is
    refused: R15 gives systems no DELETE; before, the document was gone for every reader."""
    token, document = system_deposit(world)
    response = put(world, token, with_status(document, "entered-in-error"))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert status_of(world, document["id"]) == "current"
    read = world.client.get(
        f"/fhir/DocumentReference/{document['id']}", headers=auth(world.token("other"))
    )
    assert read.status_code == 200


def test_r15_a_system_may_not_bring_a_superseded_document_back(world):
    """Deprecation is one way: a system's PUT of status current on a superseded document is
    refused (it made two current versions of one replacement chain)."""
    token, document = system_deposit(world)
    assert put(world, token, with_status(document, "superseded")).status_code == 200
    response = put(world, token, with_status(document, "current"))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert status_of(world, document["id"]) == "superseded"


def test_r15_control_a_system_deprecates_its_deposit(world):
    """What R15 grants still works: current to superseded, the status only."""
    token, document = system_deposit(world)
    response = put(world, token, with_status(document, "superseded"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert status_of(world, document["id"]) == "superseded"


# -- a deleted id is never taken again ---------------------------------------------------------


def again_at(world: World, token: str, document_id: str, author: str | None):
    """A transaction writing a new document at `document_id` (PUT) with its own Binary."""
    document = world.document("N")
    if author is not None:
        document["author"] = [
            {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": author}}
        ]
    attachment = document["content"][0]["attachment"]
    data = attachment.pop("data")
    attachment["url"] = f"urn:uuid:{uuid.uuid4()}"
    document["id"] = document_id
    document["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": document,
                "request": {"method": "PUT", "url": f"DocumentReference/{document_id}"},
            },
            {
                "fullUrl": attachment["url"],
                "resource": {
                    "resourceType": "Binary",
                    "contentType": attachment.get("contentType", "text/plain"),
                    "data": data,
                },
                "request": {"method": "POST", "url": "Binary"},
            },
        ],
    }
    return world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )


@pytest.mark.parametrize("deletion", ["REST DELETE", "entered-in-error"])
@pytest.mark.parametrize("writer", ["other", "author", "system"])
def test_r18_a_deleted_documents_id_is_not_taken_again(world, writer, deletion):
    """Clients never choose ids: a PUT of a deleted document's id answers 404 (or the
    writer's own refusal) and writes nothing; the deleted document's Binary stays unread.
    Before, after a REST DELETE the PUT created a document at that id, whose readers then
    read the deleted document's Binary (owned by that id)."""
    document = world.deposit("N")
    binary = document["content"][0]["attachment"]["url"]
    assert (
        world.client.get(f"/fhir/{binary}", headers=auth(world.token("other"))).status_code == 200
    )
    delete_as_author(world, document["id"], deletion)
    token = system_token(world) if writer == "system" else world.token(writer)
    response = again_at(world, token, document["id"], OTHER if writer == "other" else None)
    assert response.status_code in (403, 404, 422), response.get_data(as_text=True)[:500]
    if deletion == "REST DELETE":
        assert response.status_code == 404, response.get_data(as_text=True)[:500]
    for reader in ("other", "patient"):
        read = world.client.get(f"/fhir/{binary}", headers=auth(world.token(reader)))
        assert read.status_code == 404, (reader, read.get_data(as_text=True)[:300])


def delete_as_author(world, document_id: str, deletion: str) -> None:
    """The author deletes the document: a REST DELETE, or its logical deletion
    (PDSm4DMP TD3.3c, a PATCH of its status to entered-in-error)."""
    if deletion == "REST DELETE":
        deleted = world.client.delete(
            f"/fhir/DocumentReference/{document_id}", headers=auth(world.token("author"))
        )
        assert deleted.status_code == 204
    else:
        assert world.patch("author", document_id, DELETE).status_code == 200


# -- TD3.3c: a deletion is seen by its author only, REST DELETE or logical ----------------------


@pytest.mark.parametrize("deletion", ["REST DELETE", "entered-in-error"])
def test_td33c_a_deleted_documents_history_is_seen_by_its_author_only(world, deletion):
    """After its author deletes it, the document's vread and _history answer 404 to another
    authorized professional and to the patient, as its read does; its author still reads
    them. Before, a REST DELETE left every earlier version open to all its readers."""
    document = world.deposit("N")
    delete_as_author(world, document["id"], deletion)
    base = f"/fhir/DocumentReference/{document['id']}"
    for reader in ("other", "patient"):
        for url in (f"{base}/_history/1", f"{base}/_history"):
            response = world.client.get(url, headers=auth(world.token(reader)))
            assert response.status_code == 404, (reader, url, response.get_data(as_text=True))
            assert "report" not in response.get_data(as_text=True)
    for url in (f"{base}/_history/1", f"{base}/_history"):
        response = world.client.get(url, headers=auth(world.token("author")))
        assert response.status_code == 200, (url, response.get_data(as_text=True))


# -- R14: a label a document gains reaches the messages naming it ------------------------------


def _pract(idnat: str) -> dict:
    return {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}


def _send(world: World, actor: str, body: dict) -> str:
    response = world.client.post(
        "/fhir/Communication",
        data=json.dumps(body),
        headers=auth(world.token(actor), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def _messages_seen(world: World, actor: str) -> str:
    response = world.client.get(
        f"/fhir/Communication?subject=Patient/{world.paul}", headers=auth(world.token(actor))
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


@pytest.mark.parametrize("step", ["patient masks (MASQUE_PS)", "author adds INVISIBLE_PATIENT"])
def test_r14_a_message_naming_a_document_hidden_since_is_hidden_too(world, step):
    """The author sends the patient and another professional a message attaching a document;
    the other answers. Once the document is hidden from a party, neither the message nor the
    answer is served to that party (read or search), and nothing they are served names it."""
    document = world.deposit("N")
    paul = {"reference": f"Patient/{world.paul}"}
    first = _send(
        world,
        "author",
        {
            "resourceType": "Communication",
            "status": "completed",
            "subject": paul,
            "sender": _pract(AUTHOR),
            "recipient": [_pract(OTHER), paul],
            "payload": [
                {"contentString": "voir le compte rendu"},
                {"contentReference": {"reference": f"DocumentReference/{document['id']}"}},
            ],
        },
    )
    answer = _send(
        world,
        "other",
        {
            "resourceType": "Communication",
            "status": "completed",
            "subject": paul,
            "sender": _pract(OTHER),
            "recipient": [_pract(AUTHOR)],
            "inResponseTo": [{"reference": f"Communication/{first}"}],
            "payload": [{"contentString": "bien reçu"}],
        },
    )
    if step.startswith("patient"):
        mask_as_patient(world.client, world.token("patient"), document["id"])
        reader = "other"
    else:
        added = world.patch(
            "author",
            document["id"],
            [{"op": "add", "path": "/securityLabel/-", "value": label("INVISIBLE_PATIENT")}],
        )
        assert added.status_code == 200, added.get_data(as_text=True)
        reader = "patient"
    hidden = world.client.get(
        f"/fhir/DocumentReference/{document['id']}", headers=auth(world.token(reader))
    )
    assert hidden.status_code == 404  # the document is hidden from the reader now
    read = world.client.get(f"/fhir/Communication/{first}", headers=auth(world.token(reader)))
    assert read.status_code == 404, read.get_data(as_text=True)
    seen = _messages_seen(world, reader)
    assert document["id"] not in seen and first not in seen
    if reader == "other":
        assert answer not in seen, "the answer in the thread of the hidden message"
    if reader == "patient":
        # A label hiding it from the patient only: the professionals still have the thread.
        assert first in _messages_seen(world, "other") and answer in _messages_seen(world, "other")


# -- controls: what held ------------------------------------------------------------------------


def test_r14_control_another_professional_may_not_replace_the_authors_document(world):
    original = world.deposit("N")
    replacement = world.document("N")
    replacement["author"] = [
        {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": OTHER}}
    ]
    replacement["relatesTo"] = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{original['id']}"}}
    ]
    response = world.post(world.token("other"), replacement)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert status_of(world, original["id"]) == "current"


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def _entry(api: Xds, request) -> tuple[dict, str]:
    unique_id = request.document_unique_ids["Document01"]
    (found,) = api.runtime.service.find(
        INTERNAL, "DocumentReference", [("identifier", f"urn:ietf:rfc:3986|urn:oid:{unique_id}")]
    )
    document = found.json()
    entry_uuid = next(
        i["value"] for i in document["identifier"] if i["value"].startswith("urn:uuid:")
    )
    return document, entry_uuid


def test_td33c_control_a_deleted_original_is_named_by_no_xds_answer(xds):
    """An appendix names an original its author deleted since: to another authorized
    professional no ITI-18 query and no ITI-43 names the original; its author's do."""
    patient_id, nir = xds.patient(77)
    consent = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(OTHER_PS)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert consent.status_code == 201
    first, response = xds_deposit(xds, nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    original, original_uuid = _entry(xds, first)
    second, response = xds_deposit(xds, nir, relation=(v.ASSOC_APND, original_uuid))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    _, appendix_uuid = _entry(xds, second)
    deleted = xds.client.patch(
        f"/fhir/DocumentReference/{original['id']}",
        data=json.dumps(DELETE),
        headers=auth(
            xds.tokens.practitioner(GP), **{"Content-Type": "application/json-patch+json"}
        ),
    )
    assert deleted.status_code == 200
    unique_id = first.document_unique_ids["Document01"]
    every_status = ",".join(
        f"'{s}'"
        for s in (v.STATUS_APPROVED, v.STATUS_DEPRECATED, v.STATUS_DELETED, v.STATUS_ARCHIVED)
    )
    queries = [
        (GET_ASSOCIATIONS, [("$uuid", f"('{appendix_uuid}')")]),
        (
            GET_RELATED_DOCUMENTS,
            [
                ("$XDSDocumentEntryEntryUUID", f"'{appendix_uuid}'"),
                ("$AssociationTypes", f"('{v.ASSOC_APND}','{v.ASSOC_RPLC}')"),
            ],
        ),
        (GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", f"('{original_uuid}')")]),
        (
            GET_DOCUMENTS,
            [("$XDSDocumentEntryLogicalID", f"('{original_uuid}')"), ("$MetadataLevel", "2")],
        ),
        (
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
                ("$XDSDocumentEntryStatus", f"({every_status})"),
            ],
        ),
    ]
    for query_id, slots in queries:
        for idnat, names in ((OTHER_PS, False), (GP, True)):
            response = xds.soap(
                "/xds/registry", v.ACTION_ITI18, adhoc(query_id, slots), xds.security(idnat, nir)
            )
            assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
            text = response.get_data(as_text=True)
            assert (original_uuid in text) is names, (query_id, idnat)
            assert (unique_id in text) is names or query_id == GET_ASSOCIATIONS
    refused = xds.retrieve([unique_id], idnat=OTHER_PS, nir=nir)
    assert registry_status(refused)[1] == ["XDSDocumentUniqueIdError"]
    assert registry_status(xds.retrieve([unique_id], idnat=GP, nir=nir))[1] == []

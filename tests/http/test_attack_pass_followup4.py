"""Attack pass (follow-up 4) on the afternoon's access fixes: SubmissionSets judged through
their documents (R13, R14), Consent interpretation (R09-R12), a document's lifecycle (R15,
R18, TD3.3c). Each test sends a shape the fixes' own tests never sent.

What got through, each reproduced over HTTP before its fix:

- R13/R14: a SubmissionSet whose documents are one of a type the pharmacist may not read and
  one its author deleted logically (entered-in-error, read by its author only) was served to
  the pharmacist, empty but with its date, author and identifier, and counted by
  `List?patient=` and ITI-18 FindSubmissionSets: the List's judgement took the deleted
  document for a readable one. A logically deleted document is now no readable entry.
"""

# ruff: noqa: F811 - the fixtures `xds` and `record` are test_r13_submission_sets' world

from __future__ import annotations

import pytest

from tests.http.conftest import auth
from tests.http.metadata_world import World, build_world
from tests.http.test_r13_submission_sets import (
    DOCTOR,
    GP,
    PHARMACIST,
    SEEN_TYPE,
    assert_read_as_missing,
    deposit,
    document,
    find_submission_sets,
    lists,
    record,  # noqa: F401 - the same world's fixtures
    set_type,
    token,
    xds,  # noqa: F401
)

DELETE = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


def _delete_as_author(xds, document_id: str) -> None:
    """GP, the document's author, deletes it logically (PDSm4DMP TD3.3c) by a JSON Patch."""
    response = xds.client.patch(
        f"/fhir/DocumentReference/{document_id}",
        json=DELETE,
        headers=auth(
            xds.tokens.practitioner(GP), **{"Content-Type": "application/json-patch+json"}
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- R13/R14: a SubmissionSet's documents, a deleted one among them --------------------------


def test_r13_r14_submission_set_of_an_unreadable_and_a_deleted_document_is_hidden(xds, record):
    """One document of the type pharmacists may not read, the other of a type they read but
    deleted by its author: the pharmacist reads neither (each answers 404), and the
    SubmissionSet is hidden from them as a missing one, by read, search and ITI-18. Before,
    `List/{id}` was 200 (its entries left out) and both searches counted it."""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    request, list_id = deposit(xds, patient_id, nir, documents=[b"<typed/>", b"<deleted/>"])
    deleted_uid = request.document_unique_ids["Document02"]
    set_type(xds, deleted_uid, SEEN_TYPE)
    assert list_id in lists(xds, PHARMACIST, f"patient={patient_id}")[1], "the control"
    deleted_id = document(xds, deleted_uid)["id"]
    _delete_as_author(xds, deleted_id)
    read = xds.client.get(
        f"/fhir/DocumentReference/{deleted_id}", headers=auth(token(xds, PHARMACIST))
    )
    assert read.status_code == 404
    assert list_id not in lists(xds, PHARMACIST, f"patient={patient_id}")[1]
    assert find_submission_sets(xds, PHARMACIST, nir) == found_before
    assert_read_as_missing(xds, PHARMACIST, list_id)


def test_r14_submission_set_of_documents_all_deleted_by_their_author_is_hidden(xds, record):
    """A médecin who reads every type finds a SubmissionSet whose only document its author
    deleted as a missing one (the document reads 404 to them); its author still reads
    both."""
    patient_id, nir = record
    request, list_id = deposit(xds, patient_id, nir)
    document_id = document(xds, request.document_unique_ids["Document01"])["id"]
    assert list_id in lists(xds, DOCTOR, f"patient={patient_id}")[1], "the control"
    _delete_as_author(xds, document_id)
    assert list_id not in lists(xds, DOCTOR, f"patient={patient_id}")[1]
    assert_read_as_missing(xds, DOCTOR, list_id)
    gp = auth(xds.tokens.practitioner(GP))
    assert xds.client.get(f"/fhir/List/{list_id}", headers=gp).status_code == 200
    assert xds.client.get(f"/fhir/DocumentReference/{document_id}", headers=gp).status_code == 200


# -- R14/R07: a person's SubmissionSet of documents hidden from them for different reasons ---


@pytest.fixture
def world(client, tokens) -> World:
    """Paul (adult) and Léa (a minor, her parent a representative); AUTHOR and OTHER
    authorized on both records (`tests.http.metadata_world`)."""
    return build_world(client, tokens)


def _list_of(world: World, patient: str, documents: list[dict]) -> str:
    """AUTHOR's SubmissionSet (a REST List) naming `documents` of `patient`'s record."""
    body = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{patient}"},
        "entry": [{"item": {"reference": f"DocumentReference/{d['id']}"}} for d in documents],
    }
    response = world.post(world.token("author"), body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def _person_reads_list_as_missing(world: World, actor: str, patient: str, list_id: str) -> None:
    """`List/{id}` answers `actor` as an id naming nothing, `List?patient=` counts it not."""
    headers = auth(world.token(actor))
    read = world.client.get(f"/fhir/List/{list_id}", headers=headers)
    missing = world.client.get("/fhir/List/no-such-list", headers=headers)
    assert read.status_code == missing.status_code == 404, read.get_data(as_text=True)
    found = world.client.get(f"/fhir/List?patient={patient}&_total=accurate", headers=headers)
    assert found.status_code == 200, found.get_data(as_text=True)
    assert list_id not in {e["resource"]["id"] for e in found.get_json().get("entry", [])}


def _lists_seen(world: World, actor: str, patient: str) -> set[str]:
    found = world.client.get(f"/fhir/List?patient={patient}", headers=auth(world.token(actor)))
    assert found.status_code == 200, found.get_data(as_text=True)
    return {e["resource"]["id"] for e in found.get_json().get("entry", [])}


def test_r14_patients_submission_set_of_an_invisible_and_a_deleted_document_is_hidden(world):
    """An INVISIBLE_PATIENT document and one its author deleted: the patient reads neither,
    and the labels the List takes (those all its entries share, `access.list_labels`) are
    none. Before, the patient was served the SubmissionSet, empty, and `List?patient=`
    counted it: something was deposited, when and by whom, before the announcement."""
    invisible = world.deposit("N", "INVISIBLE_PATIENT")
    deleted = world.deposit("N")
    list_id = _list_of(world, world.paul, [invisible, deleted])
    assert list_id in _lists_seen(world, "patient", world.paul), "the control"
    assert world.patch("author", deleted["id"], DELETE).status_code == 200
    _person_reads_list_as_missing(world, "patient", world.paul, list_id)
    assert list_id in _lists_seen(world, "author", world.paul)


def test_r14_patients_submission_set_of_a_document_deleted_since_is_hidden(world):
    """A SubmissionSet whose only document its author deleted reads as missing to the
    patient and to another authorized professional, as the document does."""
    deleted = world.deposit("N")
    list_id = _list_of(world, world.paul, [deleted])
    assert world.patch("author", deleted["id"], DELETE).status_code == 200
    for actor in ("patient", "other"):
        _person_reads_list_as_missing(world, actor, world.paul, list_id)


def test_r07_representatives_submission_set_of_documents_hidden_from_them_is_hidden(world):
    """A minor's SubmissionSet of an INVISIBLE_REPRESENTANTS_LEGAUX document and one deleted:
    hidden from the representative (before: served empty), still read by the minor, who
    reads the first."""
    hidden = world.deposit("N", "INVISIBLE_REPRESENTANTS_LEGAUX", patient=world.lea)
    deleted = world.deposit("N", patient=world.lea)
    list_id = _list_of(world, world.lea, [hidden, deleted])
    assert world.patch("author", deleted["id"], DELETE).status_code == 200
    _person_reads_list_as_missing(world, "representative", world.lea, list_id)
    assert list_id in _lists_seen(world, "lea", world.lea)

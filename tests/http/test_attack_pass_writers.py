"""Attack pass: can someone who may WRITE learn or reach what they may not READ? (R15, R18)

Writers tried: a system client holding write scopes (R15: it deposits and deprecates
documents, it reads no document), a professional who may deposit for a patient but not read
the record (no authorization, R10) or a masked document (R14), a representative (R07). Doors:
conditional create, update, delete and patch, If-Match, PUT, PATCH, DELETE, transaction and
batch entries, ITI-65 and ITI-41 associations, error messages, Location and ETag.

What it found, and what these tests hold:

- A system client's PATCH of a document's status (`entered-in-error`, PDSm's logical
  deletion) was permitted for any document of an open record, masked ones included, named
  by its id alone: the policy let a system change a document's status (meant for the PUT
  that deprecates a replaced document, whose body the system must send whole), and the
  answer was the patched document, whole: its labels, type, class, author, title and the
  Binary it names. A system reads no document (R15); it now gets the refusal every change it
  may make of no document gets, before the id is looked at (`DmpPolicy.change_refusal`): the
  same 403 whatever the id names, and nothing changes.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import auth
from tests.http.test_change_door_probes import knock, stored
from tests.http.test_r18_matrix import UNKNOWN_ID, World, _build_world, doc_id

# What a status PATCH is, at every door a PATCH has (alone, by criteria, a Bundle entry).
PATCH_DOORS = ("PATCH", "PATCH ?_id", "transaction PATCH", "batch PATCH")


@pytest.fixture
def world(tmp_path):
    """test_r18_matrix's record, one per test: a door that changed the document (a logical
    deletion) would hide it from the doors tried after it."""
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def system_token(world: World) -> str:
    """A hospital's system client with the scopes of a deposit and a deprecation."""
    return world.tokens.system(
        "his", "system/DocumentReference.cu system/Binary.c system/List.c", "hospital"
    )


@pytest.mark.parametrize("door", PATCH_DOORS)
@pytest.mark.parametrize("key", ["a-visible", "a-masked"])
def test_r15_a_system_clients_patch_of_a_document_answers_as_for_a_missing_id(world, key, door):
    """R15: a system client reads no document and deprecates one only by a PUT of it whole.
    Its PATCH of a document's status (a logical deletion), by id, by criteria or in a
    Bundle, answers exactly as for an id that names nothing, and changes nothing."""
    token = system_token(world)
    target = doc_id(key)
    before = stored(world, "DocumentReference", target)
    answers = [
        knock(world, token, door, "DocumentReference", resource_id, {})
        for resource_id in (target, UNKNOWN_ID)
    ]
    assert answers[0] == answers[1], answers
    assert stored(world, "DocumentReference", target) == before, "the document changed"


def test_r15_a_system_clients_patch_does_not_answer_the_document(world):
    """The answer to a system's PATCH names nothing of the document: before, it was the
    patched document whole (labels, type, author, title, its Binary)."""
    token = system_token(world)
    target = doc_id("a-masked")
    document = world.service.read(INTERNAL, "DocumentReference", target).json()
    response = world.client.patch(
        f"/fhir/DocumentReference/{target}",
        data=json.dumps([{"op": "replace", "path": "/status", "value": "entered-in-error"}]),
        headers=auth(
            token,
            **{"Content-Type": "application/json-patch+json", "Prefer": "return=representation"},
        ),
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    for secret in (
        document["type"]["coding"][0]["code"],
        document["content"][0]["attachment"]["url"],
        "MASQUE_PS",
    ):
        assert secret not in text
    assert "ETag" not in response.headers and "Location" not in response.headers
    assert world.service.read(INTERNAL, "DocumentReference", target).json()["status"] == "current"

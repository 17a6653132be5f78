"""Every change door, tried on ids the requester may not read: is the id there? (R16, R18; #21)

A requester who may not read a resource must not learn that it exists by trying to change it.
An attack pass tried every change door (PUT, PUT with If-Match, DELETE, PATCH, conditional
PUT, DELETE and PATCH, and each as a transaction and a batch entry) on resources each kind of
requester may not read, against an id that names nothing:

| requester | resources tried |
|---|---|
| a practitioner the patient never authorized | A's Consent, M's parent (RelatedPerson), A's message, A's document, its Binary, A's List |
| a practitioner A authorized, the document masked (R14 MASQUE_PS) | the masked document, its Binary, B's Consent, M's parent, A's message |
| patient A, on another record | B's Consent and document, its Binary, M's parent and List; A's INVISIBLE_PATIENT document, its Binary |
| M's parent (R07), on another record | A's Consent, document, message and List; M's INVISIBLE_REPRESENTANTS_LEGAUX document, its Binary |
| a hospital's system client (R15) | A's Consent, message and List, M's parent; a DELETE of A's document |

What it found, and what these tests hold:

- A practitioner was told 403 for an existing Consent or RelatedPerson (types they never
  read) and 404 for a missing id (204 for a DELETE, 412 with an If-Match): an oracle of
  which Consents and representatives exist. A change the requester may make of no resource
  of a type is now refused before the id is looked at (`DmpPolicy.change_refusal`,
  `Gate.refuse_change`), the same refusal for any id. A practitioner's update of an existing
  Consent (their own permit added to it, R10) let them test guesses of a Consent they never
  read; they record their authorization as a new Consent only.
- A system client, who deposits and deprecates documents only (R15), was told 403 for the
  change of an existing List and the DELETE of an existing document, 404 or 204 for a
  missing id.
- A patient's (or parent's) refused change of a document of their own record hidden from
  them answered as for a missing id (404 or 204), but the refusal was traced unlabelled in
  their record, so their own trail told them the id was in their record. It now carries the
  document's labels: hidden from whom the document is hidden from, traced all the same (R16).

A PATCH of a type other than DocumentReference answers 405 at routing, before any id is
read: it names a type the server does not patch, reaches no record and is the same for any
id, so it is not an access refusal and is not traced (docs/access-rules.md).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.audit.messaging import MESSAGE_CATEGORY
from fhir_server.store.audit_log.record import event_patients
from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_log_doors import _refusals, _trail
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    GP,
    PARENT,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    STRANGER,
    UNKNOWN_ID,
    World,
    _build_world,
    _id,
    binary_id,
    doc_id,
    logged_events,
)

MESSAGE = _id("message-a")  # a message of A's record, from A's médecin traitant to A


def consent(letter: str) -> str:
    return _id(f"consent-{letter}")


def record_list(patient: str) -> str:
    return _id(f"list-{patient}")


@dataclass(frozen=True)
class Probe:
    """A requester and the resources of a type they may not read (or not change)."""

    token: str  # a key of `tokens`
    targets: tuple[tuple[str, str], ...]  # (type, id)


PROBES = {
    "practitioner-not-authorized": Probe(
        "stranger",
        (
            ("Consent", consent("a")),
            ("RelatedPerson", PARENT),
            ("Communication", MESSAGE),
            ("DocumentReference", doc_id("a-visible")),
            ("Binary", binary_id("a-visible")),
            ("List", record_list(PATIENT_A)),
        ),
    ),
    "practitioner-authorized-document-masked": Probe(
        "authorized",
        (
            ("DocumentReference", doc_id("a-masked")),
            ("Binary", binary_id("a-masked")),
            ("Consent", consent("b")),
            ("RelatedPerson", PARENT),
            ("Communication", MESSAGE),
        ),
    ),
    "patient-on-another-record": Probe(
        "patient-a",
        (
            ("Consent", consent("b")),
            ("DocumentReference", doc_id("b-doc")),
            ("Binary", binary_id("b-doc")),
            ("RelatedPerson", PARENT),
            ("List", record_list(PATIENT_M)),
            ("DocumentReference", doc_id("a-invisible")),
            ("Binary", binary_id("a-invisible")),
        ),
    ),
    "representative": Probe(
        "parent",
        (
            ("Consent", consent("a")),
            ("DocumentReference", doc_id("a-visible")),
            ("Communication", MESSAGE),
            ("List", record_list(PATIENT_A)),
            ("DocumentReference", doc_id("m-invisible-rl")),
            ("Binary", binary_id("m-invisible-rl")),
        ),
    ),
    "system-client": Probe(
        "system",
        (
            ("Consent", consent("a")),
            ("Communication", MESSAGE),
            ("List", record_list(PATIENT_A)),
            ("RelatedPerson", PARENT),
        ),
    ),
}
CASES = [
    pytest.param(name, resource_type, resource_id, id=f"{name}-{resource_type}-{resource_id[-4:]}")
    for name, probe in PROBES.items()
    for resource_type, resource_id in probe.targets
]

JSON_PATCH = json.dumps([{"op": "replace", "path": "/status", "value": "entered-in-error"}])
REST_DOORS = (
    "PUT",
    "PUT If-Match",
    "DELETE",
    "DELETE If-Match",
    "PATCH",
    "PUT ?_id",
    "DELETE ?_id",
    "PATCH ?_id",
)
# A Bundle entry has each door but the conditional PATCH.
ENTRY_DOORS = tuple(door for door in REST_DOORS if door != "PATCH ?_id")
DOORS = [*REST_DOORS] + [
    f"{kind} {door}" for kind in ("transaction", "batch") for door in ENTRY_DOORS
]


@pytest.fixture(scope="module")
def world(tmp_path_factory, http_engine):
    """One seeded record (test_r18_matrix's), and a message of A's record: the doors must
    change nothing, which each test checks."""
    app, built = _build_world(tmp_path_factory.mktemp("probes") / "var")
    message = {
        "resourceType": "Communication",
        "id": MESSAGE,
        "status": "completed",
        "category": [MESSAGE_CATEGORY],
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "sender": {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}},
        "recipient": [{"reference": f"Patient/{PATIENT_A}"}],
        "payload": [{"contentString": "Bonjour"}],
    }
    built.service.update(INTERNAL, "Communication", MESSAGE, message)
    yield built
    app.extensions["fhir"].store.close()


def tokens(world: World) -> dict[str, str]:
    return {
        "stranger": world.tokens.practitioner(STRANGER),
        "authorized": world.tokens.practitioner(AUTHORIZED),
        "patient-a": world.tokens.patient(PATIENT_A),
        "parent": parent_token(world),
        "system": world.tokens.system("his", organization_type="hospital"),
    }


def stored(world: World, resource_type: str, resource_id: str):
    """The current version as the server itself reads it (version, deletion, body)."""
    current = world.service.store.read(resource_type, resource_id)
    return None if current is None else (current.version, current.deleted, current.body)


def _entry(door: str, resource_type: str, resource_id: str, body: dict) -> dict:
    """A Bundle entry asking what `door` asks alone."""
    if door.startswith("PUT"):
        url = (
            f"{resource_type}?_id={resource_id}"
            if "?" in door
            else f"{resource_type}/{resource_id}"
        )
        request = {"method": "PUT", "url": url}
        if "If-Match" in door:
            request["ifMatch"] = 'W/"1"'
        return {"request": request, "resource": body}
    if door.startswith("DELETE"):
        url = (
            f"{resource_type}?_id={resource_id}"
            if "?" in door
            else f"{resource_type}/{resource_id}"
        )
        request = {"method": "DELETE", "url": url}
        if "If-Match" in door:
            request["ifMatch"] = 'W/"1"'
        return {"request": request}
    patch = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(JSON_PATCH.encode()).decode(),
    }
    return {
        "request": {"method": "PATCH", "url": f"{resource_type}/{resource_id}"},
        "resource": patch,
    }


def knock(world: World, token: str, door: str, resource_type: str, resource_id: str, body: dict):
    """Try `door` on `resource_type/resource_id` with `body` (the resource as stored, or a
    resource of that type for a missing id): (status, issue code, diagnostics, ETag,
    Location), the id spelled `ID` wherever it appears, so that two ids compare."""
    client = world.client
    put = {**body, "id": resource_id}
    headers = {"Content-Type": FHIR_JSON}
    first, _, rest = door.partition(" ")
    kind, alone = (first, rest) if first in ("transaction", "batch") else ("", door)
    if kind:
        bundle = {"resourceType": "Bundle", "type": kind}
        bundle["entry"] = [_entry(alone, resource_type, resource_id, put)]
        response = client.post("/fhir", data=json.dumps(bundle), headers=auth(token, **headers))
        if kind == "batch":
            assert response.status_code == 200, response.get_data(as_text=True)
            answer = response.get_json()["entry"][0]["response"]
            issue = ((answer.get("outcome") or {}).get("issue") or [{}])[0]
            found = (
                answer["status"],
                issue.get("code"),
                issue.get("diagnostics"),
                answer.get("etag"),
                answer.get("location"),
            )
            return tuple(str(x).replace(resource_id, "ID") if x else x for x in found)
    else:
        url = f"/fhir/{resource_type}/{resource_id}"
        conditional = f"/fhir/{resource_type}?_id={resource_id}"
        match alone:
            case "PUT":
                response = client.put(url, data=json.dumps(put), headers=auth(token, **headers))
            case "PUT If-Match":
                response = client.put(
                    url,
                    data=json.dumps(put),
                    headers=auth(token, **headers, **{"If-Match": 'W/"1"'}),
                )
            case "DELETE":
                response = client.delete(url, headers=auth(token))
            case "DELETE If-Match":
                response = client.delete(url, headers=auth(token, **{"If-Match": 'W/"1"'}))
            case "PATCH" | "PATCH ?_id":
                response = client.patch(
                    conditional if "?" in alone else url,
                    data=JSON_PATCH,
                    headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
                )
            case "PUT ?_id":
                without_id = {k: v for k, v in body.items() if k != "id"}
                response = client.put(
                    conditional, data=json.dumps(without_id), headers=auth(token, **headers)
                )
            case "DELETE ?_id":
                response = client.delete(conditional, headers=auth(token))
    outcome = response.get_json(silent=True) or {}
    issue = (
        (outcome.get("issue") or [{}])[0]
        if outcome.get("resourceType") == "OperationOutcome"
        else {}
    )
    found = (
        response.status_code,
        issue.get("code"),
        issue.get("diagnostics"),
        response.headers.get("ETag"),
        response.headers.get("Location"),
    )
    return tuple(str(x).replace(resource_id, "ID") if isinstance(x, str) else x for x in found)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(("probe", "resource_type", "resource_id"), CASES)
def test_r18_a_change_of_an_id_the_requester_may_not_read_answers_as_for_a_missing_id(
    world, probe, resource_type, resource_id, door
):
    """R18 "Nothing leaks": the change of an existing resource the requester may not read
    (or may not change, whatever it is) answers exactly as the change of an id that names
    nothing: same status, issue code, diagnostics (ids aside), ETag and Location. Nothing
    changes."""
    token = tokens(world)[PROBES[probe].token]
    before = stored(world, resource_type, resource_id)
    assert before is not None and not before[1], "the probe's target is not in the record"
    body = json.loads(before[2])
    existing = knock(world, token, door, resource_type, resource_id, body)
    missing = knock(world, token, door, resource_type, UNKNOWN_ID, body)
    assert existing == missing, f"{door} {resource_type}: existing {existing}, missing {missing}"
    assert stored(world, resource_type, resource_id) == before, "the resource changed"
    assert stored(world, resource_type, UNKNOWN_ID) is None, "the missing id was created"


@pytest.mark.parametrize("door", [d for d in DOORS if "DELETE" in d])
def test_r18_a_system_clients_delete_of_a_document_answers_as_for_a_missing_id(world, door):
    """R15: a system client deposits documents and deprecates them (a PUT changing the status
    only), never deletes one: the DELETE of an existing document answers as for a missing
    id (R18), and deletes nothing."""
    token = tokens(world)["system"]
    target = doc_id("a-visible")
    before = stored(world, "DocumentReference", target)
    answers = [
        knock(world, token, door, "DocumentReference", resource_id, {})
        for resource_id in (target, UNKNOWN_ID)
    ]
    assert answers[0] == answers[1], answers
    assert stored(world, "DocumentReference", target) == before


# -- R16: traced, naming nothing hidden ----------------------------------------------------------


@pytest.mark.parametrize(
    ("token_key", "resource_type", "resource_id", "patient"),
    [
        ("stranger", "Consent", consent("a"), PATIENT_A),
        ("authorized", "RelatedPerson", PARENT, PATIENT_M),
        ("patient-a", "Consent", consent("b"), PATIENT_B),
        ("parent", "Communication", MESSAGE, PATIENT_A),
    ],
)
def test_r16_a_refused_change_is_traced_in_the_trail_of_the_record_it_concerns(
    world, token_key, resource_type, resource_id, patient
):
    """R16 "every refusal concerning a patient's data" is traced: the DELETE and PUT of an
    existing resource of another record, refused before the id is judged (so that the answer
    is a missing id's), are AuthZ-Consent failures in that record's trail, naming the
    interaction and the type."""
    token = tokens(world)[token_key]
    body = json.loads(stored(world, resource_type, resource_id)[2])
    for door in ("DELETE", "PUT"):
        knock(world, token, door, resource_type, resource_id, body)
    owner = world.tokens.patient(patient)
    _, trail = _trail(world, owner, "/fhir/AuditEvent?outcome=8&_count=200")
    seen = {(r["interaction"], r["resource-type"]) for r in _refusals(trail, "")}
    for interaction in ("delete", "update"):
        assert (interaction, resource_type) in seen, f"the {interaction} is not in the trail"


@pytest.mark.parametrize(
    ("token_key", "patient", "hidden"),
    [("patient-a", PATIENT_A, "a-invisible"), ("parent", PATIENT_M, "m-invisible-rl")],
)
def test_r18_r16_a_refused_change_of_a_hidden_document_is_traced_hidden_like_it(
    world, token_key, patient, hidden
):
    """A patient (or a parent) tries to change a document of the record hidden from them
    (INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX) and an id naming nothing: the
    answers are the same, and so must be their trail afterwards; the refusal on the hidden
    document was traced unlabelled, telling them the id is in their record. It is traced
    all the same, with the document's label (R16, R14, R07)."""
    token = tokens(world)[token_key]
    url = f"/fhir/AuditEvent?patient={patient}&outcome=8&_count=200"
    _, before = _trail(world, token, url)
    body = json.loads(stored(world, "DocumentReference", doc_id(hidden))[2])
    for door in ("DELETE", "PUT", "PATCH"):
        for target in (doc_id(hidden), UNKNOWN_ID):
            knock(world, token, door, "DocumentReference", target, body)
    _, after = _trail(world, token, url)
    assert _refusals(after, "") == _refusals(before, ""), "the requester's trail tells"
    label = "INVISIBLE_PATIENT" if token_key == "patient-a" else "INVISIBLE_REPRESENTANTS_LEGAUX"
    traced = [
        event
        for event in logged_events(world)
        if patient in event_patients(event)
        and label in json.dumps((event.get("meta") or {}).get("security"))
    ]
    refused = {(r["interaction"], r["resource-type"]) for r in _refusals(traced, "")}
    for interaction in ("delete", "update"):
        assert (interaction, "DocumentReference") in refused, f"the {interaction} is not traced"


def test_a_patch_of_a_type_never_patched_answers_405_for_any_id_and_is_not_traced(world):
    """PATCH serves DocumentReference metadata updates only (PDSm st_maj.md): another type
    answers 405 at routing, before any id is read, the same for an existing Consent and a
    missing id. It reaches no record, so it is no refusal of R16's, and is not traced."""
    token = tokens(world)["stranger"]
    before = len(logged_events(world))
    answers = [
        knock(world, token, "PATCH", "Consent", target, {}) for target in (consent("a"), UNKNOWN_ID)
    ]
    assert answers[0] == answers[1]
    assert answers[0][:2] == (405, "not-supported")
    assert len(logged_events(world)) == before

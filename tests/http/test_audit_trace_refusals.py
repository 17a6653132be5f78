"""The trace of the day's refusals (R16 within R18).

R16: every access to a patient's record, granted or refused, is traced in an AuditEvent the
patient sees; R18: what is hidden from someone shows in their trail no more than in their
answers. Today's passes added refusals (412 for If-Match, 409 for an INS another Patient
holds, 404-as-unknown for a Patient outside a token's scopes); each is checked here for the
trace it leaves in the audit log (`logged_events`, as the server reads it) and in the
patient's own trail (`trace`, as the patient reads it).

Found: a professional's change (PUT, DELETE) of a document hidden from them (a record they
may not read, a document the patient masked) was refused without a trace when it carried an
If-Match: the 412 (answered as for a missing id, R18) was raised before the refusal was
audited, where the same change without If-Match leaves the refusal event its read would
(`Gate.refuse_hidden`). A stranger's attempts on a record were thus untraced. Likewise a
deposit replacing or transforming a document hidden from its writer (the patient's masked
document, by an authorized professional not its author): answered as for an unknown
document (R18, rightly), traced nowhere; now traced as that change of it.

Held (tested): the event of such a refusal is hidden from whom the document is hidden
(the patient's trail of an INVISIBLE_PATIENT document names neither it nor the refusal's
document); the 412 answers a hidden and a missing id alike; a Patient write refused for an
INS another Patient holds (409) names neither Patient in the other's trail; a read of a
Patient outside a patient/ scope (404-as-unknown) is traced in that patient's trail as a
refusal naming no resource but the Patient.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_trace_hides import trace
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    PATIENT_A,
    PATIENT_B,
    STRANGER,
    UNKNOWN_ID,
    World,
    _build_world,
    doc_id,
    logged_events,
)
from tests.support.documents import dmp_document, transaction

SECURITY_ALERT = "110113"


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def send(world: World, token: str, method: str, path: str, body=None, **headers: str):
    headers = auth(token, **{"Content-Type": FHIR_JSON}, **headers)
    data = json.dumps(body) if body is not None else None
    return world.client.open(f"/fhir/{path}", method=method, data=data, headers=headers)


def new_events(world: World, request) -> tuple[object, list[dict]]:
    """The response to `request()` and the events it appended to the audit log."""
    before = len(logged_events(world))
    response = request()
    return response, logged_events(world)[before:]


def refusals_of(events: list[dict], patient_id: str) -> list[dict]:
    """The refusal events (security alerts) naming `patient_id`'s Patient."""
    return [
        event
        for event in events
        if event.get("type", {}).get("code") == SECURITY_ALERT
        and any(
            e.get("what", {}).get("reference") == f"Patient/{patient_id}"
            for e in event.get("entity", [])
        )
    ]


def _change(world: World, token: str, method: str, key: str, if_match: str | None):
    headers = {"If-Match": if_match} if if_match is not None else {}
    path = f"DocumentReference/{doc_id(key)}"
    if method == "DELETE":
        return send(world, token, "DELETE", path, **headers)
    body = world.service.read(INTERNAL, "DocumentReference", doc_id(key)).json()
    body.pop("meta", None)
    return send(world, token, "PUT", path, body, **headers)


# -- R16: a refused change carrying If-Match is traced as one without ---------------------------


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
@pytest.mark.parametrize(
    "who, key",
    [
        ("stranger", "a-visible"),  # no authorization on A's record (R10)
        ("authorized", "a-masked"),  # MASQUE_PS: hidden from every non-author (R14)
    ],
)
def test_r16_a_change_of_a_hidden_document_with_if_match_is_traced(world, method, who, key):
    """R16: a professional's change of a document hidden from them, with an If-Match naming
    its current version, answers 412 (as for a missing id, R18) and leaves the refusal
    event the same change without If-Match leaves, in the patient's record. It left none:
    an If-Match made a refused attempt on a record untraced."""
    token = world.tokens.practitioner(STRANGER if who == "stranger" else AUTHORIZED)
    plain, plain_events = new_events(world, lambda: _change(world, token, method, key, None))
    assert len(refusals_of(plain_events, PATIENT_A)) == 1, plain.get_data(as_text=True)
    version = world.service.read(INTERNAL, "DocumentReference", doc_id(key)).version
    response, events = new_events(
        world, lambda: _change(world, token, method, key, f'W/"{version}"')
    )
    assert response.status_code == 412, response.get_data(as_text=True)
    assert len(refusals_of(events, PATIENT_A)) == 1, events


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
def test_r18_the_trace_of_an_if_match_on_a_document_hidden_from_the_patient_is_hidden(
    world, method
):
    """R18: the refusal traced for a stranger's change of an INVISIBLE_PATIENT document
    carries its label: the patient's trail shows neither the document nor that refusal,
    and the 412 reads as for a missing id."""
    stranger = world.tokens.practitioner(STRANGER)
    patient = world.tokens.patient(PATIENT_A)
    before_text, before_events = trace(world, patient, PATIENT_A)
    version = world.service.read(INTERNAL, "DocumentReference", doc_id("a-invisible")).version
    response, events = new_events(
        world, lambda: _change(world, stranger, method, "a-invisible", f'W/"{version}"')
    )
    assert response.status_code == 412, response.get_data(as_text=True)
    assert len(refusals_of(events, PATIENT_A)) == 1, events
    text, after_events = trace(world, patient, PATIENT_A)
    assert doc_id("a-invisible") not in text
    assert len(after_events) == len(before_events) + 1  # the patient's own search, only
    missing = send(
        world,
        stranger,
        "DELETE",
        f"DocumentReference/{UNKNOWN_ID}",
        **{"If-Match": f'W/"{version}"'},
    )
    issue = response.get_json()["issue"][0]
    assert missing.status_code == 412
    assert (
        issue["diagnostics"].replace(doc_id("a-invisible"), UNKNOWN_ID)
        == (missing.get_json()["issue"][0]["diagnostics"])
    )


# -- what held -----------------------------------------------------------------------------------


def test_r18_an_ins_conflict_names_neither_patient_in_the_others_trail(world):
    """R03, R18: the identity feed giving B's Patient A's INS is refused (409); neither
    patient's trail names the other's Patient."""
    admin = world.tokens.system("admin", "system/Patient.crus system/RelatedPerson.cru", "admin")
    a = world.service.read(INTERNAL, "Patient", PATIENT_A).json()
    b = world.service.read(INTERNAL, "Patient", PATIENT_B).json()
    b.pop("meta")
    moved = {**b, "identifier": a["identifier"]}
    response = send(world, admin, "PUT", f"Patient/{PATIENT_B}", moved)
    assert response.status_code == 409, response.get_data(as_text=True)
    a_text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    b_text, _ = trace(world, world.tokens.patient(PATIENT_B), PATIENT_B)
    assert PATIENT_B not in a_text
    assert PATIENT_A not in b_text


def test_r16_a_patient_outside_a_patient_scope_is_refused_in_its_own_trail(world):
    """R02, R16, R18: a professional holding a patient/ scope on B who reads A's Patient is
    answered as for an unknown id (404); the refusal is traced in A's trail (R16), naming
    no resource of A but the Patient, and an unknown id leaves no event in any record."""
    token = world.tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="patient/*.rs",
        patient=PATIENT_B,
        extensions={
            "ihe_iua": {
                "national_provider_identifier": AUTHORIZED,
                "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
            }
        },
    )
    known, known_events = new_events(world, lambda: world.get(token, f"/fhir/Patient/{PATIENT_A}"))
    unknown, unknown_events = new_events(
        world, lambda: world.get(token, f"/fhir/Patient/{UNKNOWN_ID}")
    )
    assert known.status_code == unknown.status_code == 404
    assert len(refusals_of(known_events, PATIENT_A)) == 1
    assert unknown_events == []
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert PATIENT_B not in text


# -- R16: a relation naming a document hidden from its writer -----------------------------------


@pytest.mark.parametrize("door", ["transaction", "ITI-65"])
@pytest.mark.parametrize("code", ["replaces", "transforms"])
def test_r16_a_relation_to_a_document_hidden_from_its_writer_is_traced(world, code, door):
    """R16, R18: an authorized professional's deposit replacing (or transforming) the
    document the patient masked, of which they are not the author, is answered as for an
    unknown document (422 not-found, R18) and now traced as that change of it, in the
    patient's record; it left no trace, where reading the same document leaves one. A
    relation to an unknown id leaves none."""
    token = world.tokens.practitioner(AUTHORIZED)

    def deposit(target: str):
        document = dmp_document(PATIENT_A, author=AUTHORIZED, class_code="31", label=None)
        reference = {"reference": f"DocumentReference/{target}"}
        document["relatesTo"] = [{"code": code, "target": reference}]
        bundle = transaction(PATIENT_A, document, with_submission_set=door == "ITI-65")
        return send(world, token, "POST", "", bundle)

    hidden, hidden_events = new_events(world, lambda: deposit(doc_id("a-masked")))
    unknown, unknown_events = new_events(world, lambda: deposit(UNKNOWN_ID))
    assert hidden.status_code == unknown.status_code == 422, hidden.get_data(as_text=True)
    assert (
        hidden.get_json()["issue"][0]["diagnostics"]
        == (unknown.get_json()["issue"][0]["diagnostics"])
    )
    assert len(refusals_of(hidden_events, PATIENT_A)) == 1, hidden_events
    assert unknown_events == []

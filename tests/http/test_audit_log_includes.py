"""`_revinclude` of AuditEvents over HTTP, through the audit log, under the access rules of
any AuditEvent search (issue #21 deliver 3; FHIR R4 search §3.1.1.5,
http://hl7.org/fhir/R4/search.html#revinclude).

Since AuditEvents live in a log of their own, `_revinclude=AuditEvent:<param>` and
`_revinclude=*` answered 400 on every search. They answer 200 again, and an included event
is one the requester's own AuditEvent search would show:

- R16: a patient (and a representative, within R07) sees the events about their record;
  professionals never read AuditEvents (`access.policy`: read/search table), so their
  includes bring none, while the documents they may see are served as before;
- R18 / R14 / R07: an event hidden by a label (INVISIBLE_PATIENT from the patient,
  INVISIBLE_REPRESENTANTS_LEGAUX from the parent) stays hidden when included.
"""

from __future__ import annotations

import pytest

from fhir_server.store.audit_log.record import event_patients
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    GP,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    World,
    _build_world,
    doc_id,
    logged_events,
)


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    # Events in every record: A's médecin traitant reads A's documents (one hidden from A),
    # a practitioner authorized by M reads M's documents (one hidden from M's parents), B
    # reads their own record.
    for key in ("a-visible", "a-invisible"):
        built.get(built.tokens.practitioner(GP), f"/fhir/DocumentReference/{doc_id(key)}")
    for key in ("m-visible", "m-invisible-rl"):
        response = built.get(
            built.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference/{doc_id(key)}"
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    built.get(built.tokens.patient(PATIENT_B), f"/fhir/DocumentReference?patient={PATIENT_B}")
    yield built
    app.extensions["fhir"].store.close()


def _labels(event: dict) -> set[str]:
    return {c.get("code") for c in (event.get("meta") or {}).get("security") or []}


def _names(event: dict, reference: str) -> bool:
    """Whether an entity of `event` is `reference`, any version of it (BALP names the
    version read: `Type/id/_history/n`)."""
    named = [(e.get("what") or {}).get("reference") or "" for e in event["entity"]]
    return any(n == reference or n.startswith(f"{reference}/_history/") for n in named)


def _answer(world: World, token: str, url: str) -> tuple[list[dict], set[str], str]:
    """(matched resources, ids of the included AuditEvents, raw text) of a 200 search."""
    response = world.get(token, url)
    assert response.status_code == 200, response.get_data(as_text=True)
    entries = response.get_json().get("entry", [])
    matched = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
    events = {
        e["resource"]["id"]
        for e in entries
        if e["search"]["mode"] == "include" and e["resource"]["resourceType"] == "AuditEvent"
    }
    return matched, events, response.get_data(as_text=True)


def _trail(world: World, patient: str, hidden_label: str) -> tuple[set[str], set[str]]:
    """(the events about `patient`'s record its viewer sees, those hidden by the label)."""
    about = [
        event
        for event in logged_events(world)
        if patient in event_patients(event) and _names(event, f"Patient/{patient}")
    ]
    shown = {event["id"] for event in about if hidden_label not in _labels(event)}
    hidden = {event["id"] for event in about if hidden_label in _labels(event)}
    assert shown and hidden, "the world lacks a shown or a hidden event: the test is vacuous"
    return shown, hidden


# -- a professional ----------------------------------------------------------------------------


@pytest.mark.parametrize("revinclude", ["AuditEvent:entity", "*"])
def test_r16_r18_a_practitioners_revinclude_of_events_answers_200_and_no_event(world, revinclude):
    """§3.1.1.5 `_revinclude` on the documents of A by A's médecin traitant: 200 with the
    documents he sees (it answered 400); no AuditEvent, though his own reads of these
    documents are in the log: R16 shows AuditEvents to the patient and representatives
    only, and none of another record (B) is named."""
    about_a = [
        e for e in logged_events(world) if _names(e, f"DocumentReference/{doc_id('a-visible')}")
    ]
    assert about_a, "no event names A's document: the test is vacuous"
    matched, events, text = _answer(
        world,
        world.tokens.practitioner(GP),
        f"/fhir/DocumentReference?patient={PATIENT_A}&_revinclude={revinclude}",
    )
    assert doc_id("a-visible") in {resource["id"] for resource in matched}
    assert events == set()
    assert PATIENT_B not in text


# -- the patient and the parent ----------------------------------------------------------------


@pytest.mark.parametrize("revinclude", ["AuditEvent:entity", "*"])
def test_r16_r18_a_patients_revinclude_of_events_is_their_own_trail(world, revinclude):
    """§3.1.1.5 `Patient?_id=A&_revinclude=...` by A: the events about A's record (R16),
    without the ones labelled INVISIBLE_PATIENT (R14, R18: the GP's read of A's hidden
    document), and nothing of B's record."""
    shown, hidden = _trail(world, PATIENT_A, "INVISIBLE_PATIENT")
    _, events, text = _answer(
        world,
        world.tokens.patient(PATIENT_A),
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude={revinclude}",
    )
    assert events == shown
    assert not events & hidden
    assert PATIENT_B not in text and doc_id("a-invisible") not in text


def test_r16_r18_a_patients_revinclude_on_their_documents_names_none_of_anothers(world):
    """§3.1.1.5 `_revinclude=AuditEvent:entity` on A's documents by A: the events naming
    the documents A sees, and not the one naming the document hidden from A (R18)."""
    before = logged_events(world)  # the search's own event comes after its answer
    matched, events, text = _answer(
        world,
        world.tokens.patient(PATIENT_A),
        f"/fhir/DocumentReference?patient={PATIENT_A}&_revinclude=AuditEvent:entity",
    )
    documents = {f"DocumentReference/{resource['id']}" for resource in matched}
    expected = {
        event["id"]
        for event in before
        if any(_names(event, document) for document in documents)
        and "INVISIBLE_PATIENT" not in _labels(event)
    }
    assert expected, "no event names A's visible documents: the test is vacuous"
    assert events == expected
    assert doc_id("a-invisible") not in text and PATIENT_B not in text


def test_r07_r18_a_parents_revinclude_of_events_hides_what_is_hidden_from_parents(world):
    """§3.1.1.5 `Patient?_id=M&_revinclude=AuditEvent:entity` by M's parent: the events
    about M's record (R16, R07), without the read of the document labelled
    INVISIBLE_REPRESENTANTS_LEGAUX (R07: "the AuditEvents of accesses to" it are hidden)."""
    shown, hidden = _trail(world, PATIENT_M, "INVISIBLE_REPRESENTANTS_LEGAUX")
    _, events, text = _answer(
        world, parent_token(world), f"/fhir/Patient?_id={PATIENT_M}&_revinclude=AuditEvent:entity"
    )
    assert events == shown
    assert doc_id("m-invisible-rl") not in text

"""Every door to the audit log, tried by whoever should not get through (R16, R18; issue #21).

AuditEvents live in a log of their own (`store/with_audit_log.py`). An attack pass tried
every way a patient, a parent, a professional or a system client could see events they may
not see, or alter or suppress one: reads, vreads, histories, searches by every parameter,
includes, paging cursors, Bundle entries, conditional and plain writes. What it found, and
what these tests hold:

- The patient's trail showed the refusals of their own attempts on another patient's record
  (the patient is an agent of the event, so it is in their compartment), and each names that
  other record: a patient could learn whose record any id belongs to, which a 404 worded as
  for a missing id was meant to hide (R18). The patient sees the events about their record.
- A change of an AuditEvent (PUT, DELETE, PATCH, conditional or not, alone or in a Bundle)
  answered 405, 404, 204 or 412 depending on whether the event existed and whom it was
  hidden from: an existence oracle, and not the "405 on update and delete" R16 promises.
- A conditional create of an AuditEvent answered the event its criteria matched (200): a
  create by a client is refused (403), whatever its criteria find.
- A professional or a system client, who never read AuditEvents, was told 403 for an
  existing event and 404 for a missing one.
"""

from __future__ import annotations

import json

import orjson
import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.store.audit_log.record import event_patients
from tests.http.test_r18_matrix import (
    GP,
    PATIENT_A,
    PATIENT_B,
    World,
    _build_world,
    doc_id,
)

MISSING = "0a0a0a0a-0000-4000-8000-000000000000"  # the shape of a server id, held by nothing


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    # Events in every record: the médecin traitant of A reads A's documents, each patient
    # reads their own record, A's invisible document is read by whom may read it.
    for key in ("a-visible", "a-invisible"):
        built.get(built.tokens.practitioner(GP), f"/fhir/DocumentReference/{doc_id(key)}")
    built.get(built.tokens.patient(PATIENT_B), f"/fhir/Patient/{PATIENT_B}")
    built.get(built.tokens.patient(PATIENT_A), f"/fhir/Patient/{PATIENT_A}")
    yield built
    app.extensions["fhir"].store.close()


def _events(world: World) -> list[dict]:
    """Every event of the log, as the server itself reads them."""
    result = world.service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
    return [orjson.loads(body) for _, _, body in result.matches]


def _labelled(event: dict, code: str) -> bool:
    return any(c.get("code") == code for c in (event.get("meta") or {}).get("security") or [])


def _event_of(world: World, patient_id: str, label: str | None = None) -> dict:
    for event in _events(world):
        if patient_id in event_patients(event) and (
            _labelled(event, label) if label else not (event.get("meta") or {}).get("security")
        ):
            return event
    raise AssertionError(f"no event for {patient_id} labelled {label}")


def _trail(world: World, token: str, url: str) -> tuple[str, list[dict]]:
    """Every page of an AuditEvent search: (raw text of the answers, events)."""
    texts, events = [], []
    while url:
        response = world.get(token, url)
        assert response.status_code == 200, response.get_data(as_text=True)
        texts.append(response.get_data(as_text=True))
        bundle = response.get_json()
        events += [e["resource"] for e in bundle.get("entry", [])]
        url = next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)
        if url:
            url = url[url.index("/fhir/") :]
    return "\n".join(texts), events


def _outcome(response) -> tuple[int, str, str]:
    """(status, issue code, diagnostics) of an OperationOutcome answer."""
    body = response.get_json()
    assert body and body.get("resourceType") == "OperationOutcome", response.get_data(as_text=True)
    issue = body["issue"][0]
    return response.status_code, issue.get("code"), issue.get("diagnostics")


# -- the patient sees the events about their record ----------------------------------------


def test_r18_r16_patient_trail_does_not_tell_whose_record_a_refused_id_is_in(world):
    """Patient A tries ids of patient B's record (a document, one of B's AuditEvents): each
    answers 404 as a missing id would. A's AuditEvents must then not name B's record (else
    A learns whose record the id is in); B's trail holds the refusals (R16)."""
    token = world.tokens.patient(PATIENT_A)
    b_event = _event_of(world, PATIENT_B)
    for path in (
        f"/fhir/DocumentReference/{doc_id('b-doc')}",
        f"/fhir/AuditEvent/{b_event['id']}",
        f"/fhir/AuditEvent/{b_event['id']}/_history/1",
    ):
        assert world.get(token, path).status_code == 404
    for url in (
        f"/fhir/AuditEvent?patient={PATIENT_A}&_count=100",
        "/fhir/AuditEvent?_count=100",
        "/fhir/AuditEvent?outcome=8&_count=100",
    ):
        text, events = _trail(world, token, url)
        assert events or "outcome" in url, "the patient's own trail is empty"
        assert PATIENT_B not in text, f"{url} names patient B's record"
    # R16: the refusals are traced, in the trail of the record they concern.
    _, b_trail = _trail(world, world.tokens.patient(PATIENT_B), "/fhir/AuditEvent?outcome=8")
    by_a = [e for e in b_trail if f"Patient/{PATIENT_A}" in json.dumps(e.get("agent"))]
    assert len(by_a) >= 3, "patient A's refused attempts are missing from B's trail"

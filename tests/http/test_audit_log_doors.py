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

import pytest

from fhir_server.store.audit_log.record import event_patients
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    GP,
    PATIENT_A,
    PATIENT_B,
    World,
    _build_world,
    doc_id,
    logged_events,
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


def _labelled(event: dict, code: str) -> bool:
    return any(c.get("code") == code for c in (event.get("meta") or {}).get("security") or [])


def _event_of(world: World, patient_id: str, label: str | None = None) -> dict:
    for event in logged_events(world):
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


# -- AuditEvents are never changed, whatever the door ----------------------------------------


def _actors(world: World) -> dict[str, str]:
    tokens = world.tokens
    return {
        "patient": tokens.patient(PATIENT_A),
        "parent": parent_token(world),
        "practitioner": tokens.practitioner(GP),
        "system": tokens.system(),
    }


def _targets(world: World) -> dict[str, str]:
    return {
        "own": _event_of(world, PATIENT_A)["id"],  # in A's trail, shown to A
        "other-record": _event_of(world, PATIENT_B)["id"],
        "invisible": _event_of(world, PATIENT_A, "INVISIBLE_PATIENT")["id"],  # hidden from A
        "missing": MISSING,
    }


def _changes(world: World, token: str, event_id: str, body: dict) -> dict[str, object]:
    """Each way of changing an AuditEvent: its answer."""
    client = world.client
    put = json.dumps({**body, "id": event_id, "outcome": "12"})
    json_patch = json.dumps([{"op": "replace", "path": "/outcome", "value": "12"}])
    entries = {
        "PUT": {
            "request": {"method": "PUT", "url": f"AuditEvent/{event_id}"},
            "resource": json.loads(put),
        },
        "DELETE": {"request": {"method": "DELETE", "url": f"AuditEvent/{event_id}"}},
        "conditional DELETE": {
            "request": {"method": "DELETE", "url": f"AuditEvent?_id={event_id}"}
        },
    }
    answers: dict[str, object] = {
        "PUT": client.put(
            f"/fhir/AuditEvent/{event_id}",
            data=put,
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        ),
        "PUT If-Match": client.put(
            f"/fhir/AuditEvent/{event_id}",
            data=put,
            headers=auth(token, **{"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'}),
        ),
        "DELETE": client.delete(f"/fhir/AuditEvent/{event_id}", headers=auth(token)),
        "PATCH": client.patch(
            f"/fhir/AuditEvent/{event_id}",
            data=json_patch,
            headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
        ),
        "conditional PUT": client.put(
            f"/fhir/AuditEvent?_id={event_id}",
            data=json.dumps({**body, "outcome": "12"}),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        ),
        "conditional DELETE": client.delete(
            f"/fhir/AuditEvent?_id={event_id}", headers=auth(token)
        ),
    }
    for name, entry in entries.items():
        for kind in ("transaction", "batch"):
            bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
            answers[f"{kind} {name}"] = client.post(
                "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
            )
    return answers


def _answer(name: str, response) -> tuple[int, str, str]:
    if name.startswith("batch"):
        entry = response.get_json()["entry"][0]["response"]
        outcome = entry.get("outcome") or {}
        issue = (outcome.get("issue") or [{}])[0]
        return int(entry["status"].split()[0]), issue.get("code"), issue.get("diagnostics")
    status, code, diagnostics = _outcome(response)
    return status, code, diagnostics.removeprefix("Bundle.entry[0]: ")


@pytest.mark.parametrize("actor", ["patient", "parent", "practitioner", "system"])
def test_r16_r18_an_audit_event_change_answers_405_whatever_exists_and_is_shown(world, actor):
    """R16: "405 on update and delete", through any interface; R18: the same answer for an
    event shown to the requester, one hidden from them, one in another record and an id
    that names nothing, so that no answer tells which events exist. Nothing changes."""
    token = _actors(world)[actor]
    targets = _targets(world)
    body = {k: v for k, v in _event_of(world, PATIENT_A).items() if k != "meta"}
    before = {event["id"]: event for event in logged_events(world)}
    seen: dict[tuple[str, str], tuple[int, str, str]] = {}
    for target, event_id in targets.items():
        for name, response in _changes(world, token, event_id, body).items():
            status, code, diagnostics = _answer(name, response)
            assert status == 405, f"{actor} {name} on the {target} event: {status} {diagnostics}"
            seen[(target, name)] = (status, code, diagnostics)
    for (target, name), answer in seen.items():
        assert answer == seen[("missing", name)], (
            f"{name} on the {target} event answers differently"
        )
    after = {event["id"]: event for event in logged_events(world)}
    assert all(after[event_id] == event for event_id, event in before.items()), "an event changed"


def _refusals(events: list[dict], agent: str) -> list[dict[str, str | None]]:
    """(denied rule, interaction, resource type) of the refusals by `agent` in `events`."""
    found = []
    for event in events:
        if event.get("outcome") != "8" or agent not in json.dumps(event.get("agent")):
            continue
        for entity in event.get("entity", []):
            details = {d["type"]: d.get("valueString") for d in entity.get("detail", [])}
            if details:
                found.append(
                    {k: details.get(k) for k in ("denied-rule", "interaction", "resource-type")}
                )
    return found


def _attempt_changes(world: World, token: str, event: dict) -> None:
    world.client.delete(f"/fhir/AuditEvent/{event['id']}", headers=auth(token))
    world.client.put(
        f"/fhir/AuditEvent/{event['id']}",
        data=json.dumps({k: v for k, v in event.items() if k != "meta"}),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def test_r16_a_refused_change_of_an_event_is_traced_in_its_patients_trail(world):
    """R16, every refusal traced: a professional's DELETE and PUT of an event of A's record
    are AuthZ-Consent failures in A's trail, naming the rule and the interaction."""
    _attempt_changes(world, world.tokens.practitioner(GP), _event_of(world, PATIENT_A))
    _, trail = _trail(world, world.tokens.patient(PATIENT_A), "/fhir/AuditEvent?outcome=8")
    for interaction in ("delete", "update"):
        expected = {"denied-rule": "R16", "interaction": interaction, "resource-type": "AuditEvent"}
        assert expected in _refusals(trail, GP), f"the refused {interaction} is not in A's trail"


def test_r18_r16_a_refused_change_of_a_hidden_event_is_traced_hidden_like_the_event(world):
    """Patient A tries to delete and replace an event of their record hidden from them
    (INVISIBLE_PATIENT) and an id naming nothing: both answers are the same (405), and so
    is A's trail afterwards: the refusal on the hidden event carries its label (R14, R18),
    else it would tell A that the id is in their record. It is traced all the same (R16)."""
    token = world.tokens.patient(PATIENT_A)
    hidden = _event_of(world, PATIENT_A, "INVISIBLE_PATIENT")
    _, before = _trail(world, token, "/fhir/AuditEvent?outcome=8")
    _attempt_changes(world, token, hidden)
    _attempt_changes(world, token, {**hidden, "id": MISSING})
    _, after = _trail(world, token, "/fhir/AuditEvent?outcome=8")
    assert _refusals(after, PATIENT_A) == _refusals(before, PATIENT_A), "A's trail tells"
    traced = [
        event
        for event in logged_events(world)
        if PATIENT_A in event_patients(event) and _labelled(event, "INVISIBLE_PATIENT")
    ]
    refused = _refusals(traced, PATIENT_A)
    for interaction in ("delete", "update"):
        expected = {"denied-rule": "R16", "interaction": interaction, "resource-type": "AuditEvent"}
        assert expected in refused, f"the refused {interaction} is not traced"


# -- AuditEvents are created by the server only ----------------------------------------------


def test_r16_a_conditional_create_of_an_audit_event_is_refused_not_answered_with_a_match(world):
    """R16, "403 on create by anyone but the server": a client's create of an AuditEvent is
    refused whatever its If-None-Exist criteria find, alone or in a transaction; it is not
    a door to read the event the criteria match."""
    token = world.tokens.patient(PATIENT_A)
    event = _event_of(world, PATIENT_A)
    body = {k: v for k, v in event.items() if k not in ("meta", "id")}
    alone = world.client.post(
        "/fhir/AuditEvent",
        data=json.dumps(body),
        headers=auth(token, **{"Content-Type": FHIR_JSON, "If-None-Exist": f"_id={event['id']}"}),
    )
    assert _outcome(alone)[:2] == (403, "forbidden")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0c0c0c0c-0000-4000-8000-000000000001",
                "resource": body,
                "request": {
                    "method": "POST",
                    "url": "AuditEvent",
                    "ifNoneExist": f"_id={event['id']}",
                },
            }
        ],
    }
    in_transaction = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert _outcome(in_transaction)[:2] == (403, "forbidden")


# -- who never reads AuditEvents is not told which exist ------------------------------------


@pytest.mark.parametrize("actor", ["practitioner", "system"])
def test_r18_reads_of_a_type_never_read_answer_the_same_for_existing_and_missing_ids(world, actor):
    """Professionals and system clients never read AuditEvents (R16): a read, vread or
    instance history of an existing event and of an id naming nothing get the same refusal
    (R18), alone or as a batch entry."""
    token = _actors(world)[actor]
    existing = _event_of(world, PATIENT_A)["id"]
    for suffix in ("", "/_history/1", "/_history"):
        answers = [
            _outcome(world.get(token, f"/fhir/AuditEvent/{event_id}{suffix}"))
            for event_id in (existing, MISSING)
        ]
        assert answers[0] == answers[1], f"AuditEvent/ID{suffix}: {answers}"
        assert answers[0][0] == 403
    entries = [
        {"request": {"method": "GET", "url": f"AuditEvent/{i}"}} for i in (existing, MISSING)
    ]
    batch = world.client.post(
        "/fhir",
        data=json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    ).get_json()
    statuses = [entry["response"]["status"] for entry in batch["entry"]]
    assert statuses[0] == statuses[1], statuses

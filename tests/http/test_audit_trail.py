"""Every access traced (R16): AuditEvents written by the gate, visible to the patient, sealed."""

from __future__ import annotations

import json

from fhir_server.audit.verify import verify_store
from tests.http.conftest import FHIR_JSON, a_patient, auth


def _setup(client, tokens):
    patient = client.post(
        "/fhir/Patient",
        data=json.dumps(a_patient()),
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    ).get_json()
    return patient["id"], tokens.patient(patient["id"])


def test_r16_a_read_leaves_a_balp_read_event_the_patient_can_search(client, tokens):
    patient_id, token = _setup(client, tokens)
    client.get(f"/fhir/Patient/{patient_id}", headers=auth(token, **{"X-Request-Id": "trace-me"}))
    events = client.get(
        f"/fhir/AuditEvent?patient={patient_id}&subtype=read", headers=auth(token)
    ).get_json()
    reads = [e["resource"] for e in events.get("entry", [])]
    assert reads, "the read was not traced"
    assert reads[0]["action"] == "R" and reads[0]["outcome"] == "0"
    assert any(
        f"Patient/{patient_id}" == (entity.get("what") or {}).get("reference")
        for entity in reads[0]["entity"]
    )


def test_r16_a_refusal_is_traced_as_a_failure(client, tokens):
    patient_id, _ = _setup(client, tokens)
    stranger = tokens.practitioner("810000000099", profession="10")
    refused = client.get(f"/fhir/DocumentReference?patient={patient_id}", headers=auth(stranger))
    assert refused.status_code == 403
    token = tokens.patient(patient_id)
    events = client.get(
        f"/fhir/AuditEvent?patient={patient_id}&outcome=8", headers=auth(token)
    ).get_json()
    assert events.get("entry"), "the refusal was not traced"


def test_r16_audit_events_cannot_be_changed_or_deleted(client, tokens):
    patient_id, token = _setup(client, tokens)
    client.get(f"/fhir/Patient/{patient_id}", headers=auth(token))
    event = client.get(f"/fhir/AuditEvent?patient={patient_id}", headers=auth(token)).get_json()[
        "entry"
    ][0]["resource"]
    put = client.put(
        f"/fhir/AuditEvent/{event['id']}",
        data=json.dumps(event),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    delete = client.delete(f"/fhir/AuditEvent/{event['id']}", headers=auth(token))
    admin_delete = client.delete(f"/fhir/AuditEvent/{event['id']}", headers=auth(tokens.system()))
    assert {put.status_code, delete.status_code, admin_delete.status_code} <= {403, 405}
    assert client.get(f"/fhir/AuditEvent/{event['id']}", headers=auth(token)).status_code == 200


def test_r06_r16_a_refused_create_stores_nothing_and_is_traced_as_a_failure(client, tokens):
    """A create is judged before its write transaction opens (service/core.py): the refusal
    must still leave nothing stored and one failure event."""
    patient_id, token = _setup(client, tokens)
    forged = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-11-22T10:00:00Z",
        "agent": [{"who": {"display": "forger"}, "requestor": True}],
        "source": {"observer": {"display": "forger"}},
        "entity": [{"what": {"reference": f"Patient/{patient_id}"}}],
    }
    before = client.get(f"/fhir/AuditEvent?patient={patient_id}", headers=auth(token)).get_json()
    refused = client.post(
        "/fhir/AuditEvent",
        data=json.dumps(forged),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    assert refused.status_code == 403
    after = client.get(f"/fhir/AuditEvent?patient={patient_id}", headers=auth(token)).get_json()
    new_events = [
        entry["resource"]
        for entry in after.get("entry", [])
        if entry["resource"]["id"] not in {e["resource"]["id"] for e in before.get("entry", [])}
    ]
    assert not any(
        event.get("agent", [{}])[0].get("who", {}).get("display") == "forger"
        for event in new_events
    ), "the refused AuditEvent was stored"
    assert [event["outcome"] for event in new_events].count("8") == 1


def test_r16_professionals_never_read_audit_events(client, tokens):
    patient_id, _ = _setup(client, tokens)
    practitioner = tokens.practitioner("810000000001")
    assert (
        client.get(f"/fhir/AuditEvent?patient={patient_id}", headers=auth(practitioner)).status_code
        == 403
    )


def test_r16_the_chain_verifies_and_a_tampered_event_is_named(app, client, tokens):
    patient_id, token = _setup(client, tokens)
    for _ in range(3):
        client.get(f"/fhir/Patient/{patient_id}", headers=auth(token))
    store = app.extensions["fhir"].store
    report = verify_store(store)
    assert report.ok and report.checked >= 4
    # Tamper with one stored event behind the server's back.
    victim = store.history("AuditEvent", None, since=None, count=1, cursor=None).entries[0].resource
    body = victim.json()
    body["outcome"] = "4"
    import orjson

    if store.name == "sqlite":
        store.audit_log._writer.execute(
            "UPDATE event SET body = ? WHERE id = ?", (orjson.dumps(body), victim.id)
        )
    else:
        store.audit_log._events.update_one(
            {"id": victim.id}, {"$set": {"body": orjson.dumps(body)}}
        )
    broken = verify_store(store)
    assert not broken.ok and broken.event_id == victim.id

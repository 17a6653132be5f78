"""Secure messaging: who may send, answer and read a message (R06, R07, R10, R14, R18).

Messages are Communications (category message); only the sender, the recipients and, within
R07, the patient's representatives read them; ``received`` is set on a recipient's first read.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.audit.messaging import MESSAGE_CATEGORY
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, a_patient, auth
from tests.http.test_notifications import AUTHORIZED, OTHER, STRANGER, document, family_record


def practitioner_ref(idnat: str) -> dict:
    return {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}


def message(
    patient_id: str, sender: dict, recipients: list[dict], text: str = "Bonjour", **extra
) -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [MESSAGE_CATEGORY],
        "subject": {"reference": f"Patient/{patient_id}"},
        "sender": sender,
        "recipient": recipients,
        "payload": [{"contentString": text}],
        **extra,
    }


@pytest.fixture
def world(tmp_path):
    family = family_record(tmp_path)
    app, tokens, clock, service = family.app, family.tokens, family.clock, family.service
    adult, minor, parent = family.patient, family.minor, family.parent

    class World:
        pass

    w = World()
    w.client, w.tokens, w.clock, w.service = app.test_client(), tokens, clock, service
    w.adult, w.minor, w.parent = adult, minor, parent
    w.doctor, w.colleague, w.stranger = (
        tokens.practitioner(i) for i in (AUTHORIZED, OTHER, STRANGER)
    )
    w.parent_token = tokens.issuer.issue(
        subject=parent, scopes="patient/*.cruds", fhir_user=f"RelatedPerson/{parent}", patient=minor
    )
    yield w
    app.extensions["fhir"].store.close()


def send(w, token: str, body: dict):
    return w.client.post(
        "/fhir/Communication",
        data=json.dumps(body),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def read(w, token: str, communication_id: str):
    return w.client.get(f"/fhir/Communication/{communication_id}", headers=auth(token))


def test_messaging_r10_practitioner_writes_patient_reads_received_set_then_answer(world):
    w = world
    sent = send(
        w,
        w.doctor,
        message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}]),
    )
    assert sent.status_code == 201, sent.get_json()
    message_id = sent.get_json()["id"]
    # The sender re-reading does not mark it received.
    assert "received" not in read(w, w.doctor, message_id).get_json()
    w.clock.advance(hours=2)
    assert read(w, w.tokens.patient(w.adult), message_id).status_code == 200
    received = read(w, w.doctor, message_id).get_json()["received"]
    assert received == "2024-03-01T11:00:00Z"
    w.clock.advance(hours=1)
    read(w, w.tokens.patient(w.adult), message_id)
    assert read(w, w.doctor, message_id).get_json()["received"] == received  # only the first read
    answer = message(
        w.adult,
        {"reference": f"Patient/{w.adult}"},
        [practitioner_ref(AUTHORIZED)],
        "Merci docteur",
        inResponseTo=[{"reference": f"Communication/{message_id}"}],
    )
    answered = send(w, w.tokens.patient(w.adult), answer)
    assert answered.status_code == 201, answered.get_json()
    assert read(w, w.doctor, answered.get_json()["id"]).status_code == 200


def test_messaging_r06_patient_only_answers_practitioners(world):
    w = world
    unsolicited = message(
        w.adult, {"reference": f"Patient/{w.adult}"}, [practitioner_ref(AUTHORIZED)]
    )
    assert send(w, w.tokens.patient(w.adult), unsolicited).status_code == 403


def test_messaging_r18_a_practitioner_who_is_not_a_party_does_not_see_the_message(world):
    w = world
    sent = send(
        w,
        w.doctor,
        message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}]),
    )
    message_id = sent.get_json()["id"]
    # OTHER is authorized on the record but neither sender nor recipient.
    assert read(w, w.colleague, message_id).status_code == 404
    listed = w.client.get(
        f"/fhir/Communication?subject=Patient/{w.adult}", headers=auth(w.colleague)
    ).get_json()
    assert listed.get("total", 0) == 0 and not listed.get("entry")
    # Another patient does not see it either.
    other_patient = w.service.create(INTERNAL, "Patient", a_patient(9)).stored.id
    assert read(w, w.tokens.patient(other_patient), message_id).status_code == 404


def test_messaging_practitioner_to_practitioner_about_a_patient(world):
    w = world
    sent = send(
        w,
        w.doctor,
        message(w.adult, practitioner_ref(AUTHORIZED), [practitioner_ref(OTHER)], "Avis ?"),
    )
    assert sent.status_code == 201, sent.get_json()
    message_id = sent.get_json()["id"]
    assert read(w, w.colleague, message_id).status_code == 200
    assert read(w, w.tokens.patient(w.adult), message_id).status_code == 404  # not a party
    assert "received" in read(w, w.doctor, message_id).get_json()
    reply = message(
        w.adult,
        practitioner_ref(OTHER),
        [practitioner_ref(AUTHORIZED)],
        "Avis favorable",
        inResponseTo=[{"reference": f"Communication/{message_id}"}],
    )
    assert send(w, w.colleague, reply).status_code == 201
    # A stranger cannot join the thread by answering it.
    intruder = message(
        w.adult,
        practitioner_ref(STRANGER),
        [practitioner_ref(AUTHORIZED)],
        "Moi aussi",
        inResponseTo=[{"reference": f"Communication/{message_id}"}],
    )
    assert send(w, w.stranger, intruder).status_code in (403, 404)


def test_messaging_sender_must_be_the_author_of_the_request(world):
    w = world
    forged = message(w.adult, practitioner_ref(OTHER), [{"reference": f"Patient/{w.adult}"}])
    assert send(w, w.doctor, forged).status_code == 403


def test_messaging_r07_representative_reads_and_answers_for_the_minor(world):
    w = world
    sent = send(
        w,
        w.doctor,
        message(w.minor, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.minor}"}]),
    )
    message_id = sent.get_json()["id"]
    assert read(w, w.parent_token, message_id).status_code == 200
    assert (
        "received" in read(w, w.doctor, message_id).get_json()
    )  # the parent read it for the minor
    answer = message(
        w.minor,
        {"reference": f"RelatedPerson/{w.parent}"},
        [practitioner_ref(AUTHORIZED)],
        "Bien reçu",
        inResponseTo=[{"reference": f"Communication/{message_id}"}],
    )
    assert send(w, w.parent_token, answer).status_code == 201
    # Not about another patient's record.
    elsewhere = message(
        w.adult,
        {"reference": f"RelatedPerson/{w.parent}"},
        [practitioner_ref(AUTHORIZED)],
        "?",
        inResponseTo=[{"reference": f"Communication/{message_id}"}],
    )
    assert send(w, w.parent_token, elsewhere).status_code in (403, 404)


def test_messaging_r07_attachment_hidden_from_representatives_hides_the_message(world):
    w = world
    doc = w.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(
            document(w.minor, "Consultation confidentielle", "INVISIBLE_REPRESENTANTS_LEGAUX")
        ),
        headers=auth(w.doctor, **{"Content-Type": FHIR_JSON}),
    ).get_json()
    body = message(w.minor, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.minor}"}])
    body["payload"].append({"contentReference": {"reference": f"DocumentReference/{doc['id']}"}})
    sent = send(w, w.doctor, body)
    assert sent.status_code == 201, sent.get_json()
    stored = sent.get_json()
    assert {
        "system": SYSTEM_DMP_CONFIDENTIALITY,
        "code": "INVISIBLE_REPRESENTANTS_LEGAUX",
    } in stored["meta"]["security"]
    assert read(w, w.parent_token, stored["id"]).status_code == 404
    assert read(w, w.tokens.patient(w.minor), stored["id"]).status_code == 200


def test_messaging_r18_attachment_must_be_a_document_the_sender_can_read(world):
    w = world
    body = message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}])
    body["payload"].append({"contentReference": {"reference": "DocumentReference/does-not-exist"}})
    refused = send(w, w.doctor, body)
    assert refused.status_code == 404
    inline = message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}])
    inline["payload"] = [{"contentAttachment": {"contentType": "text/plain", "data": "aGk="}}]
    assert send(w, w.doctor, inline).status_code == 400


def test_messaging_r10_unauthorized_practitioner_cannot_write_about_the_patient(world):
    w = world
    body = message(w.adult, practitioner_ref(STRANGER), [{"reference": f"Patient/{w.adult}"}])
    assert send(w, w.stranger, body).status_code == 403


def test_messaging_only_the_server_writes_notifications(world):
    w = world
    from fhir_server.audit.notifications import NOTIFICATION_CATEGORY

    body = message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}])
    body["category"] = [NOTIFICATION_CATEGORY]
    assert send(w, w.doctor, body).status_code == 403

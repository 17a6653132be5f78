"""Secure messaging as professionals use it (issue #20, deliverable 7).

MSSanté citoyenne (the messaging of Mon espace santé): only a professional opens a conversation
with a patient, except that the patient may write first to one of their pharmacies; the
professional closes the conversation, after which nobody writes in it. And a message that names
no category is a message. The FHIR shape is described in ``fhir_server/audit/conversations.py``.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from fhir_server.access.requester import INTERNAL
from fhir_server.audit.messaging import MESSAGE_CATEGORY
from fhir_server.terminology import SYSTEM_IDNAT_STRUCT
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_messaging import message, practitioner_ref, read, send
from tests.http.test_messaging import world as world  # noqa: F401  (the fixture)
from tests.http.test_notifications import AUTHORIZED, OTHER, STRANGER

# What a client sends, spelled out: the HL7 extension naming the patient's pharmacies and our
# communication-category code that closes a conversation.
EXT_PREFERRED_PHARMACY = "http://hl7.org/fhir/StructureDefinition/patient-preferredPharmacy"
CLOSURE_CATEGORY = {
    "coding": [
        {
            "system": "https://dmp-server.fr/fhir/CodeSystem/communication-category",
            "code": "closure",
        }
    ]
}
PHARMACY = "2000000077"  # IdNat_Struct of the patient's officine
OTHER_PHARMACY = "2000000099"


def organization_ref(structure: str) -> dict:
    return {
        "type": "Organization",
        "identifier": {"system": SYSTEM_IDNAT_STRUCT, "value": structure},
    }


def pharmacist_token(w, idnat: str, structure: str) -> str:
    """A pharmacist (TRE_G15 21) working at the officine `structure` (IUA claims)."""
    return w.tokens.issuer.issue(
        subject=idnat,
        scopes="user/*.cruds",
        extensions={
            "ihe_iua": {
                "subject_name": "Pierre Martin",
                "national_provider_identifier": idnat,
                "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "21"}],
                "subject_organization": "Pharmacie du Marché",
                "subject_organization_id": f"{SYSTEM_IDNAT_STRUCT}|{structure}",
                "purpose_of_use": [{"system": "urn:oid:1.2.250.1.213.1.1.4.248", "code": "normal"}],
            },
            "dmp": {"access_mode": "normal"},
        },
    )


def name_pharmacy(w, patient_id: str, structure: str) -> None:
    """The health insurer's feed records the patient's pharmacy on the Patient (R15)."""
    insurer = w.tokens.system("insurer-feed", "system/*.cruds", "health_insurer")
    patient = w.client.get(f"/fhir/Patient/{patient_id}", headers=auth(insurer)).get_json()
    patient.setdefault("extension", []).append(
        {
            "url": EXT_PREFERRED_PHARMACY,
            "extension": [
                {"url": "pharmacy", "valueReference": organization_ref(structure)},
                {"url": "type", "valueCodeableConcept": {"text": "officine"}},
            ],
        }
    )
    updated = w.client.put(
        f"/fhir/Patient/{patient_id}",
        data=json.dumps(patient),
        headers=auth(insurer, **{"Content-Type": FHIR_JSON}),
    )
    assert updated.status_code == 200, updated.get_json()


def details(response) -> list[str]:
    return [
        coding.get("code")
        for issue in response.get_json()["issue"]
        for coding in (issue.get("details") or {}).get("coding", [])
    ]


def opening(w) -> str:
    """The doctor opens a conversation with the adult patient; its id."""
    sent = send(
        w,
        w.doctor,
        message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}]),
    )
    assert sent.status_code == 201, sent.get_json()
    return sent.get_json()["id"]


def answer(w, token: str, sender: dict, recipients: list[dict], to: str, **extra):
    body = message(
        w.adult,
        sender,
        recipients,
        "Réponse",
        inResponseTo=[{"reference": f"Communication/{to}"}],
        **extra,
    )
    return send(w, token, body)


def patient_answer(w, to: str):
    return answer(
        w,
        w.tokens.patient(w.adult),
        {"reference": f"Patient/{w.adult}"},
        [practitioner_ref(AUTHORIZED)],
        to,
    )


def close(w, token: str, sender: dict, recipients: list[dict], to: str):
    return answer(w, token, sender, recipients, to, category=[MESSAGE_CATEGORY, CLOSURE_CATEGORY])


# --- a message without a category -----------------------------------------------------------


def test_a_message_without_category_is_a_message_the_server_fills_the_category_in(world):
    w = world
    body = message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}])
    del body["category"]
    sent = send(w, w.doctor, body)
    assert sent.status_code == 201, sent.get_json()
    stored = sent.get_json()
    assert stored["category"] == [MESSAGE_CATEGORY]
    # It is a message like any other: the patient reads it, and it is then received.
    assert read(w, w.tokens.patient(w.adult), stored["id"]).status_code == 200
    assert "received" in read(w, w.doctor, stored["id"]).get_json()


def test_a_message_with_only_a_foreign_category_keeps_it_and_is_a_message(world):
    w = world
    hl7 = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                "code": "instruction",
            }
        ]
    }
    body = message(
        w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}], category=[hl7]
    )
    sent = send(w, w.doctor, body)
    assert sent.status_code == 201, sent.get_json()
    assert sent.get_json()["category"] == [hl7, MESSAGE_CATEGORY]


# --- who opens a conversation ---------------------------------------------------------------


def test_mssc_a_patient_does_not_open_a_conversation_with_a_professional(world):
    w = world
    unsolicited = message(
        w.adult, {"reference": f"Patient/{w.adult}"}, [practitioner_ref(AUTHORIZED)]
    )
    refused = send(w, w.tokens.patient(w.adult), unsolicited)
    assert refused.status_code == 403
    assert "conversation-opened-by-professional" in details(refused)
    assert "MSSanté citoyenne" in refused.get_json()["issue"][0]["diagnostics"]


def test_mssc_the_patient_writes_first_to_their_pharmacy_which_answers_as_the_pharmacy(world):
    w = world
    name_pharmacy(w, w.adult, PHARMACY)
    patient = w.tokens.patient(w.adult)
    first = send(
        w,
        patient,
        message(
            w.adult,
            {"reference": f"Patient/{w.adult}"},
            [organization_ref(PHARMACY)],
            "Voici mon ordonnance",
        ),
    )
    assert first.status_code == 201, first.get_json()
    first_id = first.get_json()["id"]
    # A pharmacist of that officine reads it (it is then received) and answers for the officine.
    pharmacist = pharmacist_token(w, OTHER, PHARMACY)
    assert read(w, pharmacist, first_id).status_code == 200
    assert "received" in read(w, patient, first_id).get_json()
    reply = answer(
        w,
        pharmacist,
        organization_ref(PHARMACY),
        [{"reference": f"Patient/{w.adult}"}],
        first_id,
    )
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["partOf"] == [{"reference": f"Communication/{first_id}"}]
    # The patient goes on writing to the officine.
    again = answer(
        w,
        patient,
        {"reference": f"Patient/{w.adult}"},
        [organization_ref(PHARMACY)],
        reply.get_json()["id"],
    )
    assert again.status_code == 201, again.get_json()
    # A pharmacist of another officine sees none of it.
    elsewhere = pharmacist_token(w, OTHER, OTHER_PHARMACY)
    assert read(w, elsewhere, first_id).status_code == 404


def test_mssc_the_pharmacy_exception_is_for_the_patients_own_pharmacies_only(world):
    w = world
    name_pharmacy(w, w.adult, PHARMACY)
    body = message(w.adult, {"reference": f"Patient/{w.adult}"}, [organization_ref(OTHER_PHARMACY)])
    refused = send(w, w.tokens.patient(w.adult), body)
    assert refused.status_code == 403
    assert "conversation-opened-by-professional" in details(refused)
    # Nor may the pharmacy be a pretext to write first to a doctor as well.
    both = message(
        w.adult,
        {"reference": f"Patient/{w.adult}"},
        [organization_ref(PHARMACY), practitioner_ref(AUTHORIZED)],
    )
    assert send(w, w.tokens.patient(w.adult), both).status_code == 403


def test_mssc_r07_a_representative_writes_first_to_the_minors_pharmacy(world):
    w = world
    name_pharmacy(w, w.minor, PHARMACY)
    body = message(
        w.minor, {"reference": f"RelatedPerson/{w.parent}"}, [organization_ref(PHARMACY)]
    )
    sent = send(w, w.parent_token, body)
    assert sent.status_code == 201, sent.get_json()
    doctor_first = message(
        w.minor, {"reference": f"RelatedPerson/{w.parent}"}, [practitioner_ref(AUTHORIZED)]
    )
    assert send(w, w.parent_token, doctor_first).status_code == 403


# --- threads and closing --------------------------------------------------------------------


def test_mssc_answers_are_part_of_the_conversation_and_found_by_part_of(world):
    w = world
    first_id = opening(w)
    reply = patient_answer(w, first_id)
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["partOf"] == [{"reference": f"Communication/{first_id}"}]
    follow_up = answer(
        w,
        w.doctor,
        practitioner_ref(AUTHORIZED),
        [{"reference": f"Patient/{w.adult}"}],
        reply.get_json()["id"],
    )
    assert follow_up.get_json()["partOf"] == [{"reference": f"Communication/{first_id}"}]
    thread = w.client.get(
        f"/fhir/Communication?subject=Patient/{w.adult}&part-of=Communication/{first_id}",
        headers=auth(w.doctor),
    ).get_json()
    assert {e["resource"]["id"] for e in thread["entry"]} == {
        reply.get_json()["id"],
        follow_up.get_json()["id"],
    }


def test_mssc_the_professional_closes_the_conversation_and_the_patient_can_no_longer_answer(
    world,
):
    w = world
    first_id = opening(w)
    reply = patient_answer(w, first_id)
    closed = close(
        w,
        w.doctor,
        practitioner_ref(AUTHORIZED),
        [{"reference": f"Patient/{w.adult}"}],
        reply.get_json()["id"],
    )
    assert closed.status_code == 201, closed.get_json()
    # The patient reads the closing message, and finds the closure with a search.
    assert read(w, w.tokens.patient(w.adult), closed.get_json()["id"]).status_code == 200
    category = quote("https://dmp-server.fr/fhir/CodeSystem/communication-category|closure")
    found = w.client.get(
        f"/fhir/Communication?part-of=Communication/{first_id}&category={category}",
        headers=auth(w.tokens.patient(w.adult)),
    ).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [closed.get_json()["id"]]
    # Answering any message of the closed conversation is refused, the professional's too.
    for to in (first_id, reply.get_json()["id"], closed.get_json()["id"]):
        refused = patient_answer(w, to)
        assert refused.status_code == 409, refused.get_json()
        assert "conversation-closed" in details(refused)
    again = answer(
        w, w.doctor, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}], first_id
    )
    assert again.status_code == 409
    # A new conversation the professional opens is open.
    assert patient_answer(w, opening(w)).status_code == 201


def test_mssc_only_a_professional_closes_a_conversation(world):
    w = world
    first_id = opening(w)
    by_patient = close(
        w,
        w.tokens.patient(w.adult),
        {"reference": f"Patient/{w.adult}"},
        [practitioner_ref(AUTHORIZED)],
        first_id,
    )
    assert by_patient.status_code == 403
    # A professional who is no party to it cannot close it either (it is hidden from them).
    by_stranger = close(
        w, w.stranger, practitioner_ref(STRANGER), [{"reference": f"Patient/{w.adult}"}], first_id
    )
    assert by_stranger.status_code in (403, 404)
    assert patient_answer(w, first_id).status_code == 201


def test_mssc_the_pharmacy_closes_the_conversation_the_patient_opened(world):
    w = world
    name_pharmacy(w, w.adult, PHARMACY)
    patient = w.tokens.patient(w.adult)
    first = send(
        w,
        patient,
        message(w.adult, {"reference": f"Patient/{w.adult}"}, [organization_ref(PHARMACY)]),
    ).get_json()
    closed = close(
        w,
        pharmacist_token(w, OTHER, PHARMACY),
        organization_ref(PHARMACY),
        [{"reference": f"Patient/{w.adult}"}],
        first["id"],
    )
    assert closed.status_code == 201, closed.get_json()
    refused = answer(
        w, patient, {"reference": f"Patient/{w.adult}"}, [organization_ref(PHARMACY)], first["id"]
    )
    assert refused.status_code == 409


def test_mssc_a_conversation_stored_before_threads_were_tracked_is_closed_too(world):
    w = world
    first_id = opening(w)
    # An answer stored without partOf (written before the server tracked conversations).
    legacy = w.service.create(
        INTERNAL,
        "Communication",
        message(
            w.adult,
            {"reference": f"Patient/{w.adult}"},
            [practitioner_ref(AUTHORIZED)],
            inResponseTo=[{"reference": f"Communication/{first_id}"}],
        ),
    ).stored.id
    closed = close(
        w, w.doctor, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}], first_id
    )
    assert closed.status_code == 201, closed.get_json()
    assert patient_answer(w, legacy).status_code == 409


def test_mssc_part_of_is_the_servers(world):
    w = world
    first_id = opening(w)
    other_id = opening(w)
    forged = answer(
        w,
        w.tokens.patient(w.adult),
        {"reference": f"Patient/{w.adult}"},
        [practitioner_ref(AUTHORIZED)],
        first_id,
        partOf=[{"reference": f"Communication/{other_id}"}],
    )
    assert forged.status_code == 400
    assert forged.get_json()["issue"][0]["expression"] == ["Communication.partOf"]
    body = message(w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Patient/{w.adult}"}])
    body["partOf"] = [{"reference": f"Communication/{first_id}"}]
    assert send(w, w.doctor, body).status_code == 400


def test_mssc_a_professional_writes_to_an_organisational_mailbox_by_its_idnat_struct(world):
    w = world
    to_pharmacy = message(w.adult, practitioner_ref(AUTHORIZED), [organization_ref(PHARMACY)])
    sent = send(w, w.doctor, to_pharmacy)
    assert sent.status_code == 201, sent.get_json()
    assert read(w, pharmacist_token(w, OTHER, PHARMACY), sent.get_json()["id"]).status_code == 200
    # Organizations are not stored: a literal reference names nothing the server can check.
    by_reference = message(
        w.adult, practitioner_ref(AUTHORIZED), [{"reference": f"Organization/{PHARMACY}"}]
    )
    refused = send(w, w.doctor, by_reference)
    assert refused.status_code == 400
    assert refused.get_json()["issue"][0]["expression"] == ["Communication.recipient[0]"]

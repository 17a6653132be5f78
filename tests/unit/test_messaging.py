"""Secure messaging: who may send what, who may read it, when it counts as received."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir.resources.R4B.communication import Communication

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.messaging import (
    MESSAGE_CATEGORY,
    mark_received,
    may_read_message,
    validate_message,
    validate_reply,
)
from fhir_server.audit.notifications import notification_for_deposit
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
)

NOW = datetime(2026, 11, 22, 9, 42, tzinfo=UTC)
DOCTOR = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000001", display_name="Dr A")
NURSE = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000002", profession="60")
OTHER_DOCTOR = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000009")
PATIENT = Requester(kind=ActorKind.PATIENT, subject_id="p1")
OTHER_PATIENT = Requester(kind=ActorKind.PATIENT, subject_id="p2")
PARENT = Requester(kind=ActorKind.REPRESENTATIVE, subject_id="rp1", patient_id="p1")
SYSTEM = Requester(kind=ActorKind.SYSTEM, subject_id="lab")
REPS = {"rp1"}


def idnat(value: str) -> dict:
    return {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": value}}


def message(**kw) -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [MESSAGE_CATEGORY],
        "subject": {"reference": "Patient/p1"},
        "sender": idnat("810000000001"),
        "recipient": [{"reference": "Patient/p1"}],
        "payload": [
            {"contentString": "Vos résultats sont normaux."},
            {"contentReference": {"reference": "DocumentReference/d1"}},
        ],
    } | kw


def reply(**kw) -> dict:
    return (
        message(
            sender={"reference": "Patient/p1"},
            recipient=[idnat("810000000001")],
            inResponseTo=[{"reference": "Communication/m1"}],
            payload=[{"contentString": "Merci docteur."}],
        )
        | kw
    )


def codes(issues) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in issues]


def test_messaging_practitioner_writes_to_patient_with_document_attached():
    assert validate_message(DOCTOR, message()) == []
    Communication.model_validate(message())


def test_messaging_practitioner_writes_to_practitioner_about_patient():
    assert validate_message(DOCTOR, message(recipient=[idnat("810000000002")])) == []


def test_messaging_sender_must_be_the_requester():
    assert codes(validate_message(OTHER_DOCTOR, message())) == [
        ("forbidden", "Communication.sender")
    ]


def test_messaging_patient_answers_a_practitioner():
    assert validate_message(PATIENT, reply()) == []


def test_messaging_patient_does_not_start_a_conversation():
    issues = validate_message(PATIENT, reply(inResponseTo=[]))
    assert ("forbidden", "Communication.inResponseTo") in codes(issues)


def test_messaging_patient_writes_only_about_their_own_record_and_to_practitioners():
    issues = validate_message(
        OTHER_PATIENT,
        reply(sender={"reference": "Patient/p2"}, recipient=[{"reference": "Patient/p1"}]),
    )
    assert ("forbidden", "Communication.subject") in codes(issues)
    assert ("forbidden", "Communication.recipient[0]") in codes(issues)


def test_r07_representative_answers_for_the_minor_they_represent():
    ok = reply(sender={"reference": "RelatedPerson/rp1"})
    assert validate_message(PARENT, ok) == []
    other = reply(sender={"reference": "RelatedPerson/rp1"}, subject={"reference": "Patient/p9"})
    assert ("forbidden", "Communication.subject") in codes(validate_message(PARENT, other))


def test_messaging_recipients_are_the_patient_a_representative_or_a_practitioner_by_identifier():
    bad = message(
        recipient=[
            {"reference": "Practitioner/810000000002"},
            {"reference": "Organization/o1"},
            {"reference": "Patient/p2"},
            {"reference": "RelatedPerson/rp9"},
        ]
    )
    assert codes(validate_message(DOCTOR, bad, representatives_of_patient=REPS)) == [
        ("value", "Communication.recipient[0]"),
        ("value", "Communication.recipient[1]"),
        ("forbidden", "Communication.recipient[2]"),
        ("forbidden", "Communication.recipient[3]"),
    ]
    good = message(recipient=[{"reference": "RelatedPerson/rp1"}])
    assert validate_message(DOCTOR, good, representatives_of_patient=REPS) == []


def test_messaging_attachments_reference_document_references():
    inline = message(
        payload=[{"contentAttachment": {"contentType": "application/pdf", "data": "JVBE"}}]
    )
    assert codes(validate_message(DOCTOR, inline)) == [("value", "Communication.payload[0]")]
    binary = message(payload=[{"contentReference": {"reference": "Binary/b1"}}])
    assert codes(validate_message(DOCTOR, binary)) == [("value", "Communication.payload[0]")]
    empty = message(payload=[{"contentString": "  "}])
    assert codes(validate_message(DOCTOR, empty)) == [("required", "Communication.payload[0]")]


def test_messaging_category_status_subject_and_received_are_checked():
    bad = message(category=[], status="preparation", subject=None, received="2026-11-22T10:00:00Z")
    assert sorted(codes(validate_message(DOCTOR, bad))) == sorted(
        [
            ("value", "Communication.category"),
            ("value", "Communication.status"),
            ("required", "Communication.subject"),
            ("invalid", "Communication.received"),
        ]
    )


def test_r17_only_the_server_writes_notifications():
    n = notification_for_deposit(
        DOCTOR, "p1", NOW, server_base="https://x", document_reference="DocumentReference/d1"
    )
    assert ("forbidden", "Communication.category") in codes(validate_message(DOCTOR, n))


def test_r15_systems_do_not_send_messages():
    assert codes(validate_message(SYSTEM, message())) == [("forbidden", "Communication.sender")]


def test_messaging_reply_goes_back_to_the_participants():
    original = message(id="m1")
    assert validate_reply(reply(), original) == []
    stray = reply(recipient=[idnat("810000000009")])
    assert codes(validate_reply(stray, original)) == [("forbidden", "Communication.recipient[0]")]
    outsider = reply(sender={"reference": "Patient/p2"})
    assert ("forbidden", "Communication.sender") in codes(validate_reply(outsider, original))


def test_r17_notifications_cannot_be_answered():
    n = notification_for_deposit(
        DOCTOR, "p1", NOW, server_base="https://x", document_reference="DocumentReference/d1"
    )
    assert ("forbidden", "Communication.inResponseTo") in codes(validate_reply(reply(), n))


# --- reading ------------------------------------------------------------------------------------


def test_messaging_sender_and_recipients_read_a_message():
    m = message(recipient=[{"reference": "Patient/p1"}, idnat("810000000002")])
    assert may_read_message(DOCTOR, m, REPS, patient_is_minor=False)
    assert may_read_message(NURSE, m, REPS, patient_is_minor=False)
    assert may_read_message(PATIENT, m, REPS, patient_is_minor=False)


def test_messaging_outsiders_do_not_read_a_message():
    m = message()
    assert not may_read_message(OTHER_DOCTOR, m, REPS, patient_is_minor=False)
    assert not may_read_message(OTHER_PATIENT, m, REPS, patient_is_minor=False)
    assert not may_read_message(SYSTEM, m, REPS, patient_is_minor=False)


def test_messaging_patient_does_not_read_practitioners_exchange_about_them():
    m = message(recipient=[idnat("810000000002")])
    assert not may_read_message(PATIENT, m, REPS, patient_is_minor=False)
    assert not may_read_message(PARENT, m, REPS, patient_is_minor=True)


def test_r07_representative_of_a_minor_reads_the_patients_messages():
    assert may_read_message(PARENT, message(), REPS, patient_is_minor=True)


def test_r07_representative_of_an_adult_reads_nothing():
    assert not may_read_message(PARENT, message(), REPS, patient_is_minor=False)
    assert not may_read_message(PARENT, message(), set(), patient_is_minor=True)


def test_r07_representative_never_reads_invisible_representants_legaux_message():
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX}
    m = message(meta={"security": [label]})
    assert not may_read_message(PARENT, m, REPS, patient_is_minor=True)
    assert may_read_message(PATIENT, m, REPS, patient_is_minor=True)


def test_r17_notifications_are_read_by_the_patient_and_representatives_only():
    n = notification_for_deposit(
        DOCTOR, "p1", NOW, server_base="https://x", document_reference="DocumentReference/d1"
    )
    assert may_read_message(PATIENT, n, REPS, patient_is_minor=True)
    assert may_read_message(PARENT, n, REPS, patient_is_minor=True)
    assert not may_read_message(DOCTOR, n, REPS, patient_is_minor=True)
    assert not may_read_message(OTHER_PATIENT, n, REPS, patient_is_minor=True)


def test_r07_notification_of_an_invisible_representants_legaux_document_is_hidden_from_representatives():
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX}
    n = notification_for_deposit(
        DOCTOR,
        "p1",
        NOW,
        server_base="https://x",
        document_reference="DocumentReference/d1",
        labels=[label],
    )
    assert not may_read_message(PARENT, n, REPS, patient_is_minor=True)
    assert may_read_message(PATIENT, n, REPS, patient_is_minor=True)


def test_r14_notification_labelled_invisible_patient_is_hidden_from_the_patient():
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_PATIENT}
    n = notification_for_deposit(
        DOCTOR,
        "p1",
        NOW,
        server_base="https://x",
        document_reference="DocumentReference/d1",
        labels=[label],
    )
    assert not may_read_message(PATIENT, n, REPS, patient_is_minor=True)
    assert not may_read_message(PARENT, n, REPS, patient_is_minor=True)


# --- received -----------------------------------------------------------------------------------


def test_messaging_first_read_by_the_recipient_sets_received():
    m = message()
    read = mark_received(m, NOW, reader=PATIENT)
    assert read["received"] == "2026-11-22T09:42:00Z"
    assert "received" not in m  # the input is not modified
    assert mark_received(read, NOW, reader=PATIENT) is None


def test_messaging_sender_reading_does_not_set_received():
    assert mark_received(message(), NOW, reader=DOCTOR) is None


def test_r07_representative_reading_for_the_minor_sets_received():
    assert mark_received(message(), NOW, reader=PARENT, reader_represents={"p1"}) is not None
    assert mark_received(message(), NOW, reader=PARENT) is None


def test_messaging_practitioner_recipient_by_identifier_sets_received():
    m = message(recipient=[idnat("810000000002")])
    assert mark_received(m, NOW, reader=NURSE)["received"] == "2026-11-22T09:42:00Z"

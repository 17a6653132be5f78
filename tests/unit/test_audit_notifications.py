"""R17: the patient is told about accesses, deposits and authorizations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from fhir.resources.R4B.communication import Communication

from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.audit.notifications import (
    EXT_NOTIFICATION_FACT,
    SYSTEM_COMMUNICATION_CATEGORY,
    SYSTEM_NOTIFICATION_EVENT,
    notification_day,
    notification_for_access,
    notification_for_authorization,
    notification_for_deposit,
    should_notify_access,
    should_notify_deposit,
)
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    SYSTEM_ACCESS_MODE,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
)

BASE = "https://dmp.example.fr/fhir"
# 22/11/2026 10:42 in Paris (UTC+1 in November)
WHEN = datetime(2026, 11, 22, 9, 42, tzinfo=UTC)
DOCTOR = Requester(
    kind=ActorKind.PRACTITIONER,
    subject_id="810000000001",
    display_name="Dr Marie Durand",
    profession="10",
    organization_name="CH Exemple",
)
BDG = replace(
    DOCTOR, access_mode=AccessMode.BRIS_DE_GLACE, access_reason="Patient inconscient aux urgences"
)
C15 = replace(
    DOCTOR,
    organization_name="SAMU 75",
    access_mode=AccessMode.CENTRE_15,
    access_reason="Appel pour douleur thoracique",
)
PATIENT = Requester(kind=ActorKind.PATIENT, subject_id="p1")
REPRESENTATIVE = Requester(kind=ActorKind.REPRESENTATIVE, subject_id="rp1")
SYSTEM = Requester(kind=ActorKind.SYSTEM, subject_id="lab", organization_name="Laboratoire Bio+")
TODAY = date(2026, 11, 22)


def facts(communication: dict) -> dict:
    (ext,) = [e for e in communication["extension"] if e["url"] == EXT_NOTIFICATION_FACT]
    return {e["url"]: e for e in ext["extension"]}


def check_notification_shape(communication: dict, patient_id: str, event: str) -> None:
    Communication.model_validate(communication)
    assert communication["status"] == "completed"
    codes = {(c["system"], c["code"]) for c in communication["category"][0]["coding"]}
    assert (SYSTEM_COMMUNICATION_CATEGORY, "notification") in codes
    assert communication["subject"] == {"reference": f"Patient/{patient_id}"}
    assert communication["recipient"] == [{"reference": f"Patient/{patient_id}"}]
    assert communication["sender"]["type"] == "Device"
    assert communication["sender"]["identifier"]["value"] == BASE
    assert communication["sent"] == "2026-11-22T09:42:00Z"
    f = facts(communication)
    assert f["event"]["valueCoding"] == {"system": SYSTEM_NOTIFICATION_EVENT, "code": event}
    assert f["occurred"]["valueDateTime"] == "2026-11-22T09:42:00Z"


def text(communication: dict) -> str:
    return communication["payload"][0]["contentString"]


def test_r17_first_access_of_the_day_notifies():
    assert should_notify_access(DOCTOR, None, TODAY)
    assert should_notify_access(DOCTOR, date(2026, 11, 21), TODAY)


def test_r17_second_access_the_same_day_does_not_notify():
    assert not should_notify_access(DOCTOR, TODAY, TODAY)


def test_r17_bris_de_glace_notifies_every_time():
    assert should_notify_access(BDG, TODAY, TODAY)
    assert should_notify_access(BDG, None, TODAY)


def test_r17_centre_15_notifies_every_time():
    assert should_notify_access(C15, TODAY, TODAY)


def test_r17_patients_representatives_and_systems_are_never_notified_of_their_own_reads():
    for requester in (PATIENT, REPRESENTATIVE, SYSTEM):
        assert not should_notify_access(requester, None, TODAY)


def test_r17_day_is_the_patients_day_in_paris():
    assert notification_day(datetime(2026, 11, 22, 23, 30, tzinfo=UTC)) == date(2026, 11, 23)
    assert notification_day(datetime(2026, 7, 1, 21, 59, tzinfo=UTC)) == date(2026, 7, 1)
    assert notification_day(datetime(2026, 7, 1, 22, 0, tzinfo=UTC)) == date(2026, 7, 2)


def test_r17_access_notification_reads_in_french():
    n = notification_for_access(
        DOCTOR, "p1", WHEN, server_base=BASE, audit_event_reference="AuditEvent/ae1"
    )
    check_notification_shape(n, "p1", "access")
    assert text(n) == (
        "Le Dr Marie Durand (médecin, CH Exemple) a consulté votre dossier le 22/11/2026 à 10:42."
    )
    f = facts(n)
    assert f["actor"]["valueIdentifier"] == {"system": SYSTEM_IDNAT_PS, "value": "810000000001"}
    assert f["accessMode"]["valueCoding"] == {"system": SYSTEM_ACCESS_MODE, "code": "normal"}
    assert "reason" not in f
    assert n["about"] == [{"reference": "AuditEvent/ae1"}]


def test_r17_summer_time_is_applied_in_the_text():
    n = notification_for_access(
        DOCTOR, "p1", datetime(2026, 7, 1, 8, 5, tzinfo=UTC), server_base=BASE
    )
    assert "le 01/07/2026 à 10:05." in text(n)


def test_r17_bris_de_glace_notification_says_emergency_and_the_reason():
    n = notification_for_access(BDG, "p1", WHEN, server_base=BASE)
    check_notification_shape(n, "p1", "access")
    assert text(n) == (
        "Le Dr Marie Durand (médecin, CH Exemple) a accédé à votre dossier en urgence "
        "(bris de glace) le 22/11/2026 à 10:42. Motif déclaré : Patient inconscient aux urgences."
    )
    f = facts(n)
    assert f["accessMode"]["valueCoding"]["code"] == "bris_de_glace"
    assert f["reason"]["valueString"] == "Patient inconscient aux urgences"


def test_r17_centre_15_notification_names_the_regulation_and_reason():
    n = notification_for_access(C15, "p1", WHEN, server_base=BASE)
    check_notification_shape(n, "p1", "access")
    assert text(n).startswith("Le Dr Marie Durand (médecin, SAMU 75) a accédé à votre dossier")
    assert "centre 15" in text(n)
    assert text(n).endswith("Motif déclaré : Appel pour douleur thoracique.")
    assert facts(n)["accessMode"]["valueCoding"]["code"] == "centre_15"


def test_r17_deposit_notification_names_the_document_and_depositor():
    n = notification_for_deposit(
        SYSTEM,
        "p1",
        WHEN,
        server_base=BASE,
        document_reference="DocumentReference/d1",
        document_title="Compte rendu de biologie",
    )
    check_notification_shape(n, "p1", "deposit")
    assert text(n) == (
        "Un nouveau document a été ajouté à votre dossier : Compte rendu de biologie, "
        "le 22/11/2026 à 10:42, par Laboratoire Bio+."
    )
    assert n["about"] == [{"reference": "DocumentReference/d1"}]
    assert facts(n)["document"]["valueReference"]["reference"] == "DocumentReference/d1"


def test_r17_deposit_by_a_practitioner_names_them():
    n = notification_for_deposit(
        DOCTOR,
        "p1",
        WHEN,
        server_base=BASE,
        document_reference="DocumentReference/d1",
        document_title="Lettre de liaison",
    )
    assert text(n).endswith("par le Dr Marie Durand (médecin, CH Exemple).")


def test_r07_deposit_notification_carries_the_document_labels():
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX}
    n = notification_for_deposit(
        DOCTOR,
        "p1",
        WHEN,
        server_base=BASE,
        document_reference="DocumentReference/d1",
        labels=[label],
    )
    assert n["meta"]["security"] == [label]


def test_r17_deposit_is_notified_unless_by_the_patient_side_or_invisible_to_the_patient():
    assert should_notify_deposit(DOCTOR)
    assert should_notify_deposit(SYSTEM)
    assert not should_notify_deposit(PATIENT)
    assert not should_notify_deposit(REPRESENTATIVE)
    hidden = [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_PATIENT}]
    assert not should_notify_deposit(DOCTOR, hidden)


def test_r17_authorization_recorded_by_a_practitioner_tells_how_to_withdraw():
    n = notification_for_authorization(
        DOCTOR, "p1", WHEN, server_base=BASE, consent_reference="Consent/c1"
    )
    check_notification_shape(n, "p1", "authorization")
    assert text(n).startswith(
        "Le Dr Marie Durand (médecin, CH Exemple) s'est déclaré(e) membre de votre équipe de "
        "soins le 22/11/2026 à 10:42"
    )
    assert "Vous pouvez retirer cette autorisation" in text(n)
    assert facts(n)["consent"]["valueReference"] == {"reference": "Consent/c1"}

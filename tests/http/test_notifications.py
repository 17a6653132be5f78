"""R17 "The patient is told": Communications (category notification) written by the server.

Each case goes through the HTTP face with the actors' tokens; the server's clock is injected
so that "first access of the day" can be checked across days.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from flask import Flask

from fhir_server.access.requester import INTERNAL
from fhir_server.audit.notifications import EXT_NOTIFICATION_FACT, SYSTEM_COMMUNICATION_CATEGORY
from fhir_server.config import load_settings
from fhir_server.terminology import (
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_V3_ROLE_CODE,
)
from tests.http.conftest import (
    FHIR_JSON,
    Tokens,
    a_patient,
    auth,
    create_test_app,
    dmp_consent,
    permit,
)
from tests.support.documents import dmp_document

AUTHORIZED = "810000000020"
OTHER = "810000000021"
STRANGER = "810000000099"
CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"
NOTIFICATIONS = f"category={quote(SYSTEM_COMMUNICATION_CATEGORY + '|notification')}"


class Clock:
    """The server's clock, moved by the tests (epoch microseconds)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> int:
        return int(self.now.timestamp() * 1_000_000)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def consent(patient_id: str, *idnats: str) -> dict:
    """A DMP Consent authorizing each of `idnats` (R10)."""
    return dmp_consent(patient_id, *(permit(i) for i in idnats))


def document(patient_id: str, title: str, label: str | None = None) -> dict:
    """A DMP document by OTHER (`tests.support.documents`), its bytes inline (ITI-105)."""
    resource = dmp_document(patient_id, content_type="application/pdf", title=title, label=label)
    resource["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": OTHER}}]
    if label:
        resource["meta"] = {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}]}
    return resource


@dataclass
class Family:
    """An adult patient, a minor with a parent (RelatedPerson PRN), both authorizing two doctors."""

    app: Flask
    tokens: Tokens
    clock: Clock
    service: object
    patient: str
    minor: str
    parent: str


def family_record(tmp_path) -> Family:
    clock = Clock(datetime(2024, 3, 1, 9, 0, tzinfo=UTC))
    settings = load_settings({"data_dir": tmp_path / "var", "max_body_bytes": 200_000}, environ={})
    app = create_test_app(settings, clock=clock)
    service = app.extensions["fhir"].service
    patient = service.create(INTERNAL, "Patient", a_patient(1)).stored.id
    minor = service.create(INTERNAL, "Patient", a_patient(2, birthDate="2016-04-02")).stored.id
    parent = service.create(
        INTERNAL,
        "RelatedPerson",
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{minor}"},
            "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
            "name": [{"family": "Durand", "given": ["Paul"]}],
        },
    ).stored.id
    for pid in (patient, minor):
        service.create(INTERNAL, "Consent", consent(pid, AUTHORIZED, OTHER))
    return Family(app, Tokens(tmp_path / "var"), clock, service, patient, minor, parent)


@pytest.fixture
def world(tmp_path):
    family = family_record(tmp_path)
    yield (
        family.app.test_client(),
        family.tokens,
        family.clock,
        family.patient,
        family.minor,
        family.parent,
        family.service,
    )
    family.app.extensions["fhir"].store.close()


def notifications(client, token: str, patient_id: str | None = None) -> list[dict]:
    query = NOTIFICATIONS + (f"&subject=Patient/{patient_id}" if patient_id else "") + "&_count=100"
    bundle = client.get(f"/fhir/Communication?{query}", headers=auth(token)).get_json()
    assert bundle["resourceType"] == "Bundle", bundle
    return [entry["resource"] for entry in bundle.get("entry", [])]


def facts(communication: dict) -> dict:
    extension = next(e for e in communication["extension"] if e["url"] == EXT_NOTIFICATION_FACT)
    out = {}
    for fact in extension["extension"]:
        value = next(v for k, v in fact.items() if k.startswith("value"))
        out[fact["url"]] = value
    return out


def read_documents(client, token: str, patient_id: str) -> None:
    response = client.get(f"/fhir/DocumentReference?patient={patient_id}", headers=auth(token))
    assert response.status_code == 200, response.get_json()


def test_r17_normal_access_is_notified_once_per_practitioner_per_day(world):
    client, tokens, clock, patient, _, _, _ = world
    doctor, colleague = tokens.practitioner(AUTHORIZED), tokens.practitioner(OTHER)
    for _ in range(3):
        read_documents(client, doctor, patient)
        clock.advance(minutes=5)
    assert client.get(f"/fhir/Patient/{patient}", headers=auth(doctor)).status_code == 200
    read_documents(client, colleague, patient)
    told = notifications(client, tokens.patient(patient))
    assert sorted(facts(n)["actor"]["value"] for n in told) == [AUTHORIZED, OTHER]
    mine = next(n for n in told if facts(n)["actor"]["value"] == AUTHORIZED)
    assert mine["payload"][0]["contentString"] == (
        "Le Dr Marie Durand (médecin, CH Exemple) a consulté votre dossier le 01/03/2024 à 10:00."
    )
    assert facts(mine)["accessMode"]["code"] == "normal"
    assert facts(mine)["event"]["code"] == "access"
    assert mine["recipient"] == [{"reference": f"Patient/{patient}"}]
    # No AuditEvent named: one hidden from the patient (an access to an INVISIBLE_PATIENT
    # document) told them so (tests/http/test_attack_pass_messaging.py).
    assert "auditEvent" not in facts(mine) and "about" not in mine
    # The next day (Europe/Paris) is a new first access.
    clock.advance(days=1)
    read_documents(client, doctor, patient)
    read_documents(client, doctor, patient)
    assert len(notifications(client, tokens.patient(patient))) == 3


def test_r17_day_boundary_is_the_patients_local_day(world):
    client, tokens, clock, patient, _, _, _ = world
    doctor = tokens.practitioner(AUTHORIZED)
    clock.now = datetime(2024, 3, 1, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    read_documents(client, doctor, patient)
    clock.now = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)  # 00:30 the next day in Paris
    read_documents(client, doctor, patient)
    assert len(notifications(client, tokens.patient(patient))) == 2


@pytest.mark.parametrize(
    ("mode", "reason", "phrase"),
    [
        ("bris_de_glace", "Patient inconscient aux urgences", "en urgence (bris de glace)"),
        ("centre_15", "Appel au 15 pour malaise", "centre 15, SAMU"),
    ],
)
def test_r17_bris_de_glace_and_centre_15_are_notified_each_time_with_the_reason(
    world, mode, reason, phrase
):
    client, tokens, _, patient, _, _, _ = world
    emergency = tokens.practitioner(STRANGER, mode=mode, reason=reason)
    read_documents(client, emergency, patient)
    read_documents(client, emergency, patient)
    assert client.get(f"/fhir/Patient/{patient}", headers=auth(emergency)).status_code == 200
    told = notifications(client, tokens.patient(patient))
    assert len(told) == 3
    for notification in told:
        text = notification["payload"][0]["contentString"]
        assert phrase in text and f"Motif déclaré : {reason}" in text
        assert facts(notification)["accessMode"]["code"] == mode
        assert facts(notification)["reason"] == reason


def test_r17_patient_and_system_reads_are_not_notified(world):
    client, tokens, _, patient, _, _, _ = world
    own = tokens.patient(patient)
    read_documents(client, own, patient)
    client.get(
        f"/fhir/Patient/{patient}",
        headers=auth(tokens.system(organization_type="admin", scope="system/Patient.rs")),
    )
    assert notifications(client, own) == []


def test_r17_a_deposit_is_notified_with_the_documents_title(world):
    client, tokens, _, patient, _, _, _ = world
    system = tokens.system(
        "lab", scope="system/DocumentReference.c system/Binary.c", organization_type="laboratory"
    )
    created = client.post(
        "/fhir/DocumentReference",
        data=json.dumps(document(patient, "Compte rendu d'hospitalisation")),
        headers=auth(system, **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_json()
    told = notifications(client, tokens.patient(patient))
    assert len(told) == 1
    assert told[0]["payload"][0]["contentString"].startswith(
        "Un nouveau document a été ajouté à votre dossier : Compte rendu d'hospitalisation, le 01/03/2024 à 10:00"
    )
    assert facts(told[0])["event"]["code"] == "deposit"
    assert told[0]["about"] == [{"reference": f"DocumentReference/{created.get_json()['id']}"}]


def test_r17_a_deposit_labelled_invisible_patient_is_not_announced(world):
    client, tokens, _, patient, _, _, _ = world
    doctor = tokens.practitioner(AUTHORIZED)
    created = client.post(
        "/fhir/DocumentReference",
        data=json.dumps(document(patient, "Résultat à annoncer", "INVISIBLE_PATIENT")),
        headers=auth(doctor, **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_json()
    assert [facts(n)["event"]["code"] for n in notifications(client, tokens.patient(patient))] == []


def test_r17_r07_deposit_hidden_from_representatives_is_not_notified_to_them(world):
    client, tokens, _, _, minor, parent, _ = world
    doctor = tokens.practitioner(AUTHORIZED)
    for title, label in (
        ("Bilan", None),
        ("Consultation confidentielle", "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ):
        created = client.post(
            "/fhir/DocumentReference",
            data=json.dumps(document(minor, title, label)),
            headers=auth(doctor, **{"Content-Type": FHIR_JSON}),
        )
        assert created.status_code == 201
    parent_token = tokens.issuer.issue(
        subject=parent, scopes="patient/*.cruds", fhir_user=f"RelatedPerson/{parent}", patient=minor
    )
    seen_by_parent = [
        facts(n)["document"]["display"] for n in notifications(client, parent_token, minor)
    ]
    seen_by_minor = [
        facts(n)["document"]["display"] for n in notifications(client, tokens.patient(minor))
    ]
    assert seen_by_parent == ["Bilan"]
    assert sorted(seen_by_minor) == ["Bilan", "Consultation confidentielle"]


def test_r17_r10_an_authorization_recorded_by_a_practitioner_is_notified(world):
    client, tokens, _, patient, _, _, _ = world
    newcomer = "810000000055"
    created = client.post(
        "/fhir/Consent",
        # Their own authorization only: the patient's initial consent is on the patient's
        # Consent of the fixture.
        data=json.dumps(dmp_consent(patient, permit(newcomer), initial_consent=False)),
        headers=auth(tokens.practitioner(newcomer), **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_json()
    told = notifications(client, tokens.patient(patient))
    assert [facts(n)["event"]["code"] for n in told] == ["authorization"]
    assert facts(told[0])["consent"]["reference"] == f"Consent/{created.get_json()['id']}"
    assert "Vous pouvez retirer cette autorisation" in told[0]["payload"][0]["contentString"]


def test_r17_r16_notifications_are_not_audited_as_accesses_and_are_sent_by_the_server(world):
    client, tokens, _, patient, _, _, _ = world
    read_documents(client, tokens.practitioner(AUTHORIZED), patient)
    own = tokens.patient(patient)
    told = notifications(client, own)
    assert len(told) == 1 and told[0]["sender"]["type"] == "Device"
    events = client.get(
        f"/fhir/AuditEvent?patient={patient}&_count=100", headers=auth(own)
    ).get_json()
    writes_of_communications = [
        e["resource"]
        for e in events.get("entry", [])
        if e["resource"]["action"] == "C"
        and any(
            (entity.get("what") or {}).get("reference", "").startswith("Communication/")
            for entity in e["resource"]["entity"]
        )
    ]
    assert writes_of_communications == []
    # The practitioner who opened the record cannot read the notification about it.
    assert (
        client.get(
            f"/fhir/Communication/{told[0]['id']}", headers=auth(tokens.practitioner(AUTHORIZED))
        ).status_code
        == 404
    )


def test_r17_an_emergency_update_that_keeps_a_hidden_reference_is_notified(world):
    """R11/R17: each bris de glace access is notified, a write too. An update whose current
    version names a document hidden from the writer (MASQUE_PS, R14) keeps that reference
    (`access.hidden_references`), so what is written is not the object the gate judged: the
    notes of the gate's Permit must still reach the write's audit (issue #22, the Permit
    handed on rather than stashed under the judged object's id)."""
    client, tokens, _, patient, _, _, service = world
    emergency = tokens.practitioner(
        STRANGER, mode="bris_de_glace", reason="Patient inconscient aux urgences"
    )
    masked = service.create(INTERNAL, "DocumentReference", document(patient, "Masqué", "MASQUE_PS"))
    mine = document(patient, "Compte rendu")
    mine["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": STRANGER}}]
    mine["relatesTo"] = [
        {"code": "appends", "target": {"reference": f"DocumentReference/{masked.stored.id}"}}
    ]
    mine_id = service.create(INTERNAL, "DocumentReference", mine).stored.id
    served = client.get(f"/fhir/DocumentReference/{mine_id}", headers=auth(emergency))
    assert served.status_code == 200, served.get_json()
    shown = served.get_json()
    assert "relatesTo" not in shown  # the masked document is not named to this reader
    shown["description"] = "Complété aux urgences"
    updated = client.put(
        f"/fhir/DocumentReference/{mine_id}",
        data=json.dumps(shown),
        headers=auth(emergency, **{"Content-Type": FHIR_JSON}),
    )
    assert updated.status_code == 200, updated.get_json()
    stored = service.store.read("DocumentReference", mine_id).json()
    assert stored["relatesTo"] == mine["relatesTo"]  # kept, as the writer could not see it
    told = notifications(client, tokens.patient(patient))
    # The read, then the update: each bris de glace access is told, with its reason.
    assert len(told) == 2
    assert all(facts(n)["accessMode"]["code"] == "bris_de_glace" for n in told)

"""R03 "A record must exist and be open": opposition, closure, reopening, ten-year retention."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.audit.verify import verify_store
from fhir_server.config import load_settings
from fhir_server.lifecycle_cli import add_record_command
from fhir_server.service import lifecycle
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    a_patient,
    auth,
    create_test_app,
    current_engine,
    valid_nir,
)
from tests.http.test_notifications import AUTHORIZED, Clock, consent, document


@pytest.fixture
def world(tmp_path):
    clock = Clock(datetime(2024, 3, 1, 9, 0, tzinfo=UTC))
    data_dir = tmp_path / "var"
    settings = load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
    app = create_test_app(settings, clock=clock)
    runtime = app.extensions["fhir"]
    patient = runtime.service.create(INTERNAL, "Patient", a_patient(1)).stored.id
    runtime.service.create(INTERNAL, "Consent", consent(patient, AUTHORIZED))
    yield app.test_client(), Tokens(data_dir), clock, runtime, patient, data_dir
    runtime.store.close()


def deposit(client, token: str, patient_id: str):
    return client.post(
        "/fhir/DocumentReference",
        data=json.dumps(document(patient_id, "Bilan")),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def test_r03_opposition_before_creation_refuses_deposits_and_reads(world):
    client, tokens, _, runtime, _, _ = world
    nir = valid_nir(7)
    opposed = lifecycle.oppose_creation(
        runtime.service, nir, family="Martin", given="Luc", gender="male", birth_date="1970-01-01"
    )
    assert lifecycle.oppose_creation(runtime.service, nir).id == opposed.id  # idempotent
    system = tokens.system(
        "lab", scope="system/DocumentReference.c system/Binary.c", organization_type="laboratory"
    )
    refused = deposit(client, system, opposed.id)
    assert refused.status_code == 422
    assert refused.get_json()["issue"][0]["details"]["coding"][0]["code"] == "record-opposed"
    read = client.get(
        f"/fhir/DocumentReference?patient={opposed.id}",
        headers=auth(tokens.practitioner(AUTHORIZED)),
    )
    assert read.status_code == 403
    assert read.get_json()["issue"][0]["details"]["coding"][0]["code"] == "record-opposed"
    with pytest.raises(Exception) as raised:
        lifecycle.reopen_record(runtime.service, opposed.id)
    assert getattr(raised.value, "status", None) == 409


def test_r03_opposition_is_refused_when_a_record_exists(world):
    _, _, _, runtime, _, _ = world
    with pytest.raises(Exception) as raised:
        lifecycle.oppose_creation(runtime.service, valid_nir(1), ins_system=INS_SYSTEM)
    assert getattr(raised.value, "status", None) == 409


def test_r03_closed_record_refuses_reads_and_deposits_until_reopened(world):
    client, tokens, _, runtime, patient, _ = world
    doctor = tokens.practitioner(AUTHORIZED)
    assert deposit(client, doctor, patient).status_code == 201
    lifecycle.close_record(runtime.service, patient)
    closed = client.get(f"/fhir/DocumentReference?patient={patient}", headers=auth(doctor))
    assert closed.status_code == 403
    assert closed.get_json()["issue"][0]["details"]["coding"][0]["code"] == "record-closed"
    assert deposit(client, doctor, patient).status_code == 422
    lifecycle.reopen_record(runtime.service, patient)
    assert (
        client.get(f"/fhir/DocumentReference?patient={patient}", headers=auth(doctor)).status_code
        == 200
    )


def test_r03_r15_health_insurer_closes_a_record_by_patient_update(world):
    client, tokens, _, runtime, patient, _ = world
    body = runtime.store.read("Patient", patient).json()
    body.pop("meta")
    updated = client.put(
        f"/fhir/Patient/{patient}",
        data=json.dumps(lifecycle.with_status(body, "closed")),
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert updated.status_code == 200, updated.get_json()
    assert deposit(client, tokens.practitioner(AUTHORIZED), patient).status_code == 422


def test_r03_closure_date_is_the_version_that_closed_the_record(world):
    _, _, clock, runtime, patient, _ = world
    assert lifecycle.closed_since(runtime.store, patient) is None
    lifecycle.close_record(runtime.service, patient)
    closed_at = clock.now
    clock.advance(days=30)
    # A later change to the closed Patient does not restart the retention clock.
    body = runtime.store.read("Patient", patient).json()
    body.pop("meta")
    body["gender"] = "other"
    runtime.service.update(INTERNAL, "Patient", patient, body)
    assert lifecycle.closed_since(runtime.store, patient) == closed_at
    lifecycle.reopen_record(runtime.service, patient)
    assert lifecycle.closed_since(runtime.store, patient) is None


def test_r03_retention_purges_after_ten_years_and_keeps_audit_events(world):
    client, tokens, clock, runtime, patient, _ = world
    other = runtime.service.create(INTERNAL, "Patient", a_patient(2)).stored.id
    doctor = tokens.practitioner(AUTHORIZED)
    document_id = deposit(client, doctor, patient).get_json()["id"]
    client.get(f"/fhir/DocumentReference/{document_id}", headers=auth(doctor))
    audit_before = {
        row[1]
        for row in runtime.store.search(
            __import__("fhir_server.search.query", fromlist=["SearchQuery"]).SearchQuery(
                "AuditEvent", count=1000
            ),
            cursor_key=runtime.service.cursor_key,
            cursor_binding="internal",
        ).rows
    }
    assert audit_before
    lifecycle.close_record(runtime.service, patient)
    closed_at = clock.now
    # Nine years and 364 days: kept.
    report = lifecycle.purge_expired(runtime.service, datetime(2034, 2, 28, 9, 0, tzinfo=UTC))
    assert report.patients == [] and runtime.store.read("Patient", patient) is not None
    report = lifecycle.purge_expired(runtime.service, closed_at.replace(year=2034))
    assert report.patients == [patient]
    assert runtime.store.read("Patient", patient) is None
    assert runtime.store.vread("Patient", patient, 1) is None
    assert runtime.store.read("DocumentReference", document_id) is None
    assert (
        runtime.store.history(
            "DocumentReference", document_id, since=None, count=5, cursor=None
        ).entries
        == []
    )
    assert runtime.store.read("Binary", "b1") is None
    consents = runtime.service.find(INTERNAL, "Consent", [("patient", f"Patient/{patient}")])
    assert consents == []
    notifications = runtime.service.find(
        INTERNAL, "Communication", [("subject", f"Patient/{patient}")]
    )
    assert notifications == []
    # AuditEvents stay, and the chain still verifies.
    for event_id in audit_before:
        assert runtime.store.read("AuditEvent", event_id) is not None
    assert verify_store(runtime.store).ok
    # Other records are untouched.
    assert runtime.store.read("Patient", other) is not None


def test_r03_record_commands_close_reopen_and_purge(world, capsys):
    if current_engine() != "sqlite":
        pytest.skip("the command opens the data dir's store (SQLite): mongomock's is in memory")
    _, _, _, runtime, patient, data_dir = world
    parser = argparse.ArgumentParser()
    add_record_command(parser.add_subparsers())

    def run(*argv: str) -> int:
        args = parser.parse_args([*argv[:2], "--data-dir", str(data_dir), *argv[2:]])
        return args.func(args)

    assert run("record", "close", patient) == 0
    assert lifecycle.record_status(runtime.store.read("Patient", patient).json()) == "closed"
    assert run("record", "purge", "--now", "2025-01-01T00:00:00Z") == 0
    assert "purged 0 record(s)" in capsys.readouterr().out
    assert run("record", "reopen", patient) == 0
    assert lifecycle.record_status(runtime.store.read("Patient", patient).json()) == "open"
    assert (
        run(
            "record",
            "oppose",
            "--ins",
            valid_nir(8),
            "--family",
            "Petit",
            "--given",
            "Léa",
            "--gender",
            "female",
            "--birth-date",
            "1990-05-05",
        )
        == 0
    )
    assert "opposition recorded: Patient/" in capsys.readouterr().out

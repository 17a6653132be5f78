"""Record facts are cached per process, never stale (R09, R10): the record epoch.

Two apps on one data directory (on MongoDB: one database) stand for two gunicorn workers: a Consent change written
through one is enforced at once by the other, whose cache held the earlier facts.
"""

from __future__ import annotations

import json

from fhir_server.config import load_settings
from tests.http.conftest import (
    FHIR_JSON,
    a_patient,
    another_worker,
    auth,
    deny,
    dmp_consent,
    permit,
)

IDNAT = "810000000042"


def _consent(patient_id: str, kind: str) -> dict:
    return dmp_consent(patient_id, permit(IDNAT) if kind == "permit" else deny(IDNAT))


def test_r09_a_block_written_by_one_worker_is_enforced_by_another(data_dir, tokens, app, client):
    other_worker = another_worker(app, load_settings({"data_dir": data_dir}, environ={}))
    other_worker = other_worker.test_client()
    patient = client.post(
        "/fhir/Patient",
        data=json.dumps(a_patient()),
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    ).get_json()
    patient_token = tokens.patient(patient["id"])
    consent = client.post(
        "/fhir/Consent",
        data=json.dumps(_consent(patient["id"], "permit")),
        headers=auth(patient_token, **{"Content-Type": FHIR_JSON}),
    ).get_json()
    practitioner = tokens.practitioner(IDNAT)
    search = f"/fhir/DocumentReference?patient={patient['id']}"
    assert (
        other_worker.get(search, headers=auth(practitioner)).status_code == 200
    )  # cached: authorized (R10)
    blocked = {**_consent(patient["id"], "deny"), "id": consent["id"]}
    assert (
        client.put(
            f"/fhir/Consent/{consent['id']}",
            data=json.dumps(blocked),
            headers=auth(patient_token, **{"Content-Type": FHIR_JSON}),
        ).status_code
        == 200
    )
    assert (
        other_worker.get(search, headers=auth(practitioner)).status_code == 403
    )  # the block holds at once

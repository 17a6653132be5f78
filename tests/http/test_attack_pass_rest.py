"""Attack pass on the FHIR REST face after issue #18: what still got through, as regressions.

Each test is named after the rule it protects; its docstring says what got through before
the fix. Everything goes through HTTP with the tokens `fhir-server token` makes.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_ACT_REASON
from tests.http.conftest import FHIR_JSON, a_patient, auth, deny, dmp_consent, permit
from tests.support.documents import dmp_document

BLOCKED = "810000000030"
STRANGER = "810000000099"


@pytest.fixture
def service(app):
    return app.extensions["fhir"].service


def _oppose(purpose: str) -> dict:
    return {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": purpose}]}


def test_r09_r11_block_and_btg_opposition_hold_past_a_hundred_consents(client, tokens, service):
    """A practitioner recording their own authorization (R10) over and over pushed the
    patient's Consent out of the first 100 Consents the record was built from: the block
    (R09) and the opposition to bris de glace (R11) were then ignored, and the blocked
    practitioner read the record in bris de glace mode. Past 100 Consents (here from 101
    professionals) the record still reads every one."""
    patient_id = "0c0c0c0c-0000-4000-8000-000000000001"
    service.update(INTERNAL, "Patient", patient_id, {**a_patient(7), "id": patient_id})
    # The patient's choices, under an id that sorts after every server-assigned one.
    consent_id = "ffffffff-ffff-4fff-bfff-ffffffffffff"
    choices = dmp_consent(patient_id, deny(BLOCKED), _oppose("BTG"))
    service.update(INTERNAL, "Consent", consent_id, {**choices, "id": consent_id})

    search = f"/fhir/DocumentReference?patient={patient_id}"
    emergency = tokens.practitioner(BLOCKED, mode="bris_de_glace", reason="patient inconscient")
    assert client.get(search, headers=auth(emergency)).status_code == 403

    # 101 professionals each record their own authorization once (R10; a second one by the
    # same professional is refused, see below).
    for n in range(101):
        idnat = f"81000001{n:04d}"
        response = client.post(
            "/fhir/Consent",
            json=dmp_consent(patient_id, permit(idnat), initial_consent=False),
            headers=auth(tokens.practitioner(idnat), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
    stranger = tokens.practitioner("810000010000")

    assert client.get(search, headers=auth(emergency)).status_code == 403
    assert client.get(search, headers=auth(tokens.practitioner(BLOCKED))).status_code == 403
    other = tokens.practitioner("810000000088", mode="bris_de_glace", reason="patient inconscient")
    assert client.get(search, headers=auth(other)).status_code == 403
    assert client.get(search, headers=auth(stranger)).status_code == 200


def test_r10_a_practitioner_records_their_own_authorization_once(client, tokens, service):
    """Any professional not blocked could file their own authorization (R10) again and again:
    each one notified the patient and lengthened the record every decision reads. A second
    one, while the first holds, is refused (409) and notifies nobody."""
    patient_id = "0c0c0c0c-0000-4000-8000-000000000003"
    service.update(INTERNAL, "Patient", patient_id, {**a_patient(9), "id": patient_id})
    # The patient's initial consent to the care team's access (CE 15/10/2025), without which
    # no one records their own authorization.
    initial = dmp_consent(patient_id)
    service.update(INTERNAL, "Consent", "initial-0003", {**initial, "id": "initial-0003"})
    stranger = tokens.practitioner(STRANGER)
    headers = auth(stranger, **{"Content-Type": FHIR_JSON})
    consent = dmp_consent(patient_id, permit(STRANGER), initial_consent=False)
    assert client.post("/fhir/Consent", json=consent, headers=headers).status_code == 201
    again = client.post("/fhir/Consent", json=consent, headers=headers)
    assert again.status_code == 409, again.get_data(as_text=True)
    patient = tokens.patient(patient_id)
    notes = client.get(f"/fhir/Communication?subject={patient_id}", headers=auth(patient))
    recorded = [
        e for e in notes.get_json().get("entry", []) if STRANGER in json.dumps(e["resource"])
    ]
    assert len(recorded) == 1
    consents = client.get(f"/fhir/Consent?patient={patient_id}", headers=auth(patient))
    assert len(consents.get_json()["entry"]) == 2  # the initial consent and one authorization


A07 = "urn:oid:1.2.250.1.213.1.1.4.13"


@pytest.mark.parametrize(
    "where, label",
    [
        ("securityLabel", {"text": "MASQUE_PS"}),
        ("securityLabel", {"text": "INVISIBLE_PATIENT "}),
        ("securityLabel", {"coding": [{"system": A07, "display": "MASQUE_PS"}]}),
        ("securityLabel", {"coding": [{"display": "MASQUE_PS"}]}),
        ("meta.security", {"system": A07, "display": "MASQUE_PS"}),
        ("meta.security", {"system": A07}),
    ],
)
def test_r14_a_masking_label_the_rules_cannot_read_is_refused(
    client, tokens, service, where, label
):
    """A masking label given only as text, or as a TRE_A07 coding without its code, was stored
    (201) and ignored: the document was served to every authorized professional (or to the
    patient) it was meant to be hidden from."""
    patient_id = "0c0c0c0c-0000-4000-8000-000000000002"
    service.update(INTERNAL, "Patient", patient_id, {**a_patient(8), "id": patient_id})
    document = dmp_document(patient_id, content=b"hi", content_type="text/plain")
    confidentiality = document["securityLabel"]  # the one v3 code the DMP requires
    if where == "securityLabel":
        document["securityLabel"] = [label, *confidentiality]
    else:
        document["meta"] = {"security": [label]}
    headers = auth(tokens.practitioner("810000000040"), **{"Content-Type": FHIR_JSON})
    response = client.post("/fhir/DocumentReference", json=document, headers=headers)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "code-invalid"
    # the same label written with its system and code is accepted
    coded = {"system": A07, "code": "MASQUE_PS"}
    document.pop("meta", None)
    document["securityLabel"] = [{"coding": [coded], "text": "MASQUE_PS"}, *confidentiality]
    assert client.post("/fhir/DocumentReference", json=document, headers=headers).status_code == 201

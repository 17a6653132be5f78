"""Attack pass: how the server interprets Consent resources (R09-R12, the initial consent,
docs/access-rules.md "Consent shapes"). Fail closed: a Consent the rules cannot read is
refused at write (422 naming the element), and a stored one grants nothing.

Each Consent is written by the patient, who may write their Consents (R06), through REST
create, update and a transaction; a professional STRANGER is the one a shape would grant.

What got through (each stored, and read as an R10 authorization of STRANGER to the whole
record):

- a Consent of a category the rules do not read (a research consent, an unknown system, a
  category with text only): read as the DMP patient consent;
- an actor whose reference is typed Organization, CareTeam, Group or PractitionerRole, with
  an IdNat_PS identifier: read as the practitioner of that IdNat_PS, everywhere;
- an actor whose role carries IRCP beside another role (PRN): read as IRCP alone;
- an actor identifier no longer in force (`use: old`, a `period` that ended): read as in force;
- a `Consent.dateTime` still to come: a professional's initial-consent declaration dated next
  year opened the record today to the authorization they then recorded for themselves.

A stored Consent of these shapes (written before) is read as uninterpretable: every
professional but the médecin traitant is refused (R09's fail closed).

What held (controls kept below): nested provisions deeper than one level, `class`, `code`,
`action`, `securityLabel`, `data`, `dataPeriod` and `period` in a nested provision (a
class-restricted or dated BTG/ETREAT opposition among them), a purpose other than BTG/ETREAT
or on a permit, another actor role, an actor reference to an Organization or a contained
resource, scope other than patient-privacy, `policyRule` OPTOUT, `Consent.patient` by
identifier or naming another patient, a draft of an unreadable shape, a root `deny`; a root
period still to come grants nothing; two active Consents that disagree (the deny wins); an
update or a delete of a Consent takes effect at once, the requester's facts warm.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.access.record import latest_date
from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_ACT_REASON, SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, a_patient, auth, deny, dmp_consent, internal_put, permit
from tests.http.test_normal_form import AUTHORIZED, GP, PATIENT_A, PATIENT_B, post

STRANGER = "810000000040"  # named in no Consent of the record
CARE = "810000000060"  # a professional of the care team, declaring an initial consent
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


@pytest.fixture
def record(app):
    """Patient A (médecin traitant GP, no Consent) and patient B (authorizes AUTHORIZED,
    initial consent collected)."""
    service = app.extensions["fhir"].service

    put = internal_put(service)

    gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    put(a_patient(1, generalPractitioner=gp), PATIENT_A)
    put(a_patient(2), PATIENT_B)
    put(dmp_consent(PATIENT_B, permit(AUTHORIZED)), "consent-b")
    return service


def _later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds")


def _actor(**reference: object) -> dict:
    """A permit of STRANGER whose actor's reference carries `reference` besides its IdNat_PS."""
    provision = permit(STRANGER)
    provision["actor"][0]["reference"].update(reference)
    return provision


def _identifier(**extra: object) -> dict:
    """A permit of STRANGER whose IdNat_PS identifier carries `extra`."""
    provision = permit(STRANGER)
    provision["actor"][0]["reference"]["identifier"].update(extra)
    return provision


def _role(*codings: dict) -> dict:
    provision = permit(STRANGER)
    provision["actor"][0]["role"] = {"coding": list(codings)}
    return provision


IRCP = {"system": ROLE_SYSTEM, "code": "IRCP"}
PRN = {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}


def _consent(patient: str, provision: dict | None = None, **root: object) -> dict:
    """The patient's Consent granting STRANGER (or `provision`), root elements replaced."""
    consent = dmp_consent(patient, provision or permit(STRANGER))
    consent.update(copy.deepcopy(root))
    return consent


# Each shape: (the Consent's changes, the issue expression the refusal names).
SHAPES: dict[str, tuple[Callable[[str], dict], str]] = {
    "category-research": (
        lambda p: _consent(
            p,
            category=[
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes",
                            "code": "research",
                        }
                    ]
                }
            ],
        ),
        "Consent.category[0].coding[0]",
    ),
    "category-beside-the-patient-consent": (
        lambda p: _consent(
            p,
            category=[
                {
                    "coding": [
                        {"system": "http://loinc.org", "code": "59284-0"},
                        {"system": "http://loinc.org", "code": "64292-6"},
                    ]
                }
            ],
        ),
        "Consent.category[0].coding[1]",
    ),
    "category-text-only": (
        lambda p: _consent(p, category=[{"text": "Consent to a research study"}]),
        "Consent.category[0]",
    ),
    "actor-typed-Organization": (
        lambda p: _consent(p, _actor(type="Organization")),
        "Consent.provision.provision[0].actor[0].reference.type",
    ),
    "actor-typed-CareTeam": (
        lambda p: _consent(p, _actor(type="CareTeam")),
        "Consent.provision.provision[0].actor[0].reference.type",
    ),
    "actor-typed-Group": (
        lambda p: _consent(p, _actor(type="Group")),
        "Consent.provision.provision[0].actor[0].reference.type",
    ),
    "actor-typed-PractitionerRole": (
        lambda p: _consent(p, _actor(type="PractitionerRole")),
        "Consent.provision.provision[0].actor[0].reference.type",
    ),
    "actor-role-IRCP-and-PRN": (
        lambda p: _consent(p, _role(IRCP, PRN)),
        "Consent.provision.provision[0].actor[0].role",
    ),
    "actor-identifier-old": (
        lambda p: _consent(p, _identifier(use="old")),
        "Consent.provision.provision[0].actor[0].reference.identifier.use",
    ),
    "actor-identifier-period-ended": (
        lambda p: _consent(p, _identifier(period={"end": "2001-01-01"})),
        "Consent.provision.provision[0].actor[0].reference.identifier.period",
    ),
    "dateTime-next-year": (
        lambda p: _consent(p, dateTime=_later(365)),
        "Consent.dateTime",
    ),
    "dateTime-date-next-week": (
        lambda p: _consent(p, dateTime=_later(7)[:10]),
        "Consent.dateTime",
    ),
}


def _consent_ids(service, patient: str) -> set[str]:
    found = service.search(INTERNAL, "Consent", [("patient", patient)])
    return {resource["id"] for resource in found.resources()[0]}


def _write(client, token: str, consent: dict, door: str):
    """The patient's write of `consent` through `door`."""
    headers = auth(token, **{"Content-Type": FHIR_JSON})
    if door == "create":
        return client.post("/fhir/Consent", data=json.dumps(consent), headers=headers)
    if door == "update":
        return client.put(
            "/fhir/Consent/consent-b",
            data=json.dumps({**consent, "id": "consent-b"}),
            headers=headers,
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f0c2b2e-0d7a-4a4e-9a57-1f1f4a3b2c10",
                "resource": consent,
                "request": {"method": "POST", "url": "Consent"},
            }
        ],
    }
    return client.post("/fhir", data=json.dumps(bundle), headers=headers)


def _reads(client, token: str, patient: str) -> int:
    return client.get(f"/fhir/Patient/{patient}", headers=auth(token)).status_code


@pytest.mark.parametrize("door", ["create", "update", "transaction"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_r10_consent_shape_the_rules_cannot_read_is_refused_at_write(
    client, tokens, record, shape, door
):
    """Each shape was stored (201/200) and read as an authorization of STRANGER (200)."""
    make, expression = SHAPES[shape]
    before = _consent_ids(record, PATIENT_B)
    refused = _write(client, tokens.patient(PATIENT_B), make(PATIENT_B), door)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert expression in json.dumps(refused.get_json())
    assert _consent_ids(record, PATIENT_B) == before
    assert _reads(client, tokens.practitioner(STRANGER), PATIENT_B) == 403
    assert _reads(client, tokens.practitioner(AUTHORIZED), PATIENT_B) == 200


@pytest.mark.parametrize("shape", list(SHAPES))
def test_r09_stored_consent_the_rules_cannot_read_grants_nothing(client, tokens, record, shape):
    """A Consent of such a shape stored before (written by the server itself here) is read
    as uninterpretable: STRANGER refused, as every professional but the médecin traitant
    (R09's fail closed), instead of authorized."""
    make, _ = SHAPES[shape]
    initial = {**dmp_consent(PATIENT_A), "id": "initial-a"}  # the initial consent, alone
    record.update(INTERNAL, "Consent", "initial-a", initial)
    record.update(INTERNAL, "Consent", "stored-before", {**make(PATIENT_A), "id": "stored-before"})
    assert _reads(client, tokens.practitioner(STRANGER), PATIENT_A) == 403
    assert _reads(client, tokens.practitioner(GP), PATIENT_A) == 200


def test_r10_initial_consent_declared_in_the_future_opens_nothing(client, tokens, record):
    """CARE declared the initial consent of patient A dated next year (201), recorded their
    own authorization (201) and read the record today (200)."""
    declaration = dmp_consent(PATIENT_A, initial_consent=False)
    declaration["category"] = [{"coding": [INITIAL_CONSENT_CODING]}]
    declaration["dateTime"] = _later(365)
    declaration["performer"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": CARE}}]
    care = tokens.practitioner(CARE)
    refused = post(client, care, declaration)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert "Consent.dateTime" in json.dumps(refused.get_json())
    own = post(client, care, dmp_consent(PATIENT_A, permit(CARE), initial_consent=False))
    assert own.status_code == 403, own.get_data(as_text=True)
    assert _reads(client, care, PATIENT_A) == 403


def test_r10_initial_consent_declared_today_still_counts(client, tokens, record):
    """Control: a declaration dated today, the date as it is at UTC+14 (a date has no zone:
    New Caledonia's, Wallis-and-Futuna's today), is accepted, and the authorization recorded
    after it opens the record."""
    declaration = dmp_consent(PATIENT_A, initial_consent=False)
    declaration["category"] = [{"coding": [INITIAL_CONSENT_CODING]}]
    declaration["dateTime"] = latest_date(datetime.now(UTC)).isoformat()
    declaration["performer"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": CARE}}]
    care = tokens.practitioner(CARE)
    assert post(client, care, declaration).status_code == 201
    own = post(client, care, dmp_consent(PATIENT_A, permit(CARE), initial_consent=False))
    assert own.status_code == 201, own.get_data(as_text=True)
    assert _reads(client, care, PATIENT_A) == 200


# -- controls: shapes that held ------------------------------------------------------------

BTG = {"system": SYSTEM_ACT_REASON, "code": "BTG"}
DOCUMENTS = [{"system": "http://hl7.org/fhir/resource-types", "code": "DocumentReference"}]
HELD = {
    "nested-two-levels": (
        {**permit(STRANGER), "provision": [deny(AUTHORIZED)]},
        "Consent.provision.provision[0].provision",
    ),
    "permit-class-restricted": (
        {**permit(STRANGER), "class": DOCUMENTS},
        "Consent.provision.provision[0].class",
    ),
    "btg-opposition-class-restricted": (
        {"type": "deny", "purpose": [BTG], "class": DOCUMENTS},
        "Consent.provision.provision[0].class",
    ),
    "btg-opposition-dated": (
        {"type": "deny", "purpose": [BTG], "period": {"start": _later(30)}},
        "Consent.provision.provision[0].period",
    ),
    "permit-collect-only": (
        {
            **permit(STRANGER),
            "action": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": "collect",
                        }
                    ]
                }
            ],
        },
        "Consent.provision.provision[0].action",
    ),
    "actor-reference-to-an-organization": (
        _actor(reference="Organization/org-1"),
        "Consent.provision.provision[0].actor[0].reference.reference",
    ),
}


@pytest.mark.parametrize("shape", list(HELD))
def test_r09_r11_nested_shapes_the_rules_cannot_read_stay_refused(client, tokens, record, shape):
    provision, expression = HELD[shape]
    refused = post(client, tokens.patient(PATIENT_B), dmp_consent(PATIENT_B, provision))
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert expression in json.dumps(refused.get_json())


def test_r09_two_active_consents_that_disagree_the_deny_wins(client, tokens, record):
    patient = tokens.patient(PATIENT_B)
    assert post(client, patient, dmp_consent(PATIENT_B, permit(STRANGER))).status_code == 201
    assert _reads(client, tokens.practitioner(STRANGER), PATIENT_B) == 200
    assert post(client, patient, dmp_consent(PATIENT_B, deny(STRANGER))).status_code == 201
    assert _reads(client, tokens.practitioner(STRANGER), PATIENT_B) == 403


def test_r10_consent_changed_or_deleted_takes_effect_at_once(client, tokens, record):
    """The requester's record facts are warm (cached) each time the Consent changes: an old
    version that granted is not read, and neither is a deleted Consent."""
    patient, stranger = tokens.patient(PATIENT_B), tokens.practitioner(STRANGER)
    headers = auth(patient, **{"Content-Type": FHIR_JSON})
    created = post(client, patient, dmp_consent(PATIENT_B, permit(STRANGER)))
    consent = created.get_json()
    assert _reads(client, stranger, PATIENT_B) == 200
    consent["provision"]["provision"] = [permit(AUTHORIZED)]
    url = f"/fhir/Consent/{consent['id']}"
    assert client.put(url, data=json.dumps(consent), headers=headers).status_code == 200
    assert _reads(client, stranger, PATIENT_B) == 403
    consent["provision"]["provision"] = [permit(STRANGER)]
    assert client.put(url, data=json.dumps(consent), headers=headers).status_code == 200
    assert _reads(client, stranger, PATIENT_B) == 200
    assert client.delete(url, headers=auth(patient)).status_code == 204
    assert _reads(client, stranger, PATIENT_B) == 403


def test_r10_root_period_still_to_come_grants_nothing_yet(client, tokens, record):
    consent = dmp_consent(PATIENT_B, permit(STRANGER))
    consent["provision"]["period"] = {"start": _later(30)}
    assert post(client, tokens.patient(PATIENT_B), consent).status_code == 201
    assert _reads(client, tokens.practitioner(STRANGER), PATIENT_B) == 403

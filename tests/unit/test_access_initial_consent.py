"""R10 since the Conseil d'État ruling of 15 October 2025 (`access/initial_consent.py`), as
pure policy decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fhir_server.access.consent import interpret_consent
from fhir_server.access.decision import Deny, Permit
from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING, MISSING_CODE
from fhir_server.access.policy import MSG_R10, DmpPolicy
from fhir_server.access.record import build_record
from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.terminology import (
    SYSTEM_CONSENT_SCOPE,
    SYSTEM_IDNAT_PS,
    SYSTEM_INS_NIR,
    SYSTEM_PARTICIPATION_TYPE,
)

TODAY = date(2026, 12, 1)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = DmpPolicy(load_matrix())
GP = "810000000001"
CARE = "810000000002"  # authorized by a permit provision
STRANGER = "810000000003"
BLOCKED = "810000000004"


def provision(kind: str, idnat: str) -> dict:
    return {
        "type": kind,
        "actor": [
            {
                "role": {"coding": [{"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}]},
                "reference": {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}},
            }
        ],
    }


def consent(*nested: dict, initial: bool = False, status: str = "active", **more) -> dict:
    resource = {
        "resourceType": "Consent",
        "id": "c1",
        "status": status,
        "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p1"},
        "provision": {"type": "permit", "provision": list(nested)},
        **more,
    }
    if initial:
        resource["category"] = [{"coding": [INITIAL_CONSENT_CODING]}]
    return resource


def declaration(idnat: str = STRANGER, **changes) -> dict:
    resource = consent(
        initial=True,
        dateTime="2026-12-01T10:00:00+01:00",
        performer=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}],
    )
    resource.update(changes)
    return resource


def record(*consents: dict):
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": SYSTEM_INS_NIR, "value": "180029912345678"}],
        "birthDate": "1980-02-03",
        "generalPractitioner": [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}],
    }
    return build_record(patient, list(consents), [], TODAY, NOW)


def practitioner(idnat: str, mode: AccessMode = AccessMode.NORMAL) -> Requester:
    return Requester(
        kind=ActorKind.PRACTITIONER,
        subject_id=idnat,
        profession="10",
        access_mode=mode,
        access_reason="urgence" if mode is AccessMode.BRIS_DE_GLACE else None,
    )


CHOICES = (provision("permit", CARE), provision("deny", BLOCKED))


def search(requester: Requester, rec) -> Permit | Deny:
    return POLICY.decide_search(requester, "DocumentReference", rec, patient_given=True)


# --- recording ----------------------------------------------------------------------------


def test_r10_ce2025_initial_consent_is_collected_by_an_active_consent_in_force_saying_so():
    assert interpret_consent(consent(initial=True), NOW).initial_consent
    assert not interpret_consent(consent(), NOW).initial_consent
    assert not interpret_consent(consent(initial=True, status="inactive"), NOW).initial_consent
    ended = consent(initial=True)
    ended["provision"]["period"] = {"end": "2026-11-30"}
    assert not interpret_consent(ended, NOW).initial_consent
    # One Consent carrying it is enough, whichever it is.
    assert record(consent(*CHOICES), consent(initial=True)).rules.initial_consent


# --- whom it binds ------------------------------------------------------------------------


def test_r10_ce2025_an_authorized_professional_is_refused_without_it():
    decision = search(practitioner(CARE), record(consent(*CHOICES)))
    assert isinstance(decision, Deny)
    assert (decision.rule, decision.status, decision.details_code) == ("R10", 403, MISSING_CODE)
    assert "initial consent" in decision.message
    assert isinstance(search(practitioner(CARE), record(consent(*CHOICES, initial=True))), Permit)


def test_r09_r10_ce2025_without_it_the_others_are_refused_as_before():
    """Only whom an authorization names is told the initial consent is missing: a blocked
    professional gets the answer of an unauthorized one (R09 stays undisclosed)."""
    rec = record(consent(*CHOICES))
    stranger, blocked = search(practitioner(STRANGER), rec), search(practitioner(BLOCKED), rec)
    assert isinstance(stranger, Deny) and isinstance(blocked, Deny)
    assert stranger.message == blocked.message == MSG_R10


@pytest.mark.parametrize(
    ("idnat", "mode", "rule"),
    [
        (GP, AccessMode.NORMAL, "R08"),
        (STRANGER, AccessMode.BRIS_DE_GLACE, "R11"),
        (STRANGER, AccessMode.CENTRE_15, "R12"),
    ],
)
def test_r08_r11_r12_ce2025_are_not_held_to_it(idnat, mode, rule):
    decision = search(practitioner(idnat, mode), record(consent(*CHOICES)))
    assert isinstance(decision, Permit) and decision.rule == rule


def test_r06_ce2025_the_patient_reads_without_it():
    patient = Requester(kind=ActorKind.PATIENT, subject_id="p1")
    assert isinstance(search(patient, record(consent(*CHOICES))), Permit)


# --- who sets it --------------------------------------------------------------------------


def write(idnat: str, new: dict, rec, interaction: str = "create", old: dict | None = None):
    return POLICY.decide_write(practitioner(idnat), interaction, "Consent", new, old, rec)


def test_r10_ce2025_self_authorization_needs_it():
    own = consent(provision("permit", STRANGER))
    refused = write(STRANGER, own, record(consent(*CHOICES)))
    assert isinstance(refused, Deny) and refused.details_code == MISSING_CODE
    assert isinstance(write(STRANGER, own, record(consent(*CHOICES, initial=True))), Permit)


def test_r10_ce2025_a_professional_declares_it_once():
    rec = record(consent(*CHOICES))
    assert isinstance(write(STRANGER, declaration(), rec), Permit)
    again = write(STRANGER, declaration(), record(consent(*CHOICES), declaration()))
    assert isinstance(again, Deny) and again.status == 409


@pytest.mark.parametrize(
    ("changes", "status", "expression"),
    [
        ({"dateTime": None}, 422, "Consent.dateTime"),
        ({"performer": None}, 422, "Consent.performer"),
        ({"performer": [{"reference": "Patient/p1"}]}, 403, "Consent.performer[0].identifier"),
        ({"status": "proposed"}, 422, "Consent.status"),
    ],
)
def test_r10_ce2025_a_declaration_has_its_shape(changes, status, expression):
    resource = declaration()
    for name, value in changes.items():
        if value is None:
            resource.pop(name)
        else:
            resource[name] = value
    decision = write(STRANGER, resource, record(consent(*CHOICES)))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.expression) == (status, (expression,))


def test_r10_ce2025_a_self_authorization_cannot_carry_it():
    """A professional's own permit written with the category is a declaration that grants
    something: refused, so presumed consent never records the initial consent by itself."""
    smuggled = declaration(
        provision={"type": "permit", "provision": [provision("permit", STRANGER)]}
    )
    decision = write(STRANGER, smuggled, record(consent(*CHOICES)))
    assert isinstance(decision, Deny) and decision.expression == ("Consent.provision.provision",)


def test_r09_ce2025_a_blocked_professional_declares_nothing():
    decision = write(BLOCKED, declaration(BLOCKED), record(consent(*CHOICES)))
    assert isinstance(decision, Deny) and decision.rule == "R09"


def test_r10_ce2025_a_professional_does_not_revoke_it():
    initial = consent(*CHOICES, initial=True)
    rec = record(initial)
    for interaction, new in (("update", {**initial, "status": "inactive"}), ("delete", None)):
        decision = write(STRANGER, new, rec, interaction, initial)
        assert isinstance(decision, Deny) and decision.status == 403

"""The refusals and what they reveal (R18, see the package docstring): the requester-only
refusals kept as they are, the patient-dependent ones worded as a genuine not-found."""

from __future__ import annotations

from fhir_server.access.consent import interpret_consent
from fhir_server.access.decision import (
    RECORD_CLOSED_CODE,
    RECORD_OPPOSED_CODE,
    UNKNOWN_PATIENT_CODE,
    Deny,
    forbidden,
    hidden,
)
from fhir_server.access.policy.tables import (
    HEALTH_INSURER,
    IDENTITY_TYPES,
    MSG_R05,
    MSG_R11_REASON,
    PAYER_TYPES,
    TYPES_RULE,
)
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import FhirError
from fhir_server.terminology import RECORD_OPPOSED


def refuse_payer(requester: Requester, resource_type: str) -> Deny | None:
    """R05; the health insurer and administration systems may still read identities (R15)."""
    if requester.organization_type not in PAYER_TYPES:
        return None
    if (
        requester.kind is ActorKind.SYSTEM
        and requester.organization_type == HEALTH_INSURER
        and resource_type in IDENTITY_TYPES
    ):
        return None
    return forbidden("R05", MSG_R05)


def practitioner_type_refused(resource_type: str) -> Deny:
    rule = "R16" if resource_type == "AuditEvent" else TYPES_RULE
    return forbidden(rule, f"Practitioners do not read {resource_type} resources")


def record_status_deny(record: PatientRecord, status: int) -> Deny:
    if record.status == RECORD_OPPOSED:
        return Deny(
            "R03",
            status,
            "processing",
            "The patient opposed the creation of their record",
            RECORD_OPPOSED_CODE,
        )
    return Deny("R03", status, "processing", "The patient's record is closed", RECORD_CLOSED_CODE)


def unknown_patient(status: int, code: str) -> Deny:
    return Deny("R03", status, code, "No record is known for this patient", UNKNOWN_PATIENT_CODE)


def hide(grant: Deny, resource_type: str, resource_id: str) -> Deny:
    """Keep requester-only refusals (R05, types, R11 reason) as they are; hide the rest."""
    if grant.rule in ("R05", TYPES_RULE) or grant.message == MSG_R11_REASON:
        return grant
    return hidden(grant.rule, resource_type, resource_id)


def consent_invalid(consent: dict) -> Deny | None:
    try:
        interpret_consent(consent)
    except FhirError as exc:
        issue = exc.issues[0]
        return Deny("R10", exc.status, issue.code, issue.diagnostics, None, issue.expression)
    return None


def not_their_record(requester: Requester) -> Deny:
    """R06/R07: a patient or representative on a record that is not theirs to act on."""
    if requester.kind is ActorKind.PATIENT:
        return forbidden("R06", "A patient may only access their own record")
    return forbidden("R07", "Only a legal representative of a minor patient may access this record")

"""R10 written by a practitioner: their own authorization (presumed consent) and the
declaration that the patient's initial consent was collected (CE 15/10/2025)."""

from __future__ import annotations

from fhir_server.access import initial_consent
from fhir_server.access.consent import actor_identifier, consent_patient_id
from fhir_server.access.decision import Decision, Deny, Note, Permit, forbidden
from fhir_server.access.policy.labels import without
from fhir_server.access.policy.refusals import consent_invalid
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import Requester
from fhir_server.search.query import Everything


def is_self_permit(provision: object, idnat: str) -> bool:
    if not isinstance(provision, dict) or provision.get("type") != "permit":
        return False
    if provision.get("purpose"):
        return False
    actors = provision.get("actor") or []
    return bool(actors) and all((actor_identifier(a) or {}).get("value") == idnat for a in actors)


def self_authorization(
    requester: Requester,
    interaction: str,
    new: dict | None,
    record: PatientRecord,
) -> Decision:
    """R10: a practitioner in the care team records their own authorization (presumed
    consent), as a new Consent whose nested provisions are all permits naming only them.
    They change no Consent (`WriteDecisions.change_refusal`): they never read one."""
    idnat = requester.subject_id
    refused = forbidden("R10", "A practitioner may only record their own authorization")
    if interaction != "create" or new is None:
        return refused
    if not record.rules.initial_consent:
        # Presumed consent opens nothing before the initial consent (CE 15/10/2025).
        return initial_consent.missing()
    if record.rules.is_authorized(idnat):
        # Once is enough: every new one notified the patient again and lengthened the record
        # the rules read (issue #18 attack pass: a flood of self-authorizations).
        return Deny(
            "R10", 409, "duplicate", "This practitioner's authorization is already recorded"
        )
    invalid = consent_invalid(new)
    if invalid:
        return invalid
    if consent_patient_id(new) != record.patient_id or new.get("status") != "active":
        return refused
    nested = (new.get("provision") or {}).get("provision") or []
    if not nested or not all(is_self_permit(p, idnat) for p in nested):
        return refused
    return Permit(Everything(), "R10", (Note.NOTIFY_AUTHORIZATION_RECORDED,))


def initial_consent_declaration(requester: Requester, new: dict, record: PatientRecord) -> Decision:
    """A professional declares they collected the patient's initial consent (CE 15/10/2025):
    a new Consent of that shape only (`initial_consent.declaration_problem`), once."""
    invalid = consent_invalid(new)
    if invalid:
        return invalid
    if consent_patient_id(new) != record.patient_id:
        return forbidden("R10", "A Consent can only be written for the patient's own record")
    problem = initial_consent.declaration_problem(new, requester.subject_id)
    if problem:
        return problem
    if record.rules.initial_consent:
        return Deny("R10", 409, "duplicate", "The patient's initial consent is already recorded")
    return Permit(Everything(), "R10", (Note.NOTIFY_INITIAL_CONSENT_DECLARED,))


def without_provisions(consent: dict) -> dict:
    result = without(consent, ())
    provision = dict(result.get("provision") or {})
    provision.pop("provision", None)
    result["provision"] = provision
    return result

"""The patient a request is bound to: the credentials' patient is the request's patient.

In IHE XUA, and so in the DMP's VIHF, the assertion's resource-id names the patient the
request is about; a SMART token's `patient` claim (the launch context) does the same for the
FHIR face. A requester whose credentials name a patient may act on that patient's record
only, whatever else the rules would let them reach (issue #18, finding 11: a VIHF naming
patient Z retrieved patient Y's documents; a practitioner token whose context was Y read
another patient's record).

Who is bound (`context_of`):
- practitioners, representatives and systems whose credentials carry a patient context (the
  `patient` claim, a `fhirUser` Patient alongside an IdNat_PS, or the INS of
  `extensions.dmp.patient_identifier` / the VIHF resource-id);
- never the patient (their own rules already keep them in their record, R06), nor the
  server itself.

Credentials that name no patient (a VIHF without resource-id, a token without `patient`)
are not bound: the request must then designate its patient itself (R04), as before. When the
credentials name a patient the server cannot resolve (an INS no Patient has, or a `patient`
id and an INS naming two different Patients), the request is bound to no record at all:
nothing of any record is reachable (fail closed).

What a request outside its binding gets (the gate applies these; the policy stays pure):
- a single read (read, vread, history, a Binary, ITI-43) of a resource of another record:
  exactly a not-found (R18), like any hidden resource;
- a search designating another patient (ITI-18 included): 403 saying that the request's
  patient is not the credentials' one; it names no record and is answered the same whether
  the designated patient exists or not;
- a write whose new content names another patient: the same 403; a write to an existing
  resource of another record: a not-found, as its read would be.
Each refusal is audited (AuthZ-Consent failure, R16) in the trail of the patient designated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fhir_server.access.decision import Deny, forbidden, hidden
from fhir_server.access.requester import ActorKind, Requester

# The rule the audit records: the patient context is part of what a token grants (SMART
# launch context, R02), and a scope never grants more than it.
BINDING_RULE = "R02"
BINDING_DETAILS = "patient-context"
MSG_OTHER_PATIENT = (
    "The request concerns another patient than the one its credentials are bound to "
    "(the token's patient context or the VIHF resource-id)"
)


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What the credentials say about the patient: a Patient id, an INS token, or both."""

    patient_id: str | None = None
    ins: str | None = None  # urn:oid:<INS OID>|<INS>


def context_of(requester: Requester) -> PatientContext | None:
    """The patient context binding `requester`, or None when it is not bound."""
    if requester.kind in (ActorKind.PATIENT, ActorKind.INTERNAL):
        return None
    ins = requester.extra.get("patient_identifier") or None
    if not requester.patient_id and not ins:
        return None
    return PatientContext(requester.patient_id or None, ins)


def outside(bound_patient: str | None, patients: Iterable[str]) -> bool:
    """Whether a resource of `patients` (its compartment) lies outside the bound record.

    Every patient the resource belongs to must be the bound one: a resource shared with
    another record is that record's too. `bound_patient` None (unresolved context): any
    patient's resource is outside. A resource of no patient (directory) never is.
    """
    return any(patient != bound_patient for patient in patients)


def refused_search_or_write() -> Deny:
    """A search designating, or a write naming, another patient than the bound one."""
    return forbidden(BINDING_RULE, MSG_OTHER_PATIENT, BINDING_DETAILS)


def hidden_resource(resource_type: str, resource_id: str) -> Deny:
    """An existing resource of another record: answered exactly like a missing one (R18)."""
    return hidden(BINDING_RULE, resource_type, resource_id)


__all__ = [
    "BINDING_DETAILS",
    "BINDING_RULE",
    "PatientContext",
    "context_of",
    "hidden_resource",
    "outside",
    "refused_search_or_write",
]

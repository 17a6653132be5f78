"""The policy's tables: which types each actor family reads and writes, the refusal messages
the rules word, and the values passed between a gate and the constraints it opens."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.search.query import Everything, Node, Not
from fhir_server.terminology import OID_TRE_A03_CLASSE

SYSTEM_CLASS = f"urn:oid:{OID_TRE_A03_CLASSE}"

# R05: organization types that never read clinical data.
PAYER_TYPES = frozenset({"insurer", "mutual_insurer", "employer", "health_insurer"})
HEALTH_INSURER = "health_insurer"
# R15: organization types whose systems manage records (Patient, RelatedPerson).
RECORD_ADMIN_TYPES = frozenset({"admin", HEALTH_INSURER})

DIRECTORY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
DEPOSIT_TYPES = frozenset({"DocumentReference", "Binary", "List"})
IDENTITY_TYPES = frozenset({"Patient", "RelatedPerson"})
PRACTITIONER_READ_TYPES = frozenset({"Patient", "DocumentReference", "List", "Communication"})
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})

NOTHING: Node = Not(Everything())
TYPES_RULE = "types"  # refusals by actor type (the table above), not by a numbered rule

MSG_R04 = (
    "A search must designate exactly one patient: patient, patient.identifier or subject "
    "parameter is missing"
)
MSG_R04_PATIENT = (
    "A search of Patient must designate exactly one patient: _id or identifier parameter is missing"
)
MSG_R05 = "Insurers, mutual insurers, employers and the health insurer do not read clinical data"
MSG_R10 = "The patient's authorization is missing for this access to their record"
MSG_REFUSED = "Access to this patient's record is not permitted"
MSG_R11_REASON = "Bris de glace access requires a declared reason"
MSG_R11_OPPOSED = "The patient has opposed bris de glace (emergency) access to their record"
MSG_R12_OPPOSED = "The patient has opposed centre 15 access to their record"
MSG_CONSENT_UNREADABLE = "The patient's consent cannot be evaluated; access is refused"


@dataclass(frozen=True, slots=True)
class Grant:
    """Why a requester may act on a record, before type-specific constraints."""

    rule: str
    notes: tuple[str, ...] = ()
    general_practitioner: bool = False


@dataclass(frozen=True, slots=True)
class Constraint:
    """One constraint of a granted access and the rule it enforces. `rare`: it excludes few
    resources (a label masking a document), so a store may check it late (`Permit`)."""

    rule: str
    node: Node
    rare: bool = False

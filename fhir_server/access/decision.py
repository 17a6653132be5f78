"""What the access policy answers: a Permit with query constraints, or a Deny.

The policy decides and the service enforces. A Permit's constraints are ordinary search-AST
nodes that the service adds (with `all_of`) to the requester's query, so that hidden
resources are never fetched, counted or linked (R18: totals and `next` links stay exact).

Denials that would reveal that a hidden resource exists are built with `hidden()`: they
carry exactly the status, code and wording of a genuine "not found", and the service must
use `not_found_message()` for its own not-found answers so that the two cannot be told
apart. The rule id stays on the Deny for the audit (R16) but is never shown to the client in
that case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fhir_server.errors import RULE_SYSTEM, FhirError, Issue
from fhir_server.search.query import Everything, Node


class Note(StrEnum):
    """What the service must do besides enforcing the constraints (mostly R17 notifications)."""

    # R17: notify the patient if this is the practitioner's first access to the record today
    # (the service knows the audit trail; the policy does not).
    NOTIFY_IF_FIRST_ACCESS_OF_DAY = "notify-if-first-access-of-day"
    # R17: notify the patient on every bris de glace / centre 15 access, with the reason.
    NOTIFY_BRIS_DE_GLACE = "notify-bris-de-glace"
    NOTIFY_CENTRE_15 = "notify-centre-15"
    # R17: a practitioner recorded an authorization for themselves (presumed consent).
    NOTIFY_AUTHORIZATION_RECORDED = "notify-authorization-recorded"
    # R17 (decided here): a practitioner declared they collected the patient's initial
    # consent to the care team's access (CE 15/10/2025, `access.initial_consent`).
    NOTIFY_INITIAL_CONSENT_DECLARED = "notify-initial-consent-declared"
    # R17: a document was deposited in the record.
    NOTIFY_DOCUMENT_DEPOSITED = "notify-document-deposited"


@dataclass(frozen=True, slots=True)
class Permit:
    """Access granted, limited to resources matching `constraints`.

    `rule` names the rule that granted access (R06 patient, R07 representative, R08 médecin
    traitant, R10 authorization, R11 bris de glace, R12 centre 15, R15 system, "internal").
    `rare_filters`: those conjuncts of `constraints` that exclude few resources (R07/R14
    labels: a record's masked documents are the exception), which a store may check late
    (`SearchQuery.rare_filters`).
    """

    constraints: Node = field(default_factory=Everything)
    rule: str = ""
    notes: tuple[str, ...] = ()
    rare_filters: tuple[Node, ...] = ()
    # (patient, record epoch) of the record facts a write was decided on, which its
    # transaction confirms before it commits (`AuditHooks.after_write`, R09, R10).
    decided_on: tuple[tuple[str, int], ...] = ()

    @property
    def allowed(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Deny:
    """Access refused. `rule` is for the audit; the other fields are what the client sees."""

    rule: str
    status: int
    code: str  # FHIR IssueType
    message: str
    details_code: str | None = None
    expression: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return False

    def to_error(self) -> FhirError:
        """The FhirError the service raises for this denial."""
        system = RULE_SYSTEM if self.details_code else None
        return FhirError(
            self.status,
            [
                Issue(
                    "error",
                    self.code,
                    self.message,
                    self.expression,
                    self.details_code,
                    system,
                )
            ],
        )


Decision = Permit | Deny

RECORD_OPPOSED_CODE = "record-opposed"
RECORD_CLOSED_CODE = "record-closed"
UNKNOWN_PATIENT_CODE = "unknown-patient"


def not_found_message(resource_type: str, resource_id: str) -> str:
    """The one wording of a not-found read; the service uses it for genuine not-founds too."""
    return f"Resource {resource_type}/{resource_id} is not known"


def hidden(rule: str, resource_type: str, resource_id: str) -> Deny:
    """A refusal indistinguishable from "this resource does not exist" (R18)."""
    return Deny(
        rule=rule,
        status=404,
        code="not-found",
        message=not_found_message(resource_type, resource_id),
    )


def forbidden(rule: str, message: str, details_code: str | None = None) -> Deny:
    """A 403 whose details name the rule (or `details_code` when the rule must stay private)."""
    return Deny(
        rule=rule,
        status=403,
        code="forbidden",
        message=message,
        details_code=details_code if details_code is not None else rule,
    )

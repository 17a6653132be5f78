"""Errors every layer raises, turned into OperationOutcomes by the REST face.

Pure layers (search, access, resources) raise these; they carry the HTTP status and the
FHIR issue details so that the face never has to guess, and they never carry a stack trace
or internal detail to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    severity: str  # fatal | error | warning | information
    code: str  # FHIR IssueType: invalid, structure, required, value, not-found, forbidden, ...
    diagnostics: str
    expression: tuple[str, ...] = ()  # FHIRPath of the element, e.g. "Patient.birthDate"
    details_code: str | None = None  # e.g. "record-opposed", "R09", "XDSUnknownPatientId"
    details_system: str | None = None

    def to_fhir(self) -> dict:
        issue: dict = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        if self.details_code:
            coding = {"code": self.details_code}
            if self.details_system:
                coding["system"] = self.details_system
            issue["details"] = {"coding": [coding]}
        return issue


# Issues an answer lists; the others are counted in one last issue. A resource of a few
# hundred KB can fail on every one of thousands of elements: listed whole, 2,000 of them made
# a 0.8 MB answer (docs/performance.md, "Cost limits"), and the first ones are what a client
# fixes first anyway.
MAX_LISTED_ISSUES = 100


@dataclass
class FhirError(Exception):
    """An error with an HTTP status and one or more issues."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def listed_issues(self) -> list[Issue]:
        """The issues an answer lists: at most `MAX_LISTED_ISSUES`, then one saying how many
        more there are."""
        if len(self.issues) <= MAX_LISTED_ISSUES:
            return self.issues
        more = len(self.issues) - MAX_LISTED_ISSUES
        return [
            *self.issues[:MAX_LISTED_ISSUES],
            Issue("information", "informational", f"{more} more issues are not listed"),
        ]

    @property
    def message(self) -> str:
        return "; ".join(issue.diagnostics for issue in self.listed_issues)

    def operation_outcome(self) -> dict:
        return {
            "resourceType": "OperationOutcome",
            "issue": [issue.to_fhir() for issue in self.listed_issues],
        }


def error(
    status: int,
    code: str,
    diagnostics: str,
    expression: str | None = None,
    details_code: str | None = None,
    details_system: str | None = None,
) -> FhirError:
    """Shorthand for a FhirError with a single error issue."""
    return FhirError(
        status,
        [
            Issue(
                "error",
                code,
                diagnostics,
                (expression,) if expression else (),
                details_code,
                details_system,
            )
        ],
    )


# The usual ones, named as the REST face and the service raise them.
def bad_request(
    diagnostics: str, expression: str | None = None, code: str = "invalid"
) -> FhirError:
    return error(400, code, diagnostics, expression)


def not_found(diagnostics: str) -> FhirError:
    return error(404, "not-found", diagnostics)


def forbidden(diagnostics: str, rule: str | None = None) -> FhirError:
    return error(403, "forbidden", diagnostics, details_code=rule, details_system=RULE_SYSTEM)


RULE_SYSTEM = "https://dmp-server.fr/fhir/CodeSystem/access-rule"

"""MHD errors as OperationOutcome issues carrying the XDS error code (ITI TF-3 4.2.4.1).

MHD (ITI-65) answers failures with an OperationOutcome whose `issue.details.coding` carries
the XDS error code in `XDS_ERROR_SYSTEM`, so a client can test the code exactly as an XDS
client tests `RegistryError/@errorCode`. The codes, their system and what a refusal of the
service means in XDS terms are written once, in `ihe_xds.errors`; this module gives them
the OperationOutcome's shape.
"""

from __future__ import annotations

from fhir_server.errors import MAX_LISTED_ISSUES, FhirError, Issue
from ihe_xds.errors import XDS_ERROR_SYSTEM, mhd_error_code


def xds_issue(
    code: str, diagnostics: str, expression: str | None = None, kind: str = "invalid"
) -> Issue:
    return Issue(
        "error", kind, diagnostics, (expression,) if expression else (), code, XDS_ERROR_SYSTEM
    )


def with_xds_code(exc: FhirError) -> FhirError:
    """The same error, plus an issue with its XDS code when none of its issues has one.

    The original issues are kept (their details say which access rule or profile element
    failed); the added issue repeats the first issue's expression.
    """
    if any(issue.details_system == XDS_ERROR_SYSTEM for issue in exc.issues):
        return exc
    code = mhd_error_code(exc)
    first = exc.issues[0] if exc.issues else None
    added = Issue(
        "error",
        first.code if first else "processing",
        f"{code}: {exc.message}",
        first.expression if first else (),
        code,
        XDS_ERROR_SYSTEM,
    )
    # After the others, within those an answer lists (`FhirError.listed_issues`).
    at = min(len(exc.issues), MAX_LISTED_ISSUES - 1)
    return FhirError(exc.status, [*exc.issues[:at], added, *exc.issues[at:]], exc.headers)

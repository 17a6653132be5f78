"""MHD errors as OperationOutcome issues carrying the XDS error code (ITI TF-3 4.2.4.1).

MHD (ITI-65) answers failures with an OperationOutcome; IHE gives no code system for the XDS
error codes in FHIR (the CH EPR examples put them in `details.text`). We put them in
`issue.details.coding` with a system decided here, so a client can test the code exactly as
an XDS client tests `RegistryError/@errorCode`.
"""

from __future__ import annotations

from fhir_server.errors import FhirError, Issue
from fhir_server.terminology import CANONICAL_BASE

XDS_ERROR_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/xds-error-code"

XDS_REPOSITORY_METADATA_ERROR = "XDSRepositoryMetadataError"
XDS_MISSING_DOCUMENT = "XDSMissingDocument"
XDS_MISSING_DOCUMENT_METADATA = "XDSMissingDocumentMetadata"
XDS_UNKNOWN_PATIENT_ID = "XDSUnknownPatientId"
XDS_PATIENT_ID_DOES_NOT_MATCH = "XDSPatientIdDoesNotMatch"
XDS_DUPLICATE_UNIQUE_ID_IN_MESSAGE = "XDSRepositoryDuplicateUniqueIdInMessage"
XDS_NON_IDENTICAL_HASH = "XDSNonIdenticalHash"
XDS_REPLACE_FAILED = "XDSReplaceFailed"
XDS_REPOSITORY_ERROR = "XDSRepositoryError"
LOCAL_POLICY_RESTRICTION_ERROR = "LocalPolicyRestrictionError"

# What the access gate's refusals mean in XDS terms (fhir_server.access.decision codes).
_RECORD_STATUS = frozenset({"record-opposed", "record-closed", "unknown-patient"})


def xds_issue(
    code: str, diagnostics: str, expression: str | None = None, kind: str = "invalid"
) -> Issue:
    return Issue(
        "error", kind, diagnostics, (expression,) if expression else (), code, XDS_ERROR_SYSTEM
    )


def xds_error(issues: list[Issue], status: int = 422) -> FhirError:
    return FhirError(status, issues)


def xds_code_for(exc: FhirError) -> str:
    """The XDS error code of a refusal raised by the service during an ITI-65."""
    codes = {issue.details_code for issue in exc.issues}
    if codes & _RECORD_STATUS:
        return XDS_UNKNOWN_PATIENT_ID
    if exc.status in (401, 403):
        return LOCAL_POLICY_RESTRICTION_ERROR
    if exc.status in (400, 404, 409, 412, 422):
        return XDS_REPOSITORY_METADATA_ERROR
    return XDS_REPOSITORY_ERROR


def with_xds_code(exc: FhirError) -> FhirError:
    """The same error, plus an issue with its XDS code when none of its issues has one.

    The original issues are kept (their details say which access rule or profile element
    failed); the added issue repeats the first issue's expression.
    """
    if any(issue.details_system == XDS_ERROR_SYSTEM for issue in exc.issues):
        return exc
    code = xds_code_for(exc)
    first = exc.issues[0] if exc.issues else None
    added = Issue(
        "error",
        first.code if first else "processing",
        f"{code}: {exc.message}",
        first.expression if first else (),
        code,
        XDS_ERROR_SYSTEM,
    )
    return FhirError(exc.status, [*exc.issues, added], exc.headers)


XDS_REGISTRY_METADATA_ERROR = "XDSRegistryMetadataError"
XDS_REGISTRY_DEPRECATED_DOCUMENT_ERROR = "XDSRegistryDeprecatedDocumentError"

"""What can go wrong with an XDS request, in the two shapes XDS answers with.

Metadata problems are values (`RegistryError`) collected into a RegistryResponse, never
exceptions: a submitter fixing a message wants every problem at once. A message that cannot
be read at all (not XML, broken MIME, not a SOAP 1.2 envelope) is a `MalformedMessage`,
which the face answers with a SOAP Fault: there is no registry request to answer yet.

The error codes are written here once, and so is what each XDS transaction answers when the
service refuses (a `FhirError`: an access rule, a profile, a document rule): ITI-41/42
(`deposit_error`), ITI-18 (`query_error`), ITI-57 (`update_error`), and ITI-65, the MHD face,
which puts the same codes in its OperationOutcome (`mhd_error_code`, `XDS_ERROR_SYSTEM`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.access.decision import (
    RECORD_CLOSED_CODE,
    RECORD_OPPOSED_CODE,
    UNKNOWN_PATIENT_CODE,
)
from fhir_server.errors import FhirError
from fhir_server.terminology import CANONICAL_BASE

SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

# Error codes (IHE ITI TF-3 Table 4.2.4.1-2, the subset the DMP uses)
XDS_REGISTRY_METADATA_ERROR = "XDSRegistryMetadataError"
XDS_REPOSITORY_METADATA_ERROR = "XDSRepositoryMetadataError"
XDS_MISSING_DOCUMENT = "XDSMissingDocument"
XDS_MISSING_DOCUMENT_METADATA = "XDSMissingDocumentMetadata"
XDS_UNKNOWN_PATIENT_ID = "XDSUnknownPatientId"
XDS_PATIENT_ID_DOES_NOT_MATCH = "XDSPatientIdDoesNotMatch"
XDS_REGISTRY_DUPLICATE_UNIQUE_ID_IN_MESSAGE = "XDSRegistryDuplicateUniqueIdInMessage"
XDS_REPOSITORY_DUPLICATE_UNIQUE_ID_IN_MESSAGE = "XDSRepositoryDuplicateUniqueIdInMessage"
XDS_NON_IDENTICAL_HASH = "XDSNonIdenticalHash"
XDS_DOCUMENT_UNIQUE_ID_ERROR = "XDSDocumentUniqueIdError"
XDS_UNKNOWN_REPOSITORY_ID = "XDSUnknownRepositoryId"
XDS_UNKNOWN_STORED_QUERY = "XDSUnknownStoredQuery"
XDS_STORED_QUERY_MISSING_PARAM = "XDSStoredQueryMissingParam"
XDS_STORED_QUERY_PARAM_NUMBER = "XDSStoredQueryParamNumber"
XDS_RESULT_NOT_SINGLE_PATIENT = "XDSResultNotSinglePatient"
XDS_TOO_MANY_RESULTS = "XDSTooManyResults"
XDS_REPLACE_FAILED = "XDSReplaceFailed"
XDS_REGISTRY_DEPRECATED_DOCUMENT_ERROR = "XDSRegistryDeprecatedDocumentError"
XDS_REGISTRY_ERROR = "XDSRegistryError"
XDS_EXTRA_METADATA_NOT_SAVED = "XDSExtraMetadataNotSaved"
XDS_REPOSITORY_ERROR = "XDSRepositoryError"
LOCAL_POLICY_RESTRICTION_ERROR = "LocalPolicyRestrictionError"
# ITI-57 (ITI TF-3 Table 4.2.4.1-2, Restricted Metadata Update)
XDS_METADATA_UPDATE_ERROR = "XDSMetadataUpdateError"
XDS_METADATA_VERSION_ERROR = "XDSMetadataVersionError"
XDS_METADATA_UPDATE_OPERATION_ERROR = "XDSMetadataUpdateOperationError"
UNRESOLVED_REFERENCE = "UnresolvedReferenceException"

# IHE gives no code system for the XDS error codes in FHIR (the CH EPR examples put them in
# `details.text`): the FHIR faces put them in `issue.details.coding` with this system, so a
# client can test the code exactly as an XDS client tests `RegistryError/@errorCode`.
XDS_ERROR_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/xds-error-code"


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One rs:RegistryError: the code, a human sentence, and where (object + attribute)."""

    error_code: str
    code_context: str
    location: str = ""
    severity: str = SEVERITY_ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == SEVERITY_ERROR


def registry_error(code: str, context: str, location: str = "") -> RegistryError:
    return RegistryError(code, context, location, SEVERITY_ERROR)


def registry_warning(code: str, context: str, location: str = "") -> RegistryError:
    return RegistryError(code, context, location, SEVERITY_WARNING)


class MalformedMessage(Exception):
    """A request that cannot be read as an XDS message; answered by a SOAP 1.2 Fault.

    `fault_code` is the SOAP 1.2 fault code value: "Sender" (the client's fault: bad XML,
    bad MIME, unknown action) or "Receiver". `subcode` is an optional qualified subcode such
    as "wsa:ActionNotSupported".
    """

    fault_code = "Sender"

    def __init__(self, reason: str, *, subcode: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subcode = subcode


# -- the service's refusals in XDS terms ------------------------------------------------------

# The access gate's refusals (fhir_server.access.decision codes) that mean, to an XDS client,
# that the record is not there to be written or read.
RECORD_STATUS_CODES = frozenset({RECORD_OPPOSED_CODE, RECORD_CLOSED_CODE, UNKNOWN_PATIENT_CODE})
# ITI-57 updates an entry of an existing record, whose Patient is known: its refusal for the
# record's status is an opposition or a closure only.
_UPDATE_RECORD_STATUS_CODES = frozenset({RECORD_OPPOSED_CODE, RECORD_CLOSED_CODE})


def _details(exc: FhirError) -> set[str]:
    return {issue.details_code for issue in exc.issues if issue.details_code}


def _location(exc: FhirError) -> str:
    for issue in exc.issues:
        if issue.expression:
            return issue.expression[0]
    return ""


def _refused(exc: FhirError, record_codes: frozenset[str] = RECORD_STATUS_CODES) -> str | None:
    """The code every transaction gives a refusal for the record's status (the patient is
    unknown to XDS) or for the requester's rights (local policy), if it is one of those."""
    if _details(exc) & record_codes:
        return XDS_UNKNOWN_PATIENT_ID
    if exc.status in (401, 403):
        return LOCAL_POLICY_RESTRICTION_ERROR
    return None


def mhd_error_code(exc: FhirError) -> str:
    """The XDS error code of a refusal raised by the service during an ITI-65."""
    refused = _refused(exc)
    if refused is not None:
        return refused
    if exc.status in (400, 404, 409, 412, 422):
        return XDS_REPOSITORY_METADATA_ERROR
    return XDS_REPOSITORY_ERROR


def deposit_error(exc: FhirError) -> RegistryError:
    """The RegistryError of a deposit (ITI-41, ITI-42) the service refused."""
    location = _location(exc)
    refused = _refused(exc)
    if refused is not None:
        return registry_error(refused, exc.message, location)
    # A refusal of the document rules (`fhir_server.documents`) carries its XDS code.
    coded = [i.details_code for i in exc.issues if i.details_system == XDS_ERROR_SYSTEM]
    if coded and coded[0]:
        return registry_error(coded[0], exc.message, location)
    if exc.status in (400, 422):
        return registry_error(XDS_REPOSITORY_METADATA_ERROR, exc.message, location)
    return registry_error(XDS_REPOSITORY_ERROR, exc.message, location)


def query_error(exc: FhirError) -> RegistryError:
    """The RegistryError of a stored query (ITI-18) the service refused."""
    if _details(exc) & RECORD_STATUS_CODES:
        return registry_error(XDS_UNKNOWN_PATIENT_ID, exc.message)
    if "R04" in _details(exc):
        return registry_error(
            XDS_STORED_QUERY_MISSING_PARAM,
            f"{exc.message} (name the patient in the query or in the VIHF resource-id)",
        )
    if exc.status in (401, 403):
        return registry_error(LOCAL_POLICY_RESTRICTION_ERROR, exc.message)
    if exc.status in (400, 422):
        return registry_error(XDS_REGISTRY_METADATA_ERROR, exc.message, _location(exc))
    return registry_error(XDS_REGISTRY_ERROR, exc.message)


def update_error(exc: FhirError, *, where: str, named: str) -> RegistryError:
    """The RegistryError of a metadata update (ITI-57) the service refused: `where` the
    update's place in the request, `named` the DocumentEntry. (A stale PreviousVersion is
    refused before the service is asked: `update_document_set`.)"""
    refused = _refused(exc, _UPDATE_RECORD_STATUS_CODES)
    if refused is not None:
        return registry_error(refused, exc.message, where)
    if exc.status == 404:
        return registry_error(UNRESOLVED_REFERENCE, f"no DocumentEntry {named} is known", where)
    if exc.status == 405:
        return registry_error(XDS_METADATA_UPDATE_OPERATION_ERROR, exc.message, where)
    return registry_error(XDS_METADATA_UPDATE_ERROR, exc.message, where)

"""What can go wrong with an XDS request, in the two shapes XDS answers with.

Metadata problems are values (`RegistryError`) collected into a RegistryResponse, never
exceptions: a submitter fixing a message wants every problem at once. A message that cannot
be read at all (not XML, broken MIME, not a SOAP 1.2 envelope) is a `MalformedMessage`,
which the face answers with a SOAP Fault: there is no registry request to answer yet.
"""

from __future__ import annotations

from dataclasses import dataclass

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

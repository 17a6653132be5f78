"""The FHIR searches answering a stored query: the QueryPlan, and each XDS parameter as the
FHIR search parameter it becomes (tokens, dates, statuses, identifiers).

Every value here comes from a typed parameter (`parameters.typed_value`) and is passed to the
service as a search parameter value, never spliced into a query text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.documents import metadata_versions
from ihe_xds.codes import is_oid, system_for_scheme
from ihe_xds.hl7v2 import CX
from ihe_xds.stored_query.ids import (
    FIND_DOCUMENTS,
    FIND_DOCUMENTS_BY_REFERENCE_ID,
    FIND_SUBMISSION_SETS,
)
from ihe_xds.stored_query.parameters import Code, StoredQuery
from ihe_xds.vocabulary import (
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
    STATUS_DEPRECATED,
)


@dataclass(frozen=True, slots=True)
class FhirSearch:
    """One search to run through the service (the access gate applies as for any search)."""

    resource_type: str
    params: list[tuple[str, str]]
    purpose: str


@dataclass(slots=True)
class QueryPlan:
    """How to answer a stored query with FHIR searches.

    Run `searches` in order; a search whose params contain the placeholder `{ids}` is run
    with the comma-joined ids of the DocumentReferences the previous searches found (the
    lead's service may instead use the `_include`/`_revinclude` already present). Results
    are filtered with `keep(resource)` (conditions FHIR search cannot express), then mapped
    with `ihe_xds.mapping` and, for `association_types`, `associations_from_fhir` keeping
    only those types. `returns` names the ebRIM object kinds of the answer.
    """

    query: str
    searches: list[FhirSearch]
    returns: tuple[str, ...]
    keep: Callable[[dict], bool] = lambda resource: True
    association_types: tuple[str, ...] = ()
    notes: str = ""


def code_token(code: Code) -> str:
    return f"{system_for_scheme(code.scheme)}|{code.code}"


def _reference_id(cxi: str) -> str:
    """A referenceIdList CXi (`id^^^&OID&ISO^type`) as the `related:identifier` token the
    mapping stores it as (`mapping.to_fhir._related`): `urn:oid:OID|id`, or `id` alone."""
    parts = cxi.split("^") + ["", "", "", ""]
    authority = parts[3].split("&") + ["", ""]
    value = _escaped(parts[0])
    return f"urn:oid:{authority[1]}|{value}" if is_oid(authority[1]) else value


def _escaped(value: str) -> str:
    """A value inside a FHIR search token (search.html#escaping)."""
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value


def patient_token(cx: CX) -> str:
    return f"urn:oid:{cx.authority_oid}|{cx.value}"


def search_date(value: str) -> str:
    parts = [value[0:4], value[4:6], value[6:8]]
    text = "-".join(p for p in parts if p)
    if len(value) > 8:
        text += "T" + ":".join([value[8:10], value[10:12] or "00", value[12:14] or "00"]) + "Z"
    return text


_FHIR_STATUS = {
    STATUS_APPROVED: "current",
    STATUS_ARCHIVED: "current",
    STATUS_DEPRECATED: "superseded",
    STATUS_DELETED: "entered-in-error",
}


def status_params(statuses: list[str]) -> list[tuple[str, str]]:
    fhir = sorted({_FHIR_STATUS[s] for s in statuses})
    params = [("status", ",".join(fhir))]
    # Archived is the PDSm_IsArchived extension (PDSm isArchived search parameter, issue #20).
    if STATUS_APPROVED in statuses and STATUS_ARCHIVED not in statuses:
        params.append(("isArchived:not", "true"))
    if STATUS_ARCHIVED in statuses and STATUS_APPROVED not in statuses:
        params.append(("isArchived", "true"))
    return params


_CODE_PARAMS = {
    "$XDSDocumentEntryClassCode": "category",
    "$XDSDocumentEntryTypeCode": "type",
    "$XDSDocumentEntryPracticeSettingCode": "setting",
    "$XDSDocumentEntryHealthcareFacilityTypeCode": "facility",
    "$XDSDocumentEntryFormatCode": "format",
    "$XDSDocumentEntryEventCodeList": "event",
    "$XDSDocumentEntryConfidentialityCode": "security-label",
}
_TIME_PARAMS = {
    "$XDSDocumentEntryCreationTimeFrom": ("creation", "ge"),
    "$XDSDocumentEntryCreationTimeTo": ("creation", "lt"),
    "$XDSDocumentEntryServiceStartTimeFrom": ("period", "ge"),
    "$XDSDocumentEntryServiceStopTimeTo": ("period", "lt"),
}


def document_filters(query: StoredQuery) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, fhir_name in _CODE_PARAMS.items():
        for group in query.params.get(name) or []:
            params.append(
                (fhir_name, ",".join(code_token(c) for c in group if isinstance(c, Code)))
            )
    return params


def to_fhir_search(query: StoredQuery) -> list[tuple[str, str]]:
    """ITI-67 search parameters for FindDocuments (DocumentReference) or FindSubmissionSets
    (List). Conditions FHIR cannot say exactly (AuthorPerson LIKE, service time bounds,
    sourceId, contentType) are narrowed here where possible and finished by `plan().keep`.
    """
    if query.query_id in (FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID):
        params = [("patient.identifier", patient_token(query.one("$XDSDocumentEntryPatientId")))]
        params += status_params(query.values("$XDSDocumentEntryStatus"))
        params += document_filters(query)
        references = query.values("$XDSDocumentEntryReferenceIdList")
        if references:
            # referenceIdList (context.related identifiers); an OR-list, as the option says.
            params.append(("related:identifier", ",".join(map(_reference_id, references))))
        for name, (fhir_name, prefix) in _TIME_PARAMS.items():
            value = query.one(name)
            if value:
                params.append((fhir_name, f"{prefix}{search_date(value)}"))
        for pattern in query.values("$XDSDocumentEntryAuthorPerson")[:1]:
            family = _literal_component(pattern, 1)
            if family and len(query.values("$XDSDocumentEntryAuthorPerson")) == 1:
                params.append(("author.family", family))
        return params
    if query.query_id == FIND_SUBMISSION_SETS:
        params = [
            ("patient.identifier", patient_token(query.one("$XDSSubmissionSetPatientId"))),
            ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"),
        ]
        params += status_params(query.values("$XDSSubmissionSetStatus"))
        if query.one("$XDSSubmissionSetSubmissionTimeFrom"):
            params.append(
                ("date", "ge" + search_date(query.one("$XDSSubmissionSetSubmissionTimeFrom")))
            )
        if query.one("$XDSSubmissionSetSubmissionTimeTo"):
            params.append(
                ("date", "lt" + search_date(query.one("$XDSSubmissionSetSubmissionTimeTo")))
            )
        return params
    raise ValueError(f"{query.name} is answered by plan(), not by a single search")


def _literal_component(pattern: str, index: int) -> str | None:
    """A component of an XCN LIKE pattern when it holds no wildcard (usable as an exact search)."""
    parts = pattern.split("^")
    if len(parts) <= index:
        return None
    component = parts[index]
    return component if component and "%" not in component and "_" not in component else None


def identifier_values(query: StoredQuery, uuid_param: str, unique_param: str) -> str:
    """The `identifier` search value naming the objects of a by-id query (OR-list)."""
    uuids = query.values(uuid_param) + query.values("$XDSDocumentEntryLogicalID")
    if uuids:
        # An earlier metadata version's entryUUID (a logicalID among them) finds its document,
        # whose versions ihe_xds.entry_versions answers.
        systems = metadata_versions.identifier_systems()
        return ",".join(f"{system}|{u}" for u in uuids for system in systems)
    return ",".join(f"urn:ietf:rfc:3986|urn:oid:{u}" for u in query.values(unique_param))


LIST_CODE = ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset")


FOLDER_CODE = ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|folder")

# MHD Vol 3 4.5.1 (Table 4.5.1.1-1): a Folder's availabilityStatus is its List's status.
_FOLDER_STATUS = {
    STATUS_APPROVED: "current",
    STATUS_ARCHIVED: "current",
    STATUS_DEPRECATED: "retired",
    STATUS_DELETED: "entered-in-error",
}


def folder_status_params(statuses: list[str]) -> list[tuple[str, str]]:
    """The `status` search of a Folder status list (`$XDSFolderStatus`)."""
    return [("status", ",".join(sorted({_FOLDER_STATUS[s] for s in statuses})))]


def folder_search(query: StoredQuery) -> list[tuple[str, str]]:
    """FindFolders (ITI TF-2a 3.18.4.1.2.3.7.3) as a search of folder Lists: the patient,
    the status, lastUpdateTime (List.date) bounds and `$XDSFolderCodeList` (designationType:
    OR within a Slot, AND across Slots)."""
    params = [
        ("patient.identifier", patient_token(query.one("$XDSFolderPatientId"))),
        FOLDER_CODE,
        *folder_status_params(query.values("$XDSFolderStatus")),
    ]
    for name, prefix in (
        ("$XDSFolderLastUpdateTimeFrom", "ge"),
        ("$XDSFolderLastUpdateTimeTo", "lt"),
    ):
        if query.one(name):
            params.append(("date", prefix + search_date(query.one(name))))
    for group in query.params.get("$XDSFolderCodeList") or []:
        params.append(
            ("designationType", ",".join(code_token(c) for c in group if isinstance(c, Code)))
        )
    return params


def named_documents(query: StoredQuery) -> str:
    """The DocumentEntries a query names by entryUUID, uniqueId or logicalID."""
    return identifier_values(query, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")

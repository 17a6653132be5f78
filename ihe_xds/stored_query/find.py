"""The Find queries (FindDocuments, FindDocumentsByReferenceId, FindSubmissionSets,
FindFolders) and GetAll: a patient's objects selected by their metadata."""

from __future__ import annotations

from dataclasses import replace

from ihe_xds.mapping import entry_uuid_of
from ihe_xds.stored_query.answer import Answer, document_keep, submission_set_keep
from ihe_xds.stored_query.fhir_search import (
    FOLDER_CODE,
    LIST_CODE,
    FhirSearch,
    QueryPlan,
    document_filters,
    folder_search,
    folder_status_params,
    patient_token,
    status_params,
    to_fhir_search,
)
from ihe_xds.stored_query.ids import (
    FIND_DOCUMENTS,
    FIND_DOCUMENTS_BY_REFERENCE_ID,
    FIND_FOLDERS,
    FIND_SUBMISSION_SETS,
    GET_ALL,
)
from ihe_xds.stored_query.parameters import (
    AUTHOR,
    CODE,
    OBJECT_TYPE,
    OID_LIST,
    PATIENT,
    STATUS,
    STRING,
    TIME,
    QueryDefinition,
    StoredQuery,
)
from ihe_xds.stored_query.query_kind import StoredQueryKind
from ihe_xds.vocabulary import ASSOC_HAS_MEMBER, DOCUMENT_RELATIONSHIPS

DOCUMENT_ENTRY_OPTIONAL = {
    "$XDSDocumentEntryClassCode": CODE,
    "$XDSDocumentEntryTypeCode": CODE,
    "$XDSDocumentEntryPracticeSettingCode": CODE,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": CODE,
    "$XDSDocumentEntryFormatCode": CODE,
    "$XDSDocumentEntryEventCodeList": CODE,
    "$XDSDocumentEntryConfidentialityCode": CODE,
    "$XDSDocumentEntryCreationTimeFrom": TIME,
    "$XDSDocumentEntryCreationTimeTo": TIME,
    "$XDSDocumentEntryServiceStartTimeFrom": TIME,
    "$XDSDocumentEntryServiceStartTimeTo": TIME,
    "$XDSDocumentEntryServiceStopTimeFrom": TIME,
    "$XDSDocumentEntryServiceStopTimeTo": TIME,
    "$XDSDocumentEntryAuthorPerson": AUTHOR,
    "$XDSDocumentEntryType": OBJECT_TYPE,
    "$XDSDocumentEntryReferenceIdList": STRING,
}


def _find_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [FhirSearch("DocumentReference", to_fhir_search(query), "the matching DocumentEntries")],
        ("DocumentEntry",),
        keep=document_keep(query),
    )


def _find_submission_sets(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [FhirSearch("List", to_fhir_search(query), "the matching SubmissionSets")],
        ("SubmissionSet",),
        keep=submission_set_keep(query),
    )


def _find_folders(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [FhirSearch("List", folder_search(query), "the matching folder Lists")],
        ("Folder",),
    )


def _get_all(query: StoredQuery) -> QueryPlan:
    patient = patient_token(query.one("$patientId"))
    documents = [("patient.identifier", patient)] + status_params(
        query.values("$XDSDocumentEntryStatus")
    )
    documents += document_filters(query)
    lists = [("patient.identifier", patient), LIST_CODE] + status_params(
        query.values("$XDSSubmissionSetStatus")
    )
    folders = [("patient.identifier", patient), FOLDER_CODE] + folder_status_params(
        query.values("$XDSFolderStatus")
    )
    return QueryPlan(
        query.name,
        [
            FhirSearch("DocumentReference", documents, "the patient's DocumentEntries"),
            FhirSearch("List", lists, "the patient's SubmissionSets"),
            FhirSearch("List", folders, "the patient's Folders"),
        ],
        ("DocumentEntry", "SubmissionSet", "Folder", "Association"),
        keep=document_keep(query),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
        notes="associations between the returned objects only",
    )


def _among_found(query: StoredQuery, answer: Answer) -> Answer:
    """GetAll: the associations between the returned objects only."""
    ids = {entry_uuid_of(d) for d in answer.documents}
    ids |= {entry_uuid_of(s) for s in answer.submission_sets}
    ids |= {entry_uuid_of(f) for f in answer.folders}
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in ids and a.target in ids],
    )


KINDS: tuple[StoredQueryKind, ...] = (
    StoredQueryKind(
        FIND_DOCUMENTS,
        QueryDefinition(
            "FindDocuments",
            {
                "$XDSDocumentEntryPatientId": PATIENT,
                "$XDSDocumentEntryStatus": STATUS,
                **DOCUMENT_ENTRY_OPTIONAL,
            },
            required=("$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus"),
        ),
        _find_documents,
    ),
    StoredQueryKind(
        FIND_DOCUMENTS_BY_REFERENCE_ID,
        QueryDefinition(
            "FindDocumentsByReferenceId",
            {
                "$XDSDocumentEntryPatientId": PATIENT,
                "$XDSDocumentEntryStatus": STATUS,
                **DOCUMENT_ENTRY_OPTIONAL,
            },
            required=(
                "$XDSDocumentEntryPatientId",
                "$XDSDocumentEntryStatus",
                "$XDSDocumentEntryReferenceIdList",
            ),
        ),
        _find_documents,
    ),
    StoredQueryKind(
        FIND_SUBMISSION_SETS,
        QueryDefinition(
            "FindSubmissionSets",
            {
                "$XDSSubmissionSetPatientId": PATIENT,
                "$XDSSubmissionSetStatus": STATUS,
                "$XDSSubmissionSetSourceId": OID_LIST,
                "$XDSSubmissionSetSubmissionTimeFrom": TIME,
                "$XDSSubmissionSetSubmissionTimeTo": TIME,
                "$XDSSubmissionSetAuthorPerson": AUTHOR,
                "$XDSSubmissionSetContentType": CODE,
            },
            required=("$XDSSubmissionSetPatientId", "$XDSSubmissionSetStatus"),
            single=frozenset({"$XDSSubmissionSetAuthorPerson"}),
        ),
        _find_submission_sets,
    ),
    StoredQueryKind(
        FIND_FOLDERS,
        QueryDefinition(
            "FindFolders",
            {
                "$XDSFolderPatientId": PATIENT,
                "$XDSFolderStatus": STATUS,
                "$XDSFolderLastUpdateTimeFrom": TIME,
                "$XDSFolderLastUpdateTimeTo": TIME,
                "$XDSFolderCodeList": CODE,
            },
            required=("$XDSFolderPatientId", "$XDSFolderStatus"),
        ),
        _find_folders,
    ),
    StoredQueryKind(
        GET_ALL,
        QueryDefinition(
            "GetAll",
            {
                "$patientId": PATIENT,
                "$XDSDocumentEntryStatus": STATUS,
                "$XDSSubmissionSetStatus": STATUS,
                "$XDSFolderStatus": STATUS,
                "$XDSDocumentEntryFormatCode": CODE,
                "$XDSDocumentEntryConfidentialityCode": CODE,
                "$XDSDocumentEntryType": OBJECT_TYPE,
            },
            required=(
                "$patientId",
                "$XDSDocumentEntryStatus",
                "$XDSSubmissionSetStatus",
                "$XDSFolderStatus",
            ),
        ),
        _get_all,
        select=_among_found,
    ),
)

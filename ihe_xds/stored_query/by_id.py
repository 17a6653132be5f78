"""The Get queries naming their objects by id: GetDocuments, GetSubmissionSetAndContents and
the Folder ones (GetFolders, GetFolderAndContents, GetFoldersForDocument), a Folder being a
folder List (MHD Vol 3 4.5.1)."""

from __future__ import annotations

from dataclasses import replace

from ihe_xds.stored_query.answer import Answer, member_keep
from ihe_xds.stored_query.fhir_search import (
    FOLDER_CODE,
    LIST_CODE,
    FhirSearch,
    QueryPlan,
    identifier_values,
    named_documents,
)
from ihe_xds.stored_query.ids import (
    GET_DOCUMENTS,
    GET_FOLDER_AND_CONTENTS,
    GET_FOLDERS,
    GET_FOLDERS_FOR_DOCUMENT,
    GET_SUBMISSION_SET_AND_CONTENTS,
)
from ihe_xds.stored_query.parameters import (
    BY_ID,
    CODE,
    OBJECT_TYPE,
    UNIQUE_ID,
    UUID,
    QueryDefinition,
    StoredQuery,
)
from ihe_xds.stored_query.query_kind import StoredQueryKind
from ihe_xds.vocabulary import ASSOC_HAS_MEMBER, DOCUMENT_RELATIONSHIPS


def _get_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [("identifier", named_documents(query))],
                "the named DocumentEntries",
            )
        ],
        ("DocumentEntry",),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
    )


def _get_submission_set_and_contents(query: StoredQuery) -> QueryPlan:
    identifiers = identifier_values(
        query, "$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"
    )
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "List",
                [("identifier", identifiers), LIST_CODE, ("_include", "List:item")],
                "the SubmissionSet, its member DocumentReferences and Folders",
            )
        ],
        # ITI TF-2a 3.18.4.1.2.3.7.10: the Folders the SubmissionSet holds too.
        ("SubmissionSet", "Folder", "DocumentEntry", "Association"),
        keep=member_keep(query),
        association_types=(ASSOC_HAS_MEMBER,),
        notes="keep() (type, format, confidentiality) applies to the members only",
    )


def _get_folders(query: StoredQuery) -> QueryPlan:
    identifiers = identifier_values(query, "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
    return QueryPlan(
        query.name,
        [FhirSearch("List", [("identifier", identifiers), FOLDER_CODE], "the named Folders")],
        ("Folder",),
    )


def _get_folder_and_contents(query: StoredQuery) -> QueryPlan:
    identifiers = identifier_values(query, "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "List",
                [("identifier", identifiers), FOLDER_CODE, ("_include", "List:item")],
                "the Folder and its member DocumentReferences",
            )
        ],
        ("Folder", "DocumentEntry", "Association"),
        keep=member_keep(query),
        association_types=(ASSOC_HAS_MEMBER,),
        notes="keep() (type, format, confidentiality) applies to the members only",
    )


def _get_folders_for_document(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [("identifier", named_documents(query)), ("_revinclude", "List:item")],
                "the named DocumentEntry and the Lists holding it",
            )
        ],
        ("Folder",),
    )


def _holding_the_document(query: StoredQuery, answer: Answer) -> Answer:
    """GetFoldersForDocument: the Folders with an entry naming the document found (read as
    the requester: one they may not read is not found, and no Folder is answered for it)."""
    named = {f"DocumentReference/{d.get('id')}" for d in answer.documents}
    return replace(
        answer,
        folders=[
            f
            for f in answer.folders
            if any(
                (item.get("item") or {}).get("reference") in named
                for item in f.get("entry") or []
                if isinstance(item, dict)
            )
        ],
    )


KINDS: tuple[StoredQueryKind, ...] = (
    StoredQueryKind(
        GET_DOCUMENTS,
        QueryDefinition(
            "GetDocuments",
            # $XDSDocumentEntryLogicalID (Metadata Update, 3.18.4.1.2.3.7.5): a DocumentEntry's
            # logicalId is its entryUUID here (an update is the same entry's next version).
            {**BY_ID, "$XDSDocumentEntryLogicalID": UUID},
            one_of=(
                "$XDSDocumentEntryEntryUUID",
                "$XDSDocumentEntryUniqueId",
                "$XDSDocumentEntryLogicalID",
            ),
        ),
        _get_documents,
        metadata_versions=True,
    ),
    StoredQueryKind(
        GET_FOLDERS,
        QueryDefinition(
            "GetFolders",
            {"$XDSFolderEntryUUID": UUID, "$XDSFolderUniqueId": UNIQUE_ID},
            one_of=("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
        ),
        _get_folders,
    ),
    StoredQueryKind(
        GET_SUBMISSION_SET_AND_CONTENTS,
        QueryDefinition(
            "GetSubmissionSetAndContents",
            {
                "$XDSSubmissionSetEntryUUID": UUID,
                "$XDSSubmissionSetUniqueId": UNIQUE_ID,
                "$XDSDocumentEntryFormatCode": CODE,
                "$XDSDocumentEntryConfidentialityCode": CODE,
                "$XDSDocumentEntryType": OBJECT_TYPE,
            },
            one_of=("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"),
            single=frozenset({"$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"}),
        ),
        _get_submission_set_and_contents,
        members_included=True,
    ),
    StoredQueryKind(
        GET_FOLDER_AND_CONTENTS,
        QueryDefinition(
            "GetFolderAndContents",
            {
                "$XDSFolderEntryUUID": UUID,
                "$XDSFolderUniqueId": UNIQUE_ID,
                "$XDSDocumentEntryFormatCode": CODE,
                "$XDSDocumentEntryConfidentialityCode": CODE,
                "$XDSDocumentEntryType": OBJECT_TYPE,
            },
            one_of=("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
            single=frozenset({"$XDSFolderEntryUUID", "$XDSFolderUniqueId"}),
        ),
        _get_folder_and_contents,
        members_included=True,
    ),
    StoredQueryKind(
        GET_FOLDERS_FOR_DOCUMENT,
        QueryDefinition(
            "GetFoldersForDocument",
            dict(BY_ID),
            one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
            single=frozenset({"$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"}),
        ),
        _get_folders_for_document,
        select=_holding_the_document,
    ),
)

"""The queries answering associations: GetAssociations, GetDocumentsAndAssociations,
GetSubmissionSets (the SubmissionSets holding a document) and GetRelatedDocuments."""

from __future__ import annotations

from dataclasses import replace

from ihe_xds.mapping import entry_uuid_of
from ihe_xds.stored_query.answer import Answer
from ihe_xds.stored_query.fhir_search import (
    FOLDER_CODE,
    LIST_CODE,
    FhirSearch,
    QueryPlan,
    named_documents,
)
from ihe_xds.stored_query.ids import (
    GET_ASSOCIATIONS,
    GET_DOCUMENTS_AND_ASSOCIATIONS,
    GET_RELATED_DOCUMENTS,
    GET_SUBMISSION_SETS,
)
from ihe_xds.stored_query.parameters import ASSOCIATION, BY_ID, UUID, QueryDefinition, StoredQuery
from ihe_xds.stored_query.query_kind import StoredQueryKind
from ihe_xds.vocabulary import ASSOC_HAS_MEMBER, DOCUMENT_RELATIONSHIPS


def _get_documents_and_associations(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [
                    ("identifier", named_documents(query)),
                    ("_revinclude", "List:item"),
                    ("_revinclude", "DocumentReference:relatesto"),
                ],
                "the named DocumentEntries, the SubmissionSets holding them and the documents relating to them",
            )
        ],
        ("DocumentEntry", "Association"),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
    )


def _pointed_at(query: StoredQuery) -> FhirSearch:
    """The DocumentEntries named by $uuid, with the Lists and documents pointing at them."""
    return FhirSearch(
        "DocumentReference",
        [
            ("identifier", _uuid_identifiers(query)),
            ("_revinclude", "List:item"),
            ("_revinclude", "DocumentReference:relatesto"),
        ],
        "the named DocumentEntries with the Lists and documents pointing at them",
    )


def _uuid_identifiers(query: StoredQuery) -> str:
    return ",".join(f"urn:ietf:rfc:3986|{u}" for u in query.values("$uuid"))


def _get_associations(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            _pointed_at(query),
            FhirSearch(
                "List",
                [
                    ("identifier", _uuid_identifiers(query)),
                    ("code", f"{LIST_CODE[1]},{FOLDER_CODE[1]}"),
                    ("_include", "List:item"),
                ],
                "the named SubmissionSets and Folders with their members",
            ),
        ],
        ("Association",),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
        notes="keep associations whose source or target is one of $uuid",
    )


def _get_submission_sets(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [_pointed_at(query)],
        ("SubmissionSet", "Association"),
        association_types=(ASSOC_HAS_MEMBER,),
        notes="the Lists (code submissionset) found by _revinclude, and their HasMember associations",
    )


def _get_related_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [
                    ("identifier", named_documents(query)),
                    ("_include", "DocumentReference:relatesto"),
                    ("_revinclude", "DocumentReference:relatesto"),
                ],
                "the document, the documents it relates to and those relating to it",
            )
        ],
        ("DocumentEntry", "Association"),
        association_types=tuple(query.values("$AssociationTypes")),
        notes="empty answer when the document has no association of the requested types",
    )


def _touching_uuids(query: StoredQuery, answer: Answer) -> Answer:
    """GetAssociations: the associations whose source or target is one of $uuid."""
    uuids = set(query.values("$uuid"))
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in uuids or a.target in uuids],
    )


def _holding_uuids(query: StoredQuery, answer: Answer) -> Answer:
    """GetSubmissionSets: the HasMember associations to one of $uuid from a SubmissionSet
    (not a Folder's, ITI TF-2a 3.18.4.1.2.3.7.9), and their SubmissionSets."""
    uuids = set(query.values("$uuid"))
    sets = {entry_uuid_of(s) for s in answer.submission_sets}
    associations = [a for a in answer.associations if a.target in uuids and a.source in sets]
    holders = {a.source for a in associations}
    return replace(
        answer,
        associations=associations,
        submission_sets=[s for s in answer.submission_sets if entry_uuid_of(s) in holders],
    )


def _touching_documents(query: StoredQuery, answer: Answer) -> Answer:
    """GetDocumentsAndAssociations: the associations of the named documents."""
    named = {entry_uuid_of(d) for d in answer.documents}
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in named or a.target in named],
    )


def _related_documents(query: StoredQuery, answer: Answer) -> Answer:
    """GetRelatedDocuments: the named document's associations of the requested types and the
    documents at both ends; nothing when it has none."""
    answer = _touching_documents(query, answer)
    related = {a.source for a in answer.associations} | {a.target for a in answer.associations}
    documents = (
        [d for d in answer.found if entry_uuid_of(d) in related] if answer.associations else []
    )
    return replace(answer, documents=documents)


KINDS: tuple[StoredQueryKind, ...] = (
    StoredQueryKind(
        GET_ASSOCIATIONS,
        QueryDefinition("GetAssociations", {"$uuid": UUID}, required=("$uuid",)),
        _get_associations,
        select=_touching_uuids,
    ),
    StoredQueryKind(
        GET_DOCUMENTS_AND_ASSOCIATIONS,
        QueryDefinition(
            "GetDocumentsAndAssociations",
            dict(BY_ID),
            one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
        ),
        _get_documents_and_associations,
        select=_touching_documents,
        metadata_versions=True,
    ),
    StoredQueryKind(
        GET_SUBMISSION_SETS,
        QueryDefinition("GetSubmissionSets", {"$uuid": UUID}, required=("$uuid",)),
        _get_submission_sets,
        select=_holding_uuids,
    ),
    StoredQueryKind(
        GET_RELATED_DOCUMENTS,
        QueryDefinition(
            "GetRelatedDocuments",
            {**BY_ID, "$AssociationTypes": ASSOCIATION},
            required=("$AssociationTypes",),
            one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
            single=frozenset({"$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"}),
        ),
        _get_related_documents,
        select=_related_documents,
    ),
)

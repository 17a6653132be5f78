"""StoredQueryKind: one stored query's parameters, plan and answer filter, as one object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ihe_xds.stored_query.answer import Answer, as_found
from ihe_xds.stored_query.fhir_search import QueryPlan
from ihe_xds.stored_query.parameters import QueryDefinition, StoredQuery


@dataclass(frozen=True, slots=True)
class StoredQueryKind:
    """One stored query: its parameters, the FHIR searches answering it (`plan`) and what of
    their results the answer keeps (`select`, after `QueryPlan.keep`). Adding a stored query
    is adding one of these to KINDS.

    `members_included`: the DocumentReferences the searches only included are answered too
    (GetSubmissionSetAndContents: the SubmissionSet's members). `metadata_versions`: each
    metadata version of a named document is a DocumentEntry of its own (ihe_xds.entry_versions).
    """

    query_id: str
    definition: QueryDefinition
    plan: Callable[[StoredQuery], QueryPlan]
    select: Callable[[StoredQuery, Answer], Answer] = as_found
    members_included: bool = False
    metadata_versions: bool = False

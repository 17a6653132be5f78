"""ITI-18 Registry Stored Query: parse the AdhocQueryRequest, plan the FHIR searches.

Values follow ebRS 3.0 / ITI TF-2a 3.18.4.1.2.3.5: strings in single quotes (a quote inside
doubled), numbers (times) bare, lists in parentheses; several Value elements of one Slot are
one OR-list; several Slots of a multi-slot parameter (EventCodeList, ConfidentialityCode,
FolderCodeList) are AND-ed. Every value is then checked against the type of its parameter
(CX patient id, `code^^scheme`, time, status URN, urn:uuid, uniqueId ...), so that nothing
free-form reaches the search: an injection attempt such as `'593603^^^&...&ISO''%20and%20
611%3d611--%20` fails the grammar (an unterminated quoted string) and is answered with
XDSRegistryMetadataError naming the parameter; no value is ever spliced into a query.

Errors: XDSUnknownStoredQuery (unknown query id), XDSStoredQueryMissingParam (a required
parameter, or none of a "one of" group), XDSStoredQueryParamNumber (several values or
slots where one is allowed, both members of a "one of" group), XDSRegistryMetadataError
(a value of the wrong form). A parameter the query does not define is ignored, as ebRS 3.0
6.3.2.1 requires, with a Warning naming it. Every parameter a served query defines is
applied or refused, never accepted and ignored: the table is docs/xds-stored-queries.md,
each row proven by tests/http/test_xds_stored_query_parameters.py (issue #19, deliverable 3).

Each stored query is one StoredQueryKind of KINDS, keyed by its id: its parameters
(QueryDefinition), its plan (the FHIR searches, QueryPlan, with `keep` for what FHIR search
cannot say) and its answer filter (`select`). `transactions.iti18` runs any plan and writes
any selected answer the same way: adding a stored query is adding one StoredQueryKind.

The modules:

- `ids`: the query ids;
- `parameters`: the value types, QueryDefinition, StoredQuery, the value grammar;
- `parse`: the AdhocQueryRequest read into a checked StoredQuery (`parse_stored_query`);
- `fhir_search`: QueryPlan and FhirSearch, the XDS parameters as FHIR search parameters;
- `answer`: Answer, the per-resource `keep` filters and the LIKE of AuthorPerson;
- `query_kind`: StoredQueryKind;
- `find`, `by_id`, `associations`: the StoredQueryKinds of each family, with their plans
  and answer filters;
- `kinds`: KINDS gathered from the families, QUERIES, `plan`.
"""

from __future__ import annotations

from ihe_xds.stored_query.answer import Answer, like_matches
from ihe_xds.stored_query.fhir_search import FhirSearch, QueryPlan, to_fhir_search
from ihe_xds.stored_query.ids import (
    FIND_DOCUMENTS,
    FIND_DOCUMENTS_BY_REFERENCE_ID,
    FIND_FOLDERS,
    FIND_SUBMISSION_SETS,
    GET_ALL,
    GET_ASSOCIATIONS,
    GET_DOCUMENTS,
    GET_DOCUMENTS_AND_ASSOCIATIONS,
    GET_FOLDER_AND_CONTENTS,
    GET_FOLDERS,
    GET_FOLDERS_FOR_DOCUMENT,
    GET_RELATED_DOCUMENTS,
    GET_SUBMISSION_SET_AND_CONTENTS,
    GET_SUBMISSION_SETS,
)
from ihe_xds.stored_query.kinds import KINDS, QUERIES, QUERY_IDS_BY_NAME, plan
from ihe_xds.stored_query.parameters import (
    Code,
    NotAQuery,
    QueryDefinition,
    StoredQuery,
    StoredQueryError,
    parse_value,
)
from ihe_xds.stored_query.parse import parse_stored_query
from ihe_xds.stored_query.query_kind import StoredQueryKind

__all__ = [
    "FIND_DOCUMENTS",
    "FIND_DOCUMENTS_BY_REFERENCE_ID",
    "FIND_FOLDERS",
    "FIND_SUBMISSION_SETS",
    "GET_ALL",
    "GET_ASSOCIATIONS",
    "GET_DOCUMENTS",
    "GET_DOCUMENTS_AND_ASSOCIATIONS",
    "GET_FOLDERS",
    "GET_FOLDERS_FOR_DOCUMENT",
    "GET_FOLDER_AND_CONTENTS",
    "GET_RELATED_DOCUMENTS",
    "GET_SUBMISSION_SETS",
    "GET_SUBMISSION_SET_AND_CONTENTS",
    "KINDS",
    "QUERIES",
    "QUERY_IDS_BY_NAME",
    "Answer",
    "Code",
    "FhirSearch",
    "NotAQuery",
    "QueryDefinition",
    "QueryPlan",
    "StoredQuery",
    "StoredQueryError",
    "StoredQueryKind",
    "like_matches",
    "parse_stored_query",
    "parse_value",
    "plan",
    "to_fhir_search",
]

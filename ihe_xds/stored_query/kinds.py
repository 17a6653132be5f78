"""KINDS: every stored query this registry serves, by id, gathered from the query families.

Adding a stored query is adding one StoredQueryKind to the KINDS of its family module
(find, by_id, associations); the parser (`parse_stored_query`, through QUERIES), the planner (`plan`) and
`transactions.iti18` read it from here.
"""

from __future__ import annotations

from ihe_xds.stored_query import associations, by_id, find
from ihe_xds.stored_query.fhir_search import QueryPlan
from ihe_xds.stored_query.parameters import QueryDefinition, StoredQuery
from ihe_xds.stored_query.query_kind import StoredQueryKind

KINDS: dict[str, StoredQueryKind] = {
    kind.query_id: kind for kind in (*find.KINDS, *by_id.KINDS, *associations.KINDS)
}
# The parameters of each query (parse_stored_query), and its id by name.
QUERIES: dict[str, QueryDefinition] = {query_id: k.definition for query_id, k in KINDS.items()}
QUERY_IDS_BY_NAME = {definition.name: query_id for query_id, definition in QUERIES.items()}


def plan(query: StoredQuery) -> QueryPlan:
    """The FHIR searches answering any supported stored query (see QueryPlan)."""
    kind = KINDS.get(query.query_id)
    if kind is None:
        raise ValueError(f"no plan for {query.name}")
    return kind.plan(query)

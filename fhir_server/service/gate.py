"""The access gate the service consults on every interaction (placeholder: internal only)."""

from __future__ import annotations

import hashlib
from enum import StrEnum

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import forbidden
from fhir_server.search.query import Everything, Node, SearchQuery
from fhir_server.store.base import HistoryPage, StoredResource


class ReadPurpose(StrEnum):
    READ = "read"
    VREAD = "vread"
    HISTORY = "history-instance"


class Gate:
    def _require_internal(self, requester: Requester) -> None:
        if requester.kind is not ActorKind.INTERNAL:
            raise forbidden("access denied")

    def binding(self, requester: Requester) -> str:
        return hashlib.sha256(f"{requester.kind}:{requester.subject_id}".encode()).hexdigest()[:32]

    def authorize_read(self, requester: Requester, stored: StoredResource, purpose: ReadPurpose) -> None:
        self._require_internal(requester)

    def authorize_history(self, requester: Requester, resource_type: str | None) -> None:
        self._require_internal(requester)

    def filter_history(self, requester: Requester, page: HistoryPage) -> HistoryPage:
        return page

    def constrain_search(self, requester: Requester, query: SearchQuery, conditional: bool = False) -> SearchQuery:
        self._require_internal(requester)
        return query

    def include_constraint(self, requester: Requester, query: SearchQuery, target_type: str) -> Node:
        return Everything()

    def after_search(self, requester: Requester, result) -> None:
        return None

    def authorize_write(self, requester: Requester, interaction: str, resource_type: str, new, old) -> None:
        self._require_internal(requester)

    def after_write(self, tx, requester: Requester, interaction: str, stored: StoredResource, resource) -> None:
        return None

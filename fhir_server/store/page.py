"""What a store search returns, the same for both engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class SearchRow(NamedTuple):
    """One matched or included resource, its JSON bytes exactly as stored (never re-parsed),
    and the `audit.entity_facts` of that version when the store keeps them (else None)."""

    resource_type: str
    id: str
    body: bytes
    facts: bytes | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of a search in the query's order.

    `next_cursor` / `previous_cursor` are opaque sealed tokens to pass back as
    `SearchQuery.cursor`; None when there is no such page. `total` is set when the query
    asked for a total (accurate or estimate: both are exact here) or for `_summary=count`.
    """

    rows: list[SearchRow] = field(default_factory=list)
    next_cursor: str | None = None
    previous_cursor: str | None = None
    total: int | None = None

"""Index entries computed before a write transaction opens, finished inside it.

Write transactions run one at a time (SQLite has one writer; group commit batches them),
so what they do while open is what limits concurrent writes. Extracting the index entries
of a resource and of its AuditEvent is pure work on data known beforehand, except for
`meta.lastUpdated`, which is stamped inside the transaction so that versions are stamped in
commit order. The entries are extracted from a provisionally stamped copy, and only the
`_lastUpdated` entry is replaced once the real stamp is known.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fhir_server.search.extract import extract_parameter
from fhir_server.search.index import IndexEntries
from fhir_server.search.registry import SearchRegistry

LAST_UPDATED = "_lastUpdated"


@dataclass
class PreparedEvents:
    """AuditEvents built before the transaction, with their index entries."""

    events: list[dict]
    entries: list[IndexEntries]


@dataclass
class PreparedWrite:
    """A create's resource entries and AuditEvents, ready before its transaction."""

    entries: IndexEntries
    audit: PreparedEvents | None


def restamped(entries: IndexEntries, stamped: dict, registry: SearchRegistry) -> IndexEntries:
    """`entries` (extracted before stamping) with the `_lastUpdated` of the stamped resource.

    Only `meta.lastUpdated` may differ between the provisional and the final stamp (the id
    and version are the same), so every other entry stands.
    """
    final = extract_parameter(stamped, registry, LAST_UPDATED)
    fresh = [d for d in final.dates if d.param == LAST_UPDATED]
    if any(d.param == LAST_UPDATED for d in entries.dates):
        entries.dates = [
            replacement
            for d in entries.dates
            for replacement in (fresh if d.param == LAST_UPDATED else [d])
        ]
    else:
        entries.dates = [*entries.dates, *fresh]
    return entries


def copy_entries(entries: list[IndexEntries]) -> list[IndexEntries]:
    """Shallow copies, so that a retried transaction restamps fresh lists."""
    return [replace(e, dates=list(e.dates)) for e in entries]

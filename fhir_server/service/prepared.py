"""Index entries computed before a write transaction opens, completed inside it.

Write transactions run one at a time (SQLite has one writer; group commit batches them),
so what they do while open is what limits concurrent writes. Extracting the index entries
of a resource and of its AuditEvent is pure work on data known beforehand, except for the
parameters that read `meta.lastUpdated`, which is stamped inside the transaction so that
versions are stamped in commit order. `extract.prepare` computes the rest ahead;
`extract(stamped, registry, content=prepared.entries())` completes it in the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.search.extract import PreparedEntries


@dataclass(frozen=True)
class PreparedEvents:
    """AuditEvents built before the transaction, with their prepared index entries."""

    events: list[dict]
    entries: list[PreparedEntries]


@dataclass(frozen=True)
class PreparedWrite:
    """A create's prepared resource entries and AuditEvents, ready before its transaction."""

    entries: PreparedEntries
    audit: PreparedEvents | None

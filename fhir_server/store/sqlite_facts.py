"""Audit facts for the versions a store holds from before them, derived in the background.

Every write stores its version's `audit.entity_facts` beside its index rows
(`sqlite_index.write_facts`). A store written by an earlier version of the server has none,
or has those of another derivation (`entity_facts.DERIVATION`), which are not read: its
searches parse their matches instead, which gives the same AuditEvents, only slower. The
maintenance thread (`SqliteStore._maintain`) derives the missing facts a batch at a time, in
write transactions that step aside for writers (as the AuditEvent journal move does), and
marks the store done for this derivation once a pass finds nothing missing, so that later
opens skip the scan; a release with another derivation runs its own pass.

The store keeps no FHIR semantics: how facts are derived from a body, and how an encoding of
that derivation starts, are handed to it (`SqliteStore(facts_of=...)`, wired by
`store.factory`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from fhir_server.store.base import FactsOf

SCHEMA = """
CREATE TABLE IF NOT EXISTS maintenance_done (task TEXT PRIMARY KEY) WITHOUT ROWID;
"""


def pending(connection: sqlite3.Connection, facts_of: FactsOf) -> bool:
    """Whether the store may still hold versions without facts of this derivation."""
    return (
        connection.execute(
            "SELECT 1 FROM maintenance_done WHERE task = ?", (facts_of.task,)
        ).fetchone()
        is None
    )


def backfill(
    connection: sqlite3.Connection,
    facts_of: FactsOf,
    after: int,
    batch: int,
    yield_to: Callable[[], bool],
) -> int | None:
    """In the caller's write transaction: the facts of the current versions after row `after`
    that have none of this derivation for that version, up to `batch` of them or until
    `yield_to()`. Returns the last row done, or None when none is left (the store is then
    marked done)."""
    rows = connection.execute(
        "SELECT r.rid, r.version, r.body FROM resource r WHERE r.rid > ? AND r.deleted = 0"
        " AND NOT EXISTS (SELECT 1 FROM resource_facts f WHERE f.rid = r.rid"
        " AND f.version = r.version AND substr(f.facts, 1, ?) = ?)"
        " ORDER BY r.rid LIMIT ?",
        (after, len(facts_of.prefix), facts_of.prefix, batch),
    ).fetchall()
    last = None
    for rid, version, body in rows:
        last = rid
        try:
            facts = facts_of.derive(bytes(body))
        except ValueError:  # left without: its searches parse it, and say what is wrong
            connection.execute("DELETE FROM resource_facts WHERE rid = ?", (rid,))
            continue
        connection.execute(
            "INSERT OR REPLACE INTO resource_facts (rid, version, facts) VALUES (?, ?, ?)",
            (rid, version, facts),
        )
        if yield_to():
            break
    if last is None:
        connection.execute(
            "INSERT OR IGNORE INTO maintenance_done (task) VALUES (?)", (facts_of.task,)
        )
    return last

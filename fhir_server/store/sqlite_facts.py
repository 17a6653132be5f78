"""Audit facts for the versions a store holds from before them, derived in the background.

Every write stores its version's `audit.entity_facts` beside its index rows
(`sqlite_index.write_facts`). A store written by an earlier version of the server has none:
its searches parse their matches instead, which gives the same AuditEvents, only slower. The
maintenance thread (`SqliteStore._maintain`) derives the missing facts a batch at a time, in
write transactions that step aside for writers (as the AuditEvent journal move does), and
marks the store done once a pass finds nothing missing, so that later opens skip the scan.

The store keeps no FHIR semantics: the function deriving facts from a body is handed to it
(`SqliteStore(facts_of=...)`, wired by `store.factory`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS maintenance_done (task TEXT PRIMARY KEY) WITHOUT ROWID;
"""

TASK = "resource_facts"

FactsOf = Callable[[bytes], bytes]


def pending(connection: sqlite3.Connection) -> bool:
    """Whether the store may still hold versions without facts."""
    return (
        connection.execute("SELECT 1 FROM maintenance_done WHERE task = ?", (TASK,)).fetchone()
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
    that have none, up to `batch` of them or until `yield_to()`. Returns the last row done,
    or None when none is left (the store is then marked done)."""
    rows = connection.execute(
        "SELECT r.rid, r.version, r.body FROM resource r WHERE r.rid > ? AND r.deleted = 0"
        " AND NOT EXISTS (SELECT 1 FROM resource_facts f WHERE f.rid = r.rid)"
        " ORDER BY r.rid LIMIT ?",
        (after, batch),
    ).fetchall()
    last = None
    for rid, version, body in rows:
        last = rid
        try:
            facts = facts_of(bytes(body))
        except ValueError:  # left without: its searches parse it, and say what is wrong
            continue
        connection.execute(
            "INSERT INTO resource_facts (rid, version, facts) VALUES (?, ?, ?)",
            (rid, version, facts),
        )
        if yield_to():
            break
    if last is None:
        connection.execute("INSERT OR IGNORE INTO maintenance_done (task) VALUES (?)", (TASK,))
    return last

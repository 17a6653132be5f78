"""The SQLite engine's AuditEvent journal, now drained only: events written by earlier
versions of the server, durable there, move into the tables.

Until 2026-11-22 every AuditEvent (R16) was committed as a single row of `audit_journal`
(its sealed body and its index rows, ready-made), and moved into the `resource`, `history`
and index tables later by a background thread, many per transaction. Measured since group
commit made every commit shared, the journal saved nothing on audited reads (the same
throughput either way) and cost the deposit and query paths a second write of every event:
the move, under the write lock, with a commit of its own. At a million documents an ITI-18
query's audit commit waited behind such a move (20-45 ms for one large search event, plus
its commit), which made most of the FindDocuments p95. Events are now written into the
tables in the transaction that records them, like any resource (`SqliteTransaction.append_audit`).

A store written by an earlier version may still hold journaled events. They stay invisible
to clients: every store operation that can return an AuditEvent first moves the whole
journal (`SqliteStore.settle_audit`), and the maintenance thread empties it meanwhile. A
journaled event and its move are each one transaction, so a crash loses neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import orjson

from fhir_server.store import sqlite_index, sqlite_labels
from fhir_server.store.base import StoredResource

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_journal (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    last_updated INTEGER NOT NULL,
    body BLOB NOT NULL,
    index_rows BLOB NOT NULL
);
"""

JOURNALED_TYPE = "AuditEvent"


def _insert(
    connection: sqlite3.Connection, resource: StoredResource, tables: sqlite_index.IndexRows
) -> None:
    labels = sqlite_labels.of_token_rows(tables.get("ix_token", ()))
    rid = connection.execute(
        "INSERT INTO resource (type, id, version, last_updated, deleted, body, labels) "
        "VALUES (?, ?, 1, ?, 0, ?, ?)",
        (JOURNALED_TYPE, resource.id, resource.last_updated, resource.body, labels),
    ).lastrowid
    if rid is None:  # an INSERT into a rowid table sets it; without it no index row can point
        raise RuntimeError(f"SQLite gave no rowid for the journaled {JOURNALED_TYPE}")
    connection.execute(
        "INSERT INTO history (type, id, version, last_updated, deleted, method, body) "
        "VALUES (?, ?, 1, ?, 0, 'POST', ?)",
        (JOURNALED_TYPE, resource.id, resource.last_updated, resource.body),
    )
    sqlite_index.insert_index_rows(connection, [(rid, tables)])


def pending(connection: sqlite3.Connection) -> bool:
    return connection.execute("SELECT 1 FROM audit_journal LIMIT 1").fetchone() is not None


def materialize(
    connection: sqlite3.Connection,
    limit: int,
    *,
    yield_to: Callable[[], bool] | None = None,
) -> int:
    """Move the `limit` oldest journaled events to the resource, history and index tables, in
    journal order (the order of the hash chain), inside the open write transaction.
    Returns how many were moved.

    `yield_to`, asked after each event moved: when it answers True the move stops there (at
    least one event is moved). At a million resources one event's index rows take a few
    milliseconds to insert (they land on random leaves of large B-trees), and a request
    whose commit waits behind the move waits for all of it; the background mover passes
    "a writer is queued" so that such a request waits for one event, not a batch.
    """
    rows = connection.execute(
        "SELECT seq, id, last_updated, body, index_rows FROM audit_journal ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    moved = 0
    for _, resource_id, last_updated, body, index_rows in rows:
        tables = {
            table: list(map(tuple, table_rows))
            for table, table_rows in orjson.loads(index_rows).items()
        }
        stored = StoredResource(JOURNALED_TYPE, resource_id, 1, last_updated, False, body)
        _insert(connection, stored, tables)
        moved += 1
        if yield_to is not None and yield_to():
            break
    if moved:
        last_moved_seq = rows[moved - 1][0]
        connection.execute("DELETE FROM audit_journal WHERE seq <= ?", (last_moved_seq,))
    return moved

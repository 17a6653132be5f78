"""The SQLite engine's AuditEvent journal: durable at once, indexed in batches.

Every read writes an AuditEvent (R16), durably, before its answer leaves. Written like any
other resource, one event touches about thirty B-trees (its row, its history row and a leaf
of each index its ~25 index rows go to), and every commit flushes each of those pages: the
audit then costs more than the read it records. AuditEvents are append-only and read rarely
(the patient's access history, `fhir-server audit verify`), so the engine writes each one as
a single row of `audit_journal` — its sealed body and its index rows, ready-made — and moves
journaled events into the `resource`, `history` and index tables later, many per
transaction, where they share pages.

The journal is invisible to clients: every store operation that can return an AuditEvent
first moves the whole journal (`SqliteStore.settle_audit`), so it sees every event committed
before it began; a background thread in each process keeps the journal short meanwhile.
A journaled event and its move are each one transaction, so a crash loses neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import orjson

from fhir_server.store import sqlite_index, sqlite_labels
from fhir_server.store.base import VersionWrite

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


def append(connection: sqlite3.Connection, version: VersionWrite) -> None:
    """Journal a new AuditEvent (version 1, created by POST) in the open transaction."""
    resource = version.resource
    if resource.resource_type != JOURNALED_TYPE or version.expected_version != 0:
        raise ValueError("only new AuditEvents are journaled")
    rows = (
        sqlite_index.index_rows(resource.resource_type, version.index)
        if version.index is not None
        else {}
    )
    connection.execute(
        "INSERT INTO audit_journal (id, last_updated, body, index_rows) VALUES (?, ?, ?, ?)",
        (resource.id, resource.last_updated, resource.body, orjson.dumps(rows)),
    )


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
        labels = sqlite_labels.of_token_rows(tables.get("ix_token", ()))
        rid = connection.execute(
            "INSERT INTO resource (type, id, version, last_updated, deleted, body, labels) "
            "VALUES (?, ?, 1, ?, 0, ?, ?)",
            (JOURNALED_TYPE, resource_id, last_updated, body, labels),
        ).lastrowid
        connection.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, body) "
            "VALUES (?, ?, 1, ?, 0, 'POST', ?)",
            (JOURNALED_TYPE, resource_id, last_updated, body),
        )
        sqlite_index.insert_index_rows(connection, [(rid, tables)])
        moved += 1
        if yield_to is not None and yield_to():
            break
    if moved:
        last_moved_seq = rows[moved - 1][0]
        connection.execute("DELETE FROM audit_journal WHERE seq <= ?", (last_moved_seq,))
    return moved

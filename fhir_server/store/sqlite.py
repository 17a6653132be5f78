"""The embedded engine: SQLite in WAL mode with durable (synchronous=FULL) commits.

One writer connection per process; concurrent write transactions of the process share one
durable commit (`group_commit.GroupCommit`), and the processes of a gunicorn server take
turns on a blocking file lock next to the database. Readers use one connection per thread
and never block the writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import orjson

from fhir_server.audit.chain import move_order
from fhir_server.search import reach
from fhir_server.search.query import Include, SearchQuery
from fhir_server.store import (
    sqlite_bulk,
    sqlite_facts,
    sqlite_index,
    sqlite_journal,
    sqlite_labels,
    sqlite_search,
)
from fhir_server.store.base import (
    PATIENTS_EPOCH,
    FactsOf,
    HistoryEntry,
    HistoryPage,
    RecordMoved,
    StoredResource,
    VersionConflict,
    VersionWrite,
    decode_history_cursor,
    encode_history_cursor,
    history_int,
)
from fhir_server.store.group_commit import GroupCommit
from fhir_server.store.page import SearchPage
from fhir_server.store.sqlite_connection import open_durable
from fhir_server.store.write_turn import WriteTurn

SCHEMA = """
CREATE TABLE IF NOT EXISTS resource (
    rid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    labels INTEGER NOT NULL DEFAULT 0,  -- masking labels as bits (sqlite_labels)
    UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    method TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS history_by_type ON history (type, seq);
CREATE INDEX IF NOT EXISTS history_by_time ON history (last_updated);
CREATE TABLE IF NOT EXISTS notified_day (
    patient TEXT NOT NULL,
    practitioner TEXT NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (patient, practitioner)
);
CREATE TABLE IF NOT EXISTS record_epoch (
    patient TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
) WITHOUT ROWID;
-- A write's AuditEvents, staged in the write's commit until the audit log holds them
-- (store.with_audit_log).
CREATE TABLE IF NOT EXISTS audit_outbox (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
"""

logger = logging.getLogger(__name__)


_ROW = "type, id, version, last_updated, deleted, body"


def _stored(row: tuple) -> StoredResource:
    return StoredResource(row[0], row[1], row[2], row[3], bool(row[4]), bytes(row[5]))


# AuditEvents moved from the resource tables to the audit log per import (`legacy_audit_events`).
LEGACY_CHUNK = 5_000


class SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        # The record epochs read (`facts_epoch`) and bumped by this transaction.
        self._held: dict[str, int] = {}
        self._bumped: dict[str, int] = {}

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        if resource_type == sqlite_journal.JOURNALED_TYPE:
            sqlite_journal.materialize(self._connection, limit=-1)
        row = self._connection.execute(
            f"SELECT {_ROW} FROM resource WHERE type = ? AND id = ?", (resource_type, resource_id)
        ).fetchone()
        return _stored(row) if row else None

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        """On the writer connection: it sees this unit's writes and those of the earlier
        units of its batch, which a reader connection would not until they commit."""
        if reach.search_reads(query, sqlite_journal.JOURNALED_TYPE):
            sqlite_journal.materialize(self._connection, limit=-1)
        return sqlite_search.search(
            self._connection, query, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    def claim(self, key: str) -> None:
        """Nothing to do: writers take turns at the database (`GroupCommit`, `WriteTurn`), so
        a search in this transaction sees every write that could conflict with it."""

    def stage_audit(self, events: Sequence[dict]) -> list[object]:
        """Stage a write's AuditEvents in its commit (`store.with_audit_log`); their keys."""
        return [
            self._connection.execute(
                "INSERT INTO audit_outbox (body) VALUES (?)", (orjson.dumps(event),)
            ).lastrowid
            for event in events
        ]

    def clear_outbox(self, keys: Sequence[object]) -> None:
        self._connection.executemany(
            "DELETE FROM audit_outbox WHERE seq = ?", [(key,) for key in keys]
        )

    def notified_day(self, patient_id: str, practitioner_id: str) -> str | None:
        row = self._connection.execute(
            "SELECT day FROM notified_day WHERE patient = ? AND practitioner = ?",
            (patient_id, practitioner_id),
        ).fetchone()
        return row[0] if row else None

    def set_notified_day(self, patient_id: str, practitioner_id: str, day: str) -> None:
        self._connection.execute(
            "INSERT INTO notified_day (patient, practitioner, day) VALUES (?, ?, ?) "
            "ON CONFLICT (patient, practitioner) DO UPDATE SET day = excluded.day",
            (patient_id, practitioner_id, day),
        )

    def bump_record_epoch(self, patient_id: str) -> None:
        self._connection.execute(
            "INSERT INTO record_epoch (patient, epoch) VALUES (?, 1) "
            "ON CONFLICT (patient) DO UPDATE SET epoch = epoch + 1",
            (patient_id,),
        )
        self._bumped[patient_id] = self._bumped.get(patient_id, 0) + 1

    def facts_epoch(self, patient_id: str) -> int:
        """On the writer connection: the earlier units of this batch, which commit with
        this one, are seen (a reader connection sees them only once they commit). Writers
        take turns, so nothing else can change it before the commit: no claim needed."""
        if patient_id not in self._held:
            row = self._connection.execute(
                "SELECT epoch FROM record_epoch WHERE patient = ?", (patient_id,)
            ).fetchone()
            epoch = row[0] if row else 0
            self._held[patient_id] = epoch - self._bumped.get(patient_id, 0)
        return self._held[patient_id]

    def confirm_facts_epoch(self, patient_id: str, epoch: int) -> None:
        """`RecordMoved` unless `facts_epoch(patient_id)` is `epoch`: raised here, so that the
        gate, which decides on facts and never imports the store, can confirm a decision."""
        if self.facts_epoch(patient_id) != epoch:
            raise RecordMoved(patient_id)

    def purge(self, resource_type: str, resource_id: str) -> None:
        if resource_type == "AuditEvent":
            raise ValueError("AuditEvents are never purged")
        if resource_type == "Patient":
            self.bump_record_epoch(resource_id)
            self.bump_record_epoch(PATIENTS_EPOCH)
        connection = self._connection
        row = connection.execute(
            "SELECT rid FROM resource WHERE type = ? AND id = ?", (resource_type, resource_id)
        ).fetchone()
        if row:
            sqlite_index.delete_index(connection, row[0])
            connection.execute("DELETE FROM resource WHERE rid = ?", (row[0],))
        connection.execute(
            "DELETE FROM history WHERE type = ? AND id = ?", (resource_type, resource_id)
        )

    def write(self, version: VersionWrite) -> None:
        resource = version.resource
        connection = self._connection
        row = connection.execute(
            "SELECT rid, version FROM resource WHERE type = ? AND id = ?",
            (resource.resource_type, resource.id),
        ).fetchone()
        current = row[1] if row else 0
        if current != version.expected_version:
            raise VersionConflict(resource.resource_type, resource.id)
        if resource.resource_type == "Patient":
            self.bump_record_epoch(PATIENTS_EPOCH)
        values = (
            resource.version,
            resource.last_updated,
            int(resource.deleted),
            resource.body,
            0 if resource.deleted else sqlite_labels.of_entries(version.index),
        )
        if row:
            rid = row[0]
            connection.execute(
                "UPDATE resource SET version = ?, last_updated = ?, deleted = ?, body = ?, "
                "labels = ? WHERE rid = ?",
                (*values, rid),
            )
            sqlite_index.delete_index(connection, rid)
        else:
            rid = connection.execute(
                "INSERT INTO resource (type, id, version, last_updated, deleted, body, labels) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (resource.resource_type, resource.id, *values),
            ).lastrowid
        connection.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                resource.resource_type,
                resource.id,
                resource.version,
                resource.last_updated,
                int(resource.deleted),
                version.method,
                resource.body,
            ),
        )
        if version.index is not None and not resource.deleted:
            sqlite_index.write_index(
                connection, rid, resource.resource_type, version.index, version.sort_values or {}
            )
            if version.facts is not None:
                sqlite_index.write_facts(connection, rid, resource.version, version.facts)


class SqliteStore:
    """ResourceStore on one SQLite database file."""

    name = "sqlite"

    # The background move of journaled AuditEvents holds the write lock (which every writer
    # of every process waits for) for a bounded time per transaction, not a number of events:
    # at a million resources one event takes 2-4 ms to move (its ~70 index rows land on
    # random leaves of large B-trees) and its share of the commit as much again, in a small
    # store a tenth of that. A move stops after the current event once it has held the lock
    # JOURNAL_MAX_HOLD_SECONDS, or JOURNAL_MIN_HOLD_SECONDS when a writer of any process
    # waits (`GroupCommit.waiting`, `WriteTurn`); stepping aside sooner would cost a commit
    # per event moved. Between two transactions the mover pauses.
    JOURNAL_BATCH = 64
    JOURNAL_MIN_HOLD_SECONDS = 0.005
    JOURNAL_MAX_HOLD_SECONDS = 0.02
    JOURNAL_INTERVAL_SECONDS = 0.25
    JOURNAL_PAUSE_SECONDS = 0.002
    # WAL checkpoints run in the maintenance thread (see `_maintain`), about this often.
    CHECKPOINT_INTERVAL_SECONDS = 1.0

    def __init__(
        self,
        path: str | Path,
        *,
        audit_referrers: reach.MayReference = reach.always,
        facts_of: FactsOf | None = None,
    ) -> None:
        """`audit_referrers(type, param)`: whether that reference parameter may point to an
        AuditEvent (from the registry's targets; by default any may), so that an `_include`
        which cannot reach one does not wait for the journal. `facts_of`: how the audit facts
        of a stored version are derived (`audit.entity_facts`), for those stored before
        them or by another derivation (`sqlite_facts`); None leaves them to be parsed by
        each search."""
        self.path = str(path)
        self._audit_referrers = audit_referrers
        self._facts_of = facts_of
        self._facts_after: int | None = 0  # the backfill's progress; None: done
        self._maintenance: threading.Thread | None = None
        self._maintenance_pid = 0
        self._closing = threading.Event()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._turn = None if self.path == ":memory:" else WriteTurn(self.path)
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        self._writer.executescript(sqlite_journal.SCHEMA)
        self._writer.executescript(sqlite_facts.SCHEMA)
        sqlite_index.create_index_schema(self._writer)
        with self._writer_turn():
            sqlite_labels.migrate(self._writer)
        self._group = GroupCommit(self._writer, self._writer_turn)

    def _connect(self) -> sqlite3.Connection:
        connection = open_durable(self.path)
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA cache_size = -65536")
        # No memory map: while the file grows (every checkpoint appends pages), each connection
        # remaps it at its next transaction and faults its pages in again, some three remaps
        # per commit under load (strace). Through the page cache the audit commits spend half
        # the kernel time, and reads at a million documents are as fast.
        connection.execute("PRAGMA mmap_size = 0")
        # Checkpoints are the maintenance thread's, outside the write lock (`_maintain`).
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    @property
    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    # -- reads ----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        if resource_type == sqlite_journal.JOURNALED_TYPE:
            self.settle_audit()
        row = self._reader.execute(
            f"SELECT {_ROW} FROM resource WHERE type = ? AND id = ?", (resource_type, resource_id)
        ).fetchone()
        return _stored(row) if row else None

    def vread(self, resource_type: str, resource_id: str, version: int) -> StoredResource | None:
        if not 0 < version < 2**63:  # no such version; SQLite cannot even bind it
            return None
        if resource_type == sqlite_journal.JOURNALED_TYPE:
            self.settle_audit()
        row = self._reader.execute(
            f"SELECT {_ROW} FROM history WHERE type = ? AND id = ? AND version = ?",
            (resource_type, resource_id, version),
        ).fetchone()
        return _stored(row) if row else None

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: int | None,
        count: int,
        cursor: str | None,
    ) -> HistoryPage:
        if resource_type in (None, sqlite_journal.JOURNALED_TYPE):
            self.settle_audit()
        clauses: list[str] = []
        params: list = []
        if resource_type is not None:
            clauses.append("type = ?")
            params.append(resource_type)
        if resource_id is not None:
            clauses.append("id = ?")
            params.append(resource_id)
        if since is not None:
            clauses.append("last_updated >= ?")
            params.append(since)
        if cursor is not None:
            clauses.append("seq < ?")
            params.append(history_int(decode_history_cursor(cursor)))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._reader.execute(
            f"SELECT seq, method, {_ROW} FROM history {where} ORDER BY seq DESC LIMIT ?",
            (*params, count + 1),
        ).fetchall()
        next_cursor = encode_history_cursor(rows[count - 1][0]) if len(rows) > count else None
        entries = [HistoryEntry(_stored(row[2:]), row[1]) for row in rows[:count]]
        return HistoryPage(entries, next_cursor)

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        if reach.search_reads(query, sqlite_journal.JOURNALED_TYPE, self._audit_referrers):
            self.settle_audit()
        return sqlite_search.search(
            self._reader, query, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    def resolve_includes(self, rows: Sequence, includes: Sequence[Include], allowed) -> list:
        if reach.includes_read(includes, sqlite_journal.JOURNALED_TYPE, self._audit_referrers):
            self.settle_audit()
        return sqlite_search.resolve_includes(self._reader, rows, tuple(includes), allowed)

    def record_epoch(self, patient_id: str) -> int:
        row = self._reader.execute(
            "SELECT epoch FROM record_epoch WHERE patient = ?", (patient_id,)
        ).fetchone()
        return row[0] if row else 0

    def ping(self) -> bool:
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    # -- writes ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[SqliteTransaction]:
        """A write transaction, committed together with the writes queued behind it."""
        if getattr(self._local, "in_transaction", False):
            raise RuntimeError("nested write transaction on one thread")
        self._start_maintenance()
        self._local.in_transaction = True
        try:
            with self._group.unit() as connection:
                yield SqliteTransaction(connection)
        finally:
            self._local.in_transaction = False

    # -- AuditEvents: the outbox and the move to the audit log -----------------------------

    def outbox(self) -> list[tuple[int, dict]]:
        """The staged AuditEvents, in staging order (`store.with_audit_log`). Read on the
        writer connection: at open, before any write (and the one connection in memory)."""
        rows = self._writer.execute("SELECT seq, body FROM audit_outbox ORDER BY seq").fetchall()
        return [(key, orjson.loads(body)) for key, body in rows]

    def legacy_audit_events(self, chunk: int = LEGACY_CHUNK) -> Iterator[list[tuple[bytes, int]]]:
        """(bytes, lastUpdated) of the AuditEvents earlier versions stored in the resource
        tables (or their journal), in chain order, `chunk` at a time, for the move to the
        audit log: only their sequences are held in memory at once, not their bytes. At
        open, on the writer connection (an in-memory store has no other)."""
        if (
            self._writer.execute(
                "SELECT 1 FROM audit_journal UNION ALL "
                "SELECT 1 FROM resource WHERE type = 'AuditEvent' LIMIT 1"
            ).fetchone()
            is None
        ):
            return
        self.settle_audit()
        order = sorted(
            (move_order(bytes(body)), rid)
            for rid, body in self._writer.execute(
                "SELECT rid, body FROM resource WHERE type = 'AuditEvent'"
            )
        )
        for start in range(0, len(order), chunk):
            rids = [rid for _, rid in order[start : start + chunk]]
            marks = ", ".join("?" * len(rids))
            rows = {
                rid: (bytes(body), last_updated)
                for rid, body, last_updated in self._writer.execute(
                    f"SELECT rid, body, last_updated FROM resource WHERE rid IN ({marks})", rids
                )
            }
            yield [rows[rid] for rid in rids]

    def drop_legacy_audit_events(self) -> None:
        """Remove the moved AuditEvents from the resource tables, in one transaction."""
        with self.transaction() as tx:
            connection = tx._connection
            rids = [
                row[0]
                for row in connection.execute("SELECT rid FROM resource WHERE type = 'AuditEvent'")
            ]
            for rid in rids:
                sqlite_index.delete_index(connection, rid)
            connection.execute("DELETE FROM resource WHERE type = 'AuditEvent'")
            connection.execute("DELETE FROM history WHERE type = 'AuditEvent'")
            connection.execute("DROP TABLE IF EXISTS audit_chain")

    # -- the AuditEvent journal -----------------------------------------------------------

    def settle_audit(self) -> None:
        """Move every journaled AuditEvent into the tables (`sqlite_journal`): afterwards a
        read sees every event committed before this call."""
        if not sqlite_journal.pending(self._reader):
            return
        if getattr(self._local, "in_transaction", False):
            # The caller holds the write unit: reading through another connection could not
            # see the move before it commits. Read AuditEvents through the transaction.
            raise RuntimeError("AuditEvents read outside the open write transaction")
        while True:
            with self.transaction() as tx:
                moved = sqlite_journal.materialize(tx._connection, self.JOURNAL_BATCH * 10)
            if moved < self.JOURNAL_BATCH * 10:
                return

    # -- background maintenance -----------------------------------------------------------

    def _start_maintenance(self) -> None:
        """Start this process's maintenance thread with its first write transaction."""
        if self._maintenance_running():
            return
        with self._connections_lock:
            if self._maintenance_running() or self._closing.is_set():
                return
            self._maintenance_pid = os.getpid()
            self._maintenance = threading.Thread(
                target=self._maintain, name="sqlite-maintenance", daemon=True
            )
            self._maintenance.start()

    def _maintenance_running(self) -> bool:
        thread = self._maintenance
        return thread is not None and self._maintenance_pid == os.getpid() and thread.is_alive()

    def _maintain(self) -> None:
        """Move the AuditEvent journal into the tables, and checkpoint the WAL.

        SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, while
        that writer still holds the write lock: every writer of every process then waits for
        pages to be copied into the database file and flushed. Here checkpoints are PASSIVE
        and outside any write transaction: writers go on appending to the WAL meanwhile.
        """
        last_checkpoint = time.monotonic()
        while not self._closing.wait(self.JOURNAL_INTERVAL_SECONDS):
            try:
                while sqlite_journal.pending(self._reader) and not self._closing.is_set():
                    with self.transaction() as tx:
                        started = time.monotonic()
                        moved = sqlite_journal.materialize(
                            tx._connection,
                            self.JOURNAL_BATCH,
                            yield_to=partial(self._move_should_stop, started),
                        )
                    if not moved:
                        break
                    time.sleep(self.JOURNAL_PAUSE_SECONDS)
                self.backfill_facts()
                if time.monotonic() - last_checkpoint >= self.CHECKPOINT_INTERVAL_SECONDS:
                    self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    last_checkpoint = time.monotonic()
            except Exception:
                # Busy or closing: the journal is durable and the WAL keeps every commit;
                # the next round (or the next read of an AuditEvent) catches up.
                logger.warning("SQLite maintenance postponed", exc_info=True)

    def backfill_facts(self) -> None:
        """Derive the audit facts of versions stored before them (`sqlite_facts`), a batch
        per write transaction, stepping aside for writers as the journal move does. The
        maintenance thread calls it; a caller may, to have it done before going on."""
        facts_of = self._facts_of
        if facts_of is None or self._facts_after is None:
            return
        if not sqlite_facts.pending(self._reader, facts_of):
            self._facts_after = None
            return
        while self._facts_after is not None and not self._closing.is_set():
            with self.transaction() as tx:
                self._facts_after = sqlite_facts.backfill(
                    tx._connection,
                    facts_of,
                    self._facts_after,
                    self.JOURNAL_BATCH,
                    partial(self._move_should_stop, time.monotonic()),
                )
            time.sleep(self.JOURNAL_PAUSE_SECONDS)

    @contextmanager
    def bulk_load(self) -> Iterator[bool]:
        """For a bulk load: when the store is empty, its secondary indexes are built once
        after the block instead of maintained row by row (`sqlite_bulk`). Yields whether
        they were deferred; writes inside are the ordinary durable transactions."""
        with sqlite_bulk.deferred_indexes(self._group.unit) as deferred:
            yield deferred

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """The cross-process turn at the database (`WriteTurn`); none in memory."""
        if self._turn is None:
            yield
            return
        with self._turn.hold():
            yield

    def _move_should_stop(self, started: float) -> bool:
        """Whether the journal move, holding the write lock since `started`, commits now."""
        held = time.monotonic() - started
        if held >= self.JOURNAL_MAX_HOLD_SECONDS:
            return True
        return held >= self.JOURNAL_MIN_HOLD_SECONDS and self._writers_waiting()

    def _writers_waiting(self) -> bool:
        """Whether a write of this process is queued, or a writer of another process waits
        for the turn: the journal move then stops after its current event."""
        return self._group.waiting() or (self._turn is not None and self._turn.others_waiting())

    def close(self) -> None:
        self._closing.set()
        thread = self._maintenance
        if thread is not None and self._maintenance_pid == os.getpid():
            thread.join(timeout=10)
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

"""The SQLite audit log: its own database file beside the resource store's.

One narrow row per event and one key row per patient of its compartment; nothing else is
indexed. The file has its own write lock and group commit, so an audited read never waits
for a resource write nor disturbs the resource store's page cache: a commit here touches the
right edges of two small B-trees. Readers use one connection per thread (WAL).

A batch is durable in two steps: its `INSERT` commits under the cross-process turn without
flushing (`synchronous=NORMAL`), then the leader flushes the WAL with `fdatasync` once the
turn is released, before any member of the batch returns (`GroupAppender`'s `sync`). The
flush is what `synchronous=FULL` would do inside the commit; done there, it gave up the
interpreter lock while the turn was held, and taking it back behind the worker's busy
threads kept the turn for 1.5 ms of the 2 ms a commit held it (docs/performance.md). An
event is thus visible to the other writers and readers a fraction of a millisecond before
it is durable: a power loss in between can take it, with every later one (the WAL's
checksums are cumulative), but none of them was answered yet, and the chain ends at the
last event kept, with the head committed beside it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from fhir_server.store.audit_log.committer import GroupAppender, PendingAppend
from fhir_server.store.audit_log.record import LogRecord, StampFn, seal_batch
from fhir_server.store.sqlite_connection import open_durable
from fhir_server.store.write_turn import WriteTurn

SCHEMA = """
CREATE TABLE IF NOT EXISTS event (
    seq INTEGER PRIMARY KEY,       -- the hash chain's sequence
    id TEXT NOT NULL UNIQUE,
    recorded INTEGER NOT NULL,     -- meta.lastUpdated, µs
    hash TEXT NOT NULL,            -- the chain hash (audit.chain)
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    subtype TEXT NOT NULL,
    outcome TEXT NOT NULL,
    labels TEXT NOT NULL,
    body BLOB NOT NULL,
    patients TEXT NOT NULL         -- JSON array of the compartment's Patient ids
);
CREATE TABLE IF NOT EXISTS head (   -- the newest event, rewritten with each commit: a tail
    one INTEGER PRIMARY KEY CHECK (one = 1),  -- cut from `event` shows against it
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_patient (
    patient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;
"""

# An event's patient keys and the head follow its row in the statement that inserts it, so
# that a batch is one statement: one durable transaction, and one release of the GIL by the
# committer thread instead of two per event (each release hands the interpreter to the
# request threads, and taking it back can wait a whole switch interval; see `_commit`).
TRIGGER = """
CREATE TRIGGER IF NOT EXISTS event_keys AFTER INSERT ON event BEGIN
    INSERT INTO event_patient (patient, seq) SELECT value, NEW.seq FROM json_each(NEW.patients);
    INSERT INTO head (one, seq, hash) VALUES (1, NEW.seq, NEW.hash) ON CONFLICT (one)
        DO UPDATE SET seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > head.seq;
END;
"""

_COLUMNS = "seq, id, recorded, hash, agent, action, subtype, outcome, labels, body"
_INSERTED = f"{_COLUMNS}, patients"
_ROW = f"({', '.join('?' * (_INSERTED.count(',') + 1))})"


@functools.lru_cache(maxsize=64)
def _insert_statement(rows: int) -> str:
    return f"INSERT INTO event ({_INSERTED}) VALUES {', '.join([_ROW] * rows)}"


def _upgrade(connection: sqlite3.Connection) -> None:
    """A log created before the trigger: its events' patient keys are already in
    `event_patient`, so the new column starts empty for them."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(event)")}
    if "patients" not in columns:
        connection.execute(f"ALTER TABLE event ADD COLUMN {_ADDED_COLUMN}")


# The column `_upgrade` adds, as SQLite then spells it at the end of the table's CREATE text.
_ADDED_COLUMN = "patients TEXT NOT NULL DEFAULT '[]'"


def schema_problem(connection: sqlite3.Connection) -> str | None:
    """What differs between the log file's schema and the one the server creates, or None.
    A trigger dropped stops the patient keys and the head from following the next events
    (the commit after would seal a sequence again); one added could rewrite or unkey events
    as they come; an index given another collation or a condition changes what a read
    finds. Tables, their columns and indexes are compared as SQLite describes them, not by
    their CREATE text, which a log upgraded in place (`_upgrade`) spells otherwise."""
    found, expected = _schema(connection), _expected_schema()
    for kind, name in sorted(found.keys() | expected.keys(), key=lambda object: object[::-1]):
        if (kind, name) not in expected:
            return f"the log file's schema has {kind} {name}, which the server never creates"
        if (kind, name) not in found:
            return f"the log file's schema lacks {kind} {name}"
        if found[kind, name] != expected[kind, name]:
            return f"the log file's {kind} {name} is not the one the server creates"
    return _constraints_problem(connection)


def _constraints_problem(connection: sqlite3.Connection) -> str | None:
    """A table whose CREATE text is not the server's, once its columns and indexes are: SQLite
    describes neither CHECK constraints nor the conflict clauses of keys (`ON CONFLICT
    REPLACE` on the sequence lets a commit after a head moved back overwrite events; a CHECK
    refuses the events it names, so a write's stay in the outbox, out of every trail). The
    texts are compared without comments and spacing, the event table's also as `_upgrade`
    leaves it."""
    expected = _expected_tables()
    rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    for name, sql in rows:
        if name in expected and _spelled(sql or "") not in expected[name]:
            return f"the log file's table {name} is not the one the server creates"
    return None


@functools.cache
def _expected_tables() -> dict[str, frozenset[str]]:
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(SCHEMA)
        tables = dict(
            connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        )
    finally:
        connection.close()
    spelled = {name: {_spelled(sql)} for name, sql in tables.items()}
    fresh = _spelled(tables["event"])
    column = _ADDED_COLUMN.removesuffix(" DEFAULT '[]'")  # as SCHEMA declares it
    spelled["event"].add(fresh.removesuffix(f",{column})") + f",{_ADDED_COLUMN})")
    return {name: frozenset(texts) for name, texts in spelled.items()}


_COMMENT = re.compile(r"--[^\n]*")
_SPACE = re.compile(r"\s+")
_AROUND = re.compile(r"\s*([(),])\s*")


def _spelled(sql: str) -> str:
    """A CREATE text without comments, with single spaces and none around ( ) and ,."""
    text = _SPACE.sub(" ", _COMMENT.sub("", sql)).strip()
    return _AROUND.sub(r"\1", text)


@functools.cache
def _expected_schema() -> dict[tuple[str, str], tuple]:
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(SCHEMA)
        connection.executescript(TRIGGER)
        return _schema(connection)
    finally:
        connection.close()


def _schema(connection: sqlite3.Connection) -> dict[tuple[str, str], tuple]:
    """(type, name) -> description of every table, index, trigger and view of the file; a
    trigger may share a table's name. Only the statistics tables ANALYZE writes are left
    out: a trigger renamed `sqlite_stat9` through the writable schema runs all the same."""
    described: dict[tuple[str, str], tuple] = {}
    objects = connection.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE NOT (type = 'table' AND name IN (?, ?, ?, ?))",
        _STATISTICS,
    ).fetchall()
    listed_indexes = {name for kind, name, _, _ in objects if kind == "index"}
    for kind, name, table, sql in objects:
        quoted = _quoted(name)
        if kind == "table":
            # cid, name, type, notnull, default (left out: `_upgrade` adds one), pk, hidden
            columns = connection.execute(f"PRAGMA table_xinfo({quoted})").fetchall()
            # With the indexes sqlite_master does not hold (described on their own): a
            # WITHOUT ROWID table's primary key, where the patient keys' collation is.
            indexes = tuple(
                (row[1], tuple(row[2:]), _index_keys(connection, row[1]))
                for row in connection.execute(f"PRAGMA index_list({quoted})")
                if row[1] not in listed_indexes
            )
            described[kind, name] = (
                tuple((c[1], c[2].upper(), c[3], c[5], c[6]) for c in columns),
                tuple(sorted(indexes)),
            )
        elif kind == "index":
            listed = {
                row[1]: row[2:]  # unique, origin, partial
                for row in connection.execute(f"PRAGMA index_list({_quoted(table)})")
            }
            described[kind, name] = (table, listed.get(name), _index_keys(connection, name))
        else:
            described[kind, name] = (table, " ".join((sql or "").split()))
    return described


# The statistics tables ANALYZE (or PRAGMA optimize) may write into the file.
_STATISTICS = ("sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4")


def _index_keys(connection: sqlite3.Connection, index: str) -> tuple:
    """cid, name, desc, collation, key of each column of `index` (`PRAGMA index_xinfo`)."""
    keys = connection.execute(f"PRAGMA index_xinfo({_quoted(index)})").fetchall()
    return tuple(tuple(k[1:]) for k in keys)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Events per page of `scan`.
_SCAN_PAGE = 1_000

_LOWEST_ROWID = -(2**63)

# Rows per INSERT statement (11 bound values each, within SQLite's 32,766).
_CHUNK = 500


def _row(record: LogRecord) -> tuple:
    return (
        record.sequence,
        record.id,
        record.recorded,
        record.hash,
        record.agent,
        record.action,
        record.subtype,
        record.outcome,
        record.labels,
        record.body,
        orjson.dumps(record.patients).decode(),
    )


def _record(row: tuple, patients: tuple[str, ...] = ()) -> LogRecord:
    return LogRecord(
        sequence=row[0],
        id=row[1],
        recorded=row[2],
        hash=row[3],
        patients=patients,
        agent=row[4],
        action=row[5],
        subtype=row[6],
        outcome=row[7],
        labels=row[8],
        body=bytes(row[9]),
    )


class SqliteAuditLog:
    name = "sqlite"

    def __init__(self, path: str | Path, *, stamp: StampFn, clock: Callable[[], int]) -> None:
        """`path` ":memory:" (a resource store in memory, for tests): a temporary file,
        since every connection to an in-memory database opens its own; removed on close, or
        when the log is collected or the process ends (a store dropped without `close`)."""
        self._remove_temporary: Callable[[], object] = lambda: None
        if str(path) == ":memory:":
            temporary = tempfile.mkdtemp(prefix="audit-log-")
            self._remove_temporary = weakref.finalize(self, shutil.rmtree, temporary, True)
            path = Path(temporary) / "audit.sqlite3"
        self.path = str(path)
        self._stamp = stamp
        self._clock = clock
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._turn = WriteTurn(self.path, announce_waiting=False)  # no background writer
        self._writer = self._connect()
        with self._write_turn():
            self._writer.executescript(SCHEMA)
            _upgrade(self._writer)
            self._writer.executescript(TRIGGER)
        # The schema committed with synchronous=FULL; the events' commits are flushed by
        # `_sync_wal`, outside the turn (module docstring).
        self._writer.execute("PRAGMA synchronous = NORMAL")
        self._wal_file: tuple[int, int] | None = None  # (process id, descriptor)
        self._appender = GroupAppender(self._commit, turn=self._write_turn, sync=self._sync_wal)

    def _connect(self) -> sqlite3.Connection:
        connection = open_durable(self.path)
        with self._lock:
            self._connections.append(connection)
        return connection

    @property
    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    # -- appending --------------------------------------------------------------------------

    def append(self, events: Sequence[dict], *, skip_known: bool = False) -> list[LogRecord]:
        if not events:
            return []
        return self._appender.append(events, skip_known)

    def _commit(self, batch: list[PendingAppend]) -> None:
        """The batch sealed after the head and inserted by one statement, its own durable
        transaction; no BEGIN: the cross-process turn the appender holds keeps every other
        writer out between the head read and the insert (and were one to slip in, the
        sequence, the primary key, would refuse the whole statement)."""
        connection = self._writer
        head = self._head(connection)
        asked = [str(e.get("id")) for p in batch if p.skip_known for e in p.events]
        held = self._known(connection, asked) if asked else set()
        recorded = self._clock()
        sealed: list[LogRecord] = []
        for pending in batch:
            events = pending.events
            if pending.skip_known:
                events = [event for event in events if str(event.get("id")) not in held]
            pending.records = seal_batch(events, head, recorded, self._stamp)
            if pending.records:
                head = (pending.records[-1].sequence, pending.records[-1].hash)
            sealed.extend(pending.records)
        self._insert(connection, sealed)

    @staticmethod
    def _insert(connection: sqlite3.Connection, records: Sequence[LogRecord]) -> None:
        """The events' rows (their patient keys and the head follow by `TRIGGER`), in
        statements of at most `_CHUNK` rows; with more than one, in one transaction."""
        if not records:
            return
        chunks = [records[i : i + _CHUNK] for i in range(0, len(records), _CHUNK)]
        if len(chunks) > 1:
            connection.execute("BEGIN IMMEDIATE")
        try:
            for chunk in chunks:
                connection.execute(
                    _insert_statement(len(chunk)),
                    [value for record in chunk for value in _row(record)],
                )
            if len(chunks) > 1:
                connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def import_sealed(self, records: Sequence[LogRecord]) -> int:
        with self._write_turn():
            connection = self._writer
            held = self._known(connection, [r.id for r in records])
            fresh = [r for r in records if r.id not in held]
            self._insert(connection, fresh)
        self._sync_wal()
        return len(fresh)

    def _sync_wal(self) -> None:
        """Make what the writer committed durable: `fdatasync` of the WAL file, which holds
        every commit since the last checkpoint (a checkpoint flushes the WAL and then the
        database file itself). The file is opened once per process, after the first
        commit created it; SQLite removes it only when the last connection to the log
        closes, and the writer stays open until `close`."""
        opened = self._wal_file
        if opened is None or opened[0] != os.getpid():
            descriptor = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            opened = self._wal_file = (os.getpid(), descriptor)
        os.fdatasync(opened[1])

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """The cross-process turn at the log file, queued by the OS (`WriteTurn`)."""
        with self._turn.hold():
            yield

    # -- reading ----------------------------------------------------------------------------

    @staticmethod
    def _head(connection: sqlite3.Connection) -> tuple[int, str] | None:
        row = connection.execute("SELECT seq, hash FROM head WHERE one = 1").fetchone()
        return (row[0], row[1]) if row else None

    def head(self) -> tuple[int, str] | None:
        """The head as recorded with the last commit (not read from the events themselves:
        `audit verify` compares the chain against it)."""
        return self._head(self._reader)

    @staticmethod
    def _known(connection: sqlite3.Connection, event_ids: list[str]) -> set[str]:
        held: set[str] = set()
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            held.update(
                row[0]
                for row in connection.execute(f"SELECT id FROM event WHERE id IN ({marks})", chunk)
            )
        return held

    def known(self, event_ids: Iterable[str]) -> set[str]:
        return self._known(self._reader, list(event_ids))

    def get(self, event_id: str) -> LogRecord | None:
        """The event of id `event_id`, byte for byte: a collation given to the column behind
        the server's back (NOCASE) would find another's (FHIR ids are case-sensitive)."""
        row = self._reader.execute(
            f"SELECT {_COLUMNS} FROM event WHERE id = ?", (event_id,)
        ).fetchone()
        return _record(row) if row and row[1] == event_id else None

    def scan(self, patients: Sequence[str] | None = None) -> Iterator[LogRecord]:
        """In pages of `_SCAN_PAGE` events by sequence: `audit verify` reads the whole log,
        which must not be held in memory at once, and no statement stays open between two
        pages (a reader left open would keep the WAL from being checkpointed)."""
        connection = self._reader
        where: str = ""
        params: tuple[str, ...] = ()
        if patients is not None:
            marks = ", ".join("?" * len(patients))
            where = f"AND seq IN (SELECT seq FROM event_patient WHERE patient IN ({marks}))"
            params = tuple(patients)
        # From the lowest rowid, not from 1: a row put below the chain's first sequence
        # behind the server's back is read by id and listed by `_history`, so verify reads it.
        after, bound = _LOWEST_ROWID, ">="
        while True:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM event WHERE seq {bound} ? {where} ORDER BY seq LIMIT ?",
                (after, *params, _SCAN_PAGE),
            ).fetchall()
            for row in rows:
                yield _record(row)
            if len(rows) < _SCAN_PAGE:
                return
            after, bound = rows[-1][0], ">"

    def patient_keys(
        self, *, after: int | None = None, up_to: int | None = None
    ) -> Iterator[tuple[int, str]]:
        clauses = [
            clause
            for clause, bound in (("seq > ?", after), ("seq <= ?", up_to))
            if bound is not None
        ]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._reader.execute(
            f"SELECT seq, patient FROM event_patient {where} ORDER BY seq, patient",
            tuple(bound for bound in (after, up_to) if bound is not None),
        )
        yield from ((seq, patient) for seq, patient in rows)

    def newest_first(
        self, *, before: int | None, since: int | None, event_id: str | None, limit: int
    ) -> list[LogRecord]:
        clauses: list[str] = []
        params: list = []
        for clause, value in (("seq < ?", before), ("recorded >= ?", since), ("id = ?", event_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._reader.execute(
            f"SELECT {_COLUMNS} FROM event {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
        ).fetchall()
        return [_record(row) for row in rows if event_id in (None, row[1])]  # as `get`

    def integrity_problem(self) -> str | None:
        """SQLite's own `integrity_check` of the file: an index edited to disagree with its
        table (an event missing from the id index, which a read goes by, but not from the
        table, which `scan` and so `audit verify` read) shows only there. Then the schema
        against the one the server creates (`schema_problem`)."""
        found = [row[0] for row in self._reader.execute("PRAGMA integrity_check")]
        if found != ["ok"]:
            return f"the log file's integrity check fails: {'; '.join(found)}"
        return schema_problem(self._reader)

    def close(self) -> None:
        self._appender.stop()
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
            opened, self._wal_file = self._wal_file, None
            if opened is not None and opened[0] == os.getpid():
                os.close(opened[1])
        self._remove_temporary()

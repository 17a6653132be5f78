"""The audit log beside the resource store (issue #21, R16): events written by earlier
versions move into it on open with their chain; a crash between a write's commit and its
events' append loses nothing and duplicates nothing; the log's patient key is the
compartment the search index computes; AuditEvent searches answer what the resource
store's engine answered (ids, order, totals, paging)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.audit.balp import DataEntity, build_audit_events, build_refusal_events
from fhir_server.audit.chain import GENESIS_HASH, chain_link, seal
from fhir_server.audit.verify import verify_store
from fhir_server.paths import profiles_dir
from fhir_server.search.extract import extract, sort_values
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import SearchQuery
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store import sqlite_index
from fhir_server.store.audit_log.record import event_patients, imported
from fhir_server.store.base import VersionWrite
from fhir_server.store.factory import audit_log_path, with_audit_log
from fhir_server.store.sqlite import SqliteStore

KEY = b"k" * 32
BASE = "http://127.0.0.1:8080/fhir"
GP = Requester(ActorKind.PRACTITIONER, "810001234567", "Dr GP", profession="10")
NURSE = Requester(ActorKind.PRACTITIONER, "810009999999", "Nurse", profession="60")
PATIENT = Requester(ActorKind.PATIENT, "p1", "Patient One")
PARENT = Requester(ActorKind.REPRESENTATIVE, "rp1", "Parent")
EMERGENCY = Requester(
    ActorKind.PRACTITIONER, "810001111111", "Dr 15", access_mode=AccessMode.CENTRE_15
)


def _events(count: int = 12) -> list[dict]:
    """BALP events of several shapes and patients, recorded a minute apart."""
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    shapes = [
        (GP, "read", ["p1"], ()),
        (PATIENT, "search-type", ["p1"], ()),
        (PARENT, "read", ["p2"], ()),
        (GP, "create", ["p1"], (DataEntity(reference="DocumentReference/d1"),)),
        (NURSE, "read", ["p2"], (DataEntity(reference="DocumentReference/d2"),)),
        (EMERGENCY, "search-type", ["p1"], ()),
    ]
    events: list[dict] = []
    for index in range(count):
        requester, interaction, patients, entities = shapes[index % len(shapes)]
        events += build_audit_events(
            interaction=interaction,
            requester=requester,
            patients=patients,
            recorded=start + timedelta(minutes=index),
            server_base=BASE,
            request_id=f"req-{index}",
            raw_query=f"GET /fhir/Patient?_id={index}" if interaction == "search-type" else None,
            entities=entities,
            client_address="10.0.0.1",
        )
    events += build_refusal_events(
        requester=NURSE,
        patients=["p1"],
        denied_rule="R10",
        recorded=start + timedelta(hours=1),
        server_base=BASE,
        interaction="read",
        resource_type="DocumentReference",
    )
    return events


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(profiles_dir())


def _legacy_store(path: Path, registry, events: list[dict]) -> list[dict]:
    """A resource database as versions before the audit log left it: sealed events in the
    resource tables, the newest ones still in the old journal."""
    store = SqliteStore(path)
    sealed: list[dict] = []
    previous, sequence = GENESIS_HASH, 0
    try:
        for position, event in enumerate(events):
            sequence += 1
            event = seal(event, previous, sequence)
            previous = chain_link(event).hash
            stored = versions.stamp(dict(event), event["id"], 1, versions.now_us())
            sealed.append(orjson.loads(stored.body))
            entries = extract(event, registry)
            write = VersionWrite(stored, "POST", 0, entries, sort_values(entries), "p1")
            with store.transaction() as tx:
                if position < len(events) - 3:
                    tx.write(write)
                else:
                    tx._connection.execute(
                        "INSERT INTO audit_journal (id, last_updated, body, index_rows) "
                        "VALUES (?, ?, ?, ?)",
                        (
                            stored.id,
                            stored.last_updated,
                            stored.body,
                            orjson.dumps(sqlite_index.index_rows("AuditEvent", entries)),
                        ),
                    )
    finally:
        store.close()
    return sealed


def test_r16_events_in_the_resource_tables_move_into_the_log_with_their_chain(tmp_path, registry):
    database = tmp_path / "fhir.sqlite3"
    sealed = _legacy_store(database, registry, _events())
    store = with_audit_log(SqliteStore(database), registry)
    try:
        moved = [orjson.loads(record.body) for record in store.audit_log.scan()]
        assert [event["id"] for event in moved] == [event["id"] for event in sealed]
        assert moved == sealed  # the very bytes, chain links included
        report = verify_store(store)
        assert report.ok and report.checked == len(sealed)
        with sqlite3.connect(database) as connection:
            left = connection.execute(
                "SELECT count(*) FROM resource WHERE type = 'AuditEvent'"
            ).fetchone()[0]
            left += connection.execute("SELECT count(*) FROM audit_journal").fetchone()[0]
        assert left == 0
        # The chain goes on from the moved head.
        appended = store.append_audit(_events(1)[:1])
        assert appended[0].sequence == len(sealed) + 1
        assert chain_link(orjson.loads(appended[0].body)).previous == chain_link(sealed[-1]).hash
        assert verify_store(store).ok
    finally:
        store.close()


def _crash_after_the_resource_commit(database: str, event: dict) -> None:
    """A worker whose process dies once its write committed, before its event's append."""
    registry = SearchRegistry.load(profiles_dir())
    store = with_audit_log(SqliteStore(database), registry)
    store.audit_log.append = lambda *args, **kwargs: os._exit(9)  # SIGKILL-like: no cleanup
    with store.transaction() as tx:
        patient = versions.stamp({"resourceType": "Patient"}, "crash-1", 1, versions.now_us())
        tx.write(VersionWrite(patient, "POST", 0, extract(patient.json(), registry), None, ""))
        tx.stage_audit([event])


def test_r16_a_crash_between_the_write_commit_and_the_log_commit_loses_no_event(tmp_path, registry):
    database = str(tmp_path / "fhir.sqlite3")
    event = _events(1)[0]
    child = multiprocessing.get_context("spawn").Process(
        target=_crash_after_the_resource_commit, args=(database, event)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 9
    with sqlite3.connect(audit_log_path(database)) as connection:
        assert connection.execute("SELECT count(*) FROM event").fetchone()[0] == 0

    store = with_audit_log(SqliteStore(database), registry)  # opening replays the outbox
    try:
        assert store.read("Patient", "crash-1") is not None
        logged = store.read("AuditEvent", event["id"])
        assert logged is not None and logged.json()["outcome"] == event["outcome"]
        assert store.resources.outbox() == []
        assert store.replay_outbox() == 0  # once only
        assert [record.id for record in store.audit_log.scan()] == [event["id"]]
        assert verify_store(store).ok
    finally:
        store.close()


def test_r16_a_replay_racing_the_writer_stores_each_event_once(tmp_path, registry):
    """Another worker opening the store while a write's events are staged but not yet
    appended replays them; the writer's own append then skips them."""
    store = with_audit_log(SqliteStore(tmp_path / "fhir.sqlite3"), registry)
    try:
        events = _events(3)
        with store.resources.transaction() as tx:
            tx.stage_audit(events)
        assert store.replay_outbox() == len(events)
        store.audit_log.append(events, skip_known=True)
        assert [record.id for record in store.audit_log.scan()] == [e["id"] for e in events]
    finally:
        store.close()


def _patient_write(registry, resource_id: str) -> VersionWrite:
    patient = versions.stamp({"resourceType": "Patient"}, resource_id, 1, versions.now_us())
    return VersionWrite(patient, "POST", 0, extract(patient.json(), registry), None, "")


def test_r16_events_a_failed_append_left_are_appended_by_the_next_write(tmp_path, registry):
    """The log refuses one append (a full disk, an I/O error) after a write committed: the
    write stands and its events wait in the outbox, then the same process's next write
    appends them, without a restart; the chain holds."""
    store = with_audit_log(SqliteStore(tmp_path / "fhir.sqlite3"), registry)
    real_append = store.audit_log.append
    failures = {"left": 1}

    def failing_once(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_append(*args, **kwargs)

    store.audit_log.append = failing_once
    try:
        first, second = _events(2)[:2]
        with store.transaction() as tx:
            tx.write(_patient_write(registry, "p-1"))
            tx.stage_audit([first])
        assert store.read("Patient", "p-1") is not None
        assert store.read("AuditEvent", first["id"]) is None
        assert [event["id"] for _, event in store.resources.outbox()] == [first["id"]]

        with store.transaction() as tx:
            tx.write(_patient_write(registry, "p-2"))
            tx.stage_audit([second])
        assert [record.id for record in store.audit_log.scan()] == [first["id"], second["id"]]
        with store.transaction():
            pass
        assert store.resources.outbox() == []
        assert verify_store(store).ok
    finally:
        store.close()


@pytest.mark.parametrize("event", _events(), ids=lambda e: e["subtype"][0]["code"])
def test_the_logs_patient_key_is_the_compartment_the_index_computes(event, registry):
    sealed = seal(event, GENESIS_HASH, 1)
    assert list(event_patients(sealed)) == extract(sealed, registry).compartment


QUERIES = [
    "patient=p1",
    "patient=Patient/p2",
    "patient=p1&subtype=read",
    "patient=p1&subtype=http://hl7.org/fhir/restful-interaction|search-type",
    "patient=p1&outcome=8",
    "patient=p1&outcome:not=0",
    "patient=p1&_sort=-date",
    "patient=p1&_sort=date&_count=2",
    "patient=p1,p2&_sort=-date&_count=3",
    "patient=p2&date=ge2026-11-01T08:05:00Z",
    "patient=p1&agent:identifier=urn:oid:1.2.250.1.71.4.2.1|810001234567",
    "patient=p1&entity=DocumentReference/d1",
    "patient=p1&action=C",
    "patient=p1&_id=nothing",
    "_count=4",
    "_sort=_id&_count=5",
]


def _pages(store, query: SearchQuery) -> list[tuple[list[str], int | None]]:
    """Every page of `query` following next links, then the first page reached back."""
    pages = []
    page = store.search(query, cursor_key=KEY, cursor_binding="b")
    pages.append(([row.id for row in page.rows], page.total))
    last = page
    while last.next_cursor:
        last = store.search(
            SearchQuery(**{**query.__dict__, "cursor": last.next_cursor}),
            cursor_key=KEY,
            cursor_binding="b",
        )
        pages.append(([row.id for row in last.rows], last.total))
    if last.previous_cursor:
        back = store.search(
            SearchQuery(**{**query.__dict__, "cursor": last.previous_cursor}),
            cursor_key=KEY,
            cursor_binding="b",
        )
        pages.append(([row.id for row in back.rows], back.total))
    return pages


@pytest.mark.parametrize("text", QUERIES)
def test_r16_audit_event_searches_answer_what_the_resource_engine_answered(
    tmp_path, registry, text
):
    """The same events, written as resources into the SQLite resource engine (as before
    the log) and appended to the log: same ids, same order, same totals, page by page."""
    events = _events()
    sealed = _legacy_store(tmp_path / "old.sqlite3", registry, events)
    old = SqliteStore(tmp_path / "old.sqlite3")
    old.settle_audit()
    new = with_audit_log(SqliteStore(tmp_path / "new.sqlite3"), registry)
    try:
        new.audit_log.import_sealed([imported(event, orjson.dumps(event), 1) for event in sealed])
        params = [tuple(part.split("=", 1)) for part in text.split("&")]
        query = parse_search("AuditEvent", params + [("_total", "accurate")], registry).query
        assert _pages(new, query) == _pages(old, query)
    finally:
        old.close()
        new.close()


def test_r16_an_include_from_audit_events_applies_the_access_clause(tmp_path, registry):
    """`_include=AuditEvent:entity` reaches resources of the resource store: each is
    included only if the requester's access clause for its type (`allowed`) admits it, as
    the SQL engines include; a document the clause excludes is left out."""
    from fhir_server.search.query import Everything, Include, Not, TokenTest
    from fhir_server.store.page import SearchRow

    store = with_audit_log(SqliteStore(tmp_path / "fhir.sqlite3"), registry)
    try:
        for doc_id, label in (("d1", None), ("d2", "INVISIBLE_PATIENT")):
            document = {"resourceType": "DocumentReference", "status": "current"}
            if label:
                document["meta"] = {"security": [{"code": label}]}
            stored = versions.stamp(document, doc_id, 1, versions.now_us())
            entries = extract(stored.json(), registry)
            with store.transaction() as tx:
                tx.write(VersionWrite(stored, "POST", 0, entries, sort_values(entries), ""))
        events = _events(6)  # shapes 3 and 4 name DocumentReference/d1 and d2
        store.append_audit(events)
        rows = [
            SearchRow("AuditEvent", record.id, record.body) for record in store.audit_log.scan()
        ]
        include = (Include("AuditEvent", "entity", "DocumentReference"),)
        everything = store.resolve_includes(rows, include, lambda _type: Everything())
        assert {row.id for row in everything} == {"d1", "d2"}
        hidden = Not(TokenTest("_security", code="INVISIBLE_PATIENT", any_system=True))
        admitted = store.resolve_includes(rows, include, lambda _type: hidden)
        assert {row.id for row in admitted} == {"d1"}
    finally:
        store.close()


def test_an_in_memory_log_dropped_without_close_leaves_no_file_behind():
    """A store in memory (the tests' own) keeps its log in a temporary directory: dropping
    the store without closing it must not leave that directory behind (the suite once left
    128,000 of them, 17 GB, in /tmp)."""
    import gc

    from fhir_server.store.audit_log.sqlite import SqliteAuditLog

    log = SqliteAuditLog(":memory:", stamp=lambda event, recorded: b"{}", clock=versions.now_us)
    directory = Path(log.path).parent
    assert directory.is_dir()
    del log
    gc.collect()
    assert not directory.exists()


def test_r16_a_log_written_before_the_trigger_keeps_its_patient_keys_and_chain(tmp_path):
    """An audit log file of the first layout (patient keys written by their own statement,
    no `patients` column) opens, its events are still found by patient, and the chain goes
    on from its head."""
    from fhir_server.store.audit_log.sqlite import SqliteAuditLog
    from fhir_server.store.factory import _stamp

    path = tmp_path / "fhir.audit.sqlite3"
    old_schema = SQLITE_LOG_V1
    with sqlite3.connect(path) as connection:
        connection.executescript(old_schema)
    first = SqliteAuditLog(path, stamp=_stamp, clock=versions.now_us)
    try:
        first._writer.execute("DROP TRIGGER event_keys")  # as the first layout wrote them
        events = _events(6)
        records = first.append(events[:3])
        first._writer.executemany(
            "INSERT INTO event_patient (patient, seq) VALUES (?, ?)",
            [(p, r.sequence) for r in records for p in r.patients],
        )
        first._writer.execute(
            "INSERT OR REPLACE INTO head (one, seq, hash) VALUES (1, ?, ?)",
            (records[-1].sequence, records[-1].hash),
        )
    finally:
        first.close()
    log = SqliteAuditLog(path, stamp=_stamp, clock=versions.now_us)
    try:
        later = log.append(events[3:])
        assert later[0].sequence == records[-1].sequence + 1
        assert log.head() == (later[-1].sequence, later[-1].hash)
        found = [r.id for r in log.scan(["p2"])]
        assert found == [e["id"] for e in events if "Patient/p2" in orjson.dumps(e).decode()]
    finally:
        log.close()


SQLITE_LOG_V1 = """
CREATE TABLE event (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, recorded INTEGER NOT NULL,
    hash TEXT NOT NULL, agent TEXT NOT NULL, action TEXT NOT NULL, subtype TEXT NOT NULL,
    outcome TEXT NOT NULL, labels TEXT NOT NULL, body BLOB NOT NULL
);
CREATE TABLE head (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE event_patient (patient TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)) WITHOUT ROWID;
"""


def test_r16_legacy_events_are_moved_in_chain_order_a_chunk_at_a_time(tmp_path, registry):
    """Millions of events sealed before the log are not read into memory at once: they
    come in chunks, in chain order across chunks."""
    database = tmp_path / "fhir.sqlite3"
    sealed = _legacy_store(database, registry, _events())
    store = SqliteStore(database)
    try:
        chunks = list(store.legacy_audit_events(chunk=5))
    finally:
        store.close()
    assert [len(chunk) for chunk in chunks] == [5, 5, 3]
    moved = [orjson.loads(body) for chunk in chunks for body, _ in chunk]
    assert [event["id"] for event in moved] == [event["id"] for event in sealed]


def test_r16_an_audit_event_created_through_a_write_transaction_goes_to_the_log(tmp_path, registry):
    """The server's own loaders (bulk load, `fhir-server load`) create AuditEvents as
    resources: they must reach the log sealed, never the resource tables (where the next
    open could not move them: unsealed); an update or a delete is refused (append-only)."""
    store = with_audit_log(SqliteStore(tmp_path / "fhir.sqlite3"), registry)
    try:
        event = _events(1)[0]
        stored = versions.stamp(dict(event), event["id"], 1, versions.now_us())
        with store.transaction() as tx:
            tx.write(VersionWrite(stored, "POST", 0, extract(event, registry)))
        record = store.audit_log.get(event["id"])
        assert record is not None and chain_link(orjson.loads(record.body)) is not None
        with sqlite3.connect(tmp_path / "fhir.sqlite3") as connection:
            assert connection.execute(
                "SELECT count(*) FROM resource WHERE type = 'AuditEvent'"
            ).fetchone() == (0,)
        again = versions.stamp(dict(event), event["id"], 2, versions.now_us())
        with (
            pytest.raises(ValueError, match="never updated or deleted"),
            store.transaction() as tx,
        ):
            tx.write(VersionWrite(again, "PUT", 1, extract(event, registry)))
        assert verify_store(store).ok
    finally:
        store.close()


def test_r16_unsealed_events_in_the_resource_tables_are_sealed_after_the_moved_chain(
    tmp_path, registry
):
    """Events an earlier bulk load wrote as plain resources (no chain link) do not stop the
    store from opening: the sealed ones move with their links, the unsealed ones are sealed
    after them, and the chain verifies."""
    database = tmp_path / "fhir.sqlite3"
    sealed = _legacy_store(database, registry, _events(6))
    plain = _events(3)
    resources = SqliteStore(database)
    try:
        for event in plain:
            stored = versions.stamp(dict(event), event["id"], 1, versions.now_us())
            entries = extract(event, registry)
            with resources.transaction() as tx:
                tx.write(VersionWrite(stored, "POST", 0, entries, sort_values(entries), "p1"))
    finally:
        resources.close()
    store = with_audit_log(SqliteStore(database), registry)
    try:
        moved = [orjson.loads(record.body) for record in store.audit_log.scan()]
        assert [e["id"] for e in moved] == [e["id"] for e in sealed] + [e["id"] for e in plain]
        assert moved[: len(sealed)] == sealed
        assert verify_store(store).ok
    finally:
        store.close()


def test_r16_an_append_returns_once_the_logs_wal_is_flushed_outside_the_writers_turn(
    tmp_path, monkeypatch
):
    """R16 (a read's event durable before its answer) with the flush out of the turn (issue
    21): the log commits without flushing, then `fdatasync`s its WAL file once the
    cross-process turn is free, and only then does the append return. Checked from outside:
    at the flush, the events are already committed (another connection reads them) and the
    turn can be taken by another process's descriptor."""
    import fcntl

    from fhir_server.store.audit_log import sqlite as sqlite_log
    from fhir_server.store.factory import _stamp

    path = tmp_path / "fhir.audit.sqlite3"
    log = sqlite_log.SqliteAuditLog(path, stamp=_stamp, clock=versions.now_us)
    flushes: list[tuple[str, int, bool]] = []
    real_fdatasync = os.fdatasync

    def fdatasync(descriptor: int) -> None:
        flushed = os.readlink(f"/proc/self/fd/{descriptor}")
        with sqlite3.connect(path) as other:
            committed = other.execute("SELECT count(*) FROM event").fetchone()[0]
        with open(f"{path}-writer.lock", "a") as turn:  # another open file: another process's
            try:
                fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
                fcntl.flock(turn, fcntl.LOCK_UN)
            except BlockingIOError:
                free = False
        flushes.append((flushed, committed, free))
        real_fdatasync(descriptor)

    monkeypatch.setattr(sqlite_log.os, "fdatasync", fdatasync)
    try:
        events = _events(4)
        log.append(events[:1])
        log.append(events[1:])
    finally:
        log.close()
    wal = str(path) + "-wal"
    assert flushes == [(wal, 1, True), (wal, len(events), True)]


def test_r16_an_append_whose_flush_fails_is_not_acknowledged(tmp_path, monkeypatch):
    """Fail closed: committed but not flushed is not durable, so the request whose event it
    is gets the error (its answer is not sent)."""
    from fhir_server.store.audit_log import sqlite as sqlite_log
    from fhir_server.store.factory import _stamp

    log = sqlite_log.SqliteAuditLog(tmp_path / "a.sqlite3", stamp=_stamp, clock=versions.now_us)

    def failing(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_log.os, "fdatasync", failing)
    try:
        with pytest.raises(OSError, match="Input/output"):
            log.append(_events(1))
    finally:
        log.close()


def test_r16_a_power_loss_after_a_flush_keeps_every_answered_event(tmp_path, monkeypatch):
    """What a power loss leaves of the log: its database file and the WAL as far as the last
    `fdatasync` (or a little more, part of an unflushed commit). Opened from any such
    cut, the log holds every event whose append had returned (its read answered), and
    `audit verify` passes: the commits no longer flush inside the turn (issue 21), so the
    flush after them is what makes an answered read's event durable."""
    import shutil
    from types import SimpleNamespace

    from fhir_server.store.audit_log import sqlite as sqlite_log
    from fhir_server.store.factory import _stamp

    path = tmp_path / "live" / "fhir.audit.sqlite3"
    log = sqlite_log.SqliteAuditLog(path, stamp=_stamp, clock=versions.now_us)
    log._writer.execute("PRAGMA wal_autocheckpoint = 0")  # the database file stays as it is
    flushed: list[int] = []
    real_fdatasync = os.fdatasync

    def fdatasync(descriptor: int) -> None:
        real_fdatasync(descriptor)
        flushed.append(os.fstat(descriptor).st_size)

    monkeypatch.setattr(sqlite_log.os, "fdatasync", fdatasync)
    answered: list[tuple[list[str], int]] = []  # (ids answered so far, WAL flushed so far)
    try:
        for event in _events(12):
            log.append([event])
            done = answered[-1][0] if answered else []
            answered.append(([*done, event["id"]], flushed[-1]))
        wal = Path(f"{path}-wal").read_bytes()
    finally:
        log.close()
    database = path.read_bytes() if path.exists() else b""
    # At each flush, and inside the next, unflushed commit (its frames half on the disk).
    cuts = list(answered) + [
        (ids, (size + later) // 2)
        for (ids, size), (_, later) in zip(answered[:-1], answered[1:], strict=True)
    ]
    for number, (ids, cut) in enumerate(cuts):
        survivor = tmp_path / f"after-loss-{number}"
        survivor.mkdir()
        (survivor / "fhir.audit.sqlite3").write_bytes(database)
        (survivor / "fhir.audit.sqlite3-wal").write_bytes(wal[:cut])
        reopened = sqlite_log.SqliteAuditLog(
            survivor / "fhir.audit.sqlite3", stamp=_stamp, clock=versions.now_us
        )
        try:
            assert reopened.known(ids) == set(ids), f"an answered event lost at cut {cut}"
            report = verify_store(SimpleNamespace(audit_log=reopened))
            assert report.ok, (cut, report.reason)
        finally:
            reopened.close()
        shutil.rmtree(survivor)

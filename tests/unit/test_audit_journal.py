"""AuditEvents on SQLite (store/sqlite_journal.py): an AuditEvent (R16) is written into the
tables in the transaction that records it; events journaled by an earlier version of the
server are durable there, and every store operation that can return, count or match
AuditEvents sees them as if they had been written like any other resource."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import orjson
import pytest

from fhir_server.search.extract import extract, sort_values
from fhir_server.search.query import (
    And,
    Chain,
    Everything,
    Has,
    Include,
    InCompartment,
    ReferenceTest,
    SearchQuery,
    TokenTest,
)
from fhir_server.search.reach import search_reads
from fhir_server.store import sqlite_index, sqlite_journal
from fhir_server.store.base import StoredResource, VersionWrite
from fhir_server.store.factory import audit_referrers
from fhir_server.store.sqlite import SqliteStore

KEY = b"k" * 32


def _audit_event(patient_id: str = "p1") -> dict:
    return {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "action": "R",
        "recorded": "2026-11-22T05:00:00Z",
        "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/810001234567"}, "requestor": True}],
        "source": {"observer": {"display": "fhir-server"}},
        "entity": [{"what": {"reference": f"Patient/{patient_id}"}}],
    }


def _write(event: dict, registry) -> VersionWrite:
    body = orjson.dumps(event)
    stored = StoredResource("AuditEvent", event["id"], 1, 1_000_000, False, body)
    entries = extract(event, registry)
    return VersionWrite(stored, "POST", 0, entries, sort_values(entries), "p1")


def _journal(tx, version: VersionWrite) -> None:
    """An event journaled as versions before 2026-11-22 did (they leave such rows behind)."""
    resource = version.resource
    tx._connection.execute(
        "INSERT INTO audit_journal (id, last_updated, body, index_rows) VALUES (?, ?, ?, ?)",
        (
            resource.id,
            resource.last_updated,
            resource.body,
            orjson.dumps(sqlite_index.index_rows(resource.resource_type, version.index)),
        ),
    )


def _journal_rows(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT count(*) FROM audit_journal").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def store(tmp_path: Path, registry):
    store = SqliteStore(tmp_path / "fhir.sqlite3", audit_referrers=audit_referrers(registry))
    store.JOURNAL_INTERVAL_SECONDS = 3600  # no background move unless a test asks for one
    yield store
    store.close()


def _search(store: SqliteStore, query: SearchQuery) -> list[str]:
    page = store.search(query, cursor_key=KEY, cursor_binding="test")
    return [row.id for row in page.rows]


def test_r16_an_event_is_in_the_tables_when_its_transaction_commits(store, registry, tmp_path):
    """No journal row: read back, found by search, with the rows any resource would have."""
    event = _audit_event()
    with store.transaction() as tx:
        tx.append_audit(_write(event, registry))
    assert _journal_rows(tmp_path / "fhir.sqlite3") == 0
    connection = sqlite3.connect(tmp_path / "fhir.sqlite3")
    try:
        body = connection.execute(
            "SELECT body FROM resource WHERE type = 'AuditEvent' AND id = ?", (event["id"],)
        ).fetchone()[0]
    finally:
        connection.close()
    assert orjson.loads(body) == event
    query = SearchQuery(
        "AuditEvent", ReferenceTest("patient", target_type="Patient", target_id="p1")
    )
    assert _search(store, query) == [event["id"]]


def test_r16_a_journaled_event_is_durable_at_commit_and_read_back(store, registry, tmp_path):
    event = _audit_event()
    with store.transaction() as tx:
        _journal(tx, _write(event, registry))
    assert _journal_rows(tmp_path / "fhir.sqlite3") == 1  # committed, not yet moved
    stored = store.read("AuditEvent", event["id"])
    assert stored is not None and orjson.loads(stored.body) == event
    assert store.vread("AuditEvent", event["id"], 1).body == stored.body
    assert _journal_rows(tmp_path / "fhir.sqlite3") == 0


def test_r16_journaled_events_are_found_by_search(store, registry):
    events = [_audit_event() for _ in range(3)]
    for event in events:
        with store.transaction() as tx:
            _journal(tx, _write(event, registry))
    query = SearchQuery(
        "AuditEvent", ReferenceTest("patient", target_type="Patient", target_id="p1")
    )
    assert sorted(_search(store, query)) == sorted(event["id"] for event in events)


def test_r16_type_history_lists_journaled_events_in_chain_order(store, registry):
    """`fhir-server audit verify` walks the type history: newest first, as appended."""
    events = [_audit_event() for _ in range(3)]
    for event in events:
        with store.transaction() as tx:
            _journal(tx, _write(event, registry))
    page = store.history("AuditEvent", None, since=None, count=10, cursor=None)
    assert [entry.resource.id for entry in page.entries] == [e["id"] for e in reversed(events)]


@pytest.mark.parametrize("path", ["appended", "journaled"])
def test_audit_events_have_the_index_rows_of_a_resource_write(tmp_path, registry, path):
    """An appended event, and a journaled one once moved, have the rows `write_index`
    writes for any resource, unchanged."""
    event = _audit_event()
    direct = SqliteStore(tmp_path / "direct.sqlite3")
    journaled = SqliteStore(tmp_path / "journaled.sqlite3")
    try:
        with direct.transaction() as tx:
            tx.write(_write(event, registry))
        with journaled.transaction() as tx:
            if path == "appended":
                tx.append_audit(_write(event, registry))
            else:
                _journal(tx, _write(event, registry))
        journaled.settle_audit()

        def rows(store: SqliteStore) -> dict[str, list]:
            reader = store._reader
            return {
                table: sorted(
                    map(tuple, reader.execute(f"SELECT * FROM {table}").fetchall()), key=repr
                )
                for table in sqlite_index.INDEX_TABLES
            }

        assert rows(journaled) == rows(direct)
        assert sum(len(table_rows) for table_rows in rows(direct).values()) > 5
    finally:
        direct.close()
        journaled.close()


def test_r16_a_journaled_event_survives_a_restart(tmp_path, registry):
    path = tmp_path / "fhir.sqlite3"
    event = _audit_event()
    first = SqliteStore(path)
    first.JOURNAL_INTERVAL_SECONDS = 3600
    with first.transaction() as tx:
        _journal(tx, _write(event, registry))
    first._closing.set()  # as if the process died before moving it
    second = SqliteStore(path)
    try:
        assert second.read("AuditEvent", event["id"]) is not None
    finally:
        second.close()
        first.close()


def test_the_background_mover_empties_the_journal(tmp_path, registry):
    path = tmp_path / "fhir.sqlite3"
    store = SqliteStore(path)
    store.JOURNAL_INTERVAL_SECONDS = 0.05
    try:
        with store.transaction() as tx:
            for _ in range(3):
                _journal(tx, _write(_audit_event(), registry))
        deadline = time.monotonic() + 10
        while _journal_rows(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _journal_rows(path) == 0
        connection = sqlite3.connect(path)
        assert connection.execute(
            "SELECT count(*) FROM resource WHERE type = 'AuditEvent'"
        ).fetchone() == (3,)
        connection.close()
    finally:
        store.close()


def test_a_move_asked_to_yield_stops_after_one_event_in_chain_order(store, registry):
    """The background mover stops its batch when a writer is queued (`yield_to`): the
    events it moved are the oldest, in journal order, and the rest stay journaled."""
    events = [_audit_event() for _ in range(5)]
    with store.transaction() as tx:
        for event in events:
            _journal(tx, _write(event, registry))
    with store.transaction() as tx:
        assert sqlite_journal.materialize(tx._connection, 8, yield_to=lambda: True) == 1
    with store.transaction() as tx:
        assert sqlite_journal.materialize(tx._connection, 2) == 2
    connection = sqlite3.connect(store.path)
    try:
        moved = connection.execute(
            "SELECT id FROM resource WHERE type = 'AuditEvent' ORDER BY rid"
        ).fetchall()
        left = connection.execute("SELECT id FROM audit_journal ORDER BY seq").fetchall()
    finally:
        connection.close()
    assert [row[0] for row in moved] == [event["id"] for event in events[:3]]
    assert [row[0] for row in left] == [event["id"] for event in events[3:]]
    store.settle_audit()
    assert sorted(_search(store, SearchQuery("AuditEvent"))) == sorted(e["id"] for e in events)


def test_a_write_transaction_reads_journaled_events(store, registry):
    event = _audit_event()
    with store.transaction() as tx:
        _journal(tx, _write(event, registry))
    with store.transaction() as tx:
        assert tx.read("AuditEvent", event["id"]) is not None


def test_a_forward_include_reaching_a_journaled_event_finds_it(store, registry):
    """`List:item` may point to any type, an AuditEvent among them (`_include` resolution)."""
    event = _audit_event()
    listing = {
        "resourceType": "List",
        "id": "l1",
        "status": "current",
        "mode": "working",
        "entry": [{"item": {"reference": f"AuditEvent/{event['id']}"}}],
    }
    entries = extract(listing, registry)
    with store.transaction() as tx:
        tx.write(
            VersionWrite(
                StoredResource("List", "l1", 1, 1, False, orjson.dumps(listing)),
                "POST",
                0,
                entries,
                sort_values(entries),
                "",
            )
        )
        _journal(tx, _write(event, registry))
    page = store.search(SearchQuery("List"), cursor_key=KEY, cursor_binding="test")
    included = store.resolve_includes(
        page.rows, [Include("List", "item")], lambda resource_type: Everything()
    )
    assert [row.id for row in included] == [event["id"]]


@pytest.mark.parametrize(
    ("query", "reads"),
    [
        (SearchQuery("AuditEvent"), True),
        (SearchQuery(None), True),  # system search, `_type` included
        (SearchQuery("DocumentReference", TokenTest("status", code="current")), False),
        (SearchQuery("Patient", Has("AuditEvent", "patient", TokenTest("action", code="R"))), True),
        (
            SearchQuery(
                "DocumentReference",
                And(
                    (
                        InCompartment("p1"),
                        Chain("subject", "Patient", TokenTest("gender", code="f")),
                    )
                ),
            ),
            False,
        ),
        (
            SearchQuery("DocumentReference", includes=(Include("DocumentReference", "subject"),)),
            False,
        ),
        (
            SearchQuery("DocumentReference", includes=(Include("DocumentReference", "related"),)),
            True,
        ),
        (SearchQuery("Patient", includes=(Include("AuditEvent", "patient", reverse=True),)), True),
    ],
)
def test_searches_that_can_read_audit_events_are_recognized(registry, query, reads):
    """search/reach.py: which searches wait for the journal (FHIR search: chains, `_has`,
    `_include`, `_revinclude`)."""
    assert search_reads(query, "AuditEvent", audit_referrers(registry)) is reads


def test_the_wal_is_checkpointed_outside_the_commits(tmp_path):
    """Commits never checkpoint (no writer waits for pages copied into the database file);
    the maintenance thread does, so the WAL's content reaches the database file."""
    path = tmp_path / "fhir.sqlite3"
    store = SqliteStore(path)
    store.JOURNAL_INTERVAL_SECONDS = 0.05
    store.CHECKPOINT_INTERVAL_SECONDS = 0.05
    try:
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        before = path.stat().st_size
        for n in range(50):
            body = orjson.dumps({"resourceType": "Patient", "id": f"p{n}", "text": "x" * 4000})
            with store.transaction() as tx:
                tx.write(
                    VersionWrite(
                        StoredResource("Patient", f"p{n}", 1, 1, False, body), "POST", 0, None
                    )
                )
        deadline = time.monotonic() + 10
        while path.stat().st_size < before + 200_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size >= before + 200_000
    finally:
        store.close()

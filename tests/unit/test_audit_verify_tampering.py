"""Tampering with the audit log's storage that `fhir-server audit verify` must name (R16).

An insider with write access to the log's file changes what the server does with the
events to come, or what it shows of those kept, without breaking the hash chain. The
probes that verify already named are listed in tests/contract/test_audit_verify.py; these
are the ones it missed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from fhir_server.audit.verify import verify_store
from fhir_server.store.factory import with_audit_log
from fhir_server.store.with_audit_log import StoreWithAuditLog
from tests.conftest import make_store
from tests.support.audit_log import audit_event


def _reopened_with(store: StoreWithAuditLog, *statements: str) -> StoreWithAuditLog:
    """Close the SQLite store, run `statements` on its log file as someone with the files
    could (the schema made writable: no table is rebuilt), and open it again."""
    path, resources_path, registry = store.audit_log.path, store.resources.path, store.registry
    store.close()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA writable_schema = ON")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()
    from fhir_server.store.sqlite import SqliteStore

    return with_audit_log(SqliteStore(resources_path), registry)


def _respelled(table: str, old: str, new: str) -> str:
    return (
        f"UPDATE sqlite_master SET sql = replace(sql, '{old}', '{new}') "
        f"WHERE type = 'table' AND name = '{table}'"
    )


_UNSEEN_CHECK = _respelled(
    "event",
    "labels TEXT NOT NULL,",
    "labels TEXT NOT NULL CHECK (agent != ''Practitioner/unseen''),",
)


class _Holder:
    """The store under test, replaced by the one reopened after the tampering."""

    def __init__(self, store: StoreWithAuditLog) -> None:
        self.store = store

    def tamper(self, *statements: str) -> StoreWithAuditLog:
        self.store = _reopened_with(self.store, *statements)
        return self.store


@pytest.fixture
def log(tmp_path, registry) -> Iterator[_Holder]:
    holder = _Holder(with_audit_log(make_store("sqlite", tmp_path, registry), registry))
    holder.store.append_audit([audit_event("p1"), audit_event("p1", "p2")])
    yield holder
    holder.store.close()


def test_r16_a_check_constraint_that_keeps_a_writers_events_out_of_the_log_is_named(log):
    """SQLite: a CHECK constraint given to the event table (the schema made writable) refuses
    the events of one practitioner. Their writes still commit (the events wait in the
    outbox, the append's failure is only logged), so the patient's trail never shows them,
    while every event the log holds verifies. The table's columns and indexes are the
    server's; its constraints are not, and verify must say so."""
    store = log.tamper(_UNSEEN_CHECK)
    unseen = audit_event("p1", agent="Practitioner/unseen")
    with store.transaction() as tx:
        tx.stage_audit([unseen])
    trail = [record.id for record in store.audit_log.scan(["p1"])]
    assert unseen["id"] not in trail  # the write happened, the patient is not told
    report = verify_store(store)
    assert (report.ok, report.reason) == (
        False,
        "the log file's table event is not the one the server creates",
    )


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        (_UNSEEN_CHECK, "event"),
        (
            _respelled(
                "event", "seq INTEGER PRIMARY KEY,", "seq INTEGER PRIMARY KEY ON CONFLICT REPLACE,"
            ),
            "event",
        ),
        (
            _respelled(
                "event", "id TEXT NOT NULL UNIQUE,", "id TEXT NOT NULL UNIQUE ON CONFLICT IGNORE,"
            ),
            "event",
        ),
        (
            _respelled(
                "event_patient",
                "PRIMARY KEY (patient, seq)",
                "PRIMARY KEY (patient, seq), CHECK (patient != ''p9'')",
            ),
            "event_patient",
        ),
        (_respelled("head", "CHECK (one = 1)", "CHECK (one = 1 AND seq < 3)"), "head"),
    ],
    ids=[
        "check",
        "sequence-replaced-on-conflict",
        "id-ignored-on-conflict",
        "key-check",
        "head-check",
    ],
)
def test_r16_a_tables_constraints_are_the_servers(log, statement, named):
    """SQLite describes a table's columns and indexes (what verify compared) but not its
    CHECK constraints nor the conflict clauses of its keys: a sequence replaced on conflict
    lets the next commit after a head moved back overwrite events instead of failing; a
    CHECK refuses the events, keys or heads it names. Verify compares them too."""
    report = verify_store(log.tamper(statement))
    assert (report.ok, report.reason) == (
        False,
        f"the log file's table {named} is not the one the server creates",
    )


class _Described:
    """The database as a MongoDB server describes its collections (mongomock lists none):
    the events collection given `options` by `collMod` behind the server's back."""

    def __init__(self, database, options: dict, kind: str = "collection") -> None:
        self._database = database
        self._description = {"name": "audit_log", "type": kind, "options": options}

    def list_collections(self, filter: dict | None = None):  # noqa: A002 - pymongo's name
        return iter([self._description] if filter == {"name": "audit_log"} else [])

    def __getattr__(self, name: str):
        return getattr(self._database, name)


@pytest.mark.parametrize(
    ("kind", "options", "named"),
    [
        ("collection", {}, None),
        (
            "collection",
            {"validator": {"agent": {"$ne": "Practitioner/unseen"}}, "validationAction": "error"},
            "(type 'collection', options ['validationAction', 'validator'])",
        ),
        (
            "collection",
            {"capped": True, "size": 4096},
            "(type 'collection', options ['capped', 'size'])",
        ),
        (
            "view",
            {"viewOn": "elsewhere", "pipeline": []},
            "(type 'view', options ['pipeline', 'viewOn'])",
        ),
    ],
    ids=["plain", "validator", "capped", "view"],
)
def test_r16_mongodb_events_collection_is_the_plain_one_the_server_creates(
    tmp_path, registry, kind, options, named
):
    """MongoDB: a validator given to the events collection (collMod) refuses the events it
    names, so a practitioner's writes commit with their events held in the outbox, out of
    the patient's trail, while every event the log holds verifies (as a SQLite CHECK); a
    capped collection drops the oldest events itself. Verify names any option or a
    collection that is not one (mongomock keeps neither: the server's description of them
    is given here)."""
    store = with_audit_log(make_store("mongomock", tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1")])
        store.audit_log._db = _Described(store.audit_log._db, options, kind)
        report = verify_store(store)
        expected = (
            None
            if named is None
            else f"the events collection is not the plain collection the server creates {named}"
        )
        assert (report.ok, report.reason) == (named is None, expected)
    finally:
        store.close()


def test_r16_the_command_names_a_log_that_refuses_the_pending_events_and_exits_1(
    tmp_path, registry, capsys
):
    """`fhir-server audit verify` opens the store as the server does, which first appends
    the events a write left in the outbox: a log whose tampered table refuses them failed
    there with a traceback (IntegrityError, exit 1 all the same but nothing named). The
    auditor is told the log is broken and why."""
    from fhir_server.cli import main
    from fhir_server.config import load_settings
    from fhir_server.store.factory import open_store

    settings = load_settings({"data_dir": tmp_path})
    store = open_store(settings, registry)
    try:
        store.append_audit([audit_event("p1")])
        path = store.audit_log.path
    finally:
        store.close()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(_UNSEEN_CHECK)
    finally:
        connection.close()
    store = open_store(settings, registry)
    try:
        with store.transaction() as tx:  # a write whose event the log now refuses
            tx.stage_audit([audit_event("p1", agent="Practitioner/unseen")])
    finally:
        store.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("audit log broken: the store could not be opened (IntegrityError"), (
        error
    )
    assert "Traceback" not in error

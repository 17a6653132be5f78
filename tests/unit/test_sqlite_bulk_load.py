"""SqliteStore.bulk_load: an empty store's secondary indexes are built after the load, and
the store ends with exactly the indexes (and the index rows) a load with indexes gives."""

from __future__ import annotations

import sqlite3

import pytest

from benchmarks.bulk import bulk_load, open_service
from benchmarks.datagen import CorpusPlan
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite_bulk import WRITE_PATH_INDEXES, secondary_indexes

PLAN = CorpusPlan(documents=60, per_patient=20, heavy=1, heavy_documents=20)
INDEX_TABLES = ("ix_token", "ix_string", "ix_date", "ix_reference", "ix_uri", "ix_compartment")


def _indexes(path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()


def _index_rows(path) -> dict[str, list[tuple]]:
    """Each index table's rows by (type, id) of their resource, without `_lastUpdated`
    (a stamp of the load's clock)."""
    rows = {}
    with sqlite3.connect(path) as connection:
        for table in INDEX_TABLES:
            columns = [c[1] for c in connection.execute(f"PRAGMA table_info({table})")]
            values = ", ".join(f"x.{c}" for c in columns if c not in ("rid", "type"))
            stamp = "x.param != '_lastUpdated'" if "param" in columns else "1"
            rows[table] = sorted(
                connection.execute(
                    f"SELECT r.type, r.id, {values} FROM {table} x JOIN resource r"
                    f" ON r.rid = x.rid WHERE {stamp}"
                ).fetchall()
            )
    return rows


def _load(path, registry, *, deferred: bool) -> bool:
    service = open_service(path, registry)
    store = service.store
    if not deferred:
        store.bulk_load = None  # the loader falls back to the plain load
    try:
        stats = bulk_load(service, PLAN, batch=40, validators=0)
    finally:
        store.close()
    return stats.indexes_deferred


def test_a_bulk_load_into_an_empty_store_ends_with_the_same_indexes_and_rows(tmp_path, registry):
    assert _load(tmp_path / "deferred", registry, deferred=True)
    assert not _load(tmp_path / "plain", registry, deferred=False)
    deferred, plain = tmp_path / "deferred/fhir.sqlite3", tmp_path / "plain/fhir.sqlite3"
    assert _indexes(deferred) == _indexes(plain)
    assert _index_rows(deferred) == _index_rows(plain)
    with sqlite3.connect(deferred) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_indexes_are_dropped_only_for_the_load_of_an_empty_store(tmp_path):
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    try:
        before = _indexes(store.path)
        with store.bulk_load() as deferred:
            assert deferred
            # Only the index the write path searches (a document's uniqueId and entryUUID
            # looked up among those stored) stays: without it the load grows quadratic.
            kept = {index.name for index in secondary_indexes(store._writer)}
            assert kept == WRITE_PATH_INDEXES
        assert _indexes(store.path) == before
    finally:
        store.close()


def test_a_store_holding_resources_keeps_its_indexes_during_a_bulk_load(tmp_path, registry):
    path = tmp_path / "data"
    _load(path, registry, deferred=True)
    store = SqliteStore(path / "fhir.sqlite3")
    try:
        before = _indexes(store.path)
        with store.bulk_load() as deferred:
            assert not deferred
            assert _indexes(store.path) == before
    finally:
        store.close()


def test_the_indexes_are_rebuilt_when_the_load_fails(tmp_path):
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    try:
        before = _indexes(store.path)
        with pytest.raises(RuntimeError), store.bulk_load():
            raise RuntimeError("a resource failed validation")
        assert _indexes(store.path) == before
    finally:
        store.close()


def test_a_load_interrupted_before_the_rebuild_gets_its_indexes_at_the_next_open(tmp_path):
    path = tmp_path / "fhir.sqlite3"
    SqliteStore(path).close()
    before = _indexes(path)
    with sqlite3.connect(path) as connection:  # what a load that died left: no indexes
        for index in secondary_indexes(connection):
            connection.execute(f"DROP INDEX {index.name}")
    assert len(_indexes(path)) < len(before)
    SqliteStore(path).close()
    assert _indexes(path) == before


def test_indexes_another_process_rebuilt_during_the_load_are_kept(tmp_path):
    path = tmp_path / "fhir.sqlite3"
    store = SqliteStore(path)
    try:
        before = _indexes(path)
        with store.bulk_load() as deferred:
            assert deferred
            SqliteStore(path).close()  # a server started meanwhile builds the indexes
        assert _indexes(path) == before
    finally:
        store.close()

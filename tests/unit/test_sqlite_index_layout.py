"""SQLite index layout: `:missing` and `_sort` answered from the typed tables, the retired
tables and indexes dropped from an existing database when it is opened, and the partial
reference indexes and `:exact` still served by an index."""

from __future__ import annotations

import sqlite3

from fhir_server.search.query import ReferenceTest, StringMatch, StringTest
from fhir_server.store import sqlite_index
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite_search import _Sql, compile_where

OLD_LAYOUT = """
CREATE TABLE ix_param (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  PRIMARY KEY (rid, param)) WITHOUT ROWID;
CREATE TABLE ix_sort (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, lo, hi,
  PRIMARY KEY (rid, param)) WITHOUT ROWID;
CREATE TABLE ix_string (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX ix_string_exact ON ix_string (type, param, exact, rid);
CREATE TABLE ix_reference (rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  target_type TEXT, target_id TEXT, url TEXT, identifier_system TEXT, identifier_value TEXT);
CREATE INDEX ix_reference_url ON ix_reference (type, param, url, rid);
CREATE INDEX ix_reference_identifier
  ON ix_reference (type, param, identifier_value, identifier_system, rid);
INSERT INTO ix_param VALUES (1, 'Patient', 'family');
INSERT INTO ix_sort VALUES (1, 'Patient', 'family', 'a', 'a');
"""


def _names(conn: sqlite3.Connection, kind: str) -> set[str]:
    return {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
    }


def test_opening_an_existing_database_drops_the_retired_tables_and_indexes(tmp_path):
    path = tmp_path / "fhir.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_LAYOUT)
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        tables, indexes = _names(conn, "table"), _names(conn, "index")
    assert not {"ix_param", "ix_sort"} & tables
    assert not set(sqlite_index.RETIRED_INDEXES) & indexes
    assert {"ix_reference_url_set", "ix_reference_identifier_set", "ix_string_norm"} <= indexes


def _plan(conn: sqlite3.Connection, node, rtype: str) -> str:
    sql = _Sql()
    where = compile_where(sql, node, "r", rtype)
    sql.params["t"] = rtype
    text = f"SELECT r.id FROM resource r WHERE r.deleted = 0 AND +r.type = :t AND {where}"
    return " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + text, sql.params))


def test_exact_strings_absolute_and_identifier_references_still_use_an_index(tmp_path):
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    conn = store._writer
    try:
        exact = _plan(conn, StringTest("family", "Dupré", StringMatch.EXACT), "Patient")
        url = _plan(
            conn,
            ReferenceTest("subject", url="https://other.example/fhir/Patient/1"),
            "Observation",
        )
        identifier = _plan(
            conn,
            ReferenceTest("subject", identifier_system="urn:oid:1.2", identifier_value="1"),
            "Observation",
        )
    finally:
        store.close()
    assert "ix_string_norm" in exact
    assert "ix_reference_url_set" in url
    assert "ix_reference_identifier_set" in identifier

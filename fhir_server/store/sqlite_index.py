"""SQLite persistence of search index entries: typed tables next to the `resource` table.

One table per entry kind, each row carrying the resource's `rid`, type and parameter, with
composite indexes that start with (type, param, value...) so that a search clause is an
index range scan yielding rids (`rid IN (SELECT rid FROM ix_... WHERE ...)`). Token system
and code live in one row, so they are matched within the same element. Numbers and
quantities are stored as `search_values.encode_decimal` text, which compares exactly.

`:missing` and `_sort` read these same rows (whether a resource has any row of the
parameter; the lowest/highest value of its rows, see `sqlite_search`): the `ix_param` and
`ix_sort` tables that earlier databases kept for them are dropped at start-up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from fhir_server.search.index import IndexEntries
from fhir_server.store.search_values import encode_decimal

INDEX_TABLES = (
    "ix_token",
    "ix_string",
    "ix_date",
    "ix_reference",
    "ix_uri",
    "ix_number",
    "ix_quantity",
    "ix_compartment",
)

# The typed tables that hold a resource's value entries, in the order `:missing` and
# `_sort` probe them (the most common kinds first); `ix_compartment` holds no parameter.
VALUE_TABLES = (
    "ix_date",
    "ix_token",
    "ix_string",
    "ix_reference",
    "ix_uri",
    "ix_number",
    "ix_quantity",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS ix_token (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  system TEXT, code TEXT, display TEXT);
CREATE INDEX IF NOT EXISTS ix_token_value ON ix_token (type, param, code, system, rid);
-- Covering for the per-candidate probes (`EXISTS ... WHERE rid = r.rid AND param = ? AND
-- code = ?`) the access constraints add: one seek instead of reading every token row of rid.
CREATE INDEX IF NOT EXISTS ix_token_probe ON ix_token (rid, param, code, system);

CREATE TABLE IF NOT EXISTS ix_string (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_string_norm ON ix_string (type, param, norm, rid);
CREATE INDEX IF NOT EXISTS ix_string_rid ON ix_string (rid);

CREATE TABLE IF NOT EXISTS ix_date (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ix_date_low ON ix_date (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS ix_date_high ON ix_date (type, param, high, low, rid);
CREATE INDEX IF NOT EXISTS ix_date_rid ON ix_date (rid);

CREATE TABLE IF NOT EXISTS ix_reference (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  target_type TEXT, target_id TEXT, url TEXT,
  identifier_system TEXT, identifier_value TEXT);
CREATE INDEX IF NOT EXISTS ix_reference_target
  ON ix_reference (type, param, target_id, target_type, rid);
-- Partial: most references are relative (no url) and carry no identifier, and a search on
-- either column names a value (`url = ?` implies `url IS NOT NULL`, so the planner uses them).
CREATE INDEX IF NOT EXISTS ix_reference_url_set ON ix_reference (type, param, url, rid)
  WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_reference_identifier_set
  ON ix_reference (type, param, identifier_value, identifier_system, rid)
  WHERE identifier_value IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_reference_rid ON ix_reference (rid, param);

CREATE TABLE IF NOT EXISTS ix_uri (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_uri_value ON ix_uri (type, param, value, rid);
CREATE INDEX IF NOT EXISTS ix_uri_rid ON ix_uri (rid);

CREATE TABLE IF NOT EXISTS ix_number (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  low TEXT NOT NULL, high TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_number_low ON ix_number (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS ix_number_rid ON ix_number (rid);

CREATE TABLE IF NOT EXISTS ix_quantity (
  rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
  low TEXT NOT NULL, high TEXT NOT NULL, system TEXT, code TEXT, unit TEXT);
CREATE INDEX IF NOT EXISTS ix_quantity_low ON ix_quantity (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS ix_quantity_rid ON ix_quantity (rid);

CREATE TABLE IF NOT EXISTS ix_compartment (
  rid INTEGER NOT NULL, type TEXT NOT NULL, patient_id TEXT NOT NULL,
  PRIMARY KEY (patient_id, type, rid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_compartment_rid ON ix_compartment (rid);

-- What a search's AuditEvent says of a resource's current version (audit.entity_facts),
-- written with its index rows, removed with them, and read only for that version.
CREATE TABLE IF NOT EXISTS resource_facts (
  rid INTEGER PRIMARY KEY, version INTEGER NOT NULL, facts BLOB NOT NULL);
-- A row removed by any statement takes its facts with it, whichever code removed it (a
-- process of a release that knows nothing of them): SQLite gives a removed row's number to
-- the next resource, which must not be named with the removed one's labels and Patients.
CREATE TRIGGER IF NOT EXISTS resource_facts_go_with_their_row AFTER DELETE ON resource
BEGIN DELETE FROM resource_facts WHERE rid = OLD.rid; END;
"""

# A search row's facts, for the resource row `r` (NULL when there are none for its version).
FACTS_COLUMN = (
    "(SELECT f.facts FROM resource_facts f WHERE f.rid = {r}.rid AND f.version = {r}.version)"
)


# Indexes that earlier databases have and this layout no longer keeps. Each served only rare
# or unselective queries (`system|` and `:text` tokens, `:missing`, a `_sort` over a whole
# type), which still run on the (type, param) prefix of the remaining indexes or on the
# primary keys; dropping them removes about a third of the B-tree inserts of a write.
RETIRED_INDEXES = (
    "ix_token_system",
    "ix_token_display",
    "ix_param_type",
    "ix_sort_lo",
    "ix_sort_hi",
    "ix_token_rid",  # superseded by ix_token_probe, which starts with the same column
    # `:exact` runs on ix_string_norm (the normalized form of the exact value, then the text).
    "ix_string_exact",
    # Replaced by the partial ix_reference_url_set and ix_reference_identifier_set.
    "ix_reference_url",
    "ix_reference_identifier",
)

# Tables that earlier databases have and this layout no longer writes: `:missing` and
# `_sort` are answered from the typed tables, which saves about a third of the B-tree
# inserts of a DocumentReference (one row per parameter present, in each of the two).
RETIRED_TABLES = ("ix_param", "ix_sort")


def create_index_schema(conn: sqlite3.Connection) -> None:
    """Create the index tables and their indexes (idempotent), retiring dropped indexes and
    tables (an existing database is migrated on its first open by this version)."""
    conn.executescript(SCHEMA)
    for name in RETIRED_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    for name in RETIRED_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def delete_index(conn: sqlite3.Connection, rid: int) -> None:
    """Remove every index row of `rid` (a deleted resource must not be found by any search)."""
    for table in INDEX_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
    conn.execute("DELETE FROM resource_facts WHERE rid = ?", (rid,))


def write_facts(conn: sqlite3.Connection, rid: int, version: int, facts: bytes) -> None:
    """The version's `audit.entity_facts`, beside its index rows."""
    conn.execute(
        "INSERT OR REPLACE INTO resource_facts (rid, version, facts) VALUES (?, ?, ?)",
        (rid, version, facts),
    )


# One INSERT per index table; a row of `IndexRows` is the statement's values without `rid`.
INSERTS: dict[str, str] = {
    "ix_token": "INSERT INTO ix_token (rid, type, param, system, code, display)"
    " VALUES (?, ?, ?, ?, ?, ?)",
    "ix_string": "INSERT INTO ix_string (rid, type, param, norm, exact) VALUES (?, ?, ?, ?, ?)",
    "ix_date": "INSERT INTO ix_date (rid, type, param, low, high) VALUES (?, ?, ?, ?, ?)",
    "ix_reference": "INSERT INTO ix_reference (rid, type, param, target_type, target_id, url,"
    " identifier_system, identifier_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "ix_uri": "INSERT INTO ix_uri (rid, type, param, value) VALUES (?, ?, ?, ?)",
    "ix_number": "INSERT INTO ix_number (rid, type, param, low, high) VALUES (?, ?, ?, ?, ?)",
    "ix_quantity": "INSERT INTO ix_quantity (rid, type, param, low, high, system, code, unit)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "ix_compartment": "INSERT OR IGNORE INTO ix_compartment (rid, type, patient_id)"
    " VALUES (?, ?, ?)",
}

# table -> rows, each row the INSERT's values after `rid` (plain str/int/None: JSON-safe, so
# the AuditEvent journal can carry them until the rows are written).
IndexRows = dict[str, list[tuple]]


def index_rows(resource_type: str, entries: IndexEntries) -> IndexRows:
    """The index rows of one resource version, as `insert_index_rows` writes them; tables
    without rows are left out."""
    t = resource_type
    rows: IndexRows = {
        "ix_token": [(t, e.param, e.system, e.code, e.display) for e in entries.tokens],
        "ix_string": [(t, e.param, e.normalized, e.exact) for e in entries.strings],
        "ix_date": [(t, e.param, e.low, e.high) for e in entries.dates],
        "ix_reference": [
            (
                t,
                e.param,
                e.target_type,
                e.target_id,
                e.url,
                e.identifier_system,
                e.identifier_value,
            )
            for e in entries.references
        ],
        "ix_uri": [(t, e.param, e.value) for e in entries.uris],
        "ix_number": [
            (t, e.param, encode_decimal(e.low), encode_decimal(e.high)) for e in entries.numbers
        ],
        "ix_quantity": [
            (
                t,
                e.param,
                encode_decimal(e.low),
                encode_decimal(e.high),
                e.system,
                e.code,
                e.unit,
            )
            for e in entries.quantities
        ],
        "ix_compartment": [(t, pid) for pid in dict.fromkeys(entries.compartment)],
    }
    return {table: table_rows for table, table_rows in rows.items() if table_rows}


def insert_index_rows(conn: sqlite3.Connection, rows_by_rid: list[tuple[int, IndexRows]]) -> None:
    """Insert the index rows of several resources, one executemany per table.

    The rows of a previous version must be gone already (`delete_index`): the engine deletes
    them on update, and a new resource has none.
    """
    by_table: dict[str, list[tuple]] = {}
    for rid, rows in rows_by_rid:
        for table, table_rows in rows.items():
            by_table.setdefault(table, []).extend((rid, *row) for row in table_rows)
    for table, table_rows in by_table.items():
        conn.executemany(INSERTS[table], table_rows)


def write_index(
    conn: sqlite3.Connection,
    rid: int,
    resource_type: str,
    entries: IndexEntries,
    sort_values: Mapping[str, tuple[object, object]],
) -> None:
    """Insert the index rows of `rid` (call in the resource write's transaction).

    `sort_values` (`extract.sort_values`) is not stored: `_sort` derives the same keys from
    the typed rows.
    """
    insert_index_rows(conn, [(rid, index_rows(resource_type, entries))])

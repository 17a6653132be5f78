"""Test harness: the two storage engines' search halves behind one small interface.

Resources are written the way the engines' resource code writes them (a `resource` row or a
per-type document) with hand-made IndexEntries, so these tests need no extractor.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence

import mongomock
import orjson
from bson import Binary

from fhir_server.search.index import IndexEntries
from fhir_server.search.query import Everything, Include, Node, SearchQuery
from fhir_server.store import (
    mongo_index,
    mongo_search,
    sqlite_index,
    sqlite_labels,
    sqlite_search,
)
from fhir_server.store.page import SearchPage, SearchRow

KEY = b"k" * 32
BINDING = "requester-a"

RESOURCE_TABLE = """
CREATE TABLE resource (
  rid INTEGER PRIMARY KEY,
  type TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  body BLOB NOT NULL,
  labels INTEGER NOT NULL DEFAULT 0,
  UNIQUE (type, id));
"""


def sort_values_of(entries: IndexEntries) -> dict:
    """(lowest, highest) per parameter, as `extract.sort_values` defines it."""
    out: dict = {}

    def add(param, low, high):
        lo, hi = out.get(param, (low, high))
        out[param] = (min(lo, low), max(hi, high))

    for d in entries.dates:
        add(d.param, d.low, d.high)
    for s in entries.strings:
        add(s.param, s.normalized, s.normalized)
    for t in entries.tokens:
        if t.code is not None and not t.param.endswith(":of-type"):
            add(t.param, t.code, t.code)
    for n in entries.numbers:
        add(n.param, n.low, n.high)
    for q in entries.quantities:
        add(q.param, q.low, q.high)
    for r in entries.references:
        if r.target_type and r.target_id:
            add(r.param, f"{r.target_type}/{r.target_id}", f"{r.target_type}/{r.target_id}")
    for u in entries.uris:
        add(u.param, u.value, u.value)
    return out


def body_of(rtype: str, rid: str, version: int = 1) -> bytes:
    return orjson.dumps({"resourceType": rtype, "id": rid, "meta": {"versionId": str(version)}})


class SqliteEngine:
    name = "sqlite"

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(RESOURCE_TABLE)
        sqlite_index.create_index_schema(self.conn)
        self.clock = 1_000_000

    def close(self) -> None:
        self.conn.close()

    def put(
        self, rtype: str, rid: str, entries: IndexEntries | None = None, lu: int | None = None
    ) -> None:
        entries = entries or IndexEntries()
        self.clock += 1
        lu = self.clock if lu is None else lu
        row = self.conn.execute(
            "SELECT rid, version FROM resource WHERE type = ? AND id = ?", (rtype, rid)
        ).fetchone()
        if row:
            key, version = row[0], row[1] + 1
            self.conn.execute(
                "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, body = ?,"
                " labels = ? WHERE rid = ?",
                (version, lu, body_of(rtype, rid, version), sqlite_labels.of_entries(entries), key),
            )
            sqlite_index.delete_index(self.conn, key)
        else:
            key = self.conn.execute(
                "INSERT INTO resource (type, id, version, last_updated, body, labels)"
                " VALUES (?, ?, 1, ?, ?, ?)",
                (rtype, rid, lu, body_of(rtype, rid), sqlite_labels.of_entries(entries)),
            ).lastrowid
        sqlite_index.write_index(self.conn, key, rtype, entries, sort_values_of(entries))

    def delete(self, rtype: str, rid: str) -> None:
        (key,) = self.conn.execute(
            "SELECT rid FROM resource WHERE type = ? AND id = ?", (rtype, rid)
        ).fetchone()
        self.conn.execute("UPDATE resource SET deleted = 1 WHERE rid = ?", (key,))
        sqlite_index.delete_index(self.conn, key)

    def search(self, query: SearchQuery, *, binding: str = BINDING, key: bytes = KEY) -> SearchPage:
        return sqlite_search.search(self.conn, query, cursor_key=key, cursor_binding=binding)

    def includes(
        self,
        rows: Sequence[SearchRow],
        includes: Sequence[Include],
        allowed: Callable[[str], Node] = lambda t: Everything(),
    ) -> list[SearchRow]:
        return sqlite_search.resolve_includes(self.conn, rows, tuple(includes), allowed)


class MongoEngine:
    name = "mongo"

    def __init__(self, db=None) -> None:
        self.db = mongomock.MongoClient().db if db is None else db
        self.clock = 1_000_000

    def close(self) -> None:
        pass

    def put(
        self, rtype: str, rid: str, entries: IndexEntries | None = None, lu: int | None = None
    ) -> None:
        entries = entries or IndexEntries()
        self.clock += 1
        lu = self.clock if lu is None else lu
        old = self.db[rtype].find_one({"_id": rid}, {"v": 1})
        version = old["v"] + 1 if old else 1
        doc = {
            "_id": rid,
            "v": version,
            "lu": lu,
            "del": False,
            "body": Binary(body_of(rtype, rid, version)),
            "pk": entries.compartment[0] if entries.compartment else "",
        }
        doc.update(mongo_index.index_document(entries, sort_values_of(entries)))
        self.db[rtype].replace_one({"_id": rid}, doc, upsert=True)

    def delete(self, rtype: str, rid: str) -> None:
        old = self.db[rtype].find_one({"_id": rid})
        doc = {k: old[k] for k in ("_id", "v", "lu", "body", "pk")}
        doc["del"] = True
        self.db[rtype].replace_one({"_id": rid}, doc)

    def search(self, query: SearchQuery, *, binding: str = BINDING, key: bytes = KEY) -> SearchPage:
        return mongo_search.search(self.db, query, cursor_key=key, cursor_binding=binding)

    def includes(
        self,
        rows: Sequence[SearchRow],
        includes: Sequence[Include],
        allowed: Callable[[str], Node] = lambda t: Everything(),
    ) -> list[SearchRow]:
        return mongo_search.resolve_includes(self.db, rows, tuple(includes), allowed)


class RealMongoEngine(MongoEngine):
    """A real MongoDB (FHIR_TEST_MONGODB_URI), one throw-away database per engine."""

    name = "mongodb"

    def __init__(self) -> None:
        import pymongo

        self.client = pymongo.MongoClient(os.environ["FHIR_TEST_MONGODB_URI"])
        super().__init__(self.client[f"search_test_{uuid.uuid4().hex[:12]}"])

    def close(self) -> None:
        self.client.drop_database(self.db.name)
        self.client.close()


ENGINES: dict[str, type] = {"sqlite": SqliteEngine, "mongo": MongoEngine}
if os.environ.get("FHIR_TEST_MONGODB_URI"):
    ENGINES["mongodb"] = RealMongoEngine


def ids(page_or_rows) -> list[str]:
    rows = page_or_rows.rows if isinstance(page_or_rows, SearchPage) else page_or_rows
    return [row.id for row in rows]


def typed_ids(rows) -> list[str]:
    return [f"{row.resource_type}/{row.id}" for row in rows]

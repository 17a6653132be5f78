"""R14 / R07 masking labels as bits of the resource row (`store/sqlite_labels.py`).

The bits must say exactly what `ix_token` says: the same rows match a label clause compiled
as a mask test as with the MongoDB engine's own evaluation, for a label in `securityLabel`,
in `meta.security`, in both or in neither; and a store made before the column gets the bits
of its stored resources on its first open.
"""

from __future__ import annotations

import sqlite3
import uuid

import orjson
import pytest

from fhir_server.search.extract import extract, sort_values
from fhir_server.search.index import IndexEntries, TokenEntry
from fhir_server.search.query import And, Not, Or, SearchQuery, TokenTest
from fhir_server.store import sqlite_labels
from fhir_server.store.base import StoredResource, VersionWrite
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite_search import _Sql, compile_where
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    MASQUE_PS,
    SYSTEM_DMP_CONFIDENTIALITY,
)
from tests.unit.search_engines import MongoEngine, SqliteEngine

SYSTEM = SYSTEM_DMP_CONFIDENTIALITY
OTHER_SYSTEM = "urn:oid:1.2.3"

DOCUMENTS = {
    "label": [TokenEntry("security-label", SYSTEM, MASQUE_PS)],
    "meta": [TokenEntry("_security", SYSTEM, MASQUE_PS)],
    "both": [
        TokenEntry("security-label", SYSTEM, MASQUE_PS),
        TokenEntry("_security", SYSTEM, MASQUE_PS),
    ],
    "invisible": [TokenEntry("security-label", SYSTEM, INVISIBLE_PATIENT)],
    "other-system": [TokenEntry("security-label", OTHER_SYSTEM, MASQUE_PS)],
    "other-param": [TokenEntry("type", SYSTEM, MASQUE_PS)],
    "normal": [TokenEntry("security-label", SYSTEM, "N"), TokenEntry("status", None, "current")],
    "plain": [TokenEntry("status", None, "current")],
}


def _masked(code: str) -> Or:
    return Or((TokenTest("security-label", SYSTEM, code), TokenTest("_security", SYSTEM, code)))


CLAUSES = [
    _masked(MASQUE_PS),
    Not(_masked(MASQUE_PS)),
    TokenTest("_security", SYSTEM, MASQUE_PS),
    Not(TokenTest("security-label", SYSTEM, INVISIBLE_PATIENT)),
    And((TokenTest("status", None, "current"), Not(_masked(MASQUE_PS)))),
    Or((Not(_masked(MASQUE_PS)), TokenTest("status", None, "current"))),
    Or((TokenTest("security-label", SYSTEM, MASQUE_PS), TokenTest("type", SYSTEM, MASQUE_PS))),
]


@pytest.fixture(scope="module")
def engines():
    made = [SqliteEngine(), MongoEngine()]
    for engine in made:
        for rid, tokens in DOCUMENTS.items():
            engine.put("DocumentReference", rid, IndexEntries(tokens=list(tokens)))
    yield made
    for engine in made:
        engine.close()


def _ids(engine, where) -> list[str]:
    # `status` drives, so that the label clause is compiled as a per-candidate probe.
    query = SearchQuery(
        "DocumentReference",
        And(
            (
                Or(
                    (
                        TokenTest("status", None, "current"),
                        Not(TokenTest("status", None, "current")),
                    )
                ),
                where,
            )
        ),
        count=50,
    )
    return sorted(row[1] for row in engine.search(query).rows)


@pytest.mark.parametrize("where", CLAUSES, ids=repr)
def test_r14_label_bits_match_the_same_rows_as_the_index(engines, where):
    sqlite_engine, mongo_engine = engines
    assert _ids(sqlite_engine, where) == _ids(mongo_engine, where)


def test_r14_a_label_probe_tests_the_row_not_the_index():
    sql = _Sql()
    text = compile_where(sql, Not(_masked(MASQUE_PS)), "r", "DocumentReference", correlated=True)
    assert "r.labels &" in text and "ix_token" not in text
    mixed = Or(
        (TokenTest("security-label", SYSTEM, MASQUE_PS), TokenTest("type", SYSTEM, MASQUE_PS))
    )
    assert "ix_token" in compile_where(_Sql(), mixed, "r", "DocumentReference", correlated=True)
    # As a membership test (a driving clause) the index is kept.
    assert "ix_token" in compile_where(_Sql(), _masked(MASQUE_PS), "r", "DocumentReference")


def _document(code: str | None, registry) -> VersionWrite:
    resource = {
        "resourceType": "DocumentReference",
        "id": str(uuid.uuid4()),
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/b1"}}],
    }
    if code:
        resource["meta"] = {"security": [{"system": SYSTEM, "code": code}]}
    entries = extract(resource, registry)
    stored = StoredResource(
        "DocumentReference", resource["id"], 1, 1_000_000, False, orjson.dumps(resource)
    )
    return VersionWrite(stored, "POST", 0, entries, sort_values(entries), "p1")


def test_r14_a_store_made_before_the_bits_gets_them_on_its_first_open(tmp_path, registry):
    path = tmp_path / "fhir.sqlite3"
    store = SqliteStore(path)
    writes = {code: _document(code, registry) for code in (MASQUE_PS, INVISIBLE_PATIENT, None)}
    with store.transaction() as tx:
        for write in writes.values():
            tx.write(write)
    store.close()
    connection = sqlite3.connect(path)
    connection.execute("ALTER TABLE resource DROP COLUMN labels")  # as an older version made it
    connection.commit()
    connection.close()

    reopened = SqliteStore(path)
    try:
        connection = sqlite3.connect(path)
        labels = dict(connection.execute("SELECT id, labels FROM resource"))
        connection.close()
        for code, write in writes.items():
            expected = sqlite_labels.BITS[("_security", code)] if code else 0
            assert labels[write.resource.id] == expected
        query = SearchQuery(
            "DocumentReference",
            And((TokenTest("status", None, "current"), Not(_masked(MASQUE_PS)))),
            count=10,
        )
        page = reopened.search(query, cursor_key=b"k" * 32, cursor_binding="test")
        assert sorted(row.id for row in page.rows) == sorted(
            writes[code].resource.id for code in (INVISIBLE_PATIENT, None)
        )
    finally:
        reopened.close()

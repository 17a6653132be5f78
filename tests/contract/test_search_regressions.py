"""Search regressions found by the property test and the search benchmark, kept as plain tests.

- SQLite walked every resource of the searched type for every search: `r.type = ?` on the
  (type, id) index looked selective to SQLite (no statistics), so it scanned the type in id
  order and tested each clause against a materialized list of all the rids it matches
  (`status=current`: 95 % of the documents). A patient's documents took time proportional to
  the whole store (benchmark: 12 ms at 10,000 documents for a 50-document patient). Now the
  most selective clause drives and the others are probes by rid (sqlite_search._search_where).
- `_include` read every reference of the included parameter: `x.type = ? AND x.param = ?`
  made SQLite pick the (type, param, target) index over the page's rids (17 ms per page at
  100,000 documents); the page's rids now drive (ix_reference_rid).
"""

from __future__ import annotations

from unittest.mock import patch

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import Everything
from fhir_server.service.factory import build_service
from fhir_server.store import sqlite_search
from fhir_server.store.sqlite import SqliteStore

KEY = b"k" * 32


class _Recorder:
    """A connection that keeps the statements it runs (to EXPLAIN them afterwards)."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.statements: list[tuple[str, dict]] = []

    def execute(self, statement, params=()):
        self.statements.append((statement, params))
        return self.connection.execute(statement, params)


def _current_of(patient: int) -> int:
    """How many current documents `loaded` gives patient p<patient>."""
    return sum(1 for n in range(120) if n % 6 == patient and n % 10 != 0)


def _document(patient: str, status: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "status": status,
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "application/pdf"}}],
    }


@pytest.fixture
def loaded(tmp_path, registry):
    """120 documents over 6 patients, 1 in 10 superseded."""
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    service = build_service(store, registry, data_dir=tmp_path)
    with service._transaction() as tx:
        for n in range(120):
            status = "superseded" if n % 10 == 0 else "current"
            service.create_in(tx, INTERNAL, _document(f"p{n % 6}", status))
    yield service
    store.close()


def _search(service, registry, params: list[tuple[str, str]]) -> tuple[list[str], str]:
    """(ids of the first page, EXPLAIN QUERY PLAN of the page's statement)."""
    query = parse_search("DocumentReference", params, registry).query
    recorder = _Recorder(service.store._reader)
    page = sqlite_search.search(recorder, query, cursor_key=KEY, cursor_binding="b")
    statement, params_ = recorder.statements[-1]
    plan = " | ".join(
        row[-1] for row in recorder.connection.execute("EXPLAIN QUERY PLAN " + statement, params_)
    )
    return [row.id for row in page.rows], plan


def _all_ids(service, params: list[tuple[str, str]]) -> list[str]:
    ids, cursor = [], None
    while True:
        result = service.search(INTERNAL, "DocumentReference", params, cursor=cursor)
        ids += [resource_id for _, resource_id, *_ in result.matches]
        if result.next_cursor is None:
            return ids
        cursor = result.next_cursor


def test_patient_scoped_search_is_driven_by_the_patient_reference_not_the_type(loaded, registry):
    ids, plan = _search(loaded, registry, [("patient", "p1"), ("status", "current")])
    assert len(ids) == _current_of(1)
    assert "SEARCH r USING INTEGER PRIMARY KEY" in plan
    assert "ix_reference_target" in plan
    assert "sqlite_autoindex_resource_1" not in plan  # not a walk of the type
    # status checked per candidate by one seek of the covering probe index, not materialized
    assert "COVERING INDEX ix_token_probe (rid=? AND param=? AND code=?)" in plan


def test_patient_identifier_chain_finds_the_patient_by_index_not_by_walking_patients(
    loaded, registry
):
    _, plan = _search(loaded, registry, [("patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|1")])
    assert "sqlite_autoindex_resource_1" not in plan
    assert "ix_token_value" in plan


def test_dense_clauses_alone_walk_the_type_in_result_order_and_stop_at_the_page(loaded, registry):
    with patch.object(sqlite_search, "DRIVER_LIMIT", 50):  # status=current: 108 rows
        ids, plan = _search(loaded, registry, [("status", "current"), ("_count", "5")])
    assert len(ids) == 5
    assert "sqlite_autoindex_resource_1 (type=?)" in plan
    assert "TEMP B-TREE" not in plan  # read in id order: no sort of every match


def test_driven_and_walking_shapes_return_the_same_pages(loaded, registry):
    params = [("patient", "p2"), ("status", "current"), ("_sort", "-_lastUpdated"), ("_count", "4")]
    driven = _all_ids(loaded, params)
    with patch.object(sqlite_search, "DRIVER_LIMIT", 0):  # no clause drives
        walking = _all_ids(loaded, params)
    assert walking == driven
    assert len(set(driven)) == len(driven) == _current_of(2)


def test_include_reads_the_references_of_the_page_not_of_every_document(loaded, registry):
    with loaded._transaction() as tx:
        loaded.create_in(tx, INTERNAL, {"resourceType": "Patient"}, resource_id="p3")
    query = parse_search(
        "DocumentReference",
        [("patient", "p3"), ("_include", "DocumentReference:subject"), ("_count", "5")],
        registry,
    ).query
    reader = loaded.store._reader
    page = sqlite_search.search(reader, query, cursor_key=KEY, cursor_binding="b")
    recorder = _Recorder(reader)
    included = sqlite_search.resolve_includes(
        recorder, page.rows, query.includes, lambda target_type: Everything()
    )
    assert [(row.resource_type, row.id) for row in included] == [("Patient", "p3")]
    statement, params = recorder.statements[0]
    plan = " | ".join(row[-1] for row in reader.execute("EXPLAIN QUERY PLAN " + statement, params))
    assert "ix_reference_rid" in plan
    assert "ix_reference_target" not in plan

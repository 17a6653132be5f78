"""SQLite specifics of search: bound parameters only, index-driven plans, schema idempotence."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.search.index import (
    DateEntry,
    IndexEntries,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
)
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
    Has,
    Include,
    NumberTest,
    Prefix,
    ReferenceTest,
    SearchQuery,
    SortKey,
    StringMatch,
    StringTest,
    TokenTest,
    UriMatch,
    UriTest,
)
from fhir_server.store import sqlite_index, sqlite_search
from fhir_server.store.sqlite_search import _Sql, compile_where
from tests.unit.search_engines import BINDING, KEY, SqliteEngine

MARK = "x'); DROP TABLE resource; --"


class _Recorder:
    """A connection stand-in recording every statement's text."""

    def __init__(self, conn):
        self.conn, self.statements = conn, []

    def execute(self, sql, params=()):
        self.statements.append(sql)
        return self.conn.execute(sql, params)


def test_values_are_bound_parameters_never_sql_text():
    engine = SqliteEngine()
    engine.put(
        "Observation",
        "o1",
        IndexEntries(
            tokens=[TokenEntry("code", MARK, MARK)],
            references=[ReferenceEntry("subject", "Patient", MARK)],
        ),
    )
    engine.put("Patient", MARK, IndexEntries(strings=[StringEntry("family", MARK, MARK)]))
    where = And(
        (
            TokenTest("code", MARK, MARK),
            Chain("subject", "Patient", StringTest("family", MARK, StringMatch.CONTAINS)),
            UriTest(MARK, MARK, UriMatch.ABOVE),
        )
    )
    recorder = _Recorder(engine.conn)
    sqlite_search.search(
        recorder,
        SearchQuery("Observation", where, sort=(SortKey(MARK),)),
        cursor_key=KEY,
        cursor_binding=BINDING,
    )
    sqlite_search.resolve_includes(
        recorder,
        [("Observation", "o1", b"{}")],
        (Include("Observation", "subject"),),
        lambda t: TokenTest(MARK, MARK, MARK),
    )
    assert recorder.statements
    assert all(MARK not in sql and "DROP" not in sql for sql in recorder.statements)
    assert engine.conn.execute("SELECT COUNT(*) FROM resource").fetchone()[0] == 2


def _plan(engine, node, rtype="Observation"):
    sql = _Sql()
    where = compile_where(sql, node, "r", rtype)
    sql.params["t"] = rtype
    text = f"SELECT r.id FROM resource r WHERE r.deleted = 0 AND r.type = :t AND {where}"
    return " | ".join(
        row[-1] for row in engine.conn.execute("EXPLAIN QUERY PLAN " + text, sql.params)
    )


def test_hot_clauses_are_answered_from_the_composite_indexes():
    engine = SqliteEngine()
    engine.put("Observation", "o1")
    assert "ix_token_value" in _plan(engine, TokenTest("code", "http://loinc.org", "1"))
    assert "ix_reference_target" in _plan(engine, ReferenceTest("subject", "Patient", "p1"))
    assert "ix_date_" in _plan(engine, DateTest("date", Prefix.GE, 1, 2))
    assert "ix_string_norm" in _plan(engine, StringTest("family", "dur"))
    assert "ix_number_low" in _plan(
        engine, NumberTest("probability", Prefix.GT, Decimal(1), Decimal(1))
    )
    assert "ix_reference_target" in _plan(
        engine, Has("Observation", "subject", TokenTest("code", "L", "1")), "Patient"
    )


def test_schema_creation_is_idempotent_and_delete_index_removes_every_row():
    engine = SqliteEngine()
    sqlite_index.create_index_schema(engine.conn)
    engine.put(
        "Observation",
        "o1",
        IndexEntries(
            tokens=[TokenEntry("code", "S", "1")],
            dates=[DateEntry("date", 1, 2)],
            compartment=["p1"],
        ),
    )
    engine.delete("Observation", "o1")
    for table in sqlite_index.INDEX_TABLES:
        assert engine.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table

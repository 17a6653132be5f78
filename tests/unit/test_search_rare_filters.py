"""`SearchQuery.rare_filters` (R14 masking labels checked late): the pages, cursors and totals
are those of the same query without the hint, whatever the share of excluded resources."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.index import DateEntry, IndexEntries, ReferenceEntry, TokenEntry
from fhir_server.search.query import (
    And,
    Not,
    Or,
    ReferenceTest,
    SearchQuery,
    SortKey,
    TokenTest,
    TotalMode,
)
from fhir_server.store import sqlite_search
from tests.unit.search_engines import ENGINES, ids

LABELS = "urn:oid:1.2.250.1.213.1.1.4.13"
MASKED = Not(
    Or(
        (
            TokenTest("security-label", LABELS, "MASQUE_PS"),
            TokenTest("_security", LABELS, "MASQUE_PS"),
        )
    )
)
DAY_US = 86_400_000_000


def _documents(engine, flags: list[tuple[bool, bool, int]]) -> None:
    """One document per flag (masked, current, day) for patient p1, and one for p2."""
    for n, (masked, current, day) in enumerate(flags):
        tokens = [TokenEntry("status", None, "current" if current else "superseded")]
        if masked:
            param = "security-label" if n % 3 else "_security"
            tokens.append(TokenEntry(param, LABELS, "MASQUE_PS"))
        for pid in ("p1", "p2") if n % 5 == 0 else ("p1",):
            engine.put(
                "DocumentReference",
                f"{pid}-d{n:03d}",
                IndexEntries(
                    tokens=tokens,
                    references=[ReferenceEntry("patient", "Patient", pid)],
                    dates=[DateEntry("date", day * DAY_US, day * DAY_US + DAY_US - 1)],
                    compartment=[pid],
                ),
            )


def _traverse(engine, query: SearchQuery) -> tuple[list[list[str]], list[int | None]]:
    """Every page forward (ids), the totals, then the page before the last one."""
    pages, totals, cursor, last = [], [], None, None
    while True:
        page = engine.search(replace(query, cursor=cursor))
        pages.append(ids(page))
        totals.append(page.total)
        if page.next_cursor is None:
            last = page
            break
        cursor = page.next_cursor
    if last.previous_cursor is not None:
        pages.append(ids(engine.search(replace(query, cursor=last.previous_cursor))))
    return pages, totals


@pytest.mark.parametrize("late_min", [0, sqlite_search.LATE_MIN_ROWS_PER_WANTED])
@pytest.mark.parametrize("engine_name", sorted(ENGINES))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    share=st.sampled_from([0.0, 0.05, 0.3, 0.9, 1.0]),
    size=st.integers(0, 45),
    count=st.integers(1, 12),
    sort=st.sampled_from([(), (SortKey("date", descending=True),), (SortKey("date"),)]),
    seed=st.integers(0, 2**16),
)
def test_r14_rare_filters_checked_late_give_the_pages_of_the_full_query(
    monkeypatch, late_min, engine_name, share, size, count, sort, seed
):
    """`late_min` 0: SQLite checks them late on every page (else only where it pays)."""
    monkeypatch.setattr(sqlite_search, "LATE_MIN_ROWS_PER_WANTED", late_min)
    rng = random.Random(seed)
    engine = ENGINES[engine_name]()
    try:
        _documents(
            engine,
            [(rng.random() < share, rng.random() < 0.9, rng.randrange(40)) for _ in range(size)],
        )
        where = And(
            (
                ReferenceTest("patient", "Patient", "p1"),
                TokenTest("status", None, "current"),
                MASKED,
            )
        )
        full = SearchQuery(
            "DocumentReference", where, sort=sort, count=count, total=TotalMode.ACCURATE
        )
        late = replace(full, rare_filters=(MASKED,))
        assert _traverse(engine, late) == _traverse(engine, full)
        # Cursors are bound to the query's result set, not to the hint.
        first = engine.search(full)
        if first.next_cursor:
            assert ids(engine.search(replace(late, cursor=first.next_cursor))) == ids(
                engine.search(replace(full, cursor=first.next_cursor))
            )
    finally:
        engine.close()


def test_r14_a_record_whose_documents_are_all_masked_reads_no_page(monkeypatch):
    monkeypatch.setattr(sqlite_search, "LATE_MIN_ROWS_PER_WANTED", 0)
    engine = ENGINES["sqlite"]()
    try:
        _documents(engine, [(True, True, n) for n in range(30)])
        where = And((ReferenceTest("patient", "Patient", "p1"), MASKED))
        page = engine.search(SearchQuery("DocumentReference", where, rare_filters=(MASKED,)))
        assert (ids(page), page.next_cursor) == ([], None)
    finally:
        engine.close()

"""Search correctness that cannot be tuned: every engine returns what the reference evaluator
returns (same ids, same order), and paging under concurrent inserts neither skips nor repeats.

Corpora and queries are random (tests/search_strategies.py). Each corpus is written through the
service's write path (FhirService.update as the INTERNAL requester: structural validation,
index extraction, versioning, the store transaction) into a fresh store of every engine
(SQLite, MongoDB through mongomock, a real MongoDB when FHIR_TEST_MONGODB_URI is set); each
query then runs through FhirService.search, walking every page by its next cursor, and the ids
are compared with `fhir_server.search.evaluate.run_query` over the resources as stored.

Two details keep the oracle and the engines on the same data:
- the service stamps meta.lastUpdated with its clock; the clock here answers each resource's
  own generated meta.lastUpdated, so `_lastUpdated` tests and sorts keep their colliding values;
- the generated Patients are not INS-valid (they are shaped to collide on names and dates), so
  the write-time profile validators are switched off: profile conformance is tested elsewhere,
  and this test is about search.
"""

from __future__ import annotations

import copy
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError
from fhir_server.paths import profiles_dir
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.resources.profiles import ProfileRegistry
from fhir_server.search.evaluate import run_query
from fhir_server.search.parameters import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.core import FhirService
from fhir_server.service.factory import build_service
from fhir_server.store import sqlite_search
from tests.search_strategies import (
    communications,
    corpora,
    document_references,
    lists,
    patients,
    search_params,
    searches,
)

MONGODB_URI = os.environ.get("FHIR_TEST_MONGODB_URI")
ENGINES = ("sqlite", "mongomock") + (("mongodb",) if MONGODB_URI else ())
# Page sizes: small, so that most non-empty answers span several pages.
PAGE_SIZES = st.integers(1, 3)
DEFAULT_INSTANT = "2024-01-01T00:00:00Z"

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("FHIR_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@lru_cache(maxsize=1)
def _profiles() -> ProfileRegistry:
    return ProfileRegistry.load(profiles_dir())


class ResourceClock:
    """The service clock, answering the instant the next written resource claims."""

    def __init__(self) -> None:
        self.at = versions.parse_instant(DEFAULT_INSTANT)

    def __call__(self) -> int:
        return self.at

    def set_from(self, resource: dict) -> None:
        claimed = (resource.get("meta") or {}).get("lastUpdated") or DEFAULT_INSTANT
        self.at = versions.parse_instant(claimed)


class Engine:
    """One store of one engine behind the real service, plus what was written to it."""

    def __init__(self, kind: str, registry: SearchRegistry, data_dir: Path) -> None:
        self.kind = kind
        self.registry = registry
        self.store = self._make_store(kind, registry, data_dir)
        self.clock = ResourceClock()
        self.service: FhirService = build_service(
            self.store, registry, data_dir=data_dir, clock=self.clock, profiles=_profiles()
        )
        self.service.validators = ()  # see the module docstring
        self.written: list[tuple[str, str]] = []

    @staticmethod
    def _make_store(kind: str, registry: SearchRegistry, data_dir: Path):
        if kind == "sqlite":
            from fhir_server.store.sqlite import SqliteStore

            return SqliteStore(data_dir / "fhir.sqlite3")
        from fhir_server.store.mongo import MongoStore

        if kind == "mongomock":
            from tests.support.mongomock_sessions import SessionMongoClient

            store = MongoStore(SessionMongoClient(), "fhir", SERVED_TYPES)
        else:
            from pymongo import MongoClient

            client = MongoClient(MONGODB_URI, tz_aware=True)
            store = MongoStore(client, f"fhir_prop_{uuid.uuid4().hex[:12]}", SERVED_TYPES)
        store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
        return store

    def write(self, resource: dict) -> None:
        resource = copy.deepcopy(resource)
        self.clock.set_from(resource)
        self.service.update(INTERNAL, resource["resourceType"], resource["id"], resource)
        self.written.append((resource["resourceType"], resource["id"]))

    def stored_corpus(self) -> dict[tuple[str, str], dict]:
        """Every current resource as the store holds it (what the oracle must judge)."""
        return {key: self.store.read(*key).json() for key in self.written}

    def close(self) -> None:
        if self.kind == "mongodb":
            self.store.database.client.drop_database(self.store.database.name)
        self.store.close()


@contextmanager
def engines(registry: SearchRegistry) -> Iterator[list[Engine]]:
    with tempfile.TemporaryDirectory() as folder:
        made: list[Engine] = []
        try:
            for kind in ENGINES:
                data_dir = Path(folder) / kind
                data_dir.mkdir()
                made.append(Engine(kind, registry, data_dir))
            yield made
        finally:
            for engine in made:
                engine.close()


def walk(
    engine: Engine,
    resource_type: str,
    params: list[tuple[str, str]],
    page_size: int,
    between_pages=None,
) -> list[str]:
    """Ids of every page of a search, following next cursors; `between_pages(n)` runs after
    page n is read (to change the store while paging)."""
    query_params = [*params, ("_count", str(page_size))]
    ids: list[str] = []
    cursor = None
    for page_number in range(1, 200):
        result = engine.service.search(INTERNAL, resource_type, query_params, cursor=cursor)
        assert len(result.matches) <= page_size, f"{engine.kind}: page larger than _count"
        ids += [resource_id for _, resource_id, *_ in result.matches]
        if result.next_cursor is None:
            return ids
        assert result.matches, f"{engine.kind}: an empty page with a next link"
        if between_pages is not None:
            between_pages(page_number)
        cursor = result.next_cursor
    raise AssertionError(f"{engine.kind}: paging did not end")


def _parse_or_none(resource_type, params, registry):
    try:
        return parse_search(resource_type, params, registry).query
    except FhirError:
        return None


@PROPERTY_SETTINGS
@given(
    corpus=corpora(),
    queries=st.lists(searches(), min_size=1, max_size=6),
    page_size=PAGE_SIZES,
    sqlite_driven=st.booleans(),
)
def test_every_engine_returns_the_reference_evaluators_ids_in_its_order(
    registry, corpus, queries, page_size, sqlite_driven
):
    """FHIR search (3.1.1) semantics, one oracle: each engine, paged with _count=1..3 and walked
    through its next links, returns exactly run_query's ids in run_query's order.

    SQLite shapes a search two ways (sqlite_search._search_where): driven by its most selective
    clause, or walking the type with every clause as a probe (chosen when all clauses match
    many rows, which small corpora never do); `sqlite_driven` forces one shape or the other.
    """
    driver_limit = sqlite_search.DRIVER_LIMIT if sqlite_driven else 0
    with engines(registry) as made, patch.object(sqlite_search, "DRIVER_LIMIT", driver_limit):
        for key in sorted(corpus):
            for engine in made:
                engine.write(corpus[key])
        stored = made[0].stored_corpus()
        assert sorted(stored) == sorted(corpus)
        for resource_type, params in queries:
            query = _parse_or_none(resource_type, params, registry)
            if query is None:
                for engine in made:
                    with pytest.raises(FhirError):
                        engine.service.search(INTERNAL, resource_type, params)
                continue
            expected = run_query(query, stored, registry)
            for engine in made:
                found = walk(engine, resource_type, params, page_size)
                assert found == expected, (
                    f"{engine.kind} disagrees with the evaluator on {resource_type}?{params}"
                )


_NEW_RESOURCES = {
    "Patient": lambda new_id, doc_ids: patients(new_id),
    "DocumentReference": document_references,
    "List": lists,
    "Communication": lambda new_id, doc_ids: communications(new_id),
}


@st.composite
def paging_scenarios(draw: st.DrawFn):
    """A corpus, a query of one type, and new resources of that type to insert while paging."""
    corpus = draw(corpora())
    resource_type = draw(st.sampled_from(sorted(_NEW_RESOURCES)))
    params = draw(search_params(resource_type))
    doc_ids = tuple(i for t, i in corpus if t == "DocumentReference")
    inserts = [
        draw(_NEW_RESOURCES[resource_type](f"n{index}", doc_ids))
        for index in range(draw(st.integers(1, 6)))
    ]
    # After which page each insert happens (1: after the first page).
    after_page = [draw(st.integers(1, 3)) for _ in inserts]
    return corpus, resource_type, params, list(zip(after_page, inserts, strict=True))


@PROPERTY_SETTINGS
@given(scenario=paging_scenarios(), page_size=PAGE_SIZES, sqlite_driven=st.booleans())
def test_paging_while_resources_are_created_never_skips_nor_repeats_a_resource(
    registry, scenario, page_size, sqlite_driven
):
    """Keyset paging (FHIR 3.1.1.6, stable paging): resources created between pages may or may
    not appear, but every resource that matched from the start (its sort values unchanged) is
    returned exactly once, nothing is returned twice, and the walk follows the final order."""
    corpus, resource_type, params, inserts = scenario
    if _parse_or_none(resource_type, params, registry) is None:
        return
    driver_limit = sqlite_search.DRIVER_LIMIT if sqlite_driven else 0
    with engines(registry) as made, patch.object(sqlite_search, "DRIVER_LIMIT", driver_limit):
        for key in sorted(corpus):
            for engine in made:
                engine.write(corpus[key])
        query = parse_search(resource_type, params, registry).query
        before = run_query(query, made[0].stored_corpus(), registry)
        for engine in made:

            def insert_after(page_number: int, engine: Engine = engine) -> None:
                for after, resource in inserts:
                    if after == page_number:
                        engine.write(resource)

            found = walk(engine, resource_type, params, page_size, between_pages=insert_after)
            for _, resource in inserts:  # those whose page was never reached
                if (resource_type, resource["id"]) not in engine.written:
                    engine.write(resource)
            final = run_query(query, engine.stored_corpus(), registry)
            label = f"{engine.kind} on {resource_type}?{params}"
            assert len(found) == len(set(found)), f"{label}: a resource was returned twice"
            missing = [i for i in before if i not in found]
            assert not missing, f"{label}: {missing} skipped"
            assert set(found) <= set(final), f"{label}: returned a non-matching resource"
            positions = [final.index(i) for i in found]
            assert positions == sorted(positions), f"{label}: pages out of order"

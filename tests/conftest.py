"""Shared fixtures: storage engines, the service, and the HTTP app.

`engine_store` is parametrized over every engine the contract suite must pass on: SQLite,
MongoDB through mongomock, and a real MongoDB when FHIR_TEST_MONGODB_URI is set.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from fhir_server.paths import profiles_dir
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.registry import SearchRegistry

MONGODB_URI = os.environ.get("FHIR_TEST_MONGODB_URI")
ENGINES = ["sqlite", "mongomock"] + (["mongodb"] if MONGODB_URI else [])


@pytest.fixture(scope="session")
def registry() -> SearchRegistry:
    return SearchRegistry.load(profiles_dir())


def make_store(engine: str, tmp_path: Path, registry: SearchRegistry):
    if engine == "sqlite":
        from fhir_server.store.sqlite import SqliteStore

        return SqliteStore(tmp_path / "fhir.sqlite3")
    from fhir_server.store.mongo import MongoStore

    if engine == "mongomock":
        from tests.support.mongomock_sessions import SessionMongoClient

        store = MongoStore(SessionMongoClient(), "fhir", SERVED_TYPES)
    else:
        from pymongo import MongoClient

        client = MongoClient(MONGODB_URI, tz_aware=True)
        store = MongoStore(client, f"fhir_test_{uuid.uuid4().hex[:12]}", SERVED_TYPES)
    store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return store


@pytest.fixture(params=ENGINES)
def engine_store(request, tmp_path, registry):
    store = make_store(request.param, tmp_path, registry)
    yield store
    if request.param == "mongodb":
        store.database.client.drop_database(store.database.name)
    store.close()


@pytest.fixture
def engine_service(engine_store, registry, tmp_path):
    """The service on each engine, with its real gate."""
    from fhir_server.service.bundles import BundleProcessor
    from fhir_server.service.factory import build_service

    service = build_service(engine_store, registry, data_dir=tmp_path)
    return service, BundleProcessor(service)


@pytest.fixture
def no_auth_env(monkeypatch):
    """No FHIR_* authentication settings from the environment: `fhir-server token` and the
    server then use the test's data dir and defaults only."""
    for name in (
        "FHIR_BASE_URL",
        "FHIR_AUTH_ISSUER",
        "FHIR_AUTH_JWKS_URL",
        "FHIR_AUTH_AUDIENCE",
        "FHIR_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)

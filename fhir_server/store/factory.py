"""Open the configured engine: `sqlite:///path` (the default) or `mongodb://...`."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.registry import SearchRegistry
from fhir_server.store.base import ResourceStore


def open_store(settings: Settings, registry: SearchRegistry) -> ResourceStore:
    url = settings.store_url
    if url.startswith("sqlite:"):
        from fhir_server.store.sqlite import SqliteStore

        return SqliteStore(settings.sqlite_path)
    from fhir_server.store.mongo import MongoStore

    store = MongoStore.from_uri(url, SERVED_TYPES)
    store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return store

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

        return SqliteStore(settings.sqlite_path, audit_referrers=audit_referrers(registry))
    from fhir_server.store.mongo import MongoStore

    store = MongoStore.from_uri(url, SERVED_TYPES)
    store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return store


def audit_referrers(registry: SearchRegistry):
    """(type, reference parameter) -> whether it may point to an AuditEvent (its targets name
    AuditEvent, or none at all): the `_include`s the SQLite journal must settle first."""
    pairs = frozenset(
        (resource_type, code)
        for resource_type in SERVED_TYPES
        for code, definition in registry.for_type(resource_type).items()
        if definition.type == "reference"
        and (not definition.targets or "AuditEvent" in definition.targets)
    )
    return lambda source_type, param: (source_type, param) in pairs

"""Open the configured engine: `sqlite:///path` (the default) or `mongodb://...`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fhir_server.audit import entity_facts
from fhir_server.audit.entity_facts import EntityFacts
from fhir_server.config import ConfigError, Settings, redacted_url
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search import reach
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store.audit_log.port import AuditLogEngine
from fhir_server.store.base import FactsOf
from fhir_server.store.with_audit_log import StoreWithAuditLog

# How both engines derive the audit facts of versions they hold from before them.
FACTS_OF = FactsOf(EntityFacts.encoded_of_body, entity_facts.PREFIX)


def missing_store(settings: Settings) -> str | None:
    """The SQLite file of `settings` when it is not there, else None. A command that acts on
    what a store holds (audit verify, record close, reopen, purge) refuses it: opening it
    would create an empty store at a mistyped data dir, where the command "succeeds" on
    nothing. (A MongoDB database is not looked for: its server answers.)"""
    if not settings.store_url.startswith("sqlite:"):
        return None
    path = settings.sqlite_path
    return None if path == ":memory:" or Path(path).is_file() else path


def open_store(settings: Settings, registry: SearchRegistry) -> StoreWithAuditLog:
    """The configured resource store with its audit log beside it."""
    url = settings.store_url
    if url.startswith("sqlite:"):
        return with_audit_log(open_sqlite(settings.sqlite_path, registry), registry)
    from pymongo.errors import PyMongoError

    from fhir_server.store.mongo import MongoStore

    try:
        mongo = MongoStore.from_uri(url, SERVED_TYPES, facts_of=FACTS_OF)
        mongo.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    except (PyMongoError, ValueError) as exc:
        # A URI pymongo cannot take, or a server it cannot reach: the message names the
        # setting and the problem, never the password (`redacted_url`), and no traceback.
        raise ConfigError(
            f"FHIR_STORE: '{redacted_url(url)}': {_without_password(str(exc), url)}"
        ) from None
    return with_audit_log(mongo, registry)


def _without_password(message: str, url: str) -> str:
    """`message` with the password of `url`, if any and named in it, masked."""
    user_info = url.partition("://")[2].rpartition("@")[0]
    password = user_info.partition(":")[2]
    return message.replace(password, "***") if password else message


def open_sqlite(path: str | Path, registry: SearchRegistry):
    """The embedded resource store at `path`, as the server opens it."""
    from fhir_server.store.sqlite import SqliteStore

    return SqliteStore(path, audit_referrers=audit_referrers(registry), facts_of=FACTS_OF)


def _stamp(sealed: dict, recorded: int) -> bytes:
    return versions.stamp(sealed, sealed["id"], 1, recorded).body


def audit_log_path(database_path: str) -> str:
    """The SQLite audit log's file, beside the resource database: `fhir.sqlite3` ->
    `fhir.audit.sqlite3` (":memory:" stays in memory, see `SqliteAuditLog`)."""
    if database_path == ":memory:":
        return database_path
    path = Path(database_path)
    return str(path.with_name(f"{path.stem}.audit{path.suffix or '.sqlite3'}"))


def with_audit_log(
    store, registry: SearchRegistry, clock: Callable[[], int] = versions.now_us
) -> StoreWithAuditLog:
    """`store` with the audit log of its engine (`store.audit_log`); as is if it has one.
    `clock` (epoch µs) stamps the events' meta.lastUpdated."""
    if isinstance(store, StoreWithAuditLog):
        return store
    log: AuditLogEngine
    if store.name == "sqlite":
        from fhir_server.store.audit_log.sqlite import SqliteAuditLog

        log = SqliteAuditLog(audit_log_path(store.path), stamp=_stamp, clock=clock)
    else:
        from fhir_server.store.audit_log.mongo import MongoAuditLog

        log = MongoAuditLog(store.database, stamp=_stamp, clock=clock)
    return StoreWithAuditLog(store, log, registry)


def audit_referrers(registry: SearchRegistry) -> reach.MayReference:
    """(type, reference parameter) -> whether it may point to an AuditEvent (its targets name
    AuditEvent, or none at all): the `_include`s the SQLite journal must settle first."""
    return reach.referrers(registry, "AuditEvent")

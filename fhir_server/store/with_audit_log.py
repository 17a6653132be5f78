"""A resource store and its audit log, seen by the service as one store.

AuditEvents live in the log (`store.audit_log`); every other type in the resource store.
Reads, histories and searches of AuditEvents go to the log; everything else to the
resource store, unchanged.

A write transaction's own AuditEvents must be stored if and only if the write is (R16):
they are staged in the resource store's outbox inside the write's transaction (one narrow
row each, in the same commit), appended to the log once that commit is durable, and their
outbox rows cleared by a later transaction. Opening the store replays into the log every
outbox event it does not hold yet (a crash between the two commits), so after any crash the
log holds exactly the events of the writes that committed; an append that fails without a
crash is replayed the same way at the end of the process's next write. The log skips ids it
holds, so a replay racing the writer that staged the events stores each event once.

Events stored in the resource tables by earlier versions are moved into the log on open,
with their chain links, then removed from the resource tables (`_migrate`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from fhir_server.audit.chain import GENESIS_HASH, chain_link, link_problem
from fhir_server.errors import error
from fhir_server.search import reach
from fhir_server.search.extract import extract
from fhir_server.search.query import Include, Node, SearchQuery
from fhir_server.search.registry import SearchRegistry
from fhir_server.store.audit_log import search as log_search
from fhir_server.store.audit_log.includes import LogIncludes
from fhir_server.store.audit_log.port import AuditLogEngine
from fhir_server.store.audit_log.record import AUDIT_EVENT, LogRecord, imported
from fhir_server.store.base import (
    HistoryEntry,
    HistoryPage,
    StoredResource,
    StoreTransaction,
    VersionWrite,
    decode_history_cursor,
    encode_history_cursor,
    history_int,
)
from fhir_server.store.page import SearchPage

logger = logging.getLogger(__name__)


def _stored(record: LogRecord) -> StoredResource:
    return StoredResource(AUDIT_EVENT, record.id, 1, record.recorded, False, record.body)


class _EarlierChains:
    """The chains of the AuditEvents earlier versions sealed in the resource tables, as the
    move reads them (in sequence order): each sealed event must be its chain's next link
    after an event read before it, or the first of a chain (from the genesis, or after the
    log's head). Sealing one again would otherwise launder what was done to the tables: an
    event edited with its own hash computed again, or removed, shows only in the link of the
    event after it (which the log's chain would show, had they kept their links)."""

    def __init__(self, head: tuple[int, str] | None) -> None:
        # Links an event may follow: the genesis (any number of chains: one per downgrade)
        # and the log's head are always open; an event's own link is, once, for the next.
        self._starts = {(0, GENESIS_HASH), head or (0, GENESIS_HASH)}
        self._tips: set[tuple[int, str]] = set()

    def check(self, event: dict) -> None:
        """Raise ValueError naming `event` if it breaks its chain (unsealed: nothing to check)."""
        link = chain_link(event)
        if link is None:
            return
        problem = link_problem(event, link.sequence, link.previous)
        after = (link.sequence - 1, link.previous)
        if problem is None and after not in self._starts and after not in self._tips:
            problem = (
                "its previous hash is not the hash of an event before it in that chain "
                "(one was edited or removed)"
            )
        if problem:
            raise ValueError(
                f"AuditEvent {event.get('id')} in the resource tables (sequence "
                f"{link.sequence} of an earlier chain) cannot be moved to the audit log: "
                f"{problem}"
            )
        self._tips.discard(after)
        self._tips.add((link.sequence, link.hash))


def _not_supported(what: str) -> Exception:
    return error(
        400,
        "not-supported",
        f"{what}: AuditEvents are kept in the audit log and searched by AuditEvent searches",
    )


class _Transaction:
    """The resource store's write transaction, with AuditEvents staged in its outbox."""

    def __init__(
        self,
        tx: StoreTransaction,
        owner: StoreWithAuditLog,
        staged: list[dict],
        keys: list[object],
    ) -> None:
        self._tx = tx
        self._owner = owner
        self._staged = staged
        self._keys = keys

    def stage_audit(self, events: Sequence[dict]) -> Sequence[object]:
        """`events` are stored with this transaction, or not at all (module docstring)."""
        if not events:
            return []
        keys = self._tx.stage_audit(events)
        self._keys.extend(keys)
        self._staged.extend(events)
        return keys

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        if resource_type == AUDIT_EVENT:
            return self._owner.read(resource_type, resource_id)
        return self._tx.read(resource_type, resource_id)

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        if query.resource_type == AUDIT_EVENT:
            return self._owner.search(query, cursor_key=cursor_key, cursor_binding=cursor_binding)
        self._owner.refuse_joins(query)
        return self._tx.search(query, cursor_key=cursor_key, cursor_binding=cursor_binding)

    def write(self, version: VersionWrite) -> None:
        """AuditEvents go to the log, never to the resource tables: a created one (the
        server's own, or a bulk load's) is staged like the events of this write; nothing
        else may be written to one (R16: append-only)."""
        if version.resource.resource_type == AUDIT_EVENT:
            if version.method != "POST" or version.resource.deleted:
                raise ValueError("AuditEvents are appended, never updated or deleted")
            self.stage_audit([version.resource.json()])
            return
        self._tx.write(version)

    def clear_outbox(self, keys: Sequence[object]) -> None:
        self._tx.clear_outbox(keys)

    def notified_day(self, patient_id: str, practitioner_id: str) -> str | None:
        return self._tx.notified_day(patient_id, practitioner_id)

    def set_notified_day(self, patient_id: str, practitioner_id: str, day: str) -> None:
        self._tx.set_notified_day(patient_id, practitioner_id, day)

    def bump_record_epoch(self, patient_id: str) -> None:
        self._tx.bump_record_epoch(patient_id)

    def facts_epoch(self, patient_id: str) -> int:
        return self._tx.facts_epoch(patient_id)

    def confirm_facts_epoch(self, patient_id: str, epoch: int) -> None:
        self._tx.confirm_facts_epoch(patient_id, epoch)

    def claim(self, key: str) -> None:
        self._tx.claim(key)

    def purge(self, resource_type: str, resource_id: str) -> None:
        self._tx.purge(resource_type, resource_id)

    def __getattr__(self, name: str) -> Any:
        """Engine-specific extras (tests reach the SQLite connection this way)."""
        return getattr(self._tx, name)


class StoreWithAuditLog:
    """`ResourceStore` over a resource store and an audit log (module docstring)."""

    def __init__(self, resources: Any, log: AuditLogEngine, registry: SearchRegistry) -> None:
        self.resources = resources
        self.audit_log = log
        self.registry = registry
        self.name = resources.name
        self._entries = log_search.EntriesCache(registry)
        self._includes = LogIncludes(
            resources, log, self._entries, self._resource_entries, self.read, registry
        )
        self._cleared_lock = threading.Lock()
        self._to_clear: list[object] = []
        # A write's events could not be appended after its commit: they are in the outbox.
        self._replay_due = False
        self._migrate()
        self.replay_outbox()

    # -- AuditEvents ------------------------------------------------------------------------

    def append_audit(self, events: Sequence[dict]) -> list[LogRecord]:
        """Append events that belong to no write (a read's, a refusal's), durably."""
        return self.audit_log.append(events)

    def replay_outbox(self) -> int:
        """Append to the log the staged events it does not hold (after a crash), then clear
        the outbox. Returns how many events were appended."""
        rows = self.resources.outbox()
        if not rows:
            return 0
        appended = self.audit_log.append([event for _, event in rows], skip_known=True)
        with self.resources.transaction() as tx:
            tx.clear_outbox([key for key, _ in rows])
        return len(appended)

    def _migrate(self) -> None:
        """Move AuditEvents written into the resource tables by earlier versions into the
        log, in chain order, then drop them from the tables. A crash in between repeats the
        move, which skips what the log already holds.

        An event that continues the log's head keeps its link. Any other is sealed again
        after the head, its content unchanged, once its chain is checked (`_EarlierChains`): the unsealed ones (a bulk
        load's, never a client's: R16), and the sealed ones of a chain the log does not
        continue, such as the one an earlier version starts from the genesis when run again
        after the move (a downgrade): kept as they are, they would fork the chain."""
        moved = 0
        chains = _EarlierChains(self.audit_log.head())
        for chunk in self.resources.legacy_audit_events():
            events = [(orjson.loads(body), body, recorded) for body, recorded in chunk]
            for event, _, _ in events:  # before anything of the chunk is moved
                chains.check(event)
            held = self.audit_log.known(str(event.get("id")) for event, _, _ in events)
            sequence, previous = self.audit_log.head() or (0, GENESIS_HASH)
            continuing: list[LogRecord] = []
            anew: list[dict] = []
            for event, body, recorded in events:
                if str(event.get("id")) in held:
                    continue
                link = chain_link(event)
                if not anew and link and (link.sequence, link.previous) == (sequence + 1, previous):
                    continuing.append(imported(event, body, recorded))
                    sequence, previous = link.sequence, link.hash
                else:
                    anew.append(event)
            if continuing:
                self.audit_log.import_sealed(continuing)
            if anew:
                self.audit_log.append(anew, skip_known=True)
            moved += len(chunk)
        if not moved:
            return
        self.resources.drop_legacy_audit_events()
        logger.info("moved %d AuditEvents from the resource tables to the audit log", moved)

    # -- reads ------------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        if resource_type == AUDIT_EVENT:
            record = self.audit_log.get(resource_id)
            return _stored(record) if record else None
        return self.resources.read(resource_type, resource_id)

    def vread(self, resource_type: str, resource_id: str, version: int) -> StoredResource | None:
        if resource_type == AUDIT_EVENT:
            return self.read(resource_type, resource_id) if version == 1 else None
        return self.resources.vread(resource_type, resource_id, version)

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: int | None,
        count: int,
        cursor: str | None,
    ) -> HistoryPage:
        """AuditEvents have one version each: their history is the log, newest first. A
        whole-system history is the resource store's (the log is read through AuditEvent)."""
        if resource_type != AUDIT_EVENT:
            return self.resources.history(
                resource_type, resource_id, since=since, count=count, cursor=cursor
            )
        if since is not None:
            # Rounded up to the millisecond, the precision of the meta.lastUpdated served,
            # which `audit verify` checks the recorded column against: the column's
            # microseconds, moved within their millisecond, must not change the answer (R16).
            since = -(-since // 1000) * 1000
        before: int | None = None
        if cursor is not None:
            before = history_int(decode_history_cursor(cursor))
        records = self.audit_log.newest_first(
            before=before, since=since, event_id=resource_id, limit=count + 1
        )
        next_cursor = (
            encode_history_cursor(records[count - 1].sequence) if len(records) > count else None
        )
        entries = [HistoryEntry(_stored(record), "POST") for record in records[:count]]
        return HistoryPage(entries, next_cursor)

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        if query.resource_type == AUDIT_EVENT:
            return log_search.search(
                self.audit_log,
                query,
                self._entries,
                self._resource_entries,
                cursor_key=cursor_key,
                cursor_binding=cursor_binding,
            )
        self.refuse_joins(query)
        return self.resources.search(query, cursor_key=cursor_key, cursor_binding=cursor_binding)

    def refuse_joins(self, query: SearchQuery) -> None:
        """Criteria of another type that would read AuditEvents (`_has:AuditEvent`, a chain
        through an AuditEvent) cannot join across the two stores: refused, not ignored.
        Includes can, and are resolved across both (`resolve_includes`)."""
        if reach.where_reads(query.where, AUDIT_EVENT):
            raise _not_supported("criteria that read AuditEvents from another resource type")

    def _resource_entries(self, resource_type: str, resource_id: str):
        stored = self.read(resource_type, resource_id)
        if stored is None or stored.deleted:
            return None
        resource = stored.json()
        return resource, extract(resource, self.registry)

    def resolve_includes(
        self, rows: Sequence, includes: Sequence[Include], allowed: Callable[[str], Node]
    ) -> list:
        """As the resource store resolved them when it held the AuditEvents, with the events
        read from the log and let through by `allowed("AuditEvent")` (`audit_log.includes`);
        includes that touch no AuditEvent are the resource store's alone."""
        if not self._includes.reach_log(rows, includes):
            return list(self.resources.resolve_includes(rows, includes, allowed))
        return self._includes.resolve(rows, includes, allowed)

    # -- writes -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        staged: list[dict] = []
        keys: list[object] = []
        replay_due = self._replay_due  # left by an earlier write
        with self._cleared_lock:
            to_clear, self._to_clear = self._to_clear, []
        try:
            with self.resources.transaction() as tx:
                if to_clear:
                    tx.clear_outbox(to_clear)
                yield _Transaction(tx, self, staged, keys)
        except BaseException:
            with self._cleared_lock:
                self._to_clear.extend(to_clear)
            raise
        # The replay appends every event of the outbox, this write's included, oldest first.
        replayed = replay_due and self._replay_left()
        if staged and not replayed:
            self._append_staged(staged, keys)

    def _append_staged(self, staged: list[dict], keys: list[object]) -> None:
        """After the write's commit: its events into the log. Should that fail, they are
        safe in the outbox, and the end of the next write transaction of this process (or
        the next open of the store) appends them."""
        try:
            self.audit_log.append(staged, skip_known=True)
        except Exception:
            logger.exception("AuditEvents left in the outbox; the next write appends them")
            self._replay_due = True
            return
        with self._cleared_lock:
            self._to_clear.extend(keys)

    def _replay_left(self) -> bool:
        """The outbox events a failed append left, appended at last: without it they would
        wait for the next open of the store, missing meanwhile from every trail (R16)."""
        self._replay_due = False
        try:
            self.replay_outbox()
        except Exception:
            logger.exception("AuditEvents still in the outbox; the next write tries again")
            self._replay_due = True
            return False
        return True

    # -- the rest is the resource store's -----------------------------------------------------

    def record_epoch(self, patient_id: str) -> int:
        return self.resources.record_epoch(patient_id)

    def ping(self) -> bool:
        return bool(self.resources.ping())

    def close(self) -> None:
        self.resources.close()
        self.audit_log.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resources, name)

"""`_include` / `_revinclude` across the resource store and the audit log.

Before the log, AuditEvents were resources like any other, and every include shape reached
them (FHIR R4 search §3.1.1.5, http://hl7.org/fhir/R4/search.html#revinclude). So it stays:

- `_revinclude=AuditEvent:<param>` (and `_revinclude=*`, which expands to AuditEvent sources
  too) on a search of another type: the events whose `<param>` references a matched row;
- `_include=<Type>:<param>` where the reference lands on an AuditEvent (`List:item`, ...);
- `_include=AuditEvent:<param>` and `_revinclude=<Type>:<param>` on an AuditEvent search;

with the rounds and caps of `store.includes` (every store's), and every AuditEvent let
through only if it meets the access layer's clause for AuditEvent, `allowed("AuditEvent")`,
decided on the event's index entries with `search.evaluate.matches` as an AuditEvent search
decides it (R16: a patient or representative sees the events about their record only; R18:
events hidden by labels stay hidden). Includes that touch no AuditEvent go to the resource
store unchanged.

Which events a `_revinclude` of AuditEvents reads (the log indexes only the patients of an
event's compartment):
1. the events of the patients the access clause binds the requester to, when it binds one
   (every patient and representative: R16). Exact: an event outside them fails the clause;
2. otherwise the events of the compartments of the rows the include targets, when each of
   them is in a patient's compartment. This relies on the BALP shape of the server's events:
   an event about a resource of a record names that record's Patient as an entity
   (`audit.balp`; the R16 clause of `access.policy.reads` relies on it too);
3. otherwise (a row in no patient's compartment, a Practitioner say, for a requester whose
   clause binds no patient: the server itself) the whole log, in one pass per round for
   every AuditEvent `_revinclude` of the round. A refusal would answer differently from the
   resource store; the pass costs what the equivalent AuditEvent search, which names no
   patient either, costs (`audit_log.search`), and the results are capped like any include.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from fhir_server.resources.served import compartment_of
from fhir_server.search import reach
from fhir_server.search.evaluate import matches
from fhir_server.search.extract import extract
from fhir_server.search.query import Everything, Include, Node, Not
from fhir_server.search.registry import SearchRegistry
from fhir_server.store.audit_log import search as log_search
from fhir_server.store.audit_log.port import AuditLogEngine
from fhir_server.store.audit_log.record import AUDIT_EVENT, LogRecord
from fhir_server.store.base import StoredResource
from fhir_server.store.includes import resolve_rounds
from fhir_server.store.page import SearchRow

Allowed = Callable[[str], Node]
_NOTHING: Node = Not(Everything())


@dataclass(frozen=True)
class LogIncludes:
    """Includes for a page when some of them reach the log (module docstring)."""

    resources: Any  # the resource store: its `resolve_includes` serves the rest
    log: AuditLogEngine
    entries: log_search.EntriesCache
    resource: log_search.ResourceLookup  # (type, id) -> (resource, entries), log or store
    read: Callable[[str, str], StoredResource | None]  # the bytes served, log or store
    registry: SearchRegistry
    _may_reference: reach.MayReference = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_may_reference", reach.referrers(self.registry, AUDIT_EVENT))

    def reach_log(self, rows: Sequence, includes: Sequence[Include]) -> bool:
        """Whether resolving `includes` for `rows` may read or add an AuditEvent: the page
        holds one, or an include may reach one (`search.reach`)."""
        return any(row[0] == AUDIT_EVENT for row in rows) or reach.includes_read(
            includes, AUDIT_EVENT, self._may_reference
        )

    def _may_target_log(self, include: Include) -> bool:
        """Whether the forward `include` may land on an AuditEvent."""
        return not include.reverse and reach.includes_read(
            (include,), AUDIT_EVENT, self._may_reference
        )

    def resolve(
        self, page_rows: Sequence, includes: Sequence[Include], allowed: Allowed
    ) -> list[SearchRow]:
        def one_round(current: Sequence[SearchRow], active: Sequence[Include]) -> list[SearchRow]:
            stored = [replace(i, iterate=False) for i in active if i.source_type != AUDIT_EVENT]
            found: list[SearchRow] = []
            if stored:
                found += self.resources.resolve_includes(current, stored, allowed)
            for include in stored:
                if self._may_target_log(include):
                    found += self._events_named_by(current, include, allowed)
            from_events = [i for i in active if i.source_type == AUDIT_EVENT and not i.reverse]
            for include in from_events:
                found += self._named_by_events(current, include, allowed)
            reverse = [i for i in active if i.source_type == AUDIT_EVENT and i.reverse]
            if reverse:
                found += self._events_naming(current, reverse, allowed)
            return found

        return resolve_rounds(page_rows, includes, one_round)

    # -- the three ways an include meets the log ---------------------------------------------

    def _events_named_by(
        self, rows: Sequence[SearchRow], include: Include, allowed: Allowed
    ) -> list[SearchRow]:
        """`_include=<Type>:<param>`: the AuditEvents the rows' `<param>` references."""
        clause = allowed(AUDIT_EVENT)
        if clause == _NOTHING:
            return []
        wanted: list[str] = []
        for row in rows:
            if row.resource_type != include.source_type or b"AuditEvent/" not in row.body:
                continue  # a reference to an event spells its type: no parse without one
            for reference in extract(orjson.loads(row.body), self.registry).references:
                if (
                    reference.param == include.param
                    and reference.target_type == AUDIT_EVENT
                    and reference.target_id is not None
                    and reference.target_id not in wanted
                ):
                    wanted.append(reference.target_id)
        records = (self.log.get(event_id) for event_id in sorted(wanted))
        return [self._row(r) for r in records if r is not None and self._shown(r, clause)]

    def _named_by_events(
        self, rows: Sequence[SearchRow], include: Include, allowed: Allowed
    ) -> list[SearchRow]:
        """`_include=AuditEvent:<param>`: what the rows' events reference, resources or
        events, each let through by the clause of its type."""
        events = [(row.id, row.body) for row in rows if row.resource_type == AUDIT_EVENT]
        found: list[SearchRow] = []
        for target_type, target_id in log_search.references_from(
            events, include.param, self.entries
        ):
            if include.target_type not in (None, target_type):
                continue
            target = self.resource(target_type, target_id)
            if target is None or not matches(
                allowed(target_type), target_type, target[0], target[1], self._lookup
            ):
                continue
            stored = self.read(target_type, target_id)
            if stored is not None:
                found.append(SearchRow(target_type, target_id, stored.body))
        return found

    def _events_naming(
        self, rows: Sequence[SearchRow], includes: Sequence[Include], allowed: Allowed
    ) -> list[SearchRow]:
        """`_revinclude=AuditEvent:<param>` (each of `includes`): the events whose `<param>`
        references one of the rows, in the include's order, each by id."""
        clause = allowed(AUDIT_EVENT)
        targets = {
            include: {
                (row.resource_type, row.id)
                for row in rows
                if include.target_type in (None, row.resource_type)
            }
            for include in includes
        }
        if clause == _NOTHING or not any(targets.values()):
            return []
        named: dict[Include, list[LogRecord]] = {include: [] for include in includes}
        for record in self.log.scan(self._candidates(clause, rows, targets)):
            event, entries = self.entries.of(record)
            hits = [
                include
                for include in includes
                if any(
                    reference.param == include.param
                    and (reference.target_type, reference.target_id) in targets[include]
                    for reference in entries.references
                )
            ]
            if hits and matches(clause, AUDIT_EVENT, event, entries, self._lookup):
                for include in hits:
                    named[include].append(record)
        return [
            self._row(record)
            for include in includes
            for record in sorted(named[include], key=lambda r: r.id)
        ]

    def _candidates(
        self,
        clause: Node,
        rows: Sequence[SearchRow],
        targets: dict[Include, set[tuple[str, str]]],
    ) -> tuple[str, ...] | None:
        """The patients whose events may answer a `_revinclude` (module docstring, 1-3);
        None: the whole log."""
        bound = log_search.patients_named(clause)
        if bound is not None:
            return bound
        wanted = set().union(*targets.values())
        patients: list[str] = []
        for row in rows:
            if (row.resource_type, row.id) not in wanted:
                continue
            compartment = compartment_of(orjson.loads(row.body))
            if not compartment:
                return None
            patients.extend(compartment)
        return tuple(dict.fromkeys(patients))

    # -- helpers -------------------------------------------------------------------------------

    def _shown(self, record: LogRecord, clause: Node) -> bool:
        event, entries = self.entries.of(record)
        return matches(clause, AUDIT_EVENT, event, entries, self._lookup)

    @staticmethod
    def _row(record: LogRecord) -> SearchRow:
        return SearchRow(AUDIT_EVENT, record.id, record.body)

    @property
    def _lookup(self) -> log_search._Lookup:
        return log_search._Lookup(self.resource)

"""The one gate: validate -> authorize -> store -> audit, for every interaction.

Faces (REST, XDS, the loader) call only this class; they never touch a store. Each public
method takes the Requester first, asks the access gate, and records what happened.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import orjson

from fhir_server.access import list_labels
from fhir_server.access.decision import Permit, not_found_message
from fhir_server.access.record import INS_SYSTEMS
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.entity_facts import EntityFacts
from fhir_server.documents.model import assign_entry_uuid, is_xds_list
from fhir_server.documents.registry import DocumentRules, local_patient
from fhir_server.documents.rules import xds_list_update_issues
from fhir_server.errors import RULE_SYSTEM, FhirError, bad_request, error, not_found
from fhir_server.resources.model import SERVED_TYPES, check_resource
from fhir_server.resources.normal_form import NormalForm
from fhir_server.resources.profiles import ProfileRegistry
from fhir_server.search.extract import PreparedEntries, extract, prepare
from fhir_server.search.parameters import ParsedSearch, parse_search
from fhir_server.search.query import (
    Everything,
    Node,
    ReferenceTest,
    SearchQuery,
    TokenTest,
    TotalMode,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import (
    audit_event_writes,
    existence_check,
    messaging,
    unique_ids,
    versions,
)
from fhir_server.service.context import facts_scope, forget_request_facts
from fhir_server.service.following import following
from fhir_server.service.gate import INTERNAL_BINDING, Gate, ReadPurpose
from fhir_server.service.ownership import BinaryOwnership
from fhir_server.service.prepared import PreparedWrite
from fhir_server.store.base import (
    HistoryPage,
    RecordMoved,
    ResourceStore,
    StoredResource,
    StoreTransaction,
    VersionConflict,
    VersionWrite,
)
from fhir_server.store.cursor import open_history_cursor, seal_history_cursor
from fhir_server.store.page import SearchPage, SearchRow

log = logging.getLogger(__name__)
T = TypeVar("T")

# How many times a conditional write is run again after losing a race to a concurrent one
# with the same criteria (`Replay`), and the first pause before it runs again (doubled each
# time, with jitter): the winner may still be committing, and its commit (a SQLite group
# commit, a MongoDB majority write) takes milliseconds.
CONDITION_ATTEMPTS = 8
CONDITION_BACKOFF_SECONDS = 0.004
# A search whose records' facts moved between its decision and its last read is decided and
# read again, at most this many times in all (`FhirService._search`).
SEARCH_ATTEMPTS = 3
# Lists read a page at a time when a document gains a label (a SubmissionSet, some folders).
_NAMING_LISTS_PAGE = 100


class Replay(Exception):  # noqa: N818 - an instruction to the caller, not an error
    """A conditional write met a concurrent one with the same criteria: run it again."""


@dataclass(frozen=True)
class Condition:
    """The criteria of a conditional create, update or delete, as the requester's search.

    `query`: the search as the gate constrained it for the requester (it finds only what
    they may read); `key`: the resource type and the criteria in one canonical spelling,
    which concurrent conditional creates `claim` in their transaction (issue #18, #7).
    """

    query: SearchQuery
    key: str
    # The Permit the gate let the criteria through with, for the audit of what they match.
    permit: Permit
    # The criteria as asked, before the gate constrained them: their event names what they
    # name, with its labels, as a search's does (`Gate.after_search`).
    asked: SearchQuery | None = None


@dataclass(frozen=True)
class WriteResult:
    stored: StoredResource
    created: bool


@dataclass(frozen=True)
class SearchResult:
    matches: list[SearchRow]
    included: list[SearchRow]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None
    query: SearchQuery
    ignored: list[str] = field(default_factory=list)
    # The criteria as the requester gave them, before the access constraints replaced what
    # names a hidden resource: the audit labels its event with what they name.
    asked: SearchQuery | None = None
    # The Permit the gate let the search through with (`Gate.constrain_search`): its notes
    # are for the search's audit (`Gate.after_search`).
    permit: Permit | None = None
    # (matches, included) parsed, once `resources` is first called.
    _parsed: list[tuple[list[dict], list[dict]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    @classmethod
    def of_conditional(
        cls,
        found: Sequence[StoredResource],
        query: SearchQuery,
        asked: SearchQuery | None,
        permit: Permit | None,
    ) -> SearchResult:
        """The one page a conditional interaction's criteria matched, for its search audit."""
        return cls(
            matches=[SearchRow(s.resource_type, s.id, s.body) for s in found],
            included=[],
            total=None,
            next_cursor=None,
            previous_cursor=None,
            query=query,
            asked=asked,
            permit=permit,
        )

    def resources(self) -> tuple[list[dict], list[dict]]:
        """(matches, included) as JSON objects, each body parsed once per result.

        The gate's search audit reads every match, and a face that maps them (the XDS
        registry's ebRIM answer) reads them again: one parse serves both. The objects are
        shared by every caller: read them, never change them.
        """
        if not self._parsed:
            self._parsed.append(
                (
                    [orjson.loads(row[2]) for row in self.matches],
                    [orjson.loads(row[2]) for row in self.included],
                )
            )
        return self._parsed[0]

    def entity_facts(self) -> list[tuple[str, str, EntityFacts]]:
        """(type, id, facts) of every match and included resource, in that order, for the
        search's AuditEvent: the facts the store kept beside each version, else (none, or
        another derivation's) those of the parsed resource (`audit.entity_facts`)."""
        rows = [*self.matches, *self.included]
        parsed: list[dict] | None = None
        found = []
        for n, row in enumerate(rows):
            facts = EntityFacts.decode(row.facts) if row.facts is not None else None
            if facts is None:  # none kept, or kept by another derivation
                if parsed is None:
                    matches, included = self.resources()
                    parsed = [*matches, *included]
                facts = EntityFacts.of(parsed[n])
            found.append((row.resource_type, row.id, facts))
        return found


# Searches whose Bundle always carries `total`, counted even when it spans pages (any other
# search carries it when its first page is the whole result, `_cheap_total`): IHE MHD's Find
# Document References (ITI-67) and Find Document Lists (ITI-66) responses require it (1..1).
# They are searches of one patient's record (R04), so the count, made with the access
# constraints, stays small. A search with `_count=0` asks for no entry: only its total, as
# `_summary=count` (fhirpy's `count()` asks so).
ALWAYS_COUNTED = frozenset({"DocumentReference", "List"})


def _cheap_total(query: SearchQuery, page: SearchPage) -> int | None:
    """The page's total as counted by the store, or, when the store did not count, the size
    of a first page with no next one: that page is the whole result, so its length is the
    exact total within the access rules (the rows are already constrained), at no cost.
    A later page (a cursor) or an empty page of `_count=0` says nothing about the rest."""
    if page.total is not None:
        return page.total
    if query.cursor is None and query.count > 0 and page.next_cursor is None:
        return len(page.rows)
    return None


def require_type(resource_type: str) -> str:
    if resource_type not in SERVED_TYPES:
        raise error(404, "not-supported", f"resource type '{resource_type}' is not served")
    return resource_type


class FhirService:
    # The profile registry behind the validators, set by `service.factory.build_service`;
    # the capability statement lists its profiles per served type.
    profiles: ProfileRegistry

    def __init__(
        self,
        store: ResourceStore,
        registry: SearchRegistry,
        gate: Gate,
        *,
        cursor_key: bytes,
        clock: Callable[[], int] = versions.now_us,
        validators: Sequence[Callable[[dict], None]] = (),
        base_url: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.gate = gate
        self.ownership = BinaryOwnership(gate)
        self.cursor_key = cursor_key
        self.clock = clock
        # Extra write-time checks (profiles, INS), each raising FhirError.
        self.validators = tuple(validators)
        # This server's FHIR base: references to it are made relative (`normal_form`).
        self.base_url = base_url
        self.normal_form = NormalForm(base_url)
        # The document model's rules, run on every DocumentReference write (`documents`).
        self.documents = DocumentRules(self)

    # -- reads ----------------------------------------------------------------------------

    def read(self, requester: Requester, resource_type: str, resource_id: str) -> StoredResource:
        require_type(resource_type)
        stored = self.store.read(resource_type, resource_id)
        if stored is None:
            self.gate.refuse_unknown_id(requester, resource_type, ReadPurpose.READ)
            raise not_found(not_found_message(resource_type, resource_id))
        # A message's first read by its recipient sets `received`: the gate returns that version.
        stored = self.gate.authorize_read(requester, stored, ReadPurpose.READ) or stored
        if stored.deleted:
            raise error(410, "deleted", f"{resource_type}/{resource_id} has been deleted")
        return self.gate.as_served(requester, stored)

    def vread(
        self, requester: Requester, resource_type: str, resource_id: str, version: int
    ) -> StoredResource:
        require_type(resource_type)
        stored = self.store.vread(resource_type, resource_id, version)
        current = self.store.read(resource_type, resource_id) if stored is not None else None
        if stored is None or current is None:
            self.gate.refuse_unknown_id(requester, resource_type, ReadPurpose.VREAD)
            raise not_found(not_found_message(resource_type, resource_id))
        # Masking applies to all of history: a version is served only if the current one
        # may be read too (issue #18, finding 6).
        self.gate.authorize_read(requester, stored, ReadPurpose.VREAD, current=current)
        if stored.deleted:
            raise error(
                410, "deleted", f"version {version} of {resource_type}/{resource_id} is a deletion"
            )
        return self.gate.as_served(requester, stored)

    def history(
        self,
        requester: Requester,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: int | None = None,
        count: int = 20,
        cursor: str | None = None,
    ) -> HistoryPage:
        if resource_type is not None:
            require_type(resource_type)
        count = max(1, min(count, 1000))
        scope = f"{resource_type or ''}/{resource_id or ''}"
        binding = self.gate.binding(requester)
        if cursor is not None:
            cursor = open_history_cursor(
                cursor, scope=scope, cursor_key=self.cursor_key, cursor_binding=binding
            )
        if resource_id is not None:
            if resource_type is None:
                raise bad_request("an instance history names its resource type", "type")
            # The page is read first, so that a cursor the store cannot read is refused
            # before the access is audited: its event keeps the request as asked, and the
            # cursor, never read, carried whatever it held into the patient's trace (R18).
            # Unserved until the read is judged; the same 400 whether the id exists or not.
            page = self.store.history(
                resource_type, resource_id, since=since, count=count, cursor=cursor
            )
            current = self.store.read(resource_type, resource_id)
            if current is None:
                self.gate.refuse_unknown_id(requester, resource_type, ReadPurpose.HISTORY)
                raise not_found(not_found_message(resource_type, resource_id))
            self.gate.authorize_read(requester, current, ReadPurpose.HISTORY)
        else:
            self.gate.authorize_history(requester, resource_type)
            page = self.store.history(
                resource_type, resource_id, since=since, count=count, cursor=cursor
            )
        page = self.gate.filter_history(requester, page)
        if page.next_cursor is None:
            return page
        return replace(
            page,
            next_cursor=seal_history_cursor(
                page.next_cursor, scope=scope, cursor_key=self.cursor_key, cursor_binding=binding
            ),
        )

    def search(
        self,
        requester: Requester,
        resource_type: str | None,
        params: list[tuple[str, str]],
        *,
        lenient: bool = False,
        cursor: str | None = None,
    ) -> SearchResult:
        if resource_type is not None:
            require_type(resource_type)
        parsed = parse_search(
            resource_type, params, self.registry, lenient=lenient, base_url=self.base_url
        )
        counted = resource_type in ALWAYS_COUNTED or parsed.query.count == 0
        if counted and parsed.query.total is TotalMode.NONE:
            parsed = replace(parsed, query=replace(parsed.query, total=TotalMode.ACCURATE))
        with facts_scope():
            return self._search(requester, parsed, cursor)

    def _search(
        self, requester: Requester, parsed: ParsedSearch, cursor: str | None
    ) -> SearchResult:
        check = existence_check.recognise(requester, parsed, cursor)
        if check is not None:
            matches, answered = self.gate.existence_check(requester, check)
            if answered:
                return SearchResult(
                    matches=[SearchRow(*match) for match in matches],
                    included=[],
                    total=len(matches),
                    next_cursor=None,
                    previous_cursor=None,
                    query=parsed.query,
                    asked=parsed.query,
                )
        for _ in range(SEARCH_ATTEMPTS):
            query, permit = self.gate.constrain_search(
                requester, replace(parsed.query, cursor=cursor)
            )
            decided_on = self.gate.facts.epochs_read()
            page = self.store.search(
                query, cursor_key=self.cursor_key, cursor_binding=self.gate.binding(requester)
            )
            included: list = []
            if query.includes and page.rows:
                included = self.store.resolve_includes(
                    page.rows,
                    query.includes,
                    lambda target_type, query=query: self.gate.include_constraint(
                        requester, query, target_type
                    ),
                )
            # The access was decided on the records' facts, the page read after: a block
            # committed in between, then a document deposited after it, and the page served
            # it to the blocked practitioner, judged by the Consent the block replaced (R09).
            # Unmoved, the facts held from the decision to the last read: served.
            if not self.gate.facts.moved_since(decided_on):
                break
            forget_request_facts()
        else:
            raise error(
                503,
                "transient",
                "the record's access rights kept changing during the search; try again",
            )
        served = self.gate.served_body

        def as_served(row):
            body = served(requester, row[0], row[2])
            return row if body is row[2] else row._replace(body=body)

        result = SearchResult(
            matches=[as_served(row) for row in page.rows],
            included=[as_served(row) for row in included],
            total=_cheap_total(query, page),
            next_cursor=page.next_cursor,
            previous_cursor=getattr(page, "previous_cursor", None),
            query=query,
            ignored=parsed.ignored,
            asked=parsed.query,
            permit=permit,
        )
        self.gate.after_search(requester, result)
        return result

    def find(
        self,
        requester: Requester,
        resource_type: str,
        params: list[tuple[str, str]],
        limit: int = 2,
        *,
        joins_seen_by: Requester | None = None,
        audited: bool = False,
    ) -> list[StoredResource]:
        """The current resources matching search criteria (conditional interactions).

        Only what the requester may see is counted, so a conditional interaction cannot reveal
        a hidden resource (R18). `joins_seen_by`: for the server's own search (`requester`
        INTERNAL) made for that requester, whose matches the caller judges one by one, the
        chained and `_has` clauses read only what that requester could search
        (`Gate.constrain_joins`). `audited`: the requester's answer depends on what was found
        (a transaction's conditional reference fails on none or several), so the search is
        audited as theirs, matched or not, and told as one (R16, R17): untraced, it let a
        practitioner ask the record any criteria and leave nothing the patient could see.
        """
        parsed = parse_search(resource_type, params, self.registry, base_url=self.base_url)
        _require_selective(resource_type, params, parsed)
        query = _replace_count(parsed.query, limit)
        if joins_seen_by is not None:
            query = self.gate.constrain_joins(joins_seen_by, query)
        query, permit = self.gate.constrain_search(requester, query, conditional=True)
        found = self._matching_now(requester, query)
        if audited:
            self._audit_matches(requester, found, query, parsed.query, permit)
        return found

    def _matching_now(self, requester: Requester, query: SearchQuery) -> list[StoredResource]:
        """The current resources a constrained conditional query matches (one page)."""
        page = self.store.search(
            query, cursor_key=self.cursor_key, cursor_binding=self.gate.binding(requester)
        )
        return self._current(page.rows)

    def _audit_matches(
        self,
        requester: Requester,
        found: list[StoredResource],
        query: SearchQuery,
        asked: SearchQuery | None,
        permit: Permit | None,
    ) -> None:
        """A conditional interaction's search audited as the requester's, matched or not."""
        self.gate.after_search(requester, SearchResult.of_conditional(found, query, asked, permit))

    def _current(self, rows) -> list[StoredResource]:
        """The matched rows as stored versions: each the version the search judged.

        The access clause was decided on the row's version; a version written since (a
        label added between the search and this read) was never judged, so when the
        current one is another, the version the row holds is served (a snapshot of the
        instant of the decision). Served as current, a conditional create answered a
        document with the MASQUE_PS its practitioner had been masked from meanwhile (R14).
        """
        found = []
        for row in rows:
            stored = self.store.read(row[0], row[1])
            if stored is None or stored.deleted:
                continue
            if stored.body != row[2]:
                judged = self.store.vread(row[0], row[1], _version_of(row[2]))
                if judged is None or judged.body != row[2]:
                    continue  # no version holds what was judged: nothing to serve
                stored = judged
            found.append(stored)
        return found

    def condition(
        self, requester: Requester, resource_type: str, params: list[tuple[str, str]]
    ) -> Condition:
        """The criteria of a conditional interaction as `requester`'s search (R04 and their
        scopes apply, a refusal is audited like a search's)."""
        parsed = parse_search(resource_type, sorted(params), self.registry)
        _require_selective(resource_type, params, parsed)
        query, permit = self.gate.constrain_search(
            requester, _replace_count(parsed.query, 2), conditional=True
        )
        key = condition_key(resource_type, parsed.query.where)
        return Condition(query, key, permit, asked=parsed.query)

    def conditional_matches(
        self, requester: Requester, condition: Condition
    ) -> list[StoredResource]:
        """What the criteria find, as a search by `requester` would serve it: only what they
        may read, each body filtered like a read (`Gate.as_served`), and audited like a
        search, matched or not (issue #18, finding 8), its event carrying the labels of what
        the criteria name as a search's does: the event keeps the request as asked (a
        conditional update's or delete's criteria are in its URL), which a criterion naming
        a hidden document by id or uniqueId would show to whom it is hidden from (R14, R18)."""
        found = self._matching_now(requester, condition.query)
        self._audit_matches(requester, found, condition.query, condition.asked, condition.permit)
        return [self.gate.as_served(requester, stored) for stored in found]

    @staticmethod
    def one_match(matches: list[StoredResource], interaction: str) -> StoredResource | None:
        """The one resource a conditional create, update or delete found, or None. Several:
        412 `multiple-matches` (http.html#ccreate, #cond-update, #cdelete: "the client's
        criteria were not selective enough"), whatever the door (a request alone, a batch or
        transaction entry: `service.dispatch`)."""
        if len(matches) > 1:
            raise error(
                412,
                "multiple-matches",
                f"the conditional {interaction} criteria match more than one resource",
            )
        return matches[0] if matches else None

    def recheck(self, tx: StoreTransaction, requester: Requester, condition: Condition) -> bool:
        """In the write transaction of a conditional create: claim the criteria and search
        again, so that of two concurrent creates with the same criteria exactly one writes
        (issue #18, finding 7). True: a concurrent one wrote first; write nothing and run
        again (`Replay`), to find what it wrote."""
        tx.claim(condition.key)
        page = tx.search(
            condition.query,
            cursor_key=self.cursor_key,
            cursor_binding=self.gate.binding(requester),
        )
        return bool(page.rows)

    def still_the_match(
        self,
        tx: StoreTransaction,
        requester: Requester,
        condition: Condition,
        target_id: str | None,
    ) -> None:
        """In the write transaction of a conditional update or delete: its criteria searched
        again, as `recheck` does a create's. A write committed since the match was found (its
        identifier changed, another resource now matching too) left the update writing over a
        resource the criteria no longer named; raises `Replay`, so that the interaction runs
        again on what they match now. `target_id` None: they matched nothing then."""
        tx.claim(condition.key)
        page = tx.search(
            condition.query,
            cursor_key=self.cursor_key,
            cursor_binding=self.gate.binding(requester),
        )
        if [row[1] for row in page.rows] != ([target_id] if target_id is not None else []):
            raise Replay()

    def replayed(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, run again while it loses races to concurrent conditional writes, or
        (a create) to a change of the record's facts it was decided on."""
        pause = CONDITION_BACKOFF_SECONDS
        for _ in range(CONDITION_ATTEMPTS):
            try:
                return attempt()
            except Replay:
                time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter only
                pause *= 2
                # Judged again on the facts as they are now, not on the request's memo of
                # those the lost attempt was decided on.
                forget_request_facts()
        raise error(409, "conflict", "concurrent writes kept conflicting; try again")

    # -- writes ---------------------------------------------------------------------------

    def validate_for_write(
        self, resource: dict, resource_type: str | None, *, normalized: bool = False
    ) -> None:
        """Bring `resource` to the normal form (in place), then check it: every write's door.
        `resource_type`: the type the request names, which the resource must have (None:
        any type, as for a Bundle entry's resource). `normalized`: the caller has applied
        the normal form already (a transaction does, to its entries, before the ITI-65
        checks)."""
        if not normalized:
            self.normal_form.apply(resource)
        check_resource(resource, resource_type)
        for validator in self.validators:
            validator(resource)

    def create(
        self,
        requester: Requester,
        resource_type: str,
        resource: dict,
        *,
        if_none_exist: list[tuple[str, str]] | None = None,
    ) -> WriteResult:
        require_type(resource_type)
        self.validate_for_write(resource, resource_type)
        if if_none_exist is None or audit_event_writes.refused_create(requester, resource_type):
            # Run again when the record's facts moved under its decision (`_create`).
            return self.replayed(lambda: self._create(requester, resource))
        condition = self.condition(requester, resource_type, if_none_exist)

        def attempt() -> WriteResult:
            existing = self.one_match(self.conditional_matches(requester, condition), "create")
            if existing is not None:
                return WriteResult(existing, created=False)
            return self._create(requester, resource, condition)

        return self.replayed(attempt)

    def _create(
        self, requester: Requester, resource: dict, condition: Condition | None = None
    ) -> WriteResult:
        """A create with a server id; `condition`: the criteria it is conditional on."""
        resource_id = versions.new_id()
        self._label_list(resource)
        if (resource.get("resourceType") == "DocumentReference" or is_xds_list(resource)) and (
            requester.kind is not ActorKind.INTERNAL
        ):
            # The registry assigns a new document's entryUUID (PDSm4DMP), at every door, and a
            # new SubmissionSet's or Folder's (MHD Vol 3 4.5.1): without one, ITI-18 named a
            # folder List by an id derived from its FHIR id, which no Get query found.
            assign_entry_uuid(resource)
        # Authorized before the transaction: a create has no current version to judge, and the
        # write lock, which every writer of every process waits for, is not held meanwhile.
        with facts_scope():
            permit = self.gate.authorize_write(
                requester, "create", resource["resourceType"], resource, None
            )
        prepared = self._prepare_create(requester, resource, resource_id)
        # Any conflict runs the create again from its decision: nothing of it is written yet.
        with self._transaction(replay=True) as tx:
            # The record's facts as the transaction commits on them: a block committed since
            # the decision, or (SQLite) written by an earlier unit of this batch, which the
            # decision's reads could not see. The create is left unwritten and judged again
            # once that block is committed (a SQLite unit returns after its batch's commit),
            # or it is written after the Consent that refuses it (R09, R10). On MongoDB the
            # epoch is claimed too: a block committing before this does conflicts with it.
            moved = self.gate.decision_moved(tx, permit)
            raced = moved or (condition is not None and self.recheck(tx, requester, condition))
            if not raced:
                return self.create_in(
                    tx,
                    requester,
                    resource,
                    resource_id=resource_id,
                    prepared=prepared,
                    permit=permit,
                )
        # Left without writing, once the concurrent create (or the change of the record's
        # facts) is committed (a SQLite unit returns after its group's commit): the next
        # attempt's search finds it, its decision reads them.
        raise Replay()

    def _prepare_create(
        self, requester: Requester, resource: dict, resource_id: str
    ) -> PreparedWrite:
        """What a create can compute before its transaction (see `service.prepared`)."""
        provisional = versions.stamp(resource, resource_id, 1, self.clock())
        return PreparedWrite(
            prepare(resource, self.registry),
            self.gate.prepare_write_audit(requester, "create", provisional, resource),
        )

    def update(
        self,
        requester: Requester,
        resource_type: str,
        resource_id: str,
        resource: dict,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        require_type(resource_type)
        versions.check_id(resource_id)
        body_id = resource.get("id") if isinstance(resource, dict) else None
        if body_id is None:
            raise bad_request(
                "the resource has no id: an update must carry the id of the URL",
                f"{resource_type}.id",
            )
        if body_id != resource_id:
            raise bad_request(
                f"the resource id '{body_id}' does not match the URL id '{resource_id}'",
                f"{resource_type}.id",
            )
        self.validate_for_write(resource, resource_type)
        with self._transaction() as tx:
            return self.update_in(tx, requester, resource, if_match=if_match)

    def conditional_update(
        self,
        requester: Requester,
        resource_type: str,
        criteria: list[tuple[str, str]],
        resource: dict,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Update the one resource the criteria find, or create one (FHIR R4 http.html#cond-update).

        When nothing matches, the resource is created with a server id, as a create is: an
        id in the body is ignored (R4's create ignores it). Keeping it would answer
        differently for an id that does not exist (201) and for one held by a resource
        hidden from the requester (a conflict): issue #18, finding 13. With an If-Match,
        the one match must be at that version, and nothing matching fails it (412)."""
        require_type(resource_type)
        self.validate_for_write(resource, resource_type)
        condition = self.condition(requester, resource_type, criteria)

        def attempt() -> WriteResult:
            target = self.one_match(self.conditional_matches(requester, condition), "update")
            if target is None:
                if if_match is not None:
                    raise precondition_failed(if_match, resource_type, None)
                return self._create(requester, _without_id(resource), condition)
            if resource.get("id") not in (None, target.id):
                raise bad_request(
                    f"the resource id '{resource['id']}' does not match the resource found ({target.id})",
                    f"{resource_type}.id",
                )
            with self._transaction(replay=True) as tx:
                self.still_the_match(tx, requester, condition, target.id)
                return self.update_in(
                    tx, requester, {**resource, "id": target.id}, if_match=if_match
                )

        return self.replayed(attempt)

    def delete(
        self,
        requester: Requester,
        resource_type: str,
        resource_id: str,
        *,
        if_match: int | None = None,
    ) -> StoredResource | None:
        require_type(resource_type)
        with self._transaction() as tx:
            return self.delete_in(tx, requester, resource_type, resource_id, if_match=if_match)

    def conditional_delete(
        self,
        requester: Requester,
        resource_type: str,
        criteria: list[tuple[str, str]],
        *,
        if_match: int | None = None,
    ) -> StoredResource | None:
        require_type(resource_type)
        condition = self.condition(requester, resource_type, criteria)
        return self.replayed(
            lambda: self._conditional_delete(requester, resource_type, condition, if_match)
        )

    def _conditional_delete(
        self,
        requester: Requester,
        resource_type: str,
        condition: Condition,
        if_match: int | None,
    ) -> StoredResource | None:
        target = self.one_match(self.conditional_matches(requester, condition), "delete")
        if target is None:
            # A delete the requester may make of no resource of this type (a message, a
            # Binary, a practitioner's Consent...) is refused when nothing they may see
            # matches too, as a matching one is by `delete_in`: a conditional DELETE of
            # Communication answered 204 for criteria matching nothing (or only what is
            # hidden from them) and 403 for a message they may see (R18).
            self.gate.refuse_change(requester, "delete", resource_type, None)
            if if_match is not None:
                raise precondition_failed(if_match, resource_type, None)
            return None
        with self._transaction(replay=True) as tx:
            self.still_the_match(tx, requester, condition, target.id)
            return self.delete_in(tx, requester, resource_type, target.id, if_match=if_match)

    # -- writes inside an open transaction (also used by Bundle processing) ----------------

    def create_in(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource: dict,
        *,
        keep_id: bool = False,
        resource_id: str | None = None,
        prepared: PreparedWrite | None = None,
        permit: Permit | None = None,
    ) -> WriteResult:
        """`permit`: what `gate.authorize_write` returned, when the caller has had it accept
        this create already."""
        resource_type = resource["resourceType"]
        if resource_id is None:
            resource_id = (
                versions.check_id(resource["id"])
                if keep_id and resource.get("id")
                else versions.new_id()
            )
        if self._label_list(resource, tx):
            prepared = None  # made for the List as it was: its labels change its entries
        if permit is None:
            permit = self.gate.authorize_write(requester, "create", resource_type, resource, None)
        claims = self.ownership.before_write(tx, requester, "create", resource, resource_id, None)
        self._check_document(tx, requester, resource, resource_id, None)
        stored = versions.stamp(resource, resource_id, 1, self.clock())
        self._write(
            tx,
            stored,
            resource,
            "POST",
            expected_version=0,
            entries=prepared.entries if prepared is not None else None,
        )
        self._claim(tx, claims, resource_id)
        self.gate.after_write(
            tx,
            requester,
            "create",
            stored,
            resource,
            permit,
            prepared=prepared.audit if prepared is not None else None,
        )
        return WriteResult(stored, created=True)

    def update_in(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource: dict,
        *,
        if_match: int | None = None,
        entries: PreparedEntries | None = None,
        may_create: bool = False,
    ) -> WriteResult:
        """`entries`: the resource's `prepare`d index entries, if made before the transaction.

        No update as create for clients (CapabilityStatement `updateCreate` false): a PUT of
        an id that names no resource the requester may see answers the read's "not known"
        404, whether the id is free or held by a resource hidden from them, so that a write
        on a hidden id answers exactly as one on a missing id (R18, issue #18, finding 13).
        The server's own writes, and PUTs whose id the server chose (`may_create`: a
        conditional update that matched nothing, the ITI-41 mapping's entries), create.
        With an If-Match, both answer the same 412. Before any of it, a change the
        requester may make of no resource of this type (a practitioner's of a Consent or a
        RelatedPerson) is refused, whatever the id names (`Gate.refuse_change`, R18).
        """
        resource_type, resource_id = resource["resourceType"], versions.check_id(resource["id"])
        if self._label_list(resource, tx):
            entries = None
        current = tx.read(resource_type, resource_id)
        if not may_create:
            self.gate.refuse_change(requester, "update", resource_type, current)
        hidden = self.gate.hidden_deny(requester, current) if current is not None else None
        if if_match is not None and (
            current is None or hidden is not None or current.version != if_match
        ):
            if current is not None and hidden is not None:
                # Traced as without If-Match (R16), answered as for a missing id (R18).
                self.gate.refuse_hidden(requester, "update", current, hidden)
            raise precondition_failed(if_match, resource_type, resource_id)
        if current is None or hidden is not None:
            if current is not None and hidden is not None:
                raise self.gate.refuse_hidden(requester, "update", current, hidden)
            if not may_create and requester.kind is not ActorKind.INTERNAL:
                raise not_found(not_found_message(resource_type, resource_id))
            permit = self.gate.authorize_write(requester, "create", resource_type, resource, None)
            claims = self.ownership.before_write(
                tx, requester, "create", resource, resource_id, None
            )
            self._check_document(tx, requester, resource, resource_id, None)
            stored = versions.stamp(resource, resource_id, 1, self.clock())
            self._write(tx, stored, resource, "PUT", expected_version=0, entries=entries)
            self._claim(tx, claims, resource_id)
            self.gate.after_write(tx, requester, "create", stored, resource, permit)
            return WriteResult(stored, created=True)
        if current.deleted and not may_create and requester.kind is not ActorKind.INTERNAL:
            # A deleted id names nothing: a client's PUT of it answers as one of a free id
            # (404), never an update as create. Taken again, a deleted document's id gave
            # anyone who may deposit (another professional, a system) a document of their own
            # owning the deleted one's Binary, read as that new document (R14, R18).
            raise not_found(not_found_message(resource_type, resource_id))
        old = None if current.deleted else current.json()
        permit = self.gate.authorize_write(requester, "update", resource_type, resource, old)
        if old is not None:
            # What the current version names that this writer was never shown is kept
            # (`access.hidden_references`).
            kept = self.gate.as_written(requester, resource, old)
            if kept is not resource:
                resource, entries = kept, None
        claims = self.ownership.before_write(tx, requester, "update", resource, resource_id, old)
        self._check_document(tx, requester, resource, resource_id, old)
        stored = versions.stamp(resource, resource_id, current.version + 1, self.clock())
        self._write(tx, stored, resource, "PUT", expected_version=current.version, entries=entries)
        self._claim(tx, claims, resource_id)
        if resource_type == "DocumentReference" and list_labels.gained_labels(old, resource):
            self._label_lists_naming(tx, resource_id)
            self._label_messages_naming(tx, resource_id, resource)
        # The former content too: its records' facts change when the server's own write
        # (`fhir-server load`, INTERNAL, which R06's move refusal lets through) moves it.
        self.gate.after_write(tx, requester, "update", stored, resource, permit, previous=old)
        return WriteResult(self.gate.as_served(requester, stored), created=current.deleted)

    def delete_in(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource_type: str,
        resource_id: str,
        *,
        if_match: int | None = None,
    ) -> StoredResource | None:
        """Delete the current version. Deleting an id that does not exist, or one held by a
        resource hidden from the requester, changes nothing and answers the same: the hidden
        one answered 404 (403 naming the block for a blocked practitioner), which told that
        it exists (issue #18, finding 13). Its refusal is audited as its read's would be.
        A delete the requester may make of no resource of this type is refused first, for
        an id that names nothing too (`Gate.refuse_change`).

        With an If-Match (RFC 9110 13.1.1, as FHIR's update: http.html#concurrency), the
        current version must be that one: a missing, deleted or hidden resource fails it
        alike (412). It was ignored: a client that deleted "the version it had read" deleted
        whatever another had written since."""
        current = tx.read(resource_type, resource_id)
        self.gate.refuse_change(requester, "delete", resource_type, current)
        if if_match is not None and (current is None or current.deleted):
            raise precondition_failed(if_match, resource_type, resource_id)
        hidden = self.gate.hidden_deny(requester, current) if current is not None else None
        if (
            if_match is not None
            and current is not None
            and (hidden is not None or current.version != if_match)
        ):
            if hidden is not None:
                # Traced as without If-Match (R16), answered as for a missing id (R18).
                self.gate.refuse_hidden(requester, "delete", current, hidden)
            raise precondition_failed(if_match, resource_type, resource_id)
        if current is None or current.deleted:
            if current is not None:
                self.gate.authorize_write(requester, "delete", resource_type, None, current.json())
            return None
        if hidden is not None:
            self.gate.refuse_hidden(requester, "delete", current, hidden)
            return None
        old = current.json()
        permit = self.gate.authorize_write(requester, "delete", resource_type, None, old)
        stored = versions.tombstone(resource_type, resource_id, current.version + 1, self.clock())
        tx.write(VersionWrite(stored, "DELETE", current.version, None))
        self.gate.after_write(tx, requester, "delete", stored, old, permit)
        return stored

    def _write(
        self,
        tx: StoreTransaction,
        stored: StoredResource,
        resource: dict,
        method: str,
        *,
        expected_version: int,
        entries: PreparedEntries | None = None,
    ) -> None:
        index = extract(
            resource, self.registry, content=entries.entries() if entries is not None else None
        )
        tx.write(versions.indexed_write(stored, resource, method, expected_version, index))

    def _check_document(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource: dict,
        resource_id: str,
        old: dict | None,
    ) -> None:
        """The document model's check of a DocumentReference write (`documents.registry`),
        the one-record-per-INS check of a Patient's (`_check_ins`), and a SubmissionSet's or
        Folder's entryUUID kept through an update (`rules.xds_list_update_issues`)."""
        if resource.get("resourceType") == "DocumentReference":
            self.documents.check_write(tx, requester, resource, resource_id, old)
        elif resource.get("resourceType") == "Patient" and requester.kind is not ActorKind.INTERNAL:
            self._check_ins(tx, resource, resource_id)
        elif old is not None and is_xds_list(old) and requester.kind is not ActorKind.INTERNAL:
            issues = xds_list_update_issues(resource, old)
            if issues:
                raise FhirError(422, issues)

    def _check_ins(self, tx: StoreTransaction, patient: dict, patient_id: str) -> None:
        """R03, R15: an INS names one record. A Patient write giving an INS another Patient
        holds is refused (409), as `fhir-server record oppose` refuses an INS a record holds:
        the identity feed created a second Patient for an INS, or moved one Patient's INS onto
        another, and every door that resolves a patient by INS (a token's or a VIHF's INS,
        `patient.identifier`, ITI-41, ITI-65) then found two records. The server's own
        writes (its loaders, the lifecycle) are not checked here.

        The search is `tx`'s: it sees the Patients this transaction (a Bundle's earlier
        entries) wrote. Each INS is claimed first, under the key a conditional create by
        `identifier=<INS>` claims (`condition_key`): of two overlapping transactions giving
        one INS (on MongoDB, where each reads its own snapshot and would find no duplicate),
        one fails with a conflict (409), so the survivor's search cannot miss the other's
        Patient (`StoreTransaction.claim`)."""
        search = self._searcher(tx)
        for identifier in patient.get("identifier") or []:
            if not isinstance(identifier, dict) or identifier.get("system") not in INS_SYSTEMS:
                continue
            value = identifier.get("value")
            if not isinstance(value, str) or not value:
                continue
            test = TokenTest("identifier", identifier["system"], value)
            tx.claim(condition_key("Patient", test))
            page = search(SearchQuery("Patient", where=test, count=2))
            if any(row[1] != patient_id for row in page.rows):
                raise error(
                    409,
                    "duplicate",
                    "This INS is another Patient's: an INS names one record",
                    details_code="R03",
                    details_system=RULE_SYSTEM,
                )

    def _label_list(self, resource: dict, tx: StoreTransaction | None = None) -> bool:
        """A List takes the DMP labels all its entries share (`access.list_labels`), its
        entries read as `tx` sees the store; True when it changed."""
        if resource.get("resourceType") != "List":
            return False
        read = tx.read if tx is not None else self.store.read
        return list_labels.add_shared_labels(resource, following(read))

    def _label_lists_naming(self, tx: StoreTransaction, document_id: str) -> None:
        """The Lists naming a document that just gained a DMP label take, in the document's
        transaction, the labels all their entries now share (`access.list_labels`): labelled
        only when written, the SubmissionSet of a document masked after its deposit stayed
        shown, empty, to whom the document is hidden from (R14, R18). The server's own
        write, as a Binary's claim by its document is (`_claim`): the change is the
        document's, audited as such."""
        where = ReferenceTest("item", "DocumentReference", document_id)
        for current in self._current_matches(tx, "List", where):
            listing = current.json()
            if not self._label_list(listing, tx):
                continue
            stored = versions.stamp(listing, current.id, current.version + 1, self.clock())
            self._write(tx, stored, listing, "PUT", expected_version=current.version)

    def _current_matches(
        self, tx: StoreTransaction, resource_type: str, where: Node
    ) -> Iterator[StoredResource]:
        """The current, undeleted version of every `resource_type` matching `where`, as the
        transaction sees them, page after page (the server's own search: no access rules)."""
        cursor: str | None = None
        while True:
            page = tx.search(
                SearchQuery(resource_type, where=where, count=_NAMING_LISTS_PAGE, cursor=cursor),
                cursor_key=self.cursor_key,
                cursor_binding=INTERNAL_BINDING,
            )
            for row in page.rows:
                current = tx.read(resource_type, row.id)
                if current is not None and not current.deleted:
                    yield current
            cursor = page.next_cursor
            if not cursor:
                return

    def _label_messages_naming(
        self, tx: StoreTransaction, document_id: str, document: dict
    ) -> None:
        """The messages of the document's record naming it (an attachment, `about`,
        `basedOn`...), and the answers in their threads, take the DMP labels the document
        now carries, in its transaction, as a message sent about it then would have
        (`service.messaging`): labelled only when sent, a message about a document the patient
        masked since (or its author labelled INVISIBLE_PATIENT since) was still served, naming
        it, to the recipient it was now hidden from (R14, R18). Labels are only added (fail
        closed), as for Lists (`_label_lists_naming`); the server's own write."""
        patient = local_patient(document)
        labels = messaging.dmp_labels(document)
        if patient is None or not labels:
            return
        where = ReferenceTest("subject", "Patient", patient)
        messages = {m.id: m for m in self._current_matches(tx, "Communication", where)}
        naming = {
            message_id
            for message_id, stored in messages.items()
            if messaging.names_document(stored.json(), document_id)
        }
        grown = True
        while grown:  # the answers in a thread take the labels of the message they answer
            more = {
                message_id
                for message_id, stored in messages.items()
                if message_id not in naming and messaging.answers_any(stored.json(), naming)
            }
            grown = bool(more)
            naming |= more
        for message_id in sorted(naming):
            current = messages[message_id]
            message = current.json()
            if not messaging.add_labels(message, labels):
                continue
            stored = versions.stamp(message, current.id, current.version + 1, self.clock())
            self._write(tx, stored, message, "PUT", expected_version=current.version)

    def _searcher(self, tx: StoreTransaction | None = None) -> unique_ids.Search:
        """The server's own search (no access rules), as `tx` sees the store if given."""
        search = tx.search if tx is not None else self.store.search
        return lambda query: search(
            query, cursor_key=self.cursor_key, cursor_binding=INTERNAL_BINDING
        )

    def documents_with_unique_id(self, system: str | None, value: str) -> list[dict]:
        """Every DocumentReference whose uniqueId (masterIdentifier) is (system, value)."""
        return unique_ids.documents_with_unique_id(self._searcher(), system, value)

    def _claim(
        self, tx: StoreTransaction, binaries: list[StoredResource], document_id: str
    ) -> None:
        """Write each unowned Binary a document claims as owned by it (`service.ownership`),
        in the document's own transaction."""
        for binary in binaries:
            resource = self.ownership.claimed(binary, document_id)
            stored = versions.stamp(resource, binary.id, binary.version + 1, self.clock())
            self._write(tx, stored, resource, "PUT", expected_version=binary.version)

    @contextmanager
    def _transaction(
        self, *, replay: bool = False, rejudge: bool = False
    ) -> Iterator[StoreTransaction]:
        """The store's transaction, with a concurrent-write conflict answered as 409, or
        with `replay` (a conditional write that claimed its criteria) raised as `Replay`.
        `rejudge` (a caller run by `replayed` from its decisions): a write decided on record
        facts its transaction does not commit on (`RecordMoved`) is run again, judged anew;
        elsewhere it is refused as a conflict (409), which the client may try again."""
        try:
            with self.gate.audit.deferring_refusals(), self.store.transaction() as tx:
                yield tx
        except VersionConflict as exc:
            if replay or (rejudge and isinstance(exc, RecordMoved)):
                raise Replay() from exc
            raise error(409, "conflict", str(exc)) from exc


def condition_key(resource_type: str, where: object) -> str:
    """The key a transaction claims for criteria (`StoreTransaction.claim`): the resource
    type and the parsed criteria in one canonical spelling, so that a conditional create and
    the INS check of a Patient write (`FhirService._check_ins`) claim the same key for the
    same INS."""
    spelled = f"{resource_type}\n{where!r}".encode()
    return f"{resource_type}:{hashlib.sha256(spelled).hexdigest()}"


def precondition_failed(if_match: int, resource_type: str, resource_id: str | None) -> FhirError:
    """412 for an If-Match the resource is not at (or no resource matched: `resource_id`
    None), worded alike for a missing and a hidden resource (R18)."""
    if resource_id is None:
        return error(412, "conflict", f'If-Match W/"{if_match}": no {resource_type} matched')
    return error(
        412,
        "conflict",
        f'If-Match W/"{if_match}" is not the current version of {resource_type}/{resource_id}',
    )


def _version_of(body: bytes) -> int:
    """The version a stored body names (`meta.versionId`, which every stored body carries)."""
    try:
        return int(orjson.loads(body)["meta"]["versionId"])
    except (KeyError, TypeError, ValueError):
        return 0


def _without_id(resource: dict) -> dict:
    return {key: value for key, value in resource.items() if key != "id"}


def _require_selective(
    resource_type: str, params: Sequence[tuple[str, str]], parsed: ParsedSearch
) -> None:
    """Conditional criteria that select nothing are refused (400), never read as "every
    resource of the type": `PATCH DocumentReference?_count=1`, `DELETE Patient?_elements=id`,
    an If-None-Exist `identifier=` (an empty value is no criterion) or a transaction's
    conditional reference `Patient?_sort=x` held only result parameters, so the search
    matched every resource the requester may read, and the one they saw was patched,
    deleted or referenced (FHIR R4 http.html#cond-update: the server finds the resource
    "by performing a search", which an unselective one is not; fail closed)."""
    if isinstance(parsed.query.where, Everything):
        names = ", ".join(sorted({name for name, _ in params})) or "none"
        raise bad_request(
            f"the conditional criteria on {resource_type} hold no search parameter that "
            f"selects resources (given: {names}): result parameters such as _count, _sort "
            "or _elements, and parameters with an empty value, are not criteria"
        )


def _replace_count(query: SearchQuery, count: int) -> SearchQuery:
    return replace(query, count=count, sort=(), includes=(), cursor=None)


__all__ = ["Condition", "FhirService", "Replay", "SearchResult", "WriteResult"]

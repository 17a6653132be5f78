"""Batch and transaction Bundles (FHIR R4 http.html#transaction).

A transaction is processed in FHIR's order (DELETE, POST, PUT, then GET) inside one store
transaction: any failing entry rolls everything back and the error names the entry. Before
anything is written, `urn:uuid:` fullUrls of created resources are given server ids and
every reference to them (and conditional references such as `Patient?identifier=...`) is
rewritten in every resource of the Bundle.

An IHE MHD ITI-65 Provide Document Bundle is a transaction too; `fhir_server.mhd.iti65`
checks it around the ordinary processing (before ids are assigned, after references are
rewritten) and adds the supersede PUTs of replaced documents to the same transaction; its
errors carry XDS error codes (mhd/errors.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhir_server.access import list_labels
from fhir_server.access.requester import Requester
from fhir_server.documents import model as documents_model
from fhir_server.documents import publish as documents_publish
from fhir_server.documents import rules as document_rules
from fhir_server.documents.registry import in_transaction
from fhir_server.errors import FhirError, Issue, bad_request, error
from fhir_server.mhd.errors import with_xds_code
from fhir_server.mhd.iti65 import FOLDED, Iti65, is_provide_bundle
from fhir_server.resources.json_values import copy_json
from fhir_server.resources.patch import patch_body_of_resource
from fhir_server.search.extract import PreparedEntries, prepare
from fhir_server.service import ownership, patch, versions
from fhir_server.service.core import Condition, FhirService, Replay, WriteResult, require_type
from fhir_server.service.prepared import PreparedEvents, PreparedWrite
from fhir_server.store.base import StoredResource

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3, FOLDED: 2}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    resource: dict | None
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    # A transaction entry's index entries, extracted once it is final and valid, before the
    # transaction (see `service.prepared`): the write lock is not held while they are made.
    prepared: PreparedEntries | None = None
    # A transaction's conditional create: its criteria, re-checked in the write transaction.
    condition: Condition | None = None
    # A conditional DELETE (or PATCH): the one resource its criteria found, searched before
    # the write transaction (the search is audited, which cannot happen inside it); None:
    # nothing (a conditional PATCH that finds nothing is refused then, 404).
    delete_id: str | None = None
    # A PUT whose id the server chose (a conditional update that matched nothing, the ITI-41
    # mapping's entries): it may create. A client's own id never does (`update_in`).
    server_id: bool = False
    # The resource is in the normal form already (a transaction's first step).
    normalized: bool = False

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass(frozen=True)
class EntryResponse:
    status: str
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    resource: bytes | None = None  # stored JSON bytes, for GET entries and return=representation
    outcome: dict | None = None
    stored: StoredResource | None = None  # what a write entry stored (`publish`)


@dataclass(frozen=True)
class Target:
    resource_type: str
    resource_id: str | None
    params: list[tuple[str, str]] | None  # conditional URL criteria


def parse_target(url: str, where: str) -> Target:
    """`Type`, `Type/id`, `Type/id/_history/n`, `Type?criteria`, from an entry's request.url."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise bad_request(
            f"{where}.request.url '{url}' names no resource type", f"{where}.request.url"
        )
    resource_type = require_type(segments[0])
    params = parse_qsl(parts.query, keep_blank_values=True) if parts.query else None
    resource_id = segments[1] if len(segments) > 1 else None
    return Target(resource_type, resource_id, params)


def read_entries(bundle: dict, server_ids: bool = False) -> list[Entry]:
    """The Bundle's entries; `server_ids`: its PUTs name ids the server chose."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be an array", "Bundle.entry")
    result = []
    for index, raw in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise bad_request(
                f"{where}.request is required in a batch or transaction", f"{where}.request"
            )
        request = raw["request"]
        method = str(request.get("method", "")).upper()
        if method not in METHOD_ORDER:
            raise bad_request(
                f"{where}.request.method '{request.get('method')}' is not supported",
                f"{where}.request.method",
            )
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.request.url is required", f"{where}.request.url")
        resource = raw.get("resource")
        if method in ("POST", "PUT", "PATCH") and not isinstance(resource, dict):
            raise bad_request(f"{where}.resource is required for {method}", f"{where}.resource")
        result.append(
            Entry(
                index,
                method,
                url,
                resource,
                raw.get("fullUrl"),
                request.get("ifNoneExist"),
                request.get("ifMatch"),
                server_id=server_ids and method == "PUT",
            )
        )
    return result


# Where a transaction rewrites a fullUrl (FHIR R4 http.html#trules: references, elements of
# type uri, url, canonical, oid or uuid, and narrative links); never an identifier's value
# or a string, which may equal a fullUrl on purpose (an IHE entryUUID, a valueString).
_URI_KEYS = frozenset(
    {
        "reference",
        "url",
        "system",
        "source",
        "profile",
        "implicitRules",
        "valueUri",
        "valueUrl",
        "valueCanonical",
        "valueOid",
        "valueUuid",
    }
)
_NARRATIVE_LINK = re.compile(r'((?:href|src)\s*=\s*)(["\'])(.*?)\2')


def _walk_strings(value, replace: Callable[[str], str | None]):
    """Rewrite, in place, each reference or uri-typed string of a JSON value that `replace`
    maps, and the `href`/`src` links of its narrative (transaction reference rewriting)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key in _URI_KEYS:
                    new = replace(item)
                    if new is not None:
                        value[key] = new
                elif key == "div":
                    value[key] = _NARRATIVE_LINK.sub(
                        lambda link: (
                            link.group(1)
                            + link.group(2)
                            + (replace(link.group(3)) or link.group(3))
                            + link.group(2)
                        ),
                        item,
                    )
            elif isinstance(item, list) and key in _URI_KEYS:
                value[key] = [
                    (replace(element) or element) if isinstance(element, str) else element
                    for element in item
                ]
                _walk_strings(value[key], replace)
            else:
                _walk_strings(item, replace)
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                _walk_strings(item, replace)


def _conditional_references(value, found: set[str]) -> None:
    if isinstance(value, dict):
        reference = value.get("reference")
        if (
            isinstance(reference, str)
            and "?" in reference
            and not reference.startswith(("urn:", "http"))
        ):
            found.add(reference)
        for item in value.values():
            _conditional_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _conditional_references(item, found)


class BundleProcessor:
    def __init__(self, service: FhirService) -> None:
        self.service = service

    def process(
        self,
        requester: Requester,
        bundle: dict,
        also_audit: PreparedEvents | None = None,
        *,
        server_ids: bool = False,
    ) -> tuple[str, list[EntryResponse]]:
        """Answer a batch or transaction Bundle. `also_audit`: events to store in a
        transaction's own write transaction (an XDS deposit's event), so that they are
        committed with it or not at all. `server_ids`: the ids of the Bundle's PUT entries
        were chosen by the server (the ITI-41 mapping), so those PUTs may create."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise bad_request("POST to the base needs a Bundle", "resourceType")
        bundle_type = bundle.get("type")
        if bundle_type not in ("batch", "transaction"):
            raise bad_request(
                f"Bundle.type '{bundle_type}' is not batch or transaction", "Bundle.type"
            )
        if bundle_type == "batch":
            return "batch-response", [
                self._batch_entry(requester, entry) for entry in read_entries(bundle, server_ids)
            ]
        # The transaction in the normal form (each entry's resource, the Bundle's own profile
        # claims) before anything reads it: which checks run never depends on how a client
        # spells a canonical (http:// or https://profiles.ihe.net, issue #19 point 8).
        try:
            self.service.normal_form.apply(bundle)
        except FhirError as exc:
            raise (with_xds_code(exc) if is_provide_bundle(bundle) else exc) from None
        # A transaction that lost a race on a conditional create is run again from the Bundle
        # as received (`FhirService.replayed`): its next run finds what the other one wrote.
        if is_provide_bundle(bundle):
            try:
                return "transaction-response", self.service.replayed(
                    lambda: self._transaction(
                        requester,
                        read_entries(bundle, server_ids),
                        mhd=Iti65(self.service, requester),
                        also_audit=also_audit,
                    )
                )
            except FhirError as exc:
                raise with_xds_code(exc) from None
        return "transaction-response", self.service.replayed(
            lambda: self._transaction(
                requester, read_entries(bundle, server_ids), also_audit=also_audit
            )
        )

    # -- a single POST DocumentReference (ITI-105) ------------------------------------------

    def publish(
        self, requester: Requester, document: dict, if_none_exist: str | None = None
    ) -> WriteResult:
        """A POSTed DocumentReference, inline data or not, written as the transaction of
        `documents.publish` (the Binary, the document, the supersedes, atomically); its
        refusals named in the DocumentReference's terms."""
        bundle = documents_publish.as_transaction(document, if_none_exist)
        try:
            _, responses = self.process(requester, bundle)
        except FhirError as exc:
            raise documents_publish.as_single_write_error(exc, bundle) from None
        answer = responses[documents_publish.DOCUMENT_ENTRY]
        return WriteResult(answer.stored, created=answer.status.startswith("201"))

    # -- batch: each entry on its own ------------------------------------------------------

    def _batch_entry(self, requester: Requester, entry: Entry) -> EntryResponse:
        try:
            if entry.resource is not None:
                entry.resource = copy_json(entry.resource)
            if entry.method in ("GET", "HEAD"):
                return self._get(requester, entry)
            if (
                entry.method == "POST"
                and isinstance(entry.resource, dict)
                and entry.resource.get("resourceType") == "DocumentReference"
                and parse_target(entry.url, entry.where).resource_type == "DocumentReference"
            ):
                result = self.publish(requester, entry.resource, entry.if_none_exist)
                return _response("201 Created" if result.created else "200 OK", result.stored)
            if entry.method == "POST" and entry.if_none_exist:
                return self._conditional_create(requester, entry)
            if entry.method in ("DELETE", "PATCH"):
                self._find_delete_target(requester, entry)
            with self.service._transaction() as tx:
                return self._write(requester, tx, entry, {}, batch=True)
        except FhirError as exc:
            return EntryResponse(status=str(exc.status), outcome=exc.operation_outcome())

    # -- transaction: all or nothing -------------------------------------------------------

    def _transaction(
        self,
        requester: Requester,
        entries: list[Entry],
        mhd: Iti65 | None = None,
        also_audit: PreparedEvents | None = None,
    ) -> list[EntryResponse]:
        for entry in entries:
            if entry.resource is not None:
                # In the normal form (`process`): the ITI-65 checks read references and systems.
                entry.resource = copy_json(entry.resource)
                entry.normalized = True
        requested = list(entries)  # the entries answered, in the Bundle's order
        plan = None
        supersede: list[dict] = []
        if mhd is not None:
            plan, supersede = mhd.prepare(entries)
        else:
            self._prepare_documents(entries)
        entries = entries + [
            Entry(
                len(requested) + k, "PUT", f"DocumentReference/{old['id']}", old, None, None, None
            )
            for k, old in enumerate(supersede)
        ]
        # The documents any transaction creates supersede what they replace, in the same
        # write (`documents.registry`), whether the Bundle is an ITI-65 or not.
        more, superseded = self.service.documents.supersedes(requester, entries)
        entries = entries + [
            Entry(len(entries) + k, "PUT", f"DocumentReference/{old['id']}", old, None, None, None)
            for k, old in enumerate(more)
        ]
        references = self._resolve_identities(requester, entries)
        _skip_orphaned_binaries(entries)
        # A PATCH entry's resource is the patch (a Binary or a Parameters), not what is written.
        written = [
            e for e in entries if e.resource is not None and e.method not in (FOLDED, "PATCH")
        ]
        for entry in written:
            _walk_strings(entry.resource, references.get)
        self._label_lists(written)
        for entry in written:
            try:
                self.service.validate_for_write(
                    entry.resource, entry.resource.get("resourceType"), normalized=entry.normalized
                )
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
            entry.prepared = prepare(entry.resource, self.service.registry)
        if mhd is not None and plan is not None:
            mhd.check_rewritten(plan)
        deposited, owned = ownership.assign_in_bundle(entries, requester)
        for entry in owned:  # their securityContext was set: index them again
            entry.prepared = prepare(entry.resource, self.service.registry)
        responses: dict[int, EntryResponse] = {}
        ordered = sorted(
            (e for e in entries if e.method != FOLDED),
            # A conditional create that found its resource ("NOOP") keeps a POST's place.
            key=lambda e: (METHOD_ORDER.get(e.method, METHOD_ORDER["POST"]), e.index),
        )
        binaries = {
            e.resource["id"]: e.resource
            for e in entries
            if e.method in ("POST", "PUT")
            and isinstance(e.resource, dict)
            and e.resource.get("resourceType") == "Binary"
            and e.resource.get("id")
        }
        try:
            conditional = any(entry.condition is not None for entry in ordered)
            with (
                ownership.deposit(deposited),
                in_transaction(superseded, binaries),
                self.service._transaction(replay=conditional) as tx,
            ):
                for entry in ordered:
                    if entry.method in ("GET", "HEAD"):
                        continue
                    try:
                        responses[entry.index] = self._write(requester, tx, entry, references)
                    except FhirError as exc:
                        raise _at_entry(exc, entry) from None
                if also_audit is not None:
                    self.service.gate.audit.record_in(tx, also_audit)
        except FhirError as exc:
            if not any(
                issue.expression and issue.expression[0].startswith("Bundle.entry[")
                for issue in exc.issues
            ):
                raise _at_entry(exc, None) from None
            raise
        for entry in ordered:
            if entry.method in ("GET", "HEAD"):
                try:
                    responses[entry.index] = self._get(requester, entry)
                except FhirError as exc:
                    responses[entry.index] = EntryResponse(
                        status=str(exc.status), outcome=exc.operation_outcome()
                    )
        if plan is not None:
            # A folded PATCH is answered by the PUT that superseded its document.
            put_of = {e.resource["id"]: e.index for e in entries[len(requested) :] if e.resource}
            for index, old_id in plan.folded.items():
                done = responses[put_of[old_id]]
                responses[index] = EntryResponse(
                    done.status.replace("201 Created", "200 OK"),
                    done.location,
                    done.etag,
                    done.last_modified,
                )
        return [responses[entry.index] for entry in requested]

    @staticmethod
    def _prepare_documents(entries: list[Entry]) -> None:
        """A transaction that is no ITI-65 (`Iti65.prepare` does the same for one): the
        registry assigns the entryUUID of each document it creates, and no two documents of
        the message share an entryUUID or a uniqueId (`documents.rules.message_issues`)."""
        documents = []
        for entry in entries:
            resource = entry.resource
            if (
                not isinstance(resource, dict)
                or resource.get("resourceType") != "DocumentReference"
            ):
                continue
            if entry.method == "POST":
                documents_model.assign_entry_uuid(resource)
            if entry.method in ("POST", "PUT"):
                documents.append((entry.where, resource))
        issues = document_rules.message_issues(documents)
        if issues:
            raise FhirError(422, issues)

    def _label_lists(self, written: list[Entry]) -> None:
        """Lists of the Bundle take the labels all their entries share (`access.list_labels`),
        their entries found in the Bundle (a SubmissionSet's documents) or in the store."""
        in_bundle = {
            (e.resource.get("resourceType"), e.resource.get("id")): e.resource for e in written
        }

        def document_of(resource_type: str, resource_id: str) -> dict | None:
            found = in_bundle.get((resource_type, resource_id))
            if found is not None:
                return found
            stored = self.service.store.read(resource_type, resource_id)
            return None if stored is None or stored.deleted else stored.json()

        for entry in written:
            if entry.resource.get("resourceType") == "List":
                list_labels.add_shared_labels(entry.resource, document_of)

    def _resolve_identities(self, requester: Requester, entries: list[Entry]) -> dict[str, str]:
        """fullUrl -> final `Type/id`, and conditional reference -> `Type/id` (FHIR 3.1.0.11.2)."""
        references: dict[str, str] = {}
        seen_full_urls: set[str] = set()
        for entry in entries:
            if entry.full_url:
                if entry.full_url in seen_full_urls:
                    raise bad_request(
                        f"{entry.where}.fullUrl '{entry.full_url}' is used twice",
                        f"{entry.where}.fullUrl",
                    )
                seen_full_urls.add(entry.full_url)
            if entry.method == "POST":
                target = parse_target(entry.url, entry.where)
                entry.resource["resourceType"] = (
                    entry.resource.get("resourceType") or target.resource_type
                )
                if entry.if_none_exist:
                    entry.condition = self._condition(
                        requester, target.resource_type, entry.if_none_exist, entry
                    )
                    existing = self._matched(requester, entry.condition, entry)
                    if existing is not None:
                        entry.method = "NOOP"
                        entry.unwritten = entry.resource  # type: ignore[attr-defined]
                        entry.resource = None
                        entry.condition = None
                        self._map(references, entry, f"{existing.resource_type}/{existing.id}")
                        entry.existing = existing  # type: ignore[attr-defined]
                        continue
                new_id = versions.new_id()
                entry.resource["id"] = new_id
                self._map(references, entry, f"{target.resource_type}/{new_id}")
            elif entry.method == "PUT":
                target = parse_target(entry.url, entry.where)
                if target.params is not None:
                    condition = self._condition(
                        requester, target.resource_type, entry.url.split("?", 1)[1], entry
                    )
                    existing = self._matched(requester, condition, entry)
                    # Nothing matched: a create, with a server id as in
                    # `FhirService.conditional_update` (an id in the body could be one held by a
                    # resource hidden from the requester: issue #18, finding 13).
                    resource_id = existing.id if existing else versions.new_id()
                    entry.server_id = existing is None
                else:
                    resource_id = target.resource_id
                    if entry.resource.get("id") not in (None, resource_id):
                        raise bad_request(
                            f"{entry.where}.resource.id does not match request.url",
                            f"{entry.where}.resource.id",
                        )
                entry.resource["id"] = versions.check_id(resource_id, f"{entry.where}.request.url")
                entry.url = f"{target.resource_type}/{resource_id}"
                self._map(references, entry, entry.url)
            elif entry.method in ("DELETE", "PATCH"):
                try:
                    self._find_delete_target(requester, entry)
                except FhirError as exc:
                    raise _at_entry(exc, entry) from None
        conditional: set[str] = set()
        for entry in entries:
            if entry.resource is not None:
                _conditional_references(entry.resource, conditional)
        for reference in conditional:
            resource_type, query = reference.split("?", 1)
            matches = self.service.find(
                requester, require_type(resource_type), parse_qsl(query, keep_blank_values=True)
            )
            if len(matches) != 1:
                count = "no resource" if not matches else "more than one resource"
                raise error(
                    412, "processing", f"the conditional reference '{reference}' matches {count}"
                )
            references[reference] = f"{resource_type}/{matches[0].id}"
        return references

    @staticmethod
    def _map(references: dict[str, str], entry: Entry, final: str) -> None:
        if entry.full_url:
            references[entry.full_url] = final

    def _condition(
        self, requester: Requester, resource_type: str, query: str, entry: Entry
    ) -> Condition:
        try:
            return self.service.condition(
                requester, resource_type, parse_qsl(query, keep_blank_values=True)
            )
        except FhirError as exc:
            raise _at_entry(exc, entry) from None

    def _matched(
        self, requester: Requester, condition: Condition, entry: Entry
    ) -> StoredResource | None:
        """The one resource a condition finds, as the requester's audited search serves it."""
        matches = self.service.conditional_matches(requester, condition)
        if len(matches) > 1:
            raise _at_entry(
                error(412, "multiple-matches", "the condition matches more than one resource"),
                entry,
            )
        return matches[0] if matches else None

    def _find_delete_target(self, requester: Requester, entry: Entry) -> None:
        """A conditional DELETE's (or PATCH's) target, found before the write transaction."""
        target = parse_target(entry.url, entry.where)
        if target.params is None:
            return
        if entry.method == "PATCH":
            entry.delete_id = patch.MetadataUpdates(self.service).conditional_target(
                requester, target.resource_type, target.params
            )
            return
        condition = self.service.condition(requester, target.resource_type, target.params)
        matches = self.service.conditional_matches(requester, condition)
        if len(matches) > 1:
            raise error(
                412,
                "multiple-matches",
                "the conditional delete criteria match more than one resource",
            )
        entry.delete_id = matches[0].id if matches else None

    def _conditional_create(self, requester: Requester, entry: Entry) -> EntryResponse:
        """A batch entry's conditional create: the service's, atomic and audited."""
        target = parse_target(entry.url, entry.where)
        if entry.resource.get("resourceType") != target.resource_type:
            raise bad_request(
                "resource type does not match request.url", f"{entry.where}.resource.resourceType"
            )
        result = self.service.create(
            requester,
            target.resource_type,
            entry.resource,
            if_none_exist=parse_qsl(entry.if_none_exist or "", keep_blank_values=True),
        )
        return _response("201 Created" if result.created else "200 OK", result.stored)

    # -- one entry -------------------------------------------------------------------------

    def _write(
        self,
        requester: Requester,
        tx,
        entry: Entry,
        references: dict[str, str],
        *,
        batch: bool = False,
    ) -> EntryResponse:
        """One write entry in `tx`; `batch`: an entry of a batch, on its own."""
        service = self.service
        if entry.method == "NOOP":
            existing = entry.existing  # type: ignore[attr-defined]
            return _response("200 OK", existing)
        target = parse_target(entry.url, entry.where)
        if entry.method == "POST":
            if entry.resource.get("resourceType") != target.resource_type:
                raise bad_request(
                    "resource type does not match request.url",
                    f"{entry.where}.resource.resourceType",
                )
            if batch:  # a server id here (a conditional create was `_conditional_create`)
                service.validate_for_write(entry.resource, target.resource_type)
                result = service.create_in(tx, requester, entry.resource)
            else:
                if entry.condition is not None and service.recheck(tx, requester, entry.condition):
                    raise Replay()  # a concurrent create came first: run the Bundle again
                result = service.create_in(
                    tx,
                    requester,
                    entry.resource,
                    resource_id=entry.resource["id"],
                    prepared=PreparedWrite(entry.prepared, None) if entry.prepared else None,
                )
            return _response("201 Created", result.stored)
        if entry.method == "PUT":
            if target.params is not None and batch:
                raise bad_request(
                    "conditional update in a batch is not supported; use a transaction",
                    f"{entry.where}.request.url",
                )
            if target.resource_id is None:
                raise bad_request("PUT needs Type/id in request.url", f"{entry.where}.request.url")
            if batch:
                service.validate_for_write(entry.resource, target.resource_type)
            if_match = (
                versions.parse_etag(entry.if_match, f"{entry.where}.request.ifMatch")
                if entry.if_match
                else None
            )
            result = service.update_in(
                tx,
                requester,
                entry.resource,
                if_match=if_match,
                entries=entry.prepared,
                may_create=entry.server_id,
            )
            return _response("201 Created" if result.created else "200 OK", result.stored)
        if entry.method == "DELETE":
            if target.params is not None:
                if entry.delete_id is not None:
                    service.delete_in(tx, requester, target.resource_type, entry.delete_id)
            elif target.resource_id:
                service.delete_in(tx, requester, target.resource_type, target.resource_id)
            else:
                raise bad_request(
                    "DELETE needs Type/id or Type?criteria", f"{entry.where}.request.url"
                )
            return EntryResponse(status="204 No Content")
        if entry.method == "PATCH":
            return self._patch(requester, tx, entry, target)
        raise error(405, "not-supported", f"{entry.method} is not supported in a Bundle entry")

    def _patch(self, requester: Requester, tx, entry: Entry, target: Target) -> EntryResponse:
        """A PATCH entry (`service.patch`): its target by id, or found by its criteria."""
        resource_id = entry.delete_id if target.params is not None else target.resource_id
        if resource_id is None:
            raise bad_request("PATCH needs Type/id or Type?criteria", f"{entry.where}.request.url")
        body = patch_body_of_resource(entry.resource, f"{entry.where}.resource")
        if_match = (
            versions.parse_etag(entry.if_match, f"{entry.where}.request.ifMatch")
            if entry.if_match
            else None
        )
        updates = patch.MetadataUpdates(self.service)
        updates.check_type(target.resource_type)
        result = updates.patch_in(tx, requester, resource_id, body, if_match=if_match)
        return _response("200 OK", result.stored)

    def _get(self, requester: Requester, entry: Entry) -> EntryResponse:
        target = parse_target(entry.url, entry.where)
        segments = [s for s in urlsplit(entry.url).path.strip("/").split("/") if s]
        if target.resource_id and len(segments) == 2:
            stored = self.service.read(requester, target.resource_type, target.resource_id)
            return _response("200 OK", stored, include_body=True)
        if len(segments) == 4 and segments[2] == "_history":
            if not (segments[3].isascii() and segments[3].isdigit()):
                raise bad_request(f"'{segments[3]}' is not a version number", "request.url")
            stored = self.service.vread(
                requester, target.resource_type, target.resource_id, int(segments[3])
            )
            return _response("200 OK", stored, include_body=True)
        if len(segments) == 1:
            return self._search(requester, target)
        raise error(
            400,
            "not-supported",
            "GET entries support read, vread and type-level search",
            f"{entry.where}.request.url",
        )

    def _search(self, requester: Requester, target: Target) -> EntryResponse:
        """A type-level search entry: its searchset (first page) as the entry's resource."""
        params = [(k, v) for k, v in (target.params or []) if k not in ("_format", "_pretty")]
        result = self.service.search(requester, target.resource_type, params)
        searchset: dict = {"resourceType": "Bundle", "type": "searchset"}
        if result.total is not None:
            searchset["total"] = result.total
        searchset["entry"] = [
            {
                "fullUrl": f"{resource_type}/{resource_id}",
                "resource": orjson.Fragment(body),
                "search": {"mode": mode},
            }
            for mode, rows in (("match", result.matches), ("include", result.included))
            for resource_type, resource_id, body in rows
        ]
        return EntryResponse(status="200 OK", resource=orjson.dumps(searchset))


def _skip_orphaned_binaries(entries: list[Entry]) -> None:
    """A Binary created only as the content of documents whose conditional create found one
    already held (NOOP; a conditional ITI-105 that matched) would belong to nothing: it is
    not written, and answered as that document (the content the registry already holds)."""
    found: dict[str, StoredResource] = {}
    named: set[str] = set()
    for entry in entries:
        unwritten = getattr(entry, "unwritten", None)
        if entry.method == "NOOP" and isinstance(unwritten, dict):
            for _, attachment in documents_model.attachments(unwritten):
                found.setdefault(str(attachment.get("url")), entry.existing)  # type: ignore[attr-defined]
        elif isinstance(entry.resource, dict) and entry.method in ("POST", "PUT"):
            for _, attachment in documents_model.attachments(entry.resource):
                named.add(str(attachment.get("url")))
    for entry in entries:
        if (
            entry.method == "POST"
            and isinstance(entry.resource, dict)
            and entry.resource.get("resourceType") == "Binary"
            and entry.full_url in found
            and entry.full_url not in named
        ):
            entry.method, entry.resource = "NOOP", None
            entry.existing = found[entry.full_url]  # type: ignore[attr-defined]


def _response(status: str, stored: StoredResource, include_body: bool = False) -> EntryResponse:
    return EntryResponse(
        status=status,
        location=f"{stored.resource_type}/{stored.id}/_history/{stored.version}",
        etag=versions.etag(stored.version),
        last_modified=versions.instant(stored.last_updated),
        resource=stored.body if include_body else None,
        stored=stored,
    )


def _at_entry(exc: FhirError, entry: Entry | None) -> FhirError:
    """The same error, with each issue saying which Bundle entry failed."""
    where = entry.where if entry else "Bundle"
    issues = []
    for issue in exc.issues:
        diagnostics = (
            issue.diagnostics
            if issue.diagnostics.startswith(where)
            else f"{where}: {issue.diagnostics}"
        )
        expression = (
            issue.expression
            if entry is None or any(e.startswith("Bundle.entry[") for e in issue.expression)
            else (where, *issue.expression)
        )
        issues.append(
            Issue(
                issue.severity,
                issue.code,
                diagnostics,
                tuple(expression),
                issue.details_code,
                issue.details_system,
            )
        )
    return FhirError(exc.status, issues, exc.headers)

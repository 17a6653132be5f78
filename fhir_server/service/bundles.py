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
from dataclasses import dataclass, replace
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
from fhir_server.resources.model import validate_resource
from fhir_server.search.extract import PreparedEntries, prepare
from fhir_server.service import audit_event_writes, deposit, ownership, versions
from fhir_server.service.core import (
    Condition,
    FhirService,
    SearchResult,
    WriteResult,
    require_type,
)
from fhir_server.service.dispatch import Dispatcher, Within
from fhir_server.service.interaction import Answer, Interaction, Kind, from_entry
from fhir_server.service.prepared import PreparedEvents
from fhir_server.store.base import StoredResource

# Parameters that shape a REST search response, not the search (`rest.fhir_api`).
_RESULT_PARAMS = ("_format", "_pretty")

# Entries in one batch or transaction Bundle. Each is a request of its own (a read costs
# about 1.5 ms with its access decision and audit, a write about 9 ms); unbounded, a body under
# the size limit (32 MB by default) held hundreds of thousands. A DMP submission is a few
# entries per document.
MAX_BUNDLE_ENTRIES = 1000
# Entries of one Bundle that are not a plain read (`Type/id`, `Type/id/_history/vid`): a
# search, a history, an operation, each answering up to a page of resources. 500 searches of a
# 200-document record in a 50 KB batch were 3.8 s and a 192 MB answer.
MAX_BUNDLE_SEARCHES = 10
# Conditional entries of one Bundle: a create with `ifNoneExist`, an update, patch or delete
# whose url holds search criteria. Each is a search of the store (answering one resource, so
# not counted with the searches above): 900 conditional deletes in a 123 KB batch took
# 1.9 s, and each may hold up to MAX_TESTS value tests over the whole record.
MAX_BUNDLE_CONDITIONALS = 100
# Read to the url's last character (`\Z`): `$` also matched before a final newline.
_PLAIN_READ = re.compile(
    r"^/?[A-Z][A-Za-z]*/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z"
)

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3, FOLDED: 2}
# The methods a client's entry may name (bundle.html, http-verb). `FOLDED` is the server's
# own mark (an ITI-65 PATCH folded into a supersede): named by a client, its entry was
# skipped, the transaction's other entries committed, and the answer was a 500.
_HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


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
    # A conditional create whose criteria found a resource: the entry is answered with it
    # and writes nothing; `unwritten` keeps the resource it would have created.
    found: StoredResource | None = None
    unwritten: dict | None = None
    # A conditional DELETE (or PATCH): the one resource its criteria found, searched before
    # the write transaction (the search is audited, which cannot happen inside it); None:
    # nothing (a conditional PATCH that finds nothing is refused then, 404).
    target_id: str | None = None
    # A conditional UPDATE or DELETE: its criteria and what they found (`target_id`, or the
    # resolved PUT's id), searched again in the write transaction (`Within.matched`).
    matched: tuple[Condition, str | None] | None = None
    # A PUT whose id the server chose (a conditional update that matched nothing, the ITI-41
    # mapping's entries): it may create. A client's own id never does (`update_in`).
    server_id: bool = False
    # The resource is in the normal form already (a transaction's first step).
    normalized: bool = False

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def body(self) -> dict:
        """The resource a write entry writes; an entry without one is refused, naming it."""
        if self.resource is None:
            raise bad_request(f"{self.where}.resource is required", f"{self.where}.resource")
        return self.resource

    def interaction(self) -> Interaction:
        """The request this entry makes, as it stands (its url and resource as the
        transaction rewrote them), the value the REST face would build for it alone."""
        request = {"method": self.method, "url": self.url}
        if self.if_match is not None:
            request["ifMatch"] = self.if_match
        if self.if_none_exist:
            request["ifNoneExist"] = self.if_none_exist
        return from_entry(request, self.resource, self.where)


@dataclass(frozen=True)
class EntryResponse:
    status: str
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    resource: bytes | None = None  # stored JSON bytes, for GET entries and return=representation
    outcome: dict | None = None
    stored: StoredResource | None = None  # what a write entry stored (`publish`)


def _check_shape(bundle: dict) -> None:
    """The Bundle's own structure, before anything reads it (its profile claims, whether it is
    an ITI-65 Provide Document Bundle, its entries' fullUrls): `meta` an object whose
    `profile` is a list of strings, `entry` a list of objects, each `request` an object and
    each `fullUrl` a string. Any of them of another JSON type was a 500 in a transaction
    (FHIR R4 json.html: a wrong JSON type is an invalid resource, a 400)."""
    meta = bundle.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise bad_request("Bundle.meta is an object (Meta)", "Bundle.meta")
        profiles = meta.get("profile")
        if profiles is not None and not (
            isinstance(profiles, list) and all(isinstance(p, str) for p in profiles)
        ):
            raise bad_request(
                "Bundle.meta.profile is a list of canonical URLs (strings)", "Bundle.meta.profile"
            )
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        raise bad_request("Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > MAX_BUNDLE_ENTRIES:
        raise _too_costly(
            f"the Bundle has {len(entries)} entries; the limit is {MAX_BUNDLE_ENTRIES} entries"
            " (MAX_BUNDLE_ENTRIES)",
            "Bundle.entry",
        )
    searches = conditionals = 0
    for index, raw in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise bad_request(
                f"{where}.request is required in a batch or transaction", f"{where}.request"
            )
        full_url = raw.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            raise bad_request(f"{where}.fullUrl is a uri (a string)", f"{where}.fullUrl")
        if _is_search(raw["request"]):
            searches += 1
            if searches > MAX_BUNDLE_SEARCHES:
                raise _too_costly(
                    f"{where} is the Bundle's {searches}th search (a GET that is not a read of"
                    f" Type/id); the limit is {MAX_BUNDLE_SEARCHES} searches in one Bundle"
                    " (MAX_BUNDLE_SEARCHES)",
                    f"{where}.request.url",
                )
        if _is_conditional(raw["request"]):
            conditionals += 1
            if conditionals > MAX_BUNDLE_CONDITIONALS:
                raise _too_costly(
                    f"{where} is the Bundle's {conditionals}th conditional entry (ifNoneExist, or"
                    f" search criteria in its url); the limit is {MAX_BUNDLE_CONDITIONALS}"
                    " conditional entries in one Bundle (MAX_BUNDLE_CONDITIONALS)",
                    f"{where}.request",
                )


def _is_conditional(request: dict) -> bool:
    """A write entry that searches: a create with `ifNoneExist`, or a PUT, PATCH or DELETE
    whose url holds a `?` (what is not a string counts, fail closed)."""
    method = request.get("method")
    if isinstance(method, str) and method.upper() in ("GET", "HEAD"):
        return False
    if request.get("ifNoneExist") is not None:
        return True
    url = request.get("url")
    return not isinstance(url, str) or "?" in url


def _is_search(request: dict) -> bool:
    """A GET or HEAD entry that is anything but a plain read (`Type/id`, `Type/id/_history/
    vid`): a search, a history, an operation, each of which may answer a page of resources.
    What is not understood counts as a search (fail closed)."""
    method = request.get("method")
    if not isinstance(method, str) or method.upper() not in ("GET", "HEAD"):
        return False
    url = request.get("url")
    return not (isinstance(url, str) and _PLAIN_READ.match(url) is not None)


def _too_costly(diagnostics: str, where: str) -> FhirError:
    return FhirError(400, [Issue("error", "too-costly", diagnostics, (where,))])


def _structure_error(bundle: dict) -> FhirError | None:
    """The structural problems of the transaction's entry resources (`validate_resource`),
    each issue saying which entry, as `_at_entry` words them; None when there are none."""
    issues: list[Issue] = []
    for index, raw in enumerate(bundle.get("entry") or []):
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if resource is None:
            continue
        where = f"Bundle.entry[{index}]"
        for issue in validate_resource(resource):
            issues.append(
                Issue(
                    issue.severity,
                    issue.code,
                    f"{where}: {issue.diagnostics}",
                    (where, *issue.expression),
                    issue.details_code,
                    issue.details_system,
                )
            )
    return FhirError(400, issues) if issues else None


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
        if method not in _HTTP_VERBS:
            raise bad_request(
                f"{where}.request.method '{request.get('method')}' is not supported",
                f"{where}.request.method",
            )
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.request.url is required", f"{where}.request.url")
        if "ifMatch" in request:
            # Read now, whatever its value (`""`, 0, a list): a precondition the server
            # cannot read is a 400, never taken for none nor a 500 (http.html#concurrency).
            versions.parse_etag(request["ifMatch"], f"{where}.request.ifMatch")
        if "ifNoneExist" in request and not (
            isinstance(request["ifNoneExist"], str)
            and parse_qsl(
                request["ifNoneExist"].lstrip("?").split("?", 1)[-1], keep_blank_values=True
            )
        ):
            # As the If-None-Exist header: criteria or a 400. Given as "", a number, a list
            # or an object, it was taken for none and the resource created whatever existed.
            raise bad_request(
                f"{where}.request.ifNoneExist holds no search criteria",
                f"{where}.request.ifNoneExist",
            )
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


def _conditional_references(value, entry: Entry, found: dict[str, Entry]) -> None:
    """Each conditional reference (`Patient?identifier=...`) of `value`, with the first
    entry that holds it, in document order: an error resolving it names that entry."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if (
            isinstance(reference, str)
            and "?" in reference
            and not reference.startswith(("urn:", "http"))
        ):
            found.setdefault(reference, entry)
        for item in value.values():
            _conditional_references(item, entry, found)
    elif isinstance(value, list):
        for item in value:
            _conditional_references(item, entry, found)


class BundleProcessor:
    def __init__(self, service: FhirService) -> None:
        self.service = service
        # Every entry is performed by the one dispatcher, the REST face's too.
        self.dispatcher = Dispatcher(service, self.publish)

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
        _check_shape(bundle)
        if bundle_type == "batch":
            # The batch's own elements in the normal form (its entries each on its own, as a
            # request alone): a TRE_A07 label on the Bundle labels none of them and is
            # refused, not ignored while they are written unmasked (R14).
            self.service.normal_form.apply({k: v for k, v in bundle.items() if k != "entry"})
            return "batch-response", [
                self._batch_entry(requester, entry) for entry in read_entries(bundle, server_ids)
            ]
        try:
            return self._process_transaction(requester, bundle, also_audit, server_ids)
        except (TypeError, AttributeError, KeyError) as exc:
            # A reader of the transaction (the normal form, the ITI-65 checks, the labels of
            # a List...) met an element of a JSON type it does not expect (`status: {}`,
            # `subject: "x"`, `identifier: 5`): the entries' resources are then judged by
            # the structure validator, and a resource it refuses is a 400 naming the element
            # (FHIR R4 json.html), where it was a 500. Nothing was written: the write
            # transaction, if it had begun, is rolled back by the exception.
            refused = _structure_error(bundle)
            if refused is None:
                raise
            raise (with_xds_code(refused) if is_provide_bundle(bundle) else refused) from exc

    def _process_transaction(
        self,
        requester: Requester,
        bundle: dict,
        also_audit: PreparedEvents | None,
        server_ids: bool,
    ) -> tuple[str, list[EntryResponse]]:
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
        assert answer.stored is not None  # the document entry is a write: it stored a version
        return WriteResult(answer.stored, created=answer.status.startswith("201"))

    # -- batch: each entry on its own ------------------------------------------------------

    def _batch_entry(self, requester: Requester, entry: Entry) -> EntryResponse:
        """A batch entry: the same request alone (http.html#transaction: "as if they were
        separate interactions"), its refusal its response."""
        try:
            if entry.resource is not None:
                entry.resource = copy_json(entry.resource)
            return self._alone(requester, entry.interaction())
        except FhirError as exc:
            return EntryResponse(status=str(exc.status), outcome=exc.operation_outcome())

    def _alone(self, requester: Requester, interaction: Interaction) -> EntryResponse:
        if interaction.kind is Kind.SEARCH:
            # A Bundle entry's search is of one type, its result shaping left to the server.
            interaction = _without_result_params(interaction)
        answer = self.dispatcher.perform(requester, interaction)
        return _response(answer, include_body=interaction.kind in (Kind.READ, Kind.VREAD))

    # -- transaction: all or nothing -------------------------------------------------------

    def _transaction(
        self,
        requester: Requester,
        entries: list[Entry],
        mhd: Iti65 | None = None,
        also_audit: PreparedEvents | None = None,
    ) -> list[EntryResponse]:
        for entry in entries:
            _check_url_type(entry)
            if entry.resource is not None:
                # In the normal form (`process`): the ITI-65 checks read references and systems.
                entry.resource = copy_json(entry.resource)
                entry.normalized = True
        requested = list(entries)  # the entries answered, in the Bundle's order
        # The overlaps of plain ids, before the documents' own checks (a document PUT twice
        # shares its entryUUID with itself): the same refusal whatever the entries write.
        _refuse_overlaps(entries, len(entries), {}, resolved=False)
        plan = None
        supersede: list[dict] = []
        if mhd is not None:
            plan, supersede = mhd.prepare(entries)
        else:
            self._prepare_documents(entries)
        entries = entries + [_supersede(len(requested) + k, old) for k, old in enumerate(supersede)]
        # The documents any transaction creates supersede what they replace, in the same
        # write (`documents.registry`), whether the Bundle is an ITI-65 or not.
        more, superseded = self.service.documents.supersedes(requester, entries)
        entries = entries + [_supersede(len(entries) + k, old) for k, old in enumerate(more)]
        references = self._resolve_identities(requester, entries)
        _refuse_overlaps(entries, len(requested), plan.folded if plan is not None else {})
        _skip_orphaned_binaries(entries)
        # A PATCH entry's resource is the patch (a Binary or a Parameters), not what is written.
        written = [
            e for e in entries if e.resource is not None and e.method not in (FOLDED, "PATCH")
        ]
        for entry in written:
            _walk_strings(entry.body, references.get)
        self._label_lists(written)
        for entry in written:
            try:
                self.service.validate_for_write(entry.body, None, normalized=entry.normalized)
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
            entry.prepared = prepare(entry.body, self.service.registry)
        if mhd is not None and plan is not None:
            mhd.check_rewritten(plan)
        deposited, owned = ownership.assign_in_bundle(entries, requester)
        for entry in owned:  # their securityContext was set: index them again
            entry.prepared = prepare(entry.resource, self.service.registry)
        responses: dict[int, EntryResponse] = {}
        ordered = sorted(
            (e for e in entries if e.method != FOLDED),
            key=lambda e: (METHOD_ORDER[e.method], e.index),
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
                deposit.deposit(deposited, deposit.bundle_documents(entries)),
                in_transaction(superseded, binaries),
                self.service._transaction(replay=conditional, rejudge=True) as tx,
            ):
                for entry in ordered:
                    if entry.method in ("GET", "HEAD"):
                        continue
                    try:
                        responses[entry.index] = self._write(requester, tx, entry)
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
                    responses[entry.index] = self._alone(requester, entry.interaction())
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
                entry.method == "POST"
                and resource is not None
                and documents_model.is_xds_list(resource)
            ):
                documents_model.assign_entry_uuid(resource)  # as `FhirService._create`
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
        in_bundle = {(e.body.get("resourceType"), e.body.get("id")): e.body for e in written}

        def document_of(resource_type: str, resource_id: str) -> dict | None:
            found = in_bundle.get((resource_type, resource_id))
            if found is not None:
                return found
            stored = self.service.store.read(resource_type, resource_id)
            return None if stored is None or stored.deleted else stored.json()

        for entry in written:
            if entry.body.get("resourceType") == "List":
                list_labels.add_shared_labels(entry.body, document_of)

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
            if entry.method not in ("POST", "PUT", "DELETE", "PATCH"):
                continue
            try:
                self._resolve(requester, entry, references)
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
        conditional: dict[str, Entry] = {}
        for entry in entries:
            if entry.resource is not None:
                _conditional_references(entry.resource, entry, conditional)
        for reference, entry in conditional.items():
            try:
                references[reference] = self._resolve_conditional(requester, reference)
            except FhirError as exc:
                raise _at_entry(exc, entry) from None
        return references

    def _resolve_conditional(self, requester: Requester, reference: str) -> str:
        """The `Type/id` of the one resource a conditional reference finds (FHIR 3.1.0.11.2:
        none or several fail the transaction)."""
        resource_type, query = reference.split("?", 1)
        matches = self.service.find(
            requester,
            require_type(resource_type),
            parse_qsl(query, keep_blank_values=True),
            audited=True,
        )
        if len(matches) != 1:
            count = "no resource" if not matches else "more than one resource"
            raise error(
                412, "processing", f"the conditional reference '{reference}' matches {count}"
            )
        return f"{resource_type}/{matches[0].id}"

    def _resolve(self, requester: Requester, entry: Entry, references: dict[str, str]) -> None:
        """What the transaction settles of a write entry before its write transaction: a
        created resource's id, the resource a condition finds (searched, and audited, as
        the same request alone searches it: `Dispatcher.target`)."""
        interaction = entry.interaction()
        resource_type = require_type(interaction.resource_type or "")
        if interaction.kind is Kind.CREATE:
            assert entry.resource is not None
            if interaction.if_none_exist is not None and not audit_event_writes.refused_create(
                requester, resource_type
            ):
                entry.condition = self.service.condition(
                    requester, resource_type, list(interaction.if_none_exist)
                )
                existing = self.service.one_match(
                    self.service.conditional_matches(requester, entry.condition), "create"
                )
                if existing is not None:
                    entry.found, entry.unwritten, entry.resource = existing, entry.resource, None
                    entry.condition = None
                    self._map(references, entry, f"{existing.resource_type}/{existing.id}")
                    return
            new_id = versions.new_id()
            entry.resource["id"] = new_id
            self._map(references, entry, f"{resource_type}/{new_id}")
        elif interaction.kind is Kind.UPDATE:
            assert entry.resource is not None
            if interaction.conditional:
                # Nothing matched: a create, with a server id as in
                # `FhirService.conditional_update` (an id in the body could be one held by a
                # resource hidden from the requester: issue #18, finding 13).
                found, condition = self.dispatcher.target(requester, interaction)
                entry.matched = (condition, found) if condition is not None else None
                resource_id = found or versions.new_id()
                entry.server_id = found is None
                if found is not None and entry.resource.get("id") not in (None, found):
                    raise bad_request(
                        f"the resource id '{entry.resource['id']}' does not match the resource "
                        f"found ({found})",
                        f"{entry.where}.resource.id",
                    )
                entry.resource["id"] = resource_id
            else:
                resource_id = versions.check_id(
                    interaction.resource_id or "", f"{entry.where}.request.url"
                )
                if entry.resource.get("id") != resource_id:
                    raise bad_request(
                        f"{entry.where}.resource.id '{entry.resource.get('id')}' is not the "
                        f"id of request.url ('{resource_id}'): an update carries the URL's id",
                        f"{entry.where}.resource.id",
                    )
            entry.url = f"{resource_type}/{resource_id}"
            self._map(references, entry, entry.url)
        elif interaction.conditional:  # DELETE, PATCH
            entry.target_id, condition = self.dispatcher.target(requester, interaction)
            entry.matched = (condition, entry.target_id) if condition is not None else None

    @staticmethod
    def _map(references: dict[str, str], entry: Entry, final: str) -> None:
        if entry.full_url:
            references[entry.full_url] = final

    def _write(self, requester: Requester, tx, entry: Entry) -> EntryResponse:
        """A write entry in the transaction's `tx`, performed by the one dispatcher."""
        within = Within(
            tx,
            target_id=entry.target_id,
            condition=entry.condition,
            matched=entry.matched,
            found=entry.found,
            prepared=entry.prepared,
            may_create=entry.server_id,
        )
        if entry.found is not None:
            # The conditional create found its resource: nothing to write (`Within.found`).
            interaction = Interaction(Kind.CREATE, entry.found.resource_type, where=entry.where)
        else:
            interaction = entry.interaction()
        return _response(self.dispatcher.perform(requester, interaction, within))


def _written_identity(entry: Entry, folded: dict[int, str], resolved: bool) -> str | None:
    """The `Type/id` a transaction's entry writes (PUT, PATCH, DELETE, an ITI-65 PATCH folded
    into a supersede), its condition resolved (`_resolve`); None for a create (a new id of the
    server's, or an existing resource found, which is not written), a read, a conditional
    entry not resolved yet (`resolved` False) or one that found nothing to write."""
    if entry.method == FOLDED:
        old_id = folded.get(entry.index)
        return f"DocumentReference/{old_id}" if old_id is not None else None
    if entry.method not in ("PUT", "PATCH", "DELETE"):
        return None
    try:
        interaction = entry.interaction()
    except FhirError:
        return None  # refused where it is read, naming the entry
    if interaction.resource_type is None:
        return None
    if not interaction.conditional:
        if interaction.resource_id is None:
            return None
        return f"{interaction.resource_type}/{interaction.resource_id}"
    if not resolved or entry.target_id is None:
        # A conditional PUT is resolved into a plain one (`_resolve` sets its url).
        return None
    return f"{interaction.resource_type}/{entry.target_id}"


def _refuse_overlaps(
    entries: list[Entry], requested: int, folded: dict[int, str], resolved: bool = True
) -> None:
    """FHIR R4 http.html#transaction: "If any resource identities (including resolved
    identities from conditional update/delete) overlap in steps 1-3, then the transaction
    SHALL fail." Two entries writing one resource were performed in turn (two PUTs of a List
    gave two versions, the first never served as an answer of its own): a 400 naming both.

    `entries[:requested]` are the client's; those after it, the server's own supersede PUTs
    of replaced documents. A client entry writing a document the transaction supersedes is
    an overlap too; the server's own never overlap each other (a document is superseded
    once, `documents.registry.supersedes`), nor the ITI-65 PATCH folded into one of them,
    which is that supersede (`Iti65._replacements`)."""
    first: dict[str, Entry] = {}
    folded_into = {f"DocumentReference/{old_id}" for old_id in folded.values()}
    for entry in entries:
        identity = _written_identity(entry, folded, resolved)
        if identity is None:
            continue
        own = entry.index >= requested
        if own and identity in folded_into:
            continue  # the supersede a folded PATCH asked for: that PATCH's own write
        earlier = first.get(identity)
        if earlier is None:
            first[identity] = entry
            continue
        if own:
            if earlier.index >= requested:
                continue  # the server's own supersedes: one per document
            raise bad_request(
                f"{earlier.where} writes {identity}, which a document of this transaction "
                "replaces: the transaction supersedes it itself (http.html#transaction: "
                "entries of a transaction may not write the same resource)",
                f"{earlier.where}.request.url",
            )
        raise FhirError(
            400,
            [
                Issue(
                    "error",
                    "invalid",
                    f"{earlier.where} and {entry.where} both write {identity}: the entries of"
                    " a transaction may not write the same resource (http.html#transaction)",
                    (f"{earlier.where}.request.url", f"{entry.where}.request.url"),
                )
            ],
        )


def _skip_orphaned_binaries(entries: list[Entry]) -> None:
    """A Binary created only as the content of documents whose conditional create found one
    already held (`Entry.found`; a conditional ITI-105 that matched) would belong to
    nothing: it is not written, and answered as that document (the content the registry
    already holds)."""
    found: dict[str, StoredResource] = {}
    named: set[str] = set()
    for entry in entries:
        if entry.found is not None and isinstance(entry.unwritten, dict):
            for _, attachment in documents_model.attachments(entry.unwritten):
                found.setdefault(str(attachment.get("url")), entry.found)
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
            entry.unwritten, entry.resource = entry.resource, None
            entry.found = found[entry.full_url]


def _check_url_type(entry: Entry) -> None:
    """A transaction's POST or PUT carries a resource of the type its url names, as the same
    request alone must (400, FHIR R4 http.html#update): a PUT to `List/<id>` carrying a
    DocumentReference was performed as an update of that DocumentReference and its fullUrl
    mapped to `List/<id>`. Checked before anything else reads the entry (its documents'
    supersedes, ids, the access gate), so the refusal is the same whatever the id names."""
    if entry.method not in ("POST", "PUT") or not isinstance(entry.resource, dict):
        return
    url = urlsplit(entry.url)
    if url.scheme or url.netloc:
        # An absolute url names no type by its first segment (a POST's, which names where the
        # resource is created, is not read; a PUT's is refused where it is routed).
        return
    segments = [s for s in url.path.strip("/").split("/") if s]
    resource_type = entry.resource.get("resourceType")
    if segments and resource_type != segments[0]:
        where = f"{entry.where}.resource.resourceType"
        raise bad_request(
            f"{where} '{resource_type}' is not the type request.url names ('{segments[0]}')",
            where,
        )


def _response(answer: Answer, include_body: bool = False) -> EntryResponse:
    """A Bundle entry's response: what the same request alone answers, its status line,
    Location, ETag and Last-Modified (http.html#transaction-response); a read's or search's
    resource as the entry's resource."""
    stored = answer.stored
    if answer.search is not None:
        return EntryResponse(status=answer.status_line, resource=_searchset(answer.search))
    if stored is None:
        return EntryResponse(status=answer.status_line)
    if stored.deleted:  # a delete: the tombstone's version
        return EntryResponse(status=answer.status_line, etag=versions.etag(stored.version))
    return EntryResponse(
        status=answer.status_line,
        location=f"{stored.resource_type}/{stored.id}/_history/{stored.version}",
        etag=versions.etag(stored.version),
        last_modified=versions.instant(stored.last_updated),
        resource=stored.body if include_body else None,
        stored=stored,
    )


def _searchset(result: SearchResult) -> bytes:
    """A search entry's searchset (its first page) as the entry's resource."""
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
        for resource_type, resource_id, body, *_ in rows
    ]
    return orjson.dumps(searchset)


def _without_result_params(interaction: Interaction) -> Interaction:
    """A search entry's criteria without the parameters that shape a REST response."""
    criteria = tuple((k, v) for k, v in interaction.criteria or () if k not in _RESULT_PARAMS)
    return replace(interaction, criteria=criteria)


def _supersede(index: int, old: dict) -> Entry:
    """The server's own PUT superseding a replaced document, on the version it was read at
    (`old`, read before the write transaction opened): a change committed since (a label a
    practitioner added, INVISIBLE_PATIENT) fails it (412) rather than being written over by
    the version read before it, the label dropped by a depositor who never asked for it (R14)."""
    version = (old.get("meta") or {}).get("versionId")
    if_match = f'W/"{version}"' if version else None
    return Entry(index, "PUT", f"DocumentReference/{old['id']}", old, None, None, if_match)


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

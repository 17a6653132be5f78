"""ITI-41, ITI-18 and ITI-43 over the service gate (no Flask: the face in http.py calls these).

Every read and write of what a requester deposits or consults goes through
`runtime.service` / `runtime.bundles` with the VIHF requester, so the access rules, consent
and audit apply exactly as on the FHIR face. The only lookups made as INTERNAL are the
registry's own bookkeeping, and none of them changes what the requester is told:
- the patient INS -> Patient id resolution of a deposit (the write itself is then judged
  with the requester: R03 record status, R09 blocks);
- the uniqueId / entryUUID checks of a deposit (XDSNonIdenticalHash, RPLC targets);
- in ITI-43, locating the DocumentReference of a uniqueId, before the Binary is read as the
  requester: a document the requester may not see is answered exactly like an unknown one;
  and its current labels read again once the Binary was, for the retrieve's event;
- the patient CX written in ITI-18 answers, for documents the requester was already given.

Decisions:
- A uniqueId already stored with the same content is accepted again (IHE allows a document
  to be registered twice with identical hash and size); other content -> XDSNonIdenticalHash.
- The replaced document of an RPLC / XFRM_RPLC is made `superseded` by a PUT in the same
  transaction Bundle, written as the requester: the gate decides whether they may (the
  author, or a professional allowed on the record, per the policy's update rules).
- ITI-18 searches that designate no patient (GetDocuments by uuid ...) get the patient the
  VIHF names (resource-id attribute) when it names one; otherwise the gate's R04 refusal is
  answered with XDSStoredQueryMissingParam (the patient is the missing parameter).
- The VIHF's patient is the request's patient (XUA; `fhir_server.access.binding`, enforced
  by the gate). With a resource-id: an ITI-18 designating another patient
  ($XDSDocumentEntryPatientId ...) is refused, LocalPolicyRestrictionError; entries asked
  for by uuid or uniqueId that belong to another patient are answered like unknown ones
  (the query is confined to the VIHF's patient); an ITI-43 of another patient's document
  gets XDSDocumentUniqueIdError, worded as for a missing document; an ITI-41 for another
  patient is refused, LocalPolicyRestrictionError, before anything about that patient's
  documents is looked at. Each refusal is audited in the designated patient's trail.
  Without a resource-id the request is not bound (as before): the query must name its
  patient (R04), a retrieval or a deposit is judged on the document's record alone.
"""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import pybase64
from lxml import etree

from fhir_server.access import binding
from fhir_server.access.ownership import binary_id_of
from fhir_server.access.requester import INTERNAL, Requester
from fhir_server.audit.balp import security_labels_of, security_labels_of_all
from fhir_server.documents.registry import UNKNOWN, relation_error_code, relation_problem
from fhir_server.errors import FhirError
from fhir_server.search.parameters import MAX_VALUES, split_escaped
from fhir_server.search.query import TokenTest
from fhir_server.service.prepared import PreparedEvents
from fhir_server.terminology import INS_OIDS, SYSTEM_RFC3986
from ihe_xds.codes import is_oid
from ihe_xds.ebrim import Association, DocumentEntry, Folder, SubmissionSet, parse_submission
from ihe_xds.entry_versions import versions_answered
from ihe_xds.errors import (
    LOCAL_POLICY_RESTRICTION_ERROR,
    XDS_DOCUMENT_UNIQUE_ID_ERROR,
    XDS_NON_IDENTICAL_HASH,
    XDS_REGISTRY_METADATA_ERROR,
    XDS_RESULT_NOT_SINGLE_PATIENT,
    XDS_TOO_MANY_RESULTS,
    XDS_UNKNOWN_REPOSITORY_ID,
    RegistryError,
    deposit_error,
    query_error,
    registry_error,
)
from ihe_xds.mapping import (
    associations_from_fhir,
    document_reference_to_ebrim,
    entry_uuid_of,
    is_folder_list,
    list_to_ebrim,
    list_to_folder,
    submission_to_fhir,
    unique_id_from,
)
from ihe_xds.mtom import Attachment
from ihe_xds.responses import RegistryObject, RetrievedDocument, parse_retrieve_request
from ihe_xds.stored_query import (
    KINDS,
    Answer,
    FhirSearch,
    QueryPlan,
    StoredQuery,
    StoredQueryError,
    parse_stored_query,
    plan,
)
from ihe_xds.validation import DMP_PROFILE, external_targets, validate_submission
from ihe_xds.vocabulary import DOCUMENT_RELATIONSHIPS, REPLACING_RELATIONSHIPS, STATUS_DEPRECATED

log = logging.getLogger(__name__)

_PATIENT_PARAMS = ("patient", "patient.identifier", "subject", "subject.identifier")
_SEARCH_PAGE = 200


class XdsRuntime(Protocol):
    """What the transactions use of fhir_server.rest.app.Runtime."""

    service: Any  # FhirService
    bundles: Any  # BundleProcessor
    settings: Any  # Settings: xds_repository_id, xds_max_results


# --------------------------------------------------------------------------- helpers


def unique_id_token(unique_id: str) -> str:
    """The `identifier` search token of an XDS uniqueId (DocumentReference.masterIdentifier)."""
    return f"{SYSTEM_RFC3986}|urn:oid:{unique_id}" if is_oid(unique_id) else unique_id


def _entry_uuid_token(entry_uuid: str) -> str:
    return f"{SYSTEM_RFC3986}|{entry_uuid}"


def _subject_id(resource: dict) -> str | None:
    reference = (resource.get("subject") or {}).get("reference") or ""
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def _is_error(errors: Iterable[RegistryError]) -> bool:
    return any(e.is_error for e in errors)


def patient_cx(runtime: XdsRuntime, patient_id: str | None, cache: dict[str, str]) -> str:
    """The CX (`NIR^^^&OID&ISO^NH`) of a stored Patient, read as INTERNAL (registry work)."""
    if not patient_id:
        return ""
    if patient_id not in cache:
        cx = ""
        try:
            identifiers = (
                runtime.service.read(INTERNAL, "Patient", patient_id).json().get("identifier")
            )
        except FhirError:
            identifiers = None
        if identifiers:
            for identifier in identifiers:
                system = identifier.get("system") or ""
                oid = system.removeprefix("urn:oid:")
                if oid in INS_OIDS and identifier.get("value"):
                    cx = f"{identifier['value']}^^^&{oid}&ISO^NH"
                    break
        cache[patient_id] = cx
    return cache[patient_id]


# --------------------------------------------------------------------------- ITI-41


@dataclass
class SubmissionOutcome:
    """What an ITI-41 did: errors (empty or warnings only = Success) and what was stored."""

    errors: list[RegistryError] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    submission_set_unique_id: str | None = None
    document_unique_ids: list[str] = field(default_factory=list)
    stored: bool = False
    # True when the deposit's own audit event was stored with it (`iti41`'s `audit`).
    audited: bool = False
    # uniqueId -> the DocumentEntry's labels (its confidentiality codes), for its audit event.
    document_labels: dict[str, tuple] = field(default_factory=dict)


def iti41(
    runtime: XdsRuntime,
    requester: Requester,
    body: etree._Element,
    attachments: dict[str, Attachment],
    audit: Callable[[SubmissionOutcome], PreparedEvents | None] | None = None,
) -> SubmissionOutcome:
    """Provide and Register Document Set-b: validate, map to FHIR, store atomically.

    `audit(outcome)`: the events of a successful deposit, stored in the deposit's own
    transaction (`outcome.audited` then says so); a deposit that fails is the caller's to audit.
    Raises NotASubmission / MtomError (SOAP Fault) when the body is no submission or an
    xop:Include names no MIME part; everything else is a RegistryError in the outcome.
    """
    submission = parse_submission(body, attachments)
    outcome = SubmissionOutcome()
    if submission.submission_set is not None:
        outcome.submission_set_unique_id = submission.submission_set.unique_id
    outcome.document_unique_ids = [e.unique_id for e in submission.entries if e.unique_id]
    outcome.errors = validate_submission(submission, DMP_PROFILE)
    if _is_error(outcome.errors):
        return outcome
    service = runtime.service

    submission_patients: set[str] = set()
    unresolved: list[str] = []

    def resolve_patient(oid: str, value: str) -> str | None:
        # The gate's resolution, kept while no Patient is written (PATIENTS_EPOCH).
        ids = service.gate.patients_matching(TokenTest("identifier", f"urn:oid:{oid}", value))
        submission_patients.update(ids[:1] if len(ids) == 1 else ())
        if len(ids) != 1:
            unresolved.append(value)
        return ids[0] if len(ids) == 1 else None

    def find_entry(entry_uuid: str) -> list:
        # A stored entry the depositor may not read is answered as an unknown one (R18): the
        # answer (XDSReplaceFailed, XDSPatientIdDoesNotMatch, the supersede's refusal) would
        # otherwise tell that it exists, and the refusal of its supersede named its id. One
        # hidden from them is traced as the refused change of it (R16), as the FHIR doors
        # trace it (`DocumentRules.trace_hidden_target`): the relation left no trace.
        readable = []
        for stored in service.find(
            INTERNAL, "DocumentReference", [("identifier", _entry_uuid_token(entry_uuid))]
        ):
            if service.gate.may_read(requester, stored.resource_type, stored.id):
                readable.append(stored)
            elif (deny := service.gate.hidden_deny(requester, stored)) is not None:
                service.gate.refuse_hidden(requester, "update", stored, deny)
        return readable

    def resolve_document(entry_uuid: str) -> str | None:
        # The literal reference lets every read leave the relation out for whom may not read
        # its target (`access.hidden_references`); one is made to a document hidden from the
        # depositor only within the submission's own record, never into another record.
        for stored in service.find(
            INTERNAL, "DocumentReference", [("identifier", _entry_uuid_token(entry_uuid))]
        ):
            if _subject_id(stored.json()) in submission_patients or service.gate.may_read(
                requester, stored.resource_type, stored.id
            ):
                return stored.id
        return None

    mapped = submission_to_fhir(
        submission,
        submission.documents,
        repository_unique_id=runtime.settings.xds_repository_id,
        resolve_patient=resolve_patient,
        resolve_document=resolve_document,
    )
    # The binding first: a patientId naming no Patient is refused as another patient's is,
    # or a bound requester told a registered INS (LocalPolicyRestrictionError) from an
    # unknown one (XDSUnknownPatientId).
    outcome.patient_ids = sorted(mapped.patient_ids)
    refused = _outside_binding(service, requester, outcome.patient_ids, bool(unresolved))
    if refused:
        outcome.errors += refused
        return outcome
    if mapped.errors or mapped.bundle is None:
        outcome.errors += mapped.errors
        return outcome
    store_errors = _check_unique_ids(service, submission, mapped)
    supersede, replace_errors = _replacements(submission, mapped, find_entry)
    store_errors += replace_errors
    if store_errors:
        outcome.errors += store_errors
        return outcome
    bundle = mapped.bundle
    for old in supersede:
        # On the version read: a change committed since (a label added) fails the deposit
        # rather than being written over by the version read before it (R14).
        request = {"method": "PUT", "url": f"DocumentReference/{old['id']}"}
        version = (old.get("meta") or {}).get("versionId")
        if version:
            request["ifMatch"] = f'W/"{version}"'
        bundle["entry"].append({"resource": old, "request": request})
    outcome.document_labels = {
        unique_id: security_labels_of(entry["resource"])
        for entry in bundle["entry"]
        if entry.get("resource", {}).get("resourceType") == "DocumentReference"
        and (unique_id := unique_id_from(entry["resource"].get("masterIdentifier"))) is not None
    }
    events = audit(outcome) if audit is not None else None
    # With its own event, the deposit is audited by that one event (IHE ATNA, one per
    # transaction), not by one event per resource written.
    audited_once = (
        runtime.service.gate.audit.summarizing_writes() if events is not None else nullcontext()
    )
    try:
        with audited_once:
            runtime.bundles.process(requester, bundle, also_audit=events, server_ids=True)
    except FhirError as exc:
        outcome.errors.append(deposit_error(exc))
        return outcome
    outcome.stored = True
    outcome.audited = events is not None
    return outcome


def _outside_binding(
    service, requester: Requester, patient_ids: list[str], unknown: bool = False
) -> list[RegistryError]:
    """The refusal of a deposit for another patient than the VIHF's (audited), if it is one;
    `unknown`: a patientId of the submission names no Patient, refused alike (patient
    binding: the same answer whether the patient exists or not), unless the credentials' own
    patient is just as unknown (then answered as without a binding, XDSUnknownPatientId).

    Checked before the uniqueId and replacement checks, which look at the stored documents
    of the submission's patient: a requester bound to another record learns nothing of them.
    """
    gate = service.gate
    bound, bound_id = gate.bound_patient(requester)
    if not bound or not (
        binding.outside(bound_id, patient_ids) or (unknown and bound_id is not None)
    ):
        return []
    gate.audit.refusal(requester, "create", patient_ids, binding.BINDING_RULE)
    return [
        registry_error(
            LOCAL_POLICY_RESTRICTION_ERROR, binding.MSG_OTHER_PATIENT, "SubmissionSet patientId"
        )
    ]


def _check_unique_ids(service, submission, mapped) -> list[RegistryError]:
    """A uniqueId names one content (XDSNonIdenticalHash), and an entryUUID the submission
    gives names no object the registry already holds (ITI TF-3 4.1.12.1: entryUUIDs are
    unique in the registry; issue #19, point 1)."""
    errors = []
    given = [(e.id, "DocumentEntry") for e in submission.entries]
    given += [(s.id, "SubmissionSet") for s in submission.submission_sets]
    for object_id, kind in given:
        if not object_id.startswith("urn:uuid:"):
            continue
        for resource_type in ("DocumentReference", "List"):
            if service.find(
                INTERNAL, resource_type, [("identifier", _entry_uuid_token(object_id))], 1
            ):
                errors.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"entryUUID {object_id} is already in the registry",
                        f"{kind} {object_id}",
                    )
                )
                break
    for entry in submission.entries:
        if not entry.unique_id:
            continue
        content = submission.documents.get(entry.id, b"")
        digest = base64.b64encode(submission.sha1(entry.id)).decode("ascii")
        system, _, value = unique_id_token(entry.unique_id).rpartition("|")
        # Every document whose masterIdentifier is this uniqueId (`service.unique_ids`).
        for stored in service.documents_with_unique_id(system or None, value):
            attachment = ((stored.get("content") or [{}])[0]).get("attachment") or {}
            if attachment.get("hash") != digest or attachment.get("size") != len(content):
                errors.append(
                    registry_error(
                        XDS_NON_IDENTICAL_HASH,
                        f"uniqueId {entry.unique_id} is already stored with other content",
                        f"DocumentEntry {entry.id} uniqueId",
                    )
                )
                break
    return errors


def _replacements(submission, mapped, find_entry) -> tuple[list[dict], list[RegistryError]]:
    """The stored DocumentReferences an RPLC / XFRM_RPLC supersedes, or why it cannot.

    Every document relationship (RPLC, APND, XFRM, XFRM_RPLC, signs) names a stored entry
    (else XDSReplaceFailed for a replacement, XDSRegistryMetadataError for the others: no
    dangling association) that is Approved (else XDSReplaceFailed, or
    XDSRegistryDeprecatedDocumentError for an addendum or transform of a Deprecated entry, as
    the NIST toolkit expects; issue #19, point 2), within one patient's record (ITI TF-3
    4.2.2: the original and the new entry share their patientId): another patient's target
    is XDSPatientIdDoesNotMatch. An entry the depositor may not read is answered as an unknown
    one (`find_entry`, R18).
    """
    targets = external_targets(submission)
    related = {t for kind in DOCUMENT_RELATIONSHIPS for t in targets.get(kind, [])}
    if not related:
        return [], []
    replaced = {t for kind in REPLACING_RELATIONSHIPS for t in targets.get(kind, [])}
    subject_of_source = {}
    docs = {d["id"]: d for d in mapped.document_references}
    for association in submission.associations:
        if association.type in DOCUMENT_RELATIONSHIPS and association.target in related:
            doc = docs.get(mapped.resource_ids.get(association.source, ""))
            subject_of_source[association.target] = _subject_id(doc) if doc else None
    superseded, errors = [], []
    for target in sorted(related):
        where = f"Association targetObject {target}"
        found = [s for s in find_entry(target) if s.resource_type == "DocumentReference"]
        if not found:
            code = relation_error_code(UNKNOWN, replaces=target in replaced)
            errors.append(registry_error(code, f"{UNKNOWN}: {target}", where))
            continue
        old = found[0].json()
        # The rule every door applies (`documents.registry.relation_problem`), with its codes.
        source_patient = subject_of_source.get(target)
        problem = relation_problem(old, source_patient, replaces=target in replaced)
        if problem is not None:
            code = relation_error_code(problem, replaces=target in replaced)
            errors.append(registry_error(code, f"{problem.format(id=target)}", where))
            continue
        if target in replaced:
            new = copy.deepcopy(old)
            new["status"] = "superseded"
            superseded.append(new)
    return superseded, errors


# --------------------------------------------------------------------------- ITI-18


@dataclass
class QueryOutcome:
    objects: list[RegistryObject] = field(default_factory=list)
    errors: list[RegistryError] = field(default_factory=list)
    return_type: str = "ObjectRef"
    query_id: str | None = None
    patient_ids: list[str] = field(default_factory=list)


class _TooMany(Exception):
    pass


def _searches_in_chunks(
    searches: Sequence[FhirSearch],
) -> Iterator[tuple[FhirSearch, list[tuple[str, str]]]]:
    """Each search of a plan with its parameters, an OR-list longer than a FHIR search takes
    (`MAX_VALUES`) run as several searches of at most that many values each, whose answers
    the query merges by id. A by-id query names up to 100 objects a slot
    (`stored_query.parameters`), each entryUUID searched under two identifier systems
    (`metadata_versions.identifier_systems`): a GetDocuments of 51 to 100 entryUUIDs was
    refused with a FHIR search's message ("search parameter 'identifier' has 200 values").
    A search with two such lists is left whole, for the search to refuse."""
    for search in searches:
        params = list(search.params)
        long = [
            index
            for index, (_, value) in enumerate(params)
            if len(split_escaped(value, ",")) > MAX_VALUES
        ]
        if len(long) != 1:
            yield search, params
            continue
        name, value = params[long[0]]
        values = split_escaped(value, ",")
        for start in range(0, len(values), MAX_VALUES):
            chunk = ",".join(values[start : start + MAX_VALUES])
            yield search, [*params[: long[0]], (name, chunk), *params[long[0] + 1 :]]


def _run_search(
    runtime: XdsRuntime,
    requester: Requester,
    resource_type: str,
    params: list[tuple[str, str]],
    limit: int,
    searched: set[str] | None = None,
) -> tuple[list[dict], list[dict]]:
    """(matches, included) of one search, following `next` cursors; _TooMany over `limit`.
    `searched`: gets the patient whose record the search designated (its event's)."""
    params = [*params, ("_count", str(min(limit + 1, _SEARCH_PAGE)))]
    matches: list[dict] = []
    included: list[dict] = []
    cursor = None
    while True:
        result = runtime.service.search(requester, resource_type, params, cursor=cursor)
        if searched is not None and cursor is None:
            _, patient_id = runtime.service.gate.facts.designated_patient(
                resource_type, result.query.where
            )
            if patient_id:
                searched.add(patient_id)
        # Parsed once for the gate's search audit and this answer (`SearchResult.resources`).
        page_matches, page_included = result.resources()
        matches += page_matches
        included += page_included
        if len(matches) > limit:
            raise _TooMany
        if not result.next_cursor:
            return matches, included
        cursor = result.next_cursor


def iti18(runtime: XdsRuntime, requester: Requester, body: etree._Element) -> QueryOutcome:
    """Registry Stored Query through service.search (consent applies, searches are audited).

    Raises NotAQuery (SOAP Fault) when the body holds no AdhocQuery at all.
    """
    try:
        query = parse_stored_query(body)
    except StoredQueryError as exc:
        return QueryOutcome(errors=list(exc.errors))
    outcome = QueryOutcome(return_type=query.return_type, query_id=query.query_id)
    outcome.errors = list(query.warnings)
    query_plan = plan(query)
    limit = runtime.settings.xds_max_results
    vihf_patient = requester.extra.get("patient_identifier")
    docs: dict[str, dict] = {}
    included_docs: dict[str, dict] = {}
    lists: dict[str, dict] = {}
    # The records the query's searches designated: its event names them whatever it answers
    # (IHE ITI TF-2a 3.18.5.1.2, the Patient when known). Named from the objects answered
    # only, the event of a query finding nothing, or answering associations only, was in no
    # patient's trail (R16).
    searched: set[str] = set()
    try:
        for search, params in _searches_in_chunks(query_plan.searches):
            if vihf_patient and not any(name in _PATIENT_PARAMS for name, _ in params):
                params.append(("patient.identifier", vihf_patient))
            matches, included = _run_search(
                runtime, requester, search.resource_type, params, limit, searched
            )
            for resource in matches:
                if resource.get("resourceType") == "DocumentReference":
                    docs[resource["id"]] = resource
                elif resource.get("resourceType") == "List":
                    lists[resource["id"]] = resource
            for resource in included:
                if resource.get("resourceType") == "DocumentReference":
                    included_docs[resource["id"]] = resource
                elif resource.get("resourceType") == "List":
                    lists[resource["id"]] = resource
    except _TooMany:
        outcome.errors.append(
            registry_error(
                XDS_TOO_MANY_RESULTS,
                f"the query matches more than {limit} objects; narrow it",
                query.name,
            )
        )
        return outcome
    except FhirError as exc:
        outcome.errors.append(query_error(exc))
        return outcome
    deprecated: set[str] = set()
    if KINDS[query.query_id].metadata_versions:
        # Each metadata version is a DocumentEntry of its own (ihe_xds.entry_versions).
        docs, deprecated = versions_answered(runtime.service, requester, query, docs)
    objects, patients = _answer(runtime, query, query_plan, docs, included_docs, lists, deprecated)
    if query.return_type == "LeafClass" and len(patients - {None}) > 1:
        outcome.errors.append(
            registry_error(
                XDS_RESULT_NOT_SINGLE_PATIENT,
                "the LeafClass answer would span several patients; ask for ObjectRef",
                query.name,
            )
        )
        return outcome
    outcome.objects = objects
    outcome.patient_ids = sorted(p for p in patients | searched if p)
    return outcome


def _answer(
    runtime: XdsRuntime,
    query: StoredQuery,
    query_plan: QueryPlan,
    docs: dict[str, dict],
    included_docs: dict[str, dict],
    lists: dict[str, dict],
    deprecated: Set[str] = frozenset(),
) -> tuple[list[RegistryObject], set[str | None]]:
    """The ebRIM objects of the answer, and the patients they belong to; `deprecated`: the
    entryUUIDs of earlier metadata versions, Deprecated whatever their content says."""
    kind = KINDS[query.query_id]
    returns = query_plan.returns
    submission_sets = [
        r
        for r in lists.values()
        if any(c.get("code") == "submissionset" for c in (r.get("code") or {}).get("coding") or [])
    ]
    # Folders (MHD folder Lists): answered as Folders where the query returns them; their
    # HasMember associations are a document's as a SubmissionSet's are (GetAssociations).
    folders = [r for r in lists.values() if is_folder_list(r)]
    if kind.members_included:
        docs, included_docs = {**docs, **included_docs}, {}
    if "DocumentEntry" in returns:
        docs = {k: v for k, v in docs.items() if query_plan.keep(v)}
    elif "SubmissionSet" in returns and not docs:
        submission_sets = [r for r in submission_sets if query_plan.keep(r)]
    all_docs = [*docs.values(), *included_docs.values()]
    associations: list[Association] = []
    if "Association" in returns:
        kinds = set(query_plan.association_types)
        associations = [
            a
            for a in associations_from_fhir([*submission_sets, *folders], all_docs)
            if a.type in kinds
        ]
    answer = kind.select(
        query, Answer(list(docs.values()), all_docs, submission_sets, associations, folders)
    )
    cache: dict[str, str] = {}
    repository = runtime.settings.xds_repository_id
    objects: list[RegistryObject] = []
    patients: set[str | None] = set()
    # ObjectRef answers carry ids only: the full mapping is for LeafClass.
    leaf = query.return_type == "LeafClass"
    if "SubmissionSet" in returns:
        for resource in answer.submission_sets:
            patients.add(_subject_id(resource))
            objects.append(
                list_to_ebrim(
                    resource, patient_cx=patient_cx(runtime, _subject_id(resource), cache) or None
                )
                if leaf
                else SubmissionSet(id=entry_uuid_of(resource))
            )
    if "Folder" in returns:
        for resource in answer.folders:
            patients.add(_subject_id(resource))
            objects.append(
                list_to_folder(
                    resource, patient_cx=patient_cx(runtime, _subject_id(resource), cache) or None
                )
                if leaf
                else Folder(id=entry_uuid_of(resource))
            )
    if "DocumentEntry" in returns:
        for resource in answer.documents:
            patients.add(_subject_id(resource))
            if not leaf:
                objects.append(DocumentEntry(id=entry_uuid_of(resource)))
                continue
            entry = document_reference_to_ebrim(
                resource,
                patient_cx=patient_cx(runtime, _subject_id(resource), cache),
                repository_unique_id=repository,
            )
            if entry.id in deprecated:
                entry.status = STATUS_DEPRECATED
            objects.append(entry)
    objects += answer.associations
    return objects, patients


# --------------------------------------------------------------------------- ITI-43


@dataclass
class RetrieveOutcome:
    documents: list[RetrievedDocument] = field(default_factory=list)
    errors: list[RegistryError] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    document_unique_ids: list[str] = field(default_factory=list)
    # uniqueId -> the retrieved document's labels, for the ITI-43 event (as ITI-41's).
    document_labels: dict[str, tuple] = field(default_factory=dict)


def iti43(runtime: XdsRuntime, requester: Requester, body: etree._Element) -> RetrieveOutcome:
    """Retrieve Document Set: each document's Binary read as the requester (the gate decides).

    A document the requester may not see gets the same XDSDocumentUniqueIdError, worded the
    same, as one that does not exist (R18). Raises NotARetrieve (SOAP Fault) for another body.
    """
    requests, errors = parse_retrieve_request(body)
    outcome = RetrieveOutcome(errors=list(errors))
    repository = runtime.settings.xds_repository_id
    patients: set[str] = set()
    for item in requests:
        where = f"DocumentUniqueId {item.document_unique_id}"
        if item.repository_unique_id != repository:
            outcome.errors.append(
                registry_error(
                    XDS_UNKNOWN_REPOSITORY_ID,
                    f"repository {item.repository_unique_id} is not this repository ({repository})",
                    where,
                )
            )
            continue
        found = _retrieve_one(runtime, requester, item.document_unique_id)
        if found is None:
            outcome.errors.append(
                registry_error(
                    XDS_DOCUMENT_UNIQUE_ID_ERROR,
                    f"document {item.document_unique_id} is not available from repository {repository}",
                    where,
                )
            )
            continue
        mime_type, data, patient_id, labels = found
        outcome.documents.append(
            RetrievedDocument(
                repository, item.document_unique_id, mime_type, data, item.home_community_id
            )
        )
        outcome.document_unique_ids.append(item.document_unique_id)
        outcome.document_labels[item.document_unique_id] = labels
        if patient_id:
            patients.add(patient_id)
    outcome.patient_ids = sorted(patients)
    return outcome


def _retrieve_one(
    runtime: XdsRuntime, requester: Requester, unique_id: str
) -> tuple[str, bytes, str | None, tuple] | None:
    """(mime type, bytes, patient id, the document's labels) of a document the requester may
    read, its Binary read as them (judged as the document owning it); None otherwise."""
    service = runtime.service
    system, _, value = unique_id_token(unique_id).rpartition("|")
    # Every document with this uniqueId as its masterIdentifier, never an `identifier` a
    # writer set to it (`service.unique_ids`): one content per uniqueId.
    for doc in service.documents_with_unique_id(system or None, value):
        attachment = ((doc.get("content") or [{}])[0]).get("attachment") or {}
        binary_id = binary_id_of(attachment.get("url"))
        if not binary_id:
            continue
        try:
            binary = service.read(requester, "Binary", binary_id).json()
        except FhirError:
            continue
        try:
            data = pybase64.b64decode(binary.get("data") or "", validate=True)
        except ValueError:
            log.error("Binary/%s does not hold valid base64", binary_id)
            continue
        mime_type = attachment.get("contentType") or binary.get("contentType")
        return (
            mime_type or "application/octet-stream",
            data,
            _subject_id(doc),
            _labels_now(service, doc),
        )
    return None


def _labels_now(service, doc: dict) -> tuple:
    """The labels the retrieve's event carries: the document's as located, and those of its
    version read after the Binary was (the one the read was judged by). A label added in
    between (INVISIBLE_PATIENT) left the event with the version located's labels, and named
    the document, by its uniqueId, in the trail of whom the label hides it from (R14, R18)."""
    try:
        now = service.read(INTERNAL, "DocumentReference", doc["id"]).json()
    except FhirError:  # deleted since: the labels it had
        now = {}
    return security_labels_of_all([doc, now])

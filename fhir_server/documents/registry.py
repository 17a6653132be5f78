"""The document rules that read the store: the one check of a DocumentReference write.

`DocumentRules.check_write` is called by `FhirService.create_in` and `update_in`, which every
door goes through (REST POST, PUT, conditional create and update, transaction and batch
entries, ITI-65, ITI-105 and the ITI-41 mapping), inside the write transaction, after the
access gate and the Binary ownership checks. It reads the store as that transaction sees it,
so a document written earlier in the same transaction counts (two documents with one
entryUUID in a Bundle); the bytes of a Binary of the same transaction are those the
transaction writes (`in_transaction`).

On create: the rules of `documents.rules` (DMP metadata, entryUUID, uniqueId, inline data,
ref-1, relatesTo codes), the content (each attachment names a Binary with those bytes), the
entryUUID held by no other document or SubmissionSet, the associations (`relations_issues`),
and one content per uniqueId (`service.unique_ids`, 409).

On update (a PUT of a stored document, the supersede of a replacement, the metadata update):
what names the document, its record, its bytes and its associations stay as stored
(`rules.LOCKED_ON_UPDATE`), and the update adds no issue at an element where the stored
version had none (a document stored before these rules keeps what it lacked, and may still be
superseded or masked).

The server's own writes (INTERNAL: the loader, seeds) are trusted as for Binary ownership:
they keep only the one-content-per-uniqueId rule.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

from fhir_server.access.constraints import reference_target
from fhir_server.access.policy.labels import dmp_labels
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.documents import metadata_versions, model, rules
from fhir_server.errors import FhirError, Issue
from fhir_server.mhd.errors import xds_issue
from fhir_server.search.query import SearchQuery, TokenTest
from fhir_server.service import unique_ids
from fhir_server.service.context import bound
from fhir_server.terminology import MASQUE_PS
from ihe_xds.errors import (
    XDS_PATIENT_ID_DOES_NOT_MATCH,
    XDS_REGISTRY_DEPRECATED_DOCUMENT_ERROR,
    XDS_REGISTRY_METADATA_ERROR,
    XDS_REPLACE_FAILED,
)

# The ids of the stored DocumentReferences the transaction being written supersedes (a PUT
# with status superseded): a `replaces` is accepted only together with its supersede.
_superseding: ContextVar[frozenset[str]] = ContextVar("superseding", default=frozenset())


# The Binaries the transaction being written creates or updates (id -> resource): a document
# of the transaction naming one is checked against its bytes whatever the order of writes.
_binaries: ContextVar[dict[str, dict]] = ContextVar("transaction_binaries", default={})  # noqa: B039


@contextmanager
def in_transaction(superseded: frozenset[str], binaries: dict[str, dict]) -> Iterator[None]:
    """Within the block, `superseded` are the ids of the documents the transaction being
    written supersedes, and `binaries` its Binaries by id."""
    with bound((_superseding, superseded), (_binaries, binaries)):
        yield


def local_patient(resource: dict) -> str | None:
    target = reference_target(model.subject_reference(resource))
    return target[1] if target is not None and target[0] == "Patient" else None


class DocumentRules:
    """The rules with the store: `service` is the FhirService (its store, gate, profiles)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    @property
    def profiles(self) -> Any:
        profiles = getattr(self.service, "profiles", None)
        if profiles is None:  # a service built without the factory: the installed profiles
            from fhir_server.resources.profiles import default_registry

            profiles = default_registry()
        return profiles

    # -- the one check ------------------------------------------------------------------------

    def check_write(
        self,
        tx: Any,
        requester: Requester,
        document: dict,
        document_id: str,
        old: dict | None,
    ) -> None:
        """Refuse (422, each issue with its element and XDS code) a DocumentReference write
        that breaks the document model; 409 for a uniqueId held with other content."""
        search = self.service._searcher(tx)
        if requester.kind is not ActorKind.INTERNAL:
            issues = self.write_issues(tx, requester, document, document_id, old)
            if issues:
                raise FhirError(422, issues)
        unique_ids.check_one_content(search, document, document_id)

    def write_issues(
        self, tx: Any, requester: Requester, document: dict, document_id: str, old: dict | None
    ) -> list[Issue]:
        """Every problem of the write (see the module docstring), [] when it is acceptable."""
        issues = rules.metadata_issues(document, self.profiles)
        if old is not None:
            had = {i.expression for i in rules.metadata_issues(old, self.profiles)}
            issues = [i for i in issues if i.expression not in had]
            issues += rules.update_issues(document, old)
            if metadata_versions.is_step(old, document):
                issues += self.entry_uuid_issues(tx, document, document_id)
            return issues
        issues += rules.first_version_issues(document)
        issues += rules.content_issues(document, lambda binary_id: self._bytes(tx, binary_id))
        issues += self.entry_uuid_issues(tx, document, document_id)
        issues += self.relations_issues(tx, requester, document)
        return issues

    # -- the supersede of a replacement ----------------------------------------------------------

    def supersedes(self, requester: Requester, entries: list[Any]) -> tuple[list[dict], frozenset]:
        """For a transaction's entries: the stored documents that the documents it creates
        replace (`relatesTo.replaces`) and that it does not already supersede itself (a PUT
        with status superseded, as ITI-41 and ITI-65 add), each with status superseded, to
        be written by a PUT of the same transaction as the requester (the access gate judges
        it); and the ids of every document the transaction supersedes (`superseding`).

        A target that cannot be superseded (unknown, hidden, not current, another
        patient's) gets no PUT: `relations_issues` refuses the replacement in the write."""
        present = {
            str(entry.resource.get("id"))
            for entry in entries
            if entry.method == "PUT"
            and isinstance(entry.resource, dict)
            and entry.resource.get("resourceType") == "DocumentReference"
            and entry.resource.get("status") == "superseded"
        }
        added: list[dict] = []
        store = self.service.store
        for entry in entries:
            creates = entry.method == "POST" or (entry.method == "PUT" and entry.server_id)
            resource = entry.resource
            if not creates or not isinstance(resource, dict):
                continue
            if resource.get("resourceType") != "DocumentReference":
                continue
            for _, target in model.replaced_targets(resource):
                old = self.find_target(store, requester, target)
                if old is None or old["id"] in present or not model.is_approved(old):
                    continue
                new = copy.deepcopy(old)
                new["status"] = "superseded"
                added.append(new)
                present.add(old["id"])
        return added, frozenset(present)

    # -- the registry's lookups -----------------------------------------------------------------

    @staticmethod
    def _bytes(tx: Any, binary_id: str) -> bytes | None:
        """The bytes of Binary `binary_id`: the transaction's own, else the stored one's."""
        binary = _binaries.get().get(binary_id)
        if binary is None:
            stored = tx.read("Binary", binary_id)
            binary = None if stored is None or stored.deleted else stored.json()
        return None if binary is None else model.decode(binary.get("data"))

    def entry_uuid_issues(self, tx: Any, document: dict, document_id: str) -> list[Issue]:
        """ITI TF-3 4.1.12.1: an entryUUID names one object of the registry, an earlier
        metadata version of a document included."""
        value = model.entry_uuid(document)
        if value is None:
            return []
        search = self.service._searcher(tx)
        for resource_type, system in (
            ("DocumentReference", model.SYSTEM_RFC3986),
            ("DocumentReference", model.EARLIER_ENTRY_UUID_SYSTEM),
            ("List", model.SYSTEM_RFC3986),
        ):
            test = TokenTest("identifier", system, value)
            page = search(SearchQuery(resource_type, where=test, count=2))
            if any(row[1] != document_id for row in page.rows):
                position = next(p for p, _ in model.entry_uuid_identifiers(document))
                return [
                    xds_issue(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"the entryUUID {value} is already in the registry",
                        f"DocumentReference.identifier[{position}].value",
                        "duplicate",
                    )
                ]
        return []

    def find_target(self, tx: Any, requester: Requester, target: dict) -> dict | None:
        """The one stored DocumentReference a relatesTo.target names (a literal reference,
        version-specific or not, or an identifier: entryUUID or uniqueId), as the requester
        is answered: one hidden from them is an unknown one (R18)."""
        found: list[dict] = []
        local = reference_target(target.get("reference"))
        if local is not None and local[0] == "DocumentReference":
            stored = tx.read("DocumentReference", local[1])
            if stored is not None and not stored.deleted:
                found = [stored.json()]
        identifier = target.get("identifier")
        if not found and isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            found = self._with_identifier(tx, identifier.get("system"), identifier["value"])
        if requester.kind is not ActorKind.INTERNAL:
            gate = self.service.gate
            found = [d for d in found if gate.may_read(requester, "DocumentReference", d["id"])]
        return found[0] if len(found) == 1 else None

    def trace_hidden_target(self, tx: Any, requester: Requester, target: dict) -> None:
        """R16: a relation naming a document hidden from the requester (a replacement or a
        transform of a document the patient masked, by a professional not its author) is
        answered as for an unknown one (`find_target`, R18), and traced as that change of it
        would be (`Gate.refuse_hidden`: with its labels, hidden from whom it is hidden); it
        left no trace, where the read or the change of the same document leaves one."""
        if requester.kind is ActorKind.INTERNAL:
            return
        ids: list[str] = []
        local = reference_target(target.get("reference"))
        if local is not None and local[0] == "DocumentReference":
            ids = [local[1]]
        identifier = target.get("identifier")
        if not ids and isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            found = self._with_identifier(tx, identifier.get("system"), identifier["value"])
            ids = [d["id"] for d in found if isinstance(d.get("id"), str)]
        gate = self.service.gate
        for document_id in ids:
            stored = tx.read("DocumentReference", document_id)
            if stored is None or stored.deleted:
                continue
            deny = gate.hidden_deny(requester, stored)
            if deny is not None:
                gate.refuse_hidden(requester, "update", stored, deny)

    def _with_identifier(self, tx: Any, system: Any, value: str) -> list[dict]:
        """Documents whose entryUUID or uniqueId is (system, value), system None: any."""
        system = system if isinstance(system, str) else None
        test = TokenTest("identifier", system, value, any_system=system is None)
        page = self.service._searcher(tx)(SearchQuery("DocumentReference", where=test, count=3))
        out = []
        for row in page.rows:
            document = orjson.loads(row[2])
            named = [document.get("masterIdentifier")] + list(document.get("identifier") or [])
            if any(
                isinstance(i, dict)
                and i.get("value") == value
                and (system is None or i.get("system") == system)
                for i in named
            ):
                out.append(document)
        return out

    def relations_issues(self, tx: Any, requester: Requester, document: dict) -> list[Issue]:
        """Each relatesTo names a stored document of the same patient that is current
        (Approved); a `replaces` comes with its supersede in the same transaction."""
        issues: list[Issue] = []
        patient = local_patient(document)
        for position, code, target in model.relations(document):
            if code not in model.RELATION_CODES:
                continue  # rules.relation_code_issues
            where = f"DocumentReference.relatesTo[{position}].target"
            replaces = code == "replaces"
            old = self.find_target(tx, requester, target)
            if old is None:
                self.trace_hidden_target(tx, requester, target)
            problem = relation_problem(old, patient, replaces=replaces)
            if (
                problem is None
                and replaces
                and old is not None
                and old["id"] not in _superseding.get()
            ):
                problem = NOT_SUPERSEDED
            if problem is not None:
                issues.append(relation_issue(problem, where, old, replaces=replaces))
            elif (
                code in MASK_FOLLOWS
                and old is not None
                and _drops_patient_mask(requester, old, document)
            ):
                issues.append(
                    xds_issue(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"{MASK_DROPPED}; its {MASK_FOLLOWS[code]} carries it",
                        "DocumentReference.securityLabel",
                        "business-rule",
                    )
                )
        return issues


# The relations whose new document is the old one's content (R14: its mask follows it): a
# replacement (RPLC) and a transform (XFRM, the same content in another format: the author's
# transform of a masked document without MASQUE_PS was read by every authorized professional).
# An addendum (APND) and a signature carry content of their own.
MASK_FOLLOWS = {"replaces": "replacement", "transforms": "transform"}
MASK_DROPPED = (
    "the document it replaces or transforms is masked from professionals (MASQUE_PS) by the "
    "patient's choice, which only the patient or their representative lifts"
)


def _drops_patient_mask(requester: Requester, old: dict, new: dict) -> bool:
    """Whether a replacement (or a transform, `MASK_FOLLOWS`) by someone other than the
    patient (or a representative) leaves out the MASQUE_PS of the document it replaces (R14).

    MASQUE_PS is the patient's (they set and remove it); its author, who may replace the
    document, deposited the same content again without it and every authorized professional
    read the replacement, the mask lifted without the patient (decided here: the mask follows
    the document through its replacements, as it does through its metadata versions)."""
    if requester.kind in (ActorKind.INTERNAL, ActorKind.PATIENT, ActorKind.REPRESENTATIVE):
        return False
    return MASQUE_PS in dmp_labels(old) and MASQUE_PS not in dmp_labels(new)


# What can be wrong with the document an association names (ITI TF-3 4.2.2), told the same way
# by every door (ITI-41 maps them to its RegistryErrors with `relation_error_code`).
UNKNOWN = "the related document is not known"
OTHER_PATIENT = "the related document belongs to another patient"
NOT_CURRENT = "the related document {id} is not current (Approved)"
NOT_SUPERSEDED = (
    "a replacement supersedes what it replaces in the same write; deposit it with POST "
    "DocumentReference, a transaction or ITI-65"
)


def relation_problem(old: dict | None, patient: str | None, *, replaces: bool) -> str | None:
    """Why the stored document `old` (None: unknown to the depositor) cannot be the target of
    an association from a document of `patient`, or None: it exists, is of the same patient
    and is current. A replaced document the same transaction supersedes counts as current."""
    if old is None:
        return UNKNOWN
    if local_patient(old) != patient:
        return OTHER_PATIENT
    if not model.is_approved(old) and not (replaces and old["id"] in _superseding.get()):
        return NOT_CURRENT
    return None


def relation_issue(problem: str, where: str, old: dict | None, *, replaces: bool) -> Issue:
    """The OperationOutcome issue of a `relation_problem` at `where` (a relatesTo target)."""
    return xds_issue(
        relation_error_code(problem, replaces=replaces),
        f"{where}: {problem.format(id=old['id'] if old else '')}",
        where,
        "not-found" if problem == UNKNOWN else "invalid",
    )


def relation_error_code(problem: str, *, replaces: bool) -> str:
    """The XDS error code of a `relation_problem`: a replacement failing is XDSReplaceFailed
    (but for another patient's document); an addendum, transform or signature of an unknown
    document is a metadata error, of a Deprecated one XDSRegistryDeprecatedDocumentError (the
    NIST toolkit's expectation, issue #19 point 2)."""
    if problem == OTHER_PATIENT:
        return XDS_PATIENT_ID_DOES_NOT_MATCH
    if replaces:
        return XDS_REPLACE_FAILED
    if problem == NOT_CURRENT:
        return XDS_REGISTRY_DEPRECATED_DOCUMENT_ERROR
    return XDS_REGISTRY_METADATA_ERROR


__all__ = [
    "DocumentRules",
    "local_patient",
    "relation_error_code",
    "relation_issue",
    "relation_problem",
    "in_transaction",
]

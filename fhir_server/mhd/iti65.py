"""ITI-65 Provide Document Bundle: the MHD checks a transaction Bundle gets before it is stored.

`BundleProcessor` (service/bundles.py) asks `is_provide_bundle` for every transaction and,
for an ITI-65, runs `Iti65.prepare` before ids are assigned and `Iti65.check_rewritten`
after references are rewritten; the rest (FHIR order, atomic store, the access gate on each
write) is ordinary transaction processing, so a deposit through MHD is judged exactly like
one through XDS (ITI-41 maps to the same resources and goes through the same processor).

Which transactions are ITI-65: a transaction claiming an MHD / PDSm Provide Bundle profile,
or holding a POST of a List coded `submissionset`. The bundles `ihe_xds` builds for ITI-41
PUT every resource with its final id (and have been checked as XDS), so they are not.

What is checked (errors carry the XDS code in `issue.details`, see mhd/errors.py; every
problem of the Bundle is reported at once, status 422):
- exactly one SubmissionSet List; otherwise only DocumentReferences and Binaries, POSTed
  (XDSRepositoryMetadataError); each DocumentReference is a member of the SubmissionSet,
  and the SubmissionSet has no other entry (a document outside the Bundle, of this record or
  another, hidden or unknown: refused alike, XDSRepositoryMetadataError at that entry); no
  entry is a conditional create (`ifNoneExist`, refused before any search);
- each DocumentReference's content.attachment.url is the fullUrl of a Binary of the Bundle
  (XDSMissingDocument) and each Binary is the content of one (XDSMissingDocumentMetadata);
- attachment.size and attachment.hash (base64 SHA-1), when given, match the Binary's bytes
  (XDSRepositoryMetadataError); when absent, the DMP profile reports them missing;
- one patient for all: every subject names the same Patient (XDSPatientIdDoesNotMatch); a
  conditional patient reference (`Patient?identifier=INS`, and no other criterion, which
  would read the record for a writer who may not: XDSRepositoryMetadataError) is resolved by
  the registry, as ITI-41 resolves a patient CX; an unknown patient is XDSUnknownPatientId;
- masterIdentifier (uniqueId) unique in the message (XDSRepositoryDuplicateUniqueIdInMessage)
  and, when already stored, stored with the same hash and size (XDSNonIdenticalHash);
- the entryUUID (identifier `urn:ietf:rfc:3986` `urn:uuid:`) is assigned to
  DocumentReferences and the List lacking one, then the DMP DocumentReference profile is
  enforced (`deposit=True`), each issue with its element's expression;
- `relatesTo.replaces`: the target (a literal `DocumentReference/id`, or a logical reference
  by entryUUID or uniqueId) must be a current document of the same patient (XDSReplaceFailed,
  XDSPatientIdDoesNotMatch); it is made `superseded` by a PUT added to the same transaction,
  written as the requester, so the access gate decides whether they may. A PATCH entry that
  sets exactly that status on a replaced document (as PDSm4DMP's replacement example does)
  is folded into this PUT; any other PATCH is refused.
- Binary.securityContext, when absent, is set to its DocumentReference (the access gate
  judges a Binary through the DocumentReference naming it).

The registry's own lookups (patient, uniqueId, replaced document) are made as INTERNAL, as
ITI-41's are; none of them changes what the requester is told beyond what XDS tells. A
replaced document the requester may not read is answered as an unknown one (XDSReplaceFailed).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qsl

from fhir_server.access import binding
from fhir_server.access.constraints import reference_target
from fhir_server.access.requester import INTERNAL
from fhir_server.documents import model, rules
from fhir_server.documents.model import assign_entry_uuid, replaced_targets, sha1_base64
from fhir_server.documents.registry import relation_issue, relation_problem
from fhir_server.errors import FhirError, Issue
from fhir_server.mhd.errors import xds_issue
from fhir_server.terminology import PDSM_PROFILE_BASE
from ihe_xds.errors import (
    XDS_MISSING_DOCUMENT,
    XDS_MISSING_DOCUMENT_METADATA,
    XDS_NON_IDENTICAL_HASH,
    XDS_PATIENT_ID_DOES_NOT_MATCH,
    XDS_REPLACE_FAILED,
    XDS_REPOSITORY_METADATA_ERROR,
    XDS_UNKNOWN_PATIENT_ID,
)

_MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
PROVIDE_BUNDLE_PROFILES = frozenset(
    {
        _MHD + "IHE.MHD.Minimal.ProvideBundle",
        _MHD + "IHE.MHD.Comprehensive.ProvideBundle",
        _MHD + "IHE.MHD.UnContained.Comprehensive.ProvideBundle",
        PDSM_PROFILE_BASE + "pdsm-comprehensive-provide-document-bundle",
        PDSM_PROFILE_BASE + "pdsm-simplified-provide-document-bundle",
    }
)
FOLDED = "FOLDED"  # Entry.method of a PATCH folded into a supersede PUT
_DOC_REF = re.compile(r"(?:^|/)DocumentReference/([A-Za-z0-9\-.]{1,64})\Z")


class EntryLike(Protocol):
    """What is used of service.bundles.Entry (kept structural to avoid an import cycle)."""

    index: int
    method: str
    url: str
    resource: dict | None
    full_url: str | None

    @property
    def where(self) -> str: ...


@dataclass
class ProvidePlan:
    """An ITI-65 being processed: its entries by role, and what the registry adds."""

    submission_set: Any
    documents: list[Any]
    binaries: list[Any]
    # Folder Lists (MHD Vol 3 4.5.1) the submission creates, each naming documents of it.
    folders: list[Any] = field(default_factory=list)
    # Old DocumentReferences to supersede: (resource with status superseded, the entries
    # (PATCH) folded into its PUT)
    supersede: list[dict] = field(default_factory=list)
    folded: dict[int, str] = field(default_factory=dict)  # PATCH entry index -> old doc id

    def with_subject(self) -> list[Any]:
        """The entries naming the submission's patient: the SubmissionSet, its Folders and
        its documents (ITI TF-3 4.2.3.3: a Folder is of its documents' patient)."""
        return [self.submission_set, *self.folders, *self.documents]


# --------------------------------------------------------------------------- detection


def _claims(resource: dict, urls: frozenset[str]) -> bool:
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    if not isinstance(profiles, list):  # of another JSON type: refused by the validator
        return False
    return any(isinstance(p, str) and p.split("|")[0] in urls for p in profiles)


def is_submission_set(resource: Any) -> bool:
    """Whether `resource` is an MHD SubmissionSet List (MHDlistTypes `submissionset`)."""
    return "submissionset" in model.mhd_list_types(resource)


def is_folder(resource: Any) -> bool:
    """Whether `resource` is an MHD Folder List (MHDlistTypes `folder`)."""
    return "folder" in model.mhd_list_types(resource)


def is_provide_bundle(bundle: dict) -> bool:
    """Whether a transaction Bundle is an ITI-65 Provide Document Bundle (module docstring)."""
    if bundle.get("type") != "transaction":
        return False
    if _claims(bundle, PROVIDE_BUNDLE_PROFILES):
        return True
    for raw in bundle.get("entry") or []:
        if not isinstance(raw, dict):
            continue
        request = raw.get("request")
        method = str(request.get("method", "")).upper() if isinstance(request, dict) else ""
        if method == "POST" and is_submission_set(raw.get("resource")):
            return True
    return False


# --------------------------------------------------------------------------- pure checks


_attachments = model.attachments
_unique_id = model.unique_id


def _is_supersede_patch(resource: Any) -> bool:
    """A FHIRPath Patch `replace DocumentReference.status = superseded`, and nothing else."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        return False
    operations = resource.get("parameter") or []
    if len(operations) != 1 or operations[0].get("name") != "operation":
        return False
    parts = {p.get("name"): p for p in operations[0].get("part") or [] if isinstance(p, dict)}
    return (
        parts.get("type", {}).get("valueCode") == "replace"
        and parts.get("path", {}).get("valueString") == "DocumentReference.status"
        and parts.get("value", {}).get("valueCode") == "superseded"
        and set(parts) == {"type", "path", "value"}
    )


def check_structure(entries: list[Any]) -> tuple[ProvidePlan | None, list[Issue], list[Any]]:
    """Roles, membership, document bytes (hash, size), uniqueIds in the message.

    Returns (plan or None when the roles cannot be told, issues, PATCH entries to check
    against the replacements). Also assigns entryUUIDs and Binary.securityContext.
    """
    issues: list[Issue] = []
    lists, folders, documents, binaries, patches = [], [], [], [], []
    for entry in entries:
        resource = entry.resource
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if getattr(entry, "if_none_exist", None) is not None:
            # An ITI-65 creates what it holds; a conditional create is ITI-105's. Searched,
            # its match (a document the depositor reads) left the SubmissionSet's document
            # out of these checks, a 500; refused before any search, whatever it would find.
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{entry.where}: an ITI-65 creates its resources; request.ifNoneExist "
                    "is not accepted",
                    f"{entry.where}.request.ifNoneExist",
                )
            )
        if entry.method == "PATCH":
            patches.append(entry)
            continue
        if entry.method != "POST":
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{entry.where}: an ITI-65 creates its resources (POST), not {entry.method}",
                    f"{entry.where}.request.method",
                )
            )
            continue
        if kind == "List" and is_submission_set(resource):
            lists.append(entry)
        elif kind == "List" and is_folder(resource):
            folders.append(entry)
        elif kind == "DocumentReference":
            documents.append(entry)
        elif kind == "Binary":
            binaries.append(entry)
        else:
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{entry.where}: an ITI-65 holds one SubmissionSet List, folder Lists, "
                    f"DocumentReferences and their Binaries; {kind} is not accepted",
                    f"{entry.where}.resource",
                )
            )
    if len(lists) != 1:
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"an ITI-65 needs exactly one SubmissionSet List (code submissionset), found {len(lists)}",
                "Bundle.entry",
            )
        )
        return None, issues, patches
    if not documents:
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                "the SubmissionSet has no DocumentReference",
                "Bundle.entry",
            )
        )
    plan = ProvidePlan(lists[0], documents, binaries, folders)
    binary_by_url = {b.full_url: b for b in binaries if b.full_url}
    used: set[str] = set()
    for entry in documents:
        document = entry.resource
        assign_entry_uuid(document)
        attachments = _attachments(document)
        if not attachments:
            issues.append(
                xds_issue(
                    XDS_MISSING_DOCUMENT,
                    f"{entry.where}: the DocumentReference has no content.attachment",
                    f"{entry.where}.resource.content",
                )
            )
        for position, attachment in attachments:
            where = f"{entry.where}.resource.content[{position}].attachment"
            binary = binary_by_url.get(attachment.get("url"))
            if binary is None:
                issues.append(
                    xds_issue(
                        XDS_MISSING_DOCUMENT,
                        f"{where}.url '{attachment.get('url')}' is not the fullUrl of a Binary of the Bundle",
                        f"{where}.url",
                    )
                )
                continue
            used.add(binary.full_url)
            if entry.full_url and "securityContext" not in binary.resource:
                binary.resource["securityContext"] = {"reference": entry.full_url}
            content = model.decode(binary.resource.get("data"))
            if content is None:
                issues.append(
                    xds_issue(
                        XDS_MISSING_DOCUMENT,
                        f"{binary.where}: the Binary has no data",
                        f"{binary.where}.resource.data",
                    )
                )
                continue
            issues += rules.size_and_hash_issues(attachment, content, where)
    # No two documents of the message with one entryUUID or one uniqueId (the same rule as
    # every transaction's, `documents.rules`).
    issues += rules.message_issues([(entry.where, entry.resource) for entry in documents])
    for binary in binaries:
        if binary.full_url not in used:
            issues.append(
                xds_issue(
                    XDS_MISSING_DOCUMENT_METADATA,
                    f"{binary.where}: no DocumentReference of the Bundle has this Binary as content",
                    f"{binary.where}.fullUrl",
                )
            )
    submission_set = plan.submission_set.resource
    assign_entry_uuid(submission_set)
    members = set()
    document_urls = {entry.full_url for entry in documents if entry.full_url}
    folder_urls = {entry.full_url for entry in folders if entry.full_url}
    issues += _folder_issues(folders, document_urls)
    for position, item in enumerate(submission_set.get("entry") or []):
        named = item.get("item") if isinstance(item, dict) else None
        reference = named.get("reference") if isinstance(named, dict) else None
        if reference in document_urls:
            members.add(reference)
            continue
        if reference in folder_urls:
            # MHD Vol 3 4.5.1: the SubmissionSet names the Folder it creates.
            members.add(reference)
            continue
        # A SubmissionSet lists what the submission holds (a HasMember to each document of
        # the Bundle; ITI-41's mapping keeps no other). An entry naming anything else (a
        # document of another record, one hidden from the depositor, an unknown id, an
        # identifier) was stored as sent; refused alike whatever it names, nothing looked up.
        where = f"{plan.submission_set.where}.resource.entry[{position}].item"
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"{where}: a SubmissionSet entry names a DocumentReference of the Bundle (its "
                "fullUrl); documents outside the submission are not accepted",
                where,
            )
        )
    for entry in [*documents, *folders]:
        if entry.full_url not in members:
            kind = entry.resource.get("resourceType")
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{entry.where}: the {kind} is not an entry of the SubmissionSet List",
                    f"{plan.submission_set.where}.resource.entry",
                )
            )
    return plan, issues, patches


def _folder_issues(folders: list[Any], document_urls: set[str]) -> list[Issue]:
    """Each Folder of an ITI-65 gets its entryUUID and names documents of the submission
    only (their fullUrls). Adding a stored document to a Folder would name a document the
    depositor may not read, or another record's: refused alike whatever it names, nothing
    looked up, as a SubmissionSet entry is."""
    issues = []
    for folder in folders:
        assign_entry_uuid(folder.resource)
        if not folder.full_url:
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{folder.where}: a folder List needs a fullUrl, for the SubmissionSet to name it",
                    f"{folder.where}.fullUrl",
                )
            )
        for position, item in enumerate(folder.resource.get("entry") or []):
            named = item.get("item") if isinstance(item, dict) else None
            reference = named.get("reference") if isinstance(named, dict) else None
            if reference in document_urls:
                continue
            where = f"{folder.where}.resource.entry[{position}].item"
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{where}: a Folder entry names a DocumentReference of the Bundle (its "
                    "fullUrl); documents outside the submission are not accepted",
                    where,
                )
            )
    return issues


def _subjects(plan: ProvidePlan) -> list[tuple[str, Any]]:
    """(where, subject reference string or None) of the List and each DocumentReference."""
    out = []
    for entry in plan.with_subject():
        subject = entry.resource.get("subject")
        reference = subject.get("reference") if isinstance(subject, dict) else None
        out.append((f"{entry.where}.resource.subject", reference))
    return out


def one_patient_issues(plan: ProvidePlan) -> list[Issue]:
    """XDSPatientIdDoesNotMatch for every subject that is not the SubmissionSet's patient."""
    subjects = [(where, _local(reference)) for where, reference in _subjects(plan)]
    expected = next((ref for _, ref in subjects if ref), None)
    return [
        xds_issue(
            XDS_PATIENT_ID_DOES_NOT_MATCH,
            f"{where} {ref} is not the patient of the submission ({expected})",
            where,
        )
        for where, ref in subjects
        if ref and ref != expected
    ]


def _local(reference: Any) -> Any:
    patient_id = _local_id(reference, "Patient")
    return f"Patient/{patient_id}" if patient_id else reference


def _local_id(reference: Any, resource_type: str) -> str | None:
    """The id of the local `resource_type` a literal reference names, version-specific or
    not (`DocumentReference/x/_history/1`, the location this server answers with), or None.
    The normal form made references to this server's base relative before these checks run,
    so an absolute reference is another server's (`access.constraints.reference_target`)."""
    target = reference_target(reference)
    return target[1] if target is not None and target[0] == resource_type else None


def deposit_profile_issues(plan: ProvidePlan, profiles: Any) -> list[Issue]:
    """The document rules that need no store (`documents.rules.metadata_issues`: the DMP
    DocumentReference profile, entryUUID, uniqueId, ref-1, ...) and ref-1 of the
    SubmissionSet, each issue at its entry with its XDS code."""
    issues = []
    found = [(entry, rules.metadata_issues(entry.resource, profiles)) for entry in plan.documents]
    for listing in [plan.submission_set, *plan.folders]:
        found.append((listing, rules.contained_reference_issues(listing.resource)))
    for entry, entry_issues in found:
        for issue in entry_issues:
            issues.append(
                replace(
                    issue,
                    diagnostics=f"{entry.where}: {issue.diagnostics}",
                    expression=(entry.where, *issue.expression),
                )
            )
    return issues


# --------------------------------------------------------------------------- with the registry


class Iti65:
    """The registry side of ITI-65: lookups as INTERNAL through the service (never the store)."""

    def __init__(self, service: Any, requester: Any = None) -> None:
        self.service = service
        # Whose submission it is: a replaced document they may not read is answered as an
        # unknown one (None: every stored document counts, as for INTERNAL).
        self.requester = requester

    def prepare(self, entries: list[Any]) -> tuple[ProvidePlan, list[Any]]:
        """Check an ITI-65 before ids are assigned; returns the plan and the entries to add
        (supersede PUTs). Raises FhirError(422) with every issue found."""
        plan, issues, patches = check_structure(entries)
        if plan is None:
            raise FhirError(422, issues)
        self._check_binding(plan)
        issues += self._resolve_patients(plan)
        issues += self._stored_unique_ids(plan)
        added, replace_issues = self._replacements(plan, patches)
        issues += replace_issues
        if issues:
            raise FhirError(422, issues)
        return plan, added

    def check_rewritten(self, plan: ProvidePlan) -> None:
        """After references are rewritten: one patient, then the DMP deposit profile."""
        issues = one_patient_issues(plan)
        profiles = getattr(self.service, "profiles", None)
        if profiles is None:  # a service built without the factory: the installed profiles
            from fhir_server.resources.profiles import default_registry

            profiles = default_registry()
        issues += deposit_profile_issues(plan, profiles)
        if issues:
            raise FhirError(422, issues)

    # -- lookups -------------------------------------------------------------------------

    def _find(self, resource_type: str, params: list[tuple[str, str]], limit: int = 2) -> list:
        return self.service.find(INTERNAL, resource_type, params, limit)

    def _resolve_patients(self, plan: ProvidePlan) -> list[Issue]:
        """Conditional patient references -> Patient/id; unknown patients -> XDSUnknownPatientId."""
        issues: list[Issue] = []
        resolved: dict[str, str | None] = {}
        for entry in plan.with_subject():
            subject = entry.resource.get("subject")
            reference = subject.get("reference") if isinstance(subject, dict) else None
            where = f"{entry.where}.resource.subject"
            if not isinstance(reference, str):
                if subject is not None:  # present, naming no one: say so, not "no record" later
                    kind = entry.resource.get("resourceType")
                    issues.append(
                        xds_issue(
                            XDS_MISSING_DOCUMENT_METADATA,
                            f"{where}: {kind}.subject names no Patient (subject.reference is "
                            "required: Patient/<id> or Patient?identifier=<INS>)",
                            where,
                            "required",
                        )
                    )
                continue
            if reference.startswith("Patient?") and not _by_identifier_alone(reference):
                issues.append(
                    xds_issue(
                        XDS_REPOSITORY_METADATA_ERROR,
                        f"{where}: a conditional patient reference names the patient by "
                        "its identifier alone (Patient?identifier=<INS system>|<INS>)",
                        where,
                        "invalid",
                    )
                )
                continue
            if reference not in resolved:
                resolved[reference] = self._patient_id(reference)
            patient_id = resolved[reference]
            if patient_id is None:
                issues.append(
                    xds_issue(
                        XDS_UNKNOWN_PATIENT_ID,
                        f"{where} {reference} is not a patient known to the registry",
                        where,
                        "not-found",
                    )
                )
            elif reference.startswith("Patient?"):
                subject["reference"] = f"Patient/{patient_id}"
        return issues

    def _check_binding(self, plan: ProvidePlan) -> None:
        """Refuse (403, audited) a deposit naming another patient than the one the
        credentials are bound to, before anything says whether that patient is known.

        The patients are resolved as `_resolve_patients` does; an INS naming no Patient is
        refused too (patient binding: the same answer whether the patient exists or not), so
        a bound token no longer tells a registered INS (403) from an unknown one
        (XDSUnknownPatientId), unless the credentials' own patient is just as unknown (then
        the deposit is answered as without a binding), as a search is (`Gate`)."""
        gate = getattr(self.service, "gate", None)
        if gate is None or self.requester is None:
            return
        bound, bound_id = gate.bound_patient(self.requester)
        if not bound:
            return
        named: dict[str | None, str] = {}
        for entry in plan.with_subject():
            subject = entry.resource.get("subject")
            reference = subject.get("reference") if isinstance(subject, dict) else None
            if not isinstance(reference, str) or (
                reference.startswith("Patient?") and not _by_identifier_alone(reference)
            ):
                continue  # refused by `_resolve_patients`, whatever the binding
            named.setdefault(self._patient_id(reference), f"{entry.where}.resource.subject")
        outside = {patient: where for patient, where in named.items() if patient != bound_id}
        if not outside:
            return
        deny = binding.refused_search_or_write()
        patients = sorted(patient for patient in outside if patient)
        gate.audit.refusal(self.requester, "create", patients, deny.rule)
        refused = deny.to_error()
        where = next(iter(outside.values()))
        raise FhirError(
            refused.status,
            [
                replace(issue, diagnostics=f"{where}: {issue.diagnostics}", expression=(where,))
                for issue in refused.issues
            ],
        )

    def _patient_id(self, reference: str) -> str | None:
        try:
            if reference.startswith("Patient?"):
                found = self._find(
                    "Patient", parse_qsl(reference.split("?", 1)[1], keep_blank_values=True)
                )
                return found[0].id if len(found) == 1 else None
            patient_id = _local_id(reference, "Patient")
            if patient_id:
                found = self._find("Patient", [("_id", patient_id)])
                return found[0].id if found else None
        except FhirError:
            return None
        return None

    def _stored_unique_ids(self, plan: ProvidePlan) -> list[Issue]:
        issues = []
        for entry in plan.documents:
            unique_id = _unique_id(entry.resource)
            attachments = _attachments(entry.resource)
            if not unique_id or not attachments:
                continue
            attachment = attachments[0][1]
            system = (entry.resource.get("masterIdentifier") or {}).get("system")
            # The documents whose masterIdentifier is this one (`service.unique_ids`), never
            # a search parameter built from it: a comma in it made a search of several
            # values, any identifier (a hidden document's entryUUID, whose hash it was then
            # compared with) among them.
            holders = self.service.documents_with_unique_id(
                system if isinstance(system, str) else None, unique_id
            )
            for held in holders:
                old = ((held.get("content") or [{}])[0]).get("attachment") or {}
                if old.get("hash") != attachment.get("hash") or old.get("size") != attachment.get(
                    "size"
                ):
                    where = f"{entry.where}.resource.masterIdentifier"
                    issues.append(
                        xds_issue(
                            XDS_NON_IDENTICAL_HASH,
                            f"{where} {unique_id} is already stored with other content",
                            where,
                        )
                    )
                    break
        return issues

    def _replacements(
        self, plan: ProvidePlan, patches: list[Any]
    ) -> tuple[list[dict], list[Issue]]:
        """The supersede PUTs of the replaced documents, or why they cannot be made."""
        issues: list[Issue] = []
        added: list[dict] = []
        superseded: dict[str, dict] = {}
        for entry in plan.documents:
            subject = (entry.resource.get("subject") or {}).get("reference")
            for position, target in replaced_targets(entry.resource):
                where = f"{entry.where}.resource.relatesTo[{position}].target"
                old = self._replaced_document(target)
                if old is None:
                    # One hidden from the depositor: traced as its change (R16).
                    self.service.documents.trace_hidden_target(
                        self.service.store, self.requester or INTERNAL, target
                    )
                    issues.append(
                        xds_issue(
                            XDS_REPLACE_FAILED,
                            f"{where}: the replaced document is not known",
                            where,
                            "not-found",
                        )
                    )
                    continue
                if old["id"] in superseded:
                    issues.append(
                        xds_issue(
                            XDS_REPLACE_FAILED,
                            f"{where}: the document {old['id']} is replaced twice",
                            where,
                        )
                    )
                    continue
                # The rule every door applies (`documents.registry.relation_problem`).
                problem = relation_problem(old, _local_id(subject, "Patient"), replaces=True)
                if problem is not None:
                    issues.append(relation_issue(problem, where, old, replaces=True))
                    continue
                new = copy.deepcopy(old)
                new["status"] = "superseded"
                superseded[old["id"]] = new
                added.append(new)
        for entry in patches:
            match = _DOC_REF.search(entry.url.split("?", 1)[0])
            if match and match.group(1) in superseded and _is_supersede_patch(entry.resource):
                plan.folded[entry.index] = match.group(1)
                entry.method = FOLDED
                continue
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{entry.where}: PATCH in an ITI-65 is only accepted as the status change to "
                    "superseded of a document this submission replaces (relatesTo.replaces)",
                    f"{entry.where}.request",
                )
            )
        plan.supersede = added
        return added, issues

    def _replaced_document(self, target: dict) -> dict | None:
        """The document a replace names, found as every door finds it
        (`DocumentRules.find_target`): one hidden from the depositor is answered exactly as
        an unknown one (R18: not "of another patient", "not current", nor the refusal of its
        supersede, which named its id)."""
        return self.service.documents.find_target(
            self.service.store, self.requester or INTERNAL, target
        )


def _by_identifier_alone(reference: str) -> bool:
    """Whether a conditional patient reference is `Patient?identifier=<token>` and nothing
    else. The registry resolves it itself, since a depositor need not read the record (R10,
    R15): with any other criteria (`&_has:DocumentReference:patient:category=31`, a chain, a
    birth date), whether it resolved told a writer what the record holds, masked documents
    included, a wrong hash keeping the deposit from being made (R18)."""
    params = parse_qsl(reference.split("?", 1)[1], keep_blank_values=True)
    return len(params) == 1 and params[0][0] == "identifier" and bool(params[0][1])


__all__ = [
    "FOLDED",
    "PROVIDE_BUNDLE_PROFILES",
    "Iti65",
    "ProvidePlan",
    "assign_entry_uuid",
    "check_structure",
    "deposit_profile_issues",
    "is_provide_bundle",
    "one_patient_issues",
    "sha1_base64",
]

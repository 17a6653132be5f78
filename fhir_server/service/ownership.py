"""Binary ownership at write: who a Binary belongs to is recorded once, by the server.

Architecture invariant 8 and issue #18 finding 1: a Binary is readable exactly when the
document it was deposited with is (`access.ownership`, `Gate._judge_read`). That owner is
`Binary.securityContext`, and only the server sets it:

- a transaction (an ITI-65, the ITI-41 mapping, any transaction Bundle) that creates a Binary
  and a DocumentReference naming it makes that document (the first of the Bundle naming it)
  its owner (`assign_in_bundle`); a securityContext the client set must name that document,
  otherwise 422 at `Bundle.entry[i].resource.securityContext`;
- a Binary written on its own cannot name its owner (422 `Binary.securityContext`), and an
  owner once recorded never changes;
- a DocumentReference may only name (`content[i].attachment.url`, a relative `Binary/<id>`)
  a Binary of its own deposit (the same Bundle, or one it owns), or one its writer may read
  that belongs to a document of the same record; an unowned Binary that no document names
  (the two-step deposit: POST Binary, then POST DocumentReference) is claimed by the first
  document naming it, in that document's write transaction. Anything else, including a
  Binary that does not exist, is 422 `DocumentReference.content[i].attachment.url`, the same
  answer whatever the reason (R18).

The server's own writes (INTERNAL: loading, seeding) are never refused, but still claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.access.decision import Permit
from fhir_server.access.ownership import (
    ATTACHMENT_URL,
    SECURITY_CONTEXT,
    has_owner,
    named_binaries,
    owner_id,
    owner_reference,
    subject_patient,
)
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import FhirError, error
from fhir_server.search.query import UriTest
from fhir_server.service.deposit import deposited_binaries
from fhir_server.store.base import StoredResource, StoreTransaction

if TYPE_CHECKING:
    from fhir_server.service.gate import Gate

RULE = "ownership"  # refusals by invariant 8 (docs/architecture.md), not by a numbered rule
MSG_POINTER = (
    "{where} must name a Binary deposited with this document, or one of the same record "
    "that its writer may read"
)
MSG_OWNER_SET = (
    "{where} is set by the server to the DocumentReference deposited with the Binary; it "
    "cannot name another resource"
)
MSG_OWNER_KEPT = "{where}: the document a Binary belongs to never changes"


def _unprocessable(message: str, expression: str) -> FhirError:
    return error(422, "processing", message, expression)


def assign_in_bundle(entries: list[Any], requester: Requester) -> tuple[frozenset[str], list[Any]]:
    """Make each Binary a transaction creates owned by the DocumentReference of the Bundle
    naming it (the first one, in the Bundle's order), once every id is final.

    Returns (the ids of those Binaries: the deposit, `deposit()`, the entries changed, whose
    index entries are to be made again). Raises 422 at the entry of a Binary whose
    securityContext names anything else than a document of the Bundle naming it.
    """
    binaries = {
        entry.resource["id"]: entry
        for entry in entries
        if entry.method in ("POST", "PUT")
        and isinstance(entry.resource, dict)
        and entry.resource.get("resourceType") == "Binary"
        and entry.resource.get("id")
    }
    if not binaries:
        return frozenset(), []
    naming: dict[str, list[str]] = {}
    for entry in entries:
        resource = entry.resource
        if (
            entry.method not in ("POST", "PUT")
            or not isinstance(resource, dict)
            or resource.get("resourceType") != "DocumentReference"
        ):
            continue
        for _, binary_id in named_binaries(resource):
            if binary_id in binaries:
                naming.setdefault(binary_id, []).append(str(resource.get("id")))
    changed = []
    for binary_id, entry in binaries.items():
        documents = naming.get(binary_id, [])
        if has_owner(entry.resource):
            if (
                owner_id(entry.resource) not in documents
                and requester.kind is not ActorKind.INTERNAL
            ):
                where = f"{entry.where}.resource.securityContext"
                raise _unprocessable(MSG_OWNER_SET.format(where=where), where)
        elif documents:
            entry.resource["securityContext"] = owner_reference(documents[0])
            changed.append(entry)
    return frozenset(naming), changed


class BinaryOwnership:
    """The write-time checks, with the gate's facts (stored Binaries, read decisions)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def before_write(
        self,
        tx: StoreTransaction,
        requester: Requester,
        interaction: str,
        resource: dict,
        resource_id: str,
        old: dict | None,
    ) -> list[StoredResource]:
        """Check a create or update (already authorized); returns the unowned Binaries the
        document claims, to be written with their owner in the same transaction."""
        resource_type = resource.get("resourceType")
        if resource_type == "Binary":
            self._check_binary(requester, resource, resource_id, old)
            return []
        if resource_type == "DocumentReference":
            return self._check_document(tx, requester, interaction, resource, resource_id)
        return []

    @staticmethod
    def claimed(binary: StoredResource, document_id: str) -> dict:
        """The new version of an unowned Binary, owned by `document_id`."""
        resource = binary.json()
        resource["securityContext"] = owner_reference(document_id)
        return resource

    # -- Binary ------------------------------------------------------------------------------

    @staticmethod
    def _check_binary(requester: Requester, binary: dict, binary_id: str, old: dict | None) -> None:
        if old is not None and has_owner(old):
            if binary.get("securityContext") != old.get("securityContext"):
                raise _unprocessable(
                    MSG_OWNER_KEPT.format(where=SECURITY_CONTEXT), SECURITY_CONTEXT
                )
            return
        if (
            has_owner(binary)
            and binary_id not in deposited_binaries()
            and requester.kind is not ActorKind.INTERNAL
        ):
            raise _unprocessable(MSG_OWNER_SET.format(where=SECURITY_CONTEXT), SECURITY_CONTEXT)

    # -- DocumentReference -------------------------------------------------------------------

    def _check_document(
        self,
        tx: StoreTransaction,
        requester: Requester,
        interaction: str,
        document: dict,
        document_id: str,
    ) -> list[StoredResource]:
        claims: list[StoredResource] = []
        deposited = deposited_binaries()
        for position, binary_id in named_binaries(document):
            if binary_id in deposited:
                continue
            stored = tx.read("Binary", binary_id)
            if stored is not None and not stored.deleted:
                binary = stored.json()
                if has_owner(binary):
                    if owner_id(binary) == document_id:
                        continue
                elif not self._named_by_others(binary_id, document_id):
                    if all(claim.id != binary_id for claim in claims):
                        claims.append(stored)
                    continue
                if self._may_reuse(requester, binary_id, binary, document):
                    continue
            if requester.kind is ActorKind.INTERNAL:
                continue
            self._refuse(requester, interaction, document, position)
        return claims

    def _named_by_others(self, binary_id: str, document_id: str) -> bool:
        rows = self.gate.facts.internal_search(
            "DocumentReference", UriTest("location", f"Binary/{binary_id}"), 2
        )
        return any(row[1] != document_id for row in rows)

    def _may_reuse(
        self, requester: Requester, binary_id: str, binary: dict, document: dict
    ) -> bool:
        """A Binary of another document: its writer may read it, and it is of the record the
        new document is in."""
        if requester.kind is ActorKind.INTERNAL:
            return True
        decision, patients, _ = self.gate._decide_read(requester, "Binary", binary_id, binary)
        return isinstance(decision, Permit) and patients == [subject_patient(document)]

    def _refuse(
        self, requester: Requester, interaction: str, document: dict, position: int
    ) -> None:
        patient_id = subject_patient(document)
        self.gate.audit.refusal(
            requester,
            interaction,
            [patient_id] if patient_id else [],
            RULE,
            resource_type="DocumentReference",
        )
        where = ATTACHMENT_URL.format(position=position)
        raise _unprocessable(MSG_POINTER.format(where=where), where)

"""Metadata updates of a DocumentReference: PATCH (FHIR) and ITI-57 (XDS), one implementation.

The DMP's TD3.3 transactions (mask / unmask, INVISIBLE_PATIENT lifted, archive / unarchive,
logical deletion) reach the server by two doors: `PATCH [base]/DocumentReference/{id}` or
its conditional form `?identifier=system|value` (PDSm `st_maj.md`), and the XDS Update
Document Set (ihe_xds.update_document_set). Each door turns its request into a function
from the current document to the requested one (`Change`); `MetadataUpdates.change` then
does the rest, the same for both:

1. the current version is read in the write transaction; a resource the requester may not
   read answers exactly as a missing one (404, R18), a deleted one (PDSm: "elle est alors
   considérée comme inexistante") too; If-Match is compared with it (412 on mismatch, FHIR
   http.html#concurrency);
2. the change is applied and brought to the normal form (labels spelled any accepted way
   become one spelling), then `metadata_update.settle` keeps it to status, securityLabel and
   PDSm_IsArchived and merges the labels;
3. the result is written by `FhirService.update_in`, the very path of a PUT: the access gate
   judges who may make that change (`access.policy`: the patient and representatives of a
   minor add or remove MASQUE_PS, R06/R07; a professional who may read the document removes
   INVISIBLE_*, R14; the author changes anything, so archives and deletes; everyone else
   403), the notifications and the AuditEvent are those of an update, and a new version is
   stamped;
4. a change of the labels is a new metadata version of the document (XDS Metadata Update,
   ITI TF-2b 3.57.4.1.3.3.1, `documents.metadata_versions`): the new version gets an
   entryUUID of its own (ITI-57: the one its submission gives the new DocumentEntry; PATCH:
   one the server makes) and keeps the replaced one as an earlier version's; a change of
   status or isArchived alone keeps the entryUUID (an XDS status update).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhir_server.access.decision import Permit, not_found_message
from fhir_server.access.requester import INTERNAL, Requester
from fhir_server.documents import metadata_versions
from fhir_server.errors import error, not_found
from fhir_server.resources import metadata_update
from fhir_server.resources.document_state import is_deleted
from fhir_server.resources.patch import PatchBody, apply_patch
from fhir_server.search.parameters import parse_search
from fhir_server.service.core import FhirService, SearchResult, WriteResult
from fhir_server.store.base import StoredResource, StoreTransaction

RESOURCE = "DocumentReference"

# How many documents a conditional PATCH's criteria are looked for among (an identifier names
# one document; a few more make the 412 of an ambiguous one).
CONDITIONAL_LIMIT = 20

# The requested document, from the current one (which it must not change in place).
Change = Callable[[dict], dict]


@dataclass(frozen=True)
class MetadataUpdates:
    service: FhirService

    # -- PATCH -------------------------------------------------------------------------------

    def patch(
        self,
        requester: Requester,
        resource_type: str,
        resource_id: str,
        body: PatchBody,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """`PATCH [base]/{type}/{id}`."""
        self.check_type(resource_type)
        with self.service._transaction() as tx:
            return self.patch_in(tx, requester, resource_id, body, if_match=if_match)

    def conditional_patch(
        self,
        requester: Requester,
        resource_type: str,
        criteria: list[tuple[str, str]],
        body: PatchBody,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """`PATCH [base]/{type}?criteria` (http.html#patch): the one match is patched; no
        match 404, several 412."""
        self.check_type(resource_type)
        target = self.conditional_target(requester, resource_type, criteria)
        return self.patch(requester, resource_type, target, body, if_match=if_match)

    def conditional_target(
        self, requester: Requester, resource_type: str, criteria: list[tuple[str, str]]
    ) -> str:
        """The id of the one resource the criteria find among those the requester may read.

        PDSm's conditional PATCH names the document by its identifier alone, with no
        patient: a professional's own search of it would be refused (R04). The criteria are
        searched by the server, and only the matches the requester may read, as a read of
        each would judge them (`Gate.may_read`), are counted: a document they may not read
        answers as a missing one (404), and never makes two (412) (R18). Their chained and
        `_has` clauses read only what the requester could search: judged on the matches alone,
        `?_id=V&patient._has:DocumentReference:patient:security-label=MASQUE_PS` found V, a
        document they may read, exactly when the record held a document hidden from them."""
        self.check_type(resource_type)
        found = self.service.find(
            INTERNAL,
            resource_type,
            criteria,
            limit=CONDITIONAL_LIMIT,
            joins_seen_by=requester,
        )
        live = [stored for stored in found if not is_deleted(stored.json())]
        # Judged as a patch before the matches are counted, as `change_in` judges one by id: a
        # requester who may patch no document (R05: an insurer, an occupational health
        # service; R15: a system client) is refused whatever the criteria find. Counted
        # first, a payer's ITI-57 of a document it may not read answered as an unknown entry
        # (UnresolvedReferenceException) and left no R05 refusal in the record's trail. The
        # refusal is traced in the record of the one match, in no record's otherwise.
        self.service.gate.refuse_change(
            requester, "patch", resource_type, live[0] if len(live) == 1 else None
        )
        readable = [
            stored
            for stored in live
            if self.service.gate.may_read(requester, resource_type, stored.id)
        ]
        self._trace_hidden_matches(requester, [s for s in live if s not in readable])
        self._trace_search(requester, resource_type, criteria, readable)
        if len(readable) > 1:
            raise error(
                412,
                "multiple-matches",
                f"the conditional patch criteria match {len(readable)} resources",
            )
        if not readable:
            raise not_found("the conditional patch criteria match no resource")
        return readable[0].id

    def _trace_search(
        self,
        requester: Requester,
        resource_type: str,
        criteria: list[tuple[str, str]],
        readable: list[StoredResource],
    ) -> None:
        """Audit the criteria as the requester's search of what they may read (R16), matched
        or not, as a conditional update's or delete's are (`FhirService.conditional_matches`),
        and tell it as one (R17) with the notes of the search of the record its criteria
        designate, else of a read of its first match. Searched by the server, it was traced
        only through a match hidden from the sender: its answer (404 none, 412 several, or the
        412 of an If-Match at another version, nothing written) let a practitioner ask the
        record any criteria and leave nothing the patient could see."""
        gate = self.service.gate
        asked = parse_search(
            resource_type, criteria, self.service.registry, base_url=self.service.base_url
        ).query
        decision = None
        given, patient_id = gate.facts.designated_patient(resource_type, asked.where)
        record = gate.facts.record(patient_id) if given and patient_id else None
        if record is not None:
            decision = gate._decide_search(requester, resource_type, record, True)
        elif readable:
            decision, _, _ = gate._decide_read(
                requester, resource_type, readable[0].id, readable[0].json()
            )
        if not isinstance(decision, Permit):
            # A sender who may not search that record read nothing of it: what it hides
            # answered as missing, each hidden match traced as its refusal
            # (`_trace_hidden_matches`).
            return
        gate.after_search(requester, SearchResult.of_conditional(readable, asked, asked, decision))

    def _trace_hidden_matches(self, requester: Requester, unreadable: list) -> None:
        """Trace each match hidden from the requester as the refused change of it by id
        would be (R16, `Gate.refuse_hidden`: in its record, with its labels, so hidden from
        whom it is hidden). The criteria named it and the answer is that of a missing one
        (R18), rightly, but a conditional PATCH (REST, in a Bundle) or an ITI-57 naming a
        document its sender may not read left no trace, where `PATCH /DocumentReference/{id}`
        of it leaves its refusal."""
        gate = self.service.gate
        for stored in unreadable:
            deny = gate.hidden_deny(requester, stored)
            if deny is not None:
                gate.refuse_hidden(requester, "update", stored, deny)

    def patch_in(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource_id: str,
        body: PatchBody,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """A PATCH inside an open transaction (also a Bundle entry's)."""
        return self.change_in(
            tx, requester, resource_id, lambda current: apply_patch(current, body), if_match
        )

    # -- the one implementation --------------------------------------------------------------

    def change(
        self,
        requester: Requester,
        resource_id: str,
        change: Change,
        if_match: int | None = None,
    ) -> WriteResult:
        with self.service._transaction() as tx:
            return self.change_in(tx, requester, resource_id, change, if_match)

    def change_in(
        self,
        tx: StoreTransaction,
        requester: Requester,
        resource_id: str,
        change: Change,
        if_match: int | None = None,
        new_version: str | None = None,
    ) -> WriteResult:
        """`new_version`: the entryUUID of the new metadata version the change makes whatever
        it changes (ITI-57's new DocumentEntry); None: a new version (with an entryUUID made
        here) if the labels change."""
        service = self.service
        stored = tx.read(RESOURCE, resource_id)
        # A metadata update is judged as a patch before the id is looked at: a requester who
        # may patch no document (a system client, R15) is refused whatever the id names.
        service.gate.refuse_change(requester, "patch", RESOURCE, stored)
        current = stored if stored is not None and not stored.deleted else None
        old = current.json() if current is not None else None
        hidden = service.gate.hidden_deny(requester, current) if current is not None else None
        if current is None or old is None or hidden is not None or is_deleted(old):
            # Missing, hidden from the requester, or logically deleted: one answer for all
            # (a 404, or the 412 of an If-Match), so that none tells that it exists (R18).
            refusal = not_found(not_found_message(RESOURCE, resource_id))
            if current is not None and hidden is not None:
                refusal = service.gate.refuse_hidden(requester, "update", current, hidden)
            raise _stale(resource_id, if_match) if if_match is not None else refusal
        if if_match is not None and current.version != if_match:
            raise _stale(resource_id, if_match)
        candidate = change(old)
        if not isinstance(candidate, dict) or candidate.get("resourceType") != RESOURCE:
            raise error(422, "processing", f"the change does not leave a {RESOURCE}")
        if candidate.get("id") != resource_id:
            raise error(405, "not-supported", f"{RESOURCE}.id cannot be changed", f"{RESOURCE}.id")
        candidate = self._normal(candidate)
        settled = metadata_update.settle(old, candidate)
        if new_version is not None or metadata_update.changes_labels(old, settled):
            settled = metadata_versions.step(
                old, settled, new_version or metadata_versions.new_entry_uuid()
            )
        service.validate_for_write(settled, RESOURCE)
        return service.update_in(tx, requester, settled, if_match=current.version)

    def _normal(self, candidate: dict) -> dict:
        """The candidate's labels (and every system) in the normal form, before they are
        compared; `meta` kept as given, since the normal form copies the TRE_A07 labels of
        meta.security into securityLabel and would undo a removal."""
        meta = candidate.pop("meta", None)
        self.service.normal_form.apply(candidate)
        if meta is not None:
            candidate["meta"] = meta
        return candidate

    @staticmethod
    def check_type(resource_type: str) -> None:
        if resource_type != RESOURCE:
            raise error(
                405,
                "not-supported",
                f"PATCH is served for {RESOURCE} metadata updates (PDSm st_maj.md), not "
                f"for {resource_type}",
            )


def _stale(resource_id: str, if_match: int):
    return error(
        412,
        "conflict",
        f'If-Match W/"{if_match}" is not the current version of {RESOURCE}/{resource_id}',
    )


__all__ = ["Change", "MetadataUpdates"]

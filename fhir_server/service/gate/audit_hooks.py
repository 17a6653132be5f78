"""The gate's audit hooks (R16, R17): after a search, before and after a write.

They decide nothing about access; they say what was accessed and for whom. A search's event
carries the query as asked, so it names the labelled resources the criteria designate, with
their labels (judged as their reads would be); a write's events and notifications are
written in the write's own transaction, with the record epoch bump that invalidates the
cached facts it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

import orjson

from fhir_server.access.constraints import compartment_of
from fhir_server.access.decision import Permit
from fhir_server.access.ownership import owner_id
from fhir_server.access.query_names import (
    ID_NAMED_TYPES,
    IDENTIFIED_TYPES,
    identifier_spellings,
    named_identifiers,
    named_targets,
    spellings,
)
from fhir_server.access.requester import INTERNAL, ActorKind, Requester
from fhir_server.audit.balp import ROLE_QUERY, DataEntity, hiding_codes, security_labels_of_all
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.query import (
    IdTest,
    Node,
    Or,
    TokenTest,
)
from fhir_server.service.context import current_request, forget_request_facts
from fhir_server.service.deposit import deposited_document
from fhir_server.service.gate.reads import ReadGate
from fhir_server.service.prepared import PreparedEvents

if TYPE_CHECKING:
    from fhir_server.store.base import StoredResource

# Ids of one type a search's criteria name that are read one by one; more are searched for
# together (`_named_by_id`), in lookups of at most LOOKUP_CHUNK values.
READ_ONE_BY_ONE = 20
LOOKUP_CHUNK = 200
# The resources a PatientRecord is built from; a write to one of them moves the record epoch.
RECORD_FACT_TYPES = frozenset({"Patient", "Consent", "RelatedPerson"})


class AuditHooks(ReadGate):
    """`after_search`, `prepare_write_audit` and `after_write`."""

    def after_search(self, requester: Requester, result) -> None:
        """Audit a search; `result.permit`: the Permit `constrain_search` returned for it."""
        if requester.kind is ActorKind.INTERNAL or not self.audit.enabled:
            return
        patients: set[str] = set()
        entities = []
        for resource_type, resource_id, facts in result.entity_facts():
            patients.update(facts.compartment)
            entities.append(facts.entity(resource_type, resource_id))
        given, patient_id = self.facts.designated_patient(
            result.query.resource_type or "", result.query.where
        )
        if patient_id:
            patients.add(patient_id)
        elif not given:
            # A patient or a representative who names no patient searches the record they act
            # for (R04): that record was accessed, found or not. Its patient came only from
            # the results, so a count (`_summary=count`, `_count=0`) or a search finding
            # nothing was in no trail: a parent counted the minor's documents unseen (R07).
            acting = self.facts.acting_for(requester)
            if acting:
                patients.add(acting)
        notes = result.permit.notes if result.permit is not None else ()
        if result.asked is not None:
            asked = result.asked
            entities.extend(self._named_in_criteria(requester, asked.where, asked.resource_type))
        entities.extend(self._hidden_results_in_query(entities))
        self.audit.access(requester, "search-type", patients, entities, notes=notes)

    def _hidden_results_in_query(self, entities: Sequence[DataEntity]) -> list[DataEntity]:
        """The results hidden from a patient or a representative (INVISIBLE_PATIENT,
        INVISIBLE_REPRESENTANTS_LEGAUX) whose id, identifier or content URL the request's
        text holds, as entities its criteria name (role query), so that every event of the
        search carries their labels.

        A search's results are split into events by those labels
        (`balp._rest_event_entities`), the event of those hidden from nobody shown to the
        patient with the query as asked. A criterion the server does not read as naming a
        document (`location=Binary/<id>`, a text parameter) but that matched a hidden one
        would show its id in that event; the labels of all its results hid it before."""
        raw = current_request.get().raw_query
        hidden = [
            e
            for e in entities
            if e.role != ROLE_QUERY and e.reference and hiding_codes(e.security_labels)
        ]
        if not raw or not hidden:
            return []
        text = unquote_plus(raw.decode("utf-8", "replace")).lower()
        named = []
        for entity in hidden:
            kind, _, target_id = (entity.reference or "").partition("/")
            stored = self.facts.current(kind, target_id)
            resource = stored.json() if stored is not None and not stored.deleted else {}
            if any(value.lower() in text for value in _naming_strings(target_id, resource)):
                named.append(replace(entity, role=ROLE_QUERY, version=None))
        return named

    def _named_in_criteria(
        self, requester: Requester, where: Node, resource_type: str | None
    ) -> list[DataEntity]:
        """The labelled resources a search's criteria name, by id (`_id`, `item=`,
        `relatesto=`, `_has`...) or by identifier (a document's or SubmissionSet's uniqueId),
        as entities of its event: the event keeps the query as asked (BALP), so it carries
        their labels too, and the AuditEvent views hide it from whom those labels hide the
        resources (R14, R18; issue #18, deliverable 5).

        Not those a patient or a representative searching may not read themselves: the
        label would hide their own search from their own trail, which shows their search
        by an unknown id, so their trail would tell them which ids name a document hidden
        from them (R18). Their event names what it names for an unknown id: the query they
        wrote, nothing more."""
        person = requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE)
        return self._labelled_entities(
            [
                *self._named_by_id(named_targets(where)),
                *self._named_by_identifier(named_identifiers(where, resource_type, self.registry)),
            ],
            reader=requester if person else None,
        )

    def _labelled_entities(
        self, named: Sequence[tuple[str, str, dict]], reader: Requester | None = None
    ) -> list[DataEntity]:
        """The resources named that carry labels, as entities of the event (role: query);
        with `reader`, only those `reader` may read (`_named_in_criteria`).

        Each goes only into the event of the record it is in (`DataEntity.patient_id`): a
        search of one record naming another record's labelled document would otherwise
        show this record's patient that the id names a document, and its labels (R06,
        R18); for their trail it is as an unknown id."""
        entities = []
        for kind, target_id, resource in named:
            _, owners, _, labels = self._judge_read(INTERNAL, kind, target_id, resource)
            if labels and reader is not None:
                decision, patients, _, _ = self._judge_read(reader, kind, target_id, resource)
                if not isinstance(decision, Permit) or self._outside_binding(reader, patients):
                    continue
            if labels:
                entities.append(
                    DataEntity(
                        reference=f"{kind}/{target_id}",
                        security_labels=tuple(labels),
                        role=ROLE_QUERY,
                        patient_id=owners[0] if len(owners) == 1 else None,
                    )
                )
        return entities

    def _named_by_id(self, asked: Sequence[tuple[str | None, str]]) -> list[tuple[str, str, dict]]:
        """The current resources the (type or None, id) pairs name. A plain id is read as
        every labelled type, whatever was searched and at any level (`_has:List:item:_id=<a
        document's id>`): the event keeps the query as asked, which shows it all the same.
        A few ids are read one by one (a patient-scoped search names its Patient's id); more
        are searched for at once, type by type, so that however many a query names (a list
        of decoys before the one that matters), every one is looked up."""
        by_kind: dict[str, list[str]] = {}
        for target_type, asked_id in asked:
            for kind in [target_type] if target_type else ID_NAMED_TYPES:
                if kind in SERVED_TYPES:
                    by_kind.setdefault(kind, []).extend(spellings(asked_id))
        named: list[tuple[str, str, dict]] = []
        for kind, spelled in by_kind.items():
            ids = list(dict.fromkeys(spelled))
            if len(ids) <= READ_ONE_BY_ONE:
                for target_id in ids:
                    stored = self.facts.current(kind, target_id)
                    if stored is not None and not stored.deleted:
                        named.append((kind, target_id, stored.json()))
                continue
            for start in range(0, len(ids), LOOKUP_CHUNK):
                chunk = IdTest(tuple(ids[start : start + LOOKUP_CHUNK]))
                named += _parsed(self.facts.internal_search(kind, chunk, None))
        return named

    def _named_by_identifier(self, asked: Sequence[str]) -> list[tuple[str, str, dict]]:
        """The documents and Lists whose identifier, in any system, is one of the values
        asked (an identifier value likewise shows in the query whatever system, form or
        level it was asked with, and a criterion that matches nothing still names it): one
        search per type for every value, all matches."""
        values = list(dict.fromkeys(v for value in asked for v in identifier_spellings(value)))
        named: list[tuple[str, str, dict]] = []
        for kind in IDENTIFIED_TYPES if values else ():
            for start in range(0, len(values), LOOKUP_CHUNK):
                tests = tuple(
                    TokenTest("identifier", code=value, any_system=True)
                    for value in values[start : start + LOOKUP_CHUNK]
                )
                criterion = tests[0] if len(tests) == 1 else Or(tests)
                named += _parsed(self.facts.internal_search(kind, criterion, None))
        return named

    def entities_named_by(self, values: Sequence[str]) -> list[DataEntity]:
        """The labelled resources `values` name, each read as a document's or a List's
        identifier (a uniqueId, an entryUUID) and a UUID URN's UUID as an id, as entities
        with their labels: for an XDS query's event, which keeps the request as asked
        (`ihe_xds.stored_query.named`), as a search's keeps its query."""
        uuids = [
            (None, value[len("urn:uuid:") :])
            for value in values
            if value.lower().startswith("urn:uuid:")
        ]
        return self._labelled_entities(
            [*self._named_by_id(uuids), *self._named_by_identifier(values)]
        )

    def after_write(
        self,
        tx,
        requester: Requester,
        interaction: str,
        stored: StoredResource,
        resource,
        permit: Permit,
        prepared: PreparedEvents | None = None,
        previous: dict | None = None,
    ) -> None:
        """Audit the write and write the notifications it calls for, in its transaction.

        `permit`: what `authorize_write` returned for this write (its notes say what to
        notify). `prepared`: the write's AuditEvents as `prepare_write_audit` built them
        beforehand. `previous`: an update's former content, whose records' facts it changes
        too (a Consent the server's own write gave another patient left the first one's).
        """
        self.confirm_decision(tx, permit)
        forget_request_facts()  # a Patient, Consent or RelatedPerson may have changed
        if stored.resource_type in RECORD_FACT_TYPES:
            records = _record_patients(stored, resource)
            if previous is not None:
                records |= _record_patients(stored, previous)
            for patient_id in sorted(records):
                tx.bump_record_epoch(patient_id)
        notes = permit.notes
        if not self.audit.records(requester) or stored.resource_type == "AuditEvent":
            return
        patients, entity = _write_audit_subject(
            stored, resource, self._owner_documents(tx, stored, resource)
        )
        intents = self.audit.notifier.for_write(
            requester,
            notes,
            interaction,
            stored.resource_type,
            stored.id,
            None if stored.deleted else stored.json(),
            entity.security_labels,
            patients,
            self.audit.notifier.now(),
        )
        if self.audit.writes_summarized():
            if intents:
                self.audit.notifier.apply(tx, intents)
            return
        self.audit.access(
            requester,
            interaction,
            patients,
            [entity],
            tx=tx,
            notes=notes,
            intents=intents,
            prepared=prepared,
        )

    @staticmethod
    def decision_moved(tx, permit: Permit) -> bool:
        """Whether a record's facts the write was decided on are not those its transaction
        commits on (`StoreTransaction.facts_epoch`): a block committed after the decision,
        or on SQLite one an earlier unit of the same batch wrote, which the decision's
        reads could not see (R09, R10). One indexed read per record and transaction."""
        return any(tx.facts_epoch(patient) != epoch for patient, epoch in permit.decided_on)

    def confirm_decision(self, tx, permit: Permit) -> None:
        """Raise `RecordMoved` (a conflict: judged again, or refused) rather than write what
        was decided on facts the transaction does not commit on."""
        for patient, epoch in permit.decided_on:
            tx.confirm_facts_epoch(patient, epoch)

    def prepare_write_audit(
        self, requester: Requester, interaction: str, stored: StoredResource, resource
    ) -> PreparedEvents | None:
        """The AuditEvents `after_write` will write for this write, built ahead of time."""
        if (
            not self.audit.records(requester)
            or stored.resource_type == "AuditEvent"
            or self.audit.writes_summarized()
        ):
            return None
        patients, entity = _write_audit_subject(
            stored, resource, self._owner_documents(None, stored, resource)
        )
        return self.audit.prepare_access(requester, interaction, patients, [entity])

    def _owner_documents(self, tx, stored: StoredResource, resource) -> list[dict]:
        """The document a Binary's write is audited under, as its reads are (R16: the event
        is in that patient's trail; R14, R18: it carries the document's labels, so it is
        hidden from whom the document is): its owner, as the Bundle depositing both writes
        it, else as stored (in the write's transaction, `tx`, when there is one). None for
        another type, or for a Binary no document owns yet (posted on its own, it is
        nobody's until a document claims it)."""
        owner = owner_id(resource) if stored.resource_type == "Binary" and resource else None
        if owner is None:
            return []
        document = deposited_document(owner)
        if document is None:
            found = (
                tx.read("DocumentReference", owner)
                if tx is not None
                else self.facts.current("DocumentReference", owner)
            )
            document = None if found is None or found.deleted else found.json()
        return [document] if document is not None else []


# Values shorter than this are not looked for in a request's text (`_naming_strings`).
MIN_NAMING_LENGTH = 8


def _naming_strings(resource_id: str, resource: dict) -> set[str]:
    """What names a resource in a request: its id, its identifiers' values (a document's
    uniqueId and entryUUID), and its attachments' URLs and the ids they end with."""
    values = {resource_id}
    identifiers = [*(resource.get("identifier") or []), resource.get("masterIdentifier") or {}]
    values.update(
        i["value"] for i in identifiers if isinstance(i, dict) and isinstance(i.get("value"), str)
    )
    for content in resource.get("content") or []:
        url = ((content or {}).get("attachment") or {}).get("url")
        if isinstance(url, str):
            values.update({url, url.rsplit("/", 1)[-1]})
    return {v for v in values if len(v) >= MIN_NAMING_LENGTH}


def _parsed(rows: Sequence[tuple[str, str, bytes]]) -> list[tuple[str, str, dict]]:
    return [(kind, resource_id, orjson.loads(body)) for kind, resource_id, body in rows]


def _write_audit_subject(
    stored: StoredResource, resource, owners: Sequence[dict] = ()
) -> tuple[list[str], DataEntity]:
    """The patients a write concerns and the entity its AuditEvent names. A delete stores a
    tombstone, which has no labels: its event carries those of the version deleted
    (`resource`), so that it is hidden from whom the resource was (R14, R18). A Binary's
    write concerns its owner document's patients and carries that document's labels too
    (`owners`, see `AuditHooks._owner_documents`)."""
    patients = sorted(compartment_of(resource)) if resource else []
    if stored.resource_type == "Patient":
        patients = [stored.id]
    if owners:
        patients = sorted({patient for owner in owners for patient in compartment_of(owner)})
    entity = DataEntity.from_resource(stored.json())
    if (stored.deleted and resource) or owners:
        labelled = [resource, *owners] if resource else [*owners]
        entity = replace(entity, security_labels=security_labels_of_all(labelled))
    return patients, entity


def _record_patients(stored: StoredResource, resource) -> set[str]:
    """The records whose facts a write to a Patient, Consent or RelatedPerson changes, as
    `resource` (its new or its former content) names them."""
    if stored.resource_type == "Patient":
        return {stored.id}
    return set(compartment_of(resource)) if resource else set()

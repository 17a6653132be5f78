"""The one dispatcher: every FHIR interaction, from any door, performed by `perform`.

The REST face builds an `Interaction` from the HTTP request; a batch entry is built the same
way from its `request` (`interaction.from_entry`) and performed alone, exactly as that
request would be; a transaction entry too, inside the transaction's one store transaction
(`Within`), with what the transaction settled before it (the ids it gave, the resource a
condition found, the index entries it prepared: `service.bundles`). So an entry answers
with the status, Location, ETag and OperationOutcome of the same request alone (issue #22,
deliver 2, after Medplum's fhir-router, where Bundle entries go through the one router).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import orjson

from fhir_server.access import list_labels
from fhir_server.access.policy import labels
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import bad_request
from fhir_server.search.extract import PreparedEntries
from fhir_server.service import audit_event_writes
from fhir_server.service.core import (
    Condition,
    FhirService,
    Replay,
    WriteResult,
    precondition_failed,
    require_type,
)
from fhir_server.service.interaction import Answer, Interaction, Kind
from fhir_server.service.patch import MetadataUpdates
from fhir_server.service.prepared import PreparedWrite
from fhir_server.store.base import StoredResource, StoreTransaction
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY

# A POST of a DocumentReference (ITI-105, and any document): the registry's own transaction
# (`BundleProcessor.publish`: the Binary of inline data, the supersedes, atomically).
Publish = Callable[[Requester, dict, str | None], WriteResult]


@dataclass(frozen=True)
class Within:
    """A transaction entry's write: the open store transaction, and what the transaction
    settled before it (http.html#trules: ids assigned, conditions searched, outside the
    write lock since a search is audited).

    `target_id`: the one resource a conditional update, patch or delete found (None:
    nothing); `condition`: a conditional create's criteria, claimed and searched again in
    `tx` (`FhirService.recheck`); `found`: what a conditional create's criteria found (the
    create is then answered with it, nothing written); `may_create`: a PUT whose id the
    server chose (a conditional update that found nothing, the ITI-41 mapping's entries);
    `matched`: a conditional update's or delete's criteria and the id they found (None:
    nothing), searched again in `tx` (`FhirService.still_the_match`): a write committed since
    could have moved the match."""

    tx: StoreTransaction
    target_id: str | None = None
    condition: Condition | None = None
    matched: tuple[Condition, str | None] | None = None
    found: StoredResource | None = None
    prepared: PreparedEntries | None = None
    may_create: bool = False


class Dispatcher:
    def __init__(self, service: FhirService, publish: Publish) -> None:
        self.service = service
        self.publish = publish
        self.updates = MetadataUpdates(service)

    def perform(
        self, requester: Requester, interaction: Interaction, within: Within | None = None
    ) -> Answer:
        """Perform `interaction` for `requester`: alone (its own store transaction), or as
        a transaction's entry `within` its transaction. Raises FhirError as the request
        alone would answer it."""
        kind = interaction.kind
        if kind in _READS:
            return self._read(requester, interaction)
        sent = _sent_labels(interaction.body)
        answer = self._write(requester, interaction, within)
        if requester.kind is ActorKind.INTERNAL:
            return answer
        if requester.kind is ActorKind.SYSTEM and _is_document(answer):
            # A system's deprecation keeps the labels it was never shown (`Gate.as_written`):
            # its answer says what it sent (R15).
            return _answered_as_sent(answer, _sent_labels(interaction.body, "DocumentReference"))
        return _without_derived_labels(answer, sent)

    def _write(
        self, requester: Requester, interaction: Interaction, within: Within | None
    ) -> Answer:
        """A write, alone or as a transaction's entry (`perform`)."""
        kind = interaction.kind
        audit_event_writes.refuse_change(
            self.service.gate,
            self.service.store,
            requester,
            interaction.resource_type,
            kind.value,
            None if interaction.conditional else interaction.resource_id,
            within.tx if within is not None else None,
        )
        if within is not None:
            return self._write_within(requester, interaction, within)
        service = self.service
        resource_type = interaction.resource_type
        assert resource_type is not None
        if kind is Kind.CREATE:
            body = interaction.body
            assert body is not None
            criteria = list(interaction.if_none_exist) if interaction.if_none_exist else None
            if resource_type == "DocumentReference" and body.get("resourceType") == resource_type:
                result = self.publish(requester, body, urlencode(criteria) if criteria else None)
            else:
                result = service.create(requester, resource_type, body, if_none_exist=criteria)
            return _written(result)
        if kind is Kind.UPDATE:
            assert interaction.body is not None
            if interaction.criteria is not None:
                result = service.conditional_update(
                    requester,
                    resource_type,
                    list(interaction.criteria),
                    interaction.body,
                    if_match=interaction.if_match,
                )
            else:
                assert interaction.resource_id is not None
                result = service.update(
                    requester,
                    resource_type,
                    interaction.resource_id,
                    interaction.body,
                    if_match=interaction.if_match,
                )
            return _written(result)
        if kind is Kind.DELETE:
            if interaction.criteria is not None:
                stored = service.conditional_delete(
                    requester,
                    resource_type,
                    list(interaction.criteria),
                    if_match=interaction.if_match,
                )
            else:
                assert interaction.resource_id is not None
                stored = service.delete(
                    requester,
                    resource_type,
                    interaction.resource_id,
                    if_match=interaction.if_match,
                )
            return Answer(204, stored)
        assert kind is Kind.PATCH and interaction.patch is not None
        self.updates.check_type(resource_type)
        if interaction.criteria is not None:
            result = self.updates.conditional_patch(
                requester,
                resource_type,
                list(interaction.criteria),
                interaction.patch,
                if_match=interaction.if_match,
            )
        else:
            assert interaction.resource_id is not None
            result = self.updates.patch(
                requester,
                resource_type,
                interaction.resource_id,
                interaction.patch,
                if_match=interaction.if_match,
            )
        return Answer(200, result.stored)

    def target(
        self, requester: Requester, interaction: Interaction
    ) -> tuple[str | None, Condition | None]:
        """The id of the one resource a conditional update, patch or delete names, searched
        as its performing alone searches it (412 `multiple-matches` for several; a
        conditional patch that finds nothing: 404), and the criteria searched (None for a
        patch). A transaction asks it before its write transaction and gives both to
        `perform` (`Within.target_id`, `Within.matched`)."""
        assert interaction.conditional and interaction.criteria is not None
        resource_type = require_type(interaction.resource_type or "")
        audit_event_writes.refuse_change(
            self.service.gate,
            self.service.store,
            requester,
            resource_type,
            interaction.kind.value,
            None,
        )
        criteria = list(interaction.criteria)
        if interaction.kind is Kind.PATCH:
            return self.updates.conditional_target(requester, resource_type, criteria), None
        service = self.service
        condition = service.condition(requester, resource_type, criteria)
        found = service.one_match(
            service.conditional_matches(requester, condition), interaction.kind.value
        )
        return (found.id if found is not None else None), condition

    # -- reads -------------------------------------------------------------------------------

    def _read(self, requester: Requester, interaction: Interaction) -> Answer:
        service = self.service
        kind = interaction.kind
        if kind is Kind.SEARCH:
            result = service.search(
                requester,
                interaction.resource_type,
                list(interaction.criteria or ()),
                lenient=interaction.lenient,
                cursor=interaction.cursor,
            )
            return Answer(200, search=result)
        if kind is Kind.HISTORY:
            page = service.history(
                requester,
                interaction.resource_type,
                interaction.resource_id,
                since=interaction.since,
                count=interaction.count,
                cursor=interaction.cursor,
            )
            return Answer(200, history=page)
        assert interaction.resource_type is not None and interaction.resource_id is not None
        if kind is Kind.VREAD:
            assert interaction.version is not None
            stored = service.vread(
                requester, interaction.resource_type, interaction.resource_id, interaction.version
            )
        else:
            stored = service.read(requester, interaction.resource_type, interaction.resource_id)
        return Answer(200, stored)

    # -- a transaction's entry ---------------------------------------------------------------

    def _write_within(
        self, requester: Requester, interaction: Interaction, within: Within
    ) -> Answer:
        """A write in the transaction's store transaction: the same service steps as alone
        (`*_in`), its resource already brought to the normal form and validated, its
        conditions already searched (`Within`)."""
        service, tx = self.service, within.tx
        resource_type = require_type(interaction.resource_type or "")
        kind = interaction.kind
        if kind is Kind.CREATE:
            if within.found is not None:
                return Answer(200, within.found)
            body = interaction.body
            assert body is not None
            if body.get("resourceType") != resource_type:
                raise bad_request(
                    "resource type does not match request.url",
                    f"{interaction.where}.resource.resourceType",
                )
            if within.condition is not None and service.recheck(tx, requester, within.condition):
                raise Replay()  # a concurrent create came first: run the Bundle again
            result = service.create_in(
                tx,
                requester,
                body,
                resource_id=body["id"],
                prepared=PreparedWrite(within.prepared, None) if within.prepared else None,
            )
            return _written(result)
        target = within.target_id if interaction.conditional else interaction.resource_id
        if within.matched is not None:
            service.still_the_match(tx, requester, *within.matched)
        if kind is Kind.UPDATE:
            assert interaction.body is not None and target is not None
            result = service.update_in(
                tx,
                requester,
                interaction.body,
                if_match=interaction.if_match,
                entries=within.prepared,
                may_create=within.may_create,
            )
            return _written(result)
        if kind is Kind.DELETE:
            if target is None:
                if interaction.if_match is not None:
                    raise precondition_failed(interaction.if_match, resource_type, None)
                return Answer(204, None)
            stored = service.delete_in(
                tx, requester, resource_type, target, if_match=interaction.if_match
            )
            return Answer(204, stored)
        assert kind is Kind.PATCH and interaction.patch is not None and target is not None
        self.updates.check_type(resource_type)
        result = self.updates.patch_in(
            tx, requester, target, interaction.patch, if_match=interaction.if_match
        )
        return Answer(200, result.stored)


_READS = frozenset({Kind.READ, Kind.VREAD, Kind.SEARCH, Kind.HISTORY})


def _written(result: WriteResult) -> Answer:
    return Answer(201 if result.created else 200, result.stored)


def _sent_labels(body: object, resource_type: str = "List") -> set[str]:
    """The DMP labels a written List (or document) carries as its writer sent it (before the
    server adds those of its entries, `access.list_labels`, or keeps those of the document
    it changes); none for a body the validation will refuse."""
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        return set()
    try:
        return list_labels.dmp_labels(body)
    except (AttributeError, TypeError):
        return set()


def _is_document(answer: Answer) -> bool:
    stored = answer.stored
    return stored is not None and stored.resource_type == "DocumentReference"


def _answered_as_sent(answer: Answer, sent: set[str]) -> Answer:
    """A system's document write answered with the DMP labels it sent, and no other."""
    stored = answer.stored
    assert stored is not None
    if stored.deleted:
        return answer
    body = stored.json()
    if not list_labels.dmp_labels(body) - sent:
        return answer
    shown = labels.without_dmp_labels(body)
    kept = labels.with_dmp_labels_of(shown, body)
    for coding in (kept.get("meta") or {}).get("security") or []:
        if coding.get("code") in sent:
            shown.setdefault("meta", {}).setdefault("security", []).append(coding)
    for concept in kept.get("securityLabel") or []:
        codings = [c for c in concept.get("coding") or [] if c.get("code") in sent]
        if codings:
            shown.setdefault("securityLabel", []).append({"coding": codings})
    return replace(answer, stored=replace(stored, body=orjson.dumps(shown)))


def _without_derived_labels(answer: Answer, sent: set[str]) -> Answer:
    """A write's answer, less the DMP labels the server gave a List from its entries and its
    writer did not send (`access.list_labels`).

    A List takes the labels all the documents it names share, read as the server reads
    them: answered whole, the List told its writer the label of a document they may not read,
    and that its id names a document of the record (an unknown id adds none). A system client
    (R15, it reads no document) learned a MASQUE_PS document's label from its deposit's
    answer; a practitioner a masked document's, the patient an INVISIBLE_PATIENT one's, a
    parent an INVISIBLE_REPRESENTANTS_LEGAUX one's (R14, R18). The List is stored labelled;
    the answer says what the writer sent (a PATCH sends no label: none is answered)."""
    stored = answer.stored
    if stored is None or stored.resource_type != "List" or stored.deleted:
        return answer
    body = stored.json()
    derived = list_labels.dmp_labels(body) - sent
    if not derived:
        return answer
    meta = body.get("meta") or {}
    kept = [
        coding
        for coding in meta.get("security") or []
        if not (
            isinstance(coding, dict)
            and coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY
            and coding.get("code") in derived
        )
    ]
    if kept:
        meta["security"] = kept
    else:
        meta.pop("security", None)
    return replace(answer, stored=replace(stored, body=orjson.dumps(body)))


__all__ = ["Dispatcher", "Publish", "Within"]

"""Search decisions: a search, its includes, its chains and `_has`, and the TD0.2 existence
check, as the requester may run them.

The Permit's constraints become clauses of the query (invariant 2: pushed down, never
filtered after), so that pages, totals and includes reveal nothing hidden (R18). The patient
a search designates (R04) and that patient's record are facts (`port.Facts`); what is made
of them is decided here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import orjson

from fhir_server.access import hidden_references
from fhir_server.access.constraints import matches as constraint_matches
from fhir_server.access.constraints import reference_target
from fhir_server.access.decision import Deny, Permit
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity
from fhir_server.auth.scopes import ScopeError
from fhir_server.errors import error
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.query import (
    And,
    Chain,
    Everything,
    Has,
    IdTest,
    InCompartment,
    Missing,
    Node,
    Not,
    Or,
    ReferenceTest,
    SearchQuery,
    TokenTest,
    all_of,
)
from fhir_server.search.simplify import without_implied_compartment
from fhir_server.service import existence_check
from fhir_server.service.gate.common import (
    INTERNAL_PERMIT,
    NOTHING,
    PATIENT_PARAMS,
    conjuncts,
    patient_designation,
    scope_set,
)
from fhir_server.service.gate.reads import ReadGate

# Search decisions kept per (requester, type, record): a record's facts are cached per record
# epoch, so a new fact (a Consent, a block) makes a new record object and a new decision.
SEARCH_DECISIONS = 4096


class SearchGate(ReadGate):
    """`constrain_search`, `include_constraint` and `existence_check`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._decisions: OrderedDict[tuple, tuple[PatientRecord | None, object]] = OrderedDict()
        self._decisions_lock = threading.Lock()

    def constrain_search(
        self, requester: Requester, query: SearchQuery, conditional: bool = False
    ) -> tuple[SearchQuery, Permit]:
        """The search as `requester` may run it, and the Permit that let it through: its
        notes are for `after_search` (the caller hands them on with the result)."""
        if requester.kind is ActorKind.INTERNAL:
            return query, INTERNAL_PERMIT
        resource_type = query.resource_type
        if resource_type is None:
            self.audit.refusal(requester, "search-system", [], "R04")
            raise error(
                400,
                "invalid",
                "a search must name a resource type and one patient (R04)",
                details_code="R04",
            )
        _refuse_sort_by_naming_element(query)
        _refuse_list_labels(query)
        scope_node = self._check_scopes(requester, resource_type, "search")
        given, patient_id = self.facts.designated_patient(resource_type, query.where)
        self._check_search_binding(requester, "search-type", given, patient_id)
        acting = self.facts.acting_for(requester)
        record_id = patient_id if given else acting
        record = self.facts.record(record_id) if record_id else None
        if (
            record is not None
            and given
            and _designation_reads_patient(resource_type, query.where)
            and self._outside_patient_scopes(
                requester, record.patient_id, scope_node if resource_type == "Patient" else None
            )
        ):
            # The Patient designated (by id or INS in a search of Patient, or through a
            # `patient.identifier` chain) is one the token's scopes for Patient leave out: the
            # search is judged as for an unknown patient (R18), as the read of that Patient
            # is (404). It was judged on the record: 403 (R10, closed, opposed) or 200 with no
            # entry against 404 for an unknown one told a token confined to other Patients
            # which ids and INS have a record, and its state.
            record = None
        decision = self._decide_search(requester, resource_type, record, given)
        patients = [record.patient_id] if record else []
        if isinstance(decision, Deny):
            self.audit.refusal(
                requester, "search-type", patients, decision.rule, resource_type=resource_type
            )
            raise decision.to_error()
        where = query.where
        if given and patient_id:
            where = self._resolved_patient_chain(requester, query, patient_id, record)
        where = self._constrain_joins(requester, query, where)
        constrained_where = without_implied_compartment(
            all_of(
                where,
                decision.constraints,
                scope_node,
                self._binding_node(requester, resource_type, decision.constraints),
            ),
            resource_type,
            self.registry,
        )
        constrained = replace(
            query,
            where=constrained_where,
            rare_filters=_top_level(decision.rare_filters, constrained_where),
        )
        self.facts.remember_designated(resource_type, constrained.where, (given, patient_id))
        return constrained, decision

    def existence_check(
        self, requester: Requester, check: existence_check.ExistenceCheck
    ) -> tuple[list[tuple[str, str, bytes]], bool]:
        """TD0.2 (`service.existence_check`): (the reduced Patient or nothing, answered). Not
        answered (False): the search is judged as any other. Scopes and the patient binding
        are checked first, refusing as a search would."""
        scope_node = self._check_scopes(requester, "Patient", "search")
        given, patient_id = self.facts.designated_patient("Patient", check.where)
        self._check_search_binding(requester, "search-type", given, patient_id)
        if patient_id is not None and self._outside_patient_scopes(
            requester, patient_id, scope_node
        ):
            # A Patient the token's scopes leave out (a `patient/` scope whose patient in
            # context is another or none, a granular `Patient.rs?...` it does not satisfy):
            # answered as an INS without record (R02, R18). The check told its id, whether
            # the record was open, closed (and why) or opposed, whatever the scopes said.
            self.audit.access(requester, "search-type", [], [])
            return [], True
        if patient_id is None:
            # No record for this INS: 0 entries, as TD0.2 says, audited as an empty search
            # (two would be a store fault: judged as usual).
            if self.facts.patients_matching(check.where):
                return [], False
            self.audit.access(requester, "search-type", [], [])
            return [], True
        record = self.facts.record(patient_id)
        if record is None:
            return [], False
        decision = self._decide_search(requester, "Patient", record, True)
        if not existence_check.answers_instead(decision):
            return [], False
        closed = None if record.is_open else self.facts.closed(patient_id)
        patient = existence_check.reduced_patient(
            check, record, closed, record.is_general_practitioner(requester.subject_id)
        )
        entity = replace(
            DataEntity.from_resource(patient),
            details=(("existence-check", "TD0.2"),),
        )
        self.audit.access(requester, "search-type", [patient_id], [entity])
        return [("Patient", patient_id, orjson.dumps(patient))], True

    def _outside_patient_scopes(
        self, requester: Requester, patient_id: str, scope_node: Node | None = None
    ) -> bool:
        """Whether the token's scopes for a search of Patient (`scope_node`, computed when
        not given; none granting it: all are outside) leave out Patient `patient_id`:
        its context (a `patient/` scope: the patient in context's compartment) and its
        granular constraint, judged by the store as the search would apply them."""
        if scope_node is None:
            try:
                scope_node = self._check_scopes_quietly(requester, "Patient")
            except ScopeError:
                return True
        if isinstance(scope_node, Everything):
            return False
        where = all_of(IdTest((patient_id,)), scope_node)
        return not self.facts.internal_search("Patient", where, 1)

    def _decide_search(
        self,
        requester: Requester,
        resource_type: str,
        record: PatientRecord | None,
        given: bool,
    ):
        """`DmpPolicy.decide_search`, remembered for the record object it was decided on."""
        key = (requester, resource_type, id(record), given)
        with self._decisions_lock:
            known = self._decisions.get(key)
            if known is not None and known[0] is record:
                self._decisions.move_to_end(key)
                return known[1]
        decision = self.policy.decide_search(requester, resource_type, record, patient_given=given)
        with self._decisions_lock:
            self._decisions[key] = (record, decision)
            while len(self._decisions) > SEARCH_DECISIONS:
                self._decisions.popitem(last=False)
        return decision

    def _resolved_patient_chain(
        self,
        requester: Requester,
        query: SearchQuery,
        patient_id: str,
        record: PatientRecord | None,
    ) -> Node:
        """The query with its designating chain (`patient.identifier=INS`) replaced by the
        reference to the one Patient it resolved to, when the requester may see that Patient:
        the same matches, without a join per candidate.

        `record`: that patient's record facts, which hold the Patient they were read from
        (they are replaced whenever the Patient is written)."""
        parts = conjuncts(query.where)
        for index, part in enumerate(parts):
            if isinstance(part, ReferenceTest) and part.param in PATIENT_PARAMS:
                return query.where  # designated by a plain reference already
            # Only the chain that designated the patient (`patient_designation`, the first
            # one, as `designated_patient` reads them): another chain through `patient`
            # (`patient._has:...`) replaced by the reference lost its clause, and the search
            # found every visible document of the record whatever that clause said (R18).
            if isinstance(patient_designation(part), Chain):
                assert isinstance(part, Chain)
                if record is None or record.patient_id != patient_id or record.patient is None:
                    return query.where
                constraint = self.include_constraint(
                    requester, query, "Patient", known=(True, patient_id, record)
                )
                try:
                    visible = constraint_matches(constraint, record.patient)
                except (TypeError, ValueError):
                    return query.where
                if not visible:
                    return query.where
                reference = ReferenceTest(part.param, "Patient", patient_id)
                rewritten = [*parts[:index], reference, *parts[index + 1 :]]
                return all_of(*rewritten)
        return query.where

    def constrain_joins(self, requester: Requester, query: SearchQuery) -> SearchQuery:
        """`query` with its chained and `_has` clauses (and its `item` / `relatesto` naming
        a hidden resource) reading only what `requester` could search, the rest as given:
        for a search the server runs for a requester whose matches are judged one by one
        afterwards (a conditional PATCH's, `service.patch`). Judging the matches alone left
        the clauses reading the record unconstrained, so that a match told what they saw."""
        if requester.kind is ActorKind.INTERNAL:
            return query
        return replace(query, where=self._constrain_joins(requester, query, query.where))

    def _constrain_joins(
        self,
        requester: Requester,
        query: SearchQuery,
        node: Node,
        resource_type: str | None = None,
    ) -> Node:
        """Chained and `_has` clauses only look at what the requester could search, and a
        List `item` or DocumentReference `relatesto` naming a resource hidden from them
        matches nothing, as for one that does not exist (R18). `resource_type`: the type
        `node` is evaluated on (the query's, by default)."""
        resource_type = resource_type or query.resource_type or ""
        match node:
            case Chain(param, target_type, where):
                inner = self._constrain_joins(requester, query, where, target_type)
                return Chain(
                    param,
                    target_type,
                    all_of(inner, self.include_constraint(requester, query, target_type)),
                )
            case Has(source_type, param, where):
                inner = self._constrain_joins(requester, query, where, source_type)
                return Has(
                    source_type,
                    param,
                    all_of(inner, self.include_constraint(requester, query, source_type)),
                )
            case And(parts):
                return And(
                    tuple(
                        self._constrain_joins(requester, query, part, resource_type)
                        for part in parts
                    )
                )
            case Or(parts):
                return Or(
                    tuple(
                        self._constrain_joins(requester, query, part, resource_type)
                        for part in parts
                    )
                )
            case Not(part):
                return Not(self._constrain_joins(requester, query, part, resource_type))
            case ReferenceTest(param=param, target_type=target_type, target_id=target_id) if (
                target_id is not None
                and hidden_references.searches_naming(resource_type, param)
                and not self._names_one_shown(requester, target_type, target_id)
            ):
                return NOTHING
            case ReferenceTest(param=param, identifier_value=value) if (
                value is not None and hidden_references.searches_naming(resource_type, param)
            ):
                # `relatesto:identifier=<entryUUID>`: ITI-41's relations keep the target's
                # identifier beside its reference, so an identifier found the document
                # whose relation to a hidden one is not served. Only what names no hidden
                # document is searched by identifier (fail closed).
                return all_of(node, Not(self._names_hidden(requester, query, param)))
            case Missing(param=param, missing=missing) if hidden_references.searches_naming(
                resource_type, param
            ):
                shown = self._names_something_shown(requester, query, param)
                return Not(shown) if missing else shown
            case Missing(param="relation" | "relationship", missing=missing) if (
                resource_type == "DocumentReference"
            ):
                # Every relation has its code and its target: a document has one served
                # exactly when `relatesto:missing=false` would find it. On the stored codes,
                # `relation:missing=false` (and `relationship:`) found a document whose every
                # relation was hidden, served without relatesTo.
                shown = self._names_something_shown(requester, query, "relatesto")
                return Not(shown) if missing else shown
            case TokenTest(param="relation") if resource_type == "DocumentReference":
                return all_of(node, Not(self._names_hidden(requester, query, "relatesto")))
            case TokenTest(param="relationship", code=code) if resource_type == "DocumentReference":
                target = reference_target(str(code or "").partition("$")[2])
                if target is None or not self._names_one_shown(requester, *target):
                    return NOTHING
        return node

    def _names_hidden(self, requester: Requester, query: SearchQuery, param: str) -> Node:
        """A resource whose naming element (`param`: List `item`, DocumentReference
        `relatesto`) names a document of the record searched that is hidden from
        `requester`; without a record, one naming anything (fail closed). Within the record,
        so that the clause stays as small as the record for the engines that resolve a
        chain into ids: a DocumentReference relation into another record is refused at
        deposit, and a List naming only another record's documents is a known limit
        (docs/access-rules.md, R14)."""
        seen = self.include_constraint(requester, query, "DocumentReference")
        given, patient_id = self.facts.designated_patient(query.resource_type or "", query.where)
        record_id = patient_id if given else self.facts.acting_for(requester)
        if not record_id:
            return Missing(param, False)
        return Chain(param, "DocumentReference", all_of(InCompartment(record_id), Not(seen)))

    def _names_something_shown(self, requester: Requester, query: SearchQuery, param: str) -> Node:
        """A resource served to `requester` with its naming element (`param`) not empty: it
        names a document they may read, or names something and no hidden document (a
        dangling or foreign reference is served as stored). `param:missing` is judged on
        what is served (R14): on the stored items, `relatesto:missing=false` found a
        document whose every relation was hidden, served without relatesTo; `relation=` and
        `relationship=code$DocumentReference/<hidden id>` likewise matched a hidden
        relation. Fail closed: a resource naming both a hidden document and a dangling
        reference is taken as naming nothing shown."""
        seen = self.include_constraint(requester, query, "DocumentReference")
        return Or(
            (
                Chain(param, "DocumentReference", seen),
                all_of(Missing(param, False), Not(self._names_hidden(requester, query, param))),
            )
        )

    def _names_one_shown(
        self, requester: Requester, target_type: str | None, target_id: str
    ) -> bool:
        """Whether a searched reference (`relatesto=`, `item=`, `relationship=code$`) names a
        resource `requester` may read: one stored and live under that id (without a type,
        `item=ID`: under some served type, and every one so stored readable). Otherwise the
        clause matches nothing, for a hidden id and a missing one alike (R18): the search
        is the same query then, so its cursor is too. Only a hidden one was rewritten, an
        unknown one kept, and the `next` link's cursor, bound to the query it continues,
        carried a fingerprint that was the same for every hidden id, another for each
        unknown one: comparing two searches' cursors told whether an id names a document
        the requester may not read, in any record. A reference naming no stored resource
        (refused at deposit for a relation) finds nothing."""
        types = [target_type] if target_type else SERVED_TYPES
        stored = [t for t in types if self._is_live(t, target_id)]
        return bool(stored) and all(self._may_read_target(requester, t, target_id) for t in stored)

    def _is_live(self, resource_type: str, resource_id: str) -> bool:
        """Whether a resource of that type and id is stored and not deleted."""
        if resource_type not in SERVED_TYPES:
            return False
        current = self.facts.current(resource_type, resource_id)
        return current is not None and not current.deleted

    def include_constraint(
        self,
        requester: Requester,
        query: SearchQuery,
        target_type: str,
        known: tuple[bool, str | None, PatientRecord | None] | None = None,
    ) -> Node:
        """What an `_include`/`_revinclude` of `target_type` may add: what a search of it would.

        `known`: (a patient was designated, its id, the record) when the caller found them
        for this query already."""
        if requester.kind is ActorKind.INTERNAL:
            return Everything()
        if target_type == "Binary":
            return NOTHING
        if known is not None:
            given, _, record = known
        else:
            given, patient_id = self.facts.designated_patient(
                query.resource_type or "", query.where
            )
            record_id = patient_id if given else self.facts.acting_for(requester)
            record = self.facts.record(record_id) if record_id else None
        try:
            scope_node = self._check_scopes_quietly(requester, target_type)
        except ScopeError:
            return NOTHING
        decision = self._decide_search(requester, target_type, record, given)
        if isinstance(decision, Deny):
            return NOTHING
        bound = self._binding_node(requester, target_type, decision.constraints)
        return all_of(decision.constraints, scope_node, bound)

    def _check_scopes_quietly(self, requester: Requester, resource_type: str) -> Node:
        """`_check_scopes` without its refusal's audit: an include the scopes do not grant
        adds nothing, it is not a refused request."""
        scopes = scope_set(requester.scopes)
        if not scopes.allows(resource_type, "search"):
            raise ScopeError("not granted")
        # Granular constraints included: an include of the type is confined as a search of
        # it is (the included resources were served whatever their value of the parameter).
        return self._scope_node(requester, resource_type, "search", scopes, audit=False)


def _refuse_sort_by_naming_element(query: SearchQuery) -> None:
    """A `_sort` by a parameter over a naming element (DocumentReference `relatesto`,
    `relation`, List `item`) is refused (400), for every requester alike, before the record
    is looked at (R18, fail closed). The store orders by the stored items, those naming a
    document hidden from the requester included, where the served copy leaves them out
    (`hidden_references.without_hidden`): a visible document whose only relation is hidden
    was served without `relatesTo` and sorted as having one, before the documents without,
    and a page's `next` link carried its sort key in the cursor, the hidden document's id
    in clear. Ordering by what is served only would need every key judged per requester."""
    resource_type = query.resource_type or ""
    for key in query.sort:
        if hidden_references.reads_naming_element(resource_type, key.param):
            raise error(
                400,
                "not-supported",
                f"_sort cannot order {resource_type} by {key.param!r}: its values may name "
                "resources a requester is not shown (R18)",
                "_sort",
            )


def _refuse_list_labels(query: SearchQuery) -> None:
    """A criterion or a `_sort` on a List's `_security` (at any level: `_has:List:item:
    _security=`, a chain to a List) is refused (400), for every requester but the server,
    before the record is read (R14, R18, fail closed). The DMP labels a List carries are
    those all its entries share (`access.list_labels`), hidden ones included; a List is
    served with those its served entries share too (`ReadGate.served_body`), but the store
    searches the stored labels: `List?_security=MASQUE_PS` found a List of a masked
    document alone and not a List of the same document and one invisible to the patient,
    telling the patient that the second held a hidden entry."""
    if query.resource_type == "List" and any(key.param == "_security" for key in query.sort):
        raise _list_labels_refusal("_sort")
    if _reads_list_labels(query.where, query.resource_type or ""):
        raise _list_labels_refusal("_security")


def _reads_list_labels(node: Node, resource_type: str) -> bool:
    """Whether `node`, evaluated on `resource_type`, tests a List's `_security`."""
    match node:
        case Chain(target_type=target_type, where=where):
            return _reads_list_labels(where, target_type)
        case Has(source_type=source_type, where=where):
            return _reads_list_labels(where, source_type)
        case And(parts=parts) | Or(parts=parts):
            return any(_reads_list_labels(part, resource_type) for part in parts)
        case Not(part=part):
            return _reads_list_labels(part, resource_type)
        case TokenTest(param="_security") | Missing(param="_security"):
            return resource_type == "List"
    return False


def _list_labels_refusal(parameter: str):
    return error(
        400,
        "not-supported",
        "a List cannot be searched or sorted by its security labels: they are those its "
        "entries share, entries a requester is not shown included (R14, R18)",
        parameter,
    )


def _designation_reads_patient(resource_type: str, where: Node) -> bool:
    """Whether the patient a search designates (`GateFacts.designated_patient`) is found by
    reading Patients: a search of Patient (by `_id` or `identifier`), or a chain through
    the patient parameter (`patient.identifier=<INS>`). A plain reference (`patient=<id>`)
    reads no Patient: it names the record the search is judged on."""
    if resource_type == "Patient":
        return True
    for part in conjuncts(where):
        designating = patient_designation(part)
        if designating is not None:
            return isinstance(designating, Chain)
    return False


def _top_level(nodes: tuple[Node, ...], where: Node) -> tuple[Node, ...]:
    """Those of `nodes` that are top-level conjuncts of `where` (`SearchQuery.rare_filters`)."""
    if not nodes:
        return ()
    parts = where.parts if isinstance(where, And) else (where,)
    return tuple(node for node in nodes if node in parts)

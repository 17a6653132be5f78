"""What every decision of the gate shares: its constants, the scopes (R02) and the patient
binding (`access.binding`), checked the same way for reads, searches and writes.

`GateCore` holds what the decisions are made with (the facts port, the policy, the search
registry, the audit trail) and nothing that reads the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING

from fhir_server.access import binding as patient_binding
from fhir_server.access import hidden_references
from fhir_server.access.constraints import compartment_of
from fhir_server.access.decision import Permit
from fhir_server.access.policy import DIRECTORY_TYPES, DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import security_labels_of
from fhir_server.auth.scopes import ScopeSet
from fhir_server.errors import FhirError, error
from fhir_server.search.parameters import IGNORED_SILENTLY, RESULT_PARAMS, parse_search
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
    TokenTest,
    all_of,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.following import following

if TYPE_CHECKING:
    from fhir_server.service.audit_trail import AuditTrail
    from fhir_server.service.gate.port import Facts

NOTHING: Node = Not(Everything())
# What the server's own searches and writes are let through with: no constraint, no note.
INTERNAL_PERMIT = Permit(Everything(), "internal")
# The search parameters that designate a search's patient (R04).
PATIENT_PARAMS = ("patient", "subject")
# What the server's own searches bind their paging cursors to.
INTERNAL_BINDING = "internal"


class ReadPurpose(StrEnum):
    READ = "read"
    VREAD = "vread"
    HISTORY = "history-instance"


@lru_cache(maxsize=1024)
def scope_set(scopes: tuple[str, ...]) -> ScopeSet:
    """A token's scopes parsed once: the same scopes come with every request of a token."""
    return ScopeSet.from_scopes(scopes)


def conjuncts(where: Node) -> list[Node]:
    """The top-level clauses a query's criteria are the conjunction of."""
    return list(where.parts) if isinstance(where, And) else [where]


def patients_of(resource: dict) -> list[str]:
    """The patients whose records a resource belongs to, sorted; a Patient's is its own."""
    if resource.get("resourceType") == "Patient" and resource.get("id"):
        return [resource["id"]]
    return sorted(compartment_of(resource))


class GateCore:
    """The decisions' common ground: the facts they ask, the policy they apply, the audit
    they write to, and the checks every interaction passes (scopes, binding)."""

    def __init__(
        self, facts: Facts, registry: SearchRegistry, policy: DmpPolicy, audit: AuditTrail
    ) -> None:
        self.facts = facts
        self.registry = registry
        self.policy = policy
        self.audit = audit

    def binding(self, requester: Requester) -> str:
        """What a paging cursor is bound to: the requester and the token's scopes."""
        material = f"{requester.kind}|{requester.subject_id}|{requester.access_mode}|{' '.join(requester.scopes)}"
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def record(self, patient_id: str) -> PatientRecord | None:
        """The facts about one patient's record (`port.Facts.record`)."""
        return self.facts.record(patient_id)

    def judged_record(self, patient_id: str) -> tuple[PatientRecord | None, int | None]:
        """The record a write is judged on and the epoch it holds under (None: facts with
        no epoch, a test's), which the write's transaction confirms (`after_write`)."""
        return self.facts.record(patient_id), None

    def follow(self, resource_type: str, resource_id: str) -> dict | None:
        """The current version of what a judged resource names, as a search's chain reads
        it (absent or deleted: None): a List is judged through its documents (R13, R14)."""
        return following(self.facts.current)(resource_type, resource_id)

    def patients_matching(self, where: Node) -> list[str]:
        """The Patients a designating clause (an INS) names (`port.Facts.patients_matching`)."""
        return self.facts.patients_matching(where)

    def bound_patient(self, requester: Requester) -> tuple[bool, str | None]:
        """(the request is bound to a patient, its id): `port.Facts.bound_patient`."""
        return self.facts.bound_patient(requester)

    def _record_of(self, resource: dict, patients: list[str] | None = None) -> PatientRecord | None:
        """The record of the first patient in whose compartment `resource` is (`patients`:
        those, sorted, when the caller has them already)."""
        if patients is None:
            patients = patients_of(resource)
        return self.facts.record(patients[0]) if patients else None

    # -- scopes (R02) ----------------------------------------------------------------------

    def _check_scopes(self, requester: Requester, resource_type: str, interaction: str) -> Node:
        """The scope constraint for this interaction, or a 403 when no scope grants it."""
        if requester.kind is ActorKind.INTERNAL:
            return Everything()
        scopes = scope_set(requester.scopes)
        if not scopes.allows(resource_type, interaction):
            self.audit.refusal(requester, interaction, [], "R02", resource_type=resource_type)
            raise error(
                403,
                "forbidden",
                f"the token's scopes do not allow {interaction} on {resource_type}",
                details_code="R02",
            )
        return self._scope_node(requester, resource_type, interaction, scopes, audit=True)

    def _scope_node(
        self,
        requester: Requester,
        resource_type: str,
        interaction: str,
        scopes: ScopeSet,
        *,
        audit: bool,
    ) -> Node:
        """What the granting scopes confine this interaction to: the union (OR) of each
        scope's context (a `patient/` scope: the patient in context's compartment, nothing
        without one) AND its granular constraint.

        Taken apart, the contexts and the constraints were each dropped by the other:
        `patient/*.rs user/DocumentReference.rs?category=X` served every DocumentReference
        of every record, the patient/ scope lifting the category and the user/ scope the
        compartment. Only a search applies a granular constraint: for any other interaction
        a constrained scope grants nothing, and when nothing else does, a 403."""
        granting = scopes.granting(resource_type, interaction)
        if interaction != "search":
            granting = [scope for scope in granting if not scope.params]
            if not granting:
                # A granular scope (`?param=value`) is a search the grant is confined to: a
                # read, vread, history or write under it served the resource whatever its
                # value of `param`. Refused, not ignored.
                if audit:
                    self.audit.refusal(
                        requester, interaction, [], "R02", resource_type=resource_type
                    )
                raise error(
                    403,
                    "forbidden",
                    f"the token's scopes allow {interaction} on {resource_type} only under a"
                    " granular constraint (?param=value), which only a search applies: search"
                    f" {resource_type} instead",
                    details_code="R02",
                )
        alternatives: list[Node] = []
        for scope in granting:
            if scope.context == "patient":
                acting = self.facts.acting_for(requester) or requester.patient_id
                context: Node = InCompartment(acting) if acting else NOTHING
            else:
                context = Everything()
            constraint = (
                self._granular_clause(requester, resource_type, interaction, list(scope.params))
                if scope.params
                else Everything()
            )
            node = all_of(context, constraint)
            if isinstance(node, Everything):
                return node
            if node not in alternatives:
                alternatives.append(node)
        return alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))

    def _granular_clause(
        self,
        requester: Requester,
        resource_type: str,
        interaction: str,
        params: list[tuple[str, str]],
    ) -> Node:
        """The clause of one granular constraint; 403 (R02) when it is no filter the server
        can apply: a result parameter (`_count`, `_summary`, `_elements`, `_sort`,
        `_include`...) confined nothing and the grant was served whole; an unknown
        parameter or a bad value was a 400 naming a parameter the request never sent; a
        chain, a `_has` or a naming parameter (`_judged_join`) read beyond what it confines.

        The refusal is audited (R16) whatever asked for the clause: it refuses the request
        (a search of the type, or one whose include reaches it), as a read refused under a
        granular scope is. It left no event: the one refused access untraced."""
        wording = "&".join(f"{name}={value}" for name, value in params)
        reason = None
        for name, _ in params:
            base = name.partition(":")[0]
            if base in RESULT_PARAMS or base in IGNORED_SILENTLY:
                reason = f"names {name}, which filters nothing: it cannot be applied"
                break
        if reason is None:
            try:
                clause = parse_search(resource_type, params, self.registry).query.where
            except FhirError as exc:
                reason = f"cannot be applied: {exc.message}"
            else:
                judged = _judged_join(resource_type, clause)
                if judged is None:
                    return clause
                # A search's chains, `_has` and naming parameters are confined to what the
                # requester may see (`SearchGate._constrain_joins`); the scope's clause was
                # added to the search as it stood: `patient/Patient.rs?_has:DocumentReference:
                # patient:security-label=INVISIBLE_PATIENT` told the patient that a document
                # hidden from them exists (their Patient found or not). Refused, not judged.
                reason = (
                    f"names {judged}, which reads other resources than those it confines: it"
                    " cannot be applied"
                )
        self.audit.refusal(requester, interaction, [], "R02", resource_type=resource_type)
        raise error(
            403,
            "forbidden",
            f"the token's granular scope on {resource_type} (?{wording}) {reason}",
            details_code="R02",
        )

    # -- the credentials' patient (XUA resource-id, SMART patient context) -----------------

    def _outside_binding(self, requester: Requester, patients: Iterable[str]) -> bool:
        """Whether a resource of `patients` is outside the record `requester` is bound to."""
        bound, bound_id = self.facts.bound_patient(requester)
        return bound and patient_binding.outside(bound_id, patients)

    def _binding_node(self, requester: Requester, resource_type: str, constraints: Node) -> Node:
        """What a search (or an include) of `resource_type` is confined to by the binding:
        the bound patient's compartment, for any type but the directory's; nothing more when
        the policy's `constraints` hold that clause already."""
        bound, bound_id = self.facts.bound_patient(requester)
        if not bound or resource_type in DIRECTORY_TYPES:
            return Everything()
        node = InCompartment(bound_id) if bound_id else NOTHING
        return Everything() if node in conjuncts(constraints) else node

    def _check_search_binding(
        self, requester: Requester, interaction: str, given: bool, patient_id: str | None
    ) -> None:
        """Refuse (403, audited) a search designating another patient than the bound one.

        Checked before that patient's record is looked at, so the answer is the same whether
        it exists, is open or opposed: a designation resolving to no Patient is refused too
        (no probing which INS are known), unless the credentials' own patient is just as
        unknown (then the policy answers "unknown patient", as without a binding)."""
        bound, bound_id = self.facts.bound_patient(requester)
        if not given or not bound or patient_id == bound_id:
            return
        deny = patient_binding.refused_search_or_write()
        self.audit.refusal(requester, interaction, [patient_id] if patient_id else [], deny.rule)
        raise deny.to_error()

    def _check_write_binding(
        self, requester: Requester, interaction: str, resource_type: str, new, old
    ) -> None:
        """Refuse (audited) a write outside the bound record: an existing resource of another
        record as its read would be (not found), new content naming another patient 403."""
        deny = None
        patients: frozenset[str] = frozenset()
        if old is not None and self._outside_binding(requester, compartment_of(old)):
            patients = compartment_of(old)
            deny = patient_binding.hidden_resource(resource_type, str(old.get("id", "")))
        elif new is not None and self._outside_binding(requester, compartment_of(new)):
            patients = compartment_of(new)
            deny = patient_binding.refused_search_or_write()
        if deny is not None:
            self.audit.refusal(
                requester,
                interaction,
                sorted(patients),
                deny.rule,
                resource_type=resource_type,
                labels=security_labels_of(old) if old else (),
            )
            raise deny.to_error()


def _judged_join(resource_type: str, node: Node) -> str | None:
    """The parameter of `node` (a granular scope's clause on `resource_type`) that reads
    beyond the resource itself, or None: a chain, a `_has`, or a parameter searching by what
    a naming element (List `item`, DocumentReference `relatesto`, `relation`,
    `relationship`) names, or a List's `_security` (its entries' labels). A search's own are confined to what the requester may see
    (`SearchGate._constrain_joins`); a scope's would be evaluated unconfined."""
    match node:
        case Chain(param=param):
            return param
        case Has(source_type=source, param=param):
            return f"_has:{source}:{param}"
        case And(parts) | Or(parts):
            for part in parts:
                found = _judged_join(resource_type, part)
                if found is not None:
                    return found
            return None
        case Not(part):
            return _judged_join(resource_type, part)
        case ReferenceTest(param=param) | Missing(param=param) if hidden_references.searches_naming(
            resource_type, param
        ):
            return param
        case TokenTest(param=param) | Missing(param=param) if (
            resource_type == "DocumentReference" and param in ("relation", "relationship")
        ):
            return param
        case TokenTest(param="_security") | Missing(param="_security") if resource_type == "List":
            # A List's labels are those its entries share, hidden ones included: a search's
            # own criterion on them is refused (`searches._refuse_list_labels`, R18).
            return "_security"
    return None


def patient_designation(part: Node) -> ReferenceTest | Chain | None:
    """`part` if it designates the patient of a search of another type than Patient: a
    reference to a Patient by id through a patient parameter (`patient=<id>`), or a chain
    through it to Patient by what designates a Patient in a search of Patient
    (`patient.identifier=<INS>`, `patient._id=<id>`: `designates_patients`).

    Any other chain (`patient._has:DocumentReference:patient:category=X`, `patient.name=`)
    designates nothing and is judged as any other clause (R04, R14, R18): taken for a
    designation, it was looked up over every Patient of the store without the requester's
    constraints, the one record it found judged (403 or 200) where none answered 404, and
    the chain then replaced by a reference to that Patient. A professional authorized on a
    record learned, by 200 against 404, whether it held a document masked from them of a
    given class, identifier or content, and the patient one invisible to them; any
    professional learned which record, if any, holds a document of a given uniqueId."""
    if (
        isinstance(part, ReferenceTest)
        and part.param in PATIENT_PARAMS
        and part.target_id
        and part.target_type in (None, "Patient")
    ):
        return part
    if (
        isinstance(part, Chain)
        and part.param in PATIENT_PARAMS
        and part.target_type == "Patient"
        and designates_patients(part.where)
    ):
        return part
    return None


def designates_patients(where: Node) -> bool:
    """Whether `where`, a clause on Patient, designates Patients by what R04 names: one
    `_id`, or an `identifier` token with a value (an INS). Only such a clause is looked up
    to find the record a search is judged on (`GateFacts.designated_patient`)."""
    if isinstance(where, IdTest):
        return len(where.ids) == 1
    return isinstance(where, TokenTest) and where.param == "identifier" and bool(where.code)

"""The gate's decisions judged on facts given by hand, with no store (issue #22, deliverable 3:
"facts apart from decisions in the gate").

`GateDecisions` asks every fact through `port.Facts`; here a few dictionaries answer it, so
a rule of docs/access-rules.md can be checked through the gate (scopes, record, policy,
binding, audit) without opening a store. Each test names the rule it checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest

from fhir_server.access.decision import not_found_message
from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import FhirError, not_found
from fhir_server.search.query import InCompartment, ReferenceTest, SearchQuery
from fhir_server.service.gate import GateDecisions, ReadPurpose
from fhir_server.service.gate.common import conjuncts
from fhir_server.store.base import StoredResource
from fhir_server.terminology import MASQUE_PS
from tests.unit.test_access_rules import AUTHORIZED, STRANGER, document, record

SCOPES = ("user/*.cruds",)


def practitioner(idnat: str) -> Requester:
    return Requester(ActorKind.PRACTITIONER, idnat, scopes=SCOPES, profession="10")


@dataclass
class HandFacts:
    """`port.Facts` from dictionaries: records by patient id, current resources by
    (type, id), the documents owning each Binary."""

    records: dict[str, PatientRecord] = field(default_factory=dict)
    resources: dict[tuple[str, str], StoredResource] = field(default_factory=dict)
    owners: dict[str, list[dict]] = field(default_factory=dict)

    def record(self, patient_id):
        return self.records.get(patient_id)

    def patients_matching(self, where):
        return []

    def acting_for(self, requester):
        return requester.subject_id if requester.kind is ActorKind.PATIENT else None

    def designated_patient(self, resource_type, where):
        if isinstance(where, ReferenceTest) and where.param == "patient":
            return True, where.target_id
        return False, None

    def remember_designated(self, resource_type, where, found):
        pass

    def bound_patient(self, requester):
        return False, None

    def current(self, resource_type, resource_id):
        return self.resources.get((resource_type, resource_id))

    def content(self, stored):
        return stored.json()

    def binary_documents(self, binary_id, binary):
        return self.owners.get(binary_id, [])

    def closed(self, patient_id):
        raise AssertionError("no closed record here")

    def check_message(self, policy, requester, message, record):
        pass

    def received_on_read(self, registry, clock, requester, stored, record):
        return None


@dataclass
class Trail:
    """The audit trail's calls, as (kind, interaction, patients, rule or None)."""

    events: list[tuple] = field(default_factory=list)
    enabled: bool = True

    def refusal(self, requester, interaction, patients, rule, **_):
        self.events.append(("refusal", interaction, sorted(patients), rule))

    def access(self, requester, interaction, patients, entities, **_):
        self.events.append(("access", interaction, sorted(patients), None))


def version(resource: dict) -> StoredResource:
    """Version 1 of `resource`, as a store would hand it back."""
    return StoredResource(
        resource["resourceType"], resource["id"], 1, 0, False, orjson.dumps(resource)
    )


@pytest.fixture
def gate(registry):
    facts = HandFacts(records={"p1": record()})
    return GateDecisions(facts, registry, DmpPolicy(load_matrix()), Trail())


def test_r10_an_authorized_practitioner_reads_a_document_and_the_read_is_audited(gate):
    gate.authorize_read(practitioner(AUTHORIZED), version(document()), ReadPurpose.READ)
    assert gate.audit.events == [("access", "read", ["p1"], None)]


def test_r18_a_stranger_reading_a_document_gets_the_not_found_answer_and_r10_is_audited(gate):
    with pytest.raises(FhirError) as refused:
        gate.authorize_read(practitioner(STRANGER), version(document()), ReadPurpose.READ)
    genuine = not_found(not_found_message("DocumentReference", "d1"))
    assert refused.value.operation_outcome() == genuine.operation_outcome()
    assert gate.audit.events == [("refusal", "read", ["p1"], "R10")]


def test_invariant_8_a_binary_is_judged_by_the_document_owning_it(gate):
    """A Binary is read as its owning DocumentReference is (R14: masked from practitioners
    but its author), whatever the Binary itself says."""
    binary = {"resourceType": "Binary", "id": "b-d1", "contentType": "application/pdf"}
    gate.facts.owners["b-d1"] = [document()]
    gate.authorize_read(practitioner(AUTHORIZED), version(binary), ReadPurpose.READ)
    gate.facts.owners["b-d1"] = [document(labels=(MASQUE_PS,))]
    with pytest.raises(FhirError) as refused:
        gate.authorize_read(practitioner(AUTHORIZED), version(binary), ReadPurpose.READ)
    assert refused.value.status == 404
    assert [event[0] for event in gate.audit.events] == ["access", "refusal"]


def test_invariant_2_a_permitted_search_carries_the_policy_constraints_in_its_query(gate):
    query = SearchQuery("DocumentReference", where=ReferenceTest("patient", "Patient", "p1"))
    constrained, permit = gate.constrain_search(practitioner(AUTHORIZED), query)
    asked, added = set(conjuncts(constrained.where)), conjuncts(permit.constraints)
    assert InCompartment("p1") in added  # implied by `patient=p1`, so left out of the query
    assert ReferenceTest("patient", "Patient", "p1") in asked
    assert {part for part in added if part != InCompartment("p1")} <= asked  # e.g. R14 masking


def test_r10_a_search_of_a_record_the_practitioner_may_not_access_is_refused_and_audited(gate):
    query = SearchQuery("DocumentReference", where=ReferenceTest("patient", "Patient", "p1"))
    with pytest.raises(FhirError):
        gate.constrain_search(practitioner(STRANGER), query)
    assert gate.audit.events == [("refusal", "search-type", ["p1"], "R10")]

"""Access clauses a query already implies are dropped (R13 constraints stay exact): the
CompartmentDefinition's parameters decide when `patient=P` implies P's compartment."""

from __future__ import annotations

import pytest

from fhir_server.paths import profiles_dir
from fhir_server.search.query import And, InCompartment, ReferenceTest, TokenTest
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.simplify import without_implied_compartment

STATUS = TokenTest("status", None, "current", any_system=True)


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(profiles_dir())


@pytest.mark.parametrize(
    ("resource_type", "test"),
    [
        ("DocumentReference", ReferenceTest("patient", None, "p1")),
        ("DocumentReference", ReferenceTest("subject", "Patient", "p1")),
        ("List", ReferenceTest("patient", None, "p1")),
        ("Consent", ReferenceTest("patient", None, "p1")),
        ("Communication", ReferenceTest("subject", "Patient", "p1")),
        ("AuditEvent", ReferenceTest("patient", None, "p1")),
    ],
)
def test_compartment_clause_implied_by_the_patient_reference_is_dropped(
    registry, resource_type, test
):
    where = And((test, STATUS, InCompartment("p1")))
    assert without_implied_compartment(where, resource_type, registry) == And((test, STATUS))


@pytest.mark.parametrize(
    ("resource_type", "where"),
    [
        # subject=p1 of any type may be a Group p1: not in Patient p1's compartment.
        ("DocumentReference", And((ReferenceTest("subject", None, "p1"), InCompartment("p1")))),
        # Another patient's reference says nothing of p1's compartment.
        ("DocumentReference", And((ReferenceTest("patient", None, "p2"), InCompartment("p1")))),
        # Nothing in the query names the patient.
        ("Consent", And((STATUS, InCompartment("p1")))),
        # `related` is not a compartment parameter of DocumentReference.
        ("DocumentReference", And((ReferenceTest("related", None, "p1"), InCompartment("p1")))),
    ],
)
def test_compartment_clause_kept_when_nothing_implies_it(registry, resource_type, where):
    assert without_implied_compartment(where, resource_type, registry) == where

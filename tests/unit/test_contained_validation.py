"""Issue #2 item 8 (errors): a contained resource the models cannot read is the client's
error, reported at its FHIRPath (a 400 OperationOutcome), never a server fault."""

from __future__ import annotations

import pytest

from fhir_server.resources.model import validate_resource

PATIENT = {"resourceType": "Patient", "name": [{"family": "Durand"}]}


@pytest.mark.parametrize(
    ("contained", "expression", "words"),
    [
        ([{"resourceType": None}], "Patient.contained[0].resourceType", "missing"),
        ([{"resourceType": 5}], "Patient.contained[0].resourceType", "missing"),
        ([{"resourceType": ["x"]}], "Patient.contained[0].resourceType", "missing"),
        ([{"id": "x"}], "Patient.contained[0].resourceType", "missing"),
        ([{"resourceType": "Nope"}], "Patient.contained[0].resourceType", "not an R4 resource"),
        ([{"resourceType": "HumanName"}], "Patient.contained[0].resourceType", "not an R4"),
        (["text"], "Patient.contained[0]", "must be a resource"),
        ({"resourceType": "Organization"}, "Patient.contained", "array"),
    ],
)
def test_a_contained_resource_that_cannot_be_read_is_named(contained, expression, words):
    issues = validate_resource({**PATIENT, "contained": contained}, "Patient")
    assert [issue.expression for issue in issues] == [(expression,)]
    assert words in issues[0].diagnostics


def test_a_valid_contained_resource_passes():
    contained = [{"resourceType": "Organization", "id": "o1", "name": "CH Exemple"}]
    assert validate_resource({**PATIENT, "contained": contained}, "Patient") == []

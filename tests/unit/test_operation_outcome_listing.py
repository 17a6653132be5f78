"""How many issues an OperationOutcome lists (fhir_server.errors.MAX_LISTED_ISSUES), and the
MHD error code an ITI-65 failure carries (IHE MHD ITI-65 3.65.4.2.3: the XDS error code in
an issue) kept among the listed ones."""

from __future__ import annotations

import pytest

from fhir_server.errors import MAX_LISTED_ISSUES, FhirError, Issue
from fhir_server.mhd.errors import XDS_ERROR_SYSTEM, with_xds_code


def issues(count: int) -> list[Issue]:
    return [
        Issue("error", "value", f"bad value {n}", (f"Patient.name[{n}]",)) for n in range(count)
    ]


@pytest.mark.parametrize("count", [1, MAX_LISTED_ISSUES - 1, MAX_LISTED_ISSUES])
def test_up_to_the_cap_every_issue_is_listed(count):
    outcome = FhirError(422, issues(count)).operation_outcome()
    assert [issue["diagnostics"] for issue in outcome["issue"]] == [
        f"bad value {n}" for n in range(count)
    ]


def test_beyond_the_cap_the_first_are_listed_and_the_rest_counted():
    error = FhirError(422, issues(2_000))
    listed = error.operation_outcome()["issue"]
    assert len(listed) == MAX_LISTED_ISSUES + 1
    assert listed[0]["expression"] == ["Patient.name[0]"]
    assert listed[-1] == {
        "severity": "information",
        "code": "informational",
        "diagnostics": f"{2_000 - MAX_LISTED_ISSUES} more issues are not listed",
    }
    assert error.message.count("bad value") == MAX_LISTED_ISSUES


@pytest.mark.parametrize("count", [3, MAX_LISTED_ISSUES + 500])
def test_the_mhd_error_code_issue_is_listed_whatever_the_number_of_issues(count):
    listed = with_xds_code(FhirError(422, issues(count))).operation_outcome()["issue"]
    coded = [
        issue
        for issue in listed
        if issue.get("details", {}).get("coding", [{}])[0].get("system") == XDS_ERROR_SYSTEM
    ]
    assert len(coded) == 1, listed[-3:]
    assert listed[0]["diagnostics"] == "bad value 0"
    if count > MAX_LISTED_ISSUES:
        assert (
            listed[-1]["diagnostics"]
            == f"{count + 1 - MAX_LISTED_ISSUES} more issues are not listed"
        )

"""Write-time profile checks (the server's profiles in profiles/), as a service validator."""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.errors import FhirError
from fhir_server.resources import record_closure
from fhir_server.resources.dmp_value_sets import DmpValueSets
from fhir_server.resources.profiles import ProfileRegistry


def profile_validator(profiles: ProfileRegistry) -> Callable[[dict], None]:
    """A validator raising 422 (FHIR: a resource that fails its profiles) with every issue."""

    def check(resource: dict) -> None:
        issues = [
            issue for issue in profiles.validate(resource) if issue.severity in ("error", "fatal")
        ]
        if issues:
            raise FhirError(422, issues)

    return check


def dmp_value_set_validator(value_sets: DmpValueSets) -> Callable[[dict], None]:
    """A validator raising 422 when a DocumentReference's codes leave the DMP value sets
    (J58, J66, J57, ASS_X16: `resources.dmp_value_sets`), on every door that writes one."""

    def check(resource: dict) -> None:
        issues = value_sets.document_issues(resource)
        if issues:
            raise FhirError(422, issues)

    return check


def record_closure_validator() -> Callable[[dict], None]:
    """A validator raising 422 when a Patient's dmp-fermeture (the closure of its record,
    `resources.record_closure`) is malformed, names an unknown motive or an open record."""

    def check(resource: dict) -> None:
        if resource.get("resourceType") != "Patient":
            return
        issues = record_closure.issues(resource)
        if issues:
            raise FhirError(422, issues)

    return check

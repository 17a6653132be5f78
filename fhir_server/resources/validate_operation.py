"""The pure part of `$validate` (FHIR R4 Resource-validate) on every served type.

The REST face parses the request (the resource from the body or the `resource` parameter,
`mode`, `profile`), runs the structural validation of `model.py`, and hands the result here;
this module adds the profile issues and shapes the OperationOutcome. `$validate` answers
200 with that outcome whether the resource is valid or not; only a malformed request (an
unknown `mode`) is a 400, raised as FhirError.

Which profiles: the same as a write would enforce (`ProfileRegistry.profiles_for`), plus the
`profile` parameter when given, so that "valid" here means "a create would pass validation".
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue, bad_request
from fhir_server.resources.profiles import ProfileRegistry, default_registry

MODES = ("create", "update", "delete", "profile")

ALL_OK = Issue("information", "informational", "All OK")


def validate_operation(
    resource: Any,
    resource_type: str,
    mode: str | None,
    profile: str | None,
    model_issues: list[Issue],
    *,
    registry: ProfileRegistry | None = None,
    deposit: bool = False,
) -> dict:
    """The OperationOutcome of `$validate` for `resource` posted to `[resource_type]/$validate`.

    `model_issues` are `model.validate_resource(resource, resource_type)`'s. `mode` is one of
    MODES or None; `profile` a canonical URL (with or without `|version`). `deposit=True`
    validates a DocumentReference as an XDS/MHD deposit would (DMP profile enforced).
    `mode=delete` has nothing to check here (whether the resource may be deleted is the
    service's decision), so it answers All OK. Raises FhirError(400) for an unknown mode or
    for `mode=profile` without a profile.
    """
    if mode is not None and mode not in MODES:
        raise bad_request(f"mode must be one of {', '.join(MODES)}", "mode", code="value")
    if mode == "profile" and not profile:
        raise bad_request("mode=profile needs the profile parameter", "profile", code="required")
    if mode == "delete":
        return _outcome([])
    registry = registry or default_registry()
    issues = list(model_issues)
    if _is_resource_of(resource, resource_type):
        if mode == "update" and not resource.get("id"):
            issues.append(
                Issue(
                    "error",
                    "required",
                    f"{resource_type}.id: an update needs the resource id",
                    (f"{resource_type}.id",),
                )
            )
        issues.extend(_profile_issues(resource, resource_type, mode, profile, registry, deposit))
    return _outcome(issues)


def _profile_issues(
    resource: dict,
    resource_type: str,
    mode: str | None,
    profile: str | None,
    registry: ProfileRegistry,
    deposit: bool,
) -> list[Issue]:
    urls = [] if mode == "profile" else registry.profiles_for(resource, deposit=deposit)
    if profile:
        url = profile.split("|")[0]
        if not registry.knows(url):
            return [
                Issue(
                    "error",
                    "not-supported",
                    f"profile {profile} is not known to this server",
                    ("profile",),
                )
            ]
        if registry.profiles[url].type != resource_type:
            return [
                Issue(
                    "error",
                    "invalid",
                    f"profile {profile} constrains {registry.profiles[url].type}, "
                    f"not {resource_type}",
                    ("profile",),
                )
            ]
        if url not in urls:
            urls.append(url)
    issues: list[Issue] = []
    for url in urls:
        issues.extend(registry.validate(resource, url))
    return issues


def _is_resource_of(resource: Any, resource_type: str) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == resource_type


def _outcome(issues: list[Issue]) -> dict:
    """Issues in order, duplicates dropped; "All OK" closes an outcome without errors."""
    unique = list(dict.fromkeys(issues))
    if not any(i.severity in ("fatal", "error") for i in unique):
        unique.append(ALL_OK)
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in unique]}

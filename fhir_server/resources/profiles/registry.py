"""The registry: every profile and terminology resource of the server, loaded and compiled once,
and the rules naming which profiles a write must satisfy (see the package docstring)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fhir_server.config import read_conformance_json
from fhir_server.errors import Issue
from fhir_server.resources.normal_form import ALIASES_FILE, AliasTable, default_aliases
from fhir_server.resources.nos import read_official
from fhir_server.resources.profiles.canonicals import (
    CLAIM_ALIASES,
    DEFAULT_PROFILES,
    DMP_DOCUMENT_REFERENCE,
    DMP_SUBMISSION_SET,
    PROFILES_DIR,
)
from fhir_server.resources.profiles.compiler import Profile, compile_profile
from fhir_server.resources.profiles.value_sets import (
    ValueSetExpansion,
    expand_value_sets,
    system_aliases,
)
from fhir_server.terminology import SYSTEM_MHD_LIST_TYPES


class ProfileRegistry:
    """Every profile and terminology resource of the server, compiled once."""

    def __init__(
        self,
        structure_definitions: list[dict],
        code_systems: list[dict],
        value_sets: list[dict],
        concept_maps: list[dict] | None = None,
        alias_table: AliasTable | None = None,
    ) -> None:
        self._structure_definitions = structure_definitions
        self._code_systems = code_systems
        self._value_sets = value_sets
        self.concept_maps = {cm["url"]: cm for cm in concept_maps or ()}
        # Every spelling of a system -> one key (value_sets.system_aliases), so a ValueSet
        # written with a NOS URL matches a coding stored under the `urn:oid:`.
        table = alias_table or default_aliases()
        self.aliases: dict[str, str]
        self.aliases, codes_by_system = system_aliases(code_systems, table)
        self.expansions: dict[str, ValueSetExpansion] = expand_value_sets(
            value_sets, self.aliases, codes_by_system
        )
        self.profiles: dict[str, Profile] = {}
        for sd in structure_definitions:
            self.profiles[sd["url"]] = compile_profile(sd, self.expansions, self.aliases)

    def key(self, system: str) -> str:
        """The one spelling under which this registry holds `system` (`system_aliases`)."""
        return self.aliases.get(system, system)

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, profiles_dir: str | Path = PROFILES_DIR) -> ProfileRegistry:
        """Read profiles/StructureDefinition-*.json, profiles/terminology/*.json (ours) and
        profiles/terminology/nos/*.json (the official NOS files, `resources.nos`)."""
        root = Path(profiles_dir)
        sds = [_read(p) for p in sorted(root.glob("StructureDefinition-*.json"))]
        terminology = root / "terminology"
        resources = [_read(p) for p in sorted(terminology.glob("*.json"))]
        resources += read_official(terminology)
        by_type: dict[str, list[dict]] = {"CodeSystem": [], "ValueSet": [], "ConceptMap": []}
        for resource in resources:
            by_type.get(resource.get("resourceType", ""), []).append(resource)
        return cls(
            sds,
            by_type["CodeSystem"],
            by_type["ValueSet"],
            by_type["ConceptMap"],
            AliasTable.load(root / ALIASES_FILE),
        )

    # -- which profiles ------------------------------------------------------------------

    def default_profiles(self, resource_type: str) -> list[str]:
        """The profiles always enforced on a write of this type."""
        return [url for url in DEFAULT_PROFILES.get(resource_type, ()) if url in self.profiles]

    def claimed_profiles(self, resource: dict) -> list[str]:
        """Ours among meta.profile (versions ignored), PDSm claims mapped to ours."""
        meta = resource.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        out = []
        for url in claimed if isinstance(claimed, list) else ():
            if not isinstance(url, str):
                continue
            url = url.split("|")[0]
            url = CLAIM_ALIASES.get(url, url)
            if url in self.profiles and url not in out:
                out.append(url)
        return out

    def profiles_for(self, resource: dict, *, deposit: bool = False) -> list[str]:
        """Every profile a write of `resource` must satisfy (see the module docstring)."""
        resource_type = resource.get("resourceType", "")
        urls = self.default_profiles(resource_type) + self.claimed_profiles(resource)
        if resource_type == "DocumentReference" and deposit:
            urls.append(DMP_DOCUMENT_REFERENCE)
        if resource_type == "List" and _is_submission_set(resource):
            urls.append(DMP_SUBMISSION_SET)
        unique = []
        for url in urls:
            if url in self.profiles and url not in unique:
                unique.append(url)
        return unique

    # -- validation ----------------------------------------------------------------------

    def knows(self, profile_url: str) -> bool:
        return profile_url.split("|")[0] in self.profiles

    def validate(
        self, resource: dict, profile_url: str | None = None, *, deposit: bool = False
    ) -> list[Issue]:
        """Issues of `resource` against one profile, or against all that apply on write.

        Raises KeyError for a profile_url that is not ours, ValueError when the profile is for
        another resource type.
        """
        if not isinstance(resource, dict):
            return [Issue("error", "structure", "the resource must be a JSON object")]
        if profile_url is not None:
            urls = [profile_url.split("|")[0]]
            if urls[0] not in self.profiles:
                raise KeyError(profile_url)
        else:
            urls = self.profiles_for(resource, deposit=deposit)
        issues: list[Issue] = []
        for url in urls:
            profile = self.profiles[url]
            if profile.type != resource.get("resourceType"):
                raise ValueError(f"profile {url} constrains {profile.type}")
            issues.extend(profile.validate(resource))
        return issues

    # -- conformance resources -----------------------------------------------------------

    def structure_definitions(self) -> list[dict]:
        """The StructureDefinitions, to serve at /fhir/StructureDefinition (copies)."""
        return [json.loads(json.dumps(sd)) for sd in self._structure_definitions]

    def terminology(self) -> list[dict]:
        """The CodeSystems and ValueSets the required bindings use (copies)."""
        return [json.loads(json.dumps(r)) for r in self._code_systems + self._value_sets]

    def supported_profiles(self, resource_type: str) -> list[str]:
        """For CapabilityStatement.rest.resource.supportedProfile."""
        return sorted(url for url, p in self.profiles.items() if p.type == resource_type)


def _is_submission_set(resource: dict) -> bool:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return any(
        isinstance(c, dict)
        and c.get("system") == SYSTEM_MHD_LIST_TYPES
        and c.get("code") == "submissionset"
        for c in codings or ()
    )


def _read(path: Path) -> dict:
    return read_conformance_json(path)


@cache
def default_registry() -> ProfileRegistry:
    """The registry of the installed profiles/ directory (fhir_server.paths), loaded once."""
    return ProfileRegistry.load(PROFILES_DIR)

"""The local terminology the required bindings check against: every spelling of a code
system folded onto one key, and each ValueSet expanded once into its (system, code) pairs.

Why expanded at load: a binding check on the write path is then one set lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fhir_server.resources.normal_form import AliasTable


@dataclass(frozen=True, slots=True)
class ValueSetExpansion:
    """The (system, code) pairs of a local ValueSet, systems in their canonical form."""

    url: str
    pairs: frozenset[tuple[str, str]]
    codes: frozenset[str]

    def contains(self, system: str | None, code: str | None) -> bool:
        return (system, code) in self.pairs


def system_aliases(
    code_systems: list[dict], table: AliasTable
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Every spelling of a system -> its key, and the codes held under each key.

    The key is the canonical of the alias table (the spelling the normal form stores) when
    the table names the system, else the CodeSystem's url. So a ValueSet written with a NOS
    URL (J58, J66) matches a coding stored under the `urn:oid:` or the HL7/LOINC URL, and two
    CodeSystems of one system (v3-Confidentiality and its NOS copy TRE_A08) pool their codes.
    """
    aliases: dict[str, str] = {}
    for spec in table.systems:
        for spelling in spec.spellings:
            aliases[spelling] = spec.canonical
    codes_by_system: dict[str, list[str]] = {}
    for cs in code_systems:
        url = cs["url"]
        names = [url] + [i.get("value") for i in _identifiers(cs) if i.get("value")]
        keys = {table.canonical(name) for name in names if table.spec(name) is not None}
        if len(keys) > 1:
            raise ValueError(f"CodeSystem {url} names several systems of the alias table")
        key = keys.pop() if keys else url
        for name in names:
            if aliases.get(name, key) != key:
                raise ValueError(f"alias {name} names two code systems")
            aliases[name] = key
        codes_by_system.setdefault(key, []).extend(
            c["code"] for c in _flatten(cs.get("concept", []))
        )
    return aliases, codes_by_system


def expand_value_sets(
    value_sets: list[dict], aliases: dict[str, str], codes_by_system: dict[str, list[str]]
) -> dict[str, ValueSetExpansion]:
    """Each ValueSet by url, expanded from its `compose` (include, exclude, nested valueSet)."""
    expander = _Expander({vs["url"]: vs for vs in value_sets}, aliases, codes_by_system)
    for url in expander.raw:
        expander.expand(url, ())
    return expander.expansions


class _Expander:
    """Expansions memoised by url, so a ValueSet included by several is expanded once."""

    def __init__(
        self, raw: dict[str, dict], aliases: dict[str, str], codes_by_system: dict[str, list[str]]
    ) -> None:
        self.raw = raw
        self.aliases = aliases
        self.codes_by_system = codes_by_system
        self.expansions: dict[str, ValueSetExpansion] = {}

    def expand(self, url: str, seen: tuple[str, ...]) -> ValueSetExpansion:
        if url in self.expansions:
            return self.expansions[url]
        if url in seen or url not in self.raw:
            raise ValueError(f"ValueSet {url} is unknown or includes itself")
        pairs: set[tuple[str, str]] = set()
        compose = self.raw[url].get("compose", {})
        for include in compose.get("include", []):
            pairs |= self._include(include, url, seen + (url,))
        for exclude in compose.get("exclude", []):
            pairs -= self._include(exclude, url, seen + (url,))
        expansion = ValueSetExpansion(url, frozenset(pairs), frozenset(c for _, c in pairs))
        self.expansions[url] = expansion
        return expansion

    def _include(self, include: dict, url: str, seen: tuple[str, ...]) -> set[tuple[str, str]]:
        system = include.get("system")
        selected: set[tuple[str, str]] | None = None
        if system:
            system = self.aliases.get(system, system)
            if include.get("concept"):
                selected = {(system, c["code"]) for c in include["concept"]}
            elif system in self.codes_by_system:
                selected = {(system, code) for code in self.codes_by_system[system]}
            else:
                raise ValueError(f"ValueSet {url} includes all of {system}, not held locally")
        for nested in include.get("valueSet", []):
            pairs = set(self.expand(nested, seen).pairs)
            selected = pairs if selected is None else selected & pairs
        return selected or set()


def _identifiers(resource: dict) -> list[dict]:
    """`identifier` as a list (a CodeSystem has 0..*; some publishers write one object)."""
    identifiers = resource.get("identifier") or []
    identifiers = [identifiers] if isinstance(identifiers, dict) else identifiers
    return [i for i in identifiers if isinstance(i, dict)]


def _flatten(concepts: list[dict]) -> Iterator[dict]:
    for concept in concepts:
        yield concept
        yield from _flatten(concept.get("concept", []))

"""SMART on FHIR scopes (App Launch 2.0.0 §Scopes and Launch Context), parsed (R02).

authlib only compares scope strings; deciding whether `patient/*.rs` allows reading an
Observation needs the grammar:

    scope       = context "/" resource "." permissions [ "?" param "=" value *( "&" param "=" value ) ]
    context     = "patient" / "user" / "system"
    resource    = "*" / FHIR resource type
    permissions = ordered non-empty subset of "cruds"   (v2)
                / "read" / "write" / "*"                (v1: rs, cud, cruds)

A `?param=value` suffix (v2 granular scope) narrows the grant to resources matching that
search; the service turns these constraints into search clauses. Scopes that are not about
resources (`openid`, `fhirUser`, `launch`, `launch/patient`, `offline_access`, ...) are kept
but grant nothing. A scope that claims to be a resource scope but is malformed raises
ScopeError rather than being silently dropped, so that a typo never looks like a denial.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTEXTS = ("patient", "user", "system")
LETTERS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
INTERACTION_LETTER = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "history-instance": "r",
    "history-type": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
}

_RESOURCE = re.compile(r"\*|[A-Z][A-Za-z]{0,63}")
_V2_PERMISSIONS = re.compile(r"c?r?u?d?s?")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_VALUE = re.compile(r"[^&=\s]+")


class ScopeError(ValueError):
    """A malformed resource scope, or a question no granted scope answers."""


Constraint = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # "*" or a resource type
    permissions: frozenset[str]  # subset of c r u d s
    params: Constraint = ()  # granular constraint, AND-ed

    @classmethod
    def parse(cls, text: str) -> ResourceScope:
        context, _, rest = text.partition("/")
        if context not in CONTEXTS:
            raise ScopeError(f"scope {text!r} has no patient/, user/ or system/ context")
        body, has_query, query = rest.partition("?")
        resource_type, dot, perms = body.partition(".")
        if not dot or not _RESOURCE.fullmatch(resource_type):
            raise ScopeError(f"scope {text!r}: expected '<resource type or *>.<permissions>'")
        if perms in V1_PERMISSIONS:
            if has_query:
                raise ScopeError(f"scope {text!r}: v1 permissions cannot carry '?' constraints")
            letters = V1_PERMISSIONS[perms]
        elif perms and _V2_PERMISSIONS.fullmatch(perms):
            letters = perms
        else:
            raise ScopeError(
                f"scope {text!r}: permissions must be letters of 'cruds' in that order,"
                " or read, write or *"
            )
        params: list[tuple[str, str]] = []
        if has_query:
            for pair in query.split("&"):
                name, eq, value = pair.partition("=")
                if not eq or not _PARAM.fullmatch(name) or not _VALUE.fullmatch(value):
                    raise ScopeError(f"scope {text!r}: constraint {pair!r} is not param=value")
                params.append((name, value))
        return cls(context, resource_type, frozenset(letters), tuple(params))

    @property
    def text(self) -> str:
        """The SMART v2 form (v1 permissions are written as their v2 letters)."""
        letters = "".join(letter for letter in LETTERS if letter in self.permissions)
        query = "&".join(f"{name}={value}" for name, value in self.params)
        return f"{self.context}/{self.resource_type}.{letters}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.text

    def covers(self, resource_type: str, letter: str) -> bool:
        return letter in self.permissions and self.resource_type in ("*", resource_type)


def _letter(interaction: str) -> str:
    try:
        return INTERACTION_LETTER[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None


def _is_resource_scope(token: str) -> bool:
    return token.partition("/")[0] in CONTEXTS and "/" in token


@dataclass(frozen=True)
class ScopeSet:
    """The scopes of one token: what they allow, and under which constraints."""

    resource_scopes: tuple[ResourceScope, ...] = ()
    # Scopes that grant no resource access (openid, launch/patient, ...), kept verbatim.
    other: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, scope_string: str) -> ScopeSet:
        """Parse a space-separated scope string (RFC 6749 §3.3)."""
        if not isinstance(scope_string, str):
            raise ScopeError("scope must be a string")
        return cls.from_scopes(scope_string.split())

    @classmethod
    def from_scopes(cls, scopes: Iterable[str]) -> ScopeSet:
        """Parse scopes already split (e.g. `Requester.scopes`)."""
        resource: list[ResourceScope] = []
        other: list[str] = []
        for token in scopes:
            if _is_resource_scope(token):
                parsed = ResourceScope.parse(token)
                if parsed not in resource:
                    resource.append(parsed)
            elif token and token not in other:
                other.append(token)
        return cls(tuple(resource), tuple(other))

    def __str__(self) -> str:
        return " ".join([s.text for s in self.resource_scopes] + list(self.other))

    def __bool__(self) -> bool:
        return bool(self.resource_scopes or self.other)

    def strings(self) -> tuple[str, ...]:
        return tuple(str(self).split())

    def _matching(self, resource_type: str, interaction: str) -> list[ResourceScope]:
        letter = _letter(interaction)
        return [s for s in self.resource_scopes if s.covers(resource_type, letter)]

    def granting(self, resource_type: str, interaction: str) -> list[ResourceScope]:
        """The scopes that grant `interaction` on `resource_type`, each with its context and
        constraint: the grant is their union (OR), each scope confined by both."""
        return self._matching(resource_type, interaction)

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether some scope grants `interaction` on `resource_type` (possibly constrained).

        vread and history count as read, patch as update.
        """
        return bool(self._matching(resource_type, interaction))

    def contexts(self, resource_type: str, interaction: str) -> frozenset[str]:
        """The contexts (patient, user, system) whose scopes grant this interaction.

        A grant coming only from `patient/` scopes is bound to the token's patient
        (`Requester.patient_id`): the service must keep the request inside that patient's
        compartment.
        """
        return frozenset(s.context for s in self._matching(resource_type, interaction))

    def constraints(self, resource_type: str, interaction: str) -> list[list[tuple[str, str]]]:
        """Granular constraints: alternatives (OR) of param=value lists (AND).

        `[]` means unconstrained (some scope grants the interaction without `?`). Raises
        ScopeError when no scope grants it at all, so a caller that forgot `allows` can
        never mistake a refusal for "no constraint".
        """
        matching = self._matching(resource_type, interaction)
        if not matching:
            raise ScopeError(f"no granted scope allows {interaction} on {resource_type}")
        if any(not s.params for s in matching):
            return []
        alternatives: list[list[tuple[str, str]]] = []
        for scope in matching:
            params = list(scope.params)
            if params not in alternatives:
                alternatives.append(params)
        return alternatives

    def intersect(self, granted: ScopeSet) -> ScopeSet:
        """The part of these (requested) scopes that `granted` (registered) scopes cover.

        Used by the token endpoint: a client asking for `system/*.cruds` while registered
        for `system/DocumentReference.c` gets `system/DocumentReference.c`.
        """
        result: list[ResourceScope] = []
        for req in self.resource_scopes:
            for reg in granted.resource_scopes:
                if reg.context != req.context:
                    continue
                if reg.resource_type == "*":
                    resource_type = req.resource_type
                elif req.resource_type in ("*", reg.resource_type):
                    resource_type = reg.resource_type
                else:
                    continue
                letters = req.permissions & reg.permissions
                if not letters:
                    continue
                params = req.params + tuple(p for p in reg.params if p not in req.params)
                scope = ResourceScope(req.context, resource_type, letters, params)
                if scope not in result:
                    result.append(scope)
        other = tuple(o for o in self.other if o in granted.other)
        return ScopeSet(tuple(result), other)

"""What a search's criteria name, read as the query a patient is shown (R14, R18).

A search's AuditEvent keeps its query as asked (BALP), and the patient's trace view shows
it; the event carries the labels of the resources the query names, so that a document
hidden from the patient does not reach them through it, whether or not the search found
it (`service.gate.audit_hooks`). Pure functions over the parsed query: which ids and
identifier values it names, and the spellings under which each is looked up.
"""

from __future__ import annotations

import re

from fhir_server.search.query import (
    And,
    Chain,
    Has,
    IdTest,
    Node,
    Not,
    Or,
    ReferenceTest,
    TokenMatch,
    TokenTest,
)
from fhir_server.search.registry import SearchRegistry

# The types that carry DMP labels of their own (a document's, its Binary's, a List's).
LABELLED_TYPES = ("DocumentReference", "Binary", "List")

# Where an untyped id (`_id=ID`, `item=ID`) is looked for: the labelled types, and messages,
# which carry the labels of the documents they are about (`service.messaging`): looked up as
# documents only, a professional's search by the id of a message hidden from the patient
# (`_id` in capitals, under `_has`, or matching nothing) was shown in the patient's trail.
ID_NAMED_TYPES = (*LABELLED_TYPES, "Communication")


def named_targets(node: Node) -> list[tuple[str | None, str]]:
    """(type or None, id) of every resource a search's criteria name by id: `_id` and plain
    ids as any type, at any level; typed references, relative or absolute whatever their
    base (a client behind another host name spells this server's base otherwise); a UUID
    URN's UUID as a plain id."""
    match node:
        case And(parts) | Or(parts):
            return [found for part in parts for found in named_targets(part)]
        case Not(part) | Chain(_, _, part) | Has(_, _, part):
            return named_targets(part)
        case ReferenceTest(target_type=target_type, target_id=str() as target_id) if target_id:
            return [(target_type, target_id)]
        case ReferenceTest(url=str() as url):
            if url.lower().startswith("urn:uuid:"):
                return [(None, url[len("urn:uuid:") :])]
            return [
                (kind if _TYPE_NAME.fullmatch(kind) else None, target_id)
                for kind, target_id in _SEGMENT_PAIR.findall(url)
            ]
        case IdTest(ids):
            return [(None, resource_id) for resource_id in ids]
    return []


# Every `segment/id` pair of an absolute reference's path, overlapping (`.../fhir/
# DocumentReference/<id>` names `<id>` as a DocumentReference, and `DocumentReference` as an
# id): an id is named wherever it stands, followed by anything that is not part of an id.
# The query a patient is shown names it whatever follows it: read as the `Type/id` ending the
# url (`$`), `.../DocumentReference/<hidden id>/`, `#x`, `?x=1` or ` ` named nothing, and the
# event of the search was shown, unlabelled, to the patient it is hidden from (R14, R18). A
# pair whose type is not spelled as a type (`documentreference/<id>`) names the id as any type.
_SEGMENT_PAIR = re.compile(r"(?=(?:^|/)([^/]+)/([A-Za-z0-9\-.]{1,64})(?![A-Za-z0-9\-.]))")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]+")


# The labelled types searched by the identifier that names them (their XDS uniqueId).
IDENTIFIED_TYPES = ("DocumentReference", "List")


def may_name_labelled(registry: SearchRegistry, level: str | None, param: str) -> bool:
    """Whether reference `param` of a `level` search may point at a labelled type (an
    unknown level or parameter: it may)."""
    definition = registry.get(level, param) if level else None
    targets = definition.targets if definition is not None else ()
    return not targets or any(target in LABELLED_TYPES for target in targets)


def named_identifiers(node: Node, level: str | None, registry: SearchRegistry) -> list[str]:
    """The value of every `identifier` criterion at a level searching a labelled type (or
    one not known), under `_has` and chains too, of any form (`system|value`, `|value`,
    `:of-type`, `:text`) and in any part of it (its system too), and of every reference
    given by identifier (`:identifier`, value or system, a `urn:`): each
    is searched as a document's and a List's identifier, since the event shows the value
    however it was asked. (A Patient level's, an INS in `patient.identifier=`, or a
    reference that cannot name a labelled type, `patient:identifier=`, names no document:
    no lookup on those common paths; `may_name_labelled` tells.)"""
    match node:
        case And(parts) | Or(parts):
            found = [value for part in parts for value in named_identifiers(part, level, registry)]
            return list(dict.fromkeys(found))
        case Not(part):
            return named_identifiers(part, level, registry)
        case Chain(_, target_type, part):
            return named_identifiers(part, target_type, registry)
        case Has(source_type, _, part):
            return named_identifiers(part, source_type, registry)
        case TokenTest(param="identifier") if level is not None and level not in LABELLED_TYPES:
            return []
        case TokenTest(param="identifier", match=TokenMatch.TEXT, text=text, value=value):
            return _given(value, text)  # `:text=`: as asked, and normalized
        case TokenTest(param="identifier", system=system, code=code, value=value):
            return _given(value, code, system)  # `uid|`, `uid|x`, `:of-type=uid|MR|x`
        case ReferenceTest(param=param) if not may_name_labelled(registry, level, param):
            return []
        case ReferenceTest(identifier_value=value, identifier_system=system) if value or system:
            return _given(value, system)  # `param:identifier=`, either part
        case ReferenceTest(url=str() as url) if url.lower().startswith("urn:"):
            return [url]  # `related=urn:oid:...`: an XDS uniqueId is often one
    return []


def _given(*parts: str | None) -> list[str]:
    """The parts of a token a query carries, each one a value the patient is shown: a
    uniqueId given as a system (`uid|`, `uid|decoy`) or as `:text` shows all the same."""
    return [part for part in parts if part]


def spellings(value: str) -> list[str]:
    """`value` without the spaces around it (pasted with the value, they match nothing)
    and, for a UUID or a UUID URN in capitals (case-blind on input, RFC 4122 section 3), its
    lower-case form, the one the server writes: `URN:UUID:0B0B...` names the document
    stored as `urn:uuid:0b0b...`, an id `0B0B...` the one of id `0b0b...`. A value already
    in lower case is one lookup (a patient-scoped search names its Patient's id)."""
    value = value.strip()
    if value == value.lower() or not _UUID.fullmatch(value):
        return [value]
    return [value, value.lower()]


def identifier_spellings(value: str) -> list[str]:
    """`spellings`, and for a bare OID the `urn:oid:` URI the server stores an XDS uniqueId
    as (a DocumentReference's masterIdentifier): `identifier=1.2.250.1...` names it too."""
    found = spellings(value)
    if _OID.fullmatch(found[0]):
        found.append(f"urn:oid:{found[0]}")
    return found


_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_UUID = re.compile(r"(?:urn:uuid:)?[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)

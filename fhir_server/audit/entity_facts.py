"""What a search's AuditEvent says of each resource version it returns, kept beside it.

A search's event names every match with its version and security labels, and goes to the
record of every Patient whose compartment the match is in (R16, R18). Parsing each match's
JSON for these three facts cost as much as the query itself (about 25 µs a match: 20
matches, half a millisecond). They are a function of the version's content, so the write
that stores a version derives them from the resource it already holds, and the store keeps
them beside it (SQLite: `resource_facts`, tied to the version they were derived from). A
search row carries them (`SearchRow.facts`); a row without them (a store or a version written
before them) is parsed as before: the same event either way.

Kept facts must never outlive what they were derived from. A store keeps them across
releases, so each encoding starts with the derivation that made it (`DERIVATION`): facts of
another derivation are not read (`decode` gives None, the row is parsed), and SQLite's
backfill derives them again (`store.sqlite_facts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from fhir_server.audit.balp import DataEntity, security_labels_of
from fhir_server.resources.served import compartment_of

# Which derivation made a kept encoding. Bump it whenever what `EntityFacts.of` says of a
# resource changes (`compartment_of` and its compartment paths, `security_labels_of`, the
# encoding): facts kept by the derivation before are then parsed instead, and derived again.
# `test_entity_facts.test_the_derivation_is_pinned` fails until it is bumped.
DERIVATION = 1
PREFIX = orjson.dumps([DERIVATION])[:-1] + b","  # every encoding of this derivation starts so


@dataclass(frozen=True, slots=True)
class EntityFacts:
    """The version as its AuditEvent entity names it, and the Patients it concerns."""

    version: str | None  # meta.versionId
    compartment: tuple[str, ...]  # Patient ids (`resources.served.compartment_of`)
    labels: tuple[Mapping[str, str], ...]  # `balp.security_labels_of`

    @classmethod
    def of(cls, resource: dict, compartment: Sequence[str] | None = None) -> EntityFacts:
        """The facts of a stamped resource; `compartment`, when its index entries hold it
        already (one computation for the index and the event)."""
        if compartment is None:
            compartment = compartment_of(resource)
        version = (resource.get("meta") or {}).get("versionId")
        return cls(version, tuple(compartment), security_labels_of(resource))

    def encode(self) -> bytes:
        return orjson.dumps([DERIVATION, self.version, self.compartment, self.labels])

    @classmethod
    def decode(cls, data: bytes) -> EntityFacts | None:
        """The facts `encode` gave, or None when another derivation made them (parse the
        version instead: they may say of it what this release would not)."""
        if not data.startswith(PREFIX):
            return None
        _, version, compartment, labels = orjson.loads(data)
        return cls(version, tuple(compartment), tuple(labels))

    @classmethod
    def encoded_of_body(cls, body: bytes) -> bytes:
        """The encoded facts of a stored version's bytes (for a store's backfill); raises
        ValueError for bytes that are not a JSON object, or whose shape the derivation cannot
        read (a store written by a laxer release): the backfill leaves those to be parsed."""
        resource = orjson.loads(body)
        if not isinstance(resource, dict):
            raise ValueError("a stored resource is a JSON object")
        try:
            return cls.of(resource).encode()
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"a stored resource the facts cannot be read from: {exc}") from exc

    def entity(self, resource_type: str, resource_id: str) -> DataEntity:
        """The entity `DataEntity.from_resource` gives for the version itself."""
        return DataEntity(
            reference=f"{resource_type}/{resource_id}",
            version=self.version,
            security_labels=self.labels,
        )

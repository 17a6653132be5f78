"""Typed search index entries, extracted from a resource when it is written.

Both storage engines persist exactly these values next to the resource, in the same write,
and both compile queries against them. Dates and numbers are stored as ranges (the
precision of the value), so that prefixes like `eq`, `sa` and `ap` are range comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class TokenEntry:
    param: str
    system: str | None  # None when the value carries no system
    code: str | None  # None for e.g. an Identifier with only a system
    display: str | None = None  # text of the CodeableConcept/Coding, for :text (normalized)


@dataclass(frozen=True, slots=True)
class StringEntry:
    param: str
    normalized: str  # lower case, accents stripped, whitespace folded
    exact: str


@dataclass(frozen=True, slots=True)
class DateEntry:
    param: str
    low: int  # epoch microseconds (UTC), inclusive
    high: int  # epoch microseconds (UTC), inclusive


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    param: str
    target_type: str | None  # e.g. "Patient"; None for a reference without a type
    target_id: str | None  # logical id for relative references
    url: str | None = None  # absolute/canonical URL, when not a local relative reference
    identifier_system: str | None = None  # Reference.identifier, for :identifier
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriEntry:
    param: str
    value: str


@dataclass(frozen=True, slots=True)
class NumberEntry:
    param: str
    low: Decimal
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityEntry:
    param: str
    low: Decimal
    high: Decimal
    system: str | None = None
    code: str | None = None
    unit: str | None = None


@dataclass(slots=True)
class IndexEntries:
    """All index entries of one resource version."""

    tokens: list[TokenEntry] = field(default_factory=list)
    strings: list[StringEntry] = field(default_factory=list)
    dates: list[DateEntry] = field(default_factory=list)
    references: list[ReferenceEntry] = field(default_factory=list)
    uris: list[UriEntry] = field(default_factory=list)
    numbers: list[NumberEntry] = field(default_factory=list)
    quantities: list[QuantityEntry] = field(default_factory=list)
    # Patient compartment of the resource (ids), derived from the CompartmentDefinition.
    # MongoDB uses it as the shard key; access constraints use it to bind queries to a patient.
    compartment: list[str] = field(default_factory=list)

"""A stored query's parameters: their value types, each query's table of them, the checked
request (StoredQuery), the ebRS value grammar and the typed reading of each value.

Values follow ebRS 3.0 / ITI TF-2a 3.18.4.1.2.3.5: strings in single quotes (a quote inside
doubled), numbers (times) bare, lists in parentheses. Every value is then checked against the
type of its parameter, so that nothing free-form reaches the search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ihe_xds.codes import is_oid
from ihe_xds.errors import MalformedMessage, RegistryError
from ihe_xds.hl7v2 import parse_cx
from ihe_xds.vocabulary import (
    ASSOC_HAS_MEMBER,
    AVAILABILITY_STATUSES,
    DOCUMENT_RELATIONSHIPS,
    OBJECT_TYPE_ON_DEMAND,
    OBJECT_TYPE_STABLE,
)

# Parameter types
PATIENT, STATUS, CODE, TIME, AUTHOR, OBJECT_TYPE, UUID, UNIQUE_ID, OID_LIST, ASSOCIATION, STRING = (
    "patient",
    "status",
    "code",
    "time",
    "author",
    "objectType",
    "uuid",
    "uniqueId",
    "oid",
    "associationType",
    "string",
)
# $MetadataLevel (ITI TF-2a 3.18.4.1.2.3.5.1.1): the number 1 or 2, default 1.
METADATA_LEVEL = "metadataLevel"
SINGLE = {PATIENT, TIME, METADATA_LEVEL}  # one value, one slot
MULTI_SLOT = {
    "$XDSDocumentEntryEventCodeList",
    "$XDSDocumentEntryConfidentialityCode",
    "$XDSFolderCodeList",
}

BY_ID = {
    "$XDSDocumentEntryEntryUUID": UUID,
    "$XDSDocumentEntryUniqueId": UNIQUE_ID,
}


@dataclass(frozen=True, slots=True)
class QueryDefinition:
    """A stored query's parameters (name -> value type), as its ITI TF-2a 3.18.4.1.2.3.7 table.

    `single`: parameters the table codes as one value (no "M"), beyond the always-single
    patient ids and times: a list there is XDSStoredQueryParamNumber, never a silent OR.
    Every query also takes $MetadataLevel (3.18.4.1.2.3.5.1.1), added in `__post_init__`.
    """

    name: str
    params: dict[str, str]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    single: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.params.setdefault("$MetadataLevel", METADATA_LEVEL)

    def takes_one_value(self, name: str) -> bool:
        return self.params.get(name) in SINGLE or name in self.single


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    scheme: str


@dataclass(slots=True)
class StoredQuery:
    """A checked ITI-18 request. `params[name]` is a list of AND-ed groups of OR-ed values."""

    query_id: str
    name: str
    return_type: str
    params: dict[str, list[list[object]]] = field(default_factory=dict)
    warnings: list[RegistryError] = field(default_factory=list)

    def values(self, name: str) -> list:
        """All values of a parameter (the single OR group, for parameters that have one)."""
        groups = self.params.get(name) or []
        return [value for group in groups for value in group]

    def one(self, name: str):
        values = self.values(name)
        return values[0] if values else None


class StoredQueryError(Exception):
    """The request is a well-formed AdhocQueryRequest with bad parameters (AdhocQueryResponse Failure)."""

    def __init__(self, errors: list[RegistryError]) -> None:
        super().__init__("; ".join(e.code_context for e in errors))
        self.errors = errors


class NotAQuery(MalformedMessage):
    """The element is no AdhocQueryRequest with an AdhocQuery (SOAP Fault, Sender)."""


# --------------------------------------------------------------------------- value grammar


class _ValueError(Exception):
    pass


def _scalar(token: str) -> str:
    token = token.strip()
    if token.startswith("'"):
        if len(token) < 2 or not token.endswith("'"):
            raise _ValueError("unterminated quoted string")
        inner = token[1:-1]
        if "'" in inner.replace("''", ""):
            raise _ValueError("a single quote inside a string must be doubled")
        return inner.replace("''", "'")
    if re.fullmatch(r"-?\d+", token):
        return token
    raise _ValueError("values must be quoted strings or numbers")


def _split_list(text: str) -> list[str]:
    items, current, quoted, i = [], [], False, 0
    while i < len(text):
        char = text[i]
        if char == "'":
            if quoted and i + 1 < len(text) and text[i + 1] == "'":
                current.append("''")
                i += 2
                continue
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if quoted:
        raise _ValueError("unterminated quoted string")
    items.append("".join(current))
    return items


def parse_value(text: str) -> tuple[list[str], bool]:
    """(values, was a list) for one rim:Value; raises ValueError on bad syntax."""
    text = (text or "").strip()
    if len(text) > 4096:
        raise ValueError("value too long")
    try:
        if text.startswith("("):
            if not text.endswith(")"):
                raise _ValueError("a list must end with ')'")
            items = _split_list(text[1:-1])
            if any(not item.strip() for item in items):
                raise _ValueError("empty list item")
            return [_scalar(item) for item in items], True
        return [_scalar(text)], False
    except _ValueError as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------- typed values

_UUID = re.compile(r"^urn:uuid:[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SAFE_TEXT = re.compile(r"^[^\x00-\x1f]{1,256}$")
# ASCII digits only: `\d` also reads the fullwidth or Arabic-Indic digits, which the FHIR search
# then read as another spelling of the year.
_TIME = re.compile(r"^[0-9]{4}([0-9]{2}){0,5}$")


def _check_calendar(value: str) -> None:
    """An XDS time names a real instant: month 13, 31 February, hour 25 or a leap second were
    refused by one time parameter under the name of the FHIR search it became (`creation`,
    `period`), or matched as text by another ($XDSDocumentEntryServiceStartTimeTo answered
    Success), fail closed: refused under the parameter's own name."""
    fields = [int(value[0:4])] + [int(value[i : i + 2]) for i in range(4, len(value), 2)]
    year, month, day, hour, minute, second = fields + [1, 1, 0, 0, 0][len(fields) - 1 :]
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise ValueError(f"{value!r} is no date and time of the calendar") from None


def typed_value(kind: str, value: str) -> object:
    from ihe_xds.validation import is_unique_id

    if kind == PATIENT:
        cx, problem = parse_cx(value)
        if cx is None:
            raise ValueError(problem)
        return cx
    if kind == STATUS:
        if value not in AVAILABILITY_STATUSES:
            raise ValueError(f"unknown status {value!r}")
        return value
    if kind == CODE:
        code, sep, scheme = value.partition("^^")
        if not sep or not code or not scheme or "^" in scheme or not _SAFE_TEXT.fullmatch(value):
            raise ValueError("codes are written 'code^^codingScheme'")
        return Code(code, scheme)
    if kind == TIME:
        if not _TIME.fullmatch(value):
            raise ValueError("times are YYYY[MM[DD[hh[mm[ss]]]]]")
        _check_calendar(value)
        return value
    if kind == OBJECT_TYPE:
        if value not in (OBJECT_TYPE_STABLE, OBJECT_TYPE_ON_DEMAND):
            raise ValueError(f"unknown DocumentEntry type {value!r}")
        return value
    if kind == UUID:
        if not _UUID.fullmatch(value):
            raise ValueError("expected urn:uuid: identifiers")
        return value.lower()
    if kind == UNIQUE_ID:
        if not is_unique_id(value):
            raise ValueError("expected uniqueIds (OID or OID^extension)")
        return value
    if kind == OID_LIST:
        if not is_oid(value):
            raise ValueError("expected OIDs")
        return value
    if kind == ASSOCIATION:
        if value not in DOCUMENT_RELATIONSHIPS + (ASSOC_HAS_MEMBER,):
            raise ValueError(f"unknown association type {value!r}")
        return value
    if not _SAFE_TEXT.fullmatch(value):
        raise ValueError("text with control characters or too long")
    return value

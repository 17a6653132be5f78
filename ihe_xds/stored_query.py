"""ITI-18 Registry Stored Query: parse the AdhocQueryRequest, plan the FHIR searches.

Values follow ebRS 3.0 / ITI TF-2a 3.18.4.1.2.3.5: strings in single quotes (a quote inside
doubled), numbers (times) bare, lists in parentheses; several Value elements of one Slot are
one OR-list; several Slots of a multi-slot parameter (EventCodeList, ConfidentialityCode,
FolderCodeList) are AND-ed. Every value is then checked against the type of its parameter
(CX patient id, `code^^scheme`, time, status URN, urn:uuid, uniqueId ...), so that nothing
free-form reaches the search: an injection attempt such as `'593603^^^&...&ISO''%20and%20
611%3d611--%20` fails the grammar (an unterminated quoted string) and is answered with
XDSRegistryMetadataError naming the parameter; no value is ever spliced into a query.

Errors: XDSUnknownStoredQuery (unknown query id), XDSStoredQueryMissingParam (a required
parameter, or none of a "one of" group), XDSStoredQueryParamNumber (several values or
slots where one is allowed, both members of a "one of" group), XDSRegistryMetadataError
(a value of the wrong form). A parameter the query does not define is ignored, as ebRS 3.0
6.3.2.1 requires, with a Warning naming it. Every parameter a served query defines is
applied or refused, never accepted and ignored: the table is docs/xds-stored-queries.md,
each row proven by tests/http/test_xds_stored_query_parameters.py (issue #19, deliverable 3).

Each stored query is one StoredQueryKind of KINDS, keyed by its id: its parameters
(QueryDefinition), its plan (the FHIR searches, QueryPlan, with `keep` for what FHIR search
cannot say) and its answer filter (`select`). `transactions.iti18` runs any plan and writes
any selected answer the same way: adding a stored query is adding one StoredQueryKind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lxml import etree

from fhir_server.documents import metadata_versions
from ihe_xds.codes import is_oid, system_for_scheme
from ihe_xds.ebrim import Association
from ihe_xds.errors import (
    SEVERITY_WARNING,
    XDS_REGISTRY_METADATA_ERROR,
    XDS_STORED_QUERY_MISSING_PARAM,
    XDS_STORED_QUERY_PARAM_NUMBER,
    XDS_UNKNOWN_STORED_QUERY,
    MalformedMessage,
    RegistryError,
    registry_error,
)
from ihe_xds.hl7v2 import CX, parse_cx
from ihe_xds.mapping import entry_uuid_of
from ihe_xds.vocabulary import (
    ASSOC_HAS_MEMBER,
    AVAILABILITY_STATUSES,
    DOCUMENT_RELATIONSHIPS,
    NS_QUERY,
    NS_RIM,
    OBJECT_TYPE_ON_DEMAND,
    OBJECT_TYPE_STABLE,
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
    STATUS_DEPRECATED,
    q,
)

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
# ITI-18 Reference ID Option (ITI TF-2a 3.18.4.1.2.3.7.14).
FIND_DOCUMENTS_BY_REFERENCE_ID = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"
FIND_SUBMISSION_SETS = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"
FIND_FOLDERS = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431"
GET_ALL = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
GET_FOLDERS = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4"
GET_ASSOCIATIONS = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
GET_DOCUMENTS_AND_ASSOCIATIONS = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
GET_SUBMISSION_SETS = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
GET_SUBMISSION_SET_AND_CONTENTS = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"
GET_FOLDER_AND_CONTENTS = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"
GET_FOLDERS_FOR_DOCUMENT = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578"
GET_RELATED_DOCUMENTS = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6"

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
_SINGLE = {PATIENT, TIME, METADATA_LEVEL}  # one value, one slot
_MULTI_SLOT = {
    "$XDSDocumentEntryEventCodeList",
    "$XDSDocumentEntryConfidentialityCode",
    "$XDSFolderCodeList",
}

_DE_OPTIONAL = {
    "$XDSDocumentEntryClassCode": CODE,
    "$XDSDocumentEntryTypeCode": CODE,
    "$XDSDocumentEntryPracticeSettingCode": CODE,
    "$XDSDocumentEntryHealthcareFacilityTypeCode": CODE,
    "$XDSDocumentEntryFormatCode": CODE,
    "$XDSDocumentEntryEventCodeList": CODE,
    "$XDSDocumentEntryConfidentialityCode": CODE,
    "$XDSDocumentEntryCreationTimeFrom": TIME,
    "$XDSDocumentEntryCreationTimeTo": TIME,
    "$XDSDocumentEntryServiceStartTimeFrom": TIME,
    "$XDSDocumentEntryServiceStartTimeTo": TIME,
    "$XDSDocumentEntryServiceStopTimeFrom": TIME,
    "$XDSDocumentEntryServiceStopTimeTo": TIME,
    "$XDSDocumentEntryAuthorPerson": AUTHOR,
    "$XDSDocumentEntryType": OBJECT_TYPE,
    "$XDSDocumentEntryReferenceIdList": STRING,
}
_BY_ID = {
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
        return self.params.get(name) in _SINGLE or name in self.single


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
_TIME = re.compile(r"^\d{4}(\d{2}){0,5}$")


def _typed(kind: str, value: str) -> object:
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
        if not sep or not code or not scheme or "^" in scheme or not _SAFE_TEXT.match(value):
            raise ValueError("codes are written 'code^^codingScheme'")
        return Code(code, scheme)
    if kind == TIME:
        if not _TIME.match(value):
            raise ValueError("times are YYYY[MM[DD[hh[mm[ss]]]]]")
        return value
    if kind == OBJECT_TYPE:
        if value not in (OBJECT_TYPE_STABLE, OBJECT_TYPE_ON_DEMAND):
            raise ValueError(f"unknown DocumentEntry type {value!r}")
        return value
    if kind == UUID:
        if not _UUID.match(value):
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
    if not _SAFE_TEXT.match(value):
        raise ValueError("text with control characters or too long")
    return value


# --------------------------------------------------------------------------- parsing


def parse_stored_query(element: etree._Element) -> StoredQuery:
    """Read an AdhocQueryRequest; raise NotAQuery (no query at all) or StoredQueryError."""
    if element.tag != q(NS_QUERY, "AdhocQueryRequest"):
        raise NotAQuery(f"{etree.QName(element).localname} is not an AdhocQueryRequest")
    adhoc = element.find(q(NS_RIM, "AdhocQuery"))
    if adhoc is None:
        raise NotAQuery("AdhocQueryRequest without AdhocQuery")
    option = element.find(q(NS_QUERY, "ResponseOption"))
    return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
    query_id = (adhoc.get("id") or "").strip()
    definition = QUERIES.get(query_id)
    if definition is None:
        raise StoredQueryError(
            [
                registry_error(
                    XDS_UNKNOWN_STORED_QUERY,
                    f"unknown stored query id {query_id!r}",
                    "AdhocQuery/@id",
                )
            ]
        )
    errors: list[RegistryError] = []
    if return_type not in ("LeafClass", "ObjectRef"):
        errors.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR,
                f"unknown returnType {return_type!r}",
                "ResponseOption/@returnType",
            )
        )
    query = StoredQuery(query_id, definition.name, return_type)
    for slot in adhoc.findall(q(NS_RIM, "Slot")):
        name = (slot.get("name") or "").strip()
        kind = definition.params.get(name)
        if kind is None:
            query.warnings.append(
                RegistryError(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"parameter {name!r} is not a parameter of {definition.name}; ignored",
                    name,
                    SEVERITY_WARNING,
                )
            )
            continue
        raw_values = [
            v.text or "" for v in slot.iterfind(f"{q(NS_RIM, 'ValueList')}/{q(NS_RIM, 'Value')}")
        ]
        single = definition.takes_one_value(name)
        group: list[object] = []
        try:
            for raw in raw_values:
                if kind == METADATA_LEVEL and raw.strip() not in ("1", "2"):
                    raise ValueError("$MetadataLevel is the number 1 or 2")
                values, is_list = parse_value(raw)
                # A one-item list for a single-valued id is read as that value (lenient
                # with clients that list everything); two values are refused below.
                if kind in _SINGLE and is_list:
                    raise _Number("takes a single value, not a list")
                group += [_typed(kind, value) for value in values]
        except _Number as exc:
            errors.append(registry_error(XDS_STORED_QUERY_PARAM_NUMBER, f"{name} {exc}", name))
            continue
        except ValueError as exc:
            errors.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR, f"invalid value for {name}: {exc}", name
                )
            )
            continue
        if not group:
            errors.append(registry_error(XDS_REGISTRY_METADATA_ERROR, f"{name} has no value", name))
            continue
        if single and len(group) > 1:
            errors.append(
                registry_error(XDS_STORED_QUERY_PARAM_NUMBER, f"{name} takes a single value", name)
            )
            continue
        if name in query.params and name not in _MULTI_SLOT:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_PARAM_NUMBER, f"{name} given in more than one Slot", name
                )
            )
            continue
        query.params.setdefault(name, []).append(group)
    seen = set(query.params) | {e.location for e in errors}
    for name in definition.required:
        if name not in seen:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_MISSING_PARAM, f"{definition.name} requires {name}", name
                )
            )
    if definition.one_of:
        given = [name for name in definition.one_of if name in seen]
        if not given:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_MISSING_PARAM,
                    f"{definition.name} requires one of {', '.join(definition.one_of)}",
                    definition.one_of[0],
                )
            )
        elif len(given) > 1:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_PARAM_NUMBER,
                    f"{definition.name} takes only one of {', '.join(definition.one_of)}",
                    given[1],
                )
            )
    if errors:
        raise StoredQueryError(errors)
    return query


class _Number(Exception):
    pass


# --------------------------------------------------------------------------- LIKE


def like_matches(pattern: str, value: str) -> bool:
    """SQL LIKE semantics of AuthorPerson (% any run, _ one character), case-sensitive."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


# --------------------------------------------------------------------------- FHIR plans


@dataclass(frozen=True, slots=True)
class FhirSearch:
    """One search to run through the service (the access gate applies as for any search)."""

    resource_type: str
    params: list[tuple[str, str]]
    purpose: str


@dataclass(slots=True)
class QueryPlan:
    """How to answer a stored query with FHIR searches.

    Run `searches` in order; a search whose params contain the placeholder `{ids}` is run
    with the comma-joined ids of the DocumentReferences the previous searches found (the
    lead's service may instead use the `_include`/`_revinclude` already present). Results
    are filtered with `keep(resource)` (conditions FHIR search cannot express), then mapped
    with `ihe_xds.mapping` and, for `association_types`, `associations_from_fhir` keeping
    only those types. `returns` names the ebRIM object kinds of the answer.
    """

    query: str
    searches: list[FhirSearch]
    returns: tuple[str, ...]
    keep: Callable[[dict], bool] = lambda resource: True
    association_types: tuple[str, ...] = ()
    notes: str = ""


def _token(code: Code) -> str:
    return f"{system_for_scheme(code.scheme)}|{code.code}"


def _reference_id(cxi: str) -> str:
    """A referenceIdList CXi (`id^^^&OID&ISO^type`) as the `related:identifier` token the
    mapping stores it as (`mapping.to_fhir._related`): `urn:oid:OID|id`, or `id` alone."""
    parts = cxi.split("^") + ["", "", "", ""]
    authority = parts[3].split("&") + ["", ""]
    value = _escaped(parts[0])
    return f"urn:oid:{authority[1]}|{value}" if is_oid(authority[1]) else value


def _escaped(value: str) -> str:
    """A value inside a FHIR search token (search.html#escaping)."""
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value


def _patient(cx: CX) -> str:
    return f"urn:oid:{cx.authority_oid}|{cx.value}"


def _date(value: str) -> str:
    parts = [value[0:4], value[4:6], value[6:8]]
    text = "-".join(p for p in parts if p)
    if len(value) > 8:
        text += "T" + ":".join([value[8:10], value[10:12] or "00", value[12:14] or "00"]) + "Z"
    return text


_FHIR_STATUS = {
    STATUS_APPROVED: "current",
    STATUS_ARCHIVED: "current",
    STATUS_DEPRECATED: "superseded",
    STATUS_DELETED: "entered-in-error",
}


def _status_params(statuses: list[str]) -> list[tuple[str, str]]:
    fhir = sorted({_FHIR_STATUS[s] for s in statuses})
    params = [("status", ",".join(fhir))]
    # Archived is the PDSm_IsArchived extension (PDSm isArchived search parameter, issue #20).
    if STATUS_APPROVED in statuses and STATUS_ARCHIVED not in statuses:
        params.append(("isArchived:not", "true"))
    if STATUS_ARCHIVED in statuses and STATUS_APPROVED not in statuses:
        params.append(("isArchived", "true"))
    return params


_CODE_PARAMS = {
    "$XDSDocumentEntryClassCode": "category",
    "$XDSDocumentEntryTypeCode": "type",
    "$XDSDocumentEntryPracticeSettingCode": "setting",
    "$XDSDocumentEntryHealthcareFacilityTypeCode": "facility",
    "$XDSDocumentEntryFormatCode": "format",
    "$XDSDocumentEntryEventCodeList": "event",
    "$XDSDocumentEntryConfidentialityCode": "security-label",
}
_TIME_PARAMS = {
    "$XDSDocumentEntryCreationTimeFrom": ("creation", "ge"),
    "$XDSDocumentEntryCreationTimeTo": ("creation", "lt"),
    "$XDSDocumentEntryServiceStartTimeFrom": ("period", "ge"),
    "$XDSDocumentEntryServiceStopTimeTo": ("period", "lt"),
}


def _document_filters(query: StoredQuery) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, fhir_name in _CODE_PARAMS.items():
        for group in query.params.get(name) or []:
            params.append((fhir_name, ",".join(_token(c) for c in group if isinstance(c, Code))))
    return params


def to_fhir_search(query: StoredQuery) -> list[tuple[str, str]]:
    """ITI-67 search parameters for FindDocuments (DocumentReference) or FindSubmissionSets
    (List). Conditions FHIR cannot say exactly (AuthorPerson LIKE, service time bounds,
    sourceId, contentType) are narrowed here where possible and finished by `plan().keep`.
    """
    if query.query_id in (FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID):
        params = [("patient.identifier", _patient(query.one("$XDSDocumentEntryPatientId")))]
        params += _status_params(query.values("$XDSDocumentEntryStatus"))
        params += _document_filters(query)
        references = query.values("$XDSDocumentEntryReferenceIdList")
        if references:
            # referenceIdList (context.related identifiers); an OR-list, as the option says.
            params.append(("related:identifier", ",".join(map(_reference_id, references))))
        for name, (fhir_name, prefix) in _TIME_PARAMS.items():
            value = query.one(name)
            if value:
                params.append((fhir_name, f"{prefix}{_date(value)}"))
        for pattern in query.values("$XDSDocumentEntryAuthorPerson")[:1]:
            family = _literal_component(pattern, 1)
            if family and len(query.values("$XDSDocumentEntryAuthorPerson")) == 1:
                params.append(("author.family", family))
        return params
    if query.query_id == FIND_SUBMISSION_SETS:
        params = [
            ("patient.identifier", _patient(query.one("$XDSSubmissionSetPatientId"))),
            ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"),
        ]
        params += _status_params(query.values("$XDSSubmissionSetStatus"))
        if query.one("$XDSSubmissionSetSubmissionTimeFrom"):
            params.append(("date", "ge" + _date(query.one("$XDSSubmissionSetSubmissionTimeFrom"))))
        if query.one("$XDSSubmissionSetSubmissionTimeTo"):
            params.append(("date", "lt" + _date(query.one("$XDSSubmissionSetSubmissionTimeTo"))))
        return params
    raise ValueError(f"{query.name} is answered by plan(), not by a single search")


def _literal_component(pattern: str, index: int) -> str | None:
    """A component of an XCN LIKE pattern when it holds no wildcard (usable as an exact search)."""
    parts = pattern.split("^")
    if len(parts) <= index:
        return None
    component = parts[index]
    return component if component and "%" not in component and "_" not in component else None


def _document_keep(query: StoredQuery) -> Callable[[dict], bool]:
    from ihe_xds.hl7v2 import fhir_to_xds_time

    authors = query.values("$XDSDocumentEntryAuthorPerson")
    start_to = query.one("$XDSDocumentEntryServiceStartTimeTo")
    stop_from = query.one("$XDSDocumentEntryServiceStopTimeFrom")
    start_from = query.one("$XDSDocumentEntryServiceStartTimeFrom")
    stop_to = query.one("$XDSDocumentEntryServiceStopTimeTo")
    object_types = query.values("$XDSDocumentEntryType")
    if not (authors or object_types or start_to or stop_from or start_from or stop_to):
        return lambda resource: True  # FHIR search said it all: spare the per-entry work

    def keep(resource: dict) -> bool:
        if object_types and OBJECT_TYPE_STABLE not in object_types:
            return False  # this registry holds stable entries only
        period = (resource.get("context") or {}).get("period") or {}
        start = fhir_to_xds_time(period["start"]) if period.get("start") else None
        stop = fhir_to_xds_time(period["end"]) if period.get("end") else None
        for bound, value, lower in (
            (start_from, start, True),
            (start_to, start, False),
            (stop_from, stop, True),
            (stop_to, stop, False),
        ):
            if bound is None:
                continue
            if value is None:
                return False
            width = min(len(bound), len(value))
            if lower and value[:width] < bound[:width]:
                return False
            if not lower and value[:width] >= bound[:width]:
                return False
        if authors:
            from ihe_xds.mapping import document_reference_to_ebrim

            entry = document_reference_to_ebrim(resource, patient_cx="", repository_unique_id="")
            persons = [a.person for a in entry.authors if a.person]
            if not any(like_matches(p, person) for p in authors for person in persons):
                return False
        return True

    return keep


def _member_keep(query: StoredQuery) -> Callable[[dict], bool]:
    """GetSubmissionSetAndContents: which members the answer keeps. Its FormatCode and
    ConfidentialityCode filters were accepted and ignored (issue #19, point 4): each Slot is
    an OR-list, several Slots AND together, as in FindDocuments."""
    base = _document_keep(query)
    wanted = [
        (
            element,
            [
                {_token(code) for code in group if isinstance(code, Code)}
                for group in query.params.get(name) or []
            ],
        )
        for name, element in (
            ("$XDSDocumentEntryFormatCode", "format"),
            ("$XDSDocumentEntryConfidentialityCode", "securityLabel"),
        )
    ]
    if not any(groups for _, groups in wanted):
        return base

    def codes_of(resource: dict, element: str) -> set[str]:
        if element == "format":
            codings = [(c.get("format") or {}) for c in resource.get("content") or []]
        else:
            codings = [
                c
                for concept in resource.get("securityLabel") or []
                for c in concept.get("coding") or []
            ]
        return {f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)}

    def keep(resource: dict) -> bool:
        if not base(resource):
            return False
        return all(
            codes_of(resource, element) & group for element, groups in wanted for group in groups
        )

    return keep


def _submission_set_keep(query: StoredQuery) -> Callable[[dict], bool]:
    sources = query.values("$XDSSubmissionSetSourceId")
    authors = query.values("$XDSSubmissionSetAuthorPerson")
    content_types = query.values("$XDSSubmissionSetContentType")

    def keep(resource: dict) -> bool:
        from ihe_xds.mapping import list_to_ebrim

        submission_set = list_to_ebrim(resource)
        if sources and submission_set.source_id not in sources:
            return False
        if authors:
            persons = [a.person for a in submission_set.authors if a.person]
            if not any(like_matches(p, person) for p in authors for person in persons):
                return False
        if content_types:
            coded = submission_set.content_type_code
            if coded is None or not any(
                c.code == coded.code and c.scheme == coded.scheme for c in content_types
            ):
                return False
        return True

    return keep


def _identifier_values(query: StoredQuery, uuid_param: str, unique_param: str) -> str:
    uuids = query.values(uuid_param) + query.values("$XDSDocumentEntryLogicalID")
    if uuids:
        # An earlier metadata version's entryUUID (a logicalID among them) finds its document,
        # whose versions ihe_xds.entry_versions answers.
        systems = metadata_versions.identifier_systems()
        return ",".join(f"{system}|{u}" for u in uuids for system in systems)
    return ",".join(f"urn:ietf:rfc:3986|urn:oid:{u}" for u in query.values(unique_param))


_LIST_CODE = ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset")


def _no_folders(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name, [], ("Folder",), notes="this registry holds no Folders: the answer is empty"
    )


def _find_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [FhirSearch("DocumentReference", to_fhir_search(query), "the matching DocumentEntries")],
        ("DocumentEntry",),
        keep=_document_keep(query),
    )


def _find_submission_sets(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [FhirSearch("List", to_fhir_search(query), "the matching SubmissionSets")],
        ("SubmissionSet",),
        keep=_submission_set_keep(query),
    )


def _get_all(query: StoredQuery) -> QueryPlan:
    patient = _patient(query.one("$patientId"))
    documents = [("patient.identifier", patient)] + _status_params(
        query.values("$XDSDocumentEntryStatus")
    )
    documents += _document_filters(query)
    lists = [("patient.identifier", patient), _LIST_CODE] + _status_params(
        query.values("$XDSSubmissionSetStatus")
    )
    return QueryPlan(
        query.name,
        [
            FhirSearch("DocumentReference", documents, "the patient's DocumentEntries"),
            FhirSearch("List", lists, "the patient's SubmissionSets"),
        ],
        ("DocumentEntry", "SubmissionSet", "Association"),
        keep=_document_keep(query),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
        notes="associations between the returned objects only",
    )


def _named_documents(query: StoredQuery) -> str:
    return _identifier_values(query, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")


def _get_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [("identifier", _named_documents(query))],
                "the named DocumentEntries",
            )
        ],
        ("DocumentEntry",),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
    )


def _get_documents_and_associations(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [
                    ("identifier", _named_documents(query)),
                    ("_revinclude", "List:item"),
                    ("_revinclude", "DocumentReference:relatesto"),
                ],
                "the named DocumentEntries, the SubmissionSets holding them and the documents relating to them",
            )
        ],
        ("DocumentEntry", "Association"),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
    )


def _pointed_at(query: StoredQuery) -> FhirSearch:
    """The DocumentEntries named by $uuid, with the Lists and documents pointing at them."""
    return FhirSearch(
        "DocumentReference",
        [
            ("identifier", _uuid_identifiers(query)),
            ("_revinclude", "List:item"),
            ("_revinclude", "DocumentReference:relatesto"),
        ],
        "the named DocumentEntries with the Lists and documents pointing at them",
    )


def _uuid_identifiers(query: StoredQuery) -> str:
    return ",".join(f"urn:ietf:rfc:3986|{u}" for u in query.values("$uuid"))


def _get_associations(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            _pointed_at(query),
            FhirSearch(
                "List",
                [("identifier", _uuid_identifiers(query)), _LIST_CODE, ("_include", "List:item")],
                "the named SubmissionSets with their members",
            ),
        ],
        ("Association",),
        association_types=(ASSOC_HAS_MEMBER, *DOCUMENT_RELATIONSHIPS),
        notes="keep associations whose source or target is one of $uuid",
    )


def _get_submission_sets(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [_pointed_at(query)],
        ("SubmissionSet", "Association"),
        association_types=(ASSOC_HAS_MEMBER,),
        notes="the Lists (code submissionset) found by _revinclude, and their HasMember associations",
    )


def _get_submission_set_and_contents(query: StoredQuery) -> QueryPlan:
    identifiers = _identifier_values(
        query, "$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"
    )
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "List",
                [("identifier", identifiers), _LIST_CODE, ("_include", "List:item")],
                "the SubmissionSet and its member DocumentReferences",
            )
        ],
        ("SubmissionSet", "DocumentEntry", "Association"),
        keep=_member_keep(query),
        association_types=(ASSOC_HAS_MEMBER,),
        notes="keep() (type, format, confidentiality) applies to the members only",
    )


def _get_related_documents(query: StoredQuery) -> QueryPlan:
    return QueryPlan(
        query.name,
        [
            FhirSearch(
                "DocumentReference",
                [
                    ("identifier", _named_documents(query)),
                    ("_include", "DocumentReference:relatesto"),
                    ("_revinclude", "DocumentReference:relatesto"),
                ],
                "the document, the documents it relates to and those relating to it",
            )
        ],
        ("DocumentEntry", "Association"),
        association_types=tuple(query.values("$AssociationTypes")),
        notes="empty answer when the document has no association of the requested types",
    )


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Answer:
    """What an ITI-18 answer is written from, before ebRIM: `documents` the DocumentReferences
    answered as DocumentEntries (after `QueryPlan.keep`), `found` every DocumentReference the
    searches gave (matched or included), `submission_sets` the SubmissionSet Lists and
    `associations` those among them of the plan's `association_types`."""

    documents: list[dict]
    found: list[dict]
    submission_sets: list[dict]
    associations: list[Association]


def _as_found(query: StoredQuery, answer: Answer) -> Answer:
    """The answer as the searches and `keep` left it."""
    return answer


def _among_found(query: StoredQuery, answer: Answer) -> Answer:
    """GetAll: the associations between the returned objects only."""
    ids = {entry_uuid_of(d) for d in answer.documents}
    ids |= {entry_uuid_of(s) for s in answer.submission_sets}
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in ids and a.target in ids],
    )


def _touching_uuids(query: StoredQuery, answer: Answer) -> Answer:
    """GetAssociations: the associations whose source or target is one of $uuid."""
    uuids = set(query.values("$uuid"))
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in uuids or a.target in uuids],
    )


def _holding_uuids(query: StoredQuery, answer: Answer) -> Answer:
    """GetSubmissionSets: the HasMember associations to one of $uuid, and their SubmissionSets."""
    uuids = set(query.values("$uuid"))
    associations = [a for a in answer.associations if a.target in uuids]
    holders = {a.source for a in associations}
    return replace(
        answer,
        associations=associations,
        submission_sets=[s for s in answer.submission_sets if entry_uuid_of(s) in holders],
    )


def _touching_documents(query: StoredQuery, answer: Answer) -> Answer:
    """GetDocumentsAndAssociations: the associations of the named documents."""
    named = {entry_uuid_of(d) for d in answer.documents}
    return replace(
        answer,
        associations=[a for a in answer.associations if a.source in named or a.target in named],
    )


def _related_documents(query: StoredQuery, answer: Answer) -> Answer:
    """GetRelatedDocuments: the named document's associations of the requested types and the
    documents at both ends; nothing when it has none."""
    answer = _touching_documents(query, answer)
    related = {a.source for a in answer.associations} | {a.target for a in answer.associations}
    documents = (
        [d for d in answer.found if entry_uuid_of(d) in related] if answer.associations else []
    )
    return replace(answer, documents=documents)


@dataclass(frozen=True, slots=True)
class StoredQueryKind:
    """One stored query: its parameters, the FHIR searches answering it (`plan`) and what of
    their results the answer keeps (`select`, after `QueryPlan.keep`). Adding a stored query
    is adding one of these to KINDS.

    `members_included`: the DocumentReferences the searches only included are answered too
    (GetSubmissionSetAndContents: the SubmissionSet's members). `metadata_versions`: each
    metadata version of a named document is a DocumentEntry of its own (ihe_xds.entry_versions).
    """

    query_id: str
    definition: QueryDefinition
    plan: Callable[[StoredQuery], QueryPlan]
    select: Callable[[StoredQuery, Answer], Answer] = _as_found
    members_included: bool = False
    metadata_versions: bool = False


KINDS: dict[str, StoredQueryKind] = {
    kind.query_id: kind
    for kind in (
        StoredQueryKind(
            FIND_DOCUMENTS,
            QueryDefinition(
                "FindDocuments",
                {
                    "$XDSDocumentEntryPatientId": PATIENT,
                    "$XDSDocumentEntryStatus": STATUS,
                    **_DE_OPTIONAL,
                },
                required=("$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus"),
            ),
            _find_documents,
        ),
        StoredQueryKind(
            FIND_DOCUMENTS_BY_REFERENCE_ID,
            QueryDefinition(
                "FindDocumentsByReferenceId",
                {
                    "$XDSDocumentEntryPatientId": PATIENT,
                    "$XDSDocumentEntryStatus": STATUS,
                    **_DE_OPTIONAL,
                },
                required=(
                    "$XDSDocumentEntryPatientId",
                    "$XDSDocumentEntryStatus",
                    "$XDSDocumentEntryReferenceIdList",
                ),
            ),
            _find_documents,
        ),
        StoredQueryKind(
            FIND_SUBMISSION_SETS,
            QueryDefinition(
                "FindSubmissionSets",
                {
                    "$XDSSubmissionSetPatientId": PATIENT,
                    "$XDSSubmissionSetStatus": STATUS,
                    "$XDSSubmissionSetSourceId": OID_LIST,
                    "$XDSSubmissionSetSubmissionTimeFrom": TIME,
                    "$XDSSubmissionSetSubmissionTimeTo": TIME,
                    "$XDSSubmissionSetAuthorPerson": AUTHOR,
                    "$XDSSubmissionSetContentType": CODE,
                },
                required=("$XDSSubmissionSetPatientId", "$XDSSubmissionSetStatus"),
                single=frozenset({"$XDSSubmissionSetAuthorPerson"}),
            ),
            _find_submission_sets,
        ),
        StoredQueryKind(
            FIND_FOLDERS,
            QueryDefinition(
                "FindFolders",
                {
                    "$XDSFolderPatientId": PATIENT,
                    "$XDSFolderStatus": STATUS,
                    "$XDSFolderLastUpdateTimeFrom": TIME,
                    "$XDSFolderLastUpdateTimeTo": TIME,
                    "$XDSFolderCodeList": CODE,
                },
                required=("$XDSFolderPatientId", "$XDSFolderStatus"),
            ),
            _no_folders,
        ),
        StoredQueryKind(
            GET_ALL,
            QueryDefinition(
                "GetAll",
                {
                    "$patientId": PATIENT,
                    "$XDSDocumentEntryStatus": STATUS,
                    "$XDSSubmissionSetStatus": STATUS,
                    "$XDSFolderStatus": STATUS,
                    "$XDSDocumentEntryFormatCode": CODE,
                    "$XDSDocumentEntryConfidentialityCode": CODE,
                    "$XDSDocumentEntryType": OBJECT_TYPE,
                },
                required=(
                    "$patientId",
                    "$XDSDocumentEntryStatus",
                    "$XDSSubmissionSetStatus",
                    "$XDSFolderStatus",
                ),
            ),
            _get_all,
            select=_among_found,
        ),
        StoredQueryKind(
            GET_DOCUMENTS,
            QueryDefinition(
                "GetDocuments",
                # $XDSDocumentEntryLogicalID (Metadata Update, 3.18.4.1.2.3.7.5): a DocumentEntry's
                # logicalId is its entryUUID here (an update is the same entry's next version).
                {**_BY_ID, "$XDSDocumentEntryLogicalID": UUID},
                one_of=(
                    "$XDSDocumentEntryEntryUUID",
                    "$XDSDocumentEntryUniqueId",
                    "$XDSDocumentEntryLogicalID",
                ),
            ),
            _get_documents,
            metadata_versions=True,
        ),
        StoredQueryKind(
            GET_FOLDERS,
            QueryDefinition(
                "GetFolders",
                {"$XDSFolderEntryUUID": UUID, "$XDSFolderUniqueId": UNIQUE_ID},
                one_of=("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
            ),
            _no_folders,
        ),
        StoredQueryKind(
            GET_ASSOCIATIONS,
            QueryDefinition("GetAssociations", {"$uuid": UUID}, required=("$uuid",)),
            _get_associations,
            select=_touching_uuids,
        ),
        StoredQueryKind(
            GET_DOCUMENTS_AND_ASSOCIATIONS,
            QueryDefinition(
                "GetDocumentsAndAssociations",
                dict(_BY_ID),
                one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
            ),
            _get_documents_and_associations,
            select=_touching_documents,
            metadata_versions=True,
        ),
        StoredQueryKind(
            GET_SUBMISSION_SETS,
            QueryDefinition("GetSubmissionSets", {"$uuid": UUID}, required=("$uuid",)),
            _get_submission_sets,
            select=_holding_uuids,
        ),
        StoredQueryKind(
            GET_SUBMISSION_SET_AND_CONTENTS,
            QueryDefinition(
                "GetSubmissionSetAndContents",
                {
                    "$XDSSubmissionSetEntryUUID": UUID,
                    "$XDSSubmissionSetUniqueId": UNIQUE_ID,
                    "$XDSDocumentEntryFormatCode": CODE,
                    "$XDSDocumentEntryConfidentialityCode": CODE,
                    "$XDSDocumentEntryType": OBJECT_TYPE,
                },
                one_of=("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"),
                single=frozenset({"$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"}),
            ),
            _get_submission_set_and_contents,
            members_included=True,
        ),
        StoredQueryKind(
            GET_FOLDER_AND_CONTENTS,
            QueryDefinition(
                "GetFolderAndContents",
                {"$XDSFolderEntryUUID": UUID, "$XDSFolderUniqueId": UNIQUE_ID},
                one_of=("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),
                single=frozenset({"$XDSFolderEntryUUID", "$XDSFolderUniqueId"}),
            ),
            _no_folders,
        ),
        StoredQueryKind(
            GET_FOLDERS_FOR_DOCUMENT,
            QueryDefinition(
                "GetFoldersForDocument",
                dict(_BY_ID),
                one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
                single=frozenset({"$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"}),
            ),
            _no_folders,
        ),
        StoredQueryKind(
            GET_RELATED_DOCUMENTS,
            QueryDefinition(
                "GetRelatedDocuments",
                {**_BY_ID, "$AssociationTypes": ASSOCIATION},
                required=("$AssociationTypes",),
                one_of=("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),
                single=frozenset({"$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"}),
            ),
            _get_related_documents,
            select=_related_documents,
        ),
    )
}
# The parameters of each query (parse_stored_query), and its id by name.
QUERIES: dict[str, QueryDefinition] = {query_id: k.definition for query_id, k in KINDS.items()}
QUERY_IDS_BY_NAME = {definition.name: query_id for query_id, definition in QUERIES.items()}


def plan(query: StoredQuery) -> QueryPlan:
    """The FHIR searches answering any supported stored query (see QueryPlan)."""
    kind = KINDS.get(query.query_id)
    if kind is None:
        raise ValueError(f"no plan for {query.name}")
    return kind.plan(query)

"""Search index values of a resource, extracted at write time from the SearchParameters.

Each parameter's expression is compiled once by the registry (`fhir_server.search.fhirpath`:
the compiled FHIRPath subset, fhirpathpy for the rest); this module runs those extractors on
a resource and turns the values into index entries, the compartments the resource belongs
to, and the sort values.

Index entries follow fhir_server.search.index. Conventions the engines and the evaluator
rely on (documented once, here):

- Token: Coding/CodeableConcept codings -> (system, code, display); a CodeableConcept's text
  -> an extra entry (None, None, text) so `:text` sees it; Identifier -> (system, value,
  display=type.text); ContactPoint -> (system e.g. "phone", value); boolean -> (None,
  "true"/"false"); code/string/uri/id -> (None, value). Displays are normalized.
- Identifier type (`:of-type`): extra TokenEntry under param `"<param>:of-type"` with
  system = type coding system and code = `"<type code>|<identifier value>"`.
- Composite: a TokenEntry (None, "<component 1>$<component 2>") per element, each component
  written as its code (token) or `Type/id` / URL (reference).
- Reference: `Type/id[/_history/v]` -> target_type/target_id; absolute URL, `urn:uuid:`,
  `urn:oid:` and canonicals -> url; `#contained` -> nothing (but its Reference.identifier is
  kept); Reference.identifier -> identifier_system/identifier_value (target_type =
  Reference.type when there is no literal reference).
- Number/Quantity: a point, low == high == the stored value.
- Date: the value's precision range; Period start..end (open ends at MIN/MAX_INSTANT).
- `_lastUpdated`: a point, low == high == meta.lastUpdated (the engines' last-updated column).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from fhir_server.resources.references import RELATIVE_REFERENCE
from fhir_server.resources.served import compartment_of
from fhir_server.search.fhirpath import Extractor, fhirpathpy_extractor
from fhir_server.search.index import (
    DateEntry,
    IndexEntries,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhir_server.search.normalize import (
    MAX_INSTANT,
    MIN_INSTANT,
    DateFormatError,
    date_range,
    instant_point,
    normalize_string,
    to_decimal,
    value_date_range,
)

if TYPE_CHECKING:
    from fhir_server.search.registry import SearchParamDef, SearchRegistry

OF_TYPE_SUFFIX = ":of-type"

# ---------------------------------------------------------------------------------------------
# Values -> index entries
# ---------------------------------------------------------------------------------------------

_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_CODEABLE_KEYS = frozenset({"coding", "text", "id", "extension"})


# Texts and dates recur: the same displays and descriptions across documents, the same
# instant as a document's date, its attachment's creation and its period's end. Both
# functions are pure, so each distinct text is normalized or parsed once while it is in use.
# Only short texts are remembered: a cache bounded in entries alone would keep 8,192 texts
# of whatever length writers send (a 1 MB description, twice: the text and its normal form).
_REMEMBERED_TEXT = 256
_normalized_cached = lru_cache(maxsize=8192)(normalize_string)
_date_range_cached = lru_cache(maxsize=4096)(date_range)


def _normalized(text: str) -> str:
    if len(text) > _REMEMBERED_TEXT:
        return normalize_string(text)
    return _normalized_cached(text)


def _text_date_range(text: str) -> tuple[int, int]:
    if len(text) > _REMEMBERED_TEXT:
        return date_range(text)
    return _date_range_cached(text)


def _date_bounds(value: Any) -> tuple[int, int] | None:
    """`value_date_range`, with date texts and Period bounds through `_text_date_range`."""
    if isinstance(value, str):
        return _text_date_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):
        start, end = value.get("start"), value.get("end")
        if isinstance(start, str | None) and isinstance(end, str | None):
            if start is None and end is None:
                return None
            low = _text_date_range(start)[0] if start else MIN_INSTANT
            high = _text_date_range(end)[1] if end else MAX_INSTANT
            return low, high
    return value_date_range(value)


def _norm(text: object) -> str | None:
    return _normalized(text) if isinstance(text, str) and text.strip() else None


def token_entries(param: str, value: Any) -> list[TokenEntry]:
    if isinstance(value, bool):
        return [TokenEntry(param, None, "true" if value else "false")]
    if isinstance(value, str | int | Decimal):
        return [TokenEntry(param, None, str(value))]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and set(value) <= _CODEABLE_KEYS):
        entries = [
            TokenEntry(param, c.get("system"), c.get("code"), _norm(c.get("display")))
            for c in value.get("coding", ())
            if isinstance(c, dict) and (c.get("code") is not None or c.get("system"))
        ]
        if _norm(value.get("text")):
            entries.append(TokenEntry(param, None, None, _norm(value.get("text"))))
        return entries
    if "value" in value and (value.get("system") in _CONTACT_SYSTEMS or "rank" in value):
        return [TokenEntry(param, value.get("system"), str(value["value"]))]
    if "value" in value or ("system" in value and "code" not in value):
        return _identifier_entries(param, value)
    if "code" in value or "system" in value:
        return [
            TokenEntry(param, value.get("system"), value.get("code"), _norm(value.get("display")))
        ]
    return []


def _identifier_entries(param: str, identifier: dict) -> list[TokenEntry]:
    type_ = identifier.get("type")
    if not isinstance(type_, dict):
        type_ = {}
    value = identifier.get("value")
    entries = [TokenEntry(param, identifier.get("system"), value, _norm(type_.get("text")))]
    if value is not None:
        for coding in type_.get("coding", ()):
            if isinstance(coding, dict) and coding.get("code") is not None:
                entries.append(
                    TokenEntry(
                        param + OF_TYPE_SUFFIX,
                        coding.get("system"),
                        f"{coding['code']}|{value}",
                    )
                )
    return entries


def reference_entry(param: str, value: Any) -> ReferenceEntry | None:
    if isinstance(value, str):
        return ReferenceEntry(param, None, None, url=value)
    if not isinstance(value, dict):
        return None
    identifier = value.get("identifier")
    if not isinstance(identifier, dict):
        identifier = {}
    id_system, id_value = identifier.get("system"), identifier.get("value")
    literal = value.get("reference")
    if isinstance(literal, str) and not literal.startswith("#"):
        match = RELATIVE_REFERENCE.match(literal)
        if match:
            return ReferenceEntry(param, match.group(1), match.group(2), None, id_system, id_value)
        return ReferenceEntry(param, None, None, literal, id_system, id_value)
    if id_value is not None or id_system is not None:
        declared = value.get("type") if isinstance(value.get("type"), str) else None
        return ReferenceEntry(param, declared, None, None, id_system, id_value)
    return None


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def string_entries(param: str, value: Any) -> list[StringEntry]:
    texts: list[str] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        for part in parts:
            part_value = value.get(part)
            for text in part_value if isinstance(part_value, list) else [part_value]:
                if isinstance(text, str):
                    texts.append(text)
    return [StringEntry(param, _normalized(t), t) for t in texts if t.strip()]


def _composite_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        reference = reference_entry("", value)
        if reference is not None and reference.target_id is not None:
            return f"{reference.target_type}/{reference.target_id}"
        if reference is not None and reference.url is not None:
            return reference.url
        tokens = token_entries("", value)
        if tokens and tokens[0].code is not None:
            return tokens[0].code
    return None


def _add_values(entries: IndexEntries, definition: SearchParamDef, values: Iterable[Any]) -> None:
    code, kind = definition.code, definition.type
    for value in values:
        if kind == "token":
            entries.tokens.extend(token_entries(code, value))
        elif kind == "string":
            entries.strings.extend(string_entries(code, value))
        elif kind == "reference":
            reference = reference_entry(code, value)
            if reference is not None:
                entries.references.append(reference)
        elif kind == "date":
            try:
                if code == "_lastUpdated" and isinstance(value, str):
                    point = instant_point(value)
                    entries.dates.append(DateEntry(code, point, point))
                    continue
                bounds = _date_bounds(value)
            except DateFormatError:
                continue  # invalid data never reaches storage; be lenient on legacy values
            if bounds is not None:
                entries.dates.append(DateEntry(code, bounds[0], bounds[1]))
        elif kind == "uri":
            if isinstance(value, str):
                entries.uris.append(UriEntry(code, value))
        elif kind == "number":
            number = to_decimal(value)
            if number is not None:
                entries.numbers.append(NumberEntry(code, number, number))
        elif kind == "quantity":
            if isinstance(value, dict):
                number = to_decimal(value.get("value"))
                if number is not None:
                    entries.quantities.append(
                        QuantityEntry(
                            code,
                            number,
                            number,
                            value.get("system"),
                            value.get("code"),
                            value.get("unit"),
                        )
                    )
        elif kind == "composite":
            parts = []
            for component in definition.component_extractors:
                found = [f for v in component(value) if (f := _composite_value(v)) is not None]
                if not found:
                    break
                parts.append(found[0])
            else:
                if parts:
                    entries.tokens.append(TokenEntry(code, None, "$".join(parts)))


def _dedupe(items: list) -> list:
    return list(dict.fromkeys(items))


def extract(
    resource: dict,
    registry: SearchRegistry,
    *,
    engine: str = "compiled",
    content: IndexEntries | None = None,
) -> IndexEntries:
    """Index entries of every search parameter of the resource's type, and its compartment.

    `engine="fhirpathpy"` evaluates every expression with fhirpathpy instead (benchmarks).
    Call it on the resource as stored (with `meta.lastUpdated` set), so `_lastUpdated` is indexed.
    The parameters that read the version stamp (`_lastUpdated`) are evaluated after the others,
    so that `content`, the entries `prepare` computed before the stamp, gives the same lists:
    with it, only the stamp's parameters are evaluated here.
    """
    resource_type = resource.get("resourceType", "")
    content_definitions, stamped = _definitions(registry, resource_type)
    entries = content
    if entries is None:
        entries = _entries_of(resource, resource_type, content_definitions, engine)
    # `prepare` deduplicated `content`: only the lists the stamp adds to need it again.
    sizes = None if content is None else {kind: len(getattr(content, kind)) for kind, _ in _KINDS}
    for definition in stamped:
        extractor = _extractor(definition, resource_type, engine)
        if extractor is not None:
            _add_values(entries, definition, extractor(resource))
    for kind, _ in _KINDS:
        values = getattr(entries, kind)
        if sizes is None or len(values) != sizes[kind]:
            setattr(entries, kind, _dedupe(values))
    entries.compartment = compartment_of(resource)
    return entries


def _extractor(definition: SearchParamDef, resource_type: str, engine: str) -> Extractor | None:
    if engine == "compiled":
        return definition.extractor
    return _fhirpathpy_for(definition.expression, resource_type)


def _entries_of(
    resource: dict, resource_type: str, definitions: Iterable[SearchParamDef], engine: str
) -> IndexEntries:
    entries = IndexEntries()
    for definition in definitions:
        extractor = _extractor(definition, resource_type, engine)
        if extractor is not None:
            _add_values(entries, definition, extractor(resource))
    return entries


# `meta.versionId` / `meta.lastUpdated` (or the whole `meta`) in an expression: the parameter
# reads the version stamp, which the service sets just before the write.
_READS_STAMP = re.compile(r"\bmeta\b(?!\s*\.\s*(?:profile|tag|security|source)\b)")
STAMP_FIELDS = ("versionId", "lastUpdated")


# Per registry (a registry does not change once loaded), per type: `_definitions_of`.
_DEFINITIONS: weakref.WeakKeyDictionary[
    SearchRegistry, dict[str, tuple[tuple[SearchParamDef, ...], tuple[SearchParamDef, ...]]]
] = weakref.WeakKeyDictionary()


def _definitions(
    registry: SearchRegistry, resource_type: str
) -> tuple[tuple[SearchParamDef, ...], tuple[SearchParamDef, ...]]:
    """`_definitions_of`, computed once per registry and type: every write extracts, and
    building the split (the type's and the Resource-level parameters merged, each
    expression tested) costs about as much as extracting a small resource."""
    by_type = _DEFINITIONS.get(registry)
    if by_type is None:
        by_type = _DEFINITIONS.setdefault(registry, {})
    split = by_type.get(resource_type)
    if split is None:
        content, stamped = _definitions_of(registry, resource_type)
        split = by_type[resource_type] = (tuple(content), tuple(stamped))
    return split


def _definitions_of(
    registry: SearchRegistry, resource_type: str
) -> tuple[list[SearchParamDef], list[SearchParamDef]]:
    """The type's parameters (without `_id`: the engines' id column; IdTest never reads index
    entries) in registry order, split into those that read only the resource's content and
    those that read its version stamp."""
    content: list[SearchParamDef] = []
    stamped: list[SearchParamDef] = []
    for definition in registry.for_type(resource_type).values():
        if definition.code == "_id":
            continue
        reads_stamp = _reads_stamp(definition.expression)
        (stamped if reads_stamp else content).append(definition)
    return content, stamped


@lru_cache(maxsize=1024)
def _reads_stamp(expression: str) -> bool:
    return bool(_READS_STAMP.search(expression or ""))


# ---------------------------------------------------------------------------------------------
# Entries prepared ahead (bulk loading: extraction in the validating worker processes)
# ---------------------------------------------------------------------------------------------

_Entry = (
    TokenEntry | StringEntry | DateEntry | ReferenceEntry | UriEntry | NumberEntry | QuantityEntry
)
_KINDS: tuple[tuple[str, type[_Entry]], ...] = (
    ("tokens", TokenEntry),
    ("strings", StringEntry),
    ("dates", DateEntry),
    ("references", ReferenceEntry),
    ("uris", UriEntry),
    ("numbers", NumberEntry),
    ("quantities", QuantityEntry),
)
_ROW_OF = {cls: attrgetter(*(f.name for f in fields(cls))) for _, cls in _KINDS}


@dataclass(frozen=True, slots=True)
class PreparedEntries:
    """The content parameters' entries of a resource (all but those reading its version
    stamp), as plain tuples: cheap to send from a worker process, and a fresh
    `IndexEntries` for each use (`extract` completes the one it is given)."""

    rows: tuple[tuple[tuple, ...], ...]

    def entries(self) -> IndexEntries:
        entries = IndexEntries()
        for (kind, cls), rows in zip(_KINDS, self.rows, strict=True):
            setattr(entries, kind, [cls(*row) for row in rows])
        return entries


def prepare(resource: dict, registry: SearchRegistry) -> PreparedEntries:
    """The part of `extract(resource)` that does not depend on the version stamp, computed
    before the write (in a request's thread, or in the process that validated the resource);
    `extract(stamped, registry, content=prepared.entries())` completes it."""
    resource_type = resource.get("resourceType", "")
    content, _ = _definitions(registry, resource_type)
    entries = _entries_of(resource, resource_type, content, "compiled")
    return PreparedEntries(
        tuple(
            tuple(_ROW_OF[cls](e) for e in _dedupe(getattr(entries, kind))) for kind, cls in _KINDS
        )
    )


_FHIRPATHPY_CACHE: dict[str, Extractor] = {}


def _fhirpathpy_for(expression: str, resource_type: str) -> Extractor | None:
    """fhirpathpy only accepts the concrete type as the root, so `Resource.` is rewritten."""
    if not expression:
        return None
    concrete = re.sub(r"\b(?:Resource|DomainResource)\.", resource_type + ".", expression)
    if concrete not in _FHIRPATHPY_CACHE:
        _FHIRPATHPY_CACHE[concrete] = fhirpathpy_extractor(concrete)
    return _FHIRPATHPY_CACHE[concrete]


# ---------------------------------------------------------------------------------------------
# Sort values
# ---------------------------------------------------------------------------------------------

SortValue = int | str | Decimal


def sort_values(entries: IndexEntries) -> dict[str, tuple[SortValue, SortValue]]:
    """Per parameter, (lowest, highest) sortable value of the resource.

    FHIR sorts ascending by a resource's lowest value and descending by its highest; a
    resource without a value for the key sorts last in both directions, and ties fall through
    to the next key, then to the resource id ascending. Values per parameter type:

    - date: (min low, max high) in epoch microseconds;
    - string: the normalized text (compared by code point);
    - token: the code (entries without a code, and `:of-type` entries, are skipped);
    - number/quantity: Decimal (low, high);
    - reference: "Type/id" for local references, else the URL (identifier-only ones skipped);
    - uri: the value.
    `_lastUpdated` is among the dates; `_id` is the resource id itself and is not listed.
    """
    lows: dict[str, SortValue] = {}
    highs: dict[str, SortValue] = {}

    def add(param: str, low: SortValue, high: SortValue) -> None:
        if param not in lows or low < lows[param]:  # type: ignore[operator]
            lows[param] = low
        if param not in highs or high > highs[param]:  # type: ignore[operator]
            highs[param] = high

    for date in entries.dates:
        add(date.param, date.low, date.high)
    for string in entries.strings:
        add(string.param, string.normalized, string.normalized)
    for token in entries.tokens:
        if token.code is not None and not token.param.endswith(OF_TYPE_SUFFIX):
            add(token.param, token.code, token.code)
    for number in entries.numbers:
        add(number.param, number.low, number.high)
    for quantity in entries.quantities:
        add(quantity.param, quantity.low, quantity.high)
    for reference in entries.references:
        if reference.target_id is not None:
            key = f"{reference.target_type}/{reference.target_id}"
        elif reference.url is not None:
            key = reference.url
        else:
            continue
        add(reference.param, key, key)
    for uri in entries.uris:
        add(uri.param, uri.value, uri.value)
    return {param: (lows[param], highs[param]) for param in lows}

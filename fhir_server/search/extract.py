"""Search index values of a resource, extracted at write time from the SearchParameters.

Two ways to evaluate a SearchParameter expression:

- `compile_expression` compiles the FHIRPath subset our SearchParameters use (paths, `|`,
  `where(...)` with `resolve() is T` / `system='x'`, `ofType(T)`, `as T`, `is T`, `exists()`,
  `and`, `=`/`!=`, `extension('url')`, `resolve()` of contained resources) into plain Python
  closures over the JSON dict. That is about two orders of magnitude faster than a general
  FHIRPath engine (see benchmarks/bench_extract.py), which matters because every write pays
  for it.
- `fhirpathpy_extractor` evaluates with fhirpathpy (R4 model); the registry falls back to it
  for any expression outside the subset, and the benchmark compares both.

`resolve()` never reads the database at index time: a `#id` reference resolves to the
contained resource, any other reference to a stub `{"resourceType": T}` carrying only the
type named by the reference (enough for `where(resolve() is Patient)`).

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
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from fhir_server.resources.references import RELATIVE_REFERENCE
from fhir_server.resources.served import compartment_of
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

Extractor = Callable[[dict], list[Any]]

OF_TYPE_SUFFIX = ":of-type"

# ---------------------------------------------------------------------------------------------
# FHIRPath subset compiler
# ---------------------------------------------------------------------------------------------

# Suffixes that make `name<Suffix>` a choice element `name[x]` (so `status` never matches
# `statusReason`).
_CHOICE_SUFFIXES = frozenset(
    [
        "Boolean",
        "Integer",
        "String",
        "Decimal",
        "Uri",
        "Url",
        "Canonical",
        "Base64Binary",
        "Instant",
        "Date",
        "DateTime",
        "Time",
        "Code",
        "Oid",
        "Id",
        "Markdown",
        "UnsignedInt",
        "PositiveInt",
        "Uuid",
        "Address",
        "Age",
        "Annotation",
        "Attachment",
        "CodeableConcept",
        "Coding",
        "ContactPoint",
        "Count",
        "Distance",
        "Duration",
        "HumanName",
        "Identifier",
        "Money",
        "Period",
        "Quantity",
        "Range",
        "Ratio",
        "Reference",
        "SampledData",
        "Signature",
        "Timing",
        "ContactDetail",
        "Contributor",
        "DataRequirement",
        "Expression",
        "ParameterDefinition",
        "RelatedArtifact",
        "TriggerDefinition",
        "UsageContext",
        "Dosage",
        "Meta",
    ]
)
# Names of R4 choice elements (`name[x]`); only these are looked up as `name<Type>`, which
# keeps the common case (an absent plain element) a single dict lookup.
_CHOICE_NAMES = frozenset(
    [
        "deceased",
        "multipleBirth",
        "value",
        "source",
        "content",
        "effective",
        "onset",
        "abatement",
        "occurrence",
        "performed",
        "timing",
        "medication",
        "product",
        "born",
        "age",
        "answer",
        "defaultValue",
        "fixed",
        "pattern",
        "minValue",
        "maxValue",
        "allowed",
        "used",
        "serviced",
        "location",
        "reported",
        "asNeeded",
        "rate",
        "dose",
        "item",
        "subject",
        "identified",
        "collected",
        "time",
        "bodySite",
        "probability",
        "when",
        "detail",
        "scheduled",
        "offset",
        "entity",
        "instantiates",
        "created",
        "definition",
    ]
)
_PRIMITIVE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "decimal": lambda v: isinstance(v, int | float | Decimal) and not isinstance(v, bool),
}
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<bt>`[^`]*`)"
    r"|(?P<sym>!=|[().|=,]))"
)
_ABSOLUTE_REF = re.compile(r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

_Fn = Callable[[list, dict], list]


class UnsupportedExpression(ValueError):
    """The expression is outside the compiled subset (the caller falls back to fhirpathpy)."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise UnsupportedExpression(f"cannot tokenize at {text[pos:]!r}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "bt":
            kind, value = "id", value[1:-1]
        elif kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _children(items: list, name: str) -> list:
    out: list = []
    for item in items:
        if not isinstance(item, dict):
            continue
        value = item.get(name)
        if value is None:
            if name not in _CHOICE_NAMES:
                continue
            for key, choice in item.items():
                if key.startswith(name) and key[len(name) :] in _CHOICE_SUFFIXES:
                    value = choice
                    break
            else:
                continue
        if isinstance(value, list):
            out.extend(v for v in value if v is not None)
        else:
            out.append(value)
    return out


def _typed_child(items: list, name: str, type_name: str) -> list:
    """`name.ofType(T)` / `name as T`: the choice element `name<T>`, or `name` if it has type T."""
    out = _children(items, name + type_name[0].upper() + type_name[1:])
    direct = [i for i in items if isinstance(i, dict) and name in i]
    return out + _of_type(_children(direct, name), type_name)


def _of_type(items: list, type_name: str) -> list:
    check = _PRIMITIVE_CHECKS.get(type_name)
    if check:
        return [i for i in items if check(i)]
    if type_name[0].islower():  # string-like primitives: code, uri, date, dateTime, ...
        return [i for i in items if isinstance(i, str)]
    return [
        i for i in items if isinstance(i, dict) and i.get("resourceType", type_name) == type_name
    ]


def _reference_type(reference: dict) -> str | None:
    literal = reference.get("reference")
    if isinstance(literal, str):
        match = RELATIVE_REFERENCE.match(literal) or _ABSOLUTE_REF.search(literal)
        if match:
            return match.group(1)
    declared = reference.get("type")
    return declared if isinstance(declared, str) else None


def _resolve(items: list, root: dict) -> list:
    out: list = []
    for item in items:
        if not isinstance(item, dict):
            continue
        literal = item.get("reference")
        if isinstance(literal, str) and literal.startswith("#"):
            for contained in root.get("contained", ()):
                if isinstance(contained, dict) and contained.get("id") == literal[1:]:
                    out.append(contained)
            continue
        type_name = _reference_type(item)
        if type_name:
            out.append({"resourceType": type_name})
    return out


def _singleton_bool(items: list) -> bool | None:
    if len(items) == 1 and isinstance(items[0], bool):
        return items[0]
    if not items:
        return None
    return True  # FHIRPath: a non-empty collection used as a boolean is true


def _equals(left: list, right: list) -> list:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    for a, b in zip(left, right, strict=True):
        if isinstance(a, bool) != isinstance(b, bool) or a != b:
            return [False]
    return [True]


class _Parser:
    """Recursive descent over the subset; each rule returns a closure (focus, root) -> items."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise UnsupportedExpression(f"expected {value!r}, got {token!r}")
        self.pos += 1
        return token

    def parse(self) -> _Fn:
        fn = self.and_expr()
        if self.peek() is not None:
            raise UnsupportedExpression(f"unexpected {self.peek()!r}")
        return fn

    def and_expr(self) -> _Fn:
        fn = self.eq_expr()
        while self.peek() == ("id", "and"):
            self.take()
            left, right = fn, self.eq_expr()

            def both(focus: list, root: dict, left: _Fn = left, right: _Fn = right) -> list:
                a = _singleton_bool(left(focus, root))
                if a is False:
                    return [False]
                b = _singleton_bool(right(focus, root))
                if b is False:
                    return [False]
                if a is None or b is None:
                    return []
                return [True]

            fn = both
        return fn

    def eq_expr(self) -> _Fn:
        fn = self.union_expr()
        token = self.peek()
        if token and token[1] in ("=", "!="):
            self.take()
            left, right, negate = fn, self.union_expr(), token[1] == "!="

            def compare(
                focus: list, root: dict, left: _Fn = left, right: _Fn = right, negate=negate
            ) -> list:
                result = _equals(left(focus, root), right(focus, root))
                return [not result[0]] if (negate and result) else result

            fn = compare
        return fn

    def union_expr(self) -> _Fn:
        parts = [self.type_expr()]
        while self.peek() == ("sym", "|"):
            self.take()
            parts.append(self.type_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda focus, root: [v for part in parts for v in part(focus, root)]

    def type_expr(self) -> _Fn:
        fn, last_member = self.term()
        token = self.peek()
        if token in (("id", "is"), ("id", "as")):
            self.take()
            type_name = self.take()[1]
            if token[1] == "as":
                if last_member is not None:
                    base, name = last_member
                    return lambda focus, root: _typed_child(base(focus, root), name, type_name)
                return lambda focus, root: _of_type(fn(focus, root), type_name)

            def is_type(focus: list, root: dict) -> list:
                items = fn(focus, root)
                if len(items) != 1:
                    return []
                return [bool(_of_type(items, type_name))]

            return is_type
        return fn

    def term(self) -> tuple[_Fn, tuple[_Fn, str] | None]:
        """A path; also returns (parent, name) of a final member step, for `as T` fusion."""
        token = self.take()
        last_member: tuple[_Fn, str] | None = None
        if token == ("sym", "("):
            fn = self.and_expr()
            self.take(")")
        elif token[0] == "str":
            literal = token[1]
            fn = lambda focus, root, literal=literal: [literal]  # noqa: E731
        elif token in (("id", "true"), ("id", "false")):
            literal_bool = token[1] == "true"
            fn = lambda focus, root, literal_bool=literal_bool: [literal_bool]  # noqa: E731
        elif token[0] == "id" and self.peek() == ("sym", "("):
            fn = self.function(lambda focus, root: focus, token[1])
        elif token[0] == "id" and token[1][0].isupper():
            root_type = token[1]
            if root_type in ("Resource", "DomainResource"):
                fn = lambda focus, root: [  # noqa: E731
                    i for i in focus if isinstance(i, dict) and "resourceType" in i
                ]
            else:
                fn = lambda focus, root, root_type=root_type: [  # noqa: E731
                    i for i in focus if isinstance(i, dict) and i.get("resourceType") == root_type
                ]
        elif token[0] == "id":
            name = token[1]
            base: _Fn = lambda focus, root: focus  # noqa: E731
            last_member = (base, name)
            fn = lambda focus, root, name=name: _children(focus, name)  # noqa: E731
            path_base, path_names = base, [name]
        else:
            raise UnsupportedExpression(f"unexpected {token!r}")
        if last_member is None:
            path_base, path_names = fn, []
        while self.peek() == ("sym", "."):
            self.take()
            step = self.take()
            if step[0] != "id":
                raise UnsupportedExpression(f"unexpected {step!r}")
            if self.peek() == ("sym", "("):
                if step[1] == "ofType" and last_member is not None:
                    self.take("(")
                    type_name = self.take()[1]
                    self.take(")")
                    parent, member = last_member
                    fn = self._fused(parent, member, type_name)
                else:
                    fn = self.function(fn, step[1])
                last_member = None
                path_base, path_names = fn, []
            else:
                name = step[1]
                last_member = (fn, name)
                path_names.append(name)
                fn = self._path(path_base, tuple(path_names))
        return fn, last_member

    @staticmethod
    def _path(base: _Fn, names: tuple[str, ...]) -> _Fn:
        """`base.n1.n2...`: successive member steps in one closure (the same `_children`
        calls as one closure per step, without a Python frame per step)."""
        if len(names) == 1:
            name = names[0]
            return lambda focus, root: _children(base(focus, root), name)

        def walk(focus: list, root: dict) -> list:
            items = base(focus, root)
            for name in names:
                if not items:
                    return []
                items = _children(items, name)
            return items

        return walk

    @staticmethod
    def _fused(base: _Fn, name: str, type_name: str) -> _Fn:
        return lambda focus, root: _typed_child(base(focus, root), name, type_name)

    def function(self, base: _Fn, name: str) -> _Fn:
        self.take("(")
        if name in ("where", "exists") and self.peek() != ("sym", ")"):
            condition = self.and_expr()
            self.take(")")

            def where(focus: list, root: dict) -> list:
                return [
                    item
                    for item in base(focus, root)
                    if _singleton_bool(condition([item], root)) is True
                ]

            if name == "exists":
                return lambda focus, root: [bool(where(focus, root))]
            return where
        if name in ("ofType", "extension"):
            argument = self.take()[1]
            self.take(")")
            if name == "ofType":
                return lambda focus, root: _of_type(base(focus, root), argument)
            return lambda focus, root: [
                ext
                for ext in _children(base(focus, root), "extension")
                if isinstance(ext, dict) and ext.get("url") == argument
            ]
        self.take(")")
        if name == "exists":
            return lambda focus, root: [bool(base(focus, root))]
        if name == "empty":
            return lambda focus, root: [not base(focus, root)]
        if name == "first":
            return lambda focus, root: base(focus, root)[:1]
        if name == "not":

            def negate(focus: list, root: dict) -> list:
                value = _singleton_bool(base(focus, root))
                return [] if value is None else [not value]

            return negate
        if name == "resolve":
            return lambda focus, root: _resolve(base(focus, root), root)
        raise UnsupportedExpression(f"function {name}() not in the compiled subset")


def compile_expression(expression: str) -> Extractor:
    """A fast extractor for `expression`; raises UnsupportedExpression outside the subset."""
    fn = _Parser(expression).parse()
    return lambda resource: fn([resource], resource)


_current_root = threading.local()


def _fhirpathpy_resolve(inputs: list) -> list:
    from fhirpathpy.engine.nodes import ResourceNode

    resolved = _resolve(inputs, getattr(_current_root, "value", {}))
    # typed nodes, so that fhirpathpy's `is T` / `ofType(T)` see the resource type
    return [ResourceNode.create_node(r, r["resourceType"]) for r in resolved]


def fhirpathpy_extractor(expression: str) -> Extractor:
    """The same extractor through fhirpathpy (general, slower); `resolve()` as in the subset."""
    import fhirpathpy
    from fhirpathpy.models import models

    options = {"userInvocationTable": {"resolve": {"fn": _fhirpathpy_resolve, "arity": {0: []}}}}
    compiled = fhirpathpy.compile(expression, models["r4"], options)

    def run(resource: dict) -> list:
        _current_root.value = resource
        try:
            return [_plain(v) for v in compiled(resource, {})]
        finally:
            _current_root.value = {}

    return run


def _plain(value: Any) -> Any:
    """fhirpathpy hands typed dates back as FP_DateTime; the index wants the JSON text."""
    if value is None or isinstance(value, dict | list | str | bool | int | float | Decimal):
        return value
    return str(value)


def build_extractor(expression: str) -> Extractor:
    """Compiled when possible, fhirpathpy otherwise."""
    try:
        return compile_expression(expression)
    except UnsupportedExpression:
        return fhirpathpy_extractor(expression)


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
    type_ = identifier.get("type") if isinstance(identifier.get("type"), dict) else {}
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
    identifier = value.get("identifier") if isinstance(value.get("identifier"), dict) else {}
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
                found = [_composite_value(v) for v in component(value)]
                found = [f for f in found if f is not None]
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

_KINDS: tuple[tuple[str, type], ...] = (
    ("tokens", TokenEntry),
    ("strings", StringEntry),
    ("dates", DateEntry),
    ("references", ReferenceEntry),
    ("uris", UriEntry),
    ("numbers", NumberEntry),
    ("quantities", QuantityEntry),
)
_ROW_OF = {cls: attrgetter(*cls.__slots__) for _, cls in _KINDS}


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

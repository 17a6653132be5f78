"""The FHIRPath the SearchParameters use, turned into extractors (resource -> values).

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

This module knows FHIRPath and the shape of FHIR JSON, nothing of the index: turning the
values into index entries is `fhir_server.search.extract`'s job. It imports nothing of the
search package, so the registry (which compiles each parameter's expression once) and the
extraction (which runs them) both read it without reading each other.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhir_server.resources.references import RELATIVE_REFERENCE

Extractor = Callable[[dict], list[Any]]

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
# An absolute reference's type and id (RELATIVE_REFERENCE, resources.references: relative).
_ABSOLUTE_REF = re.compile(r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?\Z")

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
    """The resources `items` (References) point to: a `#id` one the contained resources of
    that id, any other a stub of its type. The contained resources are indexed by id once per
    evaluation of an expression (`_evaluating`; `where(resolve() is T)` resolves each item
    alone): looked up by a scan for each reference, a DocumentReference of 1,000 contained
    authors cost a million comparisons per extraction (0.6 s to index a 100 KB body)."""
    out: list = []
    by_id: dict[str, list] | None = None
    for item in items:
        if not isinstance(item, dict):
            continue
        literal = item.get("reference")
        if isinstance(literal, str) and literal.startswith("#"):
            if by_id is None:
                by_id = _contained_index(root)
            out.extend(by_id.get(literal[1:], ()))
            continue
        type_name = _reference_type(item)
        if type_name:
            out.append({"resourceType": type_name})
    return out


# The contained resources by id of the roots met in the current evaluation of an expression
# (keyed by the root's id(), alive for the whole evaluation); None outside one.
_evaluation = threading.local()


def _contained_index(root: dict) -> dict[str, list]:
    """`_contained_by_id(root)`, built once per evaluation (`_evaluating`)."""
    indexes: dict[int, dict[str, list]] | None = getattr(_evaluation, "indexes", None)
    if indexes is None:
        return _contained_by_id(root)
    by_id = indexes.get(id(root))
    if by_id is None:
        by_id = indexes[id(root)] = _contained_by_id(root)
    return by_id


def _evaluating(run: Callable[[dict], list], resource: dict) -> list:
    """`run(resource)` with a fresh index of contained resources for its `resolve()`s (the
    resource is not changed during one evaluation; it may be between two)."""
    previous = getattr(_evaluation, "indexes", None)
    _evaluation.indexes = {}
    try:
        return run(resource)
    finally:
        _evaluation.indexes = previous


def _contained_by_id(root: dict) -> dict[str, list]:
    """The root's contained resources by id, each list in document order."""
    by_id: dict[str, list] = {}
    contained = root.get("contained", ())
    for resource in contained if isinstance(contained, list) else ():
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            by_id.setdefault(resource["id"], []).append(resource)
    return by_id


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


# Closures made by functions rather than lambdas with default arguments: each captures its
# own value, and the checker sees each one's type.
def _constant(value: str | bool) -> _Fn:
    return lambda focus, root: [value]


def _resources_of_type(resource_type: str) -> _Fn:
    return lambda focus, root: [
        i for i in focus if isinstance(i, dict) and i.get("resourceType") == resource_type
    ]


def _member(name: str) -> _Fn:
    return lambda focus, root: _children(focus, name)


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
            fn = _constant(token[1])
        elif token in (("id", "true"), ("id", "false")):
            fn = _constant(token[1] == "true")
        elif token[0] == "id" and self.peek() == ("sym", "("):
            fn = self.function(lambda focus, root: focus, token[1])
        elif token[0] == "id" and token[1][0].isupper():
            root_type = token[1]
            if root_type in ("Resource", "DomainResource"):
                fn = lambda focus, root: [  # noqa: E731
                    i for i in focus if isinstance(i, dict) and "resourceType" in i
                ]
            else:
                fn = _resources_of_type(root_type)
        elif token[0] == "id":
            name = token[1]
            base: _Fn = lambda focus, root: focus  # noqa: E731
            last_member = (base, name)
            fn = _member(name)
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
    if "resolve" not in expression:  # no index of contained resources to share: the hot path
        return lambda resource: fn([resource], resource)
    return lambda resource: _evaluating(lambda r: fn([r], r), resource)


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
            return _evaluating(lambda r: [_plain(v) for v in compiled(r, {})], resource)
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

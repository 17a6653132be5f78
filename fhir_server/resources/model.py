"""Parse and validate resources with the fhir.resources R4B models, on write only.

Reads never come back here: the store returns the bytes it stored after validation. The
models check structure, data types and required elements; they do not check the codes of
required bindings, so the few status-like codes the server relies on are checked here
(`resources.served` lists them with the served types; profiles in `resources/profiles/`
add the DMP constraints).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, lru_cache
from typing import Any

import fhir_core.types
import orjson
import pybase64
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

from fhir_server.errors import FhirError, Issue
from fhir_server.resources.served import REQUIRED_CODES, SERVED_TYPES

# fhir_core resolves the model of every contained resource with pydantic's import_string,
# uncached, on each validation (an import attempt that fails, then a getattr): 0.45 ms per
# DMP DocumentReference with its three contained authors. A dotted path always names the
# same class, so the lookup is memoized once for the process.
fhir_core.types.import_string = cache(fhir_core.types.import_string)


class ElementMemo:
    """Already-validated JSON subtrees, so that a repeated one is not validated again.

    fhir_core validates every complex element by building its model (about 17 µs each, 32
    per DMP DocumentReference), and most of a document's elements recur across documents:
    the codings of type, class, confidentiality, facility and setting, the contained author,
    the subject reference. Validation is a pure function of (model, JSON value), so the
    model built for a value that passed is reused for the same value: the answer, including
    every error, is the one a full validation gives (failures are never remembered and are
    validated again, with their locations). Keys are the value's canonical JSON (sorted
    keys; `1`, `1.0`, `true` and `"1"` stay distinct); values holding a null, which orjson
    also writes for NaN, or anything orjson cannot write are not remembered.

    Memory is bounded in bytes, not only in entries, because the input is anyone's (any
    token may call `$validate`): two generations, each of at most `capacity` entries and
    `max_bytes / 2` accounted bytes; a value used again while its generation is the old one
    moves to the young one, so recurring values stay. An entry is accounted as
    `ENTRY_OVERHEAD + FOOTPRINT * len(key)`: its key and the strings its model holds, plus
    the model (measured: about 1.1 KB for a DMP coding, 31 KB for a 15 KB extension; the
    accounted size is 0.6-1.03 times tracemalloc's figure on wide, deep and large
    elements). A value whose canonical JSON is longer than `max_entry_bytes` (an inline
    attachment, an element wrapping a large subtree) is validated but never remembered:
    such values do not recur, and each would hold megabytes.

    Serializing a value to find its key costs its size at every level of nesting, so a deep
    chain of large elements would cost size x depth. Inside `budget()` (one resource's
    validation) the bytes serialized are counted, and past the budget the remaining
    elements are validated without the memo.
    """

    ENTRY_OVERHEAD = 2048
    FOOTPRINT = 2

    def __init__(
        self,
        capacity: int = 4096,
        max_bytes: int = 32 * 1024 * 1024,
        max_entry_bytes: int = 16 * 1024,
        budget_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.budget_bytes = budget_bytes
        self.enabled = True
        self._young: dict[tuple[type, bytes], Any] = {}
        self._old: dict[tuple[type, bytes], Any] = {}
        self._young_bytes = 0
        self._old_bytes = 0
        # The bytes one validation may still serialize for keys ([remaining]); None: no limit.
        self._budget: ContextVar[list[int] | None] = ContextVar("element_memo_budget", default=None)

    @property
    def accounted_bytes(self) -> int:
        """The approximate memory held by both generations."""
        return self._young_bytes + self._old_bytes

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def cost(self, raw: bytes) -> int:
        """The accounted size of an entry whose key is `raw`."""
        return self.ENTRY_OVERHEAD + self.FOOTPRINT * len(raw)

    @contextmanager
    def budget(self, limit: int | None = None) -> Iterator[None]:
        """Count the bytes serialized for keys until the block ends (one resource's
        validation); past `limit` (default `budget_bytes`) the memo steps aside."""
        token = self._budget.set([self.budget_bytes if limit is None else limit])
        try:
            yield
        finally:
            self._budget.reset(token)

    def validated(self, validate: Any, cls: Any, value: Any, model_klass: type) -> Any:
        if not self.enabled or type(value) is not dict:
            return validate(cls, value, model_klass)
        budget = self._budget.get()
        if budget is not None and budget[0] <= 0:
            return validate(cls, value, model_klass)
        try:
            raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return validate(cls, value, model_klass)
        if budget is not None:
            budget[0] -= len(raw)
        if len(raw) > self.max_entry_bytes or b"null" in raw:
            return validate(cls, value, model_klass)
        key = (model_klass, raw)
        model = self._young.get(key)
        if model is None:
            model = self._old.get(key)
            if model is None:
                model = validate(cls, value, model_klass)
            self._remember(key, model)
        return model

    def _remember(self, key: tuple[type, bytes], model: Any) -> None:
        # orjson's bytes keep the buffer they were written in (4 KB at least, several
        # times the length for long strings): the memo keeps an exact-size copy.
        key = (key[0], bytes(memoryview(key[1])))
        cost = self.cost(key[1])
        if len(self._young) >= self.capacity or self._young_bytes + cost > self.max_bytes // 2:
            self._old, self._young = self._young, {}
            self._old_bytes, self._young_bytes = self._young_bytes, 0
        self._young[key] = model
        self._young_bytes += cost

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()
        self._young_bytes = self._old_bytes = 0


ELEMENT_MEMO = ElementMemo()
# The function under the classmethod: mypy types a classmethod read on its class as a plain
# callable, without the `__func__` every bound method has.
_validate_element = fhir_core.types.FhirBase.fhir_model_validator.__func__  # type: ignore[attr-defined]


def _memoized_element_validator(cls: Any, value: Any, model_klass: type) -> Any:
    return ELEMENT_MEMO.validated(_validate_element, cls, value, model_klass)


# Every complex element (contained resources included) is validated through this
# classmethod, looked up on the class at each call.
# Replacing a method is what mypy forbids by default, and this line does it on purpose.
fhir_core.types.FhirBase.fhir_model_validator = classmethod(  # type: ignore[method-assign, assignment]
    _memoized_element_validator
)


@cache
def model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def _contained_issues(resource_type: str, contained: Any) -> list[Issue]:
    """Problems of `contained` the models cannot report (they fail on a contained resource
    without a resourceType string, or of an unknown type), each at its FHIRPath."""
    if contained is None:
        return []
    path = f"{resource_type}.contained"
    if not isinstance(contained, list):
        return [Issue("error", "structure", f"{path}: must be an array of resources", (path,))]
    issues = []
    for index, item in enumerate(contained):
        at = f"{path}[{index}]"
        kind = item.get("resourceType") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            issues.append(Issue("error", "structure", f"{at}: must be a resource", (at,)))
        elif not isinstance(kind, str):
            issues.append(
                Issue("error", "required", f"{at}.resourceType is missing", (f"{at}.resourceType",))
            )
        elif not _known_type(kind):
            issues.append(
                Issue(
                    "error",
                    "structure",
                    f"{at}.resourceType: '{kind}' is not an R4 resource type",
                    (f"{at}.resourceType",),
                )
            )
    return issues


@lru_cache(maxsize=512)
def _known_type(resource_type: str) -> bool:
    """Whether `resource_type` names a resource (not a data type such as HumanName)."""
    if resource_type in ("Resource", "DomainResource"):
        return False  # abstract
    try:
        return issubclass(model_class(resource_type), Resource)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False


def fhirpath(resource_type: str, location: Iterable[Any]) -> str:
    """A pydantic error location as a FHIRPath expression: ('content', 0, 'x') -> Type.content[0].x."""
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


# Below this many characters, Binary.data is left to the model's own check.
_LARGE_BASE64 = 4096


def _with_binary_data_checked(resource_type: str, data: dict) -> dict:
    """`data`, or a copy whose large `Binary.data` was found valid here and replaced by a
    small valid value, so that the model does not decode it again.

    The model checks a base64Binary by decoding it with the standard library's lenient
    decoder (6 ms for a 1 MB document, every deposit); pybase64 checks strictly encoded
    base64 twenty times faster, and whatever is strictly valid the lenient decoder accepts.
    Whatever pybase64 refuses goes to the model as it is: it decides, with its own message.
    """
    if resource_type != "Binary":
        return data
    value = data.get("data")
    if not isinstance(value, str) or len(value) < _LARGE_BASE64:
        return data
    try:
        pybase64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return data
    return {**data, "data": "AAAA"}


def validate_resource(data: Any, expected_type: str | None = None) -> list[Issue]:
    """Every structural problem of a resource, each with the FHIRPath of the element.

    An empty list means the resource is valid for storage (profiles may add more).
    """
    if not isinstance(data, dict):
        return [Issue("error", "structure", "the resource must be a JSON object")]
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        return [Issue("error", "required", "resourceType is missing", ("resourceType",))]
    if expected_type is not None and resource_type != expected_type:
        return [
            Issue(
                "error",
                "invalid",
                f"resourceType {resource_type} does not match the endpoint type {expected_type}",
                ("resourceType",),
            )
        ]
    if resource_type not in SERVED_TYPES:
        return [Issue("error", "not-supported", f"resource type {resource_type} is not served")]
    contained = _contained_issues(resource_type, data.get("contained"))
    if contained:
        return contained
    issues: list[Issue] = []
    try:
        with ELEMENT_MEMO.budget():
            model_class(resource_type).model_validate(
                _with_binary_data_checked(resource_type, data)
            )
    except (TypeError, KeyError, AttributeError) as exc:
        # The model library gave up on a shape it does not expect (not a ValidationError):
        # still the client's resource, not a server fault.
        return [
            Issue(
                "error",
                "structure",
                f"{resource_type}: the resource's structure cannot be read"
                f" ({exc.__class__.__name__})",
                (resource_type,),
            )
        ]
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            code = "required" if err["type"] == "missing" else "structure"
            if err["type"] == "extra_forbidden":
                message = "unknown element"
            path = fhirpath(resource_type, err["loc"])
            issues.append(Issue("error", code, f"{path}: {message}", (path,)))
    if not issues:
        _date_type_issues(model_class(resource_type), data, resource_type, issues)
    for element, allowed in REQUIRED_CODES.get(resource_type, {}).items():
        value = data.get(element)
        # A code is a string: an object or a list here was a 500 (unhashable), after the
        # model had already named it.
        if value is not None and (not isinstance(value, str) or value not in allowed):
            path = f"{resource_type}.{element}"
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"{path}: '{value}' is not one of {', '.join(sorted(allowed))}",
                    (path,),
                )
            )
    return issues


# A FHIR date, dateTime, instant or time is a JSON string (json.html). The models also take
# a JSON number there (pydantic reads it as seconds since 1970): `DocumentReference.date: 5`
# was stored as sent, and a number in an indexed Period (`context.period.start: 5`) was a
# 500 in the search extraction, which reads date strings.
_DATE_MARKERS = (fhir_core.types.Date, fhir_core.types.Time)

# FHIR's dateTime, instant and time admit a leap second (`23:59:60`), which no reader of this
# server can hold (Python's datetime stops at :59): a Consent's or a guardianship's period so
# bounded was refused or read as no period, a date indexed as none (a search by date missed
# the document), and a DocumentReference so dated made every ITI-18 LeafClass answer of its
# record an internal error (`fhir_to_xds_time`). Refused at write, naming the element (fail
# closed: an instant the rules cannot read is not stored for them to read otherwise).
_LEAP_SECOND = re.compile(r"(?:^|T)\d{2}:\d{2}:60")


def _field_kind(annotation: Any) -> str | type | None:
    """ "date" for a date-like primitive, the model class of a complex element (Resource for
    a contained resource), None for anything else."""
    stack = [annotation]
    while stack:
        current = stack.pop()
        metadata = getattr(current, "__metadata__", None)
        if metadata and any(isinstance(marker, _DATE_MARKERS) for marker in metadata):
            return "date"
        klass = getattr(current, "get_model_klass", None)
        if klass is not None:
            return klass()
        stack.extend(typing.get_args(current))
    return None


@cache
def _date_shape(
    model: type[BaseModel],
) -> tuple[frozenset[str], tuple[tuple[str, type[BaseModel]], ...]]:
    """The JSON names of `model`'s date-like elements, and (name, model) of its complex ones."""
    dates: set[str] = set()
    children: list[tuple[str, type]] = []
    for name, field in model.model_fields.items():
        kind = _field_kind(field.annotation)
        alias = field.alias or name
        if kind == "date":
            dates.add(alias)
        elif isinstance(kind, type):
            children.append((alias, kind))
    return frozenset(dates), tuple(children)


def _date_type_issues(model: type[BaseModel], data: dict, path: str, issues: list[Issue]) -> None:
    """An issue for each date-like element of `data` (valid for `model`) that is not a JSON
    string, with its FHIRPath."""
    dates, children = _date_shape(model)
    for name in dates:
        value = data.get(name)
        if value is None:
            continue
        for where, item in _items(value, f"{path}.{name}"):
            if item is not None and not isinstance(item, str):
                issues.append(
                    Issue(
                        "error",
                        "structure",
                        f"{where}: a date, dateTime, instant or time is a JSON string, "
                        f"not {type(item).__name__} {item!r}",
                        (where,),
                    )
                )
            elif isinstance(item, str) and _LEAP_SECOND.search(item):
                issues.append(
                    Issue(
                        "error",
                        "value",
                        f"{where}: a leap second ({item!r}) is not read by this server: "
                        "write the instant as :59 or the next second",
                        (where,),
                    )
                )
    for name, child in children:
        value = data.get(name)
        if value is None:
            continue
        for where, item in _items(value, f"{path}.{name}"):
            if not isinstance(item, dict):
                continue
            klass = child
            if child is Resource:  # contained: its own type's model
                kind = item.get("resourceType")
                if not (isinstance(kind, str) and _known_type(kind)):
                    continue
                klass = model_class(kind)
            _date_type_issues(klass, item, where, issues)


def _items(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return [(path, value)]


def check_resource(data: Any, expected_type: str | None = None) -> None:
    """Raise a 400 FhirError listing every issue when the resource is not valid."""
    issues = validate_resource(data, expected_type)
    if issues:
        raise FhirError(400, issues)

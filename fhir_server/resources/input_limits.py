"""What a FHIR body may look like before anything reads it: nesting depth, one value per key,
no null.

Checked on every FHIR JSON and XML body (REST create and update, transaction and batch
Bundles, `$validate`), right after parsing and before validation, because what comes later
is recursive: the models, the profiles, the search extraction and orjson's own writer (which
gives up at 255 levels) all walk the tree. A body nested deeper than `MAX_DEPTH` is refused
with a 400 naming the limit and where it was passed, instead of a RecursionError (a 500)
somewhere downstream.

Duplicate keys: orjson, like most JSON parsers, keeps the last value of a repeated key, so
two readers of the same body (a client's validator, this server, an audit of the raw
request) could each see a different resource. RFC 8259 leaves the meaning undefined; FHIR
JSON (json.html) requires unique names. A body with a repeated key is refused with a 400
naming the key and the object holding it.

Null: FHIR JSON has no null values (json.html), but in a primitive array beside its `_name`
array of extensions. The models take a null for an absent element, and what reads the body
after them met it (`check_json_nulls`).

The checks are kept off the hot path's cost: a body with at most MAX_DEPTH brackets
cannot be too deep; a body that orjson writes back byte for byte from what it kept has no
repeated key; otherwise the keys written in the body are counted (bytes operations) and
compared with the keys orjson kept (a walk of the tree, which also bounds the depth). Only a
body where they differ, or whose escaped backslashes make the count unsure, is parsed again
with the standard library to find the repeated key and where it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from lxml import etree

from fhir_server.errors import FhirError, Issue, bad_request, error

# Levels of JSON objects and arrays (the resource itself is level 1), and of XML elements.
# A DMP transaction Bundle of DocumentReferences is about 10 deep; a Questionnaire with
# items nested ten deep, in a Bundle, about 30.
MAX_DEPTH = 64
# Namespaces in scope on one XML element, and attributes on one: the model library's XML
# reader (fhir.resources) pays with the square of them. 8,000 namespace declarations on the
# root of a 198 KB Patient took 5.7 s (4,000: 1.2 s), 10,000 attributes 0.22 s. A FHIR
# element has `value`, `id` or `url`, the narrative's XHTML a few more; the FHIR and XHTML
# namespaces, and perhaps xsi or an extension's, are in scope.
MAX_XML_NAMESPACES = 32
MAX_XML_ATTRIBUTES = 64


def too_deep(path: str, what: str = "the body") -> FhirError:
    return FhirError(
        400,
        [
            Issue(
                "error",
                "too-costly",
                f"{what} is nested more than {MAX_DEPTH} levels deep (at {path});"
                f" the limit is {MAX_DEPTH} levels (MAX_DEPTH)",
                (path,),
            )
        ],
    )


def check_json_body(body: bytes, data: Any) -> None:
    """Refuse `data`, parsed from `body`, if it is too deep or `body` repeats a key.

    Measured on a 2 KB DocumentReference (orjson.loads: 6 µs): 3.5 µs when the body is
    compact JSON as orjson writes it, about 24 µs pretty-printed; on a 20 KB one
    (orjson.loads: 70 µs): about 180 µs, most of it the walk that bounds the depth.
    """
    kept: int | None = None
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # else it cannot be too deep
        kept = _kept_keys_within_depth(data)
        if kept is None:
            raise too_deep(_deep_path(data, _root_name(data), 1) or _root_name(data))
    if _written_as_orjson_would(body, data):
        return  # the same bytes from what orjson kept: no key was dropped
    if kept is None:
        kept = _kept_keys_within_depth(data)
    if b"\\\\" not in body and _keys_written(body) == kept:
        return
    _check_duplicates(body, _root_name(data))


def check_json_nulls(body: bytes, data: Any) -> None:
    """Refuse `data`, parsed from `body`, if it holds a null (`_check_no_null`); a body
    without the bytes `null` holds none, and is not walked (the hot path's cost)."""
    if b"null" in body:
        _check_no_null(data, _root_name(data))


# The characters FHIR strings may not hold (datatypes.html#string: none below U+0020 but
# tab, CR and LF) and XML 1.0 cannot carry: escaped in JSON, they were stored, and every
# XML answer holding the resource (its read, any search of its patient) was then a 500.
FORBIDDEN_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def check_json_characters(body: bytes, data: Any) -> None:
    """Refuse `data`, parsed from `body`, if a string (or a key) holds a control character
    FHIR forbids. JSON can carry one only escaped (`\\u0001`, `\\b`, `\\f`): a body
    without a backslash holds none, and is not walked (the hot path's cost)."""
    if b"\\" not in body:
        return
    stack: list[tuple[Any, str]] = [(data, _root_name(data))]
    while stack:
        value, path = stack.pop()
        if type(value) is str:
            if FORBIDDEN_CHARACTERS.search(value):
                raise bad_request(
                    f"{path}: a string holds a control character FHIR strings may not hold",
                    path,
                    code="invalid",
                )
        elif type(value) is dict:
            for key, child in value.items():
                if FORBIDDEN_CHARACTERS.search(key):
                    raise bad_request(
                        f"{path}: a key holds a control character", path, code="invalid"
                    )
                stack.append((child, f"{path}.{key}"))
        elif type(value) is list:
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


def _check_no_null(data: Any, root: str) -> None:
    """Refuse a JSON null anywhere but as an item of a primitive array that has its `_name`
    sibling (or of that `_name` array): FHIR JSON has no null values (json.html, "null
    values are not allowed"). Taken for absent by the models, a null reached the readers
    after them (`contained: null`, `securityLabel: [{"coding": null}]`: a 500) or was
    stored as sent (`Patient.contained: null`)."""
    stack: list[tuple[Any, str]] = [(data, root)]
    while stack:
        value, path = stack.pop()
        if type(value) is not dict:
            continue
        for key, child in value.items():
            where = f"{path}.{key}"
            if child is None:
                raise _null_at(where)
            if type(child) is dict:
                stack.append((child, where))
            elif type(child) is list:
                paired = key.startswith("_") or f"_{key}" in value
                for index, item in enumerate(child):
                    if item is None and not paired:
                        raise _null_at(f"{where}[{index}]")
                    stack.append((item, f"{where}[{index}]"))


def _null_at(path: str) -> FhirError:
    return FhirError(
        400,
        [
            Issue(
                "error",
                "structure",
                f"{path} is null: FHIR JSON has no null values (json.html); leave the "
                "element out, or give a primitive array's missing values with its _ array",
                (path,),
            )
        ],
    )


def _written_as_orjson_would(body: bytes, data: Any) -> bool:
    try:
        return orjson.dumps(data) == body
    except TypeError:
        return False


def _keys_written(body: bytes) -> int:
    """The number of keys in `body` (which holds no escaped backslash).

    Out of strings, a quote followed by optional white space and a colon ends a key; in a
    string, a quote is escaped, and a backslash never precedes white space. So once the
    white space is gone, the keys are the `":` that do not follow a backslash.
    """
    compact = body.translate(None, b" \t\n\r")
    return compact.count(b'":') - compact.count(b'\\":')


def check_json_depth(data: Any, what: str = "the body") -> None:
    """Refuse `data` if it is nested deeper than MAX_DEPTH (e.g. what XML became, or what
    a PATCH made of a resource)."""
    if _kept_keys_within_depth(data) is None:
        raise too_deep(_deep_path(data, _root_name(data), 1) or _root_name(data), what)


def nested_depth(data: Any, limit: int = MAX_DEPTH) -> int | None:
    """The levels of objects and arrays in `data` (itself level 1; 0 for a scalar), or None
    when they pass `limit`; the walk stops there."""
    if type(data) is not dict and type(data) is not list:
        return 0
    if limit < 1:
        return None
    deepest = 1
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in value.values() if type(value) is dict else value:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return None
                stack.append((child, depth + 1))
    return deepest


def check_xml_depth(root: etree._Element) -> None:
    """Refuse an XML tree whose elements nest deeper than MAX_DEPTH."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise too_deep(_xml_path(element))
        stack.extend((child, depth + 1) for child in element)


def check_xml_breadth(root: etree._Element, body: bytes) -> None:
    """Refuse an XML tree with an element of more than MAX_XML_NAMESPACES namespaces in
    scope or more than MAX_XML_ATTRIBUTES attributes. A body with fewer `xmlns` (or `=`)
    in all cannot pass either limit, and is not walked (the hot path's cost)."""
    namespaces = body.count(b"xmlns") > MAX_XML_NAMESPACES
    attributes = body.count(b"=") > MAX_XML_ATTRIBUTES
    if not (namespaces or attributes):
        return
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # a comment or processing instruction
        if attributes and len(element.attrib) > MAX_XML_ATTRIBUTES:
            raise _too_broad(element, f"{len(element.attrib)} attributes", MAX_XML_ATTRIBUTES)
        if namespaces and len(element.nsmap) > MAX_XML_NAMESPACES:
            raise _too_broad(
                element, f"{len(element.nsmap)} namespaces in scope", MAX_XML_NAMESPACES
            )


def _too_broad(element: etree._Element, what: str, limit: int) -> FhirError:
    name = "MAX_XML_ATTRIBUTES" if "attributes" in what else "MAX_XML_NAMESPACES"
    path = _xml_path(element)
    return FhirError(
        400,
        [
            Issue(
                "error",
                "too-costly",
                f"the XML element {path} has {what}; the limit is {limit} ({name})",
                (path,),
            )
        ],
    )


def _root_name(data: Any) -> str:
    kind = data.get("resourceType") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind.isalnum() else "$"


def _kept_keys_within_depth(data: Any) -> int | None:
    """The number of keys in every object of `data`, or None when it is too deep."""
    keys = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if type(value) is dict:
            keys += len(value)
            children = value.values()
        else:
            children = value
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= MAX_DEPTH:
                    return None
                stack.append((child, depth + 1))
    return keys


def _deep_path(value: Any, path: str, depth: int) -> str | None:
    """The path of the first object or array below MAX_DEPTH (recursion bounded by it)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, dict | list):
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
            if depth >= MAX_DEPTH:
                return where
            found = _deep_path(child, where, depth + 1)
            if found:
                return found
    return None


class _Repeated(dict):
    """An object of the body in which `key` appears more than once."""

    key: str = ""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict:
    built = dict(pairs)
    if len(built) == len(pairs):
        return built
    seen: set[str] = set()
    repeated = _Repeated(built)
    for key, _ in pairs:
        if key in seen:
            repeated.key = key
            break
        seen.add(key)
    return repeated


def _check_duplicates(body: bytes, root: str) -> None:
    """Parse `body` again keeping every key, and refuse it if an object repeats one."""
    try:
        data = json.loads(body, object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError):  # orjson read it; nothing more to learn here
        return
    found = _repeated_at(data, root)
    if found is not None:
        path, key = found
        raise FhirError(
            400,
            [
                Issue(
                    "error",
                    "structure",
                    f"{path}: the key '{key}' appears more than once in the same object"
                    " (FHIR JSON requires unique keys)",
                    (f"{path}.{key}",),
                )
            ],
        )


def _repeated_at(value: Any, path: str) -> tuple[str, str] | None:
    """(path of the object, key) of the first object repeating a key (depth already checked)."""
    if isinstance(value, _Repeated):
        return path, value.key
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, dict | list):
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
            found = _repeated_at(child, where)
            if found:
                return found
    return None


def _xml_path(element: etree._Element) -> str:
    names = [
        etree.QName(e.tag).localname if isinstance(e.tag, str) else "#node"
        for e in (element, *element.iterancestors())
    ]
    return ".".join(reversed(names))


_UTF8 = frozenset({"utf-8", "utf8"})


def check_charset(content_type: str | None) -> None:
    """A FHIR body is UTF-8 (http.html#mime-type), and is read as UTF-8 whatever the
    Content-Type says: a `charset` naming another encoding (latin1, utf-16) was accepted,
    the body stored as its UTF-8 reading while a reader honouring the header (a gateway,
    RFC 7303 for XML) read other characters. Refused (415), as any body the server would
    read otherwise than it is declared."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            raise error(
                415,
                "not-supported",
                f"Content-Type charset '{value.strip()}' is not UTF-8, the encoding of FHIR bodies",
                "Content-Type",
            )

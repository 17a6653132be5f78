"""Applying a PATCH body to a resource (FHIR R4 http.html#patch): pure, no I/O.

Two formats (PDSm `st_maj.md` lets a server accept JSON Patch; PDSm4DMP's TD3.3 examples use
it; FHIRPath Patch is FHIR's own):

- JSON Patch (RFC 6902, `application/json-patch+json`), applied by the `jsonpatch` library.
  PDSm4DMP spells the isArchived extension `/extension[url:'<url>']/valueBoolean`, which is
  not an RFC 6901 pointer: that one selector (`[url:'...']` after `/extension`) is read as
  the index of the extension with that url (and, for a `replace` of its `value[x]` when the
  resource has none, as adding it: TD3.3d archives a never-archived document that way); any
  other bracket is refused.
- FHIRPath Patch (fhirpatch.html, a `Parameters` body): the operations `add`, `insert`,
  `delete` and `replace` on paths written in a small FHIRPath subset: a dotted path from
  the resource type, `[n]` indexes, `where(a.b = 'literal')` and `extension('url')`. What
  falls outside (functions, `move`, other operators) is refused with 400 naming the
  operation: a patch the server cannot read exactly is never guessed at (fail closed).

A patch that cannot be read is 400; one whose path does not fit the resource (a `replace`
of nothing, a pointer to a missing index) is 422, each OperationOutcome naming the
operation (`Parameters.parameter[i]` or the JSON Patch operation index).
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from fhir_server.errors import FhirError, bad_request, error
from fhir_server.resources.input_limits import (
    MAX_DEPTH,
    check_charset,
    check_json_body,
    check_json_characters,
    check_json_depth,
    nested_depth,
    too_deep,
)

JSON_PATCH_MIME = "application/json-patch+json"
FHIRPATH_OPERATIONS = frozenset({"add", "insert", "delete", "replace"})
# Operations in one PATCH body (JSON Patch or FHIRPath Patch). A metadata update (PDSm
# st_maj.md, PDSm4DMP TD3.3) is a handful of operations; unbounded, a body under the size
# limit held thousands, each applied to a resource the earlier ones had grown (1,000 `add`s
# of a label in a 190 KB body: 2.2 s of CPU, quadratic in the count).
MAX_PATCH_OPERATIONS = 100
# Bytes a JSON Patch's `copy` operations may copy, together (the size of the values at their
# `from`, as JSON). Each `copy` of an array into itself doubles it: fourteen operations in a
# 1 KB body made 16,384 copies of a document's content (0.47 s), twenty made a million.
MAX_PATCH_COPIED_BYTES = 64 * 1024
# Elements of the types PATCH reaches whose cardinality is 0..* (an `add` appends to them).
_LIST_ELEMENTS = frozenset({"extension", "securityLabel", "coding", "identifier", "security"})


@dataclass(frozen=True)
class PatchBody:
    """A PATCH body, read: `kind` "json-patch" (a list of RFC 6902 operations) or
    "fhirpath-patch" (a Parameters resource)."""

    kind: str
    document: Any


def read_patch_body(content_type: str | None, raw: bytes) -> PatchBody:
    """The body of a PATCH request, by its Content-Type (415 for any other)."""
    check_charset(content_type)
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == JSON_PATCH_MIME:
        return json_patch_body(_json(raw, "body"))
    if mime in ("application/fhir+json", "application/json"):
        return fhirpath_patch_body(_json(raw, "body"))
    raise error(
        415,
        "not-supported",
        f"a PATCH body is JSON Patch ({JSON_PATCH_MIME}) or FHIRPath Patch (a Parameters, "
        f"application/fhir+json), not '{content_type or 'none'}'",
        "Content-Type",
    )


def json_patch_body(operations: Any, where: str = "body") -> PatchBody:
    if not isinstance(operations, list) or not operations:
        raise bad_request("a JSON Patch is a non-empty array of operations", where)
    _check_operation_count(len(operations), where)
    return PatchBody("json-patch", operations)


def _check_operation_count(count: int, where: str) -> None:
    """Refuse a patch of more than MAX_PATCH_OPERATIONS operations before applying any."""
    if count > MAX_PATCH_OPERATIONS:
        raise error(
            400,
            "too-costly",
            f"the patch has {count} operations; the limit is {MAX_PATCH_OPERATIONS}"
            " operations (MAX_PATCH_OPERATIONS)",
            where,
        )


def fhirpath_patch_body(parameters: Any, where: str = "Parameters") -> PatchBody:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise bad_request(
            "a FHIRPath Patch is a Parameters resource (with Content-Type application/fhir+json)",
            f"{where}.resourceType",
        )
    operations = parameters.get("parameter")
    if not isinstance(operations, list) or not operations:
        raise bad_request("a FHIRPath Patch names at least one operation", f"{where}.parameter")
    _check_operation_count(len(operations), f"{where}.parameter")
    return PatchBody("fhirpath-patch", parameters)


def patch_body_of_resource(resource: Any, where: str) -> PatchBody:
    """The patch a Bundle entry carries (FHIR R4 http.html#transaction): a Binary holding a
    JSON Patch (contentType application/json-patch+json), or a Parameters (FHIRPath Patch)."""
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind == "Parameters":
        return fhirpath_patch_body(resource, where)
    if kind == "Binary":
        mime = str(resource.get("contentType") or "").split(";", 1)[0].strip().lower()
        if mime != JSON_PATCH_MIME:
            raise bad_request(
                f"a PATCH entry's Binary holds a JSON Patch (contentType {JSON_PATCH_MIME})",
                f"{where}.contentType",
            )
        try:
            raw = base64.b64decode(str(resource.get("data") or ""), validate=True)
        except ValueError:
            raise bad_request("Binary.data is not base64", f"{where}.data") from None
        return json_patch_body(_json(raw, f"{where}.data"), f"{where}.data")
    raise bad_request(
        "a PATCH entry carries a Binary (JSON Patch) or a Parameters (FHIRPath Patch)",
        f"{where}.resourceType",
    )


def _json(raw: bytes, where: str) -> Any:
    """The JSON of a PATCH body, at most MAX_DEPTH levels deep like any FHIR body: orjson
    reads 1,024 levels, and a JSON Patch `value` 1,000 deep (a 2 KB body) reached
    `copy.deepcopy` and the models (a RecursionError: a 500)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the PATCH body is not JSON", where) from None
    # A key given twice is refused as in any FHIR body (`check_json_body`, which bounds
    # the depth too): `{"op": "replace", "path": "/status", ..., "op": "add", "path":
    # "/securityLabel/-", ...}` was applied as its last reading, a reader of the raw body
    # (a gateway, a log) seeing another change than the one stored.
    check_json_body(raw, data)
    # The characters FHIR strings may not hold, refused as in any JSON body: a JSON Patch
    # value `"bon\u0001jour"` stored one, and every XML answer holding it was a 500.
    check_json_characters(raw, data)
    return data


def apply_patch(resource: dict, body: PatchBody) -> dict:
    """The resource with the patch applied (a new object; `resource` is left unchanged).

    The result is held to MAX_DEPTH like a body: each operation's value is, but an `add`
    may put it at the end of what the operations before added (twenty `add`s of a value 60
    deep in a 32 KB body made a resource 1,200 deep: a RecursionError, a 500, in the
    normal form's walk)."""
    if body.kind == "json-patch":
        result = apply_json_patch(resource, body.document)
    else:
        result = apply_fhirpath_patch(resource, body.document)
    check_json_depth(result, "the patched resource")
    return result


# -- JSON Patch --------------------------------------------------------------------------------

# Read to the path's last character (`\Z`): `$` also matched before a final newline, and
# `.../valueBoolean\n` was applied as `.../valueBoolean` (read otherwise than written).
_URL_SELECTOR = re.compile(
    r"^/extension\[url:\s*['\"\u201c\u201d](.*?)['\"\u201c\u201d]\s*\](.*)\Z"
)


def apply_json_patch(resource: dict, operations: list) -> dict:
    """`resource` with `operations` applied, on one copy of it: each operation changes that
    copy in place (applied one by one on a fresh copy each, the cost grew with the square of
    the count), and a failing one discards it whole, so nothing is half-applied."""
    _check_operation_count(len(operations), "body")
    result = copy.deepcopy(resource)
    copied = 0
    for index, operation in enumerate(operations):
        where = f"JSON Patch operation {index}"
        if not isinstance(operation, dict):
            raise bad_request(f"{where} is not an object", where)
        operation = _absent_extension_value(result, {**operation})
        for key in ("path", "from"):
            if isinstance(operation.get(key), str):
                operation[key] = _pointer(result, operation[key], where)
        _check_depth_placed(result, operation, where)
        if operation.get("op") == "copy" and isinstance(operation.get("from"), str):
            copied += _copied_bytes(result, operation["from"], where)
            if copied > MAX_PATCH_COPIED_BYTES:
                raise _too_much_copied(copied, where)
        try:
            result = jsonpatch.apply_patch(result, [operation], in_place=True)
        except jsonpatch.InvalidJsonPatch as exc:
            raise bad_request(f"{where}: {exc}", where) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise error(422, "processing", f"{where}: {exc}", where) from None
        if not isinstance(result, dict):
            raise error(422, "processing", f"{where} replaced the whole resource", where)
    return result


def _check_depth_placed(resource: dict, operation: dict, where: str) -> None:
    """Refuse an operation that would nest the resource deeper than MAX_DEPTH: its value
    (or what it copies or moves) placed at its `path`. Each operation's value is within the
    body's depth, but an `add` may put it at the end of what the operations before added:
    twenty `add`s of a value 60 deep (32 KB) made a resource 1,200 deep, and the next
    `copy` of it raised in orjson and `copy.deepcopy` (a 500). Checked on each operation,
    so the resource the next one reads is never deeper than the limit."""
    path = operation.get("path")
    if not isinstance(path, str):
        return  # left to jsonpatch's own 400
    kind = operation.get("op")
    if kind in ("add", "replace"):
        value = operation.get("value")
    elif kind in ("copy", "move") and isinstance(operation.get("from"), str):
        try:
            value = jsonpointer.resolve_pointer(resource, operation["from"])
        except jsonpointer.JsonPointerException:
            return  # jsonpatch's own 422
    else:
        return
    room = MAX_DEPTH - path.count("/")
    if nested_depth(value, max(room, 0)) is None or room < 0:
        raise too_deep(f"{where}.path", "the patched resource")


def _copied_bytes(resource: dict, pointer: str, where: str) -> int:
    """The size, as JSON, of what a `copy` from `pointer` copies, refused once the patch's
    copies pass MAX_PATCH_COPIED_BYTES together (a missing `from` is left to jsonpatch's
    own 422). `copied` adds up across the operations in `apply_json_patch`."""
    try:
        value = jsonpointer.resolve_pointer(resource, pointer)
    except jsonpointer.JsonPointerException:
        return 0
    return len(orjson.dumps(value))


def _too_much_copied(size: int, where: str) -> FhirError:
    return error(
        400,
        "too-costly",
        f"{where}: the patch's copy operations copy {size} bytes or more; the limit is"
        f" {MAX_PATCH_COPIED_BYTES} bytes (MAX_PATCH_COPIED_BYTES)",
        where,
    )


_VALUE_ELEMENT = re.compile(r"^/(value[A-Z][A-Za-z]*)\Z")


def _absent_extension_value(resource: dict, operation: dict) -> dict:
    """`replace` (or `add`) of `/extension[url:'<url>']/value[x]` when the resource has no
    extension of that url: the operation that gives it one, `{url, value[x]}`.

    Why: PDSm4DMP TD3.3d archives a document with exactly this `replace` of the isArchived
    value, and a document never archived carries no isArchived extension (absent means not
    archived, PDSm_IsArchived); read as RFC 6902 (a `replace` needs its target) every archive
    request of a fresh document failed. The selector is not RFC 6901 anyway: it names "the
    value of the extension with that url", which a `replace` sets whether or not it was there.
    Any other path into an absent extension is still refused (422, `_pointer`)."""
    path = operation.get("path")
    if operation.get("op") not in ("replace", "add") or not isinstance(path, str):
        return operation
    match = _URL_SELECTOR.match(path)
    value = _VALUE_ELEMENT.match(match.group(2)) if match else None
    if match is None or value is None or "value" not in operation:
        return operation
    url = match.group(1)
    extensions = resource.get("extension")
    if isinstance(extensions, list) and any(
        isinstance(e, dict) and e.get("url") == url for e in extensions
    ):
        return operation
    extension = {"url": url, value.group(1): operation["value"]}
    if isinstance(extensions, list):
        return {"op": "add", "path": "/extension/-", "value": extension}
    return {"op": "add", "path": "/extension", "value": [extension]}


def _pointer(resource: dict, path: str, where: str) -> str:
    """An RFC 6901 pointer; PDSm4DMP's `/extension[url:'...']` selector made an index."""
    if "[" not in path:
        return path
    match = _URL_SELECTOR.match(path)
    if not match:
        raise bad_request(f"{where}: path '{path}' is not a JSON Pointer", where)
    url, rest = match.groups()
    extensions = resource.get("extension") or []
    for i, extension in enumerate(extensions):
        if isinstance(extension, dict) and extension.get("url") == url:
            return f"/extension/{i}{rest}"
    raise error(
        422,
        "processing",
        f"{where}: the resource has no extension '{url}' (add it with op 'add', path "
        "'/extension/-')",
        where,
    )


# -- FHIRPath Patch ----------------------------------------------------------------------------


@dataclass
class _Node:
    """One element a path designates: `holder[key]`, or `holder[key][index]`."""

    holder: dict
    key: str
    index: int | None

    @property
    def value(self) -> Any:
        item = self.holder[self.key]
        return item if self.index is None else item[self.index]

    def set(self, value: Any) -> None:
        if self.index is None:
            self.holder[self.key] = value
        else:
            self.holder[self.key][self.index] = value


def apply_fhirpath_patch(resource: dict, parameters: dict) -> dict:
    _check_operation_count(len(parameters.get("parameter") or []), "Parameters.parameter")
    result = copy.deepcopy(resource)
    for index, parameter in enumerate(parameters.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise bad_request(f"{where} is not an 'operation'", f"{where}.name")
        parts = _parts(parameter, where)
        kind = _primitive(parts, "type", where)
        if kind not in FHIRPATH_OPERATIONS:
            raise bad_request(
                f"{where}: operation type '{kind}' is not supported (add, insert, delete, replace)",
                f"{where}.part",
            )
        path = _primitive(parts, "path", where)
        nodes = _evaluate(result, path, where)
        if kind in ("delete", "replace") and any(n.value is result for n in nodes):
            raise error(
                422, "processing", f"{where}: {kind} cannot apply to the whole resource", where
            )
        if kind == "delete":
            _delete(nodes, where)
        elif kind == "replace":
            _one(nodes, path, where).set(_value(parts, where))
        elif kind == "add":
            name = _primitive(parts, "name", where)
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
                raise bad_request(f"{where}: name '{name}' is not an element name", where)
            _add(_one(nodes, path, where), name, _value(parts, where), where)
        else:  # insert
            position = _index_part(parts, where)
            _insert(nodes, path, position, _value(parts, where), where)
    return result


def _parts(parameter: dict, where: str) -> dict[str, dict]:
    parts: dict[str, dict] = {}
    for part in parameter.get("part") or []:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name in parts:
            raise bad_request(f"{where}: each part has one distinct name", f"{where}.part")
        parts[name] = part
    return parts


def _primitive(parts: dict[str, dict], name: str, where: str) -> str:
    part = parts.get(name)
    value = None
    if part is not None:
        values = [v for k, v in part.items() if k.startswith("value")]
        value = values[0] if len(values) == 1 else None
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}: the part '{name}' is required", f"{where}.part")
    return value


def _index_part(parts: dict[str, dict], where: str) -> int:
    value = (parts.get("index") or {}).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_request(f"{where}: insert needs an 'index' (valueInteger)", f"{where}.part")
    return value


def _value(parts: dict[str, dict], where: str) -> Any:
    """The `value` part: a `value[x]`, or a complex value spelled as nested parts."""
    part = parts.get("value")
    if part is None:
        raise bad_request(f"{where}: the part 'value' is required", f"{where}.part")
    return _part_value(part, f"{where}.part('value')")


def _part_value(part: dict, where: str) -> Any:
    values = [v for k, v in part.items() if k.startswith("value")]
    nested = part.get("part")
    if len(values) == 1 and nested is None:
        return copy.deepcopy(values[0])
    if not values and isinstance(nested, list) and nested:
        built: dict[str, Any] = {}
        for child in nested:
            name = child.get("name") if isinstance(child, dict) else None
            if not isinstance(name, str) or name in built:
                raise bad_request(f"{where}: each part has one distinct name", where)
            built[name] = _part_value(child, f"{where}.part('{name}')")
        return built
    raise bad_request(f"{where}: one value[x], or parts", where)


def _one(nodes: list[_Node], path: str, where: str) -> _Node:
    if len(nodes) != 1:
        found = "nothing" if not nodes else f"{len(nodes)} elements"
        raise error(
            422, "processing", f"{where}: path '{path}' designates {found}, not one element", where
        )
    return nodes[0]


def _delete(nodes: list[_Node], where: str) -> None:
    """fhirpatch.html: delete one element; a path that designates nothing changes nothing."""
    if len(nodes) > 1:
        raise error(422, "processing", f"{where}: delete designates several elements", where)
    if not nodes:
        return
    node = nodes[0]
    if node.index is None:
        del node.holder[node.key]
    else:
        del node.holder[node.key][node.index]
        if not node.holder[node.key]:
            del node.holder[node.key]


def _add(node: _Node, name: str, value: Any, where: str) -> None:
    target = node.value
    if not isinstance(target, dict):
        raise error(422, "processing", f"{where}: cannot add '{name}' to a primitive", where)
    if name in _LIST_ELEMENTS or isinstance(target.get(name), list):
        target.setdefault(name, []).append(value)
    elif name in target:
        raise error(422, "processing", f"{where}: '{name}' is already there (replace it)", where)
    else:
        target[name] = value


def _insert(nodes: list[_Node], path: str, position: int, value: Any, where: str) -> None:
    """fhirpatch.html: the path designates a list (all its items); the value goes at `index`."""
    holders = {(id(n.holder), n.key) for n in nodes}
    if len(holders) > 1 or any(n.index is None for n in nodes):
        raise error(422, "processing", f"{where}: insert needs a path to a list", where)
    if not nodes:
        raise error(
            422, "processing", f"{where}: path '{path}' designates no list (use add)", where
        )
    items = nodes[0].holder[nodes[0].key]
    if len(nodes) != len(items) or position > len(items):
        raise error(422, "processing", f"{where}: index {position} is outside the list", where)
    items.insert(position, value)


# The path subset: Type(.name | [n] | .where(x.y = 'lit') | .extension('url'))*
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<where>\.where\(\s*(?P<field>[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)
            \s*=\s*'(?P<literal>(?:[^'\\]|\\.)*)'\s*\))
      | (?P<ext>\.extension\(\s*'(?P<url>(?:[^'\\]|\\.)*)'\s*\))
      | (?P<name>\.[A-Za-z][A-Za-z0-9]*)
      | (?P<index>\[\s*(?P<n>\d+)\s*\])
    )""",
    re.VERBOSE,
)


def _evaluate(resource: dict, path: str, where: str) -> list[_Node]:
    root = str(resource.get("resourceType"))
    if not path.startswith(root):
        raise bad_request(
            f"{where}: path '{path}' does not start with the resource type {root}", where
        )
    holder = {"root": resource}
    nodes = [_Node(holder, "root", None)]
    rest = path[len(root) :]
    while rest.strip():
        match = _TOKEN.match(rest)
        if not match:
            raise bad_request(
                f"{where}: cannot read '{rest.strip()}' in path '{path}' (supported: names, "
                "[n], where(a.b = 'text'), extension('url'))",
                where,
            )
        rest = rest[match.end() :]
        if match.group("where"):
            nodes = [
                n for n in nodes if _has(n.value, match.group("field"), _unescape(match, "literal"))
            ]
        elif match.group("ext"):
            url = _unescape(match, "url")
            nodes = [n for n in _children(nodes, "extension") if _has(n.value, "url", url)]
        elif match.group("name"):
            nodes = _children(nodes, match.group("name")[1:])
        else:
            n = int(match.group("n"))
            nodes = nodes[n : n + 1]
    return nodes


def _unescape(match: re.Match, group: str) -> str:
    return re.sub(r"\\(.)", r"\1", match.group(group))


def _children(nodes: list[_Node], name: str) -> list[_Node]:
    found: list[_Node] = []
    for node in nodes:
        value = node.value
        if not isinstance(value, dict):
            continue
        key = name
        if name == "value" and name not in value:
            # A choice element (value[x]) is designated by its name without the type.
            choices = [k for k in value if k.startswith("value") and k[5:6].isupper()]
            if len(choices) != 1:
                continue
            key = choices[0]
        if key not in value:
            continue
        item = value[key]
        if isinstance(item, list):
            found.extend(_Node(value, key, i) for i in range(len(item)))
        else:
            found.append(_Node(value, key, None))
    return found


def _has(value: Any, dotted: str, literal: str) -> bool:
    """Whether any value along the dotted path equals the literal (FHIRPath `=` on strings)."""
    items = [value]
    for name in dotted.split("."):
        next_items = []
        for item in items:
            if isinstance(item, dict) and name in item:
                child = item[name]
                next_items.extend(child if isinstance(child, list) else [child])
        items = next_items
    return any(isinstance(item, str) and item == literal for item in items)


__all__ = [
    "FHIRPATH_OPERATIONS",
    "JSON_PATCH_MIME",
    "FhirError",
    "PatchBody",
    "apply_fhirpath_patch",
    "apply_json_patch",
    "apply_patch",
    "fhirpath_patch_body",
    "json_patch_body",
    "patch_body_of_resource",
    "read_patch_body",
]

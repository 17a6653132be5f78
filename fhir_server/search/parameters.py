"""HTTP search parameters -> a SearchQuery, with FHIR R4 search semantics.

Everything an engine needs is decided here, once: which parameters exist (the registry),
what a modifier or prefix means, the precision range of a date or number, how `,` (OR) and
repetition (AND) combine, chains and `_has`. Engines only compile the resulting AST.

Errors:
- an unknown or unsupported parameter is a 400 `not-supported` naming it, unless the request
  asked for lenient handling (`Prefer: handling=lenient`): then it is listed in `ignored`;
- a malformed value (bad date, number, token, unknown prefix or modifier) is a 400 `invalid`
  naming parameter and value, lenient or not: ignoring it would silently widen the result.

Limits (each a 400 `too-costly` naming the limit and the parameter, never a 500 from the
engine: SQLite refuses an expression deeper than 1000 nodes, a parser stack deeper than 100):
at most MAX_PARAMETERS parameters in one search, MAX_VALUES comma-separated values in one
parameter (and items in `_sort`, `_elements`), MAX_CHAIN reference hops in one parameter
(chain links and `_has` together), MAX_TESTS value tests in the whole search once chains are
expanded to their target types, MAX_ABOVE_CHARS characters of `uri:above` values in the
whole search, MAX_CONTAINS_CHARS characters in a `:contains` value.

Choices where R4 leaves room (documented here because the engines must agree with them):
- numbers: `eq`/`ne`/`sa`/`eb` use the precision range [low, high) of the value (`100` ->
  [99.5, 100.5)); `gt`/`lt`/`ge`/`le` compare with the exact value (NumberTest low == high);
  `ap` is [v - 10%|v|, v + 10%|v|) widened to at least the precision range;
- dates: `ap` widens the value's range on both sides by 10% of the distance between now and
  the middle of the range (so `ap` on a date a year away tolerates about five weeks);
- `:not=a,b` is "neither a nor b" (Not(Or(a, b)));
- a reference without a type (`subject=123`) matches any target type with that id; an
  absolute URL under `base_url` is read as the local `Type/id`, any other absolute URL is
  matched as a URL;
- `:identifier=value` (no `|`) matches the value in any system; `|value` too (the AST cannot
  say "no system" for identifiers);
- a chain without a type modifier is tried on every served target type that has the chained
  parameter (an Or of Chains); none -> not-supported;
- an empty value (`param=`) is ignored, as most servers do;
- `author.given` / `author.family` on DocumentReference (IHE MHD ITI-67) also match the
  contained authors (`CONTAINED_CHAIN_ALIASES`): the chain to a stored author is ORed with
  the string parameter indexed from the contained Practitioners (profiles/search-parameters/
  dmp-mhd.json), since a chain cannot reach a contained resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from fhir_server.errors import FhirError, bad_request
from fhir_server.resources.normal_form import NormalForm, default_aliases
from fhir_server.search.normalize import (
    MAX_INSTANT,
    MIN_INSTANT,
    DateFormatError,
    NumberFormatError,
    date_range,
    decimal_range,
    normalize_string,
    parse_decimal,
)
from fhir_server.search.query import (
    DEFAULT_COUNT,
    MAX_COUNT,
    And,
    Chain,
    DateTest,
    Has,
    IdTest,
    Include,
    Missing,
    Node,
    Not,
    NumberTest,
    Or,
    Prefix,
    QuantityTest,
    ReferenceTest,
    SearchQuery,
    SortKey,
    StringMatch,
    StringTest,
    SummaryMode,
    TokenMatch,
    TokenTest,
    TotalMode,
    UriMatch,
    UriTest,
    all_of,
)
from fhir_server.search.registry import SERVED_TYPES, SearchParamDef, SearchRegistry

MAX_PARAMETERS = 100
MAX_VALUES = 100
MAX_CHAIN = 3
# Keys of one `_sort`. Each is read for every match before the page is cut, so 100 keys
# (`date` a hundred times, 584 bytes) took 0.43 s on a record of 1,000 documents, 0.77 s
# for five keys twenty times, against 0.03 s for ten.
MAX_SORT_KEYS = 10
MAX_TESTS = 1000
# Value tests in one AuditEvent search. The log is searched in Python (`store.audit_log.
# search`): each test is decided on each event of the patient's trail, so 900 tests (nine
# `action` of 100 values, 3.5 KB) took 0.6 s on a trail of 500 events (1.3 ms per event,
# against 28 us for one test) and grow with the trail. One parameter of MAX_VALUES values
# and a few more fit.
MAX_AUDIT_EVENT_TESTS = 128
# Characters of the `uri:above` values of one search, together. `:above` matches a stored
# URI that is a prefix of the value, which both engines compile to the list of every prefix
# of it (`store.search_values.uri_prefixes`): n(n+1)/2 characters for n. A value of 6,000
# characters (a GET's request line holds 8,190 bytes) made an 18 MB MongoDB filter, over
# the 16 MiB a command may be: a 500 there, while SQLite built as many parameters. 1,024
# characters are at most 2 MB of prefixes (four bytes a character), and room for any
# canonical URL.
MAX_ABOVE_CHARS = 1024
# Characters of a `:contains` value (normalized). MongoDB reads it as a regular expression
# (`store.mongo_search`), and a server compiles no pattern over 16,384 bytes: 9,000 dots
# (18,000 bytes escaped) were a 500 there and a 200 on SQLite. An escaped character is at
# most 4 bytes, so 4,000 characters fit; no name or address is searched by more.
MAX_CONTAINS_CHARS = 4000

SYSTEM_LEVEL_PARAMS = frozenset({"_id", "_lastUpdated", "_tag", "_security", "_profile"})
# `_totalMethod` (count | estimate) is Aidbox's hint on how to count, which fhirpy's
# `count()` sends with `_count=0`: it changes no match, and every total served is exact.
IGNORED_SILENTLY = frozenset({"_format", "_pretty", "_totalMethod"})
RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude", "_cursor"}
)
SORT_SPECIAL = frozenset({"_id", "_lastUpdated"})
# (type, reference parameter, chained parameter) -> parameter over the contained targets.
CONTAINED_CHAIN_ALIASES = {
    ("DocumentReference", "author", "given"): "author-given",
    ("DocumentReference", "author", "family"): "author-family",
}

_RELATIVE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z"
)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+\Z")
_ELEMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")
_TOKEN_MODIFIERS = frozenset({"not", "text", "of-type"})
_UNSUPPORTED_MODIFIERS = frozenset({"above", "below", "in", "not-in", "code-text", "iterate"})


@dataclass(frozen=True)
class ParsedSearch:
    query: SearchQuery
    ignored: list[str] = field(default_factory=list)


class _Unknown(Exception):
    """An unknown/unsupported parameter: a 400, or ignored under lenient handling."""

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(name)
        self.name = name
        self.reason = reason


def is_whole_number(value: str) -> bool:
    """ASCII digits only: `str.isdigit` also accepts '²' or '٣', which `int()` refuses."""
    return value.isascii() and value.isdigit()


def _invalid(name: str, value: str, reason: str) -> FhirError:
    return bad_request(f"Invalid value {value!r} for search parameter '{name}': {reason}", name)


# ------------------------------------------------------------------------------------------
# Escaping (R4 3.1.1.5.7): `\,` `\|` `\$` `\\` are literal characters in a value.
# ------------------------------------------------------------------------------------------


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on unescaped `separator`, keeping escapes in the pieces (unescape later)."""
    if "\\" not in value:  # no escape: the C split, not a loop over every character
        return value.split(separator)
    pieces, current, index = [], [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            current.append(value[index : index + 2])
            index += 2
            continue
        if char == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    pieces.append("".join(current))
    return pieces


def _too_costly(key: str, diagnostics: str) -> FhirError:
    return bad_request(diagnostics, key, code="too-costly")


def _values(key: str, raw: str, separator: str = ",") -> list[str]:
    """The values of one parameter, at most MAX_VALUES of them."""
    values = split_escaped(raw, separator)
    if len(values) > MAX_VALUES:
        raise _too_costly(
            key,
            f"search parameter '{key}' has {len(values)} values; the limit is {MAX_VALUES}"
            " values in one parameter",
        )
    return values


def _check_counts(params: list[tuple[str, str]]) -> None:
    """At most MAX_PARAMETERS parameters, each at most MAX_CHAIN hops long."""
    if len(params) > MAX_PARAMETERS:
        raise _too_costly(
            params[MAX_PARAMETERS][0],
            f"the search has {len(params)} parameters; the limit is {MAX_PARAMETERS}"
            " parameters in one search",
        )
    for key, _ in params:
        hops = key.count(".") + key.count("_has:")
        if hops > MAX_CHAIN:
            raise _too_costly(
                key,
                f"search parameter '{key}' chains {hops} references; the limit is"
                f" {MAX_CHAIN} (chain links and _has together)",
            )


def _tests(node: Node) -> int:
    """How many value tests `node` holds (chains expanded to each target type)."""
    if isinstance(node, And | Or):
        return sum(_tests(part) for part in node.parts)
    if isinstance(node, Not):
        return _tests(node.part)
    if isinstance(node, Chain | Has):
        return _tests(node.where)
    if isinstance(node, IdTest):
        return len(node.ids)
    return 1


def _above_chars(node: Node) -> int:
    """The characters of the `uri:above` values `node` holds (chains expanded to each
    target type): what their lists of prefixes cost the engines (MAX_ABOVE_CHARS)."""
    if isinstance(node, And | Or):
        return sum(_above_chars(part) for part in node.parts)
    if isinstance(node, Not):
        return _above_chars(node.part)
    if isinstance(node, Chain | Has):
        return _above_chars(node.where)
    if isinstance(node, UriTest) and node.match is UriMatch.ABOVE:
        return len(node.value)
    return 0


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


# ------------------------------------------------------------------------------------------


class _SearchParser:
    def __init__(
        self, registry: SearchRegistry, lenient: bool, base_url: str | None, now: int
    ) -> None:
        self.registry = registry
        self.lenient = lenient
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        self.normal_form = NormalForm(base_url) if base_url else None
        self.now = now

    # -- criteria -----------------------------------------------------------------------------

    def criterion(self, resource_type: str | None, key: str, value: str) -> Node:
        if key.startswith("_has:") or key == "_has":
            if resource_type is None:
                raise _Unknown(key, "not supported in a system-level search")
            return self.has(resource_type, key, value)
        name_part, dot, rest = key.partition(".")
        if dot:
            if resource_type is None:
                raise _Unknown(key, "chains are not supported in a system-level search")
            return self.chain(resource_type, name_part, rest, value, key)
        name, _, modifier = key.partition(":")
        return self.leaf(resource_type, name, modifier or None, value)

    def has(self, resource_type: str, key: str, value: str) -> Node:
        pieces = key.split(":", 3)
        if len(pieces) != 4 or not all(pieces[1:]):
            raise _invalid(key, value, "expected _has:Type:reference:parameter")
        _, source_type, ref_param, rest = pieces
        if source_type not in SERVED_TYPES:
            raise _Unknown(key, f"resource type {source_type} is not served")
        definition = self.registry.get(source_type, ref_param)
        if definition is None:
            raise _Unknown(key, f"{source_type} has no search parameter '{ref_param}'")
        if definition.type != "reference":
            raise _invalid(key, value, f"'{ref_param}' is not a reference parameter")
        if definition.targets and resource_type not in definition.targets:
            raise _invalid(key, value, f"'{ref_param}' cannot refer to {resource_type}")
        return Has(source_type, ref_param, self.criterion(source_type, rest, value))

    def chain(self, resource_type: str, head: str, rest: str, value: str, key: str) -> Node:
        name, _, modifier = head.partition(":")
        definition = self.registry.get(resource_type, name)
        if definition is None:
            raise _Unknown(key, f"unknown search parameter '{name}'")
        if definition.type != "reference":
            raise _invalid(key, value, f"'{name}' is not a reference parameter: cannot chain")
        if modifier:
            if not _TYPE_NAME.match(modifier):
                raise _invalid(key, value, f"unknown modifier ':{modifier}' in a chain")
            if definition.targets and modifier not in definition.targets:
                raise _invalid(key, value, f"'{name}' cannot refer to {modifier}")
            candidates = [modifier] if modifier in SERVED_TYPES else []
        else:
            targets = definition.targets or SERVED_TYPES
            candidates = [t for t in targets if t in SERVED_TYPES]
        chains: list[Node] = []
        for target in candidates:
            try:
                chains.append(Chain(name, target, self.criterion(target, rest, value)))
            except _Unknown:
                continue
        chained, _, chained_modifier = rest.partition(":")
        alias = CONTAINED_CHAIN_ALIASES.get((resource_type, name, chained))
        if alias and not modifier and self.registry.get(resource_type, alias) is not None:
            chains.append(self.leaf(resource_type, alias, chained_modifier or None, value))
        if not chains:
            raise _Unknown(key, "no served target type has the chained parameter")
        return chains[0] if len(chains) == 1 else Or(tuple(chains))

    def leaf(self, resource_type: str | None, name: str, modifier: str | None, raw: str) -> Node:
        key = f"{name}:{modifier}" if modifier else name
        if resource_type is None and name not in SYSTEM_LEVEL_PARAMS:
            raise _Unknown(key, "not supported in a system-level search")
        if name == "_id":
            if modifier not in (None, "not"):
                raise _invalid(key, raw, f"modifier ':{modifier}' is not allowed on _id")
            ids = [unescape(v) for v in _values(key, raw)]
            for one in ids:
                if not _ID.match(one):
                    raise _invalid(key, raw, f"{one!r} is not a resource id")
            node: Node = IdTest(tuple(ids))
            return Not(node) if modifier == "not" else node
        definition = self.registry.get(resource_type, name)
        if definition is None or definition.type == "special":
            raise _Unknown(key, f"unknown search parameter '{name}'")
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise _invalid(key, raw, "expected true or false")
            return Missing(name, raw == "true")
        self.check_modifier(definition, modifier, key, raw)
        values = _values(key, raw)
        tests = [self.value_test(definition, modifier, v, key) for v in values]
        combined = tests[0] if len(tests) == 1 else Or(tuple(tests))
        return Not(combined) if modifier == "not" else combined

    def check_modifier(
        self, definition: SearchParamDef, modifier: str | None, key: str, raw: str
    ) -> None:
        if modifier is None:
            return
        allowed: frozenset[str] = {
            "token": _TOKEN_MODIFIERS,
            "string": frozenset({"exact", "contains"}),
            "uri": frozenset({"above", "below"}),
            "reference": frozenset({"identifier"}),
        }.get(definition.type, frozenset())
        if modifier in allowed:
            return
        if definition.type == "reference" and _TYPE_NAME.match(modifier):
            if definition.targets and modifier not in definition.targets:
                raise _invalid(key, raw, f"'{definition.code}' cannot refer to {modifier}")
            return
        if modifier in _UNSUPPORTED_MODIFIERS:
            raise bad_request(
                f"Modifier ':{modifier}' is not supported (search parameter '{key}', "
                f"value {raw!r})",
                key,
                code="not-supported",
            )
        raise _invalid(
            key, raw, f"unknown modifier ':{modifier}' for a {definition.type} parameter"
        )

    def value_test(
        self, definition: SearchParamDef, modifier: str | None, raw: str, key: str
    ) -> Node:
        kind = definition.type
        if raw == "":
            raise _invalid(key, raw, "empty value in a list")
        if kind == "token":
            return self.token(definition.code, modifier, raw, key)
        if kind == "string":
            text = unescape(raw)
            if modifier == "exact":
                return StringTest(definition.code, text, StringMatch.EXACT)
            normalized = normalize_string(text)
            if not normalized:
                raise _invalid(key, raw, "blank string")
            match = StringMatch.CONTAINS if modifier == "contains" else StringMatch.START
            if match is StringMatch.CONTAINS and len(normalized) > MAX_CONTAINS_CHARS:
                raise _too_costly(
                    key,
                    f"search parameter '{key}' has a value of {len(normalized)} characters;"
                    f" the limit for :contains is {MAX_CONTAINS_CHARS} (MAX_CONTAINS_CHARS)",
                )
            return StringTest(definition.code, normalized, match)
        if kind == "date":
            return self.date(definition.code, raw, key)
        if kind == "number":
            prefix, low, high = self.number(raw, key)
            return NumberTest(definition.code, prefix, low, high)
        if kind == "quantity":
            return self.quantity(definition.code, raw, key)
        if kind == "reference":
            return self.reference(definition, modifier, raw, key)
        if kind == "uri":
            uri_match = {"above": UriMatch.ABOVE, "below": UriMatch.BELOW}.get(
                modifier or "", UriMatch.EQ
            )
            return UriTest(definition.code, unescape(raw), uri_match)
        if kind == "composite":
            parts = [unescape(p) for p in split_escaped(raw, "$")]
            expected = len(definition.component_extractors)
            if len(parts) != expected or not all(parts):
                raise _invalid(key, raw, f"expected {expected} components separated by '$'")
            return TokenTest(definition.code, code="$".join(parts), any_system=True)
        raise _Unknown(key, f"{kind} parameters are not supported")

    def token(self, param: str, modifier: str | None, raw: str, key: str) -> Node:
        if modifier == "text":
            text = normalize_string(unescape(raw))
            if not text:
                raise _invalid(key, raw, "blank text")
            # `value`: the text as asked, which a search's event shows (`query_names`).
            return TokenTest(param, match=TokenMatch.TEXT, text=text, value=unescape(raw).strip())
        parts = [unescape(p) for p in split_escaped(raw, "|")]
        if modifier == "of-type":
            if len(parts) != 3 or not parts[1] or not parts[2]:
                raise _invalid(key, raw, "expected system|code|value")
            return TokenTest(
                param, system=_canonical(parts[0]) or None, code=parts[1], match=TokenMatch.OF_TYPE,
                value=parts[2],
            )  # fmt: skip
        if len(parts) == 1:
            return TokenTest(param, code=parts[0], any_system=True)
        if len(parts) != 2:
            raise _invalid(key, raw, "a token is code, system|code, |code or system|")
        system, code = parts
        if not system and not code:
            raise _invalid(key, raw, "a token needs a system or a code")
        return TokenTest(param, system=_canonical(system) or None, code=code or None)

    @staticmethod
    def prefix(raw: str, key: str) -> tuple[Prefix, str]:
        if len(raw) >= 2 and raw[:2].isalpha():
            try:
                return Prefix(raw[:2]), raw[2:]
            except ValueError:
                raise _invalid(key, raw, f"unknown prefix {raw[:2]!r}") from None
        return Prefix.EQ, raw

    def date(self, param: str, raw: str, key: str) -> DateTest:
        prefix, text = self.prefix(raw, key)
        try:
            low, high = date_range(text)
        except DateFormatError:
            raise _invalid(key, raw, "not a FHIR date, dateTime or instant") from None
        if prefix is Prefix.AP:
            gap = abs(self.now - (low + high) // 2) // 10
            low, high = max(MIN_INSTANT, low - gap), min(MAX_INSTANT, high + gap)
        return DateTest(param, prefix, low, high)

    def number(self, raw: str, key: str) -> tuple[Prefix, Decimal, Decimal]:
        prefix, text = self.prefix(raw, key)
        try:
            exact = parse_decimal(text)
            low, high = decimal_range(text)
            if prefix in (Prefix.GT, Prefix.LT, Prefix.GE, Prefix.LE):
                return prefix, exact, exact
            if prefix is Prefix.AP:
                tolerance = abs(exact) / 10
                low, high = min(low, exact - tolerance), max(high, exact + tolerance)
        except (NumberFormatError, ArithmeticError):
            raise _invalid(key, raw, "not a number") from None
        return prefix, low, high

    def quantity(self, param: str, raw: str, key: str) -> QuantityTest:
        parts = [unescape(p) for p in split_escaped(raw, "|")]
        if len(parts) not in (1, 3):
            raise _invalid(key, raw, "a quantity is [prefix]number[|system|code]")
        prefix, low, high = self.number(parts[0], key)
        system = parts[1] or None if len(parts) == 3 else None
        code = parts[2] or None if len(parts) == 3 else None
        return QuantityTest(param, prefix, low, high, system, code)

    def reference(
        self, definition: SearchParamDef, modifier: str | None, raw: str, key: str
    ) -> ReferenceTest:
        param = definition.code
        text = unescape(raw)
        if modifier == "identifier":
            parts = [unescape(p) for p in split_escaped(raw, "|")]
            if len(parts) == 1 and parts[0]:
                return ReferenceTest(param, identifier_value=parts[0])
            if len(parts) == 2 and parts[1]:
                return ReferenceTest(
                    param, identifier_system=_canonical(parts[0]) or None, identifier_value=parts[1]
                )
            raise _invalid(key, raw, "expected system|value or value")
        if self.normal_form is not None:
            text = self.normal_form.local_reference(text)
        match = _RELATIVE.match(text)
        if match:
            target_type, target_id = match.group(1), match.group(2)
            if modifier and modifier != target_type:
                raise _invalid(key, raw, f"type {target_type} contradicts the modifier")
            if definition.targets and target_type not in definition.targets:
                raise _invalid(key, raw, f"'{param}' cannot refer to {target_type}")
            return ReferenceTest(param, target_type=target_type, target_id=target_id)
        if "://" in text or text.startswith("urn:"):
            return ReferenceTest(param, url=text)
        if _ID.match(text):
            return ReferenceTest(param, target_type=modifier, target_id=text)
        raise _invalid(key, raw, "not a reference (id, Type/id or absolute URL)")

    # -- result parameters ----------------------------------------------------------------------

    def sort(self, resource_type: str | None, raw: str) -> tuple[SortKey, ...]:
        keys = []
        items = _values("_sort", raw)
        if len(items) > MAX_SORT_KEYS:
            raise _too_costly(
                "_sort",
                f"_sort has {len(items)} keys; the limit is {MAX_SORT_KEYS} (MAX_SORT_KEYS)",
            )
        for item in items:
            descending = item.startswith("-")
            name = item[1:] if descending else item
            definition = (
                self.registry.get(resource_type, name) if name not in SORT_SPECIAL else None
            )
            if name not in SORT_SPECIAL and (
                definition is None
                or definition.type in ("composite", "special")
                or (resource_type is None and name not in SYSTEM_LEVEL_PARAMS)
            ):
                raise _invalid("_sort", raw, f"cannot sort on {name!r}")
            keys.append(SortKey(name, descending))
        return tuple(keys)

    def include(self, resource_type: str | None, key: str, raw: str) -> list[Include]:
        base, _, modifier = key.partition(":")
        reverse = base == "_revinclude"
        if modifier not in ("", "iterate", "recurse"):
            raise _invalid(key, raw, f"unknown modifier ':{modifier}'")
        iterate = bool(modifier)
        if raw == "*":
            if resource_type is None:
                raise _invalid(key, raw, "'*' needs a resource type")
            if not reverse:
                return [
                    Include(resource_type, d.code, None, iterate, False)
                    for d in self.registry.for_type(resource_type).values()
                    if d.type == "reference"
                ]
            return [
                Include(source, d.code, resource_type, iterate, True)
                for source in SERVED_TYPES
                for d in self.registry.for_type(source).values()
                if d.type == "reference" and (not d.targets or resource_type in d.targets)
            ]
        pieces = raw.split(":")
        if len(pieces) not in (2, 3) or not all(pieces):
            raise _invalid(key, raw, "expected Source:parameter[:Target]")
        source, param = pieces[0], pieces[1]
        target = pieces[2] if len(pieces) == 3 else None
        if source not in SERVED_TYPES:
            raise _invalid(key, raw, f"{source} is not a served resource type")
        if param == "*":
            definitions = [
                d for d in self.registry.for_type(source).values() if d.type == "reference"
            ]
        else:
            definition = self.registry.get(source, param)
            if definition is None or definition.type != "reference":
                raise _invalid(key, raw, f"'{param}' is not a reference parameter of {source}")
            definitions = [definition]
        if target is not None and not _TYPE_NAME.match(target):
            raise _invalid(key, raw, f"{target!r} is not a resource type")
        if reverse and target is None and resource_type is not None:
            target = resource_type
        return [Include(source, d.code, target, iterate, reverse) for d in definitions]


def parse_search(
    resource_type: str | None,
    params: list[tuple[str, str]],
    registry: SearchRegistry,
    *,
    lenient: bool = False,
    base_url: str | None = None,
    now: int | None = None,
) -> ParsedSearch:
    """The SearchQuery for `GET [base]/[type]?params` (resource_type None: `GET [base]?params`).

    `base_url` (the server's own base) makes absolute references to this server local;
    `now` (epoch microseconds) fixes the clock used by the `ap` prefix on dates (tests).
    Raises FhirError(400) as described in the module docstring.
    """
    if resource_type is not None and resource_type not in SERVED_TYPES:
        raise bad_request(f"Resource type {resource_type!r} is not supported", code="not-supported")
    if now is None:
        now = int(datetime.now(UTC).timestamp() * 1_000_000)
    _check_counts(params)
    parser = _SearchParser(registry, lenient, base_url, now)
    clauses: list[Node] = []
    ignored: list[str] = []
    sort: tuple[SortKey, ...] = ()
    count, total, summary = DEFAULT_COUNT, TotalMode.NONE, None
    elements: tuple[str, ...] = ()
    includes: list[Include] = []
    cursor: str | None = None
    for key, value in params:
        base = key.partition(":")[0]
        if base in IGNORED_SILENTLY or value == "":
            continue
        if base in RESULT_PARAMS:
            if key != base and base not in ("_include", "_revinclude"):
                raise _invalid(key, value, f"{base} takes no modifier")
            if base == "_count":
                if not is_whole_number(value):
                    raise _invalid(key, value, "expected a non-negative integer")
                count = min(int(value), MAX_COUNT)
            elif base == "_sort":
                sort = parser.sort(resource_type, value)
            elif base == "_total":
                try:
                    total = TotalMode(value)
                except ValueError:
                    raise _invalid(key, value, "expected none, estimate or accurate") from None
            elif base == "_summary":
                try:
                    summary = SummaryMode(value)
                except ValueError:
                    raise _invalid(
                        key, value, "expected true, count, data, text or false"
                    ) from None
            elif base == "_elements":
                names = tuple(v.strip() for v in _values(key, value))
                if not all(_ELEMENT.fullmatch(n) for n in names):
                    raise _invalid(key, value, "expected element names separated by commas")
                elements = names
            elif base in ("_include", "_revinclude"):
                includes.extend(parser.include(resource_type, key, value))
            elif base == "_cursor":
                cursor = value
            continue
        try:
            clauses.append(parser.criterion(resource_type, key, value))
        except _Unknown as unknown:
            if lenient:
                ignored.append(key)
                continue
            reason = f" ({unknown.reason})" if unknown.reason else ""
            raise bad_request(
                f"Unknown or unsupported search parameter '{key}'{reason}",
                key,
                code="not-supported",
            ) from None
    where = all_of(*clauses)
    tests = _tests(where)
    if tests > MAX_TESTS:
        raise _too_costly(
            "",
            f"the search holds {tests} value tests once its chains are expanded to their"
            f" target types; the limit is {MAX_TESTS}",
        )
    above = _above_chars(where)
    if above > MAX_ABOVE_CHARS:
        raise _too_costly(
            "",
            f"the search's uri :above values hold {above} characters together; the limit is"
            f" {MAX_ABOVE_CHARS} (MAX_ABOVE_CHARS)",
        )
    if resource_type == "AuditEvent" and tests > MAX_AUDIT_EVENT_TESTS:
        raise _too_costly(
            "",
            f"the AuditEvent search holds {tests} value tests; the limit is"
            f" {MAX_AUDIT_EVENT_TESTS} (MAX_AUDIT_EVENT_TESTS)",
        )
    query = SearchQuery(
        resource_type=resource_type,
        where=where,
        sort=sort,
        count=count,
        total=total,
        summary=summary,
        elements=elements,
        includes=tuple(dict.fromkeys(includes)),
        cursor=cursor,
    )
    return ParsedSearch(query, ignored)


def _canonical(system: str) -> str:
    """A searched system in the spelling the normal form stores (`resources.normal_form`)."""
    return default_aliases().canonical(system) if system else system

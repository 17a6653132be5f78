"""Engine-free pieces of search compilation that both storage engines must share exactly.

SQLite and MongoDB have to give the same answers, so everything that decides *what* matches
or *how* values order lives here once: an order-preserving text form of decimals, a
reversed-order form of sort keys (MongoDB), FHIR prefix semantics as range predicates (the
`ap` tolerance is the parser's: `search.parameters`), and string/URI prefix helpers. The engines only render these into SQL or a
filter document.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from fhir_server.search.index import IndexEntries
from fhir_server.search.query import Prefix

# --- decimals that compare as text -------------------------------------------------------

_EXP_OFFSET = 5000
_EXP_WIDTH = 4


def encode_decimal(value: Decimal | int) -> str:
    """An ASCII string whose byte order is the numeric order of `value`.

    Numbers and quantities are stored in this form on both engines, so range comparisons
    and sorting are exact (no binary floating point) and need nothing beyond string
    comparison, which SQLite, MongoDB and mongomock all do the same way. Equal numbers with
    different precision (1.0 and 1.00) get the same form; the precision range is carried
    by the entry's low/high, not by this key.

    Layout: "1" for zero; "2" + 4-digit biased exponent + significant digits for positives;
    "0" + nines' complement of that + "~" for negatives ("~" sorts above every digit, so a
    shorter complemented mantissa, a smaller magnitude, sorts higher).
    """
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if d.is_zero():
        return "1"
    sign, digits, _ = d.as_tuple()
    mantissa = "".join(map(str, digits)).strip("0")
    exponent = d.adjusted() + _EXP_OFFSET
    if not 0 <= exponent < 10**_EXP_WIDTH:
        raise ValueError(f"number out of the indexable range: {value!r}")
    body = f"{exponent:0{_EXP_WIDTH}d}" + mantissa
    if sign == 0:
        return "2" + body
    return "0" + body.translate(_NINES) + "~"


_NINES = str.maketrans("0123456789", "9876543210")


def descending_text(value: str) -> str:
    """A string whose order is the reverse of `value`'s (code point / UTF-8 byte order).

    MongoDB sorts a missing field as the lowest value; FHIR wants resources without a value
    last in both directions. Storing this reversed form lets an ascending FHIR sort be a
    descending MongoDB sort, where missing values do come last.
    """
    return "".join(f"{255 - b:02x}" for b in value.encode("utf-8")) + "~"


SortScalar = int | str


def sort_scalar(value: object) -> SortScalar:
    """The stored form of one sort value from `extract.sort_values`: ints stay ints (dates),
    decimals become `encode_decimal` text, strings stay as they are."""
    if isinstance(value, bool):
        raise TypeError("booleans are not sortable search values")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return encode_decimal(value)
    if isinstance(value, float):
        return encode_decimal(Decimal(repr(value)))
    if isinstance(value, str):
        return value
    raise TypeError(f"unsupported sort value {value!r}")


def reversed_sort_scalar(value: SortScalar) -> SortScalar:
    """The order-reversed form of a stored sort scalar (see `descending_text`)."""
    if isinstance(value, int):
        return -value
    return descending_text(value)


# --- prefixes as range predicates --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cmp:
    """`<target bound> <op> <value>`: bound is the stored entry's low or high."""

    bound: Literal["low", "high"]
    op: Literal["<", "<=", ">", ">="]
    value: object


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Pred, ...]


Pred = Cmp | AllOf | AnyOf


def prefix_predicate(prefix: Prefix, low: int | Decimal, high: int | Decimal) -> Pred:
    """FHIR R4 search prefixes (search.html#prefix) over ranges.

    [low, high] is the search value's range as the parser made it, [tl, th] a stored entry's
    range: eq: tl >= low and th <= high (the search range contains the target range);
    ne: not eq; gt: th > high; lt: tl < low; ge: gt or eq; le: lt or eq;
    sa: tl > high; eb: th < low;
    ap: the target range overlaps the search range, which the parser has already widened
    (`search.parameters`: 10% of a number's value, 10% of a date's distance to now). It was
    widened here a second time, so `ap` tolerated twice what the server documents.
    """
    contains = AllOf((Cmp("low", ">=", low), Cmp("high", "<=", high)))
    match prefix:
        case Prefix.EQ:
            return contains
        case Prefix.NE:
            return AnyOf((Cmp("low", "<", low), Cmp("high", ">", high)))
        case Prefix.GT:
            return Cmp("high", ">", high)
        case Prefix.LT:
            return Cmp("low", "<", low)
        case Prefix.GE:
            return AnyOf((Cmp("high", ">", high), contains))
        case Prefix.LE:
            return AnyOf((Cmp("low", "<", low), contains))
        case Prefix.SA:
            return Cmp("low", ">", high)
        case Prefix.EB:
            return Cmp("high", "<", low)
        case Prefix.AP:
            return AllOf((Cmp("low", "<=", high), Cmp("high", ">=", low)))
    raise ValueError(f"unknown prefix {prefix!r}")


# --- string and URI prefixes ------------------------------------------------------------


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix`, or None.

    `value >= prefix AND value < bound` is an index range scan on both engines, where a
    LIKE or a regex might not be. None when no such bound exists (empty prefix, or the last
    character cannot be incremented into a valid one).
    """
    while prefix:
        last = ord(prefix[-1])
        nxt = last + 1
        if 0xD800 <= nxt <= 0xDFFF:
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def uri_prefixes(value: str) -> list[str]:
    """Every non-empty prefix of `value`: the stored URIs `:above` may match."""
    return [value[:i] for i in range(1, len(value) + 1)]


OF_TYPE_SUFFIX = ":of-type"


def of_type_code(type_code: str | None, value: str | None) -> str:
    """Stored code of an `identifier:of-type` token entry (see `TokenMatch.OF_TYPE`).

    Convention with the extractor: an Identifier with a type yields, besides its ordinary
    token entry, `TokenEntry(param + ":of-type", system=type.system,
    code=f"{type.code}|{value}")`.
    """
    return f"{type_code or ''}|{value or ''}"


def present_params(entries: IndexEntries) -> set[str]:
    """Parameters the resource has at least one index entry for (`:missing=false`)."""
    params: set[str] = set()
    for group in (
        entries.tokens,
        entries.strings,
        entries.dates,
        entries.references,
        entries.uris,
        entries.numbers,
        entries.quantities,
    ):
        params.update(e.param for e in group)
    return params

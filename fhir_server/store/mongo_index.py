"""MongoDB persistence of search index entries: typed arrays embedded in the resource document.

`index_document` returns the fields the engine merges into the resource's document:

    tok: [{p, s, c, d}]            token: param, system (None if absent), code, display
    str: [{p, n, e}]               string: normalized, exact
    dt:  [{p, lo, hi}]             date: epoch microseconds (int64), inclusive range
    ref: [{p, tt, ti, u, is, iv}]  reference: target type/id, url, identifier system/value
    uri: [{p, v}]
    num: [{p, lo, hi}]             number: `encode_decimal` text (exact order, no floats)
    qty: [{p, lo, hi, s, c, u}]    quantity: same, plus system, code, unit
    pat: [patient id, ...]         patient compartment
    prm: [param, ...]              params with at least one entry (for :missing)
    srt: {param: {a, d}}           sort keys: `a` the lowest value in reversed order,
                                   `d` the highest value; both sorted descending in MongoDB so
                                   that a missing value (MongoDB's lowest) comes last

Each part of one value sits in one array element, so a query matches system and code (or
low and high) of the same element with `$elemMatch`. Numbers are text in the order-preserving
`encode_decimal` form rather than Decimal128 or doubles: comparisons are exact and behave the
same on MongoDB and mongomock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pymongo import ASCENDING, DESCENDING, IndexModel

from fhir_server.search.index import IndexEntries
from fhir_server.store.search_values import (
    encode_decimal,
    present_params,
    reversed_sort_scalar,
    sort_scalar,
)

INDEX_FIELDS = ("tok", "str", "dt", "ref", "uri", "num", "qty", "pat", "prm", "srt")

# Parameters that get sort indexes by default: MongoDB allows 64 indexes per collection, so
# not every registry parameter can have two.
DEFAULT_SORT_PARAMS = frozenset(
    {
        "date",
        "period",
        "created",
        "authored",
        "issued",
        "recorded",
        "birthdate",
        "family",
        "given",
        "name",
        "status",
        "identifier",
        "patient",
        "subject",
    }
)


def index_document(entries: IndexEntries, sort_values: Mapping[str, tuple[object, object]]) -> dict:
    """The index fields of a resource document (replace them all on every write)."""
    return {
        "tok": [{"p": e.param, "s": e.system, "c": e.code, "d": e.display} for e in entries.tokens],
        "str": [{"p": e.param, "n": e.normalized, "e": e.exact} for e in entries.strings],
        "dt": [{"p": e.param, "lo": e.low, "hi": e.high} for e in entries.dates],
        "ref": [
            {
                "p": e.param,
                "tt": e.target_type,
                "ti": e.target_id,
                "u": e.url,
                "is": e.identifier_system,
                "iv": e.identifier_value,
            }
            for e in entries.references
        ],
        "uri": [{"p": e.param, "v": e.value} for e in entries.uris],
        "num": [
            {"p": e.param, "lo": encode_decimal(e.low), "hi": encode_decimal(e.high)}
            for e in entries.numbers
        ],
        "qty": [
            {
                "p": e.param,
                "lo": encode_decimal(e.low),
                "hi": encode_decimal(e.high),
                "s": e.system,
                "c": e.code,
                "u": e.unit,
            }
            for e in entries.quantities
        ],
        "pat": list(dict.fromkeys(entries.compartment)),
        "prm": sorted(present_params(entries)),
        "srt": {
            _sort_field(param): {
                "a": reversed_sort_scalar(sort_scalar(lo)),
                "d": sort_scalar(hi),
            }
            for param, (lo, hi) in sort_values.items()
            if lo is not None and hi is not None
        },
    }


def _sort_field(param: str) -> str:
    """A sub-document key for a parameter code (MongoDB field names can't hold '.' or '$')."""
    return param.replace(".", "_").replace("$", "_")


def sort_path(param: str, descending: bool) -> str:
    """The field a `_sort` on `param` orders by (always as a MongoDB descending sort)."""
    return f"srt.{_sort_field(param)}.{'d' if descending else 'a'}"


def index_specs(
    resource_type: str,
    registry_param_codes: Iterable[str],
    sort_params: Iterable[str] = DEFAULT_SORT_PARAMS,
) -> list[IndexModel]:
    """Indexes for one resource type's collection, for the hot queries.

    One multikey index per typed array (all its fields are in the same array, which MongoDB
    allows in one compound index), the compartment with last-updated (a patient's record,
    newest first), and sort indexes for the registry parameters in `sort_params`.
    """
    del resource_type  # same layout for every type; kept for a per-type choice later
    a, d = ASCENDING, DESCENDING
    specs = [
        IndexModel([("tok.p", a), ("tok.c", a), ("tok.s", a)], name="ix_tok"),
        IndexModel([("tok.p", a), ("tok.s", a)], name="ix_tok_system"),
        IndexModel([("str.p", a), ("str.n", a)], name="ix_str"),
        IndexModel([("str.p", a), ("str.e", a)], name="ix_str_exact"),
        IndexModel([("dt.p", a), ("dt.lo", a), ("dt.hi", a)], name="ix_dt"),
        IndexModel([("ref.p", a), ("ref.ti", a), ("ref.tt", a)], name="ix_ref"),
        IndexModel([("ref.p", a), ("ref.iv", a), ("ref.is", a)], name="ix_ref_identifier"),
        IndexModel([("ref.p", a), ("ref.u", a)], name="ix_ref_url"),
        IndexModel([("uri.p", a), ("uri.v", a)], name="ix_uri"),
        IndexModel([("num.p", a), ("num.lo", a), ("num.hi", a)], name="ix_num"),
        IndexModel([("qty.p", a), ("qty.lo", a), ("qty.hi", a)], name="ix_qty"),
        IndexModel([("pat", a), ("lu", d)], name="ix_pat"),
        IndexModel([("prm", a)], name="ix_prm"),
        IndexModel([("lu", a), ("_id", a)], name="ix_lu"),
    ]
    wanted = set(sort_params)
    for param in sorted(set(registry_param_codes) & wanted):
        for descending in (False, True):
            specs.append(
                IndexModel(
                    [(sort_path(param, descending), d), ("_id", a)],
                    name=f"ix_srt_{_sort_field(param)}_{'d' if descending else 'a'}",
                )
            )
    return specs

"""Keyset cursors (signed, bound to query and requester) and the order-preserving encodings
the engines' comparisons and sorts rely on."""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.errors import FhirError
from fhir_server.search.query import IdTest, SearchQuery, SortKey
from fhir_server.store.cursor import CursorPosition, decode_cursor, encode_cursor
from fhir_server.store.search_values import descending_text, encode_decimal, prefix_upper_bound

KEY = b"s" * 32
QUERY = SearchQuery("Observation", IdTest(("a",)), sort=(SortKey("date"),))
POS = CursorPosition((123,), "Observation", "o-1", True)


def _encode(**kw):
    args = {"query": QUERY, "engine": "sqlite", "cursor_key": KEY, "cursor_binding": "alice"} | kw
    return encode_cursor(POS, **args)


def _decode(token, **kw):
    args = {
        "query": QUERY,
        "engine": "sqlite",
        "cursor_key": KEY,
        "cursor_binding": "alice",
        "key_length": 1,
    } | kw
    return decode_cursor(token, **args)


def _rejected(token, **kw):
    with pytest.raises(FhirError) as exc:
        _decode(token, **kw)
    assert exc.value.status == 400
    assert exc.value.issues[0].diagnostics == "invalid or expired paging cursor"


def test_cursor_round_trips_and_is_url_safe():
    token = _encode()
    assert _decode(token) == POS
    assert all(c.isalnum() or c in "-_" for c in token)


def test_cursor_page_size_change_is_allowed():
    other_count = SearchQuery("Observation", IdTest(("a",)), sort=(SortKey("date"),), count=5)
    assert _decode(_encode(), query=other_count) == POS


def test_tampered_cursor_payload_is_rejected():
    """Sealed (AES-GCM): a bit flipped anywhere, a cut token, a version-1 `payload.mac`
    token, or bytes that are no canonical base64url are refused alike."""
    token = _encode()
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for at in range(len(raw)):
        flipped = bytearray(raw)
        flipped[at] ^= 0x80
        _rejected(base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode())
    _rejected(token[:-1])
    _rejected(token[:20])
    _rejected(token + "A")
    _rejected(token + "=")
    legacy = base64.urlsafe_b64encode(orjson.dumps({"v": 1, "i": "o-2"})).rstrip(b"=").decode()
    _rejected(f"{legacy}.{token[:43]}")
    _rejected("garbage")
    _rejected("a.b.c")
    _rejected("")


def test_cursor_is_opaque_and_its_length_hides_its_position():
    """R18: nothing of the position, the query or the requester is in clear, and the
    plaintext is padded to whole blocks: positions of ids or sort values of different
    lengths (within a block) give tokens of one length."""
    token = _encode()
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for clear in (b"o-1", b"123", b"Observation", b"alice", b"sqlite"):
        assert clear not in raw
    short = encode_cursor(
        CursorPosition((1,), "Observation", "o", True),
        query=QUERY,
        engine="sqlite",
        cursor_key=KEY,
        cursor_binding="alice",
    )
    assert len(short) == len(token)
    assert _encode() != token, "a random nonce: the same position twice is two tokens"


def test_cursor_of_another_requester_query_engine_or_key_is_rejected():
    token = _encode()
    _rejected(token, cursor_binding="bob")
    _rejected(token, query=SearchQuery("Observation", IdTest(("b",)), sort=(SortKey("date"),)))
    _rejected(token, query=SearchQuery("Patient", IdTest(("a",)), sort=(SortKey("date"),)))
    _rejected(
        token, query=SearchQuery("Observation", IdTest(("a",)), sort=(SortKey("date", True),))
    )
    _rejected(token, engine="mongo")
    _rejected(token, cursor_key=b"t" * 32)
    _rejected(token, key_length=2)


_decimals = st.decimals(
    allow_nan=False,
    allow_infinity=False,
    min_value=Decimal("-1e30"),
    max_value=Decimal("1e30"),
    places=None,
)


@given(_decimals, _decimals)
def test_encode_decimal_preserves_numeric_order(a, b):
    ea, eb = encode_decimal(a), encode_decimal(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@given(st.text(), st.text())
def test_descending_text_reverses_string_order(a, b):
    assert (descending_text(a) < descending_text(b)) == (b < a)


@given(st.text(min_size=1), st.text())
def test_prefix_upper_bound_brackets_exactly_the_strings_with_that_prefix(prefix, s):
    upper = prefix_upper_bound(prefix)
    in_range = s >= prefix and (upper is None or s < upper)
    if upper is not None:
        assert in_range == s.startswith(prefix)
    if s.startswith(prefix):
        assert in_range

"""Opaque, encrypted keyset cursors shared by both storage engines, and the history's.

A cursor names a position in a search's order (the sort key values and id of the row it was
taken from) and a direction. It is bound to the query (type, where-clause, sort) and to the
requester, so that a client can neither forge a position nor replay another requester's or
another query's cursor: any such cursor is a 400 naming `_cursor`. Access constraints are
part of the where-clause, so a cursor also stops working when the requester's access
(consent) changes between pages.

The whole payload, position and binding, is sealed with AES-256-GCM under a key derived from
the server's cursor secret: the client is handed random-looking bytes. Signed but readable
(base64 of JSON, to version 1), a cursor was a channel from the server's own query to the
client: the fingerprint of a where-clause holding the gate's access constraints told a
hidden id from a missing one, the sort key values were the stored ones (not the served
copy's), and a history's position was the last row the store read, hidden or not (on
MongoDB, its type and id). R18: a hidden resource is answered exactly as a missing one, so
nothing of the internal query is shown. The plaintext is padded to whole blocks (and a
history's to a length fixed by what the client asked), so that the token's length is no
function of what the requester may not know either.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhir_server.errors import FhirError, error
from fhir_server.search.query import SearchQuery

CURSOR_VERSION = 2
INVALID_CURSOR = "invalid or expired paging cursor"

CursorValue = int | str | None


@dataclass(frozen=True, slots=True)
class CursorPosition:
    """A row's place in the order: its stored sort key values (one per `_sort` key, None when
    the resource has no value) and its type and id (the tie-break)."""

    key: tuple[CursorValue, ...]
    resource_type: str
    id: str
    forward: bool = True  # True: the page after this row; False: the page before it


def query_fingerprint(query: SearchQuery) -> str:
    """What a cursor is bound to: the result set and its order, not the page size.

    Every page of a search (and each repeat of it) encodes a cursor for the same query; the
    repr of its clause tree costs ~40 µs, hashing and comparing it ~5, so fingerprints are
    remembered. A search's clauses are the client's values (up to the request body's size),
    so only queries whose repr is short are kept: the memo holds at most `_FINGERPRINTS`
    entries of at most `_REMEMBERED_REPR` characters (a few MB), and is emptied when full.
    """
    key = (query.resource_type, query.where, query.sort)
    try:
        found = _fingerprints.get(key)
    except TypeError:  # a clause holding an unhashable value: no memo
        return _digest(repr(key))
    if found is None:
        text = repr(key)
        found = _digest(text)
        if len(text) <= _REMEMBERED_REPR:
            if len(_fingerprints) >= _FINGERPRINTS:
                _fingerprints.clear()
            _fingerprints[key] = found
    return found


_FINGERPRINTS = 1024
_REMEMBERED_REPR = 4096
_fingerprints: dict[tuple, str] = {}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NONCE = 12  # bytes, AES-GCM's own size; random per cursor
_TAG = 16
_BLOCK = 64  # the plaintext is padded to whole blocks of this many bytes
# Room kept in a history cursor's plaintext beside the client's own scope: the store's
# position (at most ~200 bytes: a MongoDB [last_updated, type, "id/version"] in base64 JSON)
# and the binding, so that its length is a function of the scope alone.
_HISTORY_ROOM = 320
# What each kind of token is sealed for (the AEAD's associated data, with the format byte):
# a history cursor is no search cursor, whatever its plaintext.
_SEARCH = b"search"
_HISTORY = b"history"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _binding_hash(binding: str) -> str:
    return hashlib.sha256(binding.encode("utf-8")).hexdigest()[:32]


@functools.lru_cache(maxsize=8)
def _cipher(cursor_key: bytes) -> AESGCM:
    """The cursors' AEAD. Its key is derived from the cursor secret (HMAC-SHA256 under a
    label), so that the secret keys nothing directly and a later use of it gets its own
    label. Kept per key: a server has one, its tests a few."""
    derived = hmac.new(cursor_key, b"fhir-server paging cursor AES-256-GCM v2", hashlib.sha256)
    return AESGCM(derived.digest())


def _seal(kind: bytes, data: dict, cursor_key: bytes, *, room: int = 0) -> str:
    """`data` as a token: format byte, random nonce, AES-GCM of its JSON padded with spaces
    (JSON's own whitespace) to at least `room` bytes, in whole `_BLOCK`s."""
    plain = orjson.dumps(data)
    size = max(len(plain), room)
    size += -size % _BLOCK
    header = bytes((CURSOR_VERSION,))
    nonce = os.urandom(_NONCE)
    sealed = _cipher(cursor_key).encrypt(nonce, plain.ljust(size), header + kind)
    return _b64(header + nonce + sealed)


def _open(token: object, kind: bytes, cursor_key: bytes) -> dict:
    """What `_seal` sealed in `token` for `kind` under `cursor_key`, else FhirError 400: a
    token of another format (version 1's `payload.mac`), not in canonical base64url,
    truncated, altered by one bit, or sealed under another key or for another kind."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise invalid_cursor() from exc
    header = bytes((CURSOR_VERSION,))
    if len(raw) < 1 + _NONCE + _TAG or raw[:1] != header or _b64(raw) != token:
        raise invalid_cursor()
    try:
        plain = _cipher(cursor_key).decrypt(raw[1 : 1 + _NONCE], raw[1 + _NONCE :], header + kind)
        data = orjson.loads(plain)
    except (InvalidTag, orjson.JSONDecodeError) as exc:
        raise invalid_cursor() from exc
    if not isinstance(data, dict):
        raise invalid_cursor()
    return data


def encode_cursor(
    position: CursorPosition,
    *,
    query: SearchQuery,
    engine: str,
    cursor_key: bytes,
    cursor_binding: str,
) -> str:
    """`position` as an opaque token bound to `query`, `engine` and the requester."""
    data = {
        "v": CURSOR_VERSION,
        "e": engine,
        "q": query_fingerprint(query),
        "b": _binding_hash(cursor_binding),
        "k": list(position.key),
        "t": position.resource_type,
        "i": position.id,
        "f": position.forward,
    }
    return _seal(_SEARCH, data, cursor_key)


def query_position(
    query: SearchQuery,
    *,
    engine: str,
    cursor_key: bytes,
    cursor_binding: str,
    key_length: int,
) -> tuple[CursorPosition | None, bool]:
    """Where a search page starts (None: the first page) and whether it reads forward, from
    the query's cursor (`decode_cursor`); every engine's paging starts here."""
    if not query.cursor:
        return None, True
    position = decode_cursor(
        query.cursor,
        query=query,
        engine=engine,
        cursor_key=cursor_key,
        cursor_binding=cursor_binding,
        key_length=key_length,
    )
    return position, position.forward


def decode_cursor(
    token: str,
    *,
    query: SearchQuery,
    engine: str,
    cursor_key: bytes,
    cursor_binding: str,
    key_length: int,
) -> CursorPosition:
    """The position in `token`, or FhirError 400 if it is malformed, tampered with, or was
    issued for another query, requester, engine or sort."""
    data = _open(token, _SEARCH, cursor_key)
    try:
        ok = (
            data["v"] == CURSOR_VERSION
            and data["e"] == engine
            and data["q"] == query_fingerprint(query)
            and hmac.compare_digest(data["b"], _binding_hash(cursor_binding))
            and isinstance(data["k"], list)
            and len(data["k"]) == key_length
            and all(v is None or type(v) in (int, str) for v in data["k"])
            and isinstance(data["t"], str)
            and isinstance(data["i"], str)
            and isinstance(data["f"], bool)
        )
    except (KeyError, TypeError) as exc:
        raise invalid_cursor() from exc
    if not ok:
        raise invalid_cursor()
    return CursorPosition(tuple(data["k"]), data["t"], data["i"], data["f"])


def seal_history_cursor(
    store_cursor: str, *, scope: str, cursor_key: bytes, cursor_binding: str
) -> str:
    """A store's history cursor as the client is given it: sealed as a search cursor is,
    and bound to the history it pages (`scope`) and to the requester. Unsigned, a client
    could write anything into it (a MongoDB history cursor holds a type and an id), and the
    history's event, which keeps the request as asked, carried it into a patient's trace;
    readable, it showed the position of the last version the store read, which the gate may
    have left out of the page (a hidden version's time, on MongoDB its type and id). Its
    length depends on the scope only (`_HISTORY_ROOM`)."""
    data = {"v": CURSOR_VERSION, "h": store_cursor, "s": scope, "b": _binding_hash(cursor_binding)}
    room = len(orjson.dumps(scope)) + _HISTORY_ROOM
    return _seal(_HISTORY, data, cursor_key, room=room)


def open_history_cursor(token: str, *, scope: str, cursor_key: bytes, cursor_binding: str) -> str:
    """The store's cursor `seal_history_cursor` sealed, or FhirError 400 if `token` is
    malformed, tampered with, or was issued for another history or requester."""
    data = _open(token, _HISTORY, cursor_key)
    try:
        ok = (
            data["v"] == CURSOR_VERSION
            and isinstance(data["h"], str)
            and data["s"] == scope
            and hmac.compare_digest(data["b"], _binding_hash(cursor_binding))
        )
    except (KeyError, TypeError) as exc:
        raise invalid_cursor() from exc
    if not ok:
        raise invalid_cursor()
    return data["h"]


def invalid_cursor() -> FhirError:
    """The one answer to every cursor the server cannot use (search or history): a 400
    naming the parameter the client sent it in."""
    return error(400, "invalid", INVALID_CURSOR, expression="_cursor")

"""Opaque, signed keyset cursors shared by both storage engines.

A cursor names a position in a search's order (the sort key values and id of the row it was
taken from) and a direction. It is bound to the query (type, where-clause, sort) and to the
requester, and signed with HMAC-SHA256, so that a client can neither forge a position nor
replay another requester's or another query's cursor: any such cursor is a 400. Access
constraints are part of the where-clause, so a cursor also stops working when the
requester's access (consent) changes between pages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from fhir_server.errors import FhirError, error
from fhir_server.search.query import SearchQuery

CURSOR_VERSION = 1
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _binding_hash(binding: str) -> str:
    return hashlib.sha256(binding.encode("utf-8")).hexdigest()[:32]


def _mac(cursor_key: bytes, payload: bytes) -> bytes:
    return hmac.new(cursor_key, payload, hashlib.sha256).digest()


def encode_cursor(
    position: CursorPosition,
    *,
    query: SearchQuery,
    engine: str,
    cursor_key: bytes,
    cursor_binding: str,
) -> str:
    payload = orjson.dumps(
        {
            "v": CURSOR_VERSION,
            "e": engine,
            "q": query_fingerprint(query),
            "b": _binding_hash(cursor_binding),
            "k": list(position.key),
            "t": position.resource_type,
            "i": position.id,
            "f": position.forward,
        }
    )
    return f"{_b64(payload)}.{_b64(_mac(cursor_key, payload))}"


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
    payload = _signed_payload(token, cursor_key)
    try:
        data = orjson.loads(payload)
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
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _invalid() from exc
    if not ok:
        raise _invalid()
    return CursorPosition(tuple(data["k"]), data["t"], data["i"], data["f"])


def seal_history_cursor(
    store_cursor: str, *, scope: str, cursor_key: bytes, cursor_binding: str
) -> str:
    """A store's history cursor as the client is given it: signed, and bound to the history
    it pages (`scope`) and to the requester, as a search cursor is. Unsigned, a client could
    write anything into it (a MongoDB history cursor holds a type and an id), and the
    history's event, which keeps the request as asked, carried it into a patient's trace."""
    payload = orjson.dumps({"h": store_cursor, "s": scope, "b": _binding_hash(cursor_binding)})
    return f"{_b64(payload)}.{_b64(_mac(cursor_key, payload))}"


def open_history_cursor(token: str, *, scope: str, cursor_key: bytes, cursor_binding: str) -> str:
    """The store's cursor `seal_history_cursor` signed, or FhirError 400 if `token` is
    malformed, tampered with, or was issued for another history or requester."""
    payload = _signed_payload(token, cursor_key)
    try:
        data = orjson.loads(payload)
        ok = (
            isinstance(data["h"], str)
            and data["s"] == scope
            and hmac.compare_digest(data["b"], _binding_hash(cursor_binding))
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _invalid() from exc
    if not ok:
        raise _invalid()
    return data["h"]


def _signed_payload(token: str, cursor_key: bytes) -> bytes:
    """The payload of a `payload.mac` token whose MAC is the server's, else FhirError 400."""
    try:
        payload_text, mac_text = token.split(".")
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except (ValueError, TypeError) as exc:
        raise _invalid() from exc
    if not hmac.compare_digest(mac, _mac(cursor_key, payload)):
        raise _invalid()
    return payload


def _invalid() -> FhirError:
    return error(400, "invalid", INVALID_CURSOR, expression="_page")

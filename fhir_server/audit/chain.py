"""Tamper evidence for AuditEvents: a hash chain (R16, "append-only").

No interface updates or deletes AuditEvents, but a store can be edited behind the server's
back. Each sealed event therefore carries, in the complex extension :data:`EXT_AUDIT_CHAIN`:

- ``sequence`` (valueInteger): its position in the chain, 1, 2, 3 ...
- ``previous`` (valueString): the hash of the event before it (:data:`GENESIS_HASH` for the
  first one);
- ``hash`` (valueString): lower-case hex SHA-256 of
  ``previous_hash (ASCII) + "\\n" + str(sequence) + "\\n" + canonical JSON of the event``.

The canonical JSON of an event is the event without the audit-chain extension (and without the
``extension`` array if that leaves it empty) and without ``meta.versionId`` and
``meta.lastUpdated`` (storage bookkeeping written after sealing), serialized by orjson with
``OPT_SORT_KEYS``: keys sorted at every level, no insignificant whitespace, UTF-8 without
escaping non-ASCII characters. ``id`` is covered, so the id must be set before sealing (the BALP
builders set it).

Events sealed by the audit log since issue #21's verify work also cover ``meta.lastUpdated``,
which the server serves (Last-Modified, ``_history?_since``, ``_lastUpdated``): their link has
a fourth part ``covers`` (valueCode ``lastUpdated``), their canonical JSON keeps
``meta.lastUpdated``, and their hash is that of ``"lastUpdated\n"`` followed by the input
above. The prefix is part of what is hashed, so removing the ``covers`` part (to pass the
event off as one of the first kind, whose ``lastUpdated`` is not covered) breaks its hash.

Any edit, deletion or reordering inside the chain is detected at its first position by
:func:`verify_chain`. Deleting the *last* events, or rewriting the whole tail with recomputed
hashes, can only be detected against a head kept elsewhere (the sequence and hash of the
newest event, e.g. in a separate table or an external witness): pass it as ``expected_head``.

Sequence numbers are FHIR ``integer`` (32-bit); one chain holds up to 2**31 - 1 events, so
chain per patient or per period if more are expected.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson

from fhir_server.terminology import CANONICAL_BASE

EXT_AUDIT_CHAIN = f"{CANONICAL_BASE}/StructureDefinition/audit-chain"
GENESIS_HASH = "0" * 64
_CHAIN_KEY = f'"{EXT_AUDIT_CHAIN}"'.encode()
_HASH = re.compile(r"[0-9a-f]{64}")


def _copy(event: Mapping) -> dict:
    """A deep copy of a JSON event; an orjson round trip costs a tenth of copy.deepcopy."""
    return orjson.loads(orjson.dumps(event))


MAX_SEQUENCE = 2**31 - 1


@dataclass(frozen=True)
class ChainLink:
    sequence: int
    previous: str
    hash: str
    covers_last_updated: bool = False  # see the module docstring


COVERS_LAST_UPDATED = "lastUpdated"  # the value of the link's `covers` part


@dataclass(frozen=True)
class ChainReport:
    """The result of :func:`verify_chain`.

    ``ok`` is True when every event checked out. Otherwise ``sequence`` is the sequence number
    expected at the first broken position, ``event_id`` the id of the event found there (None
    when the chain ended early), ``position`` its 0-based index in the input and ``reason`` a
    sentence. ``checked`` counts the events verified before the break; ``head`` is the
    (sequence, hash) of the last good event.
    """

    ok: bool
    checked: int
    head: tuple[int, str]
    sequence: int | None = None
    event_id: str | None = None
    position: int | None = None
    reason: str | None = None


def canonical_json(event: Mapping, *, keep_last_updated: bool = False) -> bytes:
    """The bytes that are hashed: the event without its chain link and storage bookkeeping
    (`keep_last_updated`: but with its meta.lastUpdated, for a link that covers it)."""
    if _already_canonical(event, keep_last_updated):  # as built: nothing to take out, no copy
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    body = _copy(event)
    extensions = [
        e
        for e in body.get("extension", [])
        if not (isinstance(e, dict) and e.get("url") == EXT_AUDIT_CHAIN)
    ]
    if extensions:
        body["extension"] = extensions
    else:
        body.pop("extension", None)
    meta = body.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        if not keep_last_updated:
            meta.pop("lastUpdated", None)
        if not meta:
            body.pop("meta")
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def unchained(body: bytes) -> bytes:
    """An event's stored bytes without its chain link, as a client is served them.

    The link is the log's tamper evidence, for `fhir-server audit verify`; its sequence and
    previous hash count every event of the log, so a patient comparing the links of two
    events of their trail would learn how many events lie between them, those hidden from
    them included: that a refused read of a document hidden from them was traced in their
    record, where a read of an unknown id is traced nowhere (R18)."""
    if _CHAIN_KEY not in body:
        return body
    event = orjson.loads(body)
    extensions = [
        e
        for e in event.get("extension") or []
        if not (isinstance(e, dict) and e.get("url") == EXT_AUDIT_CHAIN)
    ]
    if extensions:
        event["extension"] = extensions
    else:
        event.pop("extension", None)
    return orjson.dumps(event)


def _already_canonical(event: Mapping, keep_last_updated: bool = False) -> bool:
    """Whether `event` carries none of what `canonical_json` leaves out (no chain link, no
    empty `extension`, no storage bookkeeping in `meta`, no empty `meta`)."""
    meta = event.get("meta")
    if meta is not None and (
        not isinstance(meta, dict)
        or not meta
        or "versionId" in meta
        or ("lastUpdated" in meta and not keep_last_updated)
    ):
        return False
    extensions = event.get("extension")
    if extensions is None:
        return "extension" not in event
    return (
        isinstance(extensions, list)
        and bool(extensions)
        and all(isinstance(e, dict) and e.get("url") != EXT_AUDIT_CHAIN for e in extensions)
    )


def chain_hash(
    event: Mapping, previous_hash: str, sequence: int, *, covers_last_updated: bool = False
) -> str:
    digest = hashlib.sha256()
    if covers_last_updated:
        digest.update(f"{COVERS_LAST_UPDATED}\n".encode("ascii"))
    digest.update(previous_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(str(sequence).encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_json(event, keep_last_updated=covers_last_updated))
    return digest.hexdigest()


def seal(event: Mapping, previous_hash: str, sequence: int) -> dict:
    """A new event: ``event`` carrying its chain link after ``previous_hash``.

    Any existing chain link is replaced. ``event`` itself is not modified; the new event shares
    its nested values (events are values: nothing edits one once it is built). Raises
    ValueError for a sequence outside 1..2**31-1 or a previous hash that is not 64 hex digits.
    """
    return sealed_link(event, previous_hash, sequence)[0]


def sealed_link(
    event: Mapping, previous_hash: str, sequence: int, *, last_updated: str | None = None
) -> tuple[dict, ChainLink]:
    """`seal`, and the link it wrote (for a caller that stores the hash beside the event).
    `last_updated`: the meta.lastUpdated the event will be served with, set on it now and
    covered by the hash (module docstring)."""
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be within 1..{MAX_SEQUENCE}")
    if not isinstance(previous_hash, str) or not _HASH.fullmatch(previous_hash):
        raise ValueError("previous_hash must be 64 lower-case hex digits")
    if last_updated is not None:
        event = {**event, "meta": {**(event.get("meta") or {}), "lastUpdated": last_updated}}
    covers = last_updated is not None
    digest = chain_hash(event, previous_hash, sequence, covers_last_updated=covers)
    others = [e for e in event.get("extension", []) if e.get("url") != EXT_AUDIT_CHAIN]
    link = ChainLink(sequence, previous_hash, digest, covers)
    sealed = dict(event)
    sealed["extension"] = [*others, link_extension(link)]
    return sealed, link


def link_extension(link: ChainLink) -> dict:
    """The audit-chain extension `seal` writes for `link`, the event's last extension."""
    parts: list[dict] = [
        {"url": "sequence", "valueInteger": link.sequence},
        {"url": "previous", "valueString": link.previous},
        {"url": "hash", "valueString": link.hash},
    ]
    if link.covers_last_updated:
        parts.append({"url": "covers", "valueCode": COVERS_LAST_UPDATED})
    return {"url": EXT_AUDIT_CHAIN, "extension": parts}


def move_order(body: bytes) -> tuple[int, int]:
    """Sort key of events stored before the audit log, for their move into it: the sealed
    ones in chain order, then any unsealed one (sealed at the end of the chain)."""
    link = chain_link(orjson.loads(body))
    return (0, link.sequence) if link else (1, 0)


def chain_link(event: Mapping) -> ChainLink | None:
    """The chain link an event carries, or None when it has none (or a malformed one)."""
    for ext in event.get("extension", []) or []:
        if ext.get("url") != EXT_AUDIT_CHAIN:
            continue
        items = ext.get("extension", [])
        parts = {e.get("url"): e for e in items}
        if len(parts) != len(items):
            return None  # a part given twice: which one the hash covers is not for us to pick
        try:
            sequence = parts["sequence"]["valueInteger"]
            previous = parts["previous"]["valueString"]
            digest = parts["hash"]["valueString"]
        except (KeyError, TypeError):
            return None
        if type(sequence) is not int or not isinstance(previous, str):
            return None
        if not isinstance(digest, str):
            return None
        covers = parts.get("covers")
        if covers is not None and (
            not isinstance(covers, dict) or covers.get("valueCode") != COVERS_LAST_UPDATED
        ):
            return None  # a coverage this code does not know: not a link it can check
        return ChainLink(sequence, previous, digest, covers is not None)
    return None


def verify_chain(
    events: Iterable[Mapping],
    *,
    previous_hash: str = GENESIS_HASH,
    start_sequence: int = 1,
    expected_head: tuple[int, str] | Callable[[], tuple[int, str] | None] | None = None,
) -> ChainReport:
    """Check a chain read back in sequence order; name the first break.

    ``previous_hash`` and ``start_sequence`` let a caller verify a window of a longer chain
    (the hash of the event before the window and the window's first sequence number).
    ``expected_head`` is the (sequence, hash) of the newest event as recorded elsewhere; with
    it, a chain cut short or with a rewritten tail is detected too. A callable is asked for
    it once the events are read (a head read again while they were: `audit.verify`).
    """
    expected_seq = start_sequence
    running = previous_hash
    checked = 0
    head = (start_sequence - 1, previous_hash)
    position = -1
    last_id = None
    for position, event in enumerate(events):
        reason = link_problem(event, expected_seq, running)
        if reason:
            return ChainReport(
                False, checked, head, expected_seq, event.get("id"), position, reason
            )
        link = chain_link(event)
        assert link is not None  # link_problem checked it
        running = link.hash
        head = (link.sequence, link.hash)
        last_id = event.get("id")
        checked += 1
        expected_seq += 1

    if callable(expected_head):
        expected_head = expected_head()
    if expected_head is not None and head != tuple(expected_head):
        head_seq = expected_head[0]
        if head[0] < head_seq:
            reason = f"the chain ends at sequence {head[0]} but the recorded head is {head_seq}"
            return ChainReport(False, checked, head, expected_seq, None, position + 1, reason)
        if head[0] > head_seq:
            reason = f"events follow the recorded head (sequence {head_seq})"
            index = head_seq - start_sequence + 1
            return ChainReport(False, checked, head, head_seq + 1, None, index, reason)
        reason = "the last event's hash differs from the recorded head (tail rewritten)"
        return ChainReport(False, checked, head, head[0], last_id, position, reason)
    return ChainReport(True, checked, head)


def link_problem(event: Mapping, expected_seq: int, previous_hash: str) -> str | None:
    """Why `event` is not the chain's link at `expected_seq` after `previous_hash`, or None."""
    link = chain_link(event)
    if link is None:
        return "the event carries no audit-chain link"
    if link.sequence != expected_seq:
        return (
            f"sequence {link.sequence} found where {expected_seq} was expected "
            "(an event was deleted, inserted or moved)"
        )
    if link.previous != previous_hash:
        return "the previous hash does not match the preceding event"
    covers = link.covers_last_updated
    if chain_hash(event, link.previous, link.sequence, covers_last_updated=covers) != link.hash:
        return "the event's content does not match its hash (modified)"
    return None

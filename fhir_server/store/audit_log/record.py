"""The narrow record of an AuditEvent in the log, and sealing a batch into the hash chain.

Pure functions: the engines call them under their lock, with the chain head they read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from fhir_server.audit.chain import (
    EXT_AUDIT_CHAIN,
    GENESIS_HASH,
    ChainLink,
    chain_link,
    link_extension,
    sealed_link,
)
from fhir_server.search.extract import RELATIVE_REFERENCE

AUDIT_EVENT = "AuditEvent"

# Sets meta (versionId 1, lastUpdated) on a sealed event and serializes it: the bytes served.
StampFn = Callable[[dict, int], bytes]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One sealed AuditEvent as the log keeps it."""

    sequence: int
    id: str
    recorded: int  # meta.lastUpdated, µs since the epoch
    hash: str
    patients: tuple[str, ...]  # ids of the Patients whose compartment holds the event
    agent: str  # the requestor's reference or identifier value
    action: str
    subtype: str  # space-separated subtype codes
    outcome: str
    labels: str  # space-separated meta.security codes (R18: whom the event is hidden from)
    body: bytes


def event_patients(event: Mapping) -> tuple[str, ...]:
    """The Patients whose compartment holds `event`: the AuditEvent `patient` parameter of
    the patient CompartmentDefinition, i.e. Patient references in agent.who and entity.what
    (the search index computes the same set: tests/unit/test_audit_log.py)."""
    found: list[str] = []
    for items, key in ((event.get("agent"), "who"), (event.get("entity"), "what")):
        for item in items if isinstance(items, list) else ():
            reference = item.get(key) if isinstance(item, dict) else None
            literal = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(literal, str) or not literal.startswith("Patient/"):
                continue  # the entities of a search event are mostly documents
            match = RELATIVE_REFERENCE.match(literal)
            if match and match.group(1) == "Patient" and match.group(2) not in found:
                found.append(match.group(2))
    return tuple(found)


def _requestor(event: Mapping) -> str:
    for agent in event.get("agent") or ():
        if isinstance(agent, dict) and agent.get("requestor") is True:
            who = agent.get("who") or {}
            if isinstance(who, dict):
                identifier = who.get("identifier")
                if isinstance(who.get("reference"), str):
                    return who["reference"]
                if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                    return identifier["value"]
    return ""


def _codes(items: object) -> str:
    if not isinstance(items, list):
        return ""
    return " ".join(
        item["code"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("code"), str)
    )


def record_of(
    sealed: Mapping, body: bytes, recorded: int, link: ChainLink | None = None
) -> LogRecord:
    """The narrow record of a sealed, stamped event (`body`: its bytes as served; `link`:
    its chain link, when the caller has it at hand)."""
    link = link or chain_link(sealed)
    if link is None:
        raise ValueError("an AuditEvent enters the log sealed")
    meta = sealed.get("meta")
    return LogRecord(
        sequence=link.sequence,
        id=str(sealed["id"]),
        recorded=recorded,
        hash=link.hash,
        patients=event_patients(sealed),
        agent=_requestor(sealed),
        action=str(sealed.get("action") or ""),
        subtype=_codes(sealed.get("subtype")),
        outcome=str(sealed.get("outcome") or ""),
        labels=_codes(meta.get("security")) if isinstance(meta, dict) else "",
        body=body,
    )


def seal_batch(
    events: Sequence[dict], head: tuple[int, str] | None, recorded: int, stamp: StampFn
) -> list[LogRecord]:
    """`events` sealed after `head` in order, stamped (meta.versionId 1, meta.lastUpdated
    `recorded`, which the seal covers: it is served) and turned into log records."""
    sequence, previous = head or (0, GENESIS_HASH)
    last_updated = stamped_last_updated(stamp, recorded)
    records: list[LogRecord] = []
    for event in events:
        sequence += 1
        sealed, link = sealed_link(event, previous, sequence, last_updated=last_updated)
        records.append(record_of(sealed, stamp(sealed, recorded), recorded, link))
        previous = link.hash
    return records


def stamped_last_updated(stamp: StampFn, recorded: int) -> str:
    """The meta.lastUpdated `stamp` writes for `recorded` (one home for its spelling: the
    store's stamp), to be sealed with the events before they are stamped."""
    probe: dict = {"resourceType": AUDIT_EVENT, "id": "probe"}
    stamp(probe, recorded)
    return probe["meta"]["lastUpdated"]


# The narrow record's columns derived from the sealed body, which a search, a read or the
# patients' trace view go by instead of the body (`record_problem`).
_DERIVED_COLUMNS = ("sequence", "id", "hash", "agent", "action", "subtype", "outcome", "labels")


def record_problem(record: LogRecord, event: Mapping) -> str | None:
    """Why `record`'s narrow columns are not what its sealed body (`event`, parsed) says, or
    None. The chain covers the body only: a column edited behind the server's back would
    change what a read, `_history` or a search answers without breaking the chain."""
    try:
        expected = record_of(event, record.body, record.recorded)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"its body is not a sealed AuditEvent ({exc})"
    if not _sealed_link_only(event):
        return "its audit-chain extension is not the one the server writes"
    if orjson.dumps(event) != record.body:
        # The chain hashes the parsed body, but a read serves these bytes: respelled, they
        # could say otherwise to a client (the first of two duplicate keys, say).
        return (
            "its body is not the bytes the server writes for the event it parses to "
            "(respelled: duplicate keys, spacing or escapes)"
        )
    for column in _DERIVED_COLUMNS:
        stored, derived = getattr(record, column), getattr(expected, column)
        if not _same(stored, derived):
            return f"its {column} column ({stored!r}) is not its body's ({derived!r})"
    meta = event.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    if version != "1":  # outside the hash too, and a read's ETag says W/"1"
        return f"its meta.versionId ({version!r}) is not '1', the log's one version"
    last_updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    recorded = record.recorded  # µs; the body keeps milliseconds
    if not is_int(recorded) or _epoch_ms(last_updated) != recorded // 1000:
        return (
            f"its recorded column ({record.recorded} µs since the epoch) is not its body's "
            f"meta.lastUpdated ({last_updated})"
        )
    return None


def _sealed_link_only(event: Mapping) -> bool:
    """Whether the event's audit-chain extension is the one `seal` writes, once, last: the
    hash leaves out every audit-chain extension, and the link is read from the first one,
    so anything else in them would be served unsealed."""
    link = chain_link(event)
    extensions = event.get("extension")
    if link is None or not isinstance(extensions, list):
        return False
    chained = [e for e in extensions if isinstance(e, dict) and e.get("url") == EXT_AUDIT_CHAIN]
    return chained == extensions[-1:] == [link_extension(link)]


def _same(stored: object, derived: object) -> bool:
    """Equal and of the same kind: 3.0 equals 3, but a `_history` cursor made from a
    sequence 3.0 is refused (MongoDB keeps any number; bson's Int64 is an int)."""
    if isinstance(derived, int):
        return is_int(stored) and stored == derived
    return type(stored) is type(derived) and stored == derived


def is_int(value: object) -> bool:
    """An integer, not a bool nor a float of integral value."""
    return isinstance(value, int) and not isinstance(value, bool)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(value: object) -> int | None:
    """Milliseconds since the epoch of a FHIR instant, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def keys_problem(keys: Iterable[str], event: Mapping) -> str | None:
    """Why the patient keys stored for an event (what the patients' trace view finds it by)
    are not the Patients its sealed body names, or None."""
    keys = list(keys)
    if not all(isinstance(key, str) for key in keys):
        return f"its patient keys {keys!r} are not all Patient ids"
    stored, named = sorted(set(keys)), sorted(event_patients(event))
    if stored != named:
        return f"its patient keys {stored} are not the Patients its body names {named}"
    return None


def imported(event: Mapping, body: bytes, recorded: int) -> LogRecord:
    """The record of an event sealed and stored before the log existed (migration);
    `event`: `body` parsed."""
    return record_of(event, body, recorded)

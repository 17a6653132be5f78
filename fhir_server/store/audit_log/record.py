"""The narrow record of an AuditEvent in the log, and sealing a batch into the hash chain.

Pure functions: the engines call them under their lock, with the chain head they read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fhir_server.audit.chain import GENESIS_HASH, ChainLink, chain_link, sealed_link
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
    `recorded`) and turned into log records."""
    sequence, previous = head or (0, GENESIS_HASH)
    records: list[LogRecord] = []
    for event in events:
        sequence += 1
        sealed, link = sealed_link(event, previous, sequence)
        records.append(record_of(sealed, stamp(sealed, recorded), recorded, link))
        previous = link.hash
    return records


def imported(event: Mapping, body: bytes, recorded: int) -> LogRecord:
    """The record of an event sealed and stored before the log existed (migration);
    `event`: `body` parsed."""
    return record_of(event, body, recorded)

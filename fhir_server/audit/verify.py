"""What an auditor checks of the audit log (`fhir-server audit verify`, R16, issue #21).

The hash chain covers each event's sealed body; reads, `_history` and the patients' trace
view go by the narrow record, the patient keys and the stored bytes; so both are checked,
and the first problem in chain order is named. A head printed by one run and kept apart
from the server (an anchor) lets a later run show that nothing up to it was rewritten, even
by someone who recomputed the whole chain with the files in hand.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping

import orjson

from fhir_server.audit.chain import GENESIS_HASH, ChainReport, link_problem, verify_chain
from fhir_server.store.audit_log.record import (
    LogRecord,
    is_int,
    keys_problem,
    record_problem,
)


def verify_store(store, anchors: Mapping[int, str] | None = None) -> ChainReport:
    """What an auditor checks: the log file's own integrity (SQLite); the chain, from its
    first event, against the head the log recorded with its last commit (a cut tail shows
    against it); and each event's narrow record, patient keys and stored bytes against its
    sealed body, since reads, searches and the patients' trace view go by them (an edited
    column or a removed key would hide an event from its patient without breaking the
    chain). The first problem in chain order is named.

    `anchors`: sequence -> chain hash, as earlier runs printed their head and the auditor
    kept them apart from the server. The chain can be recomputed by whoever holds the files
    (the head is stored with it); an anchor cannot, so an event rewritten at or before an
    anchored sequence is named there."""
    anchored = dict(anchors or {})
    log = store.audit_log
    broken_file = log.integrity_problem()
    if broken_file:
        return ChainReport(False, 0, (0, GENESIS_HASH), None, None, 0, broken_file)
    recorded = log.head()  # the head as last read
    # A head of another kind (MongoDB keeps any number: a seq 4.0 equals the chain's 4) would
    # have the next commit seal its event as sequence 5.0.
    malformed = recorded is not None and not _is_head(recorded)
    # Keys are read up to the head read first (every key, with a malformed head), and on
    # when the scan meets an event beyond it (`_read_on`). On SQLite the open cursor holds
    # the reader's snapshot, which the scan's first page then shares.
    keys_to: int | None = None if malformed else (recorded[0] if recorded else 0)
    keys = _KeysBySequence(log.patient_keys(up_to=keys_to))
    found: list[ChainReport] = []
    last_good: tuple[int, str] = (0, GENESIS_HASH)

    def events() -> Iterator[dict]:
        """The events to the chain, until the first one whose record, keys or body is not
        right: `verify_chain` stops at its own first break, so reaching it means the chain
        held up to there."""
        nonlocal last_good, recorded, keys_to
        for position, record in enumerate(log.scan()):
            while keys_to is not None and is_int(record.sequence) and record.sequence > keys_to:
                recorded, keys_to = _read_on(log, recorded, keys_to, keys)
            event, problem = _parsed(record.body)
            if event is not None:
                problem = (
                    keys.orphan_before(record.sequence)
                    or record_problem(record, event)
                    or keys_problem(keys.of(record.sequence), event)
                    or _anchor_problem(anchored, record)
                )
            if event is None or problem:
                found.append(_named(position, record, event, problem or "", last_good))
                return
            last_good = (record.sequence, record.hash)
            yield event

    try:
        # Compared with the head as last read: an append during the scan may have moved it.
        chain = verify_chain(events(), expected_head=lambda: None if malformed else recorded)
    except (KeyError, TypeError, ValueError) as exc:
        # A record the engine cannot even read (a body stored as text, a field missing): a
        # read of it fails too.
        reason = f"the record after sequence {last_good[0]} cannot be read ({exc!r})"
        return ChainReport(False, last_good[0], last_good, last_good[0] + 1, None, None, reason)
    if found:
        return found[0]
    # Without a head, the next commit would seal sequence 1 again.
    if chain.ok and (malformed or (recorded is None and chain.checked)):
        reason = (
            f"the recorded head {recorded!r} is not a sequence number and a hash"
            if malformed
            else f"the log holds {chain.checked} events but no recorded head"
        )
        return ChainReport(False, chain.checked, chain.head, None, None, chain.checked, reason)
    beyond = [sequence for sequence in anchored if sequence > chain.head[0]]
    if chain.ok and beyond:
        reason = (
            f"the chain ends at sequence {chain.head[0]}, before the anchored sequence "
            f"{min(beyond)}: events were removed from its end"
        )
        return ChainReport(False, chain.checked, chain.head, min(beyond), None, None, reason)
    orphan = keys.orphan_before(None) if chain.ok else None
    if chain.ok and not orphan and keys_to is not None:
        orphan = _orphan_beyond(log, keys_to)
    if orphan:
        return ChainReport(False, chain.checked, chain.head, None, None, chain.checked, orphan)
    return chain


def _read_on(
    log, recorded: tuple[int, str] | None, keys_to: int, keys: _KeysBySequence
) -> tuple[tuple[int, str] | None, int | None]:
    """The scan met an event beyond the keys read, which go up to the head as read before:
    the head read again. On an engine whose reads share no snapshot (MongoDB) the server
    may have appended since; the head then moved on, and the keys up to it are read (after
    it: they were committed with the events it covers). A head that did not move leaves the
    event beyond it, named by the comparison with the head; the rest of the keys are read
    to be checked all the same. Returns the head as last read and how far keys are read
    (None: all of them)."""
    newer = log.head()
    if newer is not None and _is_head(newer) and newer[0] > keys_to:
        keys.extend(log.patient_keys(after=keys_to, up_to=newer[0]))
        return (newer[0], newer[1]), newer[0]
    keys.extend(log.patient_keys(after=keys_to))
    return recorded, None


def _orphan_beyond(log, keys_to: int) -> str | None:
    """A key after those read, beyond the head read after it: no event was committed
    there. (Keys first: an event appended in between is then below the head read.)"""
    later = list(log.patient_keys(after=keys_to))
    newest = log.head()
    covered = max(keys_to, newest[0]) if newest is not None and _is_head(newest) else keys_to
    for sequence, patient in later:
        # A sequence that is no number (SQLite keeps a text or a blob as it is) sorts after
        # every number and names no event.
        if not _is_number(sequence) or sequence > covered:
            return _orphan(sequence, patient)
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _orphan(sequence: int, patient: str) -> str:
    return f"a patient key (Patient {patient}) names sequence {sequence}, which holds no event"


def _is_head(head: tuple) -> bool:
    return is_int(head[0]) and isinstance(head[1], str)


def _anchor_problem(anchored: Mapping[int, str], record: LogRecord) -> str | None:
    expected = anchored.get(record.sequence)
    if expected is None or expected == record.hash:
        return None
    return (
        f"its hash is not the one anchored for sequence {record.sequence} ({expected}): "
        "the chain was rewritten up to here"
    )


def _parsed(body: bytes) -> tuple[dict | None, str | None]:
    """The event a body holds, or why it holds none (a read serves the bytes all the same)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return None, f"its body is not JSON ({exc})"
    if not isinstance(event, dict):
        return None, "its body is not a JSON object"
    return event, None


def _named(
    position: int, record: LogRecord, event: dict | None, problem: str, last_good: tuple[int, str]
) -> ChainReport:
    """The report of the first event found wrong: the chain's own break there if it has one
    (the stronger finding), else `problem`."""
    broken: str | None = None
    if event is not None:
        # Too malformed to tell (a non-object among its extensions): `problem` says.
        with contextlib.suppress(TypeError, AttributeError, ValueError):
            broken = link_problem(event, last_good[0] + 1, last_good[1])
    if event is not None and broken:
        return ChainReport(
            False, position, last_good, last_good[0] + 1, event.get("id"), position, broken
        )
    return ChainReport(False, position, last_good, record.sequence, record.id, position, problem)


class _KeysBySequence:
    """The log's patient keys, read in step with its events (both by sequence)."""

    def __init__(self, keys: Iterator[tuple[int, str]]) -> None:
        self._keys = keys
        self._next: tuple[int, str] | None = next(keys, None)

    def extend(self, more: Iterator[tuple[int, str]]) -> None:
        """Keys of later sequences, read after these (`_head_moved`)."""
        rest = self._keys
        self._keys = itertools.chain(rest, more)
        if self._next is None:
            self._next = next(self._keys, None)

    def orphan_before(self, sequence: int | None) -> str | None:
        """A key naming a sequence below `sequence` (None: any left) that holds no event."""
        if self._next is not None and (
            sequence is None or not _is_number(self._next[0]) or self._next[0] < sequence
        ):
            return _orphan(self._next[0], self._next[1])
        return None

    def of(self, sequence: int) -> list[str]:
        """The keys of `sequence`, consumed."""
        patients = []
        while self._next is not None and self._next[0] == sequence:
            patients.append(self._next[1])
            self._next = next(self._keys, None)
        return patients

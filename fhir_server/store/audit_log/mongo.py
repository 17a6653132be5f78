"""The MongoDB audit log: collections of its own in the resource store's database.

`audit_log` holds one narrow document per event, `_id` = its chain sequence, with a unique
index on the event id and a multikey index (patients, _id) for the patient's trace view;
nothing else is indexed. `audit_log_head` holds one document, the chain's head (sequence,
hash) as of the last commit: a tail cut from `audit_log` shows against it.

MongoDB has no file lock to take turns at: the head document is the serialization point.
A commit is one transaction that reads the head, seals its batch after it, moves the head
(on the condition that it is still where it was read) and inserts the batch. Of two
processes committing at once, MongoDB aborts one with a write conflict on the head (a
`TransientTransactionError`); it reads the new head and seals its batch again, so the chain
never forks. Within a process the appends queued while a batch commits share the next
commit (`GroupAppender`), so the conflicts are between processes only.

Durability: the transaction commits with write concern majority and journaling, as the
resource store's writes do; `append` returns after that commit.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from bson import Binary
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server.store.audit_log.committer import GroupAppender, PendingAppend
from fhir_server.store.audit_log.record import LogRecord, StampFn, seal_batch

EVENTS = "audit_log"
HEAD = "audit_log_head"
_HEAD_ID = "head"

# Events imported per transaction (a migration may move millions; a transaction must stay
# well under MongoDB's size and lifetime limits). The import is idempotent, so a crash
# between two chunks is repaired by the next open.
IMPORT_CHUNK = 1_000
# How long a commit is retried on write conflicts before its error reaches the callers
# (pymongo's `with_transaction` allows 120 s; a request waits on this one).
RETRY_SECONDS = 30.0
_DUPLICATE_KEY = 11000

_TRANSACTION = {
    "read_concern": ReadConcern("snapshot"),
    "write_concern": WriteConcern("majority", j=True),
}

T = TypeVar("T")

# The events collection's indexes as `index_information` describes them, less bookkeeping.
_INDEXES: dict[str, dict] = {
    "_id_": {"key": [("_id", ASCENDING)]},
    "id": {"key": [("id", ASCENDING)], "unique": True},
    "patient": {"key": [("patients", ASCENDING), ("_id", ASCENDING)]},
}
_INDEX_BOOKKEEPING = {"v", "ns", "background"}


# Options whose False is their default: pymongo sends `unique: False` with the patient
# index (`IndexModel(..., unique=False)`), and a server keeps the option as it was given.
_FALSE_BY_DEFAULT = frozenset({"unique", "sparse", "hidden"})


def _normal(spec: dict) -> dict:
    """An index description with its key directions as ints (a server may say 1.0) and
    without the options given as their default (False)."""
    key = [
        (field, int(order) if isinstance(order, float) else order)
        for field, order in spec.get("key", [])
    ]
    kept = {
        option: value
        for option, value in spec.items()
        if not (option in _FALSE_BY_DEFAULT and value is False)
    }
    return {**kept, "key": key}


def _document(record: LogRecord) -> dict:
    return {
        "_id": record.sequence,
        "id": record.id,
        "recorded": record.recorded,
        "hash": record.hash,
        "agent": record.agent,
        "action": record.action,
        "subtype": record.subtype,
        "outcome": record.outcome,
        "labels": record.labels,
        "patients": list(record.patients),
        "body": Binary(record.body),
    }


def _record(doc: dict) -> LogRecord:
    return LogRecord(
        sequence=doc["_id"],
        id=doc["id"],
        recorded=doc["recorded"],
        hash=doc["hash"],
        patients=tuple(doc.get("patients") or ()),
        agent=doc["agent"],
        action=doc["action"],
        subtype=doc["subtype"],
        outcome=doc["outcome"],
        labels=doc["labels"],
        body=bytes(doc["body"]),
    )


def _is_duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = (exc.details or {}).get("writeErrors") or ()
        return any(error.get("code") == _DUPLICATE_KEY for error in errors)
    return getattr(exc, "code", None) == _DUPLICATE_KEY


def _is_transient(exc: PyMongoError) -> bool:
    return exc.has_error_label("TransientTransactionError")


class _HeadMoved(PyMongoError):
    """The head is not where this transaction read it: another commit got there first."""

    def __init__(self) -> None:
        super().__init__("the audit log's head moved", error_labels=["TransientTransactionError"])


class MongoAuditLog:
    name = "mongodb"

    def __init__(self, database: Any, *, stamp: StampFn, clock: Callable[[], int]) -> None:
        """`database`: the resource store's (its write and read concerns are majority);
        sessions come from its client."""
        self._db = database
        self._client = database.client
        self._stamp = stamp
        self._clock = clock
        self._events = database[EVENTS]
        self._head_collection = database[HEAD]
        self._events.create_indexes(
            [
                IndexModel(spec["key"], name=name, unique=spec.get("unique", False))
                for name, spec in _INDEXES.items()
                if name != "_id_"  # MongoDB's own
            ]
        )
        self._appender = GroupAppender(self._commit)

    # -- appending --------------------------------------------------------------------------

    def append(self, events: Sequence[dict], *, skip_known: bool = False) -> list[LogRecord]:
        if not events:
            return []
        return self._appender.append(events, skip_known)

    def _commit(self, batch: list[PendingAppend]) -> None:
        """The batch in one transaction (module docstring). A duplicate key means an event
        id the log already holds (a replay racing the writer that staged it, or a caller's
        mistake): the batch is sealed again with every id checked, and only the appends
        whose ids are held and not to be skipped fail. A duplicate key again means the head
        is behind the events it should cover (the log was edited): the error reaches every
        caller and nothing is appended, until `audit verify` has been looked at."""
        check_all = False
        while True:
            try:
                outcome = self._in_transaction(
                    functools.partial(self._seal_and_insert, batch=batch, check_all=check_all)
                )
                break
            except PyMongoError as exc:
                if check_all or not _is_duplicate(exc):
                    raise
                check_all = True
        for pending, result in zip(batch, outcome, strict=True):
            if isinstance(result, BaseException):
                pending.error = result
            else:
                pending.records = result

    def _seal_and_insert(
        self, session: Any, batch: list[PendingAppend], check_all: bool
    ) -> list[list[LogRecord] | BaseException]:
        head = self._read_head(session)
        asked = [
            str(event.get("id"))
            for pending in batch
            if pending.skip_known or check_all
            for event in pending.events
        ]
        held = self._known(asked, session) if asked else set()
        recorded = self._clock()
        outcome: list[list[LogRecord] | BaseException] = []
        sealed: list[LogRecord] = []
        for pending in batch:
            events = pending.events
            if pending.skip_known:
                events = [event for event in events if str(event.get("id")) not in held]
            else:
                taken = [str(e.get("id")) for e in events if str(e.get("id")) in held]
                if taken:
                    outcome.append(
                        DuplicateKeyError(f"AuditEvent {taken[0]} is already in the log", 11000)
                    )
                    continue
            records = seal_batch(events, head, recorded, self._stamp)
            if records:
                head = (records[-1].sequence, records[-1].hash)
            sealed.extend(records)
            outcome.append(records)
        if sealed:
            # The head first: a concurrent commit conflicts here, before any insert.
            self._move_head(session, sealed[0].sequence - 1, (sealed[-1].sequence, sealed[-1].hash))
            self._events.insert_many(
                [_document(record) for record in sealed], ordered=True, session=session
            )
        return outcome

    def _move_head(self, session: Any, read: int, head: tuple[int, str]) -> None:
        """Set the head to `head` if it is still at sequence `read` (0: no head yet)."""
        document = {"seq": head[0], "hash": head[1]}
        if read == 0:
            self._head_collection.insert_one({"_id": _HEAD_ID, **document}, session=session)
            return
        moved = self._head_collection.update_one(
            {"_id": _HEAD_ID, "seq": read}, {"$set": document}, session=session
        )
        if moved.matched_count != 1:
            raise _HeadMoved()

    def import_sealed(self, records: Sequence[LogRecord]) -> int:
        stored = 0
        for start in range(0, len(records), IMPORT_CHUNK):
            chunk = records[start : start + IMPORT_CHUNK]
            stored += self._in_transaction(self._importer(chunk))
        return stored

    def _importer(self, chunk: Sequence[LogRecord]) -> Callable[[Any], int]:
        def work(session: Any) -> int:
            return self._import(session, chunk)

        return work

    def _import(self, session: Any, records: Sequence[LogRecord]) -> int:
        held = self._known([r.id for r in records], session)
        fresh = [r for r in records if r.id not in held]
        if not fresh:
            return 0
        self._events.insert_many([_document(r) for r in fresh], ordered=True, session=session)
        newest = max(fresh, key=lambda r: r.sequence)
        head = self._read_head(session)
        if head is None or head[0] < newest.sequence:
            self._head_collection.replace_one(
                {"_id": _HEAD_ID},
                {"_id": _HEAD_ID, "seq": newest.sequence, "hash": newest.hash},
                upsert=True,
                session=session,
            )
        return len(fresh)

    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        """`work(session)` in one transaction, run again on a transient error (a write
        conflict, a failover) until it commits or `RETRY_SECONDS` have passed."""
        deadline = time.monotonic() + RETRY_SECONDS
        attempt = 0
        while True:
            try:
                with self._client.start_session() as session:
                    session.start_transaction(**_TRANSACTION)
                    try:
                        result = work(session)
                        self._commit_transaction(session, deadline)
                    except BaseException:
                        if session.in_transaction:
                            session.abort_transaction()
                        raise
                    return result
            except PyMongoError as exc:
                if not _is_transient(exc) or time.monotonic() >= deadline:
                    raise
            attempt += 1
            # Jitter, so that two processes that conflicted do not meet again at once.
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))

    @staticmethod
    def _commit_transaction(session: Any, deadline: float) -> None:
        """Commit; an unknown outcome (a lost connection) is committed again, which MongoDB
        answers for the same transaction without applying it twice."""
        while True:
            try:
                session.commit_transaction()
                return
            except PyMongoError as exc:
                if (
                    not exc.has_error_label("UnknownTransactionCommitResult")
                    or time.monotonic() >= deadline
                ):
                    raise

    # -- reading ----------------------------------------------------------------------------

    def _read_head(self, session: Any = None) -> tuple[int, str] | None:
        """A field missing (the document edited) reads as None: `audit verify` names the
        head as malformed, and a commit refuses to seal after it."""
        doc = self._head_collection.find_one({"_id": _HEAD_ID}, session=session)
        return (doc.get("seq"), doc.get("hash")) if doc else None

    def head(self) -> tuple[int, str] | None:
        """The head as recorded with the last commit (not read from the events themselves:
        `audit verify` compares the chain against it)."""
        return self._read_head()

    def _known(self, event_ids: list[str], session: Any = None) -> set[str]:
        held: set[str] = set()
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            held.update(
                doc["id"]
                for doc in self._events.find(
                    {"id": {"$in": chunk}}, {"_id": 0, "id": 1}, session=session
                )
            )
        return held

    def known(self, event_ids: Iterable[str]) -> set[str]:
        return self._known(list(event_ids))

    def get(self, event_id: str) -> LogRecord | None:
        """The event of id `event_id`, byte for byte: a collation given to the collection
        behind the server's back (case-insensitive) would find another's (FHIR ids are
        case-sensitive), as SQLite's `get` guards against too."""
        doc = self._events.find_one({"id": event_id})
        return _record(doc) if doc and doc.get("id") == event_id else None

    def scan(self, patients: Sequence[str] | None = None) -> Iterator[LogRecord]:
        if patients is None:
            cursor = self._events.find({}).sort("_id", ASCENDING)
        else:
            cursor = (
                self._events.find({"patients": {"$in": list(patients)}})
                .sort("_id", ASCENDING)
                .hint("patient")
            )
        for doc in cursor:
            yield _record(doc)

    def patient_keys(
        self, *, after: int | None = None, up_to: int | None = None
    ) -> Iterator[tuple[int, str]]:
        bounds = {
            operator: bound
            for operator, bound in (("$gt", after), ("$lte", up_to))
            if bound is not None
        }
        criteria = {"_id": bounds} if bounds else {}
        # The multikey index ("patient") is built from each document's `patients`; a value
        # that is not an array is a key of its own, as a query on the field matches it.
        for doc in self._events.find(criteria, {"patients": 1}).sort("_id", ASCENDING):
            patients = doc.get("patients", [])
            for patient in patients if isinstance(patients, list) else [patients]:
                yield doc["_id"], patient

    def newest_first(
        self, *, before: int | None, since: int | None, event_id: str | None, limit: int
    ) -> list[LogRecord]:
        criteria: dict = {}
        if before is not None:
            criteria["_id"] = {"$lt": before}
        if since is not None:
            criteria["recorded"] = {"$gte": since}
        if event_id is not None:
            criteria["id"] = event_id
        cursor = self._events.find(criteria).sort("_id", DESCENDING).limit(limit)
        return [_record(doc) for doc in cursor if event_id in (None, doc.get("id"))]  # as `get`

    def integrity_problem(self) -> str | None:
        """MongoDB maintains its indexes itself, but their definitions can be changed through
        its API: the patient index rebuilt with a `partialFilterExpression`, which the trace
        view's hinted scan would then read, hides the events it leaves out from their
        patients; a collation, or the id index no longer unique, changes what a read finds.
        So they must be exactly those the server creates."""
        collection = self._collection_problem()
        if collection:
            return collection
        found = {
            name: {k: v for k, v in spec.items() if k not in _INDEX_BOOKKEEPING}
            for name, spec in self._events.index_information().items()
        }
        for name in sorted(found.keys() | _INDEXES.keys()):
            if name not in _INDEXES:
                return f"the events collection has an index {name} the server never creates"
            if name not in found:
                return f"the events collection lacks its index {name}"
            if _normal(found[name]) != _INDEXES[name]:
                return f"the events collection's index {name} is not the one the server creates ({found[name]})"
        return None

    def _collection_problem(self) -> str | None:
        """The events collection must be the plain collection the server's first index
        creates, with no options: a `validator` (collMod) refuses the events it names, so a
        write's stay in the outbox, out of every trail, while those the log holds verify; a
        view of that name, a capped or a time-series collection, a collation, read or keep
        other events than those appended. (mongomock lists no collections: nothing to check.)"""
        try:
            described = list(self._db.list_collections(filter={"name": EVENTS}))
        except NotImplementedError:
            return None
        if not described:
            return None  # no event appended yet: the first commit creates it
        kind, options = described[0].get("type", "collection"), described[0].get("options") or {}
        if kind != "collection" or options:
            return (
                f"the events collection is not the plain collection the server creates "
                f"(type {kind!r}, options {sorted(options)})"
            )
        return None

    def close(self) -> None:
        """Refuses later appends; the client is the resource store's, closed with it."""
        self._appender.stop()

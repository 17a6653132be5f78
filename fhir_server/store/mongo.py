"""The production engine: MongoDB through pymongo, on a replica set.

Layout (README, "Running on MongoDB"): one collection per resource type with `_id` = the
logical id, the JSON bytes as served in `body`, the typed index entries embedded, and the
shard key `pk` (the patient whose compartment holds the resource, "" for none) so that a
patient's documents sit together when collections are sharded on `{pk: 1, _id: 1}`. Every
version is also in `<Type>_history`. Writes run in multi-document transactions with
majority write concern; nothing here assumes a single shard (reads by id are routed by the
`mongos` to every shard when the shard key is unknown).

AuditEvents are not resources of this store: they live in the audit log's own collections
(`store.audit_log.mongo`). A write's events are staged in `audit_outbox` inside the write's
transaction and cleared once the log holds them (`store.with_audit_log`); the AuditEvents
earlier versions kept in the `AuditEvent` collections are handed over once, on open.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import orjson
from bson import Binary, ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, ReturnDocument
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server.audit.chain import move_order
from fhir_server.errors import FhirError, error
from fhir_server.search.extract import sort_values
from fhir_server.search.query import Include, SearchQuery
from fhir_server.store import mongo_facts, mongo_index, mongo_search
from fhir_server.store.base import (
    PATIENTS_EPOCH,
    FactsOf,
    HistoryEntry,
    HistoryPage,
    RecordMoved,
    StoredResource,
    VersionConflict,
    VersionWrite,
    decode_history_cursor,
    encode_history_cursor,
    history_int,
    invalid_cursor,
)
from fhir_server.store.page import SearchPage

logger = logging.getLogger(__name__)

_PROJECTION = {"v": 1, "lu": 1, "del": 1, "body": 1}
# A write's AuditEvents, staged in the write's transaction until the audit log holds them
# (store.with_audit_log). ObjectIds made in one process increase: `_id` order is staging order.
AUDIT_OUTBOX = "audit_outbox"
# Where earlier versions kept AuditEvents: the resource collections and this chain head.
AUDIT_EVENT = "AuditEvent"
LEGACY_AUDIT_CHAIN = "audit_chain"
RECORD_EPOCH = "record_epoch"
NOTIFIED_DAY = "notified_day"
# One document per conditional-create criteria (`MongoTransaction.claim`).
CONDITIONS = "conditions"


def _stored(resource_type: str, resource_id: str, doc: dict) -> StoredResource:
    return StoredResource(
        resource_type, resource_id, doc["v"], doc["lu"], bool(doc["del"]), bytes(doc["body"])
    )


def _before(resource_type: str, position: list) -> dict:
    """Entries of `resource_type` that sort after `position` in (lu, type, _id) descending order."""
    lu, position_type, position_id = position
    if resource_type < position_type:
        return {"lu": {"$lte": lu}}
    if resource_type > position_type:
        return {"lu": {"$lt": lu}}
    return {"$or": [{"lu": {"$lt": lu}}, {"lu": lu, "_id": {"$lt": position_id}}]}


def history_collection(resource_type: str) -> str:
    return f"{resource_type}_history"


class _InSession:
    """The database as `mongo_search` reads it, every read inside one session."""

    def __init__(self, db, session) -> None:
        self._db = db
        self._session = session

    def __getitem__(self, name: str) -> _SessionCollection:
        return _SessionCollection(self._db[name], self._session)

    def list_collection_names(self) -> list[str]:
        return self._db.list_collection_names(session=self._session)


class _SessionCollection:
    def __init__(self, collection, session) -> None:
        self._collection = collection
        self._session = session

    def find(self, *args, **kwargs):
        return self._collection.find(*args, session=self._session, **kwargs)

    def count_documents(self, *args, **kwargs) -> int:
        return self._collection.count_documents(*args, session=self._session, **kwargs)


class MongoTransaction:
    def __init__(self, db, session) -> None:
        self._db = db
        self._session = session
        # The record epochs read (`facts_epoch`) and bumped by this transaction.
        self._held: dict[str, int] = {}
        self._bumped: dict[str, int] = {}

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        doc = self._db[resource_type].find_one(
            {"_id": resource_id}, _PROJECTION, session=self._session
        )
        return _stored(resource_type, resource_id, doc) if doc else None

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        """In the transaction's snapshot, with its own writes."""
        return mongo_search.search(
            _InSession(self._db, self._session),
            query,
            cursor_key=cursor_key,
            cursor_binding=cursor_binding,
        )

    def claim(self, key: str) -> None:
        """Write the key's document: MongoDB aborts one of two transactions that write the
        same document (a write conflict, a `TransientTransactionError`), on a replica set
        and a sharded cluster alike, so two conditional creates cannot both commit unseen."""
        try:
            self._db[CONDITIONS].update_one(
                {"_id": key},
                {"$inc": {"claims": 1}, "$set": {"pk": ""}},
                upsert=True,
                session=self._session,
            )
        except DuplicateKeyError as exc:
            raise VersionConflict("condition", key) from exc

    def stage_audit(self, events: Sequence[dict]) -> list[object]:
        """Stage a write's AuditEvents in its transaction (`store.with_audit_log`): one
        document each in the outbox, no index; their keys, in staging order."""
        keys: list[object] = [ObjectId() for _ in events]
        documents = [
            {"_id": key, "body": Binary(orjson.dumps(event)), "pk": ""}
            for key, event in zip(keys, events, strict=True)
        ]
        if documents:
            self._db[AUDIT_OUTBOX].insert_many(documents, ordered=True, session=self._session)
        return keys

    def clear_outbox(self, keys: Sequence[object]) -> None:
        if keys:
            self._db[AUDIT_OUTBOX].delete_many({"_id": {"$in": list(keys)}}, session=self._session)

    def notified_day(self, patient_id: str, practitioner_id: str) -> str | None:
        doc = self._db[NOTIFIED_DAY].find_one(
            {"_id": f"{patient_id}|{practitioner_id}"}, session=self._session
        )
        return doc["day"] if doc else None

    def set_notified_day(self, patient_id: str, practitioner_id: str, day: str) -> None:
        self._db[NOTIFIED_DAY].replace_one(
            {"_id": f"{patient_id}|{practitioner_id}"},
            {"_id": f"{patient_id}|{practitioner_id}", "day": day, "pk": patient_id},
            upsert=True,
            session=self._session,
        )

    def bump_record_epoch(self, patient_id: str) -> None:
        self._db[RECORD_EPOCH].update_one(
            {"_id": patient_id},
            {"$inc": {"epoch": 1}, "$set": {"pk": patient_id}},
            upsert=True,
            session=self._session,
        )
        self._bumped[patient_id] = self._bumped.get(patient_id, 0) + 1

    def facts_epoch(self, patient_id: str) -> int:
        """Read in the session and written (a `held` counter beside the epoch): transactions
        overlap, and a read alone would not conflict with a block committing between it
        and this commit (write skew). Written, the record's epoch document makes MongoDB
        abort one of the two (a write conflict, `TransientTransactionError`), whichever
        came second: a block committed since this transaction's snapshot, or one bumping
        the epoch before this one commits."""
        if patient_id not in self._held:
            try:
                doc = self._db[RECORD_EPOCH].find_one_and_update(
                    {"_id": patient_id},
                    {"$inc": {"held": 1}, "$set": {"pk": patient_id}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                    session=self._session,
                )
            except DuplicateKeyError as exc:  # a concurrent upsert of the same record
                raise RecordMoved(patient_id) from exc
            except OperationFailure as exc:
                if exc.has_error_label("TransientTransactionError"):
                    # A write conflict on the epoch: the record's facts changed since this
                    # transaction's snapshot, or are being changed: judged again.
                    raise RecordMoved(patient_id) from exc
                raise
            epoch = (doc or {}).get("epoch", 0)
            self._held[patient_id] = epoch - self._bumped.get(patient_id, 0)
        return self._held[patient_id]

    def confirm_facts_epoch(self, patient_id: str, epoch: int) -> None:
        """`RecordMoved` unless `facts_epoch(patient_id)` is `epoch`: raised here, so that the
        gate, which decides on facts and never imports the store, can confirm a decision."""
        if self.facts_epoch(patient_id) != epoch:
            raise RecordMoved(patient_id)

    def purge(self, resource_type: str, resource_id: str) -> None:
        if resource_type == AUDIT_EVENT:
            raise ValueError("AuditEvents are never purged")
        self._db[resource_type].delete_one({"_id": resource_id}, session=self._session)
        self._db[history_collection(resource_type)].delete_many(
            {"rid": resource_id}, session=self._session
        )
        if resource_type == "Patient":  # after the change it announces (`write`)
            self.bump_record_epoch(resource_id)
            self.bump_record_epoch(PATIENTS_EPOCH)

    def write(self, version: VersionWrite) -> None:
        resource = version.resource
        collection = self._db[resource.resource_type]
        document = {
            "_id": resource.id,
            "v": resource.version,
            "lu": resource.last_updated,
            "del": resource.deleted,
            "body": Binary(resource.body),
            "pk": version.shard_key,
        }
        if version.index is not None and not resource.deleted:
            sorting = version.sort_values
            if sorting is None:
                sorting = sort_values(version.index)
            document.update(mongo_index.index_document(version.index, sorting))
            if version.facts is not None:  # audit.entity_facts, of this very version
                document["facts"] = Binary(version.facts)
        try:
            if version.expected_version == 0:
                collection.insert_one(document, session=self._session)
            else:
                result = collection.replace_one(
                    {"_id": resource.id, "v": version.expected_version},
                    document,
                    session=self._session,
                )
                if result.matched_count != 1:
                    raise VersionConflict(resource.resource_type, resource.id)
            self._db[history_collection(resource.resource_type)].insert_one(
                {
                    "_id": f"{resource.id}/{resource.version}",
                    "rid": resource.id,
                    "v": resource.version,
                    "lu": resource.last_updated,
                    "del": resource.deleted,
                    "m": version.method,
                    "body": Binary(resource.body),
                    "pk": version.shard_key,
                },
                session=self._session,
            )
        except DuplicateKeyError as exc:
            raise VersionConflict(resource.resource_type, resource.id) from exc
        except DocumentTooLarge as exc:
            raise _too_large(resource.resource_type, len(resource.body)) from exc
        except OperationFailure as exc:
            if exc.code in _TOO_LARGE_CODES:
                raise _too_large(resource.resource_type, len(resource.body)) from exc
            raise
        if resource.resource_type == "Patient":
            # After the Patient it announces: a reader that sees the new epoch sees the
            # Patient too, whether or not the two commit as one (a session without a
            # transaction, mongomock). Bumped first, a reader between the two cached "no
            # Patient has this INS" under the new epoch, for good: 20 parallel conditional
            # creates left the record unreachable by its INS (`patients_matching`).
            self.bump_record_epoch(PATIENTS_EPOCH)


# The server's refusals of a document over its 16 MiB limit (BSONObjectTooLarge, and a
# document grown past it by an update); pymongo refuses most before sending (DocumentTooLarge).
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})


def _too_large(resource_type: str, size: int) -> FhirError:
    """A resource MongoDB cannot hold in one document (16 MiB, with its index entries):
    413, as for a request body over the configured limit, rather than a 500. SQLite stores
    it; the MongoDB engine has no chunked storage of bodies (README, "MongoDB layout")."""
    return error(
        413,
        "too-costly",
        f"the {resource_type} is too large for the MongoDB store ({size} bytes; a document"
        " holds at most 16 MiB with its search index)",
    )


class MongoStore:
    """ResourceStore on one MongoDB database (a replica set, or mongomock in tests)."""

    name = "mongodb"

    def __init__(
        self,
        client: MongoClient,
        database: str,
        resource_types: Iterable[str],
        *,
        facts_of: FactsOf | None = None,
    ) -> None:
        """`facts_of`: how the audit facts of a stored version are derived
        (`audit.entity_facts`), for those stored before them or by another derivation
        (`backfill_facts`); None leaves them to be parsed by each search."""
        self._client = client
        self._db = client.get_database(
            database,
            write_concern=WriteConcern("majority"),
            read_concern=ReadConcern("majority"),
        )
        self.resource_types = tuple(resource_types)
        self._facts_of = facts_of
        self._backfill_pid = 0

    @classmethod
    def from_uri(
        cls, uri: str, resource_types: Iterable[str], *, facts_of: FactsOf | None = None
    ) -> MongoStore:
        client: MongoClient = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10000)
        database = client.get_default_database(default="fhir").name
        return cls(client, database, resource_types, facts_of=facts_of)

    def backfill_facts(self) -> int:
        """Derive the audit facts of versions stored before them (`mongo_facts`), unless the
        store is marked done; the number of documents given facts. A process runs it once,
        in the background, from its first write transaction (as SQLite's maintenance)."""
        if self._facts_of is None or not mongo_facts.pending(self._db, self._facts_of):
            return 0
        types = [t for t in self.resource_types if t != AUDIT_EVENT]
        return mongo_facts.backfill(self._db, types, self._facts_of)

    def _start_backfill(self) -> None:
        if self._facts_of is None or self._backfill_pid == os.getpid():
            return
        self._backfill_pid = os.getpid()
        threading.Thread(target=self._backfill_logged, name="mongo-facts", daemon=True).start()

    def _backfill_logged(self) -> None:
        try:
            done = self.backfill_facts()
        except PyMongoError:
            logger.warning("audit facts backfill postponed to the next start", exc_info=True)
            return
        if done:
            logger.info("derived the audit facts of %d stored versions", done)

    @property
    def database(self):
        return self._db

    @property
    def client(self) -> MongoClient:
        return self._client

    def create_indexes(self, param_codes_by_type: dict[str, Iterable[str]]) -> None:
        """Create the search and history indexes (idempotent; run at start-up)."""
        for resource_type in self.resource_types:
            specs = mongo_index.index_specs(
                resource_type, tuple(param_codes_by_type.get(resource_type, ()))
            )
            specs.append(IndexModel([("pk", ASCENDING), ("_id", ASCENDING)], name="shard_key"))
            self._db[resource_type].create_indexes(specs)
            self._db[history_collection(resource_type)].create_indexes(
                [
                    IndexModel([("rid", ASCENDING), ("v", DESCENDING)], name="instance"),
                    IndexModel([("lu", DESCENDING), ("_id", DESCENDING)], name="recent"),
                    IndexModel([("pk", ASCENDING), ("_id", ASCENDING)], name="shard_key"),
                ]
            )

    # -- reads ----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        doc = self._db[resource_type].find_one({"_id": resource_id}, _PROJECTION)
        return _stored(resource_type, resource_id, doc) if doc else None

    def vread(self, resource_type: str, resource_id: str, version: int) -> StoredResource | None:
        doc = self._db[history_collection(resource_type)].find_one(
            {"_id": f"{resource_id}/{version}"}
        )
        return _stored(resource_type, resource_id, doc) if doc else None

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: int | None,
        count: int,
        cursor: str | None,
    ) -> HistoryPage:
        """Newest first, ordered by (last_updated, type, id/version) across collections."""
        position: list | None = None
        if cursor is not None:
            decoded = decode_history_cursor(cursor)
            if not (
                isinstance(decoded, list)
                and len(decoded) == 3
                and all(isinstance(part, str) for part in decoded[1:])
            ):
                raise invalid_cursor()
            position = [history_int(decoded[0]), *decoded[1:]]
        types = (resource_type,) if resource_type else self.resource_types
        streams = [self._history_stream(t, resource_id, since, position, count + 1) for t in types]
        merged = list(heapq.merge(*streams, key=lambda item: item[0], reverse=True))
        page = merged[: count + 1]
        next_cursor = encode_history_cursor(list(page[count - 1][0])) if len(page) > count else None
        return HistoryPage([entry for _, entry in page[:count]], next_cursor)

    def _history_stream(
        self,
        resource_type: str,
        resource_id: str | None,
        since: int | None,
        position: list | None,
        limit: int,
    ) -> Iterator[tuple[tuple, HistoryEntry]]:
        clauses: list[dict] = []
        if resource_id is not None:
            clauses.append({"rid": resource_id})
        if since is not None:
            clauses.append({"lu": {"$gte": since}})
        if position is not None:
            clauses.append(_before(resource_type, position))
        query = {"$and": clauses} if clauses else {}
        cursor = (
            self._db[history_collection(resource_type)]
            .find(query)
            .sort([("lu", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        for doc in cursor:
            entry = HistoryEntry(_stored(resource_type, doc["rid"], doc), doc["m"])
            yield (doc["lu"], resource_type, doc["_id"]), entry

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        return mongo_search.search(
            self._db, query, cursor_key=cursor_key, cursor_binding=cursor_binding
        )

    def resolve_includes(self, rows: Sequence, includes: Sequence[Include], allowed) -> list:
        return mongo_search.resolve_includes(self._db, rows, tuple(includes), allowed)

    def record_epoch(self, patient_id: str) -> int:
        doc = self._db[RECORD_EPOCH].find_one({"_id": patient_id})
        # A record only held (`MongoTransaction.facts_epoch`), never bumped, has no epoch.
        return doc.get("epoch", 0) if doc else 0

    def ping(self) -> bool:
        try:
            self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    # -- writes ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[MongoTransaction]:
        self._start_backfill()
        with self._client.start_session() as session:
            session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            )
            try:
                yield MongoTransaction(self._db, session)
                session.commit_transaction()
            except OperationFailure as exc:
                if session.in_transaction:
                    session.abort_transaction()
                if exc.has_error_label("TransientTransactionError"):
                    raise VersionConflict("transaction", "concurrent write") from exc
                raise
            except BaseException:
                if session.in_transaction:
                    session.abort_transaction()
                raise

    # -- AuditEvents: the outbox and the move to the audit log -----------------------------

    def outbox(self) -> list[tuple[ObjectId, dict]]:
        """The staged AuditEvents, in staging order (`store.with_audit_log`)."""
        return [
            (doc["_id"], orjson.loads(bytes(doc["body"])))
            for doc in self._db[AUDIT_OUTBOX].find({}).sort("_id", ASCENDING)
        ]

    def legacy_audit_events(self, chunk: int = 5_000) -> Iterator[list[tuple[bytes, int]]]:
        """(bytes, lastUpdated) of the AuditEvents earlier versions stored in the resource
        collections, in chain order, `chunk` at a time (only their sequences are held in
        memory at once). AuditEvents had one version each: the current collection holds
        them all."""
        current = self._db[AUDIT_EVENT]
        order = sorted(
            (move_order(bytes(doc["body"])), doc["_id"])
            for doc in current.find({"del": False}, {"body": 1})
        )
        for start in range(0, len(order), chunk):
            ids = [key for _, key in order[start : start + chunk]]
            rows = {
                doc["_id"]: (bytes(doc["body"]), doc["lu"])
                for doc in current.find({"_id": {"$in": ids}}, {"body": 1, "lu": 1})
            }
            yield [rows[key] for key in ids]

    def drop_legacy_audit_events(self) -> None:
        """Remove the moved AuditEvents, their history and the old chain head. Not one
        transaction (there may be millions): the current collection goes last, so that
        until it is empty the next open finds the events and repeats the move, which skips
        what the log holds and removes the rest."""
        self._db[history_collection(AUDIT_EVENT)].delete_many({})
        self._db[LEGACY_AUDIT_CHAIN].delete_many({})
        self._db[AUDIT_EVENT].delete_many({})

    def close(self) -> None:
        self._client.close()

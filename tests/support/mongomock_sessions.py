"""Client sessions and multi-document transactions for mongomock, in tests only.

mongomock has no sessions, and the MongoDB engine uses them for every write (as it must on a
real replica set). This wrapper gives mongomock just enough of pymongo's session API for the
engine to run unmodified: calls accept and drop `session=`, and a transaction saves each
collection before its first write there and restores what it saved when it aborts. Transactions are
serialized by a lock, which is stricter than MongoDB's snapshot isolation and fine for tests.
A test that races transactions on one thread (one opened inside another) turns on
`SessionMongoClient.detect_write_conflicts`: a document written by two overlapping
transactions then fails the second write as MongoDB does (`_SnapshotSession.wrote`).
Against a real MongoDB (FHIR_TEST_MONGODB_URI) none of this is used.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import bson
import mongomock
from pymongo.errors import DocumentTooLarge, OperationFailure

# The collection calls that change documents: a transaction saves the collection's documents
# before its first such call (`_SnapshotSession.save`).
_WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "replace_one",
        "update_one",
        "update_many",
        "delete_one",
        "delete_many",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "bulk_write",
    }
)


# The longest `$regex` pattern a MongoDB server compiles, in bytes: 16,384 since its PCRE2
# (jstests/core/regex_limit.js; 32,764 before). A longer one is refused, code 51091.
MAX_REGEX_PATTERN_BYTES = 16_384


def check_filter(query: Any) -> None:
    """Refuse what a MongoDB server refuses in a query filter and mongomock lets through: a
    `$regex` with an embedded NUL ("Regular expression cannot contain an embedded null
    byte", BadValue, from the server's RegexMatchExpression; mongomock hands the pattern to
    Python's `re`, which takes it), or longer than MAX_REGEX_PATTERN_BYTES."""
    if isinstance(query, dict):
        for key, value in query.items():
            pattern = str(getattr(value, "pattern", value))
            if key == "$regex" and "\x00" in pattern:
                raise OperationFailure(
                    "Regular expression cannot contain an embedded null byte", code=2
                )
            if key == "$regex" and len(pattern.encode()) > MAX_REGEX_PATTERN_BYTES:
                raise OperationFailure(
                    "Regular expression is invalid: pattern string is longer than the limit"
                    " set by the application",
                    code=51091,
                )
            check_filter(value)
    elif isinstance(query, list | tuple):
        for part in query:
            check_filter(part)


# MongoDB's largest document (maxBsonObjectSize): pymongo refuses a larger one before sending.
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024


def check_encodable(operation: str, args: tuple) -> None:
    """What pymongo does to a call's documents before any server sees them, and mongomock
    skips: encode them as BSON (OverflowError beyond 8-byte ints, InvalidDocument for a type
    BSON lacks), and refuse a document larger than MAX_BSON_OBJECT_SIZE (DocumentTooLarge)."""
    documents: list = []
    for arg in args:
        if isinstance(arg, dict):
            documents.append(arg)
        elif isinstance(arg, list) and all(isinstance(d, dict) for d in arg):
            documents.extend(arg)
    for document in documents:
        size = len(bson.encode(document))
        if size > MAX_BSON_OBJECT_SIZE:
            raise DocumentTooLarge(
                f"BSON document too large ({size} bytes) - the connected server supports BSON"
                f" document sizes up to {MAX_BSON_OBJECT_SIZE} bytes ({operation})."
            )


class _CollectionProxy:
    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute
        collection = self._collection

        def call(*args: Any, session: Any = None, **kwargs: Any) -> Any:
            if args and isinstance(args[0], dict):
                check_filter(args[0])
            check_encodable(name, args)
            if name in _WRITES and isinstance(session, _SnapshotSession):
                session.wrote(collection.database.name, collection.name, _written_id(name, args))
                session.save(collection.database.name, collection.name)
            return attribute(*args, **kwargs)

        return call


class _DatabaseProxy:
    def __init__(self, database: Any, client: SessionMongoClient) -> None:
        self._database = database
        self.client = client  # as pymongo's Database.client: the client with sessions

    def __getitem__(self, name: str) -> _CollectionProxy:
        return _CollectionProxy(self._database[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self._database, name)
        if isinstance(attribute, mongomock.Collection):
            return _CollectionProxy(attribute)
        return attribute


def _written_id(operation: str, args: tuple) -> object:
    """The `_id` of the one document a write names (its filter's, an inserted document's),
    or None when it names none by id (a write conflict is then not detected)."""
    if not args or not isinstance(args[0], dict) or operation.endswith("_many"):
        return None
    found = args[0].get("_id")
    return found if isinstance(found, str | int | bson.ObjectId) else None


class _SnapshotSession:
    """A transaction saves each collection it writes, before its first write there (a deep
    copy of the collection's documents), and an abort restores the collections it saved:
    as if the transaction had written nothing. Saving only what is written keeps each
    transaction's cost to the collections it changes, not the whole database."""

    def __init__(self, client: SessionMongoClient) -> None:
        self._client = client
        self._snapshot: dict | None = None
        # The documents this transaction wrote, and the commit it started after.
        self.written: set[tuple] = set()
        self._started_after = 0

    @property
    def in_transaction(self) -> bool:
        return self._snapshot is not None

    def start_transaction(self, **_options: Any) -> None:
        self._client.transaction_lock.acquire()
        self._snapshot = {}
        self.written = set()
        self._started_after = self._client.commits
        self._client.open_transactions.append(self)

    def wrote(self, db_name: str, name: str, document_id: object) -> None:
        """MongoDB's first-writer-wins, when the client detects write conflicts: a document
        that another open transaction wrote, or that a transaction committed after this one
        began wrote, fails this write with a WriteConflict (a `TransientTransactionError`),
        and this transaction is aborted."""
        client = self._client
        if not client.detect_write_conflicts or self._snapshot is None or document_id is None:
            return
        key = (db_name, name, document_id)
        if client.committed.get(key, 0) > self._started_after or any(
            key in other.written for other in client.open_transactions if other is not self
        ):
            raise OperationFailure(
                "WriteConflict error: this operation conflicted with another operation",
                code=112,
                details={"errorLabels": ["TransientTransactionError"], "code": 112},
            )
        self.written.add(key)

    def save(self, db_name: str, name: str) -> None:
        if self._snapshot is not None and (db_name, name) not in self._snapshot:
            self._snapshot[db_name, name] = self._client.snapshot_of(db_name, name)

    def commit_transaction(self) -> None:
        self._snapshot = None
        client = self._client
        client.commits += 1
        for key in self.written:
            client.committed[key] = client.commits
        self._close()

    def _close(self) -> None:
        self.written = set()
        if self in self._client.open_transactions:
            self._client.open_transactions.remove(self)
        self._client.transaction_lock.release()

    def abort_transaction(self) -> None:
        snapshot, self._snapshot = self._snapshot, None
        try:
            if snapshot:
                self._client.restore(snapshot)
        finally:
            self._close()

    def end_session(self) -> None:
        if self._snapshot is not None:
            self.abort_transaction()

    def __enter__(self) -> _SnapshotSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_session()


class SessionMongoClient:
    """A mongomock client with pymongo's session and transaction calls."""

    def __init__(self) -> None:
        self._client = mongomock.MongoClient(tz_aware=True)
        self.transaction_lock = threading.RLock()
        # Off unless a test turns it on (`_SnapshotSession.wrote`).
        self.detect_write_conflicts = False
        self.commits = 0
        self.committed: dict[tuple, int] = {}  # document -> the commit that last wrote it
        self.open_transactions: list[_SnapshotSession] = []

    def get_database(self, name: str, **_options: Any) -> _DatabaseProxy:
        return _DatabaseProxy(self._client.get_database(name), self)

    def start_session(self, **_options: Any) -> _SnapshotSession:
        return _SnapshotSession(self)

    @property
    def admin(self) -> Any:
        return self._client.admin

    def snapshot_of(self, db_name: str, name: str) -> list[dict]:
        """A copy of the documents of one collection (none if it does not exist yet)."""
        return copy.deepcopy(list(self._client[db_name][name].find({})))

    def restore(self, snapshot: dict) -> None:
        """Put back the saved collections' documents (a collection first written in the
        transaction is emptied)."""
        for (db_name, name), documents in snapshot.items():
            collection = self._client[db_name][name]
            collection.delete_many({})
            if documents:
                collection.insert_many(copy.deepcopy(documents))

    def close(self) -> None:
        self._client.close()

"""Client sessions and multi-document transactions for mongomock, in tests only.

mongomock has no sessions, and the MongoDB engine uses them for every write (as it must on a
real replica set). This wrapper gives mongomock just enough of pymongo's session API for the
engine to run unmodified: calls accept and drop `session=`, and a transaction snapshots the
database when it starts and restores the snapshot when it aborts. Transactions are
serialized by a lock, which is stricter than MongoDB's snapshot isolation and fine for tests.
Against a real MongoDB (FHIR_TEST_MONGODB_URI) none of this is used.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import mongomock


class _CollectionProxy:
    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, session: Any = None, **kwargs: Any) -> Any:
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


class _SnapshotSession:
    def __init__(self, client: SessionMongoClient) -> None:
        self._client = client
        self._snapshot: dict | None = None

    @property
    def in_transaction(self) -> bool:
        return self._snapshot is not None

    def start_transaction(self, **_options: Any) -> None:
        self._client.transaction_lock.acquire()
        self._snapshot = self._client.snapshot()

    def commit_transaction(self) -> None:
        self._snapshot = None
        self._client.transaction_lock.release()

    def abort_transaction(self) -> None:
        snapshot, self._snapshot = self._snapshot, None
        try:
            if snapshot is not None:
                self._client.restore(snapshot)
        finally:
            self._client.transaction_lock.release()

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

    def get_database(self, name: str, **_options: Any) -> _DatabaseProxy:
        return _DatabaseProxy(self._client.get_database(name), self)

    def start_session(self, **_options: Any) -> _SnapshotSession:
        return _SnapshotSession(self)

    @property
    def admin(self) -> Any:
        return self._client.admin

    def snapshot(self) -> dict:
        return {
            (db_name, name): copy.deepcopy(list(self._client[db_name][name].find({})))
            for db_name in self._client.list_database_names()
            for name in self._client[db_name].list_collection_names()
        }

    def restore(self, snapshot: dict) -> None:
        for db_name in self._client.list_database_names():
            for name in self._client[db_name].list_collection_names():
                collection = self._client[db_name][name]
                collection.delete_many({})
                documents = snapshot.get((db_name, name))
                if documents:
                    collection.insert_many(copy.deepcopy(documents))

    def close(self) -> None:
        self._client.close()

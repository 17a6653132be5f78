"""Audit facts for the versions a MongoDB store holds from before them (`audit.entity_facts`).

The MongoDB counterpart of `sqlite_facts`: every write stores its version's facts in the
resource's document; a store written by an earlier version of the server has none, and its
searches parse their matches instead (the same AuditEvents, only slower). `backfill` derives
the missing facts, collection by collection in `_id` order, each set only while the version
it was derived from is still the document's (a concurrent write replaces the document with
facts of its own), then marks the store done so that later opens skip the scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bson import Binary

MAINTENANCE = "maintenance"
TASK = "resource_facts"

FactsOf = Callable[[bytes], bytes]


def pending(db: Any) -> bool:
    """Whether the store may still hold versions without facts."""
    return db[MAINTENANCE].find_one({"_id": TASK}) is None


def backfill(db: Any, resource_types: Iterable[str], facts_of: FactsOf, batch: int = 500) -> int:
    """Derive the missing facts of the current versions of `resource_types`; the number of
    documents given facts. A version whose bytes are no resource is left without: its
    searches parse it, and say what is wrong."""
    done = 0
    for resource_type in resource_types:
        collection = db[resource_type]
        last = None
        while True:
            query: dict = {"del": False, "facts": {"$exists": False}}
            if last is not None:
                query["_id"] = {"$gt": last}
            documents = list(
                collection.find(query, {"body": 1, "v": 1}).sort("_id", 1).limit(batch)
            )
            if not documents:
                break
            for document in documents:
                last = document["_id"]
                try:
                    facts = facts_of(bytes(document["body"]))
                except ValueError:
                    continue
                updated = collection.update_one(
                    {"_id": document["_id"], "v": document["v"], "facts": {"$exists": False}},
                    {"$set": {"facts": Binary(facts)}},
                )
                done += updated.modified_count
    db[MAINTENANCE].update_one({"_id": TASK}, {"$set": {"done": True}}, upsert=True)
    return done

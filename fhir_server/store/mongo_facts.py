"""Audit facts for the versions a MongoDB store holds from before them (`audit.entity_facts`).

The MongoDB counterpart of `sqlite_facts`: every write stores its version's facts in the
resource's document; a store written by an earlier release has none, or those of another
derivation, which are not read: its searches parse their matches instead (the same
AuditEvents, only slower). `backfill` derives them again, collection by collection in `_id`
order, each document updated only while it holds the version and the facts it was read with
(a concurrent write replaces the document with facts of its own), then marks the store done
for this derivation so that later opens skip the scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import Binary

from fhir_server.store.base import FactsOf

MAINTENANCE = "maintenance"


def pending(db: Any, facts_of: FactsOf) -> bool:
    """Whether the store may still hold versions without facts of this derivation."""
    return db[MAINTENANCE].find_one({"_id": facts_of.task}) is None


def backfill(db: Any, resource_types: Iterable[str], facts_of: FactsOf, batch: int = 500) -> int:
    """Derive the facts the current versions of `resource_types` lack for this derivation;
    the number of documents given facts. Bodies are read only for those. A version whose
    bytes are no resource is left without: its searches parse it, and say what is wrong."""
    done = 0
    for resource_type in resource_types:
        collection = db[resource_type]
        last = None
        while True:
            query: dict = {"del": False} if last is None else {"del": False, "_id": {"$gt": last}}
            heads = list(collection.find(query, {"v": 1, "facts": 1}).sort("_id", 1).limit(batch))
            if not heads:
                break
            last = heads[-1]["_id"]
            stale = [head["_id"] for head in heads if not _current(head, facts_of)]
            for document in collection.find(
                {"_id": {"$in": stale}}, {"body": 1, "v": 1, "facts": 1}
            ):
                try:
                    facts = facts_of.derive(bytes(document["body"]))
                except ValueError:
                    continue
                kept = document.get("facts")
                # One update per document, not a bulk_write: mongomock, which the tests run
                # this engine on, cannot run pymongo's UpdateOne; a backfill runs once.
                updated = collection.update_one(
                    {
                        "_id": document["_id"],
                        "v": document["v"],
                        "facts": kept if kept is not None else {"$exists": False},
                    },
                    {"$set": {"facts": Binary(facts)}},
                )
                done += updated.modified_count
    db[MAINTENANCE].update_one({"_id": facts_of.task}, {"$set": {"done": True}}, upsert=True)
    return done


def _current(head: dict, facts_of: FactsOf) -> bool:
    kept = head.get("facts")
    return kept is not None and bytes(kept).startswith(facts_of.prefix)

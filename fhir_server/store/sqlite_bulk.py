"""Bulk loading into an empty SQLite store: secondary indexes built once, after the load.

A resource write inserts some 25 index rows, each into its table and into two or three
B-tree indexes at scattered positions; on a bulk load that index maintenance is about half
of the writer's CPU. Building an index once over the loaded rows (`CREATE INDEX` sorts
them) costs a fraction of that. This is done only when the store holds no resource when the
load starts, so that nobody is searching a large store without its indexes; the indexes are
recreated from their own `CREATE INDEX` text, so the end state is the one a load with
indexes gives.

Durability is unchanged: every batch is still a durable transaction. Indexes hold no data
(only the implicit UNIQUE and PRIMARY KEY indexes enforce anything, and they are kept), so
a load that stops half way leaves correct data; a crash before the rebuild leaves the
indexes missing until the next open of the store, whose schema step (`CREATE INDEX IF NOT
EXISTS`) builds them again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

Unit = Callable[[], AbstractContextManager[sqlite3.Connection]]


@dataclass(frozen=True)
class SecondaryIndex:
    name: str
    sql: str


def secondary_indexes(connection: sqlite3.Connection) -> list[SecondaryIndex]:
    """The explicitly created, non-unique indexes (those that only speed up reads)."""
    rows = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
    ).fetchall()
    return [
        SecondaryIndex(name, sql)
        for name, sql in rows
        if not sql.lstrip().upper().startswith("CREATE UNIQUE")
    ]


def _is_empty(connection: sqlite3.Connection) -> bool:
    return (
        connection.execute("SELECT 1 FROM resource LIMIT 1").fetchone() is None
        and connection.execute("SELECT 1 FROM history LIMIT 1").fetchone() is None
    )


# Kept during a bulk load: the index the write path itself searches. A DocumentReference
# write looks its uniqueId and entryUUID up among the stored documents (`DocumentRules`,
# `service.unique_ids`), a token search; without this index each lookup scans every token
# row loaded so far, and the load grows quadratic.
WRITE_PATH_INDEXES = frozenset({"ix_token_value"})


@contextmanager
def deferred_indexes(unit: Unit) -> Iterator[bool]:
    """Drop the secondary indexes for the block if the store is empty, rebuild them after it
    (also when it raises); those the write path reads (`WRITE_PATH_INDEXES`) are kept.
    Yields whether any were deferred. `unit` opens a write transaction on the writer
    connection (`GroupCommit.unit`)."""
    with unit() as connection:
        dropped = (
            [i for i in secondary_indexes(connection) if i.name not in WRITE_PATH_INDEXES]
            if _is_empty(connection)
            else []
        )
        for index in dropped:
            connection.execute(f'DROP INDEX "{index.name}"')
    try:
        yield bool(dropped)
    finally:
        if dropped:
            with unit() as connection:
                # Another process opening the store meanwhile (`CREATE INDEX IF NOT EXISTS`
                # in its schema step) may have built some of them already.
                present = {index.name for index in secondary_indexes(connection)}
                for index in dropped:
                    if index.name not in present:
                        connection.execute(index.sql)

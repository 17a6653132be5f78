"""A durable SQLite connection: the settings the resource store and the audit log share."""

from __future__ import annotations

import sqlite3


def open_durable(path: str) -> sqlite3.Connection:
    """WAL (readers never block the writer), a commit durable when it returns
    (synchronous=FULL), waits on a busy database rather than failing at once, and statement
    journals in memory (a temporary file per SAVEPOINT would cost I/O inside the lock)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.execute("PRAGMA temp_store = MEMORY")
    return connection

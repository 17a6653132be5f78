"""The writers' turn at one SQLite database, across the server's worker processes.

SQLite lets one transaction write at a time. Its busy handler makes a writer that finds the
database locked sleep for growing intervals (up to 100 ms) before trying again; an OS file
lock next to the database wakes the next writer as soon as the previous one commits, so a
busy multi-worker server does not idle.

A writer that has to wait also says so, by holding a shared lock on a second file while it
waits: the background AuditEvent journal move (`SqliteStore._maintain`), which holds the
turn for many small steps, asks between two steps whether anyone waits, in any process,
and if so commits what it has moved and steps aside.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


class WriteTurn:
    def __init__(self, database_path: str, *, announce_waiting: bool = True) -> None:
        """`announce_waiting=False`: a database with no background writer to step aside (the
        audit log) takes the turn with one blocking lock; announcing costs two more lock
        calls whenever the turn is held, each a release of the interpreter lock and a wait
        to take it back on a busy worker."""
        self._turn_path = f"{database_path}-writer.lock"
        self._waiting_path = f"{database_path}-writer-waiting.lock"
        self._announce_waiting = announce_waiting
        self._files: dict[str, IO[str]] = {}
        self._pid = 0

    def _file(self, role: str, path: str) -> IO[str]:
        """Each process opens its own (a forked worker must not share its parent's lock)."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        handle = self._files.get(role)
        if handle is None:
            handle = self._files[role] = open(path, "a")  # noqa: SIM115 - lives with the store
        return handle

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The turn, for one write transaction (of this process's writer connection: its
        units already come one at a time, see `GroupCommit`)."""
        turn = self._file("turn", self._turn_path)
        try:
            fcntl.flock(turn, fcntl.LOCK_EX | (fcntl.LOCK_NB if self._announce_waiting else 0))
        except BlockingIOError:
            waiting = self._file("waiting", self._waiting_path)
            fcntl.flock(waiting, fcntl.LOCK_SH)
            try:
                fcntl.flock(turn, fcntl.LOCK_EX)
            finally:
                fcntl.flock(waiting, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)

    def others_waiting(self) -> bool:
        """Whether a writer of any process waits for the turn (an exclusive lock on the
        waiting file cannot be had while one holds it shared)."""
        probe = self._file("probe", self._waiting_path)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False

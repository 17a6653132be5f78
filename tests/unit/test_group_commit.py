"""Group commit of SQLite write transactions (architecture: "a single writer with group
commit"): concurrent writes share one durable commit, each stays atomic on its own, and none
is acknowledged before it is committed."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from fhir_server.store.base import StoredResource, VersionWrite
from fhir_server.store.group_commit import GroupCommit
from fhir_server.store.sqlite import SqliteStore


def _patient(resource_id: str) -> VersionWrite:
    body = b'{"resourceType":"Patient","id":"%s"}' % resource_id.encode()
    return VersionWrite(StoredResource("Patient", resource_id, 1, 1, False, body), "POST", 0, None)


def _committed_ids(path: Path) -> set[str]:
    """What another process would see: a fresh connection reads committed data only."""
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM resource")}
    finally:
        connection.close()


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


@pytest.fixture
def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    yield store
    store.close()


def test_write_is_durable_when_its_transaction_returns(store: SqliteStore, tmp_path: Path) -> None:
    """A write is acknowledged only after its commit: it is visible to any other reader."""
    seen: dict[str, bool] = {}

    def write(resource_id: str) -> None:
        with store.transaction() as tx:
            tx.write(_patient(resource_id))
        seen[resource_id] = resource_id in _committed_ids(tmp_path / "fhir.sqlite3")

    threads = [threading.Thread(target=write, args=(f"p{n}",)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {f"p{n}": True for n in range(16)}


def _run_overlapping(store: SqliteStore, first, second) -> None:
    """Run `first(tx, hold)` in a transaction that stays open (hold() blocks) until `second`
    is queued behind it, then let both finish."""
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        inside.set()
        release.wait(5)

    one = threading.Thread(target=first, args=(hold,))
    one.start()
    inside.wait(5)
    two = threading.Thread(target=second)
    two.start()
    _wait_until(lambda: store._group._queued == 1)
    release.set()
    one.join(5)
    two.join(5)


def test_queued_writes_share_one_commit(store: SqliteStore, tmp_path: Path) -> None:
    """A writer queued behind an open transaction joins its batch: one commit for both."""

    def first(hold) -> None:
        with store.transaction() as tx:
            tx.write(_patient("first"))
            hold()

    def second() -> None:
        with store.transaction() as tx:
            tx.write(_patient("second"))

    commits_before = store._group.commits
    _run_overlapping(store, first, second)
    assert _committed_ids(tmp_path / "fhir.sqlite3") == {"first", "second"}
    assert store._group.commits == commits_before + 1


def test_failed_write_rolls_back_alone_in_its_batch(store: SqliteStore, tmp_path: Path) -> None:
    """Atomicity per transaction: a failing unit leaves nothing, its batch-mates are stored."""
    outcome: dict[str, object] = {}

    def failing(hold) -> None:
        try:
            with store.transaction() as tx:
                tx.write(_patient("doomed"))
                hold()
                raise RuntimeError("entry 2 is invalid")
        except RuntimeError as exc:
            outcome["failing"] = str(exc)

    def succeeding() -> None:
        with store.transaction() as tx:
            tx.write(_patient("kept"))
        outcome["succeeding"] = "ok"

    _run_overlapping(store, failing, succeeding)
    assert outcome == {"failing": "entry 2 is invalid", "succeeding": "ok"}
    assert _committed_ids(tmp_path / "fhir.sqlite3") == {"kept"}


def test_version_conflict_inside_a_batch_is_the_writers_own(store: SqliteStore) -> None:
    """A concurrent-update conflict fails that write only (it becomes a 409), not the batch."""
    with store.transaction() as tx:
        tx.write(_patient("p1"))
    with pytest.raises(Exception) as caught, store.transaction() as tx:
        tx.write(_patient("p1"))  # expected version 0, but version 1 exists
    assert type(caught.value).__name__ == "VersionConflict"
    with store.transaction() as tx:
        tx.write(_patient("p2"))
    assert store.read("Patient", "p2") is not None


def test_waiting_tells_a_running_unit_that_another_is_queued(tmp_path):
    """`GroupCommit.waiting`: what the background journal move asks to end its batch early."""
    connection = sqlite3.connect(
        tmp_path / "w.sqlite3", isolation_level=None, check_same_thread=False
    )
    connection.execute("CREATE TABLE t (x)")
    group = GroupCommit(connection, nullcontext)
    seen: list[bool] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait()
        with group.unit() as conn:
            conn.execute("INSERT INTO t VALUES (2)")

    thread = threading.Thread(target=second)
    thread.start()
    with group.unit() as conn:
        seen.append(group.waiting())
        inside.set()
        deadline = time.monotonic() + 10
        while not group.waiting() and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append(group.waiting())
        conn.execute("INSERT INTO t VALUES (1)")
    thread.join()
    assert seen == [False, True]
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_unit_savepoint_journals_are_kept_in_memory(store: SqliteStore) -> None:
    """Every write unit is a SAVEPOINT of its batch's transaction; its statement journal (what
    ROLLBACK TO restores) stays in memory, not in a temporary file opened and closed per unit
    while the write lock is held. 2 is SQLite's MEMORY."""
    assert store._writer.execute("PRAGMA temp_store").fetchone()[0] == 2

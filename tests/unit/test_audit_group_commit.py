"""Group commit of the audit log (R16: a read's event is durable before its answer leaves;
issue 21: concurrent requests share one commit), led by the appending threads."""

from __future__ import annotations

import threading

import pytest

from fhir_server.store.audit_log.committer import GroupAppender, PendingAppend
from fhir_server.store.audit_log.record import LogRecord


def _record(event: dict, sequence: int) -> LogRecord:
    return LogRecord(sequence, event["id"], 0, "h", (), "", "R", "read", "0", "", b"{}")


class _Log:
    """A commit that takes its time (a durable write does), numbering what it stores."""

    def __init__(self, fail_on: set[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.running = 0
        self.overlapped = False
        self.gate = threading.Event()
        self.gate.set()

    def commit(self, batch: list[PendingAppend]) -> None:
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            self.gate.wait()
            ids = [e["id"] for p in batch for e in p.events]
            if self.fail_on & set(ids):
                raise OSError("disk full")
            base = sum(len(b) for b in self.batches)
            self.batches.append(ids)
            for pending in batch:
                pending.records = [
                    _record(e, base + ids.index(e["id"]) + 1) for e in pending.events
                ]
        finally:
            self.running -= 1


def test_every_append_returns_its_own_records_once_committed_and_commits_never_overlap():
    log = _Log()
    appender = GroupAppender(log.commit)
    results: dict[str, list[LogRecord]] = {}

    def append(n: int) -> None:
        for k in range(25):
            event_id = f"e{n}-{k}"
            results[event_id] = appender.append([{"id": event_id}], False)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(f"e{n}-{k}" for n in range(8) for k in range(25))
    assert all([r.id for r in records] == [event_id] for event_id, records in results.items())
    stored = [event_id for batch in log.batches for event_id in batch]
    assert sorted(stored) == sorted(results)  # each event stored once
    assert sorted(r.sequence for records in results.values() for r in records) == list(
        range(1, 201)
    )
    assert not log.overlapped


def test_appends_queued_while_a_commit_runs_share_the_next_commit():
    log = _Log()
    appender = GroupAppender(log.commit)
    log.gate.clear()  # the first commit is slow
    first = threading.Thread(target=appender.append, args=([{"id": "first"}], False))
    first.start()
    while not log.running:
        threading.Event().wait(0.001)
    waiting = [
        threading.Thread(target=appender.append, args=([{"id": f"w{n}"}], False)) for n in range(5)
    ]
    for thread in waiting:
        thread.start()
    while len(appender._queue) < 5:
        threading.Event().wait(0.001)
    log.gate.set()
    for thread in [first, *waiting]:
        thread.join()
    assert len(log.batches) == 2
    assert log.batches[0] == ["first"]
    assert sorted(log.batches[1]) == [f"w{n}" for n in range(5)]


def test_a_failed_commit_fails_its_batch_and_the_next_appends_still_commit():
    """Fail closed (R16): a request whose event could not be stored gets the error, not an
    answer; the appends after it are not left waiting for a leader."""
    log = _Log(fail_on={"bad"})
    appender = GroupAppender(log.commit)
    with pytest.raises(OSError, match="disk full"):
        appender.append([{"id": "bad"}], False)
    assert [r.id for r in appender.append([{"id": "good"}], False)] == ["good"]


def test_a_closed_appender_refuses_appends():
    appender = GroupAppender(_Log().commit)
    appender.stop()
    with pytest.raises(RuntimeError, match="closed"):
        appender.append([{"id": "late"}], False)


def test_the_sync_runs_after_the_turn_is_released_and_before_any_member_returns():
    """R16: a read's event is durable before its answer leaves. An engine that flushes after
    its commit (`sync`) does so outside the cross-process turn, which the other workers'
    leaders queue on, and no member of the batch returns before the flush has."""
    log = _Log()
    steps: list[str] = []
    turn_held = threading.Lock()

    class Turn:
        def __enter__(self):
            turn_held.acquire()
            steps.append("turn")

        def __exit__(self, *exc):
            steps.append("turn released")
            turn_held.release()

    def sync() -> None:
        assert not turn_held.locked(), "the flush ran inside the turn"
        steps.append("sync")

    def commit(batch: list[PendingAppend]) -> None:
        steps.append("commit")
        log.commit(batch)

    appender = GroupAppender(commit, turn=Turn, sync=sync)
    records = appender.append([{"id": "e1"}], False)
    steps.append("returned")
    assert [r.id for r in records] == ["e1"]
    assert steps == ["turn", "commit", "turn released", "sync", "returned"]


def test_a_failed_sync_fails_its_batch():
    """Fail closed (R16): events committed but not flushed are not durable; the requests
    whose events they are get the error, not an answer, and the next appends go on."""
    failures = [OSError("EIO on fdatasync")]

    def sync() -> None:
        if failures:
            raise failures.pop()

    appender = GroupAppender(_Log().commit, sync=sync)
    with pytest.raises(OSError, match="EIO"):
        appender.append([{"id": "lost"}], False)
    assert [r.id for r in appender.append([{"id": "next"}], False)] == ["next"]

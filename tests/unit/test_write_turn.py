"""The writers' turn across processes (`store/write_turn.py`): one writer at a time, and a
waiting writer of any process visible to the background journal move, which then steps
aside. Two `WriteTurn` objects on one database open their own lock files, as two worker
processes do (flock locks belong to open files), so threads stand in for processes here."""

from __future__ import annotations

import threading
import time

from fhir_server.store.write_turn import WriteTurn


def test_one_writer_at_a_time_and_a_waiting_writer_is_seen(tmp_path):
    database = str(tmp_path / "fhir.sqlite3")
    mover, other_worker = WriteTurn(database), WriteTurn(database)
    got_turn = threading.Event()

    def write() -> None:
        with other_worker.hold():
            got_turn.set()

    with mover.hold():
        assert not mover.others_waiting()
        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 5
        while not mover.others_waiting():
            assert time.monotonic() < deadline, "the waiting writer was never seen"
            time.sleep(0.005)
        assert not got_turn.is_set()  # still ours until we let go
    writer.join(5)
    assert got_turn.is_set()
    assert not mover.others_waiting()


def test_a_writer_finding_the_turn_free_takes_it_without_signalling(tmp_path):
    database = str(tmp_path / "fhir.sqlite3")
    first, second = WriteTurn(database), WriteTurn(database)
    with first.hold():
        assert not second.others_waiting()
    with second.hold():
        assert not first.others_waiting()


def test_a_turn_without_announcement_still_lets_one_writer_at_a_time(tmp_path):
    """The audit log's turn (`announce_waiting=False`: no background writer steps aside
    there) takes one blocking lock: still one writer at a time, the waiting one served as
    soon as the holder lets go, and nothing announced."""
    database = str(tmp_path / "fhir.audit.sqlite3")
    holder, other_worker = (WriteTurn(database, announce_waiting=False) for _ in range(2))
    got_turn = threading.Event()
    waiting = threading.Event()

    def write() -> None:
        waiting.set()
        with other_worker.hold():
            got_turn.set()

    with holder.hold():
        writer = threading.Thread(target=write)
        writer.start()
        waiting.wait(5)
        time.sleep(0.05)
        assert not got_turn.is_set()  # still the holder's
        assert not holder.others_waiting()
    writer.join(5)
    assert got_turn.is_set()

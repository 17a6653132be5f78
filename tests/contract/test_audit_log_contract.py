"""The audit log port's contract (`store.audit_log.port.AuditLogEngine`, issue #21), run on
every engine: SQLite, MongoDB through mongomock, and a real MongoDB when
FHIR_TEST_MONGODB_URI is set.

What R16 asks of the log whatever the engine: every event appended is sealed into one hash
chain, in order, and durable when `append` returns; concurrent appends never fork the chain;
an event is stored once (a replayed outbox, a repeated migration); searches read back what
was stored. And how it stays consistent with the resource store across two commits
(`store.with_audit_log`): a write's events are staged in its transaction and reach the log
exactly once, even after a crash between the two commits.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest

from fhir_server.audit.chain import GENESIS_HASH, chain_link, seal, verify_chain
from fhir_server.errors import FhirError
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store.audit_log.record import LogRecord, seal_batch
from fhir_server.store.base import VersionWrite
from fhir_server.store.factory import _stamp, with_audit_log
from fhir_server.store.with_audit_log import StoreWithAuditLog
from tests.conftest import ENGINES, MONGODB_URI, make_store
from tests.support.audit_log import audit_event, chain_of


def _reopened_resources(engine: str, first):
    """A second resource store on the same storage, as another process (or a restart) has."""
    if engine == "sqlite":
        from fhir_server.store.sqlite import SqliteStore

        return SqliteStore(first.path)
    from fhir_server.store.mongo import MongoStore

    if engine == "mongomock":
        return MongoStore(first.client, "fhir", SERVED_TYPES)
    from pymongo import MongoClient

    client = MongoClient(MONGODB_URI, tz_aware=True)
    return MongoStore(client, first.database.name, SERVED_TYPES)


@dataclass
class Engine:
    """The resource store of one engine, and the composites opened on it during a test."""

    name: str
    resources: object
    registry: SearchRegistry
    opened: list[StoreWithAuditLog]

    def open(self, *, again: bool = False) -> StoreWithAuditLog:
        """The store with its audit log; `again`: a new store on the same storage (a
        restart, or a second worker process), every engine object opened afresh."""
        resources = _reopened_resources(self.name, self.resources) if again else self.resources
        store = with_audit_log(resources, self.registry)
        self.opened.append(store)
        return store


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path, registry) -> Iterator[Engine]:
    resources = make_store(request.param, tmp_path, registry)
    handle = Engine(request.param, resources, registry, [])
    yield handle
    if request.param == "mongodb":
        resources.database.client.drop_database(resources.database.name)
    for store in handle.opened:
        store.audit_log.close()
    for each in {id(r): r for r in [resources, *(s.resources for s in handle.opened)]}.values():
        each.close()


@pytest.fixture
def log(engine):
    return engine.open().audit_log


def _ids(records) -> list[str]:
    return [record.id for record in records]


# -- appending --------------------------------------------------------------------------------


def test_append_seals_in_order_and_what_it_returns_is_durable(engine):
    """R16: events are sealed in the order given, one sequence after the head, and are in
    the log when `append` returns: a store opened afresh on the same storage reads them."""
    log = engine.open().audit_log
    assert log.head() is None
    first = log.append([audit_event("p1"), audit_event("p2")])
    second = log.append([audit_event("p1")])
    records = first + second
    assert [r.sequence for r in records] == [1, 2, 3]
    assert log.head() == (3, records[-1].hash)

    reopened = engine.open(again=True).audit_log
    assert reopened.head() == (3, records[-1].hash)
    for record in records:
        stored = reopened.get(record.id)
        assert (stored.sequence, stored.hash, stored.recorded, stored.body) == (
            record.sequence,
            record.hash,
            record.recorded,
            record.body,
        )
    report = verify_chain(chain_of(reopened), expected_head=reopened.head())
    assert report.ok and report.checked == 3
    # The reopened log goes on from the stored head, not from a head of its own.
    assert [r.sequence for r in reopened.append([audit_event("p3")])] == [4]
    assert verify_chain(chain_of(log), expected_head=log.head()).ok


def test_a_sealed_event_is_served_as_stored(log):
    """The bytes kept are the event as served: sealed, version 1, lastUpdated = recorded."""
    (record,) = log.append([audit_event("p1")])
    body = orjson.loads(record.body)
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] == versions.instant(record.recorded)
    assert body["id"] == record.id


def test_concurrent_appends_from_threads_and_processes_make_one_unbroken_chain(engine):
    """R16: appends racing in the threads of two workers (two logs on the same storage)
    make one chain: every event once, sequences 1..n without a gap, each linked to the one
    before, the recorded head at the newest."""
    logs = [engine.open().audit_log, engine.open(again=True).audit_log]
    returned: list[LogRecord] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for round_ in range(8):
                got = logs[n % 2].append([audit_event(f"p{n}") for _ in range(1 + round_ % 3)])
                with lock:
                    returned.extend(got)
        except BaseException as exc:  # reported below, with the chain's state
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    total = 6 * sum(1 + r % 3 for r in range(8))
    assert sorted(r.sequence for r in returned) == list(range(1, total + 1))
    for log in logs:
        report = verify_chain(chain_of(log), expected_head=log.head())
        assert report.ok, report.reason
        assert report.checked == total
        assert sorted(_ids(log.scan())) == sorted(_ids(returned))


def test_an_event_id_already_in_the_log_is_refused(log):
    """One event, one record: appending an id the log holds fails and stores nothing."""
    event = audit_event("p1")
    (record,) = log.append([event])
    with pytest.raises(Exception, match="(?i)unique|duplicate|already"):
        log.append([dict(event)])
    assert log.head() == (1, record.hash)
    assert _ids(log.scan()) == [event["id"]]


def test_skip_known_leaves_out_the_ids_the_log_holds(log):
    """An outbox replayed after a crash: what the log already holds is not stored twice,
    the rest is sealed after the head in the order given."""
    a, b, c = audit_event("p1"), audit_event("p1"), audit_event("p2")
    log.append([a, b])
    appended = log.append([b, c, a], skip_known=True)
    assert _ids(appended) == [c["id"]]
    assert [r.sequence for r in appended] == [3]
    assert _ids(log.scan()) == [a["id"], b["id"], c["id"]]
    assert log.append([a, c], skip_known=True) == []
    assert log.head()[0] == 3


# -- importing sealed events ----------------------------------------------------------------


def _sealed_elsewhere(count: int) -> list[LogRecord]:
    return seal_batch([audit_event("p1") for _ in range(count)], None, versions.now_us(), _stamp)


def test_import_sealed_keeps_the_links_and_skips_held_ids(log):
    """Migration (#21, deliver 3): events sealed before the log existed keep their sequence
    and hash; importing again stores only what is missing; appends continue the chain."""
    records = _sealed_elsewhere(4)
    assert log.import_sealed(records[:3]) == 3
    assert log.head() == (3, records[2].hash)
    assert log.import_sealed(records) == 1
    assert log.head() == (4, records[3].hash)
    stored = list(log.scan())
    assert [(r.sequence, r.id, r.hash, r.body) for r in stored] == [
        (r.sequence, r.id, r.hash, r.body) for r in records
    ]
    (after,) = log.append([audit_event("p1")])
    assert after.sequence == 5
    report = verify_chain(chain_of(log), expected_head=log.head())
    assert report.ok and report.checked == 5


# -- reading ----------------------------------------------------------------------------------


def test_get_and_known_answer_by_event_id(log):
    records = log.append([audit_event("p1"), audit_event("p2")])
    assert log.get(records[1].id).body == records[1].body
    assert log.get("no-such-event") is None
    assert log.known([records[0].id, "no-such-event"]) == {records[0].id}
    assert log.known([]) == set()


def test_scan_by_patient_returns_their_compartment_in_chain_order(log):
    """The patient's trace view (R16) reads only the events of their compartment: Patient
    references in agent.who and entity.what."""
    both = audit_event("p1", "p2")
    records = log.append([audit_event("p1"), audit_event("p2"), both, audit_event()])
    records += log.append([audit_event("p1", agent="Patient/p3")])
    ids = _ids(records)
    assert _ids(log.scan(["p1"])) == [ids[0], ids[2], ids[4]]
    assert _ids(log.scan(["p2", "p1"])) == [ids[0], ids[1], ids[2], ids[4]]
    assert _ids(log.scan(["p3"])) == [ids[4]]
    assert _ids(log.scan(["nobody"])) == []
    assert _ids(log.scan()) == ids


def test_scan_reads_the_whole_log_page_after_page(log, monkeypatch):
    """`audit verify` scans the whole log: SQLite reads it in pages by sequence (never all
    of it in memory at once); the pages join into the same events in the same order."""
    monkeypatch.setattr("fhir_server.store.audit_log.sqlite._SCAN_PAGE", 2)
    records = log.append([audit_event("p1"), audit_event("p2"), audit_event("p1")])
    records += log.append([audit_event("p1"), audit_event("p1", "p2")])
    ids = _ids(records)
    assert _ids(log.scan()) == ids
    assert _ids(log.scan(["p1"])) == [ids[0], ids[2], ids[3], ids[4]]
    assert _ids(log.scan(["p2"])) == [ids[1], ids[4]]


def test_newest_first_pages_the_history_by_sequence(log):
    """`_history` of AuditEvents: newest first, below a sequence, since an instant, of one
    event."""
    records: list[LogRecord] = []
    for _ in range(5):
        records += log.append([audit_event("p1")])
    newest = list(reversed(records))
    everything = log.newest_first(before=None, since=None, event_id=None, limit=10)
    assert _ids(everything) == _ids(newest)
    assert _ids(log.newest_first(before=None, since=None, event_id=None, limit=2)) == _ids(
        newest[:2]
    )
    below = log.newest_first(before=4, since=None, event_id=None, limit=10)
    assert [r.sequence for r in below] == [3, 2, 1]
    since = records[2].recorded
    assert _ids(log.newest_first(before=None, since=since, event_id=None, limit=10)) == [
        r.id for r in newest if r.recorded >= since
    ]
    one = log.newest_first(before=None, since=None, event_id=records[1].id, limit=10)
    assert _ids(one) == [records[1].id]


# -- with the resource store: the outbox and the migration ----------------------------------


def test_a_writes_staged_events_commit_and_roll_back_with_it(engine):
    """Events staged in a write's transaction are kept by its commit and gone with its
    rollback (R16: stored if and only if the write is)."""
    resources = engine.resources
    kept = audit_event("p1")
    with resources.transaction() as tx:
        keys = tx.stage_audit([kept])
    with pytest.raises(RuntimeError), resources.transaction() as tx:
        tx.stage_audit([audit_event("p2")])
        raise RuntimeError("rolled back")
    assert [(key, event["id"]) for key, event in resources.outbox()] == [(keys[0], kept["id"])]
    with resources.transaction() as tx:
        tx.clear_outbox(keys)
    assert resources.outbox() == []


def test_outbox_replay_appends_exactly_the_missing_events_once(engine):
    """A crash between a write's commit and the log's (#21): opening the store appends every
    staged event the log does not hold, in staging order, once; the outbox is then empty
    and opening again appends nothing."""
    store = engine.open()
    before = store.audit_log.append([audit_event("p0")])
    staged = [audit_event("p1"), audit_event("p2"), audit_event("p3")]
    with store.resources.transaction() as tx:  # the write committed, then the process died
        tx.stage_audit(staged)
    store.audit_log.append([staged[1]])  # ... after the log had stored one of its events

    reopened = engine.open(again=True)
    log = reopened.audit_log
    assert _ids(log.scan()) == [
        before[0].id,
        staged[1]["id"],
        staged[0]["id"],
        staged[2]["id"],
    ]
    assert reopened.resources.outbox() == []
    assert reopened.replay_outbox() == 0
    engine.open(again=True)
    assert len(list(log.scan())) == 4
    assert verify_chain(chain_of(log), expected_head=log.head()).ok


def test_a_write_through_the_composite_lands_in_the_log_and_leaves_no_outbox(engine):
    """The ordinary path: the events staged by a write reach the log when it commits; their
    outbox documents are cleared by the next write transaction."""
    store = engine.open()
    events = [audit_event("p1"), audit_event("p1")]
    with store.transaction() as tx:
        tx.stage_audit(events)
    assert _ids(store.audit_log.scan()) == [e["id"] for e in events]
    with store.transaction():
        pass
    assert store.resources.outbox() == []


def _legacy_chain(events: list[dict]) -> list[dict]:
    """The events sealed one after the other, as earlier versions sealed them."""
    sealed: list[dict] = []
    previous = GENESIS_HASH
    for sequence, event in enumerate(events, start=1):
        sealed.append(seal(event, previous, sequence))
        previous = chain_link(sealed[-1]).hash
    return sealed


def test_events_of_earlier_versions_move_to_the_log_once_with_their_chain(engine):
    """#21 deliver 3: AuditEvents stored in the resource tables by earlier versions are
    moved into the log on open, in chain order and with their links, then removed from the
    resource store; the chain then goes on from them."""
    resources = engine.resources
    sealed = _legacy_chain([audit_event("p1"), audit_event("p2"), audit_event("p1")])
    for position in (1, 0, 2):  # stored out of chain order: the move sorts by sequence
        stored = versions.stamp(dict(sealed[position]), sealed[position]["id"], 1, position + 1)
        with resources.transaction() as tx:
            tx.write(VersionWrite(stored, "POST", 0, None))

    store = engine.open()
    log = store.audit_log
    assert [(r.sequence, r.id, r.hash, r.recorded) for r in log.scan()] == [
        (n, event["id"], chain_link(event).hash, n) for n, event in enumerate(sealed, start=1)
    ]
    assert log.head() == (3, chain_link(sealed[-1]).hash)
    assert list(resources.legacy_audit_events()) == []
    assert resources.read("AuditEvent", sealed[0]["id"]) is None
    assert resources.history("AuditEvent", None, since=None, count=10, cursor=None).entries == []
    assert store.read("AuditEvent", sealed[0]["id"]).body == log.get(sealed[0]["id"]).body
    engine.open(again=True)  # opening again moves nothing twice
    assert len(list(log.scan())) == 3
    (after,) = log.append([audit_event("p1")])
    assert after.sequence == 4
    assert verify_chain(chain_of(log), expected_head=log.head()).ok


def test_events_an_earlier_version_wrote_after_the_move_are_sealed_again_at_the_end(engine):
    """#21 deliver 3, after a downgrade: an earlier version, run again on a store whose
    events had moved to the log, writes AuditEvents into the resource tables again, sealed
    into a chain of its own from the genesis. Their sequences are the log's: kept as they
    are they would fork the chain (SQLite and MongoDB refused the whole move, and so the
    store's opening). They are sealed again after the log's head, once, and the chain
    verifies; events that continue the log's head keep their links."""
    store = engine.open()
    before = store.append_audit([audit_event("p1"), audit_event("p2")])
    forked = _legacy_chain([audit_event("p1"), audit_event("p2"), audit_event("p3")])
    for position, event in enumerate(forked):
        stored = versions.stamp(dict(event), event["id"], 1, position + 10)
        with engine.resources.transaction() as tx:
            tx.write(VersionWrite(stored, "POST", 0, None))

    reopened = engine.open(again=True)
    log = reopened.audit_log
    records = list(log.scan())
    assert [r.id for r in records] == [e.id for e in before] + [e["id"] for e in forked]
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5]
    moved = {r.id: orjson.loads(r.body) for r in records[2:]}
    for event in forked:  # the same events, sealed anew: content unchanged
        assert {k: v for k, v in moved[event["id"]].items() if k not in ("meta", "extension")} == {
            k: v for k, v in event.items() if k not in ("meta", "extension")
        }
    assert verify_chain(chain_of(log), expected_head=log.head()).ok
    assert list(engine.resources.legacy_audit_events()) == []
    engine.open(again=True)  # opening again moves nothing twice
    assert len(list(log.scan())) == 5


def test_an_earlier_versions_event_whose_content_breaks_its_own_hash_is_not_sealed_again(engine):
    """Sealing an event again would launder an edit made to it in the resource tables: one
    whose content no longer matches its own link refuses the move, naming it, and the store
    does not open until it is looked at (nothing moved, nothing lost)."""
    store = engine.open()
    store.append_audit([audit_event("p1")])
    forked = _legacy_chain([audit_event("p1"), audit_event("p2")])
    forked[1] = {**forked[1], "outcome": "8"}  # edited after sealing
    for position, event in enumerate(forked):
        stored = versions.stamp(dict(event), event["id"], 1, position + 10)
        with engine.resources.transaction() as tx:
            tx.write(VersionWrite(stored, "POST", 0, None))
    with pytest.raises(ValueError, match=f"AuditEvent {forked[1]['id']} .* does not match"):
        engine.open(again=True)
    assert sum(len(chunk) for chunk in engine.resources.legacy_audit_events()) == 2
    assert len(list(store.audit_log.scan())) == 1


def _store_legacy(engine: Engine, events: list[dict]) -> None:
    for position, event in enumerate(events):
        stored = versions.stamp(dict(event), event["id"], 1, position + 10)
        with engine.resources.transaction() as tx:
            tx.write(VersionWrite(stored, "POST", 0, None))


def _resealed_alone(chain: list[dict], position: int, **edits) -> None:
    """An event of an earlier chain edited in the resource tables and its own hash computed
    again, after its own previous hash, as anyone with the files can: its content then
    matches its own link, and only the next event's link shows the edit."""
    link = chain_link(chain[position])
    chain[position] = seal({**chain[position], **edits}, link.previous, link.sequence)


@pytest.mark.parametrize("downgraded", [False, True], ids=["first-move", "after-downgrade"])
def test_r16_an_earlier_chain_edited_or_cut_in_its_middle_is_not_sealed_again(engine, downgraded):
    """R16, #21 deliver 3: sealing events again must not launder what was done to them in
    the resource tables before the move. An event edited with its own hash computed again,
    or removed, breaks the link of the event after it in their chain (which the log's own
    chain would show had they kept their links): the move is refused, naming that event,
    whether the chain is the first one moved or one an earlier version started after a
    downgrade; nothing of the chain is sealed again."""
    if downgraded:
        engine.open().append_audit([audit_event("p1"), audit_event("p2")])
    edited = _legacy_chain([audit_event("p1") for _ in range(4)])
    _resealed_alone(edited, 1, outcome="8")
    _store_legacy(engine, edited)
    with pytest.raises(ValueError, match=f"AuditEvent {edited[2]['id']} .* previous"):
        engine.open(again=True)
    assert sum(len(chunk) for chunk in engine.resources.legacy_audit_events()) == 4


@pytest.mark.parametrize("downgraded", [False, True], ids=["first-move", "after-downgrade"])
def test_r16_an_event_removed_from_an_earlier_chain_is_not_lost_unnoticed(engine, downgraded):
    """The same for an event removed from the resource tables: the one after it names the
    gap instead of being sealed again in its place, as if the removed one had never been."""
    if downgraded:
        engine.open().append_audit([audit_event("p1")])
    chain = _legacy_chain([audit_event("p1") for _ in range(3)])
    _store_legacy(engine, [chain[0], chain[2]])
    with pytest.raises(ValueError, match=f"AuditEvent {chain[2]['id']} .* previous"):
        engine.open(again=True)


# -- history cursors, as a client sends them back ---------------------------------------------


def _history_cursor(position: object) -> str:
    """A `_cursor` as a client can write one: history cursors are not signed."""
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


@pytest.mark.parametrize(
    "position",
    [2**63, 2**64 - 1, True, [2**63, "AuditEvent", "x"], [1, 2, 3], [1.5, "Patient", "x/1"]],
    ids=["2^63", "2^64-1", "true", "list-2^63", "list-of-numbers", "list-float"],
)
@pytest.mark.parametrize("resource_type", ["AuditEvent", "Patient"])
def test_r16_a_history_cursor_no_engine_can_compare_is_refused_as_invalid(
    engine, resource_type, position
):
    """`_history?_cursor=` of AuditEvents (and of resources) read its position as given: a
    number beyond 64 bits reached SQLite (OverflowError) or BSON, a list of numbers
    was compared with a type name, and the client got a 500 instead of the 400 an invalid
    cursor answers."""
    store = engine.open()
    store.audit_log.append([audit_event("p1")])
    with pytest.raises(FhirError) as refused:
        store.history(resource_type, None, since=None, count=5, cursor=_history_cursor(position))
    assert refused.value.status == 400
    assert refused.value.message == "invalid or expired paging cursor"

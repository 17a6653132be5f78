"""The MongoDB audit log's own guarantees (`store.audit_log.mongo`, issue #21), beyond the
port's contract (test_audit_log_contract.py): its layout, the head document as the point
where concurrent commits serialize, and imports in chunks. On mongomock, and on a real
MongoDB when FHIR_TEST_MONGODB_URI is set.
"""

from __future__ import annotations

import pytest

from fhir_server.audit.chain import verify_chain
from fhir_server.service import versions
from fhir_server.store.audit_log import mongo as mongo_log
from fhir_server.store.audit_log.record import seal_batch
from fhir_server.store.factory import _stamp, with_audit_log
from tests.conftest import MONGODB_URI, make_store
from tests.support.audit_log import audit_event, chain_of

MONGO_ENGINES = ["mongomock"] + (["mongodb"] if MONGODB_URI else [])


@pytest.fixture(params=MONGO_ENGINES)
def log(request, tmp_path, registry):
    resources = make_store(request.param, tmp_path, registry)
    store = with_audit_log(resources, registry)
    yield store.audit_log
    if request.param == "mongodb":
        resources.database.client.drop_database(resources.database.name)
    store.close()


def test_the_log_has_collections_of_its_own_with_the_indexes_its_searches_need(log):
    """#21 deliver 1: a narrow record in its own collection, indexed by event id (read,
    replay) and by patient in chain order (the trace view), nothing else; the head apart."""
    (record,) = log.append([audit_event("p1", "p2")])
    database = log._db
    indexes = database[mongo_log.EVENTS].index_information()
    assert {
        name: (list(spec["key"]), spec.get("unique", False)) for name, spec in indexes.items()
    } == {
        "_id_": ([("_id", 1)], False),
        "id": ([("id", 1)], True),
        "patient": ([("patients", 1), ("_id", 1)], False),
    }
    document = database[mongo_log.EVENTS].find_one({"_id": record.sequence})
    assert document["id"] == record.id and document["patients"] == ["p1", "p2"]
    assert bytes(document["body"]) == record.body
    assert database[mongo_log.HEAD].find_one({}) == {
        "_id": "head",
        "seq": record.sequence,
        "hash": record.hash,
    }


def test_a_commit_that_finds_the_head_moved_seals_its_batch_again_after_it(log, monkeypatch):
    """Two processes commit at once: the one whose head is stale when it moves the head
    (another commit got there first) is aborted and seals its batch again after the new
    head, so the chain does not fork (module docstring of `audit_log.mongo`)."""
    first = log.append([audit_event("p1")])
    second = log.append([audit_event("p1")])
    stale = (first[0].sequence, first[0].hash)
    real = log._read_head
    reads: list[tuple[int, str] | None] = []

    def read_head(session=None):
        head = real(session)
        if session is not None and not reads:
            head = stale  # read before the other process's commit landed
        reads.append(head)
        return head

    monkeypatch.setattr(log, "_read_head", read_head)
    (third,) = log.append([audit_event("p1")])
    assert reads[0] == stale and len(reads) == 2
    assert third.sequence == 3
    assert third.sequence == second[0].sequence + 1
    report = verify_chain(chain_of(log), expected_head=log.head())
    assert report.ok and report.checked == 3


def test_in_one_group_commit_only_the_append_of_a_held_id_fails(log):
    """Appends share a commit; one that repeats an id the log holds fails alone, and the
    others of its batch are stored, in order, with an unbroken chain."""
    held = audit_event("p1")
    log.append([held])
    fresh, repeated, replayed = (
        mongo_log.PendingAppend([audit_event("p2")], False),
        mongo_log.PendingAppend([dict(held)], False),
        mongo_log.PendingAppend([dict(held), audit_event("p3")], True),
    )
    log._commit([fresh, repeated, replayed])
    assert repeated.error is not None and repeated.records == []
    assert fresh.error is None and [r.sequence for r in fresh.records] == [2]
    assert replayed.error is None and [r.sequence for r in replayed.records] == [3]
    assert [r.id for r in log.scan()] == [
        held["id"],
        fresh.events[0]["id"],
        replayed.events[1]["id"],
    ]
    assert verify_chain(chain_of(log), expected_head=log.head()).ok


def test_an_import_runs_in_chunks_and_one_cut_short_is_finished_by_the_next(log, monkeypatch):
    """A migration of millions of events cannot be one transaction: it is stored in chunks,
    each with the head at its newest event, so one cut short leaves a chain that verifies,
    and importing again stores the rest."""
    monkeypatch.setattr(mongo_log, "IMPORT_CHUNK", 2)
    records = seal_batch([audit_event("p1") for _ in range(5)], None, versions.now_us(), _stamp)
    real = log._import
    calls = []

    def crash_on_the_second_chunk(session, chunk):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise RuntimeError("the process died")
        return real(session, chunk)

    monkeypatch.setattr(log, "_import", crash_on_the_second_chunk)
    with pytest.raises(RuntimeError):
        log.import_sealed(records)
    assert log.head() == (2, records[1].hash)
    assert verify_chain(chain_of(log), expected_head=log.head()).ok

    monkeypatch.setattr(log, "_import", real)
    assert log.import_sealed(records) == 3
    assert log.head() == (5, records[4].hash)
    assert [r.id for r in log.scan()] == [r.id for r in records]


def test_a_log_whose_head_was_set_back_refuses_appends_rather_than_fork(log):
    """R16, fail closed: if the head document is behind the events (the log was edited
    behind the server's back), an append cannot take a sequence already used; it fails
    and stores nothing, and `audit verify` names the mismatch."""
    first, second = log.append([audit_event("p1"), audit_event("p1")])
    log._db[mongo_log.HEAD].update_one(
        {"_id": "head"}, {"$set": {"seq": first.sequence, "hash": first.hash}}
    )
    with pytest.raises(Exception, match="(?i)duplicate"):
        log.append([audit_event("p1")])
    assert [r.id for r in log.scan()] == [first.id, second.id]
    assert not verify_chain(chain_of(log), expected_head=log.head()).ok

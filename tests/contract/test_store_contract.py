"""The ResourceStore port's contract, run on every engine (docs/architecture.md, invariant 4)."""

from __future__ import annotations

import pytest

from fhir_server.search.index import IndexEntries, TokenEntry
from fhir_server.service import versions
from fhir_server.store.base import PATIENTS_EPOCH, StoredResource, VersionConflict, VersionWrite


def _version(
    resource_id: str, version: int, *, at: int, deleted: bool = False, family: str = "A"
) -> VersionWrite:
    if deleted:
        stored = versions.tombstone("Patient", resource_id, version, at)
        return VersionWrite(stored, "DELETE", version - 1, None)
    body = {"resourceType": "Patient", "name": [{"family": family}]}
    stored = versions.stamp(body, resource_id, version, at)
    index = IndexEntries(tokens=[TokenEntry("_id", None, resource_id)])
    return VersionWrite(
        stored, "POST" if version == 1 else "PUT", version - 1, index, {}, resource_id
    )


def test_written_version_is_read_back_byte_identical(engine_store):
    write = _version("p1", 1, at=1_000)
    with engine_store.transaction() as tx:
        tx.write(write)
    stored = engine_store.read("Patient", "p1")
    assert stored == StoredResource("Patient", "p1", 1, 1_000, False, write.resource.body)
    assert engine_store.read("Patient", "unknown") is None


def test_versions_are_kept_and_vread_returns_each(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000, family="One"))
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 2, at=2_000, family="Two"))
    assert engine_store.read("Patient", "p1").version == 2
    assert engine_store.vread("Patient", "p1", 1).json()["name"][0]["family"] == "One"
    assert engine_store.vread("Patient", "p1", 2).json()["name"][0]["family"] == "Two"
    assert engine_store.vread("Patient", "p1", 3) is None


def test_stale_expected_version_is_a_conflict(engine_store):
    """Optimistic locking: a writer that read version 1 cannot overwrite version 2."""
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 2, at=2_000))
    with pytest.raises(VersionConflict), engine_store.transaction() as tx:
        tx.write(_version("p1", 2, at=3_000))
    assert engine_store.read("Patient", "p1").last_updated == 2_000


def test_creating_an_existing_id_is_a_conflict(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
    with pytest.raises(VersionConflict), engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=2_000))


def test_a_failing_unit_of_work_stores_nothing(engine_store):
    """Invariant 5: stored whole or not at all, history included."""
    with pytest.raises(RuntimeError), engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
        tx.write(_version("p2", 1, at=1_000))
        raise RuntimeError("entry 3 failed")
    assert engine_store.read("Patient", "p1") is None
    assert engine_store.read("Patient", "p2") is None
    assert engine_store.history(None, None, since=None, count=10, cursor=None).entries == []


def test_reads_inside_a_transaction_see_its_own_writes(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
        assert tx.read("Patient", "p1").version == 1


def test_deletion_keeps_a_tombstone_and_the_history(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 2, at=2_000, deleted=True))
    current = engine_store.read("Patient", "p1")
    assert current.deleted and current.version == 2
    assert not engine_store.vread("Patient", "p1", 1).deleted
    methods = [
        e.method
        for e in engine_store.history("Patient", "p1", since=None, count=10, cursor=None).entries
    ]
    assert methods == ["DELETE", "POST"]


def test_history_pages_newest_first_without_gaps_or_repeats(engine_store):
    """http.html#history: newest first; paging neither skips nor repeats an entry."""
    with engine_store.transaction() as tx:
        for n in range(7):
            tx.write(_version(f"p{n}", 1, at=1_000 + n))
    seen: list[str] = []
    cursor = None
    while True:
        page = engine_store.history("Patient", None, since=None, count=3, cursor=cursor)
        seen += [e.resource.id for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
        # A write between pages must not shift what the next page returns.
        with engine_store.transaction() as tx:
            tx.write(_version(f"late{len(seen)}", 1, at=9_000 + len(seen)))
    assert seen == [f"p{n}" for n in reversed(range(7))]


def test_history_since_filters_by_last_updated(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("old", 1, at=1_000))
        tx.write(_version("new", 1, at=5_000))
    page = engine_store.history(None, None, since=2_000, count=10, cursor=None)
    assert [e.resource.id for e in page.entries] == ["new"]


def test_system_history_spans_types(engine_store):
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
        consent = versions.stamp({"resourceType": "Consent", "status": "active"}, "c1", 1, 2_000)
        tx.write(VersionWrite(consent, "POST", 0, IndexEntries(), {}, ""))
    page = engine_store.history(None, None, since=None, count=10, cursor=None)
    assert [(e.resource.resource_type, e.resource.id) for e in page.entries] == [
        ("Consent", "c1"),
        ("Patient", "p1"),
    ]


def test_tampered_history_cursor_is_a_clean_error(engine_store):
    from fhir_server.errors import FhirError

    with pytest.raises(FhirError) as raised:
        engine_store.history(None, None, since=None, count=3, cursor="not-a-cursor!")
    assert raised.value.status == 400


def test_a_history_cursor_holding_more_than_its_position_is_refused(engine_store):
    """R18: the history's event keeps the request as asked, so a cursor carrying a value
    beside the position the store reads (a hidden document's id) is refused, not served."""
    import base64

    import orjson

    from fhir_server.errors import FhirError

    with engine_store.transaction() as tx:
        for n in range(3):
            tx.write(_version(f"p{n}", 1, at=1_000 + n))
    cursor = engine_store.history("Patient", None, since=None, count=1, cursor=None).next_cursor
    assert cursor is not None
    assert engine_store.history("Patient", None, since=None, count=1, cursor=cursor).entries
    held = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged = base64.urlsafe_b64encode(orjson.dumps(held | {"x": "hidden"})).decode()
    with pytest.raises(FhirError) as raised:
        engine_store.history("Patient", None, since=None, count=1, cursor=forged.rstrip("="))
    assert raised.value.status == 400


def test_store_answers_ping(engine_store):
    assert engine_store.ping()


def test_r17_last_notified_day_is_kept_with_the_transaction(engine_store):
    """R17: the day a patient was last told of a practitioner's access commits or rolls back
    with its transaction, per (patient, practitioner)."""
    with engine_store.transaction() as tx:
        assert tx.notified_day("p1", "810000000001") is None
        tx.set_notified_day("p1", "810000000001", "2024-03-01")
    with pytest.raises(RuntimeError), engine_store.transaction() as tx:
        tx.set_notified_day("p1", "810000000001", "2024-03-02")
        raise RuntimeError("rolled back")
    with engine_store.transaction() as tx:
        assert tx.notified_day("p1", "810000000001") == "2024-03-01"
        assert tx.notified_day("p1", "810000000002") is None
        assert tx.notified_day("p2", "810000000001") is None
        tx.set_notified_day("p1", "810000000001", "2024-03-03")
    with engine_store.transaction() as tx:
        assert tx.notified_day("p1", "810000000001") == "2024-03-03"


def test_r03_purge_removes_current_version_history_and_index_entries(engine_store):
    """R03 retention: a purged resource is gone from reads, vreads, history and searches."""
    from fhir_server.search.query import IdTest, SearchQuery

    with engine_store.transaction() as tx:
        tx.write(_version("gone", 1, at=1_000))
        tx.write(_version("kept", 1, at=1_001))
    with engine_store.transaction() as tx:
        tx.write(_version("gone", 2, at=2_000, family="B"))
    with engine_store.transaction() as tx:
        tx.purge("Patient", "gone")
    assert engine_store.read("Patient", "gone") is None
    assert engine_store.vread("Patient", "gone", 1) is None
    assert engine_store.history("Patient", "gone", since=None, count=10, cursor=None).entries == []
    page = engine_store.search(
        SearchQuery("Patient", where=IdTest(("gone", "kept"))),
        cursor_key=b"k" * 32,
        cursor_binding="t",
    )
    assert [row[1] for row in page.rows] == ["kept"]
    assert engine_store.read("Patient", "kept") is not None
    with pytest.raises(ValueError), engine_store.transaction() as tx:
        tx.purge("AuditEvent", "any")


def test_record_epoch_moves_only_with_its_transaction(engine_store):
    """The record-facts cache validator: bumped atomically with the write that changes them."""
    assert engine_store.record_epoch("p1") == 0
    with engine_store.transaction() as tx:
        tx.bump_record_epoch("p1")
    with pytest.raises(RuntimeError), engine_store.transaction() as tx:
        tx.bump_record_epoch("p1")
        raise RuntimeError("rolled back")
    assert engine_store.record_epoch("p1") == 1
    assert engine_store.record_epoch("p2") == 0


def test_every_patient_write_and_purge_moves_the_patients_epoch(engine_store):
    """R04 designation: what a Patient identifier resolves to is cached while
    PATIENTS_EPOCH holds, so every engine moves it with each Patient write or purge."""
    assert engine_store.record_epoch(PATIENTS_EPOCH) == 0
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 1, at=1_000))
    assert engine_store.record_epoch(PATIENTS_EPOCH) == 1
    with engine_store.transaction() as tx:
        tx.write(_version("p1", 2, at=2_000, family="Other"))
    assert engine_store.record_epoch(PATIENTS_EPOCH) == 2
    with engine_store.transaction() as tx:
        tx.purge("Patient", "p1")
    assert engine_store.record_epoch(PATIENTS_EPOCH) == 3

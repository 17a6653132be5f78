"""What `fhir-server audit verify` checks (R16, issue #21 deliverable 2: "document what an
auditor verifies"), on every engine.

The hash chain covers each event's sealed body. Reads, `_history` and the patients' trace
view go by the narrow record beside it (id, recorded, requestor, action, subtype, outcome,
labels, chain hash) and by its patient keys. Edited behind the server's back, a column or
a key would change what the patient is shown (a removed key hides an event from them)
without breaking the chain; so verify also checks each record and its keys against the
body, and names the first event that differs, in chain order.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from fhir_server.audit.verify import verify_store
from fhir_server.cli import main
from fhir_server.config import load_settings
from fhir_server.errors import FhirError
from fhir_server.store.factory import open_store, with_audit_log
from fhir_server.store.with_audit_log import StoreWithAuditLog
from tests.conftest import ENGINES, make_store
from tests.support.audit_log import audit_event


@dataclass
class Log:
    engine: str
    store: StoreWithAuditLog

    def tamper(self, sequence: int, **columns) -> None:
        """Edit the narrow record of event `sequence`, as someone with the files could."""
        log = self.store.audit_log
        if self.engine == "sqlite":
            sets = ", ".join(f"{column} = ?" for column in columns)
            log._writer.execute(
                f"UPDATE event SET {sets} WHERE seq = ?", (*columns.values(), sequence)
            )
        else:
            log._events.update_one({"_id": sequence}, {"$set": columns})

    def drop_key(self, sequence: int, patient: str) -> None:
        self._edit_key(sequence, patient, add=False)

    def add_key(self, sequence: int, patient: str) -> None:
        self._edit_key(sequence, patient, add=True)

    def _edit_key(self, sequence: int, patient: str, *, add: bool) -> None:
        """A patient key of event `sequence` added or removed: SQLite's key table, MongoDB's
        `patients` field."""
        log = self.store.audit_log
        if self.engine == "sqlite":
            statement = (
                "INSERT INTO event_patient (seq, patient) VALUES (?, ?)"
                if add
                else "DELETE FROM event_patient WHERE seq = ? AND patient = ?"
            )
            log._writer.execute(statement, (sequence, patient))
        else:
            change = "$addToSet" if add else "$pull"
            log._events.update_one({"_id": sequence}, {change: {"patients": patient}})

    def body(self, sequence: int) -> bytes:
        return next(r for r in self.store.audit_log.scan() if r.sequence == sequence).body

    def edit_body(self, sequence: int, **fields) -> None:
        self.set_body(sequence, orjson.dumps({**orjson.loads(self.body(sequence)), **fields}))

    def set_body(self, sequence: int, body: bytes) -> None:
        if self.engine == "sqlite":
            self.store.audit_log._writer.execute(
                "UPDATE event SET body = ? WHERE seq = ?", (body, sequence)
            )
        else:
            from bson import Binary

            self.store.audit_log._events.update_one(
                {"_id": sequence}, {"$set": {"body": Binary(body)}}
            )


@pytest.fixture(params=ENGINES)
def log(request, tmp_path, registry) -> Iterator[Log]:
    resources = make_store(request.param, tmp_path, registry)
    store = with_audit_log(resources, registry)
    store.append_audit(
        [
            audit_event("p1"),
            audit_event("p1", "p2"),
            audit_event("p2", agent="Patient/p2"),
            audit_event("p1"),
        ]
    )
    yield Log(request.param, store)
    if request.param == "mongodb":
        resources.database.client.drop_database(resources.database.name)
    store.close()


def _ids(store: StoreWithAuditLog) -> list[str]:
    return [record.id for record in store.audit_log.scan()]


def test_an_untouched_log_verifies(log):
    report = verify_store(log.store)
    assert report.ok and report.checked == 4


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [
        ("agent", "Practitioner/someone-else", "agent"),
        ("action", "C", "action"),
        ("subtype", "vread", "subtype"),
        ("outcome", "8", "outcome"),
        ("labels", "INVISIBLE_PATIENT", "labels"),
        ("hash", "f" * 64, "hash"),
        ("recorded", 1_000_000_000_000_000, "recorded"),
    ],
)
def test_a_narrow_column_edited_behind_the_servers_back_is_named(log, column, value, named):
    log.tamper(2, **{column: value})
    report = verify_store(log.store)
    assert not report.ok
    assert (report.sequence, report.event_id) == (2, _ids(log.store)[1])
    assert report.reason.startswith(f"its {named} column")


def test_an_event_id_edited_is_named_and_a_read_by_the_old_id_finds_nothing(log):
    original = _ids(log.store)[2]
    log.tamper(3, id="not-the-sealed-id")
    assert log.store.audit_log.get(original) is None  # what a read of the event answers
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 3, "not-the-sealed-id")
    assert report.reason.startswith("its id column")


def test_a_removed_patient_key_hides_the_event_from_the_patient_and_is_named(log):
    hidden = _ids(log.store)[1]
    log.drop_key(2, "p2")
    # The consequence: the patient's trace view (R16) no longer finds the event.
    assert hidden not in [record.id for record in log.store.audit_log.scan(["p2"])]
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, hidden)
    assert report.reason == (
        "its patient keys ['p1'] are not the Patients its body names ['p1', 'p2']"
    )


def test_a_patient_key_added_to_an_event_is_named(log):
    log.add_key(3, "p1")
    report = verify_store(log.store)
    assert (report.ok, report.sequence) == (False, 3)
    assert "['p1', 'p2']" in report.reason and "names ['p2']" in report.reason


@pytest.mark.parametrize(
    "sequence", [0, 99, "abc", b"\x00"], ids=["before", "after", "text", "blob"]
)
def test_a_patient_key_naming_no_event_is_named(tmp_path, registry, sequence):
    """SQLite keeps the keys in a table of their own (MongoDB in each event's document),
    whose sequence column keeps a text or a blob as it is (R16: named, not a crash)."""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1"), audit_event("p1")])
        store.audit_log._writer.execute(
            "INSERT INTO event_patient (patient, seq) VALUES ('p9', ?)", (sequence,)
        )
        report = verify_store(store)
        assert not report.ok
        assert report.reason == (
            f"a patient key (Patient p9) names sequence {sequence}, which holds no event"
        )
    finally:
        store.close()


def test_the_first_problem_in_chain_order_is_named(log):
    """A chain break after an edited record: the record is named; before it: the break."""
    ids = _ids(log.store)
    log.tamper(2, outcome="8")
    log.edit_body(4, outcome="4")
    assert (verify_store(log.store).sequence, verify_store(log.store).event_id) == (2, ids[1])

    log.tamper(2, outcome="0")  # restored
    log.edit_body(1, outcome="4")
    report = verify_store(log.store)
    assert (report.sequence, report.event_id) == (1, ids[0])
    assert report.reason == "the event's content does not match its hash (modified)"


def test_the_command_names_the_event_and_exits_1(tmp_path: Path, registry, capsys):
    settings = load_settings({"data_dir": tmp_path})
    store = open_store(settings, registry)
    try:
        first, second = store.append_audit([audit_event("p1"), audit_event("p1", "p2")])
    finally:
        store.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "audit chain intact: 2 AuditEvents" in capsys.readouterr().out

    store = open_store(settings, registry)
    try:
        store.audit_log._writer.execute("DELETE FROM event_patient WHERE seq = 2")
    finally:
        store.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"audit log broken at sequence 2 (AuditEvent {second.id})" in error
    assert "its patient keys [] are not the Patients its body names ['p1', 'p2']" in error


def _set_head(log: Log, sequence: int) -> None:
    """The recorded head moved back to `sequence`, as someone with the files could."""
    audit_log = log.store.audit_log
    digest = next(r.hash for r in audit_log.scan() if r.sequence == sequence)
    if log.engine == "sqlite":
        audit_log._writer.execute("UPDATE head SET seq = ?, hash = ?", (sequence, digest))
    else:
        audit_log._head_collection.update_one(
            {"_id": "head"}, {"$set": {"seq": sequence, "hash": digest}}
        )


def test_verify_beside_a_server_appending_reports_no_break(log):
    """An auditor runs verify beside the live server (MongoDB is the production engine):
    an event the server appends after verify has read the head is not "beyond the head"
    nor missing its patient keys. SQLite reads the first page in the keys' snapshot and
    checks the 4 events of that snapshot; MongoDB, whose reads share none, re-reads the head
    and the keys when the scan meets the new event, and checks 5."""
    audit_log = log.store.audit_log
    scan = audit_log.scan

    def scan_after_an_append(*args, **kwargs):
        log.store.append_audit([audit_event("p2", "p3")])  # another request, through the writer
        return scan(*args, **kwargs)

    audit_log.scan = scan_after_an_append
    report = verify_store(log.store)
    audit_log.scan = scan
    assert (report.ok, report.reason) == (True, None)
    assert report.checked == (4 if log.engine == "sqlite" else 5)
    assert verify_store(log.store).checked == 5


def test_verify_beside_a_server_appending_after_the_scan_finds_no_orphan_key(log):
    """The keys beyond those read are checked at the end (a key naming no event), against
    a head read after them: an event appended after the scan keeps its keys."""
    audit_log = log.store.audit_log
    patient_keys = audit_log.patient_keys
    appended: list[bool] = []

    def keys_after_an_append(*, after=None, up_to=None):
        if after is not None and up_to is None and not appended:
            log.store.append_audit([audit_event("p3")])
            appended.append(True)
        return patient_keys(after=after, up_to=up_to)

    audit_log.patient_keys = keys_after_an_append
    report = verify_store(log.store)
    audit_log.patient_keys = patient_keys
    assert appended == [True]
    assert (report.ok, report.checked, report.reason) == (True, 4, None)


def test_r16_an_event_beyond_the_recorded_head_is_named(log):
    """Re-reading the head when the scan meets an event beyond it must not let an event
    appended behind the server's back pass (the head did not move to cover it): the next
    commit would seal the same sequence again."""
    _set_head(log, 3)
    report = verify_store(log.store)
    assert (report.ok, report.checked, report.sequence) == (False, 4, 4)
    assert report.reason == "events follow the recorded head (sequence 3)"


# -- attack pass (R16: "audit verify checks the chain and names the first break") -------------
# Someone with the files edits the log so that the server answers differently while the
# chain, computed on the parsed body, still holds.


def _with_extension(body: bytes, *extra: object) -> bytes:
    event = orjson.loads(body)
    return orjson.dumps({**event, "extension": [*event["extension"], *extra]})


@pytest.mark.parametrize(
    "respell",
    [
        # orjson (the chain, the search, the trace view) takes the last of duplicate keys;
        # the bytes served carry the first too, which a client may read instead.
        lambda body: body.replace(b'"outcome":"0"', b'"outcome":"8","outcome":"0"'),
        lambda body: body.replace(b'"action":"R"', b'"action" : "R"'),
        lambda body: body.replace(b"Patient/p2", b"Patient\\/p2"),
        lambda body: body.replace(b'"outcome":"0"', b'"outcome":"\\u0030"'),
    ],
    ids=["duplicate-key", "whitespace", "escaped-solidus", "unicode-escape"],
)
def test_r16_a_body_respelled_to_parse_to_its_sealed_event_is_named(log, respell):
    """The chain hashes the parsed body, but a read serves the stored bytes: bytes that parse
    to the sealed event yet are not what the server wrote are what the user gets."""
    event_id = _ids(log.store)[1]
    original = log.store.read("AuditEvent", event_id).body
    log.set_body(2, respell(log.body(2)))
    served = log.store.read("AuditEvent", event_id).body
    assert served != original and orjson.loads(served) == orjson.loads(original)
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, event_id)
    assert report.reason == (
        "its body is not the bytes the server writes for the event it parses to "
        "(respelled: duplicate keys, spacing or escapes)"
    )


@pytest.mark.parametrize(
    ("garble", "reason"),
    [
        (lambda body: b"not JSON", "its body is not JSON ("),
        (lambda body: b"\xef\xbb\xbf" + body, "its body is not JSON ("),
        (lambda body: b"[]", "its body is not a JSON object"),
        (lambda body: body.replace(b'"extension":[', b'"extension":["x",'), "its body is not a"),
        (lambda body: _with_extension(body, "x"), "the event's content does not match its hash"),
    ],
    ids=["not-json", "bom", "array", "extension-before-link", "extension-after-link"],
)
def test_r16_a_garbled_body_is_named_not_a_crash(log, garble, reason):
    """A read serves the garbled bytes; verify names the event instead of stopping on it."""
    event_id = _ids(log.store)[1]
    log.set_body(2, garble(log.body(2)))
    assert log.store.read("AuditEvent", event_id).body == log.body(2)
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, event_id)
    assert report.reason.startswith(reason)


@pytest.mark.parametrize("engine", [engine for engine in ENGINES if engine != "sqlite"])
def test_r16_a_sequence_stored_as_a_double_is_named(tmp_path, registry, engine):
    """MongoDB keeps any number as `_id`; 3.0 equals 3 and sorts in its place, but the
    `_history` page ending on it links a next page the server then refuses. (SQLite's
    `seq`, the rowid, is always an integer.)"""
    store = with_audit_log(make_store(engine, tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1") for _ in range(4)])
        events = store.audit_log._events
        document = events.find_one({"_id": 3})
        events.delete_one({"_id": 3})
        events.insert_one({**document, "_id": 3.0})
        page = store.history("AuditEvent", None, since=None, count=2, cursor=None)
        with pytest.raises(FhirError, match="invalid or expired paging cursor"):
            store.history("AuditEvent", None, since=None, count=2, cursor=page.next_cursor)
        report = verify_store(store)
        assert (report.ok, report.sequence, report.event_id) == (False, 3, document["id"])
        assert report.reason == "its sequence column (3.0) is not its body's (3)"
    finally:
        if engine == "mongodb":
            store.resources.database.client.drop_database(store.resources.database.name)
        store.close()


@pytest.mark.parametrize("engine", [engine for engine in ENGINES if engine != "sqlite"])
def test_r16_a_head_sequence_stored_as_a_double_is_named(tmp_path, registry, engine):
    """MongoDB's head document with `seq` 4.0: it equals the chain's 4, but the next commit
    seals its event after it, as sequence 5.0, which the user is then served."""
    store = with_audit_log(make_store(engine, tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1") for _ in range(4)])
        store.audit_log._head_collection.update_one({"_id": "head"}, {"$set": {"seq": 4.0}})
        report = verify_store(store)
        assert (report.ok, report.sequence, report.event_id) == (False, None, None)
        assert report.reason.startswith("the recorded head (4.0, ")
        assert report.reason.endswith(") is not a sequence number and a hash")
        (fifth,) = store.append_audit([audit_event("p1")])
        assert b'{"url":"sequence","valueInteger":5.0}' in store.read("AuditEvent", fifth.id).body
    finally:
        if engine == "mongodb":
            store.resources.database.client.drop_database(store.resources.database.name)
        store.close()


@pytest.mark.parametrize("engine", [engine for engine in ENGINES if engine != "sqlite"])
@pytest.mark.parametrize("field", ["seq", "hash"])
def test_r16_a_head_document_missing_a_field_is_named_not_a_crash(
    tmp_path, registry, engine, field
):
    """MongoDB's head document with a field removed (SQLite's columns are NOT NULL): verify
    names the head as malformed instead of failing with a KeyError, and the next commit is
    refused rather than sealed after a head it cannot read."""
    store = with_audit_log(make_store(engine, tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1") for _ in range(2)])
        store.audit_log._head_collection.update_one({"_id": "head"}, {"$unset": {field: ""}})
        report = verify_store(store)
        assert (report.ok, report.sequence, report.event_id) == (False, None, None)
        assert report.reason.startswith("the recorded head (")
        assert report.reason.endswith(") is not a sequence number and a hash")
        with pytest.raises((TypeError, ValueError)):
            store.append_audit([audit_event("p1")])
        assert len(list(store.audit_log.scan())) == 2
    finally:
        if engine == "mongodb":
            store.resources.database.client.drop_database(store.resources.database.name)
        store.close()


@pytest.mark.parametrize("sequence", [0, -7])
def test_r16_a_row_below_the_first_sequence_is_named(log, sequence):
    """A copy of event 2 under another id, at a sequence below 1: a read serves it and
    `_history` lists it, so verify must read it too (on SQLite its scan started above 0)."""
    if log.engine == "sqlite":
        log.store.audit_log._writer.execute(
            "INSERT INTO event (seq, id, recorded, hash, agent, action, subtype, outcome, "
            "labels, body, patients) SELECT ?, 'forged', recorded, hash, agent, action, "
            "subtype, outcome, labels, body, '[]' FROM event WHERE seq = 2",
            (sequence,),
        )
    else:
        document = log.store.audit_log._events.find_one({"_id": 2})
        log.store.audit_log._events.insert_one(
            {**document, "_id": sequence, "id": "forged", "patients": []}
        )
    assert log.store.read("AuditEvent", "forged") is not None
    page = log.store.history("AuditEvent", None, since=None, count=10, cursor=None)
    assert "forged" in [entry.resource.id for entry in page.entries]
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.position) == (False, 1, 0)
    assert report.reason == (
        "sequence 2 found where 1 was expected (an event was deleted, inserted or moved)"
    )


@pytest.mark.parametrize("version", ["7", None])
def test_r16_an_edited_version_id_is_named(log, version):
    """meta.versionId is outside the hash (storage bookkeeping written after sealing): edited,
    the event is served as a version the log never kept (its ETag still says W/"1")."""
    event = orjson.loads(log.body(2))
    event["meta"] = {k: v for k, v in event["meta"].items() if k != "versionId"}
    if version is not None:
        event["meta"] = {"versionId": version, **event["meta"]}
    log.set_body(2, orjson.dumps(event))
    served = orjson.loads(log.store.read("AuditEvent", event["id"]).body)
    assert served["meta"].get("versionId") == version
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, event["id"])
    assert report.reason == f"its meta.versionId ({version!r}) is not '1', the log's one version"


def _second_link(event: dict) -> None:
    event["extension"].append({**event["extension"][-1], "extension": []})


def _extra_part(event: dict) -> None:
    event["extension"][-1]["extension"].append({"url": "note", "valueString": "forged"})


def _extra_field(event: dict) -> None:
    event["extension"][-1]["valueString"] = "forged"


@pytest.mark.parametrize("edit", [_second_link, _extra_part, _extra_field])
def test_r16_an_audit_chain_extension_edited_outside_its_link_is_named(log, edit):
    """The hash leaves out every audit-chain extension and the link is read from the first:
    what else an edit puts in them is served unsealed."""
    event = orjson.loads(log.body(2))
    edit(event)
    log.set_body(2, orjson.dumps(event))
    assert orjson.loads(log.store.read("AuditEvent", event["id"]).body) == event
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, event["id"])
    assert report.reason == "its audit-chain extension is not the one the server writes"


def test_r16_a_record_the_engine_cannot_read_is_named(log):
    """The body stored as text (SQLite) or a string (MongoDB) instead of bytes: a read of
    the event fails; verify names where, instead of stopping on it."""
    event_id = _ids(log.store)[1]
    if log.engine == "sqlite":
        log.store.audit_log._writer.execute(
            "UPDATE event SET body = CAST(body AS TEXT) WHERE seq = 2"
        )
    else:
        body = log.body(2).decode()
        log.store.audit_log._events.update_one({"_id": 2}, {"$set": {"body": body}})
    with pytest.raises(TypeError):
        log.store.read("AuditEvent", event_id)
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, None)
    assert report.reason.startswith("the record after sequence 1 cannot be read (TypeError(")


def test_r16_a_removed_head_is_named(log):
    """Without its head the log seals the next event as sequence 1 again, which the events
    already held refuse: every audited request fails, while the events alone verify."""
    if log.engine == "sqlite":
        log.store.audit_log._writer.execute("DELETE FROM head")
    else:
        log.store.audit_log._head_collection.delete_many({})
    with pytest.raises(Exception):  # noqa: B017 - each engine's own refusal
        log.store.append_audit([audit_event("p1")])
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, None, None)
    assert report.reason == "the log holds 4 events but no recorded head"


def test_r16_history_since_goes_by_the_millisecond_served(log):
    """The body serves meta.lastUpdated to the millisecond; the recorded column keeps
    microseconds, which verify cannot check against it. Moved within its millisecond, the
    event must answer a `_history?_since=` the same (it verifies either way)."""
    record = next(r for r in log.store.audit_log.scan() if r.sequence == 2)
    millisecond = record.recorded // 1000 * 1000
    since = millisecond + 500

    def history() -> list[str]:
        page = log.store.history("AuditEvent", None, since=since, count=10, cursor=None)
        return [entry.resource.id for entry in page.entries]

    log.tamper(2, recorded=millisecond)
    assert verify_store(log.store).ok
    early = history()
    log.tamper(2, recorded=millisecond + 999)
    assert verify_store(log.store).ok
    assert history() == early


@pytest.mark.parametrize("engine", ENGINES)
def test_r16_a_patient_key_that_is_not_a_string_is_named(tmp_path, registry, engine):
    """A key of another type finds nothing for any patient; verify names it, not a crash."""
    store = with_audit_log(make_store(engine, tmp_path, registry), registry)
    try:
        (event,) = store.append_audit([audit_event("p1")])
        if engine == "sqlite":
            store.audit_log._writer.execute(
                "INSERT INTO event_patient (patient, seq) VALUES (?, 1)", (b"p1",)
            )
        else:
            store.audit_log._events.update_one({"_id": 1}, {"$push": {"patients": ["p1"]}})
        report = verify_store(store)
        assert (report.ok, report.sequence, report.event_id) == (False, 1, event.id)
        assert report.reason.startswith("its patient keys ")
        assert "are not all Patient ids" in report.reason
    finally:
        if engine == "mongodb":
            store.resources.database.client.drop_database(store.resources.database.name)
        store.close()


def _rewrite_log_file(store: StoreWithAuditLog, *statements: str) -> StoreWithAuditLog:
    """Close the SQLite store, run `statements` on its log file as someone with the files
    could, and open it again."""
    path, resources_path = store.audit_log.path, store.resources.path
    registry = store.registry
    store.close()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()
    from fhir_server.store.sqlite import SqliteStore

    return with_audit_log(SqliteStore(resources_path), registry)


def test_r16_an_index_that_disagrees_with_its_table_is_named(tmp_path, registry):
    """SQLite: the id index's B-tree swapped for one without event 2 (the schema made
    writable). A read of the event then finds nothing, while the scan verify reads goes by
    the table: the file's own integrity check names it."""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    events = store.append_audit([audit_event("p1") for _ in range(3)])
    hidden = events[1].id
    connection = store.audit_log._writer
    connection.execute(f"CREATE INDEX decoy ON event (id) WHERE id != '{hidden}'")
    roots = dict(connection.execute("SELECT name, rootpage FROM sqlite_master"))
    auto, decoy = roots["sqlite_autoindex_event_1"], roots["decoy"]
    store = _rewrite_log_file(
        store,
        "PRAGMA writable_schema = ON",
        f"UPDATE sqlite_master SET rootpage = {decoy} WHERE name = 'sqlite_autoindex_event_1'",
        f"UPDATE sqlite_master SET rootpage = {auto} WHERE name = 'decoy'",
    )
    try:
        assert store.read("AuditEvent", hidden) is None  # what the patient's read answers
        report = verify_store(store)
        assert not report.ok
        assert report.reason.startswith("the log file's integrity check fails: ")
        assert "row 2 missing from index sqlite_autoindex_event_1" in report.reason
    finally:
        store.close()


def test_r16_a_read_finds_only_the_event_of_the_id_asked(tmp_path, registry):
    """SQLite: the event table rebuilt with a case-blind id (COLLATE NOCASE), a consistent
    file. A read or `_history` of the id in capitals must still find nothing, as FHIR ids
    are case-sensitive; verify names the id index's collation."""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    (event,) = store.append_audit([audit_event("p1")])
    (table,) = store.audit_log._writer.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'event'"
    ).fetchone()
    blind = table.replace("CREATE TABLE event", "CREATE TABLE blind").replace(
        "id TEXT NOT NULL UNIQUE", "id TEXT NOT NULL UNIQUE COLLATE NOCASE"
    )
    store = _rewrite_log_file(
        store,
        blind,
        "INSERT INTO blind SELECT * FROM event",
        "DROP TABLE event",
        "ALTER TABLE blind RENAME TO event",
    )
    try:
        report = verify_store(store)
        assert not report.ok
        assert report.reason == (
            "the log file's index sqlite_autoindex_event_1 is not the one the server creates"
        )
        assert store.read("AuditEvent", event.id).body == event.body
        assert store.read("AuditEvent", event.id.upper()) is None
        page = store.history("AuditEvent", event.id.upper(), since=None, count=10, cursor=None)
        assert page.entries == []
    finally:
        store.close()


def test_r16_the_patient_keys_collation_is_the_servers(tmp_path, registry):
    """SQLite: the key table rebuilt with a case-blind patient (COLLATE NOCASE), a
    consistent file. Its primary key, which the trace view's scan goes by, is an index
    sqlite_master does not list; its collation is compared all the same. (Patients `a` and
    `A` are two records: an event naming both could no longer be keyed, and so appended.)"""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    store.append_audit([audit_event("p1"), audit_event("p1", "p2")])
    (table,) = store.audit_log._writer.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'event_patient'"
    ).fetchone()
    blind = table.replace("CREATE TABLE event_patient", "CREATE TABLE blind").replace(
        "patient TEXT NOT NULL,", "patient TEXT NOT NULL COLLATE NOCASE,"
    )
    assert blind != table.replace("CREATE TABLE event_patient", "CREATE TABLE blind")
    from fhir_server.store.audit_log.sqlite import TRIGGER

    store = _rewrite_log_file(
        store,
        "DROP TRIGGER event_keys",  # it names the table
        blind,
        "INSERT INTO blind SELECT * FROM event_patient",
        "DROP TABLE event_patient",
        "ALTER TABLE blind RENAME TO event_patient",
        TRIGGER,
    )
    try:
        report = verify_store(store)
        assert (report.ok, report.reason) == (
            False,
            "the log file's table event_patient is not the one the server creates",
        )
    finally:
        store.close()


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("DROP TRIGGER event_keys", "the log file's schema lacks trigger event_keys"),
        (
            "CREATE TRIGGER unkey AFTER INSERT ON event BEGIN "
            "DELETE FROM event_patient WHERE patient = 'p1'; END",
            "the log file's schema has trigger unkey, which the server never creates",
        ),
        (
            "CREATE TRIGGER head AFTER INSERT ON event_patient BEGIN "
            "DELETE FROM event_patient WHERE patient = 'p1'; END",
            "the log file's schema has trigger head, which the server never creates",
        ),
        (
            "DROP INDEX IF EXISTS no_such_index",  # a control: nothing changed
            None,
        ),
        ("ANALYZE", None),  # the statistics tables it writes are SQLite's own
    ],
    ids=["trigger-dropped", "trigger-added", "trigger-named-as-a-table", "untouched", "analyzed"],
)
def test_r16_the_log_files_schema_is_the_servers(tmp_path, registry, statement, reason):
    """SQLite, beside a running server (which creates a missing trigger again only when it
    opens the file): a trigger dropped stops the keys and the head from following the next
    events (the commit after would seal a sequence again); one added could unkey or rewrite
    events as they come. Verify names either before any event shows it."""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    store.append_audit([audit_event("p1"), audit_event("p1", "p2")])
    store.audit_log._writer.execute(statement)
    try:
        report = verify_store(store)
        assert (report.ok, report.reason) == (reason is None, reason)
    finally:
        store.close()


def test_r16_a_trigger_under_a_name_sqlite_reserves_is_named(tmp_path, registry):
    """SQLite: a trigger that drops a practitioner's events as they come (RAISE(IGNORE):
    the insert skips the row without an error, the head does not move, and the next event
    is sealed at that sequence again, so the chain stays whole), renamed through the
    writable schema to `sqlite_stat9`, a name of the statistics tables ANALYZE writes. It
    runs all the same; verify must name it, since nothing else will show what it drops."""
    store = with_audit_log(make_store("sqlite", tmp_path, registry), registry)
    store.append_audit([audit_event("p1")])
    store = _rewrite_log_file(
        store,
        "CREATE TRIGGER drop_them BEFORE INSERT ON event "
        "WHEN NEW.agent = 'Practitioner/unseen' BEGIN SELECT RAISE(IGNORE); END",
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET name = 'sqlite_stat9', "
        "sql = replace(sql, 'drop_them', 'sqlite_stat9') WHERE name = 'drop_them'",
    )
    try:
        (unseen,) = store.append_audit([audit_event("p1", agent="Practitioner/unseen")])
        store.append_audit([audit_event("p1")])
        assert store.read("AuditEvent", unseen.id) is None  # the access left no trace
        report = verify_store(store)
        assert (report.ok, report.reason) == (
            False,
            "the log file's schema has trigger sqlite_stat9, which the server never creates",
        )
    finally:
        store.close()


def test_a_log_created_before_the_key_trigger_verifies_once_upgraded(tmp_path, registry):
    """A log file of the schema before the trigger (no `patients` column) is upgraded in
    place on open: its schema then passes, though SQLite spells the altered table otherwise."""
    from fhir_server.store.audit_log import sqlite as engine

    resources = make_store("sqlite", tmp_path, registry)
    path = Path(resources.path).with_name("fhir.audit.sqlite3")
    before = engine.SCHEMA.replace(",\n    patients TEXT NOT NULL         -- JSON array", "")
    before = before.replace(" of the compartment's Patient ids", "")
    assert "patients TEXT" not in before
    connection = sqlite3.connect(path)
    connection.executescript(before)
    connection.close()
    store = with_audit_log(resources, registry)
    try:
        assert store.audit_log.path == str(path)
        store.append_audit([audit_event("p1")])
        report = verify_store(store)
        assert (report.ok, report.checked) == (True, 1)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("rebuild", "reason"),
    [
        (
            lambda events: (
                events.drop_index("patient"),
                events.create_index(
                    [("patients", 1), ("_id", 1)],
                    name="patient",
                    partialFilterExpression={"agent": {"$ne": "Practitioner/x"}},
                ),
            ),
            "the events collection's index patient is not the one the server creates",
        ),
        (
            lambda events: (events.drop_index("id"), events.create_index([("id", 1)], name="id")),
            "the events collection's index id is not the one the server creates",
        ),
        (
            lambda events: events.drop_index("patient"),
            "the events collection lacks its index patient",
        ),
        (
            lambda events: events.create_index([("agent", 1)], name="by_agent"),
            "the events collection has an index by_agent the server never creates",
        ),
    ],
    ids=["patient-index-partial", "id-index-not-unique", "patient-index-dropped", "index-added"],
)
def test_r16_mongodb_indexes_are_the_servers(tmp_path, registry, rebuild, reason):
    """MongoDB: the trace view scans the patient index by hint, so the index rebuilt with a
    `partialFilterExpression` hides from their patients the events it leaves out, while a
    scan of the collection still finds them all; the id index no longer unique lets two
    events share an id. Verify compares the definitions with the server's."""
    store = with_audit_log(make_store("mongomock", tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1")])
        assert verify_store(store).ok
        rebuild(store.audit_log._events)
        report = verify_store(store)
        assert (report.ok, report.reason.split(" (")[0]) == (False, reason)
    finally:
        store.close()


class _AsGiven:
    """The events collection as a server describes its indexes when it keeps each option as
    it was given: pymongo's `IndexModel(..., unique=False)` sends `unique: false` with the
    patient index (mongomock leaves it out)."""

    def __init__(self, events) -> None:
        self._events = events

    def index_information(self) -> dict:
        found = self._events.index_information()
        return {**found, "patient": {**found["patient"], "unique": False, "v": 2}}

    def __getattr__(self, name: str):
        return getattr(self._events, name)


def test_r16_mongodb_indexes_described_with_their_default_options_verify(tmp_path, registry):
    """No false alarm: an option given as its default (False) is the server's index."""
    store = with_audit_log(make_store("mongomock", tmp_path, registry), registry)
    try:
        store.append_audit([audit_event("p1")])
        store.audit_log._events = _AsGiven(store.audit_log._events)
        assert verify_store(store).ok
    finally:
        store.close()


class _CaseBlind:
    """The events collection as a case-insensitive collation would answer (strength 2),
    which mongomock does not apply: an `id` criterion matches whatever its case."""

    def __init__(self, events) -> None:
        self._events = events

    def _blind(self, criteria: dict) -> dict:
        if isinstance(criteria.get("id"), str):
            pattern = f"^{re.escape(criteria['id'])}$"
            return {**criteria, "id": {"$regex": pattern, "$options": "i"}}
        return criteria

    def find_one(self, criteria: dict, *args, **kwargs):
        return self._events.find_one(self._blind(criteria), *args, **kwargs)

    def find(self, criteria: dict, *args, **kwargs):
        return self._events.find(self._blind(criteria), *args, **kwargs)


def test_r16_mongodb_reads_only_the_event_of_the_id_asked(tmp_path, registry):
    """MongoDB: the collection given a case-insensitive collation behind the server's back.
    A read or `_history` of the id in capitals must still find nothing (as on SQLite)."""
    store = with_audit_log(make_store("mongomock", tmp_path, registry), registry)
    try:
        (event,) = store.append_audit([audit_event("p1")])
        store.audit_log._events = _CaseBlind(store.audit_log._events)
        assert store.read("AuditEvent", event.id).body == event.body
        assert store.read("AuditEvent", event.id.upper()) is None
        page = store.history("AuditEvent", event.id.upper(), since=None, count=10, cursor=None)
        assert page.entries == []
        page = store.history("AuditEvent", event.id, since=None, count=10, cursor=None)
        assert [entry.resource.id for entry in page.entries] == [event.id]
    finally:
        store.close()


def _rewritten_from(log: Log, sequence: int, **edits) -> None:
    """What someone with the files can always do (the chain's documented limit): edit event
    `sequence`, seal it and every later event again with the chain's own algorithm, and
    record the new head."""
    from bson import Binary

    from fhir_server.store.audit_log.record import seal_batch
    from fhir_server.store.factory import _stamp

    records = list(log.store.audit_log.scan())
    kept = records[: sequence - 1]
    head = (kept[-1].sequence, kept[-1].hash) if kept else None
    events = []
    for record in records[sequence - 1 :]:
        event = orjson.loads(record.body)
        event.pop("extension")
        event.pop("meta")
        events.append(event)
    events[0].update(edits)
    recorded = records[sequence - 1].recorded
    resealed = seal_batch(events, head, recorded, _stamp)
    audit_log = log.store.audit_log
    for record in resealed:
        if log.engine == "sqlite":
            audit_log._writer.execute(
                "UPDATE event SET body = ?, hash = ?, recorded = ?, outcome = ? WHERE seq = ?",
                (record.body, record.hash, recorded, record.outcome, record.sequence),
            )
        else:
            columns = {"hash": record.hash, "recorded": recorded, "outcome": record.outcome}
            audit_log._events.update_one(
                {"_id": record.sequence}, {"$set": {"body": Binary(record.body), **columns}}
            )
    newest = resealed[-1]
    if log.engine == "sqlite":
        audit_log._writer.execute(
            "UPDATE head SET seq = ?, hash = ? WHERE one = 1", (newest.sequence, newest.hash)
        )
    else:
        audit_log._head_collection.update_one(
            {"_id": "head"}, {"$set": {"seq": newest.sequence, "hash": newest.hash}}
        )


def test_an_anchor_kept_apart_names_a_chain_recomputed_with_the_files(log):
    """R16: the head one run printed, kept apart from the server, shows a later rewrite that
    the chain alone cannot (whoever edits the files can seal again after their edit)."""
    anchor = verify_store(log.store).head
    assert anchor[0] == 4
    log.store.append_audit([audit_event("p1"), audit_event("p2")])
    assert verify_store(log.store, dict([anchor])).ok  # the log went on: still an anchor

    _rewritten_from(log, 2, outcome="8")  # the access to p1 and p2 now reads as failed
    assert verify_store(log.store).ok  # the chain alone holds: the documented limit
    report = verify_store(log.store, dict([anchor]))
    assert (report.ok, report.sequence) == (False, 4)
    assert report.reason.startswith("its hash is not the one anchored for sequence 4")


def test_an_anchor_beyond_the_chains_end_names_a_cut_tail(log):
    """A tail cut together with the head it was checked against."""
    anchor = verify_store(log.store).head
    if log.engine == "sqlite":
        writer = log.store.audit_log._writer
        writer.execute("DELETE FROM event_patient WHERE seq = 4")
        writer.execute("DELETE FROM event WHERE seq = 4")
        previous = writer.execute("SELECT hash FROM event WHERE seq = 3").fetchone()[0]
        writer.execute("UPDATE head SET seq = 3, hash = ? WHERE one = 1", (previous,))
    else:
        events = log.store.audit_log._events
        previous = events.find_one({"_id": 3})["hash"]
        events.delete_one({"_id": 4})
        log.store.audit_log._head_collection.update_one(
            {"_id": "head"}, {"$set": {"seq": 3, "hash": previous}}
        )
    assert verify_store(log.store).ok
    report = verify_store(log.store, dict([anchor]))
    assert (report.ok, report.sequence) == (False, 4)
    assert report.reason == (
        "the chain ends at sequence 3, before the anchored sequence 4: events were removed "
        "from its end"
    )


def _data_dir_with_two_events(data_dir: Path, registry) -> tuple[int, str]:
    """A data dir whose log holds two events; its head."""
    store = open_store(load_settings({"data_dir": data_dir}), registry)
    try:
        store.append_audit([audit_event("p1"), audit_event("p2")])
        return store.audit_log.head()
    finally:
        store.close()


def test_the_command_prints_the_head_to_keep_and_checks_an_anchor(tmp_path: Path, registry, capsys):
    head = _data_dir_with_two_events(tmp_path, registry)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"head: sequence 2, hash {head[1]}" in printed
    assert f"--anchor 2:{head[1]}" in printed

    anchor = f"2:{head[1]}"
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", anchor]) == 0
    wrong = f"2:{'0' * 64}"
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", wrong]) == 1
    assert "its hash is not the one anchored for sequence 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", ["2", "0:" + "a" * 64, "2:" + "A" * 64, "2:abc", "x:y", "2147483648:" + "a" * 64]
)
def test_a_malformed_anchor_is_refused_before_anything_is_read(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "verify", "--data-dir", str(tmp_path), "--anchor", value])
    assert exit_.value.code == 2
    assert "is not SEQUENCE:HASH" in capsys.readouterr().err


def test_the_served_last_updated_is_sealed_and_its_edit_is_named(log):
    """R16: Last-Modified, `_history?_since` and `_lastUpdated` go by an event's
    meta.lastUpdated and the recorded column; the log seals the former with the event, so
    editing both together (which keeps them in agreement) breaks the event's hash."""
    record = list(log.store.audit_log.scan())[1]
    event = orjson.loads(record.body)
    assert event["meta"]["lastUpdated"] in record.body.decode()
    assert event["extension"][-1]["extension"][-1] == {"url": "covers", "valueCode": "lastUpdated"}

    log.edit_body(2, meta={**event["meta"], "lastUpdated": "2020-01-01T00:00:00.000Z"})
    log.tamper(2, recorded=1_577_836_800_000_000)  # the same instant, in µs
    report = verify_store(log.store)
    assert (report.ok, report.sequence, report.event_id) == (False, 2, record.id)
    assert report.reason == "the event's content does not match its hash (modified)"


def test_r16_two_anchors_for_one_sequence_that_differ_are_refused(tmp_path: Path, registry, capsys):
    """R16: two kept heads for one sequence cannot both be the chain's; keeping only the
    last one given (as a mapping would) lets a rewritten chain pass against the auditor's
    wrong copy. The command names the sequence and both hashes and reads nothing."""
    head = _data_dir_with_two_events(tmp_path, registry)
    other = "0" * 64
    for first, last in ((other, head[1]), (head[1], other)):
        args = ["--anchor", f"2:{first}", "--anchor", f"2:{last}"]
        assert main(["audit", "verify", "--data-dir", str(tmp_path), *args]) == 2
        err = capsys.readouterr().err
        assert f"two anchors for sequence 2 differ ({first}, {last})" in err
    same = ["--anchor", f"2:{head[1]}", "--anchor", f"2:{head[1]}"]
    assert main(["audit", "verify", "--data-dir", str(tmp_path), *same]) == 0


# -- a witness: the anchors kept in a file apart from the server ------------------------------


def test_r16_an_anchors_file_kept_run_after_run_names_a_later_rewrite(
    tmp_path: Path, registry, capsys
):
    """An auditor's scheduled run keeps each new head in a file apart from the server
    (`--anchors-file F --keep-head`) and checks every head kept before: a chain rewritten
    and sealed again with the files in hand is then named at the newest anchor it passes,
    and a failed run keeps nothing."""
    data_dir, witness = tmp_path / "data", tmp_path / "witness" / "anchors"
    witness.parent.mkdir()
    head = _data_dir_with_two_events(data_dir, registry)
    run = ["audit", "verify", "--data-dir", str(data_dir), "--anchors-file", str(witness)]
    assert main([*run, "--keep-head"]) == 0
    assert f"kept in {witness}" in capsys.readouterr().out
    assert witness.read_text().splitlines()[0].startswith(f"2:{head[1]}  # verified ")
    assert main([*run, "--keep-head"]) == 0  # nothing new: nothing kept twice
    assert len(witness.read_text().splitlines()) == 1

    store = open_store(load_settings({"data_dir": data_dir}), registry)
    try:
        store.append_audit([audit_event("p1")])
    finally:
        store.close()
    assert main([*run, "--keep-head"]) == 0
    kept = witness.read_text()
    assert [line.split(":")[0] for line in kept.splitlines()] == ["2", "3"]

    store = open_store(load_settings({"data_dir": data_dir}), registry)
    try:
        _rewritten_from(Log("sqlite", store), 1, outcome="8")
        assert verify_store(store).ok  # the chain alone cannot show it
    finally:
        store.close()
    capsys.readouterr()
    assert main([*run, "--keep-head"]) == 1
    assert "its hash is not the one anchored for sequence 2" in capsys.readouterr().err
    assert witness.read_text() == kept


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("# kept by the auditor\n\n2:" + "a" * 64 + "\nnot an anchor\n", "line 4"),
        ("2:" + "A" * 64 + "\n", "line 1"),
        ("2:" + "a" * 64 + " trailing\n", "line 1"),
    ],
    ids=["garbage", "upper-case", "trailing-text"],
)
def test_a_malformed_anchors_file_is_refused_before_anything_is_read(
    tmp_path: Path, content, named, capsys
):
    witness = tmp_path / "anchors"
    witness.write_text(content)
    run = ["audit", "verify", "--data-dir", str(tmp_path / "d"), "--anchors-file", str(witness)]
    assert main(run) == 2
    assert f"{witness}, {named}: " in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_an_anchors_file_that_is_not_there_is_refused_unless_a_witness_starts(
    tmp_path: Path, registry, capsys
):
    """Without `--keep-head` the auditor expects kept anchors: a missing file is refused,
    not read as none. `--keep-head` alone has nowhere to keep the head."""
    _data_dir_with_two_events(tmp_path, registry)
    witness = tmp_path / "anchors"
    run = ["audit", "verify", "--data-dir", str(tmp_path), "--anchors-file", str(witness)]
    assert main(run) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--keep-head"]) == 2
    assert "--keep-head needs --anchors-file" in capsys.readouterr().err
    assert main([*run, "--keep-head"]) == 0
    assert witness.read_text().startswith("2:")


@pytest.mark.parametrize("last", ["comment", "anchor"])
def test_r16_a_head_kept_after_a_last_line_without_newline_is_checked_next_time(
    tmp_path: Path, registry, last, capsys
):
    """An anchors file edited by hand often ends without a newline. The head a run keeps
    must be a line of its own, not the tail of a comment, where the next run would skip it
    (a check silently not made)."""
    from fhir_server.audit.cli import read_anchors

    head = _data_dir_with_two_events(tmp_path / "data", registry)
    store = open_store(load_settings({"data_dir": tmp_path / "data"}), registry)
    try:
        first = next(store.audit_log.scan()).hash
    finally:
        store.close()
    witness = tmp_path / "anchors"
    witness.write_text(
        "# anchors of the DMP audit log" if last == "comment" else f"1:{first}  # by hand"
    )
    run = ["audit", "verify", "--data-dir", str(tmp_path / "data"), "--anchors-file", str(witness)]
    assert main([*run, "--keep-head"]) == 0, capsys.readouterr().err
    assert (2, head[1]) in read_anchors(witness)

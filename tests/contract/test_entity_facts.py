"""A search's AuditEvent names its matches from facts kept beside each version (issue #21,
"the per-match part"; R16: each patient's record is told, R18: each match with its labels).

The facts (`audit.entity_facts`: the version, the compartment's Patients, the security
labels) are derived by the write that stores a version and kept with it; a search row
carries them. What must hold, on every engine: they say of a version exactly what parsing it
says; they are never those of another version (update, delete, purge and a new resource
under the same id); and a store written before them (no facts) gets the same events, then
gets its facts derived in the background (SQLite).
"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from bson import Binary

from fhir_server.access.hidden_references import NAMING_ELEMENTS
from fhir_server.access.requester import INTERNAL
from fhir_server.audit.balp import DataEntity
from fhir_server.audit.entity_facts import DERIVATION, PREFIX, EntityFacts
from fhir_server.resources.patch import fhirpath_patch_body, json_patch_body
from fhir_server.resources.served import BY_NAME, compartment_of
from fhir_server.search.extract import extract
from fhir_server.service.factory import build_service
from fhir_server.service.patch import MetadataUpdates
from fhir_server.service.versions import stamp
from fhir_server.store import mongo_facts
from fhir_server.store.base import FactsOf, VersionWrite
from fhir_server.store.factory import FACTS_OF, open_sqlite
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.sqlite_facts import pending
from fhir_server.store.sqlite_index import INDEX_TABLES
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_DMP_CONFIDENTIALITY,
)
from tests.support.documents import dmp_document

DMP = SYSTEM_DMP_CONFIDENTIALITY
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def _document(patient: str, *labels: dict, meta_labels: tuple[dict, ...] = ()) -> dict:
    document: dict = {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "application/pdf"}}],
    }
    if labels:
        document["securityLabel"] = [{"coding": [label]} for label in labels]
    if meta_labels:
        document["meta"] = {"security": list(meta_labels)}
    return document


# Shapes whose facts must be what parsing says: labels in both places and repeated (once each,
# the first spelling kept), a coding without code (not a label), a display, a version; a
# compartment of several Patients; a type with no compartment path of its own (Binary).
SHAPES = {
    "labelled document": {
        **_document(
            "p1",
            {"system": DMP, "code": MASQUE_PS, "display": "Masqué aux professionnels"},
            {"system": V3, "code": "N"},
            meta_labels=({"system": DMP, "code": MASQUE_PS}, {"system": V3}),
        ),
        "id": "d1",
        "meta": {"versionId": "3", "security": [{"system": DMP, "code": MASQUE_PS}]},
    },
    "unlabelled document": {**_document("p1"), "id": "d2", "meta": {"versionId": "1"}},
    "communication of two patients": {
        "resourceType": "Communication",
        "id": "c1",
        "meta": {"versionId": "2"},
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "recipient": [{"reference": "Patient/p2"}, {"reference": "Practitioner/x"}],
    },
    "patient": {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "7"}},
    "list": {
        "resourceType": "List",
        "id": "l1",
        "status": "current",
        "mode": "working",
        "subject": {"reference": "Patient/p1"},
        "meta": {"security": [{"system": DMP, "code": INVISIBLE_PATIENT}]},
    },
    "binary": {"resourceType": "Binary", "id": "b1", "contentType": "text/plain"},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_facts_of_a_version_say_what_parsing_it_says(shape):
    """R16, R18: the entity a search's event names and the records it goes to, from the
    kept facts, are those `DataEntity.from_resource` and `compartment_of` give."""
    resource = SHAPES[shape]
    facts = EntityFacts.decode(EntityFacts.of(resource).encode())
    assert facts.entity(resource["resourceType"], resource["id"]) == DataEntity.from_resource(
        resource
    )
    assert set(facts.compartment) == set(compartment_of(resource))


def test_the_derivation_is_pinned():
    """What the facts of a version are is kept across releases: a change of what they say
    of a resource (its compartment, its labels, their encoding) must bump
    `entity_facts.DERIVATION`, so that the facts kept before are not read (R16, R18). This
    pin fails on such a change; bump DERIVATION, then pin the new encoding."""
    assert DERIVATION == 1
    assert EntityFacts.of(SHAPES["labelled document"]).encode() == (
        b'[1,"3",["p1"],[{"system":"urn:oid:1.2.250.1.213.1.1.4.13","code":"MASQUE_PS"},'
        b'{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"N"}]]'
    )
    assert EntityFacts.of(SHAPES["communication of two patients"]).encode() == (
        b'[1,"2",["p2","p1"],[]]'
    )


def test_facts_of_bytes_that_are_no_resource_are_refused():
    with pytest.raises(ValueError):
        EntityFacts.encoded_of_body(b"[1, 2]")
    with pytest.raises(ValueError):
        EntityFacts.encoded_of_body(b"{not json")


@pytest.fixture
def service(engine_store, registry, tmp_path):
    return build_service(engine_store, registry, data_dir=tmp_path)


def _create(service, resource: dict, **options) -> str:
    with service._transaction() as tx:
        return service.create_in(tx, INTERNAL, resource, **options).stored.id


def _rows(service, params: list[tuple[str, str]], resource_type: str = "DocumentReference"):
    result = service.search(INTERNAL, resource_type, params)
    return result, [*result.matches, *result.included]


def _facts_as_parsed(row) -> EntityFacts:
    return EntityFacts.of(orjson.loads(row.body))


def test_search_rows_carry_the_facts_of_the_version_they_hold(service):
    """Each row, match and included, carries facts equal to its own body's."""
    for patient in ("p1", "p2"):
        _create(service, {"resourceType": "Patient", "id": patient}, keep_id=True)
    _create(service, _document("p1", {"system": DMP, "code": MASQUE_PS}))
    _create(service, _document("p1"))
    _, rows = _rows(service, [("patient", "p1"), ("_include", "DocumentReference:subject")])
    assert len(rows) == 3
    for row in rows:
        assert row.facts is not None
        assert EntityFacts.decode(row.facts) == _facts_as_parsed(row)


def test_an_update_replaces_the_facts_and_a_delete_drops_them(service):
    """R18: after an update that labels the document and moves it to another record, its
    row names the new version, the new label and the new patient; once deleted, nothing."""
    for patient in ("p1", "p2"):
        _create(service, {"resourceType": "Patient", "id": patient}, keep_id=True)
    document_id = _create(service, _document("p1"))
    changed = {**_document("p2", {"system": DMP, "code": INVISIBLE_PATIENT}), "id": document_id}
    service.update(INTERNAL, "DocumentReference", document_id, changed)
    _, rows = _rows(service, [("_id", document_id)])
    (row,) = rows
    facts = EntityFacts.decode(row.facts)
    assert facts == _facts_as_parsed(row)
    assert facts.version == "2"
    assert facts.compartment == ("p2",)
    assert [label["code"] for label in facts.labels] == [INVISIBLE_PATIENT]
    service.delete(INTERNAL, "DocumentReference", document_id)
    assert _rows(service, [("_id", document_id)])[1] == []


def test_the_event_entities_are_the_same_with_or_without_kept_facts(service):
    """A store written before the facts (rows without them) gets the same event: the
    entities and patients of a search are equal whether they come from the rows' facts or
    from parsing the matches."""
    for patient in ("p1", "p2"):
        _create(service, {"resourceType": "Patient", "id": patient}, keep_id=True)
    _create(service, _document("p1", {"system": DMP, "code": MASQUE_PS}))
    _create(service, _document("p1", meta_labels=({"system": V3, "code": "R"},)))
    result, rows = _rows(service, [("patient", "p1"), ("_include", "DocumentReference:subject")])
    assert all(row.facts is not None for row in rows)
    parsed = replace(
        result,
        matches=[row._replace(facts=None) for row in result.matches],
        included=[row._replace(facts=None) for row in result.included],
    )
    assert parsed.entity_facts() == result.entity_facts()


def _sqlite_service(tmp_path, registry):
    store = open_sqlite(tmp_path / "fhir.sqlite3", registry)
    return build_service(store, registry, data_dir=tmp_path), store


def test_sqlite_facts_of_a_purged_resource_never_name_its_successor(tmp_path, registry):
    """A resource purged, then created again under the same id (and, SQLite reusing row
    numbers, maybe the same row): its facts are the new resource's, not the purged one's."""
    service, store = _sqlite_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    labelled = {**_document("p1", {"system": DMP, "code": MASQUE_PS}), "id": "doc"}
    _create(service, labelled, keep_id=True)
    with store.transaction() as tx:
        tx.purge("DocumentReference", "doc")
    _create(service, {**_document("p1"), "id": "doc"}, keep_id=True)
    (row,) = _rows(service, [("_id", "doc")])[1]
    assert EntityFacts.decode(row.facts).labels == ()
    store.close()


def test_sqlite_facts_of_another_version_are_not_read(tmp_path, registry):
    """Facts are read only for the version they were derived from: a row whose facts are
    for another version is parsed instead."""
    service, store = _sqlite_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    _create(service, {**_document("p1"), "id": "doc"}, keep_id=True)
    with store.transaction() as tx:
        tx._connection.execute("UPDATE resource_facts SET version = version + 1")
    (row,) = _rows(service, [("_id", "doc")])[1]
    assert row.facts is None
    store.close()


def _record_with_a_deleted_document(service) -> list[str]:
    """Patient p1 with two labelled documents and a deleted one; the ids of the two."""
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    kept = [_create(service, _document("p1", {"system": DMP, "code": MASQUE_PS})) for _ in "ab"]
    service.delete(INTERNAL, "DocumentReference", _create(service, _document("p1")))
    return kept


def test_sqlite_backfill_derives_the_facts_a_store_written_before_them_lacks(tmp_path, registry):
    """A store written by an earlier version has no facts: the backfill derives them, the
    same bytes a write stores, for current versions only, and marks the store done."""
    service, store = _sqlite_service(tmp_path, registry)
    kept = _record_with_a_deleted_document(service)

    def stored_facts() -> dict:
        return dict(store._reader.execute("SELECT rid, facts FROM resource_facts").fetchall())

    written = stored_facts()
    with store.transaction() as tx:
        tx._connection.execute("DELETE FROM resource_facts")
        tx._connection.execute("DELETE FROM maintenance_done")
    assert pending(store._reader, store._facts_of)
    assert all(row.facts is None for row in _rows(service, [("patient", "p1")])[1])

    store.backfill_facts()

    assert stored_facts() == written
    assert not pending(store._reader, store._facts_of)
    rows = _rows(service, [("patient", "p1")])[1]
    assert sorted(row.id for row in rows) == sorted(kept)
    assert all(row.facts is not None for row in rows)
    store.close()


def _mongo_service(tmp_path, registry):
    from fhir_server.resources.model import SERVED_TYPES
    from fhir_server.store.mongo import MongoStore
    from tests.support.mongomock_sessions import SessionMongoClient

    store = MongoStore(SessionMongoClient(), "fhir", SERVED_TYPES, facts_of=FACTS_OF)
    store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return build_service(store, registry, data_dir=tmp_path), store


def _forget_mongo_facts(store) -> None:
    """The store as an earlier version of the server left it: no facts, no mark."""
    for name in ("Patient", "DocumentReference"):
        store.database[name].update_many({}, {"$unset": {"facts": ""}})
    store.database[mongo_facts.MAINTENANCE].delete_many({})


def test_mongodb_backfill_derives_the_facts_a_store_written_before_them_lacks(tmp_path, registry):
    """MongoDB: the same bytes a write stores, for current versions only, then the mark."""
    service, store = _mongo_service(tmp_path, registry)
    kept = _record_with_a_deleted_document(service)

    def stored_facts() -> dict:
        return {
            doc["_id"]: bytes(doc["facts"])
            for doc in store.database["DocumentReference"].find({"facts": {"$exists": True}})
        }

    written = stored_facts()
    assert sorted(written) == sorted(kept)
    _forget_mongo_facts(store)
    assert all(row.facts is None for row in _rows(service, [("patient", "p1")])[1])

    assert store.backfill_facts() == 3  # the Patient and the two current documents

    assert stored_facts() == written
    assert not mongo_facts.pending(store.database, FACTS_OF)
    assert store.backfill_facts() == 0


def test_mongodb_backfill_never_sets_the_facts_of_a_version_replaced_meanwhile(tmp_path, registry):
    """A write that replaces a version between the backfill's read and its update keeps its
    own facts: the backfill's update is conditional on the version it derived them from."""
    service, store = _mongo_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    document_id = _create(service, _document("p1"))
    _forget_mongo_facts(store)
    labelled = {**_document("p1", {"system": DMP, "code": INVISIBLE_PATIENT}), "id": document_id}

    def facts_of_while_replaced(body: bytes) -> bytes:
        derived = EntityFacts.encoded_of_body(body)
        if orjson.loads(body)["resourceType"] == "DocumentReference":
            service.update(INTERNAL, "DocumentReference", document_id, dict(labelled))
        return derived

    mongo_facts.backfill(
        store.database, ["DocumentReference"], FactsOf(facts_of_while_replaced, PREFIX)
    )

    (row,) = _rows(service, [("_id", document_id)])[1]
    facts = EntityFacts.decode(row.facts)
    assert facts == _facts_as_parsed(row)
    assert [label["code"] for label in facts.labels] == [INVISIBLE_PATIENT]


# -- every door that writes a version: the facts kept are those of the version stored --------


def _patients(service) -> tuple[str, str]:
    """Two valid Patients (INS profile), created through the REST create door."""
    from tests.http.conftest import a_patient

    return tuple(service.create(INTERNAL, "Patient", a_patient(n)).stored.id for n in (1, 2))


def _masking(code: str) -> dict:
    return {"system": DMP, "code": code}


def _door_post(service, bundles, p1, p2):
    service.create(INTERNAL, "DocumentReference", dmp_document(p1, label=INVISIBLE_PATIENT))
    return INVISIBLE_PATIENT, p1


def _door_put_update_moving_the_record(service, bundles, p1, p2):
    stored = service.create(INTERNAL, "DocumentReference", dmp_document(p1)).stored
    moved = {**dmp_document(p2, label=INVISIBLE_REPRESENTANTS_LEGAUX), "id": stored.id}
    service.update(INTERNAL, "DocumentReference", stored.id, moved)
    return INVISIBLE_REPRESENTANTS_LEGAUX, p2


def _door_delete_then_put_create(service, bundles, p1, p2):
    stored = service.create(INTERNAL, "DocumentReference", dmp_document(p1)).stored
    service.delete(INTERNAL, "DocumentReference", stored.id)
    again = {**dmp_document(p1, label=INVISIBLE_PATIENT), "id": stored.id}
    service.update(INTERNAL, "DocumentReference", stored.id, again)
    return INVISIBLE_PATIENT, p1


def _door_json_patch_masking(service, bundles, p1, p2):
    stored = service.create(INTERNAL, "DocumentReference", dmp_document(p1)).stored
    operations = [
        {"op": "add", "path": "/securityLabel/-", "value": {"coding": [_masking(MASQUE_PS)]}}
    ]
    MetadataUpdates(service).patch(
        INTERNAL, "DocumentReference", stored.id, json_patch_body(operations)
    )
    return MASQUE_PS, p1


def _door_fhirpath_patch_masking(service, bundles, p1, p2):
    stored = service.create(INTERNAL, "DocumentReference", dmp_document(p1)).stored
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "DocumentReference"},
                    {"name": "name", "valueString": "securityLabel"},
                    {
                        "name": "value",
                        "valueCodeableConcept": {"coding": [_masking(INVISIBLE_PATIENT)]},
                    },
                ],
            }
        ],
    }
    MetadataUpdates(service).patch(
        INTERNAL, "DocumentReference", stored.id, fhirpath_patch_body(parameters)
    )
    return INVISIBLE_PATIENT, p1


def _door_conditional_update(service, bundles, p1, p2):
    document = dmp_document(p1, label=MASQUE_PS)
    service.create(INTERNAL, "DocumentReference", document)
    value = document["masterIdentifier"]["value"]
    changed = dmp_document(
        p1, label=INVISIBLE_PATIENT, masterIdentifier=document["masterIdentifier"]
    )
    service.conditional_update(INTERNAL, "DocumentReference", [("identifier", value)], changed)
    return INVISIBLE_PATIENT, p1


def _bundle_door(kind: str):
    def door(service, bundles, p1, p2):
        entry = {
            "fullUrl": "urn:uuid:0b1e0000-0000-4000-8000-000000000001",
            "resource": dmp_document(p2, label=INVISIBLE_REPRESENTANTS_LEGAUX),
            "request": {"method": "POST", "url": "DocumentReference"},
        }
        bundles.process(INTERNAL, {"resourceType": "Bundle", "type": kind, "entry": [entry]})
        return INVISIBLE_REPRESENTANTS_LEGAUX, p2

    return door


DOORS = {
    "POST": _door_post,
    "PUT update moving the record": _door_put_update_moving_the_record,
    "DELETE then PUT create": _door_delete_then_put_create,
    "JSON Patch masking": _door_json_patch_masking,
    "FHIRPath Patch masking": _door_fhirpath_patch_masking,
    "conditional update": _door_conditional_update,
    "transaction": _bundle_door("transaction"),
    "batch": _bundle_door("batch"),
}


@pytest.mark.parametrize("door", DOORS)
def test_every_write_door_keeps_the_facts_of_the_version_it_stored(engine_service, door):
    """R16, R18: whichever door wrote a version, a search's rows carry the facts parsing that
    version gives: its labels (the event hidden from whom they hide it) and its Patients."""
    service, bundles = engine_service
    p1, p2 = _patients(service)
    label, patient = DOORS[door](service, bundles, p1, p2)
    _, rows = _rows(service, [("_count", "100")])
    for row in rows:
        assert row.facts is not None
        assert EntityFacts.decode(row.facts) == _facts_as_parsed(row), row.id
    written = [EntityFacts.decode(row.facts) for row in rows]
    assert any(
        patient in facts.compartment and label in {c["code"] for c in facts.labels}
        for facts in written
    ), written


def test_a_served_copy_leaves_out_nothing_the_facts_read():
    """The facts are those of the stored version; a requester is served a copy without the
    List entries and DocumentReference.relatesTo naming what they may not read
    (`access.hidden_references`). The event must say of the copy what it says of the
    version: what the copy leaves out holds no compartment reference and no label."""
    for resource_type, (element, _) in NAMING_ELEMENTS.items():
        paths = [p for ps in BY_NAME[resource_type].compartment.values() for p in ps]
        read = {path.split(".")[0] for path in paths} | {"meta", "securityLabel"}
        assert element not in read, resource_type


# -- facts that outlive what they were derived from -------------------------------------------


def _set_kept_facts(store, resource_type: str, resource_id: str, facts: bytes) -> None:
    """Overwrite the facts a store keeps for a resource's current version, as a store
    written by another release of the server holds them."""
    if isinstance(store, SqliteStore):
        with store.transaction() as tx:
            tx._connection.execute(
                "UPDATE resource_facts SET facts = ? WHERE rid ="
                " (SELECT rid FROM resource WHERE type = ? AND id = ?)",
                (facts, resource_type, resource_id),
            )
    else:
        store.database[resource_type].update_one(
            {"_id": resource_id}, {"$set": {"facts": Binary(facts)}}
        )


def test_facts_kept_by_another_derivation_are_not_read(service, engine_store):
    """R18: a release that derives the facts otherwise (here: the encoding this feature first
    shipped, from a release that read no `securityLabel`) must not have its facts read by
    this one: the event carries the INVISIBLE_PATIENT label parsing the version gives, and
    so stays hidden from the patient."""
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    document_id = _create(service, _document("p1", {"system": DMP, "code": INVISIBLE_PATIENT}))
    _set_kept_facts(engine_store, "DocumentReference", document_id, orjson.dumps(["1", ["p1"], []]))
    result, (row,) = _rows(service, [("_id", document_id)])
    ((_, _, facts),) = result.entity_facts()
    assert facts == _facts_as_parsed(row)
    assert [label["code"] for label in facts.labels] == [INVISIBLE_PATIENT]


def test_sqlite_backfill_derives_again_the_facts_of_another_derivation(tmp_path, registry):
    """A store whose facts another derivation kept (and marked done) gets them derived
    again by this one, then reads them."""
    service, store = _sqlite_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    document_id = _create(service, _document("p1", {"system": DMP, "code": INVISIBLE_PATIENT}))
    _set_kept_facts(store, "DocumentReference", document_id, orjson.dumps(["1", ["p1"], []]))
    with store.transaction() as tx:  # as the release that first kept facts leaves the store
        tx._connection.execute("DELETE FROM maintenance_done")
        tx._connection.execute("INSERT INTO maintenance_done VALUES ('resource_facts')")
    store.close()
    reopened = open_sqlite(tmp_path / "fhir.sqlite3", registry)
    reopened.backfill_facts()
    (row,) = _rows(build_service(reopened, registry, data_dir=tmp_path), [("_id", document_id)])[1]
    assert row.facts is not None
    assert EntityFacts.decode(row.facts) == _facts_as_parsed(row)
    reopened.close()


def test_sqlite_a_row_removed_without_its_facts_never_lends_them_to_its_successor(
    tmp_path, registry
):
    """R18: a row removed by a statement that knows nothing of the facts (a process of an
    earlier release purging during a rolling upgrade) must take its facts with it: SQLite
    gives its row number to the next resource, and a successor at the same version would
    otherwise be named with the removed one's labels and Patients (here: none, where the
    successor is INVISIBLE_PATIENT) when that release writes it too, without facts."""
    service, store = _sqlite_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    _create(service, {**_document("p1"), "id": "doc"}, keep_id=True)
    with store.transaction() as tx:
        (rid,) = tx._connection.execute("SELECT rid FROM resource WHERE id = 'doc'").fetchone()
        for table in INDEX_TABLES:
            tx._connection.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
        tx._connection.execute("DELETE FROM resource WHERE rid = ?", (rid,))
        tx._connection.execute("DELETE FROM history WHERE id = 'doc'")
    labelled = {**_document("p1", {"system": DMP, "code": INVISIBLE_PATIENT}), "id": "doc"}
    with store.transaction() as tx:  # the successor, as that release writes it
        resource = dict(labelled)
        stored = stamp(resource, "doc", 1, 1)
        tx.write(VersionWrite(stored, "PUT", 0, extract(resource, registry)))
    result, (row,) = _rows(service, [("_id", "doc")])
    ((_, _, facts),) = result.entity_facts()
    assert facts == _facts_as_parsed(row)
    assert [label["code"] for label in facts.labels] == [INVISIBLE_PATIENT]
    store.close()


def test_sqlite_backfill_steps_over_a_body_it_cannot_read(tmp_path, registry):
    """A stored body whose shape the derivation cannot read (a store written by a laxer
    release) is left without facts, and the backfill finishes: it must not fail every
    maintenance round, which would also stop the WAL checkpoints that follow it."""
    service, store = _sqlite_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    with store.transaction() as tx:
        tx._connection.execute(
            "INSERT INTO resource (type, id, version, last_updated, deleted, body, labels)"
            " VALUES ('DocumentReference', 'odd', 1, 1, 0, ?, 0)",
            (b'{"resourceType":"DocumentReference","id":"odd","securityLabel":[1]}',),
        )
        tx._connection.execute("DELETE FROM maintenance_done")
    store.backfill_facts()
    assert not pending(store._reader, store._facts_of)
    store.close()


def test_mongodb_backfill_derives_again_the_facts_of_another_derivation(tmp_path, registry):
    """MongoDB: a document whose facts another derivation kept (their store marked done by
    it) gets them derived again by this one, then read."""
    service, store = _mongo_service(tmp_path, registry)
    _create(service, {"resourceType": "Patient", "id": "p1"}, keep_id=True)
    document_id = _create(service, _document("p1", {"system": DMP, "code": INVISIBLE_PATIENT}))
    store.database["DocumentReference"].update_one(
        {"_id": document_id}, {"$set": {"facts": orjson.dumps(["1", ["p1"], []])}}
    )
    store.database[mongo_facts.MAINTENANCE].delete_many({})
    store.database[mongo_facts.MAINTENANCE].insert_one({"_id": "resource_facts", "done": True})
    (row,) = _rows(service, [("_id", document_id)])[1]
    assert EntityFacts.decode(row.facts) is None  # another derivation's: parsed instead

    assert store.backfill_facts() == 1

    (row,) = _rows(service, [("_id", document_id)])[1]
    assert EntityFacts.decode(row.facts) == _facts_as_parsed(row)

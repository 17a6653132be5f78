"""Includes reach the audit log as they reached the resource store (issue #21, "same
answers"), on every engine: SQLite, MongoDB through mongomock, and a real MongoDB when
FHIR_TEST_MONGODB_URI is set.

AuditEvents left the resource store for a log of their own (`store.with_audit_log`). The
three include shapes of FHIR R4 search §3.1.1.5 (http://hl7.org/fhir/R4/search.html#include,
#revinclude) that then touched an AuditEvent must answer as before:

1. `_revinclude=AuditEvent:<param>` on a search of another type: the events whose `<param>`
   references a matched resource (it answered 400 not-supported);
2. `_revinclude=*`: every reverse include, AuditEvent sources among them (it answered 400 on
   any search);
3. `_include=<Type>:<param>` whose reference lands on an AuditEvent (it brought nothing).

"As before" is checked against the answer of the equivalent AuditEvent search, which reads
the same log through the same reference semantics. The access clause given for AuditEvent
applies to every included event (R16 binds a patient to their record; R18: labels hide).
"""

from __future__ import annotations

import pytest

from fhir_server.access.policy.labels import labelled
from fhir_server.access.requester import INTERNAL
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import And, Everything, InCompartment, Node, Not
from fhir_server.service.factory import build_service
from fhir_server.store import includes as include_caps
from fhir_server.terminology import INVISIBLE_PATIENT, SYSTEM_DMP_CONFIDENTIALITY
from tests.support.audit_log import audit_event

PRACTITIONER = "Practitioner/pr1"


def _event(*entities: str, label: str | None = None) -> dict:
    """A BALP-shaped event by PRACTITIONER naming `entities` (Patient/..., Type/id)."""
    event = audit_event(agent=PRACTITIONER)
    event["entity"] = [{"what": {"reference": reference}} for reference in entities]
    if label:
        event["meta"] = {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}]}
    return event


def _document(patient: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "application/pdf"}}],
    }


class World:
    """Two records (pa, pb), a document in each (da, db; da2 in pa's too), events about
    each, one hidden from the patient by a label, a List of pa whose item is an event, and a
    List in no record (no subject) with an event about it alone."""

    def __init__(self, service) -> None:
        self.service = service
        self.store = service.store
        with service._transaction() as tx:
            for patient in ("pa", "pb"):
                service.create_in(
                    tx, INTERNAL, {"resourceType": "Patient", "id": patient}, keep_id=True
                )
            lone = {"resourceType": "List", "id": "lone", "status": "current", "mode": "working"}
            service.create_in(tx, INTERNAL, lone, keep_id=True)
            self.da = service.create_in(tx, INTERNAL, _document("pa")).stored.id
            self.da2 = service.create_in(tx, INTERNAL, _document("pa")).stored.id
            self.db = service.create_in(tx, INTERNAL, _document("pb")).stored.id
        events = {
            "da": _event("Patient/pa", f"DocumentReference/{self.da}"),
            "da2": _event("Patient/pa", f"DocumentReference/{self.da2}"),
            "db": _event("Patient/pb", f"DocumentReference/{self.db}"),
            "pa": _event("Patient/pa"),
            "pa-hidden": _event("Patient/pa", label=INVISIBLE_PATIENT),
            "no-record": _event("List/lone"),
        }
        self.store.append_audit(list(events.values()))
        self.events = {name: event["id"] for name, event in events.items()}
        with service._transaction() as tx:
            self.list_id = service.create_in(
                tx,
                INTERNAL,
                {
                    "resourceType": "List",
                    "status": "current",
                    "mode": "working",
                    "subject": {"reference": "Patient/pa"},
                    "entry": [{"item": {"reference": f"AuditEvent/{self.events['da']}"}}],
                },
            ).stored.id

    def search(self, resource_type: str, params: list[tuple[str, str]], cursor=None):
        return self.service.search(INTERNAL, resource_type, params, cursor=cursor)

    def included_events(self, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        result = self.search(resource_type, params)
        return sorted(i for kind, i, *_ in result.included if kind == "AuditEvent")

    def audit_search(self, params: list[tuple[str, str]]) -> list[str]:
        """The events the equivalent AuditEvent search answers: what "before" answered."""
        result = self.search("AuditEvent", [*params, ("_count", "1000")])
        return sorted(i for _, i, *_ in result.matches)

    def named(self, *names: str) -> list[str]:
        return sorted(self.events[name] for name in names)

    def resolve(self, resource_type: str, params: list[tuple[str, str]], allowed) -> list:
        """The store's includes for a search's first page, under the clause `allowed`."""
        query = parse_search(resource_type, params, self.service.registry).query
        page = self.store.search(query, cursor_key=b"k" * 32, cursor_binding="b")
        return self.store.resolve_includes(page.rows, query.includes, allowed)


@pytest.fixture
def world(engine_store, registry, tmp_path) -> World:
    service = build_service(engine_store, registry, data_dir=tmp_path)
    built = World(service)
    yield built
    service.store.audit_log.close()


# -- 1. _revinclude=AuditEvent:<param> on a search of another type ----------------------------


def test_revinclude_of_audit_events_on_documents_answers_the_events_naming_them(world):
    """FHIR R4 §3.1.1.5 `_revinclude=AuditEvent:entity` on a DocumentReference search: the
    events whose entity is a matched document, the same events as the AuditEvent search
    `entity=DocumentReference/<id>`; none of another document's."""
    params = [("_id", world.da), ("_revinclude", "AuditEvent:entity")]
    assert world.included_events("DocumentReference", params) == world.named("da")
    assert world.named("da") == world.audit_search([("entity", f"DocumentReference/{world.da}")])


def test_revinclude_of_audit_events_on_a_patient_answers_their_trail(world):
    """§3.1.1.5 on `Patient?_id=pa&_revinclude=AuditEvent:patient`: every event of pa's
    compartment, as `AuditEvent?patient=pa` answers, and nothing of pb's."""
    params = [("_id", "pa"), ("_revinclude", "AuditEvent:patient")]
    expected = world.named("da", "da2", "pa", "pa-hidden")
    assert world.included_events("Patient", params) == expected
    assert world.audit_search([("patient", "pa")]) == expected


def test_revinclude_of_audit_events_follows_each_page(world):
    """The includes are those of the page (§3.1.1.5, "for the matching resources"): with
    `_count=1` each page of pa's documents brings the events of its own document, and the
    pages together bring the events of every document."""
    params = [("patient", "pa"), ("_count", "1"), ("_revinclude", "AuditEvent:entity")]
    first = world.search("DocumentReference", params)
    second = world.search("DocumentReference", params, cursor=first.next_cursor)
    pages = [first, second]
    by_document = {world.da: world.events["da"], world.da2: world.events["da2"]}
    for page in pages:
        (document,) = [i for _, i, *_ in page.matches]
        assert [i for _, i, *_ in page.included] == [by_document[document]]
    assert second.next_cursor is None


def test_revinclude_then_iterate_include_from_the_events(world):
    """`_include:iterate` (§3.1.1.5) applies to the events a `_revinclude` brought: the
    Patient each event names."""
    params = [
        ("_id", world.da),
        ("_revinclude", "AuditEvent:entity"),
        ("_include:iterate", "AuditEvent:patient"),
    ]
    included = {(kind, i) for kind, i, *_ in world.search("DocumentReference", params).included}
    assert included == {("AuditEvent", world.events["da"]), ("Patient", "pa")}


def test_revinclude_of_events_on_a_resource_in_no_record_reads_the_whole_log(world):
    """A List without subject is in no patient's compartment, nor is the event about it
    alone: it is found all the same (the log is read whole: `audit_log.includes`, case 3),
    as `AuditEvent?entity=List/lone` finds it."""
    params = [("_id", "lone"), ("_revinclude", "AuditEvent:entity")]
    expected = world.audit_search([("entity", "List/lone")])
    assert expected == world.named("no-record")
    assert world.included_events("List", params) == expected


# -- 2. _revinclude=* --------------------------------------------------------------------------


def test_revinclude_wildcard_includes_audit_events_with_every_other_source(world):
    """`_revinclude=*` (§3.1.1.5) on `Patient?_id=pa`: the documents and the List of pa and
    every event naming pa, none of pb's."""
    result = world.search("Patient", [("_id", "pa"), ("_revinclude", "*")])
    included = {(kind, i) for kind, i, *_ in result.included}
    assert {("DocumentReference", world.da), ("DocumentReference", world.da2)} <= included
    assert ("List", world.list_id) in included
    assert ("DocumentReference", world.db) not in included
    events = sorted(i for kind, i in included if kind == "AuditEvent")
    assert events == world.named("da", "da2", "pa", "pa-hidden")


def test_revinclude_wildcard_on_a_document_search(world):
    """`_revinclude=*` on a DocumentReference search, the shape a client lists a record
    with: 200 with the events of the document (it answered 400 on any search)."""
    result = world.search("DocumentReference", [("_id", world.db), ("_revinclude", "*")])
    assert sorted(i for kind, i, *_ in result.included if kind == "AuditEvent") == world.named("db")


# -- 3. _include to an AuditEvent --------------------------------------------------------------


def test_include_of_a_list_item_that_is_an_audit_event(world):
    """`_include=List:item` (§3.1.1.5): the List's item is an AuditEvent, read from the log;
    `_include=List:*` too. R18: under a clause that refuses every AuditEvent (a
    professional's, who never reads them) the item is left out."""
    for include in ("List:item", "List:*"):
        params = [("_id", world.list_id), ("_include", include)]
        assert world.included_events("List", params) == world.named("da"), include

    def refusing(target_type: str) -> Node:
        return Not(Everything()) if target_type == "AuditEvent" else Everything()

    params = [("_id", world.list_id), ("_include", "List:item")]
    assert world.resolve("List", params, refusing) == []


# -- the access clause and the caps ------------------------------------------------------------


def _patient_clause(patient: str) -> Node:
    """The shape of the gate's clause for a patient's AuditEvents (R16 compartment, R18
    label), `access.policy.reads`."""
    return And((InCompartment(patient), Not(labelled(INVISIBLE_PATIENT, False))))


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("Patient", [("_id", "pa,pb"), ("_revinclude", "AuditEvent:patient")]),
        ("Patient", [("_id", "pa,pb"), ("_revinclude", "*")]),
        ("List", [("_id", "lone"), ("_revinclude", "AuditEvent:entity")]),
        ("DocumentReference", [("_id", "DA,DB"), ("_revinclude", "AuditEvent:entity")]),
    ],
)
def test_included_events_pass_the_access_clause_for_audit_event(world, resource_type, params):
    """R16/R18: an included event must meet `allowed("AuditEvent")`, as a search of the
    events would: under pa's clause, pa's unlabelled events only; none of pb's, the hidden
    one or the one about no record (the List in no record: nothing)."""
    params = [(k, v.replace("DA", world.da).replace("DB", world.db)) for k, v in params]

    def allowed(target_type: str) -> Node:
        return _patient_clause("pa") if target_type == "AuditEvent" else Everything()

    included = world.resolve(resource_type, params, allowed)
    events = sorted(i for kind, i, *_ in included if kind == "AuditEvent")
    visible = {"List": (), "DocumentReference": ("da",)}
    assert events == world.named(*visible.get(resource_type, ("da", "da2", "pa")))


def test_included_events_count_against_the_include_cap(world, monkeypatch):
    """The resource store's cap on included resources per page (`store.includes.
    MAX_INCLUDED`) holds with events: with a cap of 2, pa's four events bring two."""
    monkeypatch.setattr(include_caps, "MAX_INCLUDED", 2)
    params = [("_id", "pa"), ("_revinclude", "AuditEvent:patient")]
    assert len(world.included_events("Patient", params)) == 2

"""Issue #21, "same answers": AuditEvent searches over the audit log answer exactly what the
generic search engine answered when AuditEvents were ordinary resources, on every engine.

A random corpus of AuditEvents (several patients per event, agents by reference and by
identifier, actions, subtypes, outcomes, entity references (relative, absolute, versioned),
recorded instants of several precisions and time zones, security labels) is sealed into one
chain and written as earlier versions wrote it, into the resource tables of two bare stores
of the same engine. One stays bare: its AuditEvent searches are the generic engine's
(`sqlite_search`, `mongo_search`). The other is opened with its audit log
(`store.factory.with_audit_log`), which moves the events into the log (`_migrate`): its
AuditEvent searches are the log's (`store/audit_log/search.py`).

Random searches then run on both as the INTERNAL requester runs them. The service passes an
INTERNAL search to the store unchanged (`gate.constrain_search`), so both are driven where
they meet: `parse_search` as the service calls it (its base URL, `_total` forced for
`_count=0`), then `store.search`, following next cursors to the end. Both must answer the
same pages (ids and bodies, in order) walking forward then back, the same totals, and refuse
the same searches with the same OperationOutcome.

One difference is left out of the generator where it is generated (`LAST_UPDATED`):
meta.lastUpdated within a millisecond, where the log answers by the sealed, served instant by
design. (`ap` on dates was another: the generic engines widened the parser's range a second
time, until `search_values.prefix_predicate` took it as given; the test at the end shows it.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.audit.chain import GENESIS_HASH, chain_link, seal
from fhir_server.errors import FhirError
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.extract import extract, sort_values
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import TotalMode
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store.factory import with_audit_log
from tests.conftest import ENGINES, MONGODB_URI

BASE = "http://127.0.0.1:8080/fhir"
KEY = b"d" * 32
BINDING = "internal"
# The `ap` prefix is relative to now: both paths parse with this clock.
NOW = versions.parse_instant("2024-03-01T12:00:00Z")

DIFFERENTIAL_SETTINGS = settings(
    # 40 examples (each 2 engines x 2 paths x up to 8 searches) run in about 11 s; the
    # property tests' FHIR_PROPERTY_EXAMPLES asks for more (1,000 were run clean).
    max_examples=int(os.environ.get("FHIR_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- the corpus -------------------------------------------------------------------------------

PATIENTS = ("p1", "p2", "p3", "p4")
RESTFUL = "http://hl7.org/fhir/restful-interaction"
IHE = "urn:ihe:event-type-code"
OID_RPPS = "urn:oid:1.2.250.1.71.4.2.1"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

SUBTYPES = (
    {"system": RESTFUL, "code": "read", "display": "read"},
    {"system": RESTFUL, "code": "search-type"},
    {"system": RESTFUL, "code": "create"},
    {"system": IHE, "code": "ITI-18", "display": "Registry Stored Query"},
    {"code": "read"},  # no system: matched by `read` and `|read`, not by `system|read`
)
AGENT_WHO = (
    {"reference": "Practitioner/pr1"},
    {"reference": "Practitioner/pr2"},
    {"reference": "Patient/p1"},
    {"reference": "Patient/p3"},
    {"reference": "Patient/p2/_history/1"},
    {"reference": "Organization/o1"},
    {"reference": f"{BASE}/Practitioner/pr2"},
    {"identifier": {"system": OID_RPPS, "value": "810001234567"}},
    {"identifier": {"system": OID_RPPS, "value": "810009999999"}},
    {"identifier": {"value": "810001234567"}},
)
ENTITY_WHAT = (
    *({"reference": f"Patient/{p}"} for p in PATIENTS),
    {"reference": f"{BASE}/Patient/p2"},
    {"reference": "DocumentReference/d1"},
    {"reference": "DocumentReference/d1/_history/2"},
    {"reference": "DocumentReference/d2/_history/1"},
    {"reference": f"{BASE}/DocumentReference/d2"},
    {"reference": "Binary/b1"},
    {"reference": "Patient/p4/_history/3"},
    {
        "reference": "Patient/p1",
        "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "INS-p1"},
    },
    {"type": "Patient", "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "INS-p2"}},
    {"reference": "urn:uuid:5e7b7c6a-52a4-4a1b-8c0e-8f2b1d0d6c11"},
    {"reference": "http://elsewhere.example/fhir/Patient/p1"},
    {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}},
)
LABELS = (
    {"system": CONFIDENTIALITY, "code": "N"},
    {"system": CONFIDENTIALITY, "code": "R"},
    {"system": CONFIDENTIALITY, "code": "V"},
    {"system": ACT_REASON, "code": "HTEST"},
)
NAMES = ("Dr House", "dr house", "Marie Curie", "Éloïse")
# Recorded instants around a few days, so that dates and partial dates collide.
MOMENTS = tuple(
    datetime(2024, 3, 1, 10, 0, tzinfo=UTC) + delta
    for delta in (
        timedelta(0),
        timedelta(microseconds=1500),
        timedelta(seconds=59, microseconds=999_000),
        timedelta(hours=13, minutes=59),
        timedelta(hours=14),
        timedelta(days=-1, hours=13),
        timedelta(days=30),
        timedelta(days=365),
    )
)
ZONES = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)))
PRECISIONS = ("seconds", "milliseconds", "microseconds")
# meta.lastUpdated: few values, so that `_lastUpdated` collides. Whole milliseconds, as served:
# the generic engines compare and sort `_lastUpdated` on the stored microseconds (SQLite's
# last_updated column, MongoDB's `lu`), which the body does not show; the log goes by the
# sealed meta.lastUpdated, as its `_history` does ("the column's microseconds ... must not
# change the answer (R16)", with_audit_log.history). Within one millisecond the two differ
# (the log orders such events by id; `_lastUpdated=2024-03-01T10:00:00.0003Z`), by design.
LAST_UPDATED = tuple(
    versions.parse_instant(text)
    for text in ("2024-03-01T10:00:00.000Z", "2024-03-01T10:00:00.001Z", "2024-03-02T00:00:00Z")
)


def _instant(moment: datetime, zone: timezone, precision: str) -> str:
    return moment.astimezone(zone).isoformat(timespec=precision).replace("+00:00", "Z")


def _optional(strategy, key: str) -> st.SearchStrategy[dict]:
    return st.one_of(st.just({}), strategy.map(lambda value: {key: value}))


ROLES = (
    {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.6", "code": "10"}]},
    {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.6", "code": "60"}], "text": "Nurse"},
)
agents = st.builds(
    lambda who, requestor, name, role, address, policy, alt: {
        "who": who,
        "requestor": requestor,
        **name,
        **role,
        **address,
        **policy,
        **alt,
    },
    st.sampled_from(AGENT_WHO),
    st.booleans(),
    _optional(st.sampled_from(NAMES), "name"),
    _optional(st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique_by=repr), "role"),
    _optional(
        st.sampled_from(({"address": "10.0.0.1", "type": "2"}, {"address": "10.0.0.12"})),
        "network",
    ),
    _optional(
        st.sampled_from((["http://dmp.example/policy/R10"], ["http://dmp.example/policy"])),
        "policy",
    ),
    _optional(st.sampled_from(("alt-1", "ALT-1")), "altId"),
)
entities = st.builds(
    lambda what, name, role, kind: {"what": what, **name, **role, **kind},
    st.sampled_from(ENTITY_WHAT),
    _optional(st.sampled_from(NAMES), "name"),
    _optional(
        st.sampled_from(
            (
                {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
                {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
            )
        ),
        "role",
    ),
    _optional(
        st.sampled_from(
            (
                {"system": "http://hl7.org/fhir/resource-types", "code": "Patient"},
                {"system": "http://hl7.org/fhir/resource-types", "code": "DocumentReference"},
            )
        ),
        "type",
    ),
)


@st.composite
def audit_events(draw, number: int) -> dict:
    """One AuditEvent, BALP-shaped but varied beyond what the builders write."""
    event: dict = {
        "resourceType": "AuditEvent",
        "id": f"ae-{number:03d}",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": _instant(
            draw(st.sampled_from(MOMENTS)),
            draw(st.sampled_from(ZONES)),
            draw(st.sampled_from(PRECISIONS)),
        ),
        "agent": draw(st.lists(agents, min_size=1, max_size=3)),
        "source": {"observer": {"display": "test"}},
    }
    subtypes = draw(st.lists(st.sampled_from(SUBTYPES), max_size=2, unique_by=repr))
    if subtypes:
        event["subtype"] = subtypes
    for key, values in (("action", "CRUDE"), ("outcome", ("0", "4", "8", "12"))):
        value = draw(st.one_of(st.none(), st.sampled_from(tuple(values))))
        if value is not None:
            event[key] = value
    what = draw(st.lists(entities, max_size=3))
    if what:
        event["entity"] = what
    labels = draw(st.lists(st.sampled_from(LABELS), max_size=2, unique_by=repr))
    if labels:
        event["meta"] = {"security": labels}
    return event


@st.composite
def corpora(draw) -> list[tuple[dict, int]]:
    """Events with their meta.lastUpdated (epoch µs), in chain order."""
    count = draw(st.integers(3, 14))
    # Numbered in a drawn order: ids (the last sort key) are not the chain order.
    numbers = draw(st.permutations(range(count)))
    return [(draw(audit_events(number)), draw(st.sampled_from(LAST_UPDATED))) for number in numbers]


# -- the searches -----------------------------------------------------------------------------

DATE_PREFIXES = ("", "eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")
DATE_VALUES = (
    "2024",
    "2023",
    "2024-03",
    "2024-02",
    "2024-03-01",
    "2024-02-29",
    "2024-03-31",
    "2024-03-01T10:00",
    "2024-03-01T10:00Z",
    "2024-03-01T12:00+02:00",
    "2024-03-01T10:00:00Z",
    "2024-03-01T10:00:00.001Z",
    "2024-03-01T10:00:59.999Z",
    "2024-03-01T05:00:00-05:00",
    "2024-03-01T23:59:00Z",
    "2024-03-02T00:00:00Z",
    "2025-03-01",
    "2024-03-01T10:00:00.0015Z",
)
LAST_UPDATED_VALUES = (
    "2024-03-01",
    "2024-03",
    "2024-03-01T10:00:00Z",
    "2024-03-01T10:00:00.000Z",
    "2024-03-01T10:00:00.001Z",
    "2024-03-01T11:00:00+01:00",
    "2024-03-02",
    "2024-03-02T00:00:00Z",
)


def _date_values(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    one = st.builds(lambda p, v: p + v, st.sampled_from(DATE_PREFIXES), st.sampled_from(values))
    return st.lists(one, min_size=1, max_size=2).map(",".join)


def _or(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True).map(",".join)


PATIENT_VALUES = (
    *PATIENTS,
    "p9",
    "Patient/p1",
    "Patient/p2",
    "Patient/p4/_history/1",
    f"{BASE}/Patient/p2",
    f"{BASE}/Patient/p3",
    "http://elsewhere.example/fhir/Patient/p1",
)
AGENT_VALUES = (
    "Practitioner/pr1",
    "Practitioner/pr2",
    f"{BASE}/Practitioner/pr2",
    "Patient/p1",
    "Organization/o1",
    "pr1",
)
AGENT_IDENTIFIERS = (
    f"{OID_RPPS}|810001234567",
    f"{OID_RPPS}|810009999999",
    "|810001234567",
    "810001234567",
    f"{OID_RPPS}|",
)
ENTITY_VALUES = (
    "DocumentReference/d1",
    "DocumentReference/d1/_history/2",
    "DocumentReference/d1/_history/1",
    "DocumentReference/d2",
    f"{BASE}/DocumentReference/d2",
    f"{BASE}/DocumentReference/d1/_history/2",
    "Binary/b1",
    "Patient/p2",
    "http://elsewhere.example/fhir/Patient/p1",
    "d1",
)
SUBTYPE_VALUES = (
    "read",
    "|read",
    f"{RESTFUL}|read",
    f"{RESTFUL}|search-type",
    f"{RESTFUL}|",
    f"{IHE}|ITI-18",
    "ITI-18",
    "create",
)
SECURITY_VALUES = (f"{CONFIDENTIALITY}|R", "V", f"{CONFIDENTIALITY}|", f"{ACT_REASON}|HTEST")
NAME_VALUES = ("dr", "Dr House", "dr house", "house", "Eloise", "Éloïse", "marie")
MISSING = st.sampled_from(("true", "false"))

# Not generated, by design: `_has` (another type's resources pointing to the event) is refused
# on the log (400 not-supported, docs/architecture.md "Searching the log": nothing but the
# log's own events points to an AuditEvent), where the generic engine answered; `_include` and
# `_revinclude` are resolved beside `store.search` (tests/contract/test_audit_log_includes.py).
criteria = st.one_of(
    st.tuples(st.just("patient"), _or(PATIENT_VALUES)),
    st.tuples(st.just("patient:Patient"), st.sampled_from(PATIENTS)),
    st.tuples(st.just("patient:missing"), MISSING),
    st.tuples(
        st.just("patient:identifier"),
        st.sampled_from(("urn:oid:1.2.250.1.213.1.4.8|INS-p1", "INS-p2", "|INS-p2")),
    ),
    st.tuples(st.just("date"), _date_values(DATE_VALUES)),
    st.tuples(st.just("_lastUpdated"), _date_values(LAST_UPDATED_VALUES)),
    st.tuples(st.just("date:missing"), MISSING),
    st.tuples(st.just("agent"), _or(AGENT_VALUES)),
    st.tuples(st.just("agent:Practitioner"), st.sampled_from(("pr1", "pr2"))),
    st.tuples(st.just("agent:identifier"), _or(AGENT_IDENTIFIERS)),
    st.tuples(st.just("agent:missing"), MISSING),
    st.tuples(st.just("entity"), _or(ENTITY_VALUES)),
    st.tuples(st.just("entity:missing"), MISSING),
    st.tuples(st.sampled_from(("action", "action:not")), _or(tuple("CRUDE"))),
    st.tuples(st.just("action:missing"), MISSING),
    st.tuples(st.sampled_from(("subtype", "subtype:not")), _or(SUBTYPE_VALUES)),
    st.tuples(st.just("subtype:text"), st.sampled_from(("read", "Registry", "query"))),
    st.tuples(st.just("subtype:missing"), MISSING),
    st.tuples(st.sampled_from(("outcome", "outcome:not")), _or(("0", "4", "8", "12"))),
    st.tuples(st.just("outcome:missing"), MISSING),
    st.tuples(st.sampled_from(("_id", "_id:not")), _or(("ae-000", "ae-003", "ae-007", "none"))),
    st.tuples(st.sampled_from(("_security", "_security:not")), _or(SECURITY_VALUES)),
    st.tuples(st.just("_security:missing"), MISSING),
    st.tuples(
        st.sampled_from(("agent-name", "agent-name:exact", "agent-name:contains", "entity-name")),
        _or(NAME_VALUES),
    ),
    st.tuples(st.just("agent-name:missing"), MISSING),
    st.tuples(st.sampled_from(("type", "type:not")), st.sampled_from(("110110", "110112"))),
    st.tuples(
        st.sampled_from(("agent-role", "agent-role:not", "agent-role:text")),
        st.sampled_from(("10", "urn:oid:1.2.250.1.213.1.1.4.6|60", "nurse")),
    ),
    st.tuples(
        st.sampled_from(("entity-role", "entity-type")), st.sampled_from(("1", "4", "Patient"))
    ),
    st.tuples(
        st.sampled_from(("policy", "policy:below", "policy:above")),
        st.sampled_from(("http://dmp.example/policy", "http://dmp.example/policy/R10/x")),
    ),
    st.tuples(st.sampled_from(("address", "address:exact")), st.sampled_from(("10.0.0.1", "10.0"))),
    st.tuples(st.sampled_from(("altid", "altid:not")), st.sampled_from(("alt-1", "ALT-1"))),
    st.tuples(st.just("agent:missing"), MISSING),
    st.tuples(st.sampled_from(("entity:DocumentReference", "entity:Patient")), _or(("d1", "p2"))),
    st.tuples(st.just("entity:identifier"), st.sampled_from(("urn:ietf:rfc:3986|urn:oid:1.2.3",))),
    # Chains from the event to the resources it names (the log reads them from the store).
    st.tuples(
        st.sampled_from(("patient.name", "patient.family", "patient:Patient.name")),
        st.sampled_from(("martin", "Bernard", "ana")),
    ),
    st.tuples(st.just("patient.birthdate"), _date_values(("1980", "1990", "2001-12"))),
    st.tuples(
        st.sampled_from(("agent:Practitioner.identifier", "agent:Practitioner.name")),
        st.sampled_from((f"{OID_RPPS}|810001234567", "810009999999", "house", "curie")),
    ),
    st.tuples(
        st.just("entity:DocumentReference.status"), st.sampled_from(("current", "superseded"))
    ),
    st.tuples(st.just("agent.name"), st.just("house")),  # ambiguous target type: refused
)
SORTS = (
    "date",
    "-date",
    "_lastUpdated",
    "-_lastUpdated",
    "_id",
    "-_id",
    "date,-_id",
    "-date,_lastUpdated",
    "outcome,-date",
    "action",
    "subtype",
    "-agent",
    "entity",
    "patient",
    "agent-name",
    "-_security",
    "name",  # no such parameter on AuditEvent: refused
    "date:missing",  # not a parameter: refused
)
result_params = st.lists(
    st.one_of(
        st.tuples(st.just("_sort"), st.sampled_from(SORTS)),
        st.tuples(st.just("_count"), st.sampled_from(("0", "50", "5000"))),
        st.tuples(st.just("_total"), st.sampled_from(("accurate", "estimate", "none"))),
        st.tuples(st.just("_summary"), st.just("count")),
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
)
# Small pages unless the search sets _count: most answers span several pages.
page_sizes = st.sampled_from(("1", "2", "3", None))


def _search(where: list, result: list, page_size: str | None) -> list[tuple[str, str]]:
    if page_size is None or any(key == "_count" for key, _ in result):
        return where + result
    return [*where, *result, ("_count", page_size)]


searches = st.builds(_search, st.lists(criteria, max_size=2), result_params, page_sizes)


# -- the two paths ----------------------------------------------------------------------------


def _bare_store(engine: str, folder: Path, name: str, registry: SearchRegistry):
    if engine == "sqlite":
        from fhir_server.store.sqlite import SqliteStore

        return SqliteStore(folder / f"{name}.sqlite3")
    from fhir_server.store.mongo import MongoStore

    if engine == "mongomock":
        from tests.support.mongomock_sessions import SessionMongoClient

        store = MongoStore(SessionMongoClient(), f"fhir_{name}", SERVED_TYPES)
    else:
        import uuid

        from pymongo import MongoClient

        client = MongoClient(MONGODB_URI, tz_aware=True)
        store = MongoStore(client, f"fhir_diff_{uuid.uuid4().hex[:12]}", SERVED_TYPES)
    store.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return store


# What chains from an AuditEvent reach: the same resources in both stores.
TARGETS = (
    *(
        {
            "resourceType": "Patient",
            "id": patient,
            "name": [{"family": family, "given": ["Ana"]}],
            "birthDate": birth,
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"INS-{patient}"}],
        }
        for patient, family, birth in (
            ("p1", "Martin", "1980-01-02"),
            ("p2", "Bernard", "1975-06-30"),
            ("p3", "Martin", "2001-12-12"),
        )
    ),
    *(
        {
            "resourceType": "Practitioner",
            "id": practitioner,
            "name": [{"family": family}],
            "identifier": [{"system": OID_RPPS, "value": rpps}],
        }
        for practitioner, family, rpps in (
            ("pr1", "House", "810001234567"),
            ("pr2", "Curie", "810009999999"),
        )
    ),
    {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain"}}],
    },
    {"resourceType": "Organization", "id": "o1", "name": "Clinique"},
)


def _write(store, resource: dict, last_updated: int, registry) -> None:
    stored = versions.stamp(dict(resource), resource["id"], 1, last_updated)
    served = orjson.loads(stored.body)
    entries = extract(served, registry)
    write = versions.indexed_write(stored, served, "POST", 0, entries, sort_values(entries))
    with store.transaction() as tx:
        tx.write(write)


def _write_as_earlier_versions(store, corpus: list[tuple[dict, int]], registry) -> None:
    """Sealed into one chain and stored as resources with their index entries, as versions
    before the audit log stored them; with the resources their chains reach."""
    for resource in TARGETS:
        _write(store, resource, LAST_UPDATED[0], registry)
    previous = GENESIS_HASH
    for sequence, (event, last_updated) in enumerate(corpus, start=1):
        sealed = seal(event, previous, sequence)
        previous = chain_link(sealed).hash
        _write(store, sealed, last_updated, registry)
    if hasattr(store, "settle_audit"):
        store.settle_audit()


@contextmanager
def both_paths(
    engine: str, corpus: list[tuple[dict, int]], registry: SearchRegistry
) -> Iterator[tuple[object, object]]:
    """(the bare resource store, the store with its log) holding the same events."""
    with TemporaryDirectory() as folder:
        opened: list = []
        try:
            bare = _bare_store(engine, Path(folder), "bare", registry)
            opened.append(bare)
            legacy = _bare_store(engine, Path(folder), "legacy", registry)
            opened.append(legacy)
            _write_as_earlier_versions(bare, corpus, registry)
            _write_as_earlier_versions(legacy, corpus, registry)
            logged = with_audit_log(legacy, registry)
            opened.append(logged.audit_log)
            assert len(list(logged.audit_log.scan())) == len(corpus)
            assert list(legacy.legacy_audit_events()) == []
            yield bare, logged
        finally:
            for each in reversed(opened):
                if engine == "mongodb" and hasattr(each, "database"):
                    each.database.client.drop_database(each.database.name)
                each.close()


Answer = tuple


def answer(store, registry: SearchRegistry, params: list[tuple[str, str]]) -> Answer:
    """What an INTERNAL search answers: every page (ids and bodies, total) following next
    cursors to the end, then previous cursors back to the start; or the refusal (status,
    OperationOutcome)."""
    try:
        query = parse_search("AuditEvent", params, registry, base_url=BASE, now=NOW).query
        if query.count == 0 and query.total is TotalMode.NONE:  # as FhirService.search
            query = replace(query, total=TotalMode.ACCURATE)

        def read(direction: str, cursor: str | None):
            page = store.search(
                replace(query, cursor=cursor), cursor_key=KEY, cursor_binding=BINDING
            )
            rows = [(row.id, orjson.loads(row.body)) for row in page.rows]
            pages.append((direction, rows, page.total))
            return page

        pages: list = []
        page = read("first", None)
        for direction in ("next", "previous"):
            for _ in range(200):
                cursor = getattr(page, f"{direction}_cursor")
                if cursor is None:
                    break
                assert page.rows, f"an empty page with a {direction} cursor"
                page = read(direction, cursor)
            else:
                raise AssertionError("paging did not end")
        return ("pages", pages)
    except FhirError as refused:
        return ("refused", refused.status, refused.operation_outcome())


def _summary(answered: Answer) -> object:
    """The ids of each page and its total, or the refusal: what a failure shows."""
    if answered[0] == "refused":
        return answered
    return [
        (direction, [resource_id for resource_id, _ in rows], total)
        for direction, rows, total in answered[1]
    ]


@DIFFERENTIAL_SETTINGS
@given(corpus=corpora(), queries=st.lists(searches, min_size=1, max_size=8))
def test_issue_21_audit_event_searches_answer_what_the_generic_engine_answered(
    registry, corpus, queries
):
    """#21 "same answers": the log's AuditEvent search and the generic engine, on every
    engine, answer each search with the same pages (ids, bodies, order), the same totals
    and the same refusals, walking every page by its next cursor."""
    for engine in ENGINES:
        with both_paths(engine, corpus, registry) as (bare, logged):
            for params in queries:
                expected, got = answer(bare, registry, params), answer(logged, registry, params)
                assert got == expected, (engine, params, _summary(expected), _summary(got))


def test_ap_widens_a_date_once_by_a_tenth_of_its_distance_to_now(registry):
    """FHIR R4 search 3.1.1.4.6 (prefix `ap`) recommends 10% of the gap between now and the
    date, and the server documents that choice (`search.parameters`). An event recorded four
    years after 2000-01-01 is not approximately 2000-01-01 (10% of about 27 years is under
    three): the log said so, and the generic engines matched it, having widened the parser's
    range a second time (twice the tolerance)."""
    event = {
        "resourceType": "AuditEvent",
        "id": "ae-ap",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2004-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Practitioner/pr1"}, "requestor": True}],
        "source": {"observer": {"display": "test"}},
    }
    for engine in ENGINES:
        with both_paths(engine, [(event, LAST_UPDATED[0])], registry) as (bare, logged):
            for store in (logged, bare):
                query = parse_search(
                    "AuditEvent", [("date", "ap2000-01-01")], registry, base_url=BASE
                ).query
                page = store.search(query, cursor_key=KEY, cursor_binding=BINDING)
                assert [row.id for row in page.rows] == [], engine

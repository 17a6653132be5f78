"""The access rules answer the same on the MongoDB engine as on SQLite (R06-R10, R14, R18).

Every consent-gate hole of the attack passes was found and fixed on SQLite; the gate's
clauses reach each engine as the same query AST, which each compiles its own way (SQL there,
MongoDB filters here). So the security modules run on both engines in the normal suite
(`tests/http/conftest.py`, ON_BOTH_ENGINES: the attack passes, the R18 door matrix, every
version at every door, the audit log's doors, reference spellings, totals, conditional
criteria, Binary ownership, the record cache across workers), and this module puts the
same requests to one seeded record (test_r18_matrix's) on each engine, as each actor, and
asserts the same answers: status, the resources of each page in order (search mode, type,
id, version), totals, paging, issue codes. Where the engines' search translations differ
(token and string matching, reference spellings, `:missing`, `:identifier`, chains,
`_has`, date precision, labels, cursors, `_total`/`_summary=count`, includes, history, the
audit log, odd characters), the answers would differ.

The MongoDB engine runs on mongomock (tests/support/mongomock_sessions.py, which also
refuses what a MongoDB server or pymongo refuses and mongomock takes). The whole HTTP suite
runs on it with

    FHIR_TEST_HTTP_ENGINE=mongomock python -m pytest tests/http

and on a real MongoDB the store contract suite does (FHIR_TEST_MONGODB_URI, tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest

from fhir_server.config import load_settings
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    auth,
    create_test_app,
    valid_nir,
)
from tests.http.test_r18_matrix import (
    AUTHOR,
    AUTHORIZED,
    BASE,
    BLOCKED,
    CASES,
    CLASS_SYSTEM,
    GP,
    IDENTIFIER_SYSTEM,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    STRANGER,
    UNKNOWN_ID,
    World,
    _build_world,
    binary_id,
    doc_id,
    doc_identifier,
)

ENGINES = ("sqlite", "mongomock")
SEEDED = doc_id("a-visible")[:24]  # the prefix of test_r18_matrix's ids

ACTORS: dict[str, Callable[[Tokens], str]] = {
    "gp-of-a": lambda t: t.practitioner(GP),
    "authorized": lambda t: t.practitioner(AUTHORIZED),
    "blocked-by-a": lambda t: t.practitioner(BLOCKED),
    "author": lambda t: t.practitioner(AUTHOR),
    "stranger": lambda t: t.practitioner(STRANGER),
    "break-glass": lambda t: t.practitioner(
        STRANGER, mode="bris_de_glace", reason="patient inconscient"
    ),
    "patient-a": lambda t: t.patient(PATIENT_A),
    "patient-b": lambda t: t.patient(PATIENT_B),
    "parent-of-m": CASES["R07-invisible-representants-legaux-vs-parent"].requester,
    "system": lambda t: t.system(),
}

LABEL = SYSTEM_DMP_CONFIDENTIALITY
INS_A = f"{INS_SYSTEM}|{valid_nir(1)}"


def _q(value: str) -> str:
    return quote(value, safe="")


# One record's doors, by what each engine translates its own way.
PROBES: dict[str, list[str]] = {
    "reference-spellings": [
        f"/fhir/DocumentReference?patient={PATIENT_A}",
        f"/fhir/DocumentReference?patient=Patient/{PATIENT_A}",
        f"/fhir/DocumentReference?subject=Patient/{PATIENT_A}",
        f"/fhir/DocumentReference?subject:Patient={PATIENT_A}",
        f"/fhir/DocumentReference?subject={_q(f'{BASE}/fhir/Patient/{PATIENT_A}')}",
        f"/fhir/DocumentReference?patient={PATIENT_M}",
        f"/fhir/DocumentReference?patient={PATIENT_B}",
        f"/fhir/DocumentReference?patient={PATIENT_A},{PATIENT_B}",
        f"/fhir/DocumentReference?patient={UNKNOWN_ID}",
        f"/fhir/DocumentReference?relatesto=DocumentReference/{doc_id('a-masked')}",
        f"/fhir/DocumentReference?relatesto={doc_id('b-doc')}",
        f"/fhir/List?item=DocumentReference/{doc_id('a-invisible')}",
        f"/fhir/List?patient={PATIENT_A}&item={doc_id('b-doc')}",
        f"/fhir/DocumentReference?_id={doc_id('a-masked')},{doc_id('b-doc')}",
        "/fhir/DocumentReference",
    ],
    "identifier-and-chain": [
        f"/fhir/DocumentReference?patient:identifier={_q(INS_A)}",
        f"/fhir/DocumentReference?subject:identifier={_q(INS_A)}",
        f"/fhir/DocumentReference?patient.identifier={_q(INS_A)}",
        f"/fhir/DocumentReference?subject:Patient.identifier={_q(INS_A)}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&identifier="
        + _q(f"{IDENTIFIER_SYSTEM}|{doc_identifier('a-masked')}"),
        f"/fhir/DocumentReference?identifier={_q(doc_identifier('a-invisible'))}",
        f"/fhir/DocumentReference?identifier={_q(doc_identifier('b-doc'))}",
        f"/fhir/Patient?identifier={_q(INS_A)}",
        f"/fhir/Patient?identifier={valid_nir(3)}",
    ],
    "tokens-and-labels": [
        f"/fhir/DocumentReference?patient={PATIENT_A}&category={_q(f'{CLASS_SYSTEM}|31')}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&category=42",
        f"/fhir/DocumentReference?patient={PATIENT_A}&category=|42",
        f"/fhir/DocumentReference?patient={PATIENT_A}&category:not=10",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_security={_q(f'{LABEL}|MASQUE_PS')}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_security={_q(f'{LABEL}|masque_ps')}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_security=MASQUE_PS,INVISIBLE_PATIENT",
        f"/fhir/DocumentReference?patient={PATIENT_A}&security-label=INVISIBLE_PATIENT",
        f"/fhir/DocumentReference?patient={PATIENT_A}&security-label:not=MASQUE_PS",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_security:not={_q(f'{LABEL}|MASQUE_PS')}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&security-label:missing=true",
        f"/fhir/DocumentReference?patient={PATIENT_A}&security-label:missing=false",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_security:missing=false",
        f"/fhir/DocumentReference?patient={PATIENT_M}&security-label:text=invisible",
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=current",
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=CURRENT",
        f"/fhir/DocumentReference?patient={PATIENT_A}&relatesto:missing=false",
    ],
    "strings-and-dates": [
        f"/fhir/Patient?_id={PATIENT_A}&family=durand1",
        f"/fhir/Patient?_id={PATIENT_A}&family=DÚRAND",
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=RAND",
        f"/fhir/Patient?_id={PATIENT_A}&name:exact=durand1",
        f"/fhir/Patient?_id={PATIENT_A}&birthdate=1985-07",
        f"/fhir/Patient?_id={PATIENT_M}&birthdate=ge2016-04-02T00:00:00Z",
        f"/fhir/Patient?identifier={_q(INS_A)}&gender=female&birthdate=1985",
        f"/fhir/DocumentReference?patient={PATIENT_M}&type:text=a",
        f"/fhir/DocumentReference?patient={PATIENT_A}&description:missing=true",
        "/fhir/Patient?family=Durand1",
        "/fhir/Patient?family=durand",
        "/fhir/Patient?family=DÜRAND",
        "/fhir/Patient?name:contains=urand",
        "/fhir/Patient?name:exact=Durand2",
        "/fhir/Patient?given=marie",
        "/fhir/Patient?birthdate=2016",
        "/fhir/Patient?birthdate=ge2016-04",
        "/fhir/Patient?birthdate=lt1990-01-01",
        "/fhir/RelatedPerson?name=durand",
        f"/fhir/RelatedPerson?patient={PATIENT_M}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_lastUpdated=ge2000",
        f"/fhir/DocumentReference?patient={PATIENT_A}&date=ge2000",
        f"/fhir/DocumentReference?patient={PATIENT_A}&date:missing=true",
    ],
    "has": [
        f"/fhir/Patient?_id={PATIENT_A}&_has:DocumentReference:subject:category=31",
        f"/fhir/Patient?_id={PATIENT_A}&_has:DocumentReference:subject:security-label=MASQUE_PS",
        f"/fhir/Patient?_id={PATIENT_A}&_has:DocumentReference:patient:_security=INVISIBLE_PATIENT",
        "/fhir/Patient?_has:DocumentReference:subject:category=43",
        "/fhir/Patient?_has:List:subject:item=DocumentReference/" + doc_id("b-doc"),
        f"/fhir/DocumentReference?patient={PATIENT_A}&_has:List:item:subject={PATIENT_A}",
        f"/fhir/Patient?_id={PATIENT_M}&_has:RelatedPerson:patient:relationship=PRN",
    ],
    "paging-totals-summary": [
        f"/fhir/DocumentReference?patient={PATIENT_A}&_count=1",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_count=1&_total=accurate",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_count=2&_sort=-_lastUpdated",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_count=1&_sort=category",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_summary=count",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_summary=count&_security=MASQUE_PS",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_total=estimate&_count=0",
        "/fhir/DocumentReference?_summary=count",
        f"/fhir/List?patient={PATIENT_A}&_summary=count",
    ],
    "includes": [
        f"/fhir/List?patient={PATIENT_A}&_include=List:item",
        f"/fhir/List?patient={PATIENT_M}&_include=List:item:DocumentReference",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_include=DocumentReference:relatesto",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_include=*",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_include:iterate=DocumentReference:relatesto",
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude=DocumentReference:subject",
        f"/fhir/Patient?_id={PATIENT_M}&_revinclude=*",
        f"/fhir/DocumentReference?_id={doc_id('a-visible')}&_revinclude=DocumentReference:relatesto",
        f"/fhir/DocumentReference?_id={doc_id('a-masked')}&_revinclude=List:item",
    ],
    "reads-and-history": [
        f"/fhir/DocumentReference/{doc_id('a-masked')}",
        f"/fhir/DocumentReference/{doc_id('a-invisible')}/_history/1",
        f"/fhir/DocumentReference/{doc_id('m-invisible-rl')}/_history",
        f"/fhir/DocumentReference/{doc_id('b-doc')}/_history",
        f"/fhir/Binary/{binary_id('a-masked')}",
        f"/fhir/Patient/{PATIENT_A}/_history",
        f"/fhir/Patient/{PATIENT_A}/DocumentReference",
        f"/fhir/Patient/{PATIENT_M}/*",
        "/fhir/DocumentReference/_history",
        "/fhir/_history",
        f"/fhir?_type=DocumentReference,List&patient={PATIENT_A}",
    ],
    "odd-characters": [
        # MongoDB refuses a `$regex` holding a NUL: :contains, and starts-with at the top of
        # the code space, are regular expressions there.
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=a%00b",
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=%00",
        f"/fhir/Patient?_id={PATIENT_A}&name=%00%F4%8F%BF%BF",
        f"/fhir/Patient?_id={PATIENT_A}&family=Durand%00",
        f"/fhir/DocumentReference?patient={PATIENT_A}&type:text=%00%F4%8F%BF%BF",
        f"/fhir/DocumentReference?patient={PATIENT_A}&category=%00",
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=(.*",
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=%5C",
        f"/fhir/Patient?_id={PATIENT_A}&name=%F4%8F%BF%BF",
        f"/fhir/Patient?_id={PATIENT_A}&name:contains=r%C3%A9",
    ],
    "audit-log": [
        f"/fhir/AuditEvent?patient={PATIENT_A}&_count=3",
        f"/fhir/AuditEvent?patient={PATIENT_M}&_summary=count",
        f"/fhir/AuditEvent?entity=DocumentReference/{doc_id('a-masked')}&_summary=count",
        f"/fhir/AuditEvent?patient={PATIENT_B}&action=R&_total=accurate&_count=1",
        "/fhir/AuditEvent?_summary=count",
    ],
}


def _shape(world: World, token: str, url: str) -> list:
    """What a client learns from the answer, without what differs between two stores of
    the same record (timestamps, AuditEvent ids): status, issue codes, and for a Bundle
    its pages followed to the end (each entry's mode, type, id; total; page sizes)."""
    pages: list = []
    while True:
        response = world.get(token, url)
        body = response.get_json(silent=True) or {}
        if body.get("resourceType") != "Bundle":
            issues = [i.get("code") for i in body.get("issue", [])]
            return [
                *pages,
                (response.status_code, body.get("resourceType"), body.get("id"), issues),
            ]
        page = [
            (
                (e.get("search") or {}).get("mode"),
                e.get("resource", {}).get("resourceType"),
                _entry_id(e.get("resource", {})),
                e.get("resource", {}).get("meta", {}).get("versionId"),
            )
            for e in body.get("entry", [])
        ]
        pages.append((response.status_code, body.get("type"), body.get("total"), page))
        link = next((x["url"] for x in body.get("link", []) if x["relation"] == "next"), None)
        if link is None or len(pages) > 20:
            return pages
        url = link.removeprefix(BASE)


def _entry_id(resource: dict) -> str | None:
    """The seeded ids as they are; those the server made (AuditEvents, notifications) as a
    placeholder: they differ between the two stores."""
    resource_id = resource.get("id")
    return resource_id if resource_id and resource_id.startswith(SEEDED) else "<made>"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, World]:
    built = {
        engine: _build_world(tmp_path_factory.mktemp(f"twin-{engine}") / "var", engine)
        for engine in ENGINES
    }
    yield {engine: world for engine, (_, world) in built.items()}
    for app, _ in built.values():
        app.extensions["fhir"].store.close()


@pytest.mark.parametrize("door", list(PROBES))
@pytest.mark.parametrize("actor", list(ACTORS))
def test_r18_every_actor_gets_the_same_answers_from_both_engines(worlds, actor, door):
    """The same request by the same actor on the same record: the same answer on MongoDB
    as on SQLite, so that no rule fixed on SQLite is open on the production engine."""
    differing = []
    for url in PROBES[door]:
        answers = {
            engine: _shape(world, ACTORS[actor](world.tokens), url)
            for engine, world in worlds.items()
        }
        if answers["sqlite"] != answers["mongomock"]:
            differing.append((url, answers))
    assert not differing, "\n".join(
        f"{url}\n  sqlite:  {a['sqlite']}\n  mongodb: {a['mongomock']}" for url, a in differing
    )


def test_a_resource_over_mongodbs_document_limit_is_refused_413_and_nothing_is_written(
    data_dir,
):
    """MongoDB holds at most 16 MiB in one document, which pymongo checks before sending
    (DocumentTooLarge, emulated in tests/support/mongomock_sessions.py): a larger Binary
    (13 MB of data, base64 in the body) was a 500. It is refused with 413, as a body over
    the configured limit, and neither the resource nor a version of it is stored."""
    settings = load_settings({"data_dir": data_dir, "max_body_bytes": 40_000_000}, environ={})
    app = create_test_app(settings, engine="mongomock")
    try:
        client, system = app.test_client(), Tokens(data_dir).system()
        headers = auth(system, **{"Content-Type": FHIR_JSON})
        small = {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0="}
        created = client.post("/fhir/Binary", data=json.dumps(small), headers=headers)
        assert created.status_code == 201
        large = {**small, "data": base64.b64encode(bytes(13_000_000)).decode()}
        response = client.post("/fhir/Binary", data=json.dumps(large), headers=headers)
        assert response.status_code == 413, response.get_data(as_text=True)
        assert response.get_json()["issue"][0]["code"] == "too-costly"
        database = app.extensions["fhir"].store.resources.database
        assert database["Binary"].count_documents({}) == 1
        assert [d["v"] for d in database["Binary_history"].find({})] == [1]
    finally:
        app.extensions["fhir"].store.close()

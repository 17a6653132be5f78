"""R18 "Nothing leaks": every read path against every way a document can be hidden.

A requester who may not see a document must neither see it, nor count it, nor infer it:
the same status and the same body shape as for a resource that does not exist, totals and
`next` links that exclude it, `_include`/`_revinclude`/chained/`_has` that never bring or
match it, conditional interactions that never act on it. The hiding rules exercised:

| case | rule | hidden document | requester |
|---|---|---|---|
| masque-ps | R14 | labelled MASQUE_PS, authored by someone else | an authorized practitioner (R10) |
| invisible-patient | R14 | labelled INVISIBLE_PATIENT | the patient (R06) |
| invisible-rl | R07 | labelled INVISIBLE_REPRESENTANTS_LEGAUX | a parent of the minor |
| blocked | R09 | any document of the record | a practitioner the patient blocked |
| other-patient | R06 | a document of patient B | patient A |

Every version of a hidden document is hidden too (vread, history, Bundle GET), and writes
on a hidden id (DELETE, PUT, conditional create/update/delete) answer as on a missing one as
far as the answers can be the same (issue #18, findings 6 and 13).

The record is seeded by the server itself (INTERNAL requester), so that every check goes
through the HTTP face with the tokens of the actors concerned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.config import load_settings
from fhir_server.terminology import (
    SYSTEM_ACT_REASON,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_V3_ROLE_CODE,
)
from tests.dmp_codes import type_of_class
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    a_patient,
    auth,
    create_test_app,
    deny,
    dmp_consent,
    internal_put,
    permit,
    valid_nir,
)
from tests.support.documents import binary, dmp_document

CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"
IDENTIFIER_SYSTEM = "urn:ietf:rfc:3986"
BASE = "http://127.0.0.1:8080"

GP = "810000000010"  # médecin traitant of A (R08)
AUTHORIZED = "810000000020"  # authorized by A, M and B (R10), author of nothing
BLOCKED = "810000000030"  # blocked by A (R09)
AUTHOR = "810000000040"  # author of A's masked document
STRANGER = "810000000099"  # named in no Consent

UNKNOWN_ID = "0a0a0a0a-0000-4000-8000-000000000000"  # the same length as the seeded ids


def _id(name: str) -> str:
    """Seeded ids with the shape of server ids, so bodies can be compared shape for shape."""
    number = sum(ord(c) * 31**i for i, c in enumerate(name)) % 10**12
    return f"0b0b0b0b-0000-4000-8000-{number:012d}"


# -- the record ---------------------------------------------------------------------------------

PATIENT_A, PATIENT_M, PATIENT_B = _id("patient-a"), _id("patient-m"), _id("patient-b")
PARENT = _id("parent")

DOCS = {
    # key: (patient, class, DMP label or None, author IdNat_PS)
    "a-visible": (PATIENT_A, "10", None, AUTHOR),
    "a-masked": (PATIENT_A, "31", "MASQUE_PS", AUTHOR),
    "a-invisible": (PATIENT_A, "42", "INVISIBLE_PATIENT", AUTHOR),
    "m-visible": (PATIENT_M, "10", None, AUTHOR),
    "m-invisible-rl": (PATIENT_M, "11", "INVISIBLE_REPRESENTANTS_LEGAUX", AUTHOR),
    "b-doc": (PATIENT_B, "43", None, AUTHOR),
    "b-other": (PATIENT_B, "10", None, AUTHOR),
}


def doc_id(key: str) -> str:
    return _id(f"doc-{key}")


def binary_id(key: str) -> str:
    return _id(f"bin-{key}")


def doc_identifier(key: str) -> str:
    return f"urn:uuid:{_id(f'identifier-{key}')}"


def oppose(purpose: str) -> dict:
    return {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": purpose}]}


def document(key: str, relates_to: tuple[str, ...] = ()) -> dict:
    patient_id, class_code, label, author = DOCS[key]
    resource: dict = {
        "resourceType": "DocumentReference",
        "status": "current",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": doc_identifier(key)}],
        "type": type_of_class(class_code),  # the type ASS_X16 files under that class
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": class_code}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "author": [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": author}}],
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "url": f"Binary/{binary_id(key)}",
                    "title": key,
                }
            }
        ],
    }
    if label:
        coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}
        resource["securityLabel"] = [{"coding": [coding]}]
        resource["meta"] = {"security": [coding]}
    if relates_to:
        resource["relatesTo"] = [
            {"code": "appends", "target": {"reference": f"DocumentReference/{doc_id(k)}"}}
            for k in relates_to
        ]
    return resource


def seed(service) -> None:
    put = internal_put(service)

    put(
        a_patient(
            1,
            generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}],
        ),
        PATIENT_A,
    )
    put(a_patient(2, birthDate="2016-04-02"), PATIENT_M)
    put(a_patient(3), PATIENT_B)
    put(
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{PATIENT_M}"},
            "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
            "name": [{"family": "Durand2", "given": ["Paul"]}],
        },
        PARENT,
    )
    put(dmp_consent(PATIENT_A, permit(AUTHORIZED), deny(BLOCKED)), _id("consent-a"))
    put(dmp_consent(PATIENT_M, permit(AUTHORIZED)), _id("consent-m"))
    put(dmp_consent(PATIENT_B, permit(AUTHORIZED)), _id("consent-b"))
    for key in DOCS:
        put(
            {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjQ="},
            binary_id(key),
        )
    relates = {
        "a-visible": ("a-masked", "a-invisible", "b-doc"),
        "m-visible": ("m-invisible-rl",),
    }
    for key in DOCS:
        put(document(key, relates.get(key, ())), doc_id(key))
    lists = {
        PATIENT_A: [k for k in DOCS if k.startswith("a-")] + ["b-doc"],
        PATIENT_M: [k for k in DOCS if k.startswith("m-")],
    }
    for patient_id, keys in lists.items():
        put(
            {
                "resourceType": "List",
                "status": "current",
                "mode": "working",
                "subject": {"reference": f"Patient/{patient_id}"},
                "source": {"reference": f"Patient/{patient_id}"},
                "entry": [{"item": {"reference": f"DocumentReference/{doc_id(k)}"}} for k in keys],
            },
            _id(f"list-{patient_id}"),
        )


# -- the hidden cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hidden:
    """One way a document is hidden from one requester."""

    rule: str
    requester: Callable[[Tokens], str]
    context: str  # the patient whose record the requester works on
    context_number: int  # a_patient(n) of that patient, for its INS
    hidden: str  # DOCS key of the hidden document
    visible: frozenset[str]  # DOCS keys the requester sees in the context record
    seer: Callable[[Tokens], str]  # someone who sees the hidden document (cursor replay)
    kind: str = "practitioner"  # practitioner | patient | parent
    refused: bool = False  # the requester is refused the whole record (R09)

    @property
    def hidden_class(self) -> str:
        return DOCS[self.hidden][1]

    @property
    def hidden_label(self) -> str | None:
        return DOCS[self.hidden][2]

    @property
    def ins(self) -> str:
        return f"{INS_SYSTEM}|{valid_nir(self.context_number)}"


CASES = {
    "R14-masque-ps-vs-authorized-practitioner": Hidden(
        "R14",
        lambda t: t.practitioner(AUTHORIZED),
        PATIENT_A,
        1,
        "a-masked",
        frozenset({"a-visible", "a-invisible"}),
        seer=lambda t: t.practitioner(GP),
    ),
    "R14-invisible-patient-vs-patient": Hidden(
        "R14",
        lambda t: t.patient(PATIENT_A),
        PATIENT_A,
        1,
        "a-invisible",
        frozenset({"a-visible", "a-masked"}),
        seer=lambda t: t.practitioner(GP),
        kind="patient",
    ),
    "R07-invisible-representants-legaux-vs-parent": Hidden(
        "R07",
        lambda t: t.issuer.issue(
            subject=PARENT,
            scopes="patient/*.cruds",
            fhir_user=f"RelatedPerson/{PARENT}",
            patient=PATIENT_M,
        ),
        PATIENT_M,
        2,
        "m-invisible-rl",
        frozenset({"m-visible"}),
        seer=lambda t: t.practitioner(AUTHORIZED),
        kind="parent",
    ),
    "R09-blocked-practitioner": Hidden(
        "R09",
        lambda t: t.practitioner(BLOCKED),
        PATIENT_A,
        1,
        "a-visible",
        frozenset(),
        seer=lambda t: t.practitioner(GP),
        refused=True,
    ),
    "R06-other-patients-document-vs-patient": Hidden(
        "R06",
        lambda t: t.patient(PATIENT_A),
        PATIENT_A,
        1,
        "b-doc",
        frozenset({"a-visible", "a-masked"}),
        seer=lambda t: t.patient(PATIENT_B),
        kind="patient",
    ),
}
CASE_IDS = list(CASES)
LABELLED_CASE_IDS = [name for name, case in CASES.items() if case.hidden_label]


@dataclass
class World:
    client: object
    tokens: Tokens
    service: object

    def get(self, token: str, url: str, **headers: str):
        return self.client.get(url, headers=auth(token, **headers))


def logged_events(world: World) -> list[dict]:
    """Every event of the audit log, as the server itself reads them."""
    result = world.service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
    return [json.loads(body) for _, _, body, _ in result.matches]


def _build_world(data_dir: Path, engine: str | None = None):
    """The seeded record on `engine` (by default the running test's, `create_test_app`)."""
    settings = load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
    app = create_test_app(settings, engine=engine)
    runtime = app.extensions["fhir"]
    seed(runtime.service)
    return app, World(app.test_client(), Tokens(data_dir), runtime.service)


@pytest.fixture(scope="module")
def world(tmp_path_factory, http_engine):
    """Read paths share one seeded record (they change nothing but the audit trail)."""
    app, built = _build_world(tmp_path_factory.mktemp("r18") / "var")
    yield built
    app.extensions["fhir"].store.close()


def own_world(tmp_path):
    """This module's record, one per test: for tests whose requests change it (the other
    modules' `world = pytest.fixture(own_world, name="world")`)."""
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


fresh_world = pytest.fixture(own_world, name="fresh_world")  # write paths, a record each


# -- helpers ------------------------------------------------------------------------------------


def entries(bundle: dict, mode: str | None = None) -> list[dict]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if mode is None or (e.get("search") or {}).get("mode") == mode
    ]


def ids_of(resources: list[dict], resource_type: str = "DocumentReference") -> set[str]:
    return {r["id"] for r in resources if r.get("resourceType") == resource_type}


def outcome_shape(response, *ids: str) -> tuple[int, str]:
    """Status and body with the given ids blanked: what a client could compare."""
    text = response.get_data(as_text=True)
    for value in ids:
        text = text.replace(value, "<id>")
    text = re.sub(r'"(id|lastUpdated)":"[^"]*"', r'"\1":"<x>"', text)
    return response.status_code, text


def issue_codes(response) -> list[str]:
    body = response.get_json(silent=True) or {}
    return [issue.get("code") for issue in body.get("issue", [])]


def follow(world: World, token: str, url: str) -> tuple[list[dict], int | None]:
    """All pages of a search, and the total announced on page 1."""
    first = world.get(token, url)
    assert first.status_code == 200, first.get_data(as_text=True)
    bundle = first.get_json()
    total = bundle.get("total")
    found = entries(bundle, "match")
    while True:
        link = next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)
        if link is None:
            return found, total
        page = world.get(token, link.removeprefix(BASE))
        assert page.status_code == 200, page.get_data(as_text=True)
        bundle = page.get_json()
        found += entries(bundle, "match")


def assert_search_hides(world: World, case: Hidden, url: str, *, expect_visible: bool = True):
    """The search answers like for a requester who is refused / sees only `visible`."""
    token = case.requester(world.tokens)
    response = world.get(token, url)
    if case.refused:
        stranger = world.get(world.tokens.practitioner(STRANGER), url)
        assert outcome_shape(response) == outcome_shape(stranger), (
            "a blocked practitioner is told something an unauthorized one is not"
        )
        assert response.status_code == 403
        return None
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    # A visible List or DocumentReference is served without the elements naming the hidden
    # one (test_r18_lists_and_relates_to_do_not_name_the_hidden_document); here, the hidden
    # resource must not be an entry of the Bundle.
    shown = {r.get("id") for r in entries(bundle)} | {
        e.get("fullUrl", "").rsplit("/", 1)[-1] for e in bundle.get("entry", [])
    }
    assert doc_id(case.hidden) not in shown, "the hidden document is an entry of the Bundle"
    assert binary_id(case.hidden) not in shown
    if expect_visible:
        assert ids_of(entries(bundle)) & {doc_id(k) for k in case.visible}, (
            "the control document is missing: the query itself is broken"
        )
    return bundle


# -- single reads -------------------------------------------------------------------------------

SINGLE_READS = {
    "read": "/fhir/DocumentReference/{id}",
    "vread": "/fhir/DocumentReference/{id}/_history/1",
    "instance-history": "/fhir/DocumentReference/{id}/_history",
    "binary-raw": "/fhir/Binary/{binary}",
    "binary-fhir": "/fhir/Binary/{binary}?_format=json",
    # Seeded before its document, each Binary was claimed by it: version 1 has no owner yet
    # and is judged by the documents naming it, version 2 by its owner (issue #18 finding 1).
    "binary-vread-unowned": "/fhir/Binary/{binary}/_history/1",
    "binary-vread-owned": "/fhir/Binary/{binary}/_history/2",
    "binary-history": "/fhir/Binary/{binary}/_history",
}


def _single_read_pair(world: World, case: Hidden, path: str):
    token = case.requester(world.tokens)
    accept = {"Accept": "application/pdf"} if path.startswith("binary-") else {}
    template = SINGLE_READS[path]
    hidden = world.get(
        token, template.format(id=doc_id(case.hidden), binary=binary_id(case.hidden)), **accept
    )
    missing = world.get(token, template.format(id=UNKNOWN_ID, binary=UNKNOWN_ID), **accept)
    return hidden, missing


@pytest.mark.parametrize("path", list(SINGLE_READS))
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_single_read_of_hidden_document_has_status_of_a_missing_one(world, case_id, path):
    """R18 + the hiding rule: read, vread, instance history and Binary (raw and FHIR)."""
    case = CASES[case_id]
    hidden, missing = _single_read_pair(world, case, path)
    assert hidden.status_code == missing.status_code == 404
    assert issue_codes(hidden) == issue_codes(missing) == ["not-found"]
    assert b"JVBERi0" not in hidden.data and b"%PDF" not in hidden.data


@pytest.mark.parametrize("path", list(SINGLE_READS))
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_single_read_of_hidden_document_has_body_of_a_missing_one(world, case_id, path):
    """R18: same wording as for a resource that does not exist, whatever hides it."""
    case = CASES[case_id]
    hidden, missing = _single_read_pair(world, case, path)
    assert outcome_shape(hidden, doc_id(case.hidden), binary_id(case.hidden)) == outcome_shape(
        missing, UNKNOWN_ID
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_single_read_of_a_visible_document_is_served(world, case_id):
    """The control: what the requester may see is served (so the 404s above mean hiding)."""
    case = CASES[case_id]
    token = case.requester(world.tokens)
    for key in case.visible:
        assert world.get(token, f"/fhir/DocumentReference/{doc_id(key)}").status_code == 200
        assert world.get(token, f"/fhir/Binary/{binary_id(key)}?_format=json").status_code == 200
    seer = case.seer(world.tokens)
    assert world.get(seer, f"/fhir/DocumentReference/{doc_id(case.hidden)}").status_code == 200


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_type_history_is_refused_without_naming_anything(world, case_id):
    case = CASES[case_id]
    response = world.get(case.requester(world.tokens), "/fhir/DocumentReference/_history")
    stranger = world.get(world.tokens.practitioner(STRANGER), "/fhir/DocumentReference/_history")
    assert response.status_code == 403
    assert outcome_shape(response) == outcome_shape(stranger)
    assert doc_id(case.hidden) not in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_get_entries_of_batch_and_transaction_answer_as_for_missing(world, case_id, kind):
    case = CASES[case_id]
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"request": {"method": "GET", "url": f"DocumentReference/{doc_id(case.hidden)}"}},
            {"request": {"method": "GET", "url": f"DocumentReference/{UNKNOWN_ID}"}},
            {
                "request": {
                    "method": "GET",
                    "url": f"DocumentReference/{doc_id(case.hidden)}/_history/1",
                }
            },
            {"request": {"method": "GET", "url": f"DocumentReference/{UNKNOWN_ID}/_history/1"}},
        ],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(case.requester(world.tokens), **{"Content-Type": FHIR_JSON}),
    )
    text = response.get_data(as_text=True)
    assert "JVBERi0" not in text and '"resourceType":"DocumentReference"' not in text
    if kind == "transaction":
        # A transaction fails whole: the hidden read fails it exactly like a missing one.
        missing_only = {**bundle, "entry": [bundle["entry"][1], bundle["entry"][3]]}
        reference = world.client.post(
            "/fhir",
            data=json.dumps(missing_only),
            headers=auth(case.requester(world.tokens), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == reference.status_code
        assert issue_codes(response) == issue_codes(reference)
        return
    assert response.status_code == 200
    answers = [e["response"] for e in response.get_json()["entry"]]
    assert answers[0]["status"].split()[0] == answers[1]["status"].split()[0] == "404"
    assert answers[2]["status"].split()[0] == answers[3]["status"].split()[0] == "404"
    codes = [[i["code"] for i in a.get("outcome", {}).get("issue", [])] for a in answers]
    assert codes[0] == codes[1] and codes[2] == codes[3]


# -- Binary ownership and the audit views (issue #18 findings 1 and 2) --------------------------

FIRST_ID = "00000000-0000-4000-8000-000000000000"  # sorts before every seeded id


def _pointer_record(case: Hidden) -> str:
    """Where the requester may write a document: their context record, or for a practitioner
    refused that record (R09), another patient's (which sorts the pointer first)."""
    return PATIENT_B if case.refused else case.context


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_own_pointer_to_the_hidden_binary_is_refused_and_grants_nothing(fresh_world, case_id):
    """Finding 1: a DocumentReference the requester writes naming the hidden document's
    Binary is refused (422 at its attachment.url), and every Binary read stays a 404."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    resource = _new_document(case, "urn:uuid:pointer")
    resource["subject"] = {"reference": f"Patient/{_pointer_record(case)}"}
    resource["content"] = [
        {
            "attachment": {
                "contentType": "application/pdf",
                "url": f"Binary/{binary_id(case.hidden)}",
            }
        }
    ]
    headers = auth(token, **{"Content-Type": FHIR_JSON})
    response = fresh_world.client.post(
        "/fhir/DocumentReference", data=json.dumps(resource), headers=headers
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    expressions = [e for i in response.get_json()["issue"] for e in i.get("expression", [])]
    assert expressions == ["DocumentReference.content[0].attachment.url"]
    # The same pointer under an id chosen to sort first: clients create no ids (updateCreate
    # false), so it answers as a read of an unknown id.
    resource["id"] = FIRST_ID
    response = fresh_world.client.put(
        f"/fhir/DocumentReference/{FIRST_ID}", data=json.dumps(resource), headers=headers
    )
    assert response.status_code == 404, response.get_data(as_text=True)
    for path in [p for p in SINGLE_READS if p.startswith("binary-")]:
        hidden, missing = _single_read_pair(fresh_world, case, path)
        assert hidden.status_code == missing.status_code == 404, path


def _viewers(world: World, patient_id: str) -> list[str]:
    """Who reads the AuditEvents of a record: its patient, and a parent of the minor."""
    viewers = [world.tokens.patient(patient_id)]
    if patient_id == PATIENT_M:
        viewers.append(
            CASES["R07-invisible-representants-legaux-vs-parent"].requester(world.tokens)
        )
    return viewers


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_audit_views_name_nothing_the_viewer_may_not_see(world, case_id):
    """Finding 2: after the requester's attempts and a read by someone who sees the hidden
    document, the AuditEvents the patient (and a parent) are shown name neither the hidden
    document nor its Binary, whenever it is hidden from that viewer."""
    case = CASES[case_id]
    for token in (case.requester(world.tokens), case.seer(world.tokens)):
        for path in SINGLE_READS:
            _single_read_pair_as(world, token, case, path)
    patient = DOCS[case.hidden][0]
    for viewer in _viewers(world, patient):
        hidden = world.get(viewer, f"/fhir/DocumentReference/{doc_id(case.hidden)}")
        if hidden.status_code == 200:
            continue  # the viewer sees the document: its trace may name it
        # An event the viewer is shown whatever ran before (the check below that the trace
        # is not empty held only after the module's earlier tests had filled it).
        assert world.get(viewer, f"/fhir/Patient/{patient}").status_code == 200
        response = world.get(viewer, f"/fhir/AuditEvent?patient={patient}&_count=1000")
        assert response.status_code == 200, response.get_data(as_text=True)
        text = response.get_data(as_text=True)
        assert response.get_json().get("entry"), "the trace is empty: the search is broken"
        assert doc_id(case.hidden) not in text and binary_id(case.hidden) not in text


def _single_read_pair_as(world: World, token: str, case: Hidden, path: str) -> None:
    accept = {"Accept": "application/pdf"} if path.startswith("binary-") else {}
    template = SINGLE_READS[path]
    world.get(
        token, template.format(id=doc_id(case.hidden), binary=binary_id(case.hidden)), **accept
    )


# -- searches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_search_does_not_return_or_count_hidden_document(world, case_id):
    case = CASES[case_id]
    bundle = assert_search_hides(world, case, f"/fhir/DocumentReference?patient={case.context}")
    if bundle is not None:
        assert ids_of(entries(bundle)) == {doc_id(k) for k in case.visible}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_search_by_identifier_of_hidden_document_finds_nothing(world, case_id):
    case = CASES[case_id]
    url = (
        f"/fhir/DocumentReference?patient={case.context}"
        f"&identifier={IDENTIFIER_SYSTEM}|{doc_identifier(case.hidden)}"
    )
    bundle = assert_search_hides(world, case, url, expect_visible=False)
    if bundle is not None:
        assert entries(bundle) == []


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_summary_count_excludes_hidden_document(world, case_id):
    case = CASES[case_id]
    url = f"/fhir/DocumentReference?patient={case.context}&_summary=count"
    bundle = assert_search_hides(world, case, url, expect_visible=False)
    if bundle is not None:
        assert bundle["total"] == len(case.visible) and not bundle.get("entry")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_total_accurate_and_next_links_exclude_hidden_document(world, case_id):
    case = CASES[case_id]
    url = f"/fhir/DocumentReference?patient={case.context}&_total=accurate&_count=1"
    token = case.requester(world.tokens)
    if case.refused:
        assert_search_hides(world, case, url)
        return
    found, total = follow(world, token, url)
    assert total == len(case.visible)
    assert [r["id"] for r in found] and ids_of(found) == {doc_id(k) for k in case.visible}
    assert len(found) == len(case.visible), "a page was padded or repeated"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_cursor_taken_by_another_requester_is_refused(world, case_id):
    """A `next` link of someone who sees the hidden document is worthless to the requester."""
    case = CASES[case_id]
    seer = case.seer(world.tokens)
    patient = DOCS[case.hidden][0]
    first = world.get(seer, f"/fhir/DocumentReference?patient={patient}&_count=1").get_json()
    next_url = next(x["url"] for x in first["link"] if x["relation"] == "next")
    assert "_cursor=" in next_url
    replay = world.get(case.requester(world.tokens), next_url.removeprefix(BASE))
    assert replay.status_code in (400, 403, 404), replay.get_data(as_text=True)
    assert replay.get_json()["resourceType"] == "OperationOutcome"
    assert doc_id(case.hidden) not in replay.get_data(as_text=True)
    # The seer's own cursor works, so the refusal is about who replays it.
    assert world.get(seer, next_url.removeprefix(BASE)).status_code == 200


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_include_does_not_bring_hidden_document(world, case_id):
    """`List:item` and `DocumentReference:relatesto` both point at the hidden document."""
    case = CASES[case_id]
    for url in (
        f"/fhir/List?patient={case.context}&_include=List:item",
        f"/fhir/DocumentReference?patient={case.context}&_include=DocumentReference:relatesto",
        f"/fhir/DocumentReference?patient={case.context}&_include=*",
    ):
        bundle = assert_search_hides(
            world, case, url, expect_visible=not url.startswith("/fhir/List")
        )
        if bundle is not None and url.startswith("/fhir/List"):
            assert entries(bundle, "match"), "the List itself is missing"
            assert ids_of(entries(bundle, "include")) <= {doc_id(k) for k in case.visible}


LISTED = {
    PATIENT_A: DOCS.keys() - {"m-visible", "m-invisible-rl", "b-other"},
    PATIENT_M: {"m-visible", "m-invisible-rl"},
}
NAMING_DOCUMENT = {PATIENT_A: "a-visible", PATIENT_M: "m-visible"}  # its relatesTo name the rest


def _named(resource: dict) -> set[str]:
    """The document ids a List's entries or a DocumentReference's relatesTo name."""
    items = [e.get("item") for e in resource.get("entry", [])]
    items += [r.get("target") for r in resource.get("relatesTo", [])]
    return {i["reference"].split("/")[1] for i in items if i}


@pytest.mark.parametrize("case_id", [c for c in CASE_IDS if not CASES[c].refused])
def test_r18_lists_and_relates_to_do_not_name_the_hidden_document(world, case_id):
    """The record's List names every document, and a visible DocumentReference relates to
    the others: on every read path, the hidden document's id is not in the answer, and the
    documents the requester sees are still named."""
    case = CASES[case_id]
    token = case.requester(world.tokens)
    list_id = _id(f"list-{case.context}")
    naming = doc_id(NAMING_DOCUMENT[case.context])
    still_named = {doc_id(k) for k in case.visible & LISTED[case.context]}
    for url in (
        f"/fhir/List/{list_id}",
        f"/fhir/List/{list_id}/_history/1",
        f"/fhir/List/{list_id}/_history",
        f"/fhir/List?patient={case.context}",
        f"/fhir/DocumentReference/{naming}",
        f"/fhir/DocumentReference/{naming}/_history/1",
        f"/fhir/DocumentReference?patient={case.context}",
    ):
        response = world.get(token, url)
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        assert doc_id(case.hidden) not in response.get_data(as_text=True), url
        body = response.get_json()
        resources = entries(body) if body["resourceType"] == "Bundle" else [body]
        named = set().union(*(_named(r) for r in resources if r["id"] in (list_id, naming)))
        expected = still_named - {naming} if "DocumentReference" in url else still_named
        assert expected <= named, (url, "a document the requester sees is no longer named")


@pytest.mark.parametrize("case_id", [c for c in CASE_IDS if not CASES[c].refused])
def test_r18_searching_lists_or_relates_to_by_the_hidden_document_is_as_for_a_missing_one(
    world, case_id
):
    """`List?item=` (typed or not) and `DocumentReference?relatesto=` the hidden document
    find what they find for an id that does not exist."""
    case = CASES[case_id]
    token = case.requester(world.tokens)
    control = doc_id(next(iter(sorted(case.visible & LISTED[case.context]))))

    def found(url: str) -> set[str]:
        response = world.get(token, url)
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        return {r["id"] for r in entries(response.get_json(), "match")}

    for template in (
        "/fhir/List?patient={context}&item=DocumentReference/{target}",
        "/fhir/List?patient={context}&item={target}",
        "/fhir/DocumentReference?patient={context}&relatesto=DocumentReference/{target}",
    ):
        answers = {
            target: found(template.format(context=case.context, target=target))
            for target in (doc_id(case.hidden), UNKNOWN_ID, control)
        }
        assert answers[doc_id(case.hidden)] == answers[UNKNOWN_ID], template
        if "relatesto" not in template:
            assert answers[control], f"{template}: the control document finds nothing"


@pytest.mark.parametrize("case_id", [c for c in CASE_IDS if not CASES[c].refused])
def test_r18_an_update_keeps_what_its_writer_was_not_shown(fresh_world, case_id):
    """The requester sends back the List they were served: the stored List still names the
    hidden document (what one cannot see, one cannot remove), and the answer does not."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    list_id = _id(f"list-{case.context}")
    if case.kind == "practitioner":  # only its source changes a List (the patient's here)
        current = fresh_world.service.read(INTERNAL, "List", list_id).json()
        current["source"] = {"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED}}
        fresh_world.service.update(INTERNAL, "List", list_id, current)
    before = fresh_world.service.read(INTERNAL, "List", list_id).version
    served = fresh_world.get(token, f"/fhir/List/{list_id}").get_json()
    response = fresh_world.client.put(
        f"/fhir/List/{list_id}",
        data=json.dumps(served),
        headers=auth(token, **{"Content-Type": FHIR_JSON, "Prefer": "return=representation"}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert doc_id(case.hidden) not in response.get_data(as_text=True)
    stored = fresh_world.service.read(INTERNAL, "List", list_id)
    assert stored.version == before + 1
    assert doc_id(case.hidden) in _named(stored.json())
    assert _named(stored.json()) == {doc_id(k) for k in LISTED[case.context]}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_revinclude_does_not_bring_hidden_document(world, case_id):
    case = CASES[case_id]
    url = f"/fhir/Patient?_id={case.context}&_revinclude=DocumentReference:subject"
    bundle = assert_search_hides(world, case, url)
    if bundle is not None:
        assert ids_of(entries(bundle, "include")) == {doc_id(k) for k in case.visible}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_chained_search_does_not_return_hidden_document(world, case_id):
    case = CASES[case_id]
    url = f"/fhir/DocumentReference?patient.identifier={quote(case.ins)}"
    bundle = assert_search_hides(world, case, url)
    if bundle is not None:
        assert ids_of(entries(bundle)) == {doc_id(k) for k in case.visible}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_has_by_class_does_not_match_through_hidden_document(world, case_id):
    """`Patient?_has:DocumentReference:subject:category=` the hidden document's own class
    must not return the patient; the class of a visible document must (the control)."""
    case = CASES[case_id]
    base = f"/fhir/Patient?_id={case.context}&_has:DocumentReference:subject:category="
    hidden = assert_search_hides(
        world, case, base + quote(f"{CLASS_SYSTEM}|{case.hidden_class}"), expect_visible=False
    )
    if hidden is None:
        return
    assert ids_of(entries(hidden), "Patient") == set()
    visible_class = DOCS[sorted(case.visible)[0]][1]
    shown = world.get(case.requester(world.tokens), base + quote(f"{CLASS_SYSTEM}|{visible_class}"))
    assert ids_of(entries(shown.get_json()), "Patient") == {case.context}


@pytest.mark.parametrize("case_id", LABELLED_CASE_IDS)
def test_r18_has_by_security_label_does_not_match_through_hidden_document(world, case_id):
    case = CASES[case_id]
    label = quote(f"{SYSTEM_DMP_CONFIDENTIALITY}|{case.hidden_label}")
    url = f"/fhir/Patient?_id={case.context}&_has:DocumentReference:subject:security-label={label}"
    bundle = assert_search_hides(world, case, url, expect_visible=False)
    if bundle is not None:
        assert ids_of(entries(bundle), "Patient") == set()
        assert bundle.get("total", 0) == 0


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_has_without_patient_does_not_match_through_hidden_document(world, case_id):
    """A patient or parent may leave the patient out (their own record is implied)."""
    case = CASES[case_id]
    if case.kind == "practitioner":
        url = f"/fhir/Patient?_has:DocumentReference:subject:category={case.hidden_class}"
        response = world.get(case.requester(world.tokens), url)
        assert response.status_code == 400  # R04: a practitioner must designate the patient
        return
    url = f"/fhir/Patient?_has:DocumentReference:subject:category={case.hidden_class}"
    response = world.get(case.requester(world.tokens), url)
    assert response.status_code == 200
    assert ids_of(entries(response.get_json()), "Patient") == set()


def test_r18_a_patient_gets_the_same_answer_for_a_registered_and_an_unknown_ins(world):
    """R06/R18: patient A naming patient B's INS learns no more than naming an unknown INS
    (fixed in access/policy.py: both are "A patient may only access their own record")."""
    token = world.tokens.patient(PATIENT_A)
    other = world.get(
        token, f"/fhir/DocumentReference?patient.identifier={quote(f'{INS_SYSTEM}|{valid_nir(3)}')}"
    )
    unknown = world.get(
        token,
        f"/fhir/DocumentReference?patient.identifier={quote(f'{INS_SYSTEM}|{valid_nir(77)}')}",
    )
    assert other.status_code == 403
    assert outcome_shape(other) == outcome_shape(unknown)
    assert doc_id("b-doc") not in other.get_data(as_text=True)


# -- conditional writes -------------------------------------------------------------------------


def _new_document(case: Hidden, url: str | None = None) -> dict:
    """A DMP document the requester could deposit in the context record, authored in their
    name, its bytes inline (ITI-105) or the Binary `url`. It carries its own entryUUID: the
    criteria of a conditional write need not be the body's (a body carrying the hidden
    document's entryUUID is refused by the registry, as ITI-41 refuses it)."""
    resource = dmp_document(case.context, url, content_type="text/plain", title="new")
    resource["author"] = document("a-visible")["author"]
    authors = {
        "patient": {"reference": f"Patient/{case.context}"},
        "parent": {"reference": f"RelatedPerson/{PARENT}"},
    }
    if case.kind in authors:
        resource["author"] = [authors[case.kind]]
    return resource


def _own_binary(world: World, token: str) -> str:
    """The url of a Binary the requester deposits first (the two-step deposit of a PUT)."""
    response = world.client.post(
        "/fhir/Binary", json=binary(), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return f"Binary/{response.get_json()['id']}"


def _criteria(case: Hidden, identifier: str) -> str:
    """Criteria on one document identifier; a practitioner must also designate the record
    (R04), a patient or parent may leave it implied (then nothing but their access rights
    keep a document of patient B out)."""
    criteria = f"identifier={quote(f'{IDENTIFIER_SYSTEM}|{identifier}')}"
    return f"patient={case.context}&{criteria}" if case.kind == "practitioner" else criteria


def _hidden_version(world: World, case: Hidden) -> tuple[int, bool]:
    stored = world.service.store.read("DocumentReference", doc_id(case.hidden))
    return stored.version, stored.deleted


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_conditional_create_never_answers_with_the_hidden_document(fresh_world, case_id):
    """If-None-Exist matching only the hidden document answers as if nothing matched."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    results = []
    for criteria in (doc_identifier(case.hidden), "urn:uuid:never-used"):
        response = fresh_world.client.post(
            "/fhir/DocumentReference",
            data=json.dumps(_new_document(case)),
            headers=auth(
                token,
                **{
                    "Content-Type": FHIR_JSON,
                    "If-None-Exist": _criteria(case, criteria),
                },
            ),
        )
        results.append(response)
    hidden, fresh = results
    assert hidden.status_code == fresh.status_code
    assert hidden.status_code != 200, "the hidden document was returned as the existing match"
    assert doc_id(case.hidden) not in hidden.get_data(as_text=True)
    if case.refused:
        assert hidden.status_code == 403
    else:
        assert hidden.status_code == 201
        assert hidden.get_json()["id"] != doc_id(case.hidden)
    assert _hidden_version(fresh_world, case) == (1, False)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_conditional_update_never_touches_the_hidden_document(fresh_world, case_id):
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    results = []
    for criteria in (doc_identifier(case.hidden), "urn:uuid:never-used"):
        response = fresh_world.client.put(
            f"/fhir/DocumentReference?{_criteria(case, criteria)}",
            data=json.dumps(_new_document(case, _own_binary(fresh_world, token))),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        results.append(response)
    hidden, fresh = results
    assert hidden.status_code == fresh.status_code
    assert hidden.status_code == (403 if case.refused else 201)
    assert issue_codes(hidden) == issue_codes(fresh)
    assert doc_id(case.hidden) not in hidden.get_data(as_text=True)
    assert _hidden_version(fresh_world, case) == (1, False)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_conditional_delete_never_touches_the_hidden_document(fresh_world, case_id):
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    results = [
        fresh_world.client.delete(
            f"/fhir/DocumentReference?{_criteria(case, criteria)}",
            headers=auth(token),
        )
        for criteria in (doc_identifier(case.hidden), "urn:uuid:never-used")
    ]
    hidden, missing = results
    assert outcome_shape(hidden) == outcome_shape(missing)
    assert hidden.status_code == (403 if case.refused else 204)
    assert _hidden_version(fresh_world, case) == (1, False)


# -- every version, writes on hidden ids (issue #18: findings 6 and 13) --------------------------


def _with_earlier_visible_version(world: World, case: Hidden) -> int:
    """Give the hidden document a version the requester could read, then hide it again (a
    labelled document loses its label, then gets it back); its version count."""
    document_id = doc_id(case.hidden)
    current = world.service.read(INTERNAL, "DocumentReference", document_id).json()
    unlabelled = {k: v for k, v in current.items() if k not in ("securityLabel", "meta")}
    world.service.update(INTERNAL, "DocumentReference", document_id, unlabelled)
    world.service.update(INTERNAL, "DocumentReference", document_id, current)
    return world.service.read(INTERNAL, "DocumentReference", document_id).version


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_every_version_of_a_hidden_document_answers_as_a_missing_one(fresh_world, case_id):
    """Finding 6: a version is served only if the current one may be read too; an earlier
    version the requester could have read (vread, Bundle GET) answers 404 like a missing id."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    versions = _with_earlier_visible_version(fresh_world, case)
    assert versions == 3
    hidden_id = doc_id(case.hidden)
    for version in range(1, versions + 1):
        path = f"/fhir/DocumentReference/{{}}/_history/{version}"
        hidden = fresh_world.get(token, path.format(hidden_id))
        missing = fresh_world.get(token, path.format(UNKNOWN_ID))
        assert hidden.status_code == 404, (version, hidden.get_data(as_text=True)[:200])
        assert outcome_shape(hidden, hidden_id) == outcome_shape(missing, UNKNOWN_ID)
    batch = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"request": {"method": "GET", "url": f"DocumentReference/{i}/_history/2"}}
                for i in (hidden_id, UNKNOWN_ID)
            ],
        }
    )
    response = fresh_world.client.post(
        "/fhir", data=batch, headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    answers = [e["response"] for e in response.get_json()["entry"]]
    assert [a["status"].split()[0] for a in answers] == ["404", "404"]
    assert "JVBERi0" not in response.get_data(as_text=True)
    # The seer still reads every version that is visible to them.
    seer = case.seer(fresh_world.tokens)
    assert fresh_world.get(seer, f"/fhir/DocumentReference/{hidden_id}/_history/2").status_code == (
        200
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_delete_of_a_hidden_document_answers_as_for_a_missing_one(fresh_world, case_id):
    """Finding 13: DELETE of a hidden id answered 404 (403 naming the block for a blocked
    practitioner) where a missing id answers 204. Same answer now, and nothing deleted."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    hidden = fresh_world.client.delete(
        f"/fhir/DocumentReference/{doc_id(case.hidden)}", headers=auth(token)
    )
    missing = fresh_world.client.delete(
        f"/fhir/DocumentReference/{UNKNOWN_ID}", headers=auth(token)
    )
    assert outcome_shape(hidden) == outcome_shape(missing)
    assert hidden.status_code == 204
    assert _hidden_version(fresh_world, case) == (1, False)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_r18_update_of_a_hidden_document_answers_as_far_as_possible_as_for_a_missing_one(
    fresh_world, case_id
):
    """Finding 13, PUT: where a missing id would be refused, the hidden one gets the same
    refusal; where a missing id would be created (update as create), the hidden one, which
    is never overwritten, answers the 404 of a read of it. Nothing changes the document."""
    case = CASES[case_id]
    token = case.requester(fresh_world.tokens)
    answers = {}
    for target in (doc_id(case.hidden), UNKNOWN_ID):
        body = {**_new_document(case, f"urn:uuid:{target}"), "id": target}
        answers[target] = fresh_world.client.put(
            f"/fhir/DocumentReference/{target}",
            data=json.dumps(body),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
    hidden, missing = answers[doc_id(case.hidden)], answers[UNKNOWN_ID]
    if missing.status_code == 201:
        read = fresh_world.get(token, f"/fhir/DocumentReference/{doc_id(case.hidden)}")
        assert outcome_shape(hidden) == outcome_shape(read)
        assert hidden.status_code == 404
    else:
        assert outcome_shape(hidden, doc_id(case.hidden)) == outcome_shape(missing, UNKNOWN_ID)
    assert doc_id(case.hidden) not in hidden.get_data(as_text=True).replace(
        f"DocumentReference/{doc_id(case.hidden)} is not known", ""
    )
    assert _hidden_version(fresh_world, case) == (1, False)

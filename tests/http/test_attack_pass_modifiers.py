"""Attack pass on search modifiers, chains and result controls (R04, R09, R13, R14, R18).

Each shape was sent for a record with and without a document hidden from the requester (a
MASQUE_PS document for an authorized professional, an INVISIBLE_PATIENT one for the
patient, one invisible to a minor's parents, any document for a blocked professional) and
the answers compared (status, `Bundle.total`, entries, paging links, OperationOutcome), on
SQLite and on mongomock: `:missing`, `:not`, `:exact`, `:contains`, `:text`, `:of-type`,
`:below`, `_id:not`, `_sort` by date, `_lastUpdated`, category, type, description and
security-label, `_total=accurate`, `_summary=count`, `_count=0|1`, `_elements`, `_include`
and `_revinclude` with `:iterate` and `*`, `_has` on DocumentReference, List, AuditEvent,
Communication, RelatedPerson, nested `_has:_has`, chains through `relatesto` and `item`,
and the AuditEvent search with entity chains. They answered alike, except one shape:

- A chain through the patient parameter to Patient was taken for the search's designation
  of its patient (R04) whatever it said: `patient._has:DocumentReference:patient:
  category=31` was looked up over every Patient of the store, without the requester's
  constraints, the record it found alone judged, and the chain then replaced by a plain
  reference to that Patient. A professional authorized on a record was answered every
  document they read (200) when the record held a document masked from them of that class,
  identifier or content, and 404 "no record" otherwise; the patient was answered their
  documents, or 403 "only your own record", by whether the record held an INVISIBLE_PATIENT
  document of the class asked; and any professional, blocked or a stranger, learned by 403
  against 404 whether, and in which record, a document of a given uniqueId exists. After a
  designating parameter, the same chain was still replaced, its clause lost. Only a chain
  by `_id` or `identifier` (an INS) designates now; any other chain through `patient` is
  a clause judged on what the requester may see.
- The DMP labels of a List (an MHD SubmissionSet) are those all its entries share, hidden
  entries included (`access.list_labels`), and it was served with them as stored: the
  patient read a List of their masked document and of one invisible to them without
  MASQUE_PS, where a List of the masked document alone carried it, and `List?_security=
  MASQUE_PS` found the second and not the first (an authorized professional likewise told a
  List naming a masked document by its missing INVISIBLE_PATIENT). Each told that the List
  held an entry hidden from them. A List is now served with the labels its served entries
  share too, as a List of them alone would be, and a criterion or `_sort` on a List's
  `_security` is refused (400 `not-supported`, R18) for every requester but the server, and
  a granular scope on a List's `_security` is refused (403 R02) as the scopes reading beyond
  what they confine are.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    BLOCKED,
    CASES,
    PATIENT_A,
    STRANGER,
    UNKNOWN_ID,
    _id,
    doc_id,
    doc_identifier,
    entries,
    outcome_shape,
    own_world,
)

world = pytest.fixture(own_world, name="world")

MASKED = CASES["R14-masque-ps-vs-authorized-practitioner"]
INVISIBLE = CASES["R14-invisible-patient-vs-patient"]
UNKNOWN_IDENTIFIER = f"urn:uuid:{UNKNOWN_ID}"


def _has_documents(criterion: str) -> str:
    """A search of DocumentReference whose only patient clause is a chain through `patient`
    asking the record for documents of `criterion`."""
    return f"/fhir/DocumentReference?patient._has:DocumentReference:patient:{criterion}"


def _answer(world, token: str, url: str, *blanked: str) -> tuple[int, str]:
    """Status and body as a client compares them, the values the two URLs differ by blanked
    (the `self` link repeats the query)."""
    response = world.get(token, url)
    assert response.status_code != 500, response.get_data(as_text=True)
    return outcome_shape(response, *(quote(v, safe="") for v in blanked), *blanked)


@pytest.mark.parametrize(
    ("hidden", "missing"),
    [
        (f"identifier={doc_identifier('a-masked')}", f"identifier={UNKNOWN_IDENTIFIER}"),
        (f"_id={doc_id('a-masked')}", f"_id={UNKNOWN_ID}"),
        ("category=31", "category=99"),
        ("security-label=MASQUE_PS", "security-label=INVISIBLE_REPRESENTANTS_LEGAUX"),
    ],
    ids=["uniqueId", "id", "class", "label"],
)
def test_r14_r18_a_chain_through_patient_does_not_tell_a_masked_document(world, hidden, missing):
    """The authorized professional asks A's record, through `patient._has`, for a document
    masked from them and for one that does not exist: the same answer. Before, the masked
    one designated A (200, every document they read), the missing one nothing (404)."""
    token = MASKED.requester(world.tokens)
    shown = _answer(world, token, _has_documents(hidden), hidden)
    absent = _answer(world, token, _has_documents(missing), missing)
    assert shown == absent
    assert shown[0] == 400  # no patient designated (R04), as for any other criterion


@pytest.mark.parametrize("requester", [BLOCKED, STRANGER, AUTHORIZED])
def test_r09_r18_a_chain_through_patient_does_not_find_a_documents_record(world, requester):
    """Any professional (blocked by A, named nowhere, authorized) asks which record holds a
    document of a given uniqueId: answered as for a uniqueId no document has. Before, 403
    (R10's wording) for a document of A's record, 404 "no record" for an unknown one."""
    token = world.tokens.practitioner(requester)
    known = f"identifier={doc_identifier('a-visible')}"
    unknown = f"identifier={UNKNOWN_IDENTIFIER}"
    assert _answer(world, token, _has_documents(known), known) == _answer(
        world, token, _has_documents(unknown), unknown
    )


def test_r14_r18_a_chain_through_patient_does_not_tell_the_patient_an_invisible_document(world):
    """The patient asks their own record, through `patient._has`, for a document of the
    class of the INVISIBLE_PATIENT one (42) and of a class it has none of: no entry either
    way. Before, 42 designated their record and the chain was replaced by it (200, their
    two documents); 99 designated nothing (403 "only your own record")."""
    token = INVISIBLE.requester(world.tokens)
    invisible = _answer(world, token, _has_documents("category=42"), "42")
    none = _answer(world, token, _has_documents("category=99"), "99")
    assert invisible == none
    response = world.get(token, _has_documents("category=42"))
    assert response.status_code == 200
    assert response.get_json()["total"] == 0
    # The chain is a clause judged on what they see: their masked document's class finds it.
    visible = world.get(token, _has_documents("category=31")).get_json()
    assert visible["total"] == 2


def test_r14_r18_a_chain_through_patient_after_a_designation_keeps_its_clause(world):
    """`patient._has:...` before the INS that designates A: the designating chain alone is
    replaced by A's reference, the other kept and judged on what the professional may see.
    Before, the first chain through `patient` was replaced, whichever it was: a masked id
    found every document they read, an unknown one none."""
    token = MASKED.requester(world.tokens)
    ins = quote(MASKED.ins)

    def url(criterion: str) -> str:
        return f"{_has_documents(criterion)}&patient.identifier={ins}"

    masked = f"_id={doc_id('a-masked')}"
    unknown = f"_id={UNKNOWN_ID}"
    assert _answer(world, token, url(masked), masked) == _answer(
        world, token, url(unknown), unknown
    )
    bundle = world.get(token, url(masked)).get_json()
    assert bundle["total"] == 0, json.dumps(bundle)
    # The same clause on a document they read finds it: the chain is judged, not dropped.
    readable = world.get(token, url(f"_id={doc_id('a-visible')}")).get_json()
    assert {r["id"] for r in entries(readable)} == {doc_id("a-visible"), doc_id("a-invisible")}


def test_r04_a_chain_by_identifier_or_id_still_designates_the_patient(world):
    """What R04 names still designates: `patient.identifier=<INS>` and `patient._id=<id>`."""
    token = MASKED.requester(world.tokens)
    for url in (
        f"/fhir/DocumentReference?patient.identifier={quote(MASKED.ins)}",
        f"/fhir/DocumentReference?patient._id={PATIENT_A}",
    ):
        response = world.get(token, url)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert {r["id"] for r in entries(response.get_json())} == {
            doc_id(k) for k in MASKED.visible
        }


# -- the labels of a List ----------------------------------------------------------------------


def _put_list(world, name: str, keys: list[str]) -> str:
    """A List (SubmissionSet) of A's record naming the documents `keys`, written by the
    server: it takes the labels its entries share, as every write does."""
    list_id = _id(name)
    world.service.update(
        INTERNAL,
        "List",
        list_id,
        {
            "resourceType": "List",
            "id": list_id,
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{PATIENT_A}"},
            "source": {"reference": f"Patient/{PATIENT_A}"},
            "entry": [{"item": {"reference": f"DocumentReference/{doc_id(k)}"}} for k in keys],
        },
    )
    return list_id


LIST_PAIRS = {
    # requester: (the document they read, one hidden from them that lacks its label)
    "patient": (INVISIBLE, "a-masked", "a-invisible"),
    "authorized-practitioner": (MASKED, "a-invisible", "a-masked"),
}


@pytest.mark.parametrize("reader", LIST_PAIRS)
def test_r14_r18_a_lists_labels_do_not_tell_a_hidden_entry(world, reader):
    """Two Lists whose entries the reader is shown are the same (a document they read), one
    of which also names a document hidden from them: read, both say the same. Before, the
    one with the hidden entry came without the shown document's label (MASQUE_PS for the
    patient, INVISIBLE_PATIENT for the professional), which all its entries do not share."""
    case, shown, hidden = LIST_PAIRS[reader]
    token = case.requester(world.tokens)
    with_hidden = _put_list(world, "list-with-hidden", [shown, hidden])
    alone = _put_list(world, "list-alone", [shown])
    answers = []
    for list_id in (with_hidden, alone):
        response = world.get(token, f"/fhir/List/{list_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        answers.append(outcome_shape(response, list_id))
        served = response.get_json()
        assert [e["item"]["reference"] for e in served["entry"]] == [
            f"DocumentReference/{doc_id(shown)}"
        ]
    assert answers[0] == answers[1]
    searched = world.get(token, f"/fhir/List?patient={PATIENT_A}&_id={with_hidden},{alone}")
    labels = [
        json.dumps(r["meta"].get("security"), sort_keys=True) for r in entries(searched.get_json())
    ]
    assert len(labels) == 2 and labels[0] == labels[1]


@pytest.mark.parametrize(
    "url",
    [
        f"/fhir/List?patient={PATIENT_A}&_security=MASQUE_PS",
        f"/fhir/List?patient={PATIENT_A}&_security:not=urn:oid:1.2.250.1.213.1.1.4.13|MASQUE_PS",
        f"/fhir/List?patient={PATIENT_A}&_security:missing=true",
        f"/fhir/List?patient={PATIENT_A}&_sort=_security",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_has:List:item:_security=MASQUE_PS",
    ],
    ids=["security", "not", "missing", "sort", "has-list"],
)
@pytest.mark.parametrize("reader", LIST_PAIRS)
def test_r14_r18_a_list_is_not_searched_by_its_labels(world, reader, url):
    """A List's stored labels count its hidden entries: searching or sorting Lists by them
    is refused, for the patient and the professional alike. Before, `_security=MASQUE_PS`
    found the List of the masked document alone, not the one also naming a hidden
    document."""
    case, shown, hidden = LIST_PAIRS[reader]
    _put_list(world, "list-with-hidden", [shown, hidden])
    _put_list(world, "list-alone", [shown])
    response = world.get(case.requester(world.tokens), url)
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert "R18" in issue["diagnostics"]


def test_r02_r14_a_granular_scope_on_a_lists_labels_is_refused(world):
    """A token whose List scope is granular on `_security` (`patient/List.rs?_security=
    MASQUE_PS`): its clause would select Lists by their stored labels, hidden entries
    included, as the search's own criterion did; refused (403 R02) as the other clauses
    reading beyond the List are. Before, the patient was served the List of their masked
    document alone and not the one also naming a document invisible to them."""
    case, shown, hidden = LIST_PAIRS["patient"]
    _put_list(world, "list-with-hidden", [shown, hidden])
    _put_list(world, "list-alone", [shown])
    token = world.tokens.patient(
        PATIENT_A, scope="patient/List.rs?_security=MASQUE_PS patient/DocumentReference.rs"
    )
    response = world.get(token, f"/fhir/List?patient={PATIENT_A}")
    assert response.status_code == 403, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "R02"
    assert "_security" in issue["diagnostics"]

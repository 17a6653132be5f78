"""R18: a hidden resource is answered exactly as a missing one, paging cursors included.

A search's `next` and `previous` links, and a history's `next` link, carry a cursor the
client sends back. Signed but readable (base64 of JSON and an HMAC), it was a channel from
the server's own query to the client: the fingerprint of a where-clause holding the access
constraints the gate added (which once told a hidden id from a missing one), the stored sort
key values of the row it was taken from (not the served copy's), and a history's position,
the last version the store read, which the gate may have left out of the page (on MongoDB
its type and id). The cursors are now sealed (AES-GCM under a key derived from the server's
cursor secret): a client reads random bytes, of a length that does not tell a hidden id
from a missing one, and a cursor altered, cut, replayed by another requester or on another
query is a 400 OperationOutcome naming `_cursor`. Paging still works, both ways, on both
engines.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.store.cursor import INVALID_CURSOR
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.conftest import a_patient
from tests.http.test_r18_matrix import (
    BASE,
    CASES,
    GP,
    PATIENT_A,
    PATIENT_B,
    UNKNOWN_ID,
    _id,
    doc_id,
    document,
    entries,
    world,  # noqa: F401 (the module-scoped seeded record these tests read)
)

SEARCHES = {
    "by patient, sorted by _id": f"/fhir/DocumentReference?patient={PATIENT_A}&_sort=_id",
    "by patient, newest first": f"/fhir/DocumentReference?patient={PATIENT_A}&_sort=-_lastUpdated",
    "by patient": f"/fhir/DocumentReference?patient={PATIENT_A}",
}
# Cases where the requester sees two documents besides the hidden one: a one-entry page of a
# search by `_id` naming the hidden (or a missing) id and those two has a `next` link.
TWO_VISIBLE = [name for name, case in CASES.items() if len(case.visible) >= 2]
# A run this long of printable ASCII is text in clear (an id, a hex digest, a JSON member);
# in random bytes the chance of one in a cursor is about 1e-5.
_CLEAR_RUN = re.compile(rb"[\x20-\x7e]{16,}")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9_-]{8,}")


def _unb64(text: bytes | str) -> bytes | None:
    if isinstance(text, str):
        text = text.encode("ascii")
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except ValueError:
        return None


def readable(cursor: str) -> list[bytes]:
    """What a client reads in `cursor`: the token and each dot-separated part decoded from
    base64url (any padding), and base64url runs inside those decoded again (a cursor that
    wraps another's)."""
    found: list[bytes] = []
    layer = [cursor.encode("ascii"), *cursor.encode("ascii").split(b".")]
    for _ in range(3):
        decoded = [d for d in (_unb64(part) for part in layer) if d]
        found += decoded
        layer = [run for d in decoded for run in _BASE64_RUN.findall(d)]
    return found


def cursor_of(bundle: dict, relation: str = "next") -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            return parse_qs(urlsplit(link["url"]).query)["_cursor"][0]
    return None


def link_of(bundle: dict, relation: str) -> str | None:
    url = next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)
    return url.removeprefix(BASE) if url else None


def assert_opaque(cursor: str, *clear: str) -> None:
    """Nothing of `clear` (ids, sort values, types) nor any text is readable in `cursor`."""
    for text in readable(cursor):
        for value in clear:
            assert value.encode() not in text, f"the cursor shows {value!r}"
        assert not re.search(rb"[0-9a-f]{32}", text), "the cursor shows a hex digest"
        assert not _CLEAR_RUN.search(text), f"the cursor shows text: {text!r}"


def assert_invalid_cursor(response, what: str = "") -> None:
    assert response.status_code == 400, (what, response.get_data(as_text=True))
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", what
    assert body["issue"][0]["expression"] == ["_cursor"], what
    assert body["issue"][0]["diagnostics"] == INVALID_CURSOR, what


def with_cursor(url: str, cursor: str) -> str:
    return f"{url}&_cursor={cursor}"


# -- nothing in clear ---------------------------------------------------------------------------


@pytest.mark.parametrize("search", list(SEARCHES))
def test_r18_a_search_cursor_shows_no_id_sort_value_nor_fingerprint(world, search):  # noqa: F811
    """The `next` link of a one-entry page, and the `previous` link of the second, name
    neither the row they continue from (its id, its type, its `meta.lastUpdated` as stored)
    nor the query's fingerprint: base64url-decoded, they are no text at all."""
    gp = world.tokens.practitioner(GP)
    first = world.get(gp, f"{SEARCHES[search]}&_count=1")
    assert first.status_code == 200, first.get_data(as_text=True)
    bundle = first.get_json()
    served = entries(bundle)[0]
    cursor = cursor_of(bundle)
    assert cursor is not None
    stamp = served["meta"]["lastUpdated"]
    clear = (served["id"], "DocumentReference", stamp[:10], PATIENT_A)
    assert_opaque(cursor, *clear)
    second = world.get(gp, link_of(bundle, "next")).get_json()
    assert cursor_of(second, "previous") is not None
    assert_opaque(cursor_of(second, "previous"), *clear, entries(second)[0]["id"])


def test_r18_a_history_cursor_shows_no_position(world):  # noqa: F811
    """An instance history's `next` link names neither the resource nor the position the
    store read last (on SQLite a sequence number, on MongoDB a time, a type and an id)."""
    patient_id = _id("opaque-history-patient")
    for gender in ("male", "female", "other"):
        resource = a_patient(9, gender=gender)
        world.service.update(INTERNAL, "Patient", patient_id, {**resource, "id": patient_id})
    token = world.tokens.patient(patient_id)
    first = world.get(token, f"/fhir/Patient/{patient_id}/_history?_count=1")
    assert first.status_code == 200, first.get_data(as_text=True)
    cursor = cursor_of(first.get_json())
    assert cursor is not None
    assert_opaque(cursor, patient_id, "Patient", "after")


def test_r18_a_history_cursor_ending_on_a_hidden_version_shows_nothing_of_it(world):  # noqa: F811
    """A patient's document whose second version was invisible to the patient: the first
    page of its history (two versions read, the hidden one left out) ends on that version,
    and the `next` cursor held its position in clear (its time, on MongoDB its id and
    version number). Sealed, the cursor shows nothing, and the history still pages on."""
    document_id = _id("opaque-history-document")
    for version in (1, 2, 3):
        resource = document("b-other")
        resource["identifier"][0]["value"] = f"urn:uuid:{_id('opaque-history-identifier')}"
        if version == 2:
            coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
            resource["securityLabel"] = [{"coding": [coding]}]
            resource["meta"] = {"security": [coding]}
        resource["description"] = f"version {version}"
        world.service.update(
            INTERNAL, "DocumentReference", document_id, {**resource, "id": document_id}
        )
    patient = world.tokens.patient(PATIENT_B)
    url = f"/fhir/DocumentReference/{document_id}/_history?_count=2"
    first = world.get(patient, url)
    assert first.status_code == 200, first.get_data(as_text=True)
    served = [e["resource"]["meta"]["versionId"] for e in first.get_json()["entry"]]
    assert served == ["3"], "the hidden version is served, or the page is not the one meant"
    cursor = cursor_of(first.get_json())
    assert cursor is not None
    assert_opaque(cursor, document_id, f"{document_id}/2", "DocumentReference")
    rest = world.get(patient, link_of(first.get_json(), "next"))
    assert rest.status_code == 200, rest.get_data(as_text=True)
    assert [e["resource"]["meta"]["versionId"] for e in rest.get_json()["entry"]] == ["1"]


# -- the length --------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", TWO_VISIBLE)
@pytest.mark.parametrize("sort", ["", "&_sort=_id", "&_sort=-_lastUpdated"])
def test_r18_cursors_of_a_hidden_and_a_missing_id_have_the_same_length(world, case_id, sort):  # noqa: F811
    """Two searches differing only by naming the hidden document's id or a missing one
    (of the same length) give pages alike, and `next` cursors of the same length: a
    cursor's length depends on nothing the requester may not know."""
    case = CASES[case_id]
    token = case.requester(world.tokens)
    visible = ",".join(sorted(doc_id(k) for k in case.visible))
    url = f"/fhir/DocumentReference?patient={case.context}"
    cursors = []
    for named in (doc_id(case.hidden), UNKNOWN_ID):
        response = world.get(token, f"{url}&_id={named},{visible}&_count=1{sort}")
        assert response.status_code == 200, response.get_data(as_text=True)
        bundle = response.get_json()
        cursor = cursor_of(bundle)
        assert cursor is not None
        cursors.append((cursor, [r["id"] for r in entries(bundle)]))
        assert world.get(token, link_of(bundle, "next")).status_code == 200
    (hidden_cursor, hidden_ids), (missing_cursor, missing_ids) = cursors
    assert hidden_ids == missing_ids
    assert len(hidden_cursor) == len(missing_cursor)
    assert hidden_cursor != missing_cursor, "a random nonce: two cursors are never equal"


# -- refused -------------------------------------------------------------------------------------


def _flipped(cursor: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_r18_an_altered_cut_or_foreign_search_cursor_is_a_400_naming_cursor(world):  # noqa: F811
    """One bit flipped anywhere (format byte, nonce, ciphertext, tag), the token cut, a
    cursor of another requester (who sees more) or of another query (another sort), a
    version-1 `payload.mac` token, or bytes that are no base64url: each is the same 400."""
    gp, authorized = world.tokens.practitioner(GP), CASES[TWO_VISIBLE[0]].requester(world.tokens)
    url = f"/fhir/DocumentReference?patient={PATIENT_A}&_sort=_id&_count=1"
    other_query = f"/fhir/DocumentReference?patient={PATIENT_A}&_sort=-_id&_count=1"
    cursor = cursor_of(world.get(gp, url).get_json())
    assert cursor is not None
    assert world.get(gp, with_cursor(url, cursor)).status_code == 200
    size = len(_unb64(cursor) or b"")
    old_payload = base64.urlsafe_b64encode(b'{"v":1,"i":"x"}').rstrip(b"=").decode()
    refused = {
        **{f"bit flipped at {at}": (gp, url, _flipped(cursor, at)) for at in (0, 5, 40, size - 1)},
        "cut short": (gp, url, cursor[:-6]),
        "cut to half": (gp, url, cursor[: len(cursor) // 2]),
        "another requester": (authorized, url, cursor),
        "another query": (gp, other_query, cursor),
        "version 1 shape": (gp, url, f"{old_payload}.{cursor[:43]}"),
        "not base64url": (gp, url, cursor[:-1] + "%21"),
        "empty": (gp, url, ""),
    }
    for what, (token, asked, sent) in refused.items():
        response = world.get(token, with_cursor(asked, sent))
        if what == "empty" and response.status_code == 200:
            continue  # an empty `_cursor` is no cursor: the first page
        assert_invalid_cursor(response, what)


def test_r18_an_altered_or_foreign_history_cursor_is_a_400_naming_cursor(world):  # noqa: F811
    patient_id = _id("opaque-history-refused")
    for gender in ("male", "female"):
        resource = a_patient(8, gender=gender)
        world.service.update(INTERNAL, "Patient", patient_id, {**resource, "id": patient_id})
    token = world.tokens.patient(patient_id)
    url = f"/fhir/Patient/{patient_id}/_history?_count=1"
    cursor = cursor_of(world.get(token, url).get_json())
    assert cursor is not None
    assert world.get(token, with_cursor(url, cursor)).status_code == 200
    for sent, who in (
        (_flipped(cursor, 20), token),
        (cursor[:-3], token),
        (cursor, world.tokens.system()),
    ):
        assert_invalid_cursor(world.get(who, with_cursor(url, sent)))


# -- paging still works ------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["_id", "-_id", "-_lastUpdated"])
def test_r18_sealed_cursors_page_forward_and_back(world, sort):  # noqa: F811
    """One entry a page: `next` links walk the whole result in its order, and `previous`
    links from the last page walk it back, on both engines."""
    gp = world.tokens.practitioner(GP)
    url = f"/fhir/DocumentReference?patient={PATIENT_A}&_sort={sort}"
    whole = [r["id"] for r in entries(world.get(gp, url).get_json())]
    assert len(whole) == 3
    forward: list[str] = []
    page = world.get(gp, f"{url}&_count=1").get_json()
    while True:
        forward += [r["id"] for r in entries(page)]
        following = link_of(page, "next")
        if following is None:
            break
        response = world.get(gp, following)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
    assert forward == whole
    backward = [r["id"] for r in entries(page)]
    while (preceding := link_of(page, "previous")) is not None:
        response = world.get(gp, preceding)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        backward = [r["id"] for r in entries(page)] + backward
    assert backward == whole

"""Attack pass on the MongoDB engine: a value the client controls that MongoDB reads
otherwise than SQLite, so that a search answers differently on the production engine
(R18: the same request, the same answer, whatever the store; never a 500).

Runs on both engines (`conftest.ON_BOTH_ENGINES`). Each test is a spelling that the search
translation of one engine took and the other did not:

- `uri:above` (`_profile:above`, `location:above`): a stored URI matches when it is a
  prefix of the value, which both engines compile to the list of every prefix of the value
  (`search_values.uri_prefixes`): its size grows with the square of the value's length. A
  value of 6,000 characters, well within a GET's request line (8,190 bytes), made an 18 MB
  MongoDB filter, over the 16 MiB a command document may be: a 500 on MongoDB where SQLite
  answered (after building the same 18 MB of parameters). The parser now refuses `:above`
  values longer together than MAX_ABOVE_CHARS, 400 too-costly, on both engines.
- chains and `_has` on MongoDB are subqueries whose ids are substituted as `$in` lists, at
  most SUBQUERY_LIMIT each; but one search may hold a hundred of them. On a record of 2,500
  documents, `relatesto:DocumentReference.status=current` repeated 98 times put 98 times
  2,500 ids in one filter, 18 MB: a 500 on MongoDB where SQLite answered. The ids one
  filter substitutes are now bounded together (`mongo_search.SUBSTITUTED_LIMIT`), 400
  too-costly; SQLite, which joins, still answers.
- `_include` on MongoDB fetched the targets of a page's references with one `$in` list of
  all of them, where SQLite reads them 500 at a time: six Lists of 40,000 items each made a
  list of 240,000 ids, 18 MB, a 500. MongoDB now reads them in chunks too.
- `:contains` is a `$regex` on MongoDB, an `instr` on SQLite, and a MongoDB server compiles
  no pattern over 16,384 bytes (mongomock, Python's `re`, compiles any: the test support
  now refuses as the server does). `name:contains=` 9,000 dots (18,000 bytes escaped) was a
  500 on MongoDB, a 200 on SQLite; the parser now refuses `:contains` values over
  MAX_CONTAINS_CHARS (4,000 characters, at most 16,000 bytes as a pattern) on both. A
  string prefix made only of U+10FFFF, which has no upper bound, was a `^` pattern too:
  it is now `$gte` alone, which is the same test.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from fhir_server.search.extract import extract, sort_values
from fhir_server.service.versions import stamp
from fhir_server.store.base import VersionWrite
from tests.http.conftest import _registry, auth, current_engine
from tests.http.test_r18_matrix import PATIENT_A, _build_world, binary_id, doc_id


@pytest.fixture(scope="module")
def world(tmp_path_factory, http_engine):
    app, built = _build_world(tmp_path_factory.mktemp("mongo-spellings") / "var")
    yield built
    app.extensions["fhir"].store.close()


def _search(world, url: str):
    return world.get(world.tokens.patient(PATIENT_A), url)


def _ids(response) -> list[str]:
    return [e["resource"]["id"] for e in response.get_json().get("entry", [])]


def _issue_codes(response) -> list[str]:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return [issue["code"] for issue in body["issue"]]


def test_r18_uri_above_finds_the_stored_uri_that_prefixes_the_value(world):
    """The control: `location:above` finds the document whose attachment URL is a prefix of
    the value, on both engines."""
    value = f"Binary/{binary_id('a-visible')}/{'x' * 200}"
    response = _search(
        world, f"/fhir/DocumentReference?patient={PATIENT_A}&location:above={quote(value)}"
    )
    assert response.status_code == 200
    assert _ids(response) == [doc_id("a-visible")]


@pytest.mark.parametrize("param", ["location", "_profile"])
def test_r18_a_long_uri_above_value_is_refused_too_costly_not_a_500(world, param):
    """6,000 characters: every prefix of them is 18 MB, over MongoDB's 16 MiB command limit
    (a 500 there, a 200 on SQLite). Refused on both engines, before any store reads it."""
    value = f"Binary/{binary_id('a-visible')}/{'x' * 6000}"
    response = _search(
        world, f"/fhir/DocumentReference?patient={PATIENT_A}&{param}:above={quote(value)}"
    )
    assert response.status_code == 400
    assert _issue_codes(response) == ["too-costly"]


def test_r18_many_uri_above_values_are_refused_together(world):
    """The limit is on all `:above` values of a search together: twenty values of 1,500
    characters, repeated parameters of one POST `_search` form (31 KB, within its 64 KB),
    are every prefix of each, 22 MB: a 500 on MongoDB as one value of 6,000 was."""
    value = quote(f"http://example.org/{'y' * 1500}")
    criteria = "&".join(f"_profile:above={value}" for _ in range(20))
    response = world.client.post(
        "/fhir/DocumentReference/_search",
        data=f"patient={PATIENT_A}&{criteria}",
        headers=auth(
            world.tokens.patient(PATIENT_A),
            **{"Content-Type": "application/x-www-form-urlencoded"},
        ),
    )
    assert response.status_code == 400
    assert _issue_codes(response) == ["too-costly"]


HEAVY_RECORD = 2_500  # documents of patient A, ids of 64 characters (the longest FHIR allows)


@pytest.fixture
def heavy_world(tmp_path, http_engine):
    """Test_r18_matrix's record, patient A's holding 2,500 more documents: stored through
    the store's write port in one transaction, as the service writes each (through the API,
    2,500 writes take minutes on mongomock, which copies a collection for each)."""
    app, built = _build_world(tmp_path / "var")
    store = app.extensions["fhir"].store
    with store.transaction() as tx:
        for n in range(HEAVY_RECORD):
            resource_id = f"heavy-{n:058d}"
            body = {
                "resourceType": "DocumentReference",
                "status": "current",
                "subject": {"reference": f"Patient/{PATIENT_A}"},
                "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/x"}}],
            }
            entries = extract({**body, "id": resource_id}, _registry())
            stored = stamp(body, resource_id, 1, 1_000_000)
            tx.write(VersionWrite(stored, "PUT", 0, entries, sort_values(entries), PATIENT_A))
    yield built
    store.close()


def test_r18_a_hundred_chains_over_a_heavy_record_answer_without_a_500(heavy_world):
    """98 chains, each matching the record's 2,500 documents: on MongoDB 245,000 ids in one
    filter (18 MB, over the 16 MiB of a command) was a 500. Refused 400 too-costly there;
    SQLite joins and answers. One such chain still answers on both engines."""
    chain = "relatesto:DocumentReference.status=current"
    one = _search(heavy_world, f"/fhir/DocumentReference?patient={PATIENT_A}&{chain}")
    assert one.status_code == 200
    assert doc_id("a-visible") in _ids(one)

    many = "&".join([chain] * 98)
    response = _search(heavy_world, f"/fhir/DocumentReference?patient={PATIENT_A}&{many}")
    if current_engine() == "sqlite":
        assert response.status_code == 200
        assert _ids(response) == _ids(one)
    else:
        assert response.status_code == 400
        assert _issue_codes(response) == ["too-costly"]


@pytest.fixture
def long_lists_world(tmp_path, http_engine):
    """Test_r18_matrix's record, patient A's holding six Lists of 40,000 items each (ids of
    64 characters), stored through the store's write port as `heavy_world`'s documents."""
    app, built = _build_world(tmp_path / "var")
    store = app.extensions["fhir"].store
    with store.transaction() as tx:
        for n in range(6):
            resource_id = f"long-list-{n}"
            body = {
                "resourceType": "List",
                "status": "current",
                "mode": "working",
                "subject": {"reference": f"Patient/{PATIENT_A}"},
                "entry": [
                    {"item": {"reference": f"DocumentReference/item-{n}-{i:057d}"}}
                    for i in range(40_000)
                ],
            }
            entries = extract({**body, "id": resource_id}, _registry())
            stored = stamp(body, resource_id, 1, 1_000_000)
            tx.write(VersionWrite(stored, "PUT", 0, entries, sort_values(entries), PATIENT_A))
    yield built
    store.close()


def test_r18_include_of_a_page_naming_240000_items_answers_on_both_engines(long_lists_world):
    """`_include=List:item` over six Lists naming 240,000 documents (none stored): on MongoDB
    one `$in` of every target, 18 MB, was a 500; SQLite answered. Both answer the Lists."""
    response = _search(
        long_lists_world, f"/fhir/List?patient={PATIENT_A}&_include=List:item&_count=20"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert {f"long-list-{n}" for n in range(6)} <= set(_ids(response))


def test_r18_a_contains_value_over_mongodbs_pattern_limit_is_refused_on_both_engines(world):
    """9,000 dots are 18,000 bytes as a MongoDB pattern (each escaped), over the 16,384 the
    server compiles: a 500 there, a 200 on SQLite. 400 too-costly on both; 4,000 dots,
    under the limit, are searched on both."""
    long = _search(world, f"/fhir/Patient?_id={PATIENT_A}&name:contains={'.' * 9000}")
    assert long.status_code == 400
    assert _issue_codes(long) == ["too-costly"]
    under = _search(world, f"/fhir/Patient?_id={PATIENT_A}&name:contains={'.' * 4000}")
    assert under.status_code == 200
    assert _ids(under) == []


def test_r18_a_prefix_of_only_the_last_code_point_needs_no_pattern(world):
    """A string prefix of 4,200 U+10FFFF has no upper bound (`prefix_upper_bound`): MongoDB
    read it as a `^` pattern of 16,801 bytes, a 500. Every string at or above it starts
    with it, so `$gte` alone is the test: answered on both engines."""
    value = quote("\U0010ffff" * 4200)
    response = _search(world, f"/fhir/Patient?_id={PATIENT_A}&family={value}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _ids(response) == []

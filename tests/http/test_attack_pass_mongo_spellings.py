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
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.http.conftest import auth
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

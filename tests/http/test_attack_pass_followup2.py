"""Attack pass on the day's fixes themselves: does each hold through every door and spelling?

The governance, messaging, authentication and If-Match passes each closed holes found through
one door and one spelling. This pass asked each fix again through the others: REST,
conditional operations, transaction and batch entries, ITI-65, ITI-41, PATCH, and the
spellings of one fact (a label under its OID, its NOS URL, no system, another case, in
`meta.tag` or an extension; an ETag weak or strong, empty, a JSON number, a list).

What it found, and what these tests hold (each fails on main):

- If-Match (http.html#concurrency): an If-Match header given empty, or a Bundle entry's
  `request.ifMatch` given `""`, `0` or `[]`, was taken for no precondition and the write made
  whatever the current version; an `ifMatch` given as a JSON number, a list, an object or a
  boolean was a 500; `W/"01"` or a half-quoted `"1` was read as version 1. A precondition the
  server cannot read is now a 400 at every door, nothing written.

What held is listed in the report of this pass (docs/access-rules.md names the rules).
"""

from __future__ import annotations

import json

import pytest

from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_attack_pass_governance import (
    _authorize_author,
    current,
    send,
)
from tests.http.test_attack_pass_xds import record as xds_record  # noqa: F401 - fixture
from tests.http.test_r18_matrix import World, doc_id, own_world

# ruff: noqa: F811
from tests.http.test_xds_update_document_set import xds  # noqa: F401 - fixture

world = pytest.fixture(own_world, name="world")


def _entry_status(response) -> int:
    """The status of a Bundle's only entry (a batch answers 200 around it)."""
    if response.status_code != 200:
        return response.status_code
    return int(response.get_json()["entry"][0]["response"]["status"].split()[0])


# -- If-Match: a precondition the server cannot read is refused, never ignored ------------------


def _visible_document(world: World) -> tuple[str, str, dict, int]:
    """The author's token, A's visible document (its id, body without meta, version)."""
    author = _authorize_author(world)
    target = doc_id("a-visible")
    body = {k: v for k, v in current(world, "DocumentReference", target).items() if k != "meta"}
    return author, target, body, world.service.store.read("DocumentReference", target).version


@pytest.mark.parametrize("value", ["", 'W/"01"', '"1', 'W/"1"x', 'W/"١"'])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_if_match_header_the_server_cannot_read_is_a_400(world, method, value):
    """http.html#concurrency (fail closed): an If-Match header given empty was taken for no
    header, and the change was made whatever the version; `W/"01"`, a half-quoted `"1` or
    a non-ASCII digit were read as version 1 (one version, one spelling: W/"1"). 400
    naming If-Match, nothing written."""
    author, target, body, before = _visible_document(world)
    headers = auth(author, **{"Content-Type": FHIR_JSON, "If-Match": value})
    data = json.dumps({**body, "description": "changé"}) if method == "PUT" else None
    response = world.client.open(
        f"/fhir/DocumentReference/{target}", method=method, data=data, headers=headers
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["If-Match"]
    assert world.service.store.read("DocumentReference", target).version == before


@pytest.mark.parametrize("value", ["", 0, 1, [], ['W/"1"'], {"version": 1}, True, None])
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_if_match_of_a_bundle_entry_the_server_cannot_read_is_a_400(world, kind, value):
    """http.html#concurrency (fail closed), Bundle door: `request.ifMatch` given `""`, `0`
    or `[]` was taken for none (the update made at any version); a JSON number, a list, an
    object or a boolean was a 500. 400 naming the entry's ifMatch, nothing written."""
    author, target, body, before = _visible_document(world)
    entry = {
        "resource": {**body, "description": "changé"},
        "request": {"method": "PUT", "url": f"DocumentReference/{target}", "ifMatch": value},
    }
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
    response = send(world, author, "POST", "", bundle)
    assert _entry_status(response) == 400, response.get_data(as_text=True)
    assert "ifMatch" in response.get_data(as_text=True)
    assert world.service.store.read("DocumentReference", target).version == before


@pytest.mark.parametrize("value", ['W/"{v}"', '"{v}"', "{v}", ' W/"{v}" '])
def test_if_match_of_the_current_version_in_each_accepted_spelling_is_made(world, value):
    """Companion: the current version, weak, strong or bare (FHIR clients send each), is
    met at the header and in a Bundle entry."""
    author, target, body, before = _visible_document(world)
    headers = auth(author, **{"Content-Type": FHIR_JSON, "If-Match": value.format(v=before)})
    made = world.client.put(
        f"/fhir/DocumentReference/{target}",
        data=json.dumps({**body, "description": "changé"}),
        headers=headers,
    )
    assert made.status_code == 200, made.get_data(as_text=True)
    entry = {
        "resource": {**body, "description": "changé encore"},
        "request": {
            "method": "PUT",
            "url": f"DocumentReference/{target}",
            "ifMatch": value.format(v=before + 1),
        },
    }
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    assert _entry_status(send(world, author, "POST", "", bundle)) == 200

"""The IHE MHD IG's Provide Document Bundle examples, adapted to the DMP, through ITI-65.

Fixtures: `tests/fixtures/external/ihe-mhd/` (the examples as published, LICENSE, SOURCE,
`convert.py` and its output `converted/`, `manifest.json`). Each adapted example must be
accepted as an ITI-65 (200, every entry 201 Created, its documents then found by an ITI-67
search of the patient), unless the manifest says the DMP refuses it and why: then the
refusal is an OperationOutcome about what the manifest names, and nothing is stored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.http.test_nist_mhd_recipient import Recipient, shared_server

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "ihe-mhd"
CASES = json.loads((HERE / "converted" / "cases.json").read_text())
MANIFEST = json.loads((HERE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with shared_server(tmp_path_factory, "ihe-mhd", 500) as shared:
        yield shared


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_ihe_mhd_example(server, case):
    """An IG example: accepted once adapted, or the DMP's documented refusal."""
    client, tokens, numbers = server
    recipient = Recipient(client, tokens, next(numbers))
    bundle = recipient.bundle(case["bundle"], None, base=HERE / "converted", keep_repeats=True)
    response = recipient.provide(bundle)
    body = response.get_data(as_text=True)
    refusal = MANIFEST.get(case["id"])
    if refusal is None:
        assert response.status_code == 200, body[:1500]
        statuses = {e["response"]["status"].split()[0] for e in response.get_json()["entry"]}
        assert statuses == {"201"}
        documents = [
            e for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"
        ]
        found = recipient.stored("DocumentReference")
        assert sorted(d["masterIdentifier"]["value"] for d in found) == sorted(
            d["resource"]["masterIdentifier"]["value"] for d in documents
        )
    else:
        assert 400 <= response.status_code < 500, body[:1500]
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert re.search(refusal["issue"], body), (refusal, body[:1500])
        assert recipient.stored("DocumentReference") == []
        assert recipient.stored("List") == []

"""Search answers carry `Bundle.total` where it is cheap (issue #19, deliverable 6).

FHIR R4 bundle.html, Bundle.total: "If a set of search matches, this is the total number of
entries of type 'match' across all pages in the search." search.html#total: the server may
leave it out unless asked (`_total=accurate`). ITI-66/67 always carry it
(tests/http/test_mhd_find_total.py); any other search carries it when its first page is the
whole result, when the count costs nothing: it is then the number of matches on that page,
within the access rules (what the requester may not see is not counted, R18).
"""

from __future__ import annotations

import json

from tests.http.conftest import FHIR_JSON, a_patient, auth


def search(client, token: str, path: str) -> dict:
    response = client.get(path, headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_search_answered_in_one_page_carries_its_total(client, tokens):
    system = tokens.system()
    ids = []
    for n in range(3):
        created = client.post(
            "/fhir/Patient",
            data=json.dumps(a_patient(n)),
            headers=auth(system, **{"Content-Type": FHIR_JSON}),
        )
        assert created.status_code == 201, created.get_data(as_text=True)
        ids.append(created.get_json()["id"])
    whole = search(client, system, "/fhir/Patient?_count=10")
    assert whole["total"] == len(whole["entry"]) == 3
    assert search(client, system, "/fhir/Patient?family=nobody")["total"] == 0
    # Within the access rules: a patient's search of Patient finds, and counts, themselves.
    own = search(client, tokens.patient(ids[1]), "/fhir/Patient?_count=10")
    assert own["total"] == len(own["entry"]) == 1
    # Across pages the total is counted when asked for, and then it is the whole result's.
    first = search(client, system, "/fhir/Patient?_count=2&_total=accurate")
    assert first["total"] == 3 and len(first["entry"]) == 2


def test_a_search_with_count_0_answers_its_total_and_no_entry(client, tokens):
    """`_count=0` asks for no entry (search.html#count); the answer is its total, as to
    `_summary=count` (fhirpy's `count()` sends `_count=0` with Aidbox's `_totalMethod`,
    which changes no match and is ignored)."""
    system = tokens.system()
    for n in range(2):
        created = client.post(
            "/fhir/Patient",
            data=json.dumps(a_patient(n)),
            headers=auth(system, **{"Content-Type": FHIR_JSON}),
        )
        assert created.status_code == 201, created.get_data(as_text=True)
    for path in ("/fhir/Patient?_count=0", "/fhir/Patient?_count=0&_totalMethod=count"):
        counted = search(client, system, path)
        assert counted["total"] == 2 and "entry" not in counted, path

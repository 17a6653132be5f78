"""The `Prefer` header as RFC 7240 §2 writes it, honoured as FHIR uses it: `return=` on a
write (http.html#ops), `handling=` on a search (search.html#errors).

It was split on `;` alone and searched for the substring `handling=lenient`: several
preferences given comma-separated lost `return` (`return=minimal, handling=lenient` answered
the whole resource), a preference name in another case (`Return=minimal`) was not read, and
lenient handling was turned on by `handling=lenient` anywhere in the header, even inside
another preference's quoted value or after a first `handling=strict` (RFC 7240 §2: the
first instance of a preference is the one considered).
"""

from __future__ import annotations

import json

import pytest

from fhir_server.rest.prefer import Preferences, parse_preferences, preferences
from tests.http.conftest import FHIR_JSON, a_patient, auth


def _create(client, token, resource, prefer):
    headers = [("Content-Type", FHIR_JSON), ("Authorization", f"Bearer {token}")]
    headers += [("Prefer", line) for line in prefer]
    return client.post(
        f"/fhir/{resource['resourceType']}", data=json.dumps(resource), headers=headers
    )


def _search_unknown_parameter(client, tokens, prefer):
    created = client.post(
        "/fhir/Patient",
        data=json.dumps(a_patient()),
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    ).get_json()
    token = tokens.patient(created["id"])
    headers = [("Authorization", f"Bearer {token}")] + [("Prefer", line) for line in prefer]
    return client.get(
        f"/fhir/DocumentReference?patient={created['id']}&colour=blue", headers=headers
    )


@pytest.mark.parametrize(
    "prefer",
    [
        ["return=minimal, handling=lenient"],
        ["handling=lenient, return=minimal"],
        ["respond-async, return=minimal"],
        ["Return=minimal"],
        ["RETURN = minimal"],
        ['return="minimal"'],
        ["return=minimal; foo=bar, handling=strict"],
        ["return=minimal, return=representation"],
        ["handling=lenient", "return=minimal"],
        ["return=minimal", "return=OperationOutcome"],
    ],
)
def test_http_ops_return_minimal_is_honoured_among_other_preferences(client, tokens, prefer):
    """http.html#ops: `return=minimal` answers a write with no body, however the header
    lists it among others (RFC 7240 §2: comma-separated, names case-insensitive, the first
    of a repeated preference wins, several header lines are one list)."""
    response = _create(client, tokens.system(), a_patient(), prefer)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.data == b"" and response.headers["Location"]


@pytest.mark.parametrize(
    "prefer",
    [
        ["return=OperationOutcome, handling=lenient"],
        ["handling=strict, return=OperationOutcome"],
        ['return=OperationOutcome;x="a, return=minimal"'],
    ],
)
def test_http_ops_return_operation_outcome_among_other_preferences(client, tokens, prefer):
    response = _create(client, tokens.system(), a_patient(), prefer)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "prefer",
    [
        ['return="handling=lenient"'],
        ['foo="x, handling=lenient"'],
        ["return=minimal;handling=lenient"],
        ["handling=strict, handling=lenient"],
        ["handling=strict", "handling=lenient"],
        ["xhandling=lenient"],
        ["handling=lenientx"],
        ['handling="lenient'],
    ],
)
def test_search_strict_unless_handling_lenient_is_the_preference(client, tokens, prefer):
    """search.html#errors: an unknown parameter is refused (400) unless the client prefers
    lenient handling; `handling=lenient` inside another preference's value, as a parameter
    of another preference, or after a first `handling=strict` is not that preference."""
    response = _search_unknown_parameter(client, tokens, prefer)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "colour" in response.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "prefer",
    [
        ["return=minimal, handling=lenient"],
        ["Handling=lenient"],
        ['handling="lenient"'],
        ["handling=lenient, handling=strict"],
        ["return=minimal", "handling=lenient"],
    ],
)
def test_search_lenient_handling_among_other_preferences(client, tokens, prefer):
    response = _search_unknown_parameter(client, tokens, prefer)
    assert response.status_code == 200, response.get_data(as_text=True)
    outcome = [e for e in response.get_json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcome and "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_rfc7240_parsing_rules():
    """The parser itself: quoted values unescaped, `;` parameters not preferences, empty
    list elements skipped, a malformed preference ignored while its neighbours count."""
    assert parse_preferences(['return="mini\\"mal", , respond-async; wait=10']) == {
        "return": 'mini"mal',
        "respond-async": "",
    }
    assert parse_preferences(["bad name=1, return=minimal"]) == {"return": "minimal"}
    assert parse_preferences(['return="minimal']) == {}
    assert preferences([]) == Preferences()
    assert preferences(["return=unknown, handling=sloppy"]) == Preferences()
    assert preferences(["respond-async"]).respond_async

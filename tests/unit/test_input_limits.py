"""The cheap checks of `resources.input_limits` give the answer of a full check: a body is
refused for a repeated key exactly when one of its objects repeats a key, whatever its
white space and escapes, and for depth exactly when it is nested deeper than MAX_DEPTH."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_server.errors import FhirError
from fhir_server.resources.input_limits import (
    MAX_DEPTH,
    check_json_body,
    check_json_depth,
    check_xml_depth,
)
from fhir_server.resources.model import ElementMemo

# Keys and strings rich in what could fool a byte count: quotes, colons, backslashes, space.
TEXT = st.text(
    alphabet=st.sampled_from(['"', ":", "\\", " ", "\n", "a", "b", "é", "{", "["]), max_size=6
)
WHITESPACE = st.sampled_from(["", " ", "\n", "\t", "  \r\n"])


@st.composite
def json_text(draw, depth: int = 0) -> tuple[str, bool]:
    """(JSON text, whether some object in it repeats a key), with random white space."""
    kind = draw(st.sampled_from(["object", "array", "scalar"] if depth < 4 else ["scalar"]))
    ws = draw(WHITESPACE)
    if kind == "scalar":
        value = draw(st.one_of(TEXT, st.integers(-5, 5), st.booleans(), st.none()))
        return json.dumps(value, ensure_ascii=draw(st.booleans())), False
    if kind == "array":
        items = draw(st.lists(json_text(depth + 1), max_size=3))
        body = f",{ws}".join(text for text, _ in items)
        return f"[{ws}{body}{ws}]", any(repeated for _, repeated in items)
    keys = draw(st.lists(TEXT, max_size=4))
    members, repeated = [], len(set(keys)) < len(keys)
    for key in keys:
        value, inner = draw(json_text(depth + 1))
        repeated = repeated or inner
        spelled = json.dumps(key, ensure_ascii=draw(st.booleans()))
        members.append(f"{spelled}{draw(WHITESPACE)}:{ws}{value}")
    return "{" + ws + f",{ws}".join(members) + ws + "}", repeated


@settings(max_examples=400, deadline=None)
@given(json_text())
def test_a_body_is_refused_exactly_when_an_object_repeats_a_key(case):
    text, repeated = case
    body = ('{"resourceType": "Patient", "x": ' + text + "}").encode()
    try:
        check_json_body(body, orjson.loads(body))
    except FhirError as exc:
        assert repeated, exc.message
        assert "appears more than once" in exc.message
    else:
        assert not repeated


def nested(levels: int) -> dict:
    """A resource whose deepest object or array is at `levels` (the resource is 1)."""
    value: object = 1
    for n in range(levels - 1):
        value = [value] if n % 2 else {"k": value}
    return {"resourceType": "Patient", "x": value}


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 500])
def test_depth_is_refused_exactly_past_the_limit(levels):
    body = json.dumps(nested(levels)).encode()  # orjson writes at most 255 levels
    data = orjson.loads(body)
    if levels <= MAX_DEPTH:
        check_json_body(body, data)
        check_json_depth(data)
        return
    for check in (lambda: check_json_body(body, data), lambda: check_json_depth(data)):
        with pytest.raises(FhirError) as refused:
            check()
        assert refused.value.status == 400
        assert refused.value.issues[0].expression[0].startswith("Patient.x")


def test_xml_depth_counts_elements_and_names_the_path():
    def tree(levels: int) -> etree._Element:
        return etree.fromstring(b"<a>" * levels + b"</a>" * levels)

    check_xml_depth(tree(MAX_DEPTH))
    with pytest.raises(FhirError) as refused:
        check_xml_depth(tree(MAX_DEPTH + 1))
    assert refused.value.issues[0].expression[0] == ".".join(["a"] * (MAX_DEPTH + 1))


def test_the_validation_memo_stays_within_its_bytes_and_skips_large_values():
    """The memo (resources.model.ElementMemo) is bounded in accounted bytes as well as in
    entries, and a value longer than its entry limit is validated every time."""
    memo = ElementMemo(capacity=10_000, max_bytes=200_000, max_entry_bytes=2_000)
    calls = []

    def validate(cls, value, model_klass):
        calls.append(value)
        return object()

    for n in range(500):
        memo.validated(validate, None, {"n": n, "text": "x" * 1_000}, dict)
        assert memo.accounted_bytes <= memo.max_bytes
    large = {"text": "y" * 5_000}
    memo.validated(validate, None, large, dict)
    memo.validated(validate, None, large, dict)
    assert calls.count(large) == 2


def test_the_validation_memo_steps_aside_past_its_serialization_budget():
    memo = ElementMemo()
    calls = []

    def validate(cls, value, model_klass):
        calls.append(value)
        return object()

    value = {"text": "z" * 1_000}
    with memo.budget(500):
        memo.validated(validate, None, value, dict)  # serialized: the budget is spent
        memo.validated(validate, None, value, dict)  # not even looked up
    assert len(calls) == 2 and len(memo) == 1


def test_caches_keyed_by_client_values_do_not_keep_long_ones():
    """The cursor's query fingerprints and the search index's normalized texts are memos
    keyed by what clients send: long keys are computed, never kept."""
    from fhir_server.search import extract
    from fhir_server.search.query import SearchQuery, StringTest
    from fhir_server.store import cursor

    cursor._fingerprints.clear()
    long_query = SearchQuery("Patient", StringTest("name", "x" * 100_000))
    short_query = SearchQuery("Patient", StringTest("name", "marie"))
    assert cursor.query_fingerprint(long_query) == cursor.query_fingerprint(long_query)
    cursor.query_fingerprint(short_query)
    assert list(cursor._fingerprints) == [("Patient", short_query.where, ())]

    before = extract._normalized_cached.cache_info().currsize
    assert extract._normalized("É" * 100_000) == "e" * 100_000
    assert extract._normalized_cached.cache_info().currsize == before

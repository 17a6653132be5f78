"""The validation memo (resources.model.ElementMemo): a subtree that already passed is not
validated again, and the answer, errors included, is always the one of a full validation."""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.datagen import CorpusPlan, patient_resources
from fhir_server.resources.model import ELEMENT_MEMO, ElementMemo, validate_resource

PLAN = CorpusPlan(documents=200)
DOCUMENTS = [
    r for r in patient_resources(PLAN, PLAN.heavy) if r["resourceType"] == "DocumentReference"
]


@contextmanager
def memo_off():
    ELEMENT_MEMO.enabled = False
    try:
        yield
    finally:
        ELEMENT_MEMO.enabled = True


def _issues(resource: dict) -> list:
    return [(i.severity, i.code, i.diagnostics, i.expression) for i in validate_resource(resource)]


def _outcome(resource: dict) -> object:
    """The issues, or the exception fhir_core raises for some malformed input (e.g. a
    contained resource whose resourceType is null): either way, the same with the memo."""
    try:
        return _issues(resource)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return (type(exc).__name__, str(exc))


def _paths(value, path=()):
    """Every (container, key) in a JSON value, for mutations."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield value, key
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield value, index
            yield from _paths(child, (*path, index))


REPLACEMENTS = [None, 7, 1.5, True, "", "x", [], {}, [None], {"unknown": 1}, ["a"]]


@settings(max_examples=60, deadline=None)
@given(
    document=st.sampled_from(range(len(DOCUMENTS))),
    seed=st.integers(0, 10_000),
    replacement=st.sampled_from(range(len(REPLACEMENTS))),
)
def test_a_mutated_document_gets_the_issues_of_a_full_validation(document, seed, replacement):
    # Everything valid in the corpus document is remembered first, so the mutated copy
    # shares most of its subtrees with remembered ones.
    original = DOCUMENTS[document]
    assert _issues(original) == []
    mutated = copy.deepcopy(original)
    container, key = random.Random(seed).choice(list(_paths(mutated)))
    container[key] = copy.deepcopy(REPLACEMENTS[replacement])
    remembered = _outcome(mutated)
    with memo_off():
        full = _outcome(mutated)
    assert remembered == full


def test_an_invalid_element_is_rejected_after_its_valid_twin_was_remembered():
    document = copy.deepcopy(DOCUMENTS[0])
    assert _issues(document) == []
    document["type"]["coding"][0]["system"] = 12
    document["contained"][0]["unknownElement"] = "x"
    paths = {expression for *_, expressions in _issues(document) for expression in expressions}
    assert "DocumentReference.type.coding[0].system" in paths
    assert "DocumentReference.contained[0].unknownElement" in paths


def test_values_that_differ_only_in_json_type_are_not_confused():
    memo = ElementMemo()
    calls = []

    def validate(cls, value, model_klass):
        calls.append(value)
        return object()

    for value in ({"value": 1}, {"value": 1.0}, {"value": True}, {"value": "1"}, {"value": 1}):
        memo.validated(validate, None, value, dict)
    assert calls == [{"value": 1}, {"value": 1.0}, {"value": True}, {"value": "1"}]


def test_values_holding_a_null_are_never_remembered():
    memo = ElementMemo()
    calls = []

    def validate(cls, value, model_klass):
        calls.append(value)
        return object()

    for _ in range(2):
        memo.validated(validate, None, {"given": [None]}, dict)
    assert len(calls) == 2


def test_the_memo_keeps_at_most_two_generations_of_its_capacity():
    memo = ElementMemo(capacity=8)

    def validate(cls, value, model_klass):
        return object()

    for n in range(100):
        memo.validated(validate, None, {"n": n}, dict)
    assert len(memo._young) <= 8 and len(memo._old) <= 8
    recent = memo.validated(validate, None, {"n": 99}, dict)
    assert memo.validated(validate, None, {"n": 99}, dict) is recent

"""`access.hidden_references`: what a served List or DocumentReference names (R14, R18).

A requester is served a List without the entries, and a DocumentReference without the
relatesTo, naming resources they may not read; an update they send keeps what they were
never shown.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.access.hidden_references import (
    may_name_others,
    target_of,
    with_hidden_kept,
    without_hidden,
)


def a_list(*ids: str) -> dict:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "entry": [{"item": {"reference": f"DocumentReference/{i}"}} for i in ids],
    }


def hides(*hidden: str):
    return lambda resource_type, resource_id: resource_id not in hidden


def test_r18_a_list_is_served_without_the_entries_naming_hidden_documents():
    served = without_hidden(a_list("a", "masked", "b"), hides("masked"))
    assert served == a_list("a", "b")


def test_r18_a_list_naming_nothing_hidden_is_served_as_stored():
    assert without_hidden(a_list("a", "b"), hides("masked")) is None


def test_r18_a_list_whose_every_entry_is_hidden_is_served_without_entry():
    served = without_hidden(a_list("masked"), hides("masked"))
    assert "entry" not in served and served["status"] == "current"


def test_r18_relates_to_naming_a_hidden_document_is_left_out():
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "relatesTo": [
            {"code": "replaces", "target": {"reference": "DocumentReference/masked"}},
            {"code": "appends", "target": {"reference": "DocumentReference/a/_history/2"}},
        ],
    }
    served = without_hidden(document, hides("masked"))
    assert served["relatesTo"] == [document["relatesTo"][1]]


def test_only_relative_references_are_judged():
    assert target_of("List", {"item": {"reference": "DocumentReference/x/_history/3"}}) == (
        "DocumentReference",
        "x",
    )
    assert target_of("List", {"item": {"reference": "https://other.example/fhir/X/1"}}) is None
    assert target_of("List", {"item": {"identifier": {"value": "1.2.3"}}}) is None
    assert target_of("Patient", {"item": {"reference": "DocumentReference/x"}}) is None


def test_only_bytes_with_a_naming_element_need_parsing():
    assert may_name_others("List", b'{"resourceType":"List","entry":[]}')
    assert not may_name_others("DocumentReference", b'{"resourceType":"DocumentReference"}')
    assert not may_name_others("Patient", b'{"entry":1}')


def test_r18_an_update_keeps_the_entries_its_writer_was_not_shown():
    current = a_list("a", "masked", "b")
    sent = a_list("a", "c")  # b removed on purpose, c added, masked never seen
    kept = with_hidden_kept(sent, current, hides("masked"))
    assert kept == a_list("a", "c", "masked")


def test_an_update_naming_nothing_hidden_is_written_as_sent():
    sent = a_list("a")
    assert with_hidden_kept(sent, a_list("a", "b"), hides("masked")) is sent


@given(
    ids=st.lists(st.sampled_from("abcdefgh"), max_size=8),
    hidden=st.sets(st.sampled_from("abcdefgh")),
)
def test_r18_sending_back_what_was_served_loses_nothing_and_shows_nothing(ids, hidden):
    """Property: a requester's view names nothing hidden, and writing that view back
    stores every entry of the current List (in another order at most)."""
    current = a_list(*ids)
    may_read = hides(*hidden)
    served = without_hidden(current, may_read) or current
    assert not {target_of("List", e)[1] for e in served.get("entry", [])} & hidden
    written = with_hidden_kept(served, current, may_read)
    assert sorted(map(str, written.get("entry", []))) == sorted(map(str, current["entry"]))

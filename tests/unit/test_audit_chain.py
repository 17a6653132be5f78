"""R16 (append-only): the AuditEvent hash chain detects edits, deletions and reordering."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.audit.chain import (
    EXT_AUDIT_CHAIN,
    GENESIS_HASH,
    canonical_json,
    chain_link,
    seal,
    verify_chain,
)

texts = st.text(min_size=0, max_size=12)
event_bodies = st.fixed_dictionaries(
    {
        "outcome": st.sampled_from(["0", "4", "8"]),
        "recorded": st.just("2026-11-22T09:42:00.000Z"),
        "entity": st.lists(
            st.fixed_dictionaries({"what": st.fixed_dictionaries({"reference": texts})}),
            max_size=3,
        ),
        "outcomeDesc": texts,
    }
)


def make_chain(bodies: list[dict]) -> list[dict]:
    chain, previous = [], GENESIS_HASH
    for i, body in enumerate(bodies, start=1):
        event = {"resourceType": "AuditEvent", "id": f"ae-{i}"} | body
        sealed = seal(event, previous, i)
        chain.append(sealed)
        previous = chain_link(sealed).hash
    return chain


def head(chain: list[dict]) -> tuple[int, str]:
    link = chain_link(chain[-1])
    return (link.sequence, link.hash)


chains = st.lists(event_bodies, min_size=1, max_size=8).map(make_chain)


@given(chains)
def test_r16_sealed_chain_verifies(chain):
    report = verify_chain(chain, expected_head=head(chain))
    assert report.ok
    assert report.checked == len(chain)
    assert report.head == head(chain)


def _mutate(event: dict, how: str) -> None:
    link = next(e for e in event["extension"] if e["url"] == EXT_AUDIT_CHAIN)["extension"]
    match how:
        case "outcome":
            event["outcome"] = "12"  # never produced by the strategy
        case "add-field":
            event["purposeOfEvent"] = [{"text": "x"}]
        case "drop-field":
            del event["recorded"]
        case "nested":
            event["entity"].append({"what": {"reference": "Patient/intruder"}})
        case "id":
            event["id"] = event["id"] + "-forged"
        case "hash":
            link[2]["valueString"] = "f" * 64 if link[2]["valueString"] != "f" * 64 else "e" * 64
        case "previous":
            link[1]["valueString"] = "a" * 64
        case "sequence":
            link[0]["valueInteger"] += 100
        case "unlink":
            event["extension"] = []


@given(chains, st.data())
def test_r16_any_modification_is_detected_at_its_position(chain, data):
    k = data.draw(st.integers(0, len(chain) - 1))
    how = data.draw(
        st.sampled_from(
            [
                "outcome",
                "add-field",
                "drop-field",
                "nested",
                "id",
                "hash",
                "previous",
                "sequence",
                "unlink",
            ]
        )
    )
    tampered = copy.deepcopy(chain)
    _mutate(tampered[k], how)
    report = verify_chain(tampered, expected_head=head(chain))
    assert not report.ok
    assert report.position == k
    assert report.sequence == k + 1
    assert report.event_id == tampered[k]["id"]
    assert report.checked == k


@given(chains, st.data())
def test_r16_any_deletion_is_detected_at_its_position(chain, data):
    k = data.draw(st.integers(0, len(chain) - 1))
    shortened = chain[:k] + chain[k + 1 :]
    report = verify_chain(shortened, expected_head=head(chain))
    assert not report.ok
    assert report.position == k
    assert report.sequence == k + 1


@given(chains, st.data())
def test_r16_any_reordering_is_detected_at_the_first_moved_event(chain, data):
    order = data.draw(st.permutations(range(len(chain))))
    if list(order) == list(range(len(chain))):
        return  # identity: nothing to detect
    shuffled = [chain[i] for i in order]
    first_moved = next(i for i, j in enumerate(order) if i != j)
    report = verify_chain(shuffled, expected_head=head(chain))
    assert not report.ok
    assert report.position == first_moved
    assert report.event_id == shuffled[first_moved]["id"]


def test_r16_cut_tail_is_only_seen_against_the_recorded_head():
    chain = make_chain([{"outcome": "0"}] * 3)
    assert verify_chain(chain[:2]).ok  # the chain alone cannot know it lost its end
    report = verify_chain(chain[:2], expected_head=head(chain))
    assert not report.ok
    assert (report.position, report.sequence, report.event_id) == (2, 3, None)


def test_r16_rewritten_tail_differs_from_recorded_head():
    chain = make_chain([{"outcome": "0"}] * 3)
    forged_last = seal(chain[2] | {"outcome": "8"}, chain_link(chain[1]).hash, 3)
    forged = chain[:2] + [forged_last]
    assert verify_chain(forged).ok  # a consistent rewrite of the tail...
    report = verify_chain(forged, expected_head=head(chain))  # ...is caught by the head
    assert not report.ok
    assert (report.position, report.sequence, report.event_id) == (2, 3, "ae-3")


def test_r16_window_of_a_chain_verifies_from_its_predecessor():
    chain = make_chain([{"outcome": "0"}] * 5)
    report = verify_chain(chain[2:], previous_hash=chain_link(chain[1]).hash, start_sequence=3)
    assert report.ok and report.checked == 3


def test_r16_canonical_json_ignores_key_order_and_storage_bookkeeping():
    event = {"resourceType": "AuditEvent", "id": "a", "outcome": "0", "meta": {"security": []}}
    sealed = seal(event, GENESIS_HASH, 1)
    reordered = dict(reversed(list(sealed.items())))
    reordered["meta"] = {"lastUpdated": "2026-11-22T09:42:00Z", "versionId": "1", "security": []}
    assert verify_chain([reordered]).ok
    assert (
        canonical_json(sealed)
        == b'{"id":"a","meta":{"security":[]},"outcome":"0","resourceType":"AuditEvent"}'
    )


def test_r16_canonical_json_is_utf8_without_escapes():
    event = {"resourceType": "AuditEvent", "outcomeDesc": "Accès refusé"}
    assert "Accès refusé".encode() in canonical_json(event)


def test_r16_seal_keeps_other_extensions_and_replaces_an_old_link():
    other = {"url": "https://example.org/x", "valueString": "kept"}
    event = {"resourceType": "AuditEvent", "id": "a", "extension": [other]}
    once = seal(event, GENESIS_HASH, 1)
    twice = seal(once, GENESIS_HASH, 1)
    assert twice == once
    assert twice["extension"][0] == other
    assert "extension" in event and len(event["extension"]) == 1  # input untouched


def _with_bookkeeping(event: dict) -> dict:
    """The same event as a store returns it: `meta.versionId` added, which the canonical form
    leaves out (and an otherwise empty `meta` with it), so its bytes are those of `event`."""
    return {**event, "meta": {**(event.get("meta") or {}), "versionId": "7"}}


chain_extension = st.builds(
    lambda sequence: {
        "url": EXT_AUDIT_CHAIN,
        "extension": [{"url": "sequence", "valueInteger": sequence}],
    },
    st.integers(1, 9),
)
other_extension = st.fixed_dictionaries(
    {"url": st.just("https://example.org/x"), "valueString": texts}
)
metas = st.fixed_dictionaries(
    {},
    optional={
        "versionId": st.just("1"),
        "lastUpdated": st.just("2026-11-22T09:42:00.000Z"),
        "profile": st.lists(texts, max_size=2),
        "security": st.lists(st.fixed_dictionaries({"code": texts}), max_size=2),
    },
)


@given(
    event_bodies,
    st.one_of(st.none(), metas),
    st.one_of(st.none(), st.lists(st.one_of(chain_extension, other_extension), max_size=3)),
)
def test_r16_canonical_json_of_any_event_is_the_defined_bytes(body, meta, extensions):
    """The shortcut for a new event (nothing to take out, no copy) hashes the same bytes as
    the full path that takes things out, whatever the event carries: a chain link,
    bookkeeping, empty lists."""
    event = {"resourceType": "AuditEvent", "id": "a", **body}
    if meta is not None:
        event["meta"] = meta
    if extensions is not None:
        event["extension"] = extensions
    before = copy.deepcopy(event)
    assert canonical_json(event) == canonical_json(_with_bookkeeping(event))
    sealed = seal(event, GENESIS_HASH, 1)
    assert event == before  # sealing leaves its input as it was
    assert verify_chain([sealed]).ok


def test_r16_a_link_covering_last_updated_hashes_it_behind_a_prefix():
    """The module docstring's definition, computed apart: a served meta.lastUpdated is
    covered, and the prefix keeps the link from passing for one that does not cover it."""
    import hashlib

    from fhir_server.audit.chain import sealed_link

    event = {"resourceType": "AuditEvent", "id": "a", "outcome": "0"}
    sealed, link = sealed_link(event, GENESIS_HASH, 1, last_updated="2026-12-06T22:00:00.123Z")
    canonical = (
        b'{"id":"a","meta":{"lastUpdated":"2026-12-06T22:00:00.123Z"},"outcome":"0",'
        b'"resourceType":"AuditEvent"}'
    )
    expected = hashlib.sha256(b"lastUpdated\n" + GENESIS_HASH.encode() + b"\n1\n" + canonical)
    assert link.hash == expected.hexdigest() and link.covers_last_updated
    assert chain_link(sealed) == link
    stored = {**sealed, "meta": {**sealed["meta"], "versionId": "1"}}  # as stamped
    assert verify_chain([stored]).ok

    moved = copy.deepcopy(stored)
    moved["meta"]["lastUpdated"] = "2020-01-01T00:00:00.000Z"
    assert verify_chain([moved]).reason == "the event's content does not match its hash (modified)"

    downgraded = copy.deepcopy(moved)  # passed off as a link that does not cover it
    parts = downgraded["extension"][-1]["extension"]
    parts[:] = [part for part in parts if part["url"] != "covers"]
    assert verify_chain([downgraded]).reason == (
        "the event's content does not match its hash (modified)"
    )

    unknown = copy.deepcopy(stored)
    unknown["extension"][-1]["extension"][-1]["valueCode"] = "everything"
    assert verify_chain([unknown]).reason == "the event carries no audit-chain link"


def test_r16_a_link_with_a_part_given_twice_is_no_link():
    """Which of two `hash` (or `sequence`) parts the chain covers is not for a reader to
    pick: `verify_chain` alone, without the audit log's own checks, names the event."""
    sealed = seal({"resourceType": "AuditEvent", "id": "a"}, GENESIS_HASH, 1)
    twice = copy.deepcopy(sealed)
    parts = twice["extension"][-1]["extension"]
    parts.append({"url": "hash", "valueString": "f" * 64})
    assert chain_link(twice) is None
    assert verify_chain([twice]).reason == "the event carries no audit-chain link"

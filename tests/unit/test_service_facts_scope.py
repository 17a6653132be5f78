"""A search computes a record's facts once, whichever face calls it (gate per-request memo).

The REST face gives each request a memo; `FhirService.search` opens one for callers that
set none (the XDS face, in-process callers), and never replaces or leaks one.
"""

from __future__ import annotations

from fhir_server.access.requester import INTERNAL
from fhir_server.service.context import (
    RequestInfo,
    current_request,
    facts_scope,
    request_memo,
)
from fhir_server.service.factory import build_service
from fhir_server.store.sqlite import SqliteStore


def test_facts_scope_opens_a_memo_only_for_its_duration():
    assert request_memo() is None
    with facts_scope():
        memo = request_memo()
        assert memo == {}
        memo["x"] = 1
    assert request_memo() is None


def test_facts_scope_keeps_the_faces_memo_and_request_fields():
    outer = {"kept": True}
    token = current_request.set(RequestInfo("req-1", b"GET /x", "127.0.0.1", memo=outer))
    try:
        with facts_scope():
            assert request_memo() is outer
            assert current_request.get().request_id == "req-1"
        assert request_memo() is outer
    finally:
        current_request.reset(token)


def test_in_process_search_runs_the_gate_with_one_memo(tmp_path, registry):
    service = build_service(SqliteStore(tmp_path / "fhir.sqlite3"), registry, data_dir=tmp_path)
    seen: list[object] = []
    constrain, after = service.gate.constrain_search, service.gate.after_search

    def spy_constrain(requester, query, conditional=False):
        seen.append(request_memo())
        return constrain(requester, query, conditional)

    def spy_after(requester, result):
        seen.append(request_memo())
        return after(requester, result)

    service.gate.constrain_search = spy_constrain
    service.gate.after_search = spy_after
    service.search(INTERNAL, "Patient", [])
    assert len(seen) == 2 and seen[0] is not None and seen[0] is seen[1]
    assert request_memo() is None

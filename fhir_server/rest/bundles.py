"""Response Bundles (searchset, history, batch/transaction-response) as bytes.

Entries embed the stored JSON bytes with `orjson.Fragment`: a search answer is assembled,
never re-parsed, on the JSON path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from urllib.parse import urlencode

import orjson

from fhir_server.service import versions
from fhir_server.service.bundles import EntryResponse
from fhir_server.service.core import SearchResult
from fhir_server.store.base import HistoryPage


def _bundle_header(bundle_type: str, now_us: int) -> dict:
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": versions.instant(now_us)},
        "type": bundle_type,
    }


def link(base: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    query = urlencode(list(params))
    return f"{base}/{path}" + (f"?{query}" if query else "")


def searchset(
    result: SearchResult,
    *,
    base: str,
    path: str,
    params: list[tuple[str, str]],
    now_us: int,
    transform=None,
    summary_count: bool = False,
) -> dict:
    bundle = _bundle_header("searchset", now_us)
    if result.total is not None:
        bundle["total"] = result.total
    links = [{"relation": "self", "url": link(base, path, params)}]
    if result.next_cursor and not summary_count:
        links.append(
            {
                "relation": "next",
                "url": link(base, path, [*params, ("_cursor", result.next_cursor)]),
            }
        )
    if result.previous_cursor and not summary_count:
        links.append(
            {
                "relation": "previous",
                "url": link(base, path, [*params, ("_cursor", result.previous_cursor)]),
            }
        )
    bundle["link"] = links
    if summary_count:
        return bundle
    entries = []
    for mode, rows in (("match", result.matches), ("include", result.included)):
        for resource_type, resource_id, body, *_ in rows:
            resource = transform(body) if transform else orjson.Fragment(body)
            entries.append(
                {
                    "fullUrl": f"{base}/{resource_type}/{resource_id}",
                    "resource": resource,
                    "search": {"mode": mode},
                }
            )
    if result.ignored:
        entries.append(
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "warning",
                            "code": "not-supported",
                            "diagnostics": f"parameter '{name}' is not supported and was ignored (Prefer: handling=lenient)",
                            "expression": [name],
                        }
                        for name in result.ignored
                    ],
                },
                "search": {"mode": "outcome"},
            }
        )
    if entries:
        bundle["entry"] = entries
    return bundle


_METHOD_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def history(
    page: HistoryPage, *, base: str, path: str, params: list[tuple[str, str]], now_us: int
) -> dict:
    bundle = _bundle_header("history", now_us)
    links = [{"relation": "self", "url": link(base, path, params)}]
    if page.next_cursor:
        links.append(
            {"relation": "next", "url": link(base, path, [*params, ("_cursor", page.next_cursor)])}
        )
    bundle["link"] = links
    entries = []
    for item in page.entries:
        stored = item.resource
        entry: dict = {"fullUrl": f"{base}/{stored.resource_type}/{stored.id}"}
        if not stored.deleted:
            entry["resource"] = orjson.Fragment(stored.body)
        url = (
            stored.resource_type if item.method == "POST" else f"{stored.resource_type}/{stored.id}"
        )
        entry["request"] = {"method": item.method, "url": url}
        entry["response"] = {
            "status": _METHOD_STATUS[item.method],
            "etag": versions.etag(stored.version),
            "lastModified": versions.instant(stored.last_updated),
        }
        entries.append(entry)
    if entries:
        bundle["entry"] = entries
    return bundle


def batch_response(
    bundle_type: str, responses: list[EntryResponse], now_us: int, base: str
) -> dict:
    bundle = _bundle_header(bundle_type, now_us)
    entries = []
    for response in responses:
        entry: dict = {}
        if response.resource is not None:
            entry["resource"] = orjson.Fragment(response.resource)
        answer: dict = {"status": response.status}
        if response.location:
            answer["location"] = response.location
        if response.etag:
            answer["etag"] = response.etag
        if response.last_modified:
            answer["lastModified"] = response.last_modified
        if response.outcome:
            answer["outcome"] = response.outcome
        entry["response"] = answer
        entries.append(entry)
    bundle["entry"] = entries
    return bundle

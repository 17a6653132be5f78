"""Versions and meta: how a validated resource becomes the bytes the store keeps and serves."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from fhir_server.audit.entity_facts import EntityFacts
from fhir_server.errors import bad_request
from fhir_server.search.index import IndexEntries
from fhir_server.store.base import StoredResource, VersionWrite

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")


def new_id() -> str:
    return str(uuid.uuid4())


def check_id(resource_id: str, expression: str = "id") -> str:
    if not ID_PATTERN.match(resource_id):
        raise bad_request(
            f"'{resource_id}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", expression
        )
    return resource_id


def now_us() -> int:
    return time.time_ns() // 1000


def instant(epoch_us: int) -> str:
    """A FHIR instant with millisecond precision in UTC."""
    moment = datetime.fromtimestamp(epoch_us / 1_000_000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=4096)  # a resource read often is served with the same Last-Modified
def http_date(epoch_us: int) -> str:
    moment = datetime.fromtimestamp(epoch_us / 1_000_000, tz=UTC)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_instant(value: str) -> int:
    """Epoch microseconds of a FHIR instant or dateTime with a time zone (for `_since`)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"'{value}' is not a FHIR instant", "_since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def stamp(resource: dict, resource_id: str, version: int, last_updated: int) -> StoredResource:
    """Set id and meta (versionId, lastUpdated) and serialize: the stored, served bytes."""
    resource["id"] = resource_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(last_updated)
    resource["meta"] = meta
    # Keep resourceType and id first, as the FHIR JSON examples do.
    ordered = {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta}
    ordered.update((k, v) for k, v in resource.items() if k not in ordered)
    return StoredResource(
        resource["resourceType"], resource_id, version, last_updated, False, orjson.dumps(ordered)
    )


def indexed_write(
    stored: StoredResource,
    resource: dict,
    method: str,
    expected_version: int,
    index: IndexEntries,
    sort_values: dict | None = None,
) -> VersionWrite:
    """The write of `stored`, made by `stamp` from `resource`, with what the store keeps beside
    it, all derived from that one resource: its index entries, its shard key (the first Patient
    of its compartment) and its audit facts (`audit.entity_facts`)."""
    return VersionWrite(
        stored,
        method,
        expected_version,
        index,
        sort_values,
        shard_key=index.compartment[0] if index.compartment else "",
        facts=EntityFacts.of(resource, index.compartment).encode(),
    )


def tombstone(
    resource_type: str, resource_id: str, version: int, last_updated: int
) -> StoredResource:
    body = {
        "resourceType": resource_type,
        "id": resource_id,
        "meta": {"versionId": str(version), "lastUpdated": instant(last_updated)},
    }
    return StoredResource(
        resource_type, resource_id, version, last_updated, True, orjson.dumps(body)
    )


def etag(version: int) -> str:
    return f'W/"{version}"'


# A version ETag as this server writes it (W/"3"), strong or unquoted alike; ASCII digits
# with no leading zero, so that one version has one spelling (`W/"01"` is not `W/"1"`).
_ETAG = re.compile(r'[ \t]*(?:W/)?("?)(0|[1-9][0-9]*)\1[ \t]*')


def parse_etag(value: object, header: str = "If-Match") -> int:
    """The version an If-Match (a header, a Bundle entry's `request.ifMatch`) names.

    Fail closed (http.html#concurrency): a precondition the server cannot read is a 400, never
    taken for no precondition. An empty header or `ifMatch` (`""`), a JSON number, `*`, a
    list of ETags, a half-quoted tag or a version spelled with a leading zero or non-ASCII
    digits each answered otherwise: ignored (the write made whatever the version), a 500, or
    read as another spelling's version."""
    match = _ETAG.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise bad_request(f'{header}: {json.dumps(value)} is not a version ETag like W/"3"', header)
    return int(match.group(2))

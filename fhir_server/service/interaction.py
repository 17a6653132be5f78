"""One FHIR request as a value, whichever door it came by (http.html).

The REST face builds an `Interaction` from the HTTP request, Bundle processing builds one
from each entry's `request` (and `resource`) with `from_entry`; `service.dispatch.Dispatcher`
performs it. So a batch or transaction entry is the very request a client could send alone,
and answers as it would (http.html#transaction: "as if they were separate interactions").

What the value does not carry, the server does not serve: conditional read (If-None-Match,
If-Modified-Since: the CapabilityStatement says `conditionalRead` not-supported), and the
`Prefer: return=` choice, which shapes only how the REST face renders a write's answer.
`Prefer: handling=lenient` is carried (`lenient`): it changes what a search answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import bad_request
from fhir_server.resources.patch import PatchBody, patch_body_of_resource
from fhir_server.search.parameters import is_whole_number
from fhir_server.service import versions
from fhir_server.store.base import HistoryPage, StoredResource

if TYPE_CHECKING:
    from fhir_server.service.core import SearchResult

Criteria = tuple[tuple[str, str], ...]


class Kind(Enum):
    """The RESTful interactions the server serves (http.html)."""

    READ = "read"
    VREAD = "vread"
    SEARCH = "search"
    HISTORY = "history"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"


@dataclass(frozen=True)
class Interaction:
    """A request, read. `criteria`: a search's parameters, or the conditional URL of an
    update, patch or delete (`Type?criteria`; None: the interaction names `resource_id`).
    `where`: how its errors name the request (a Bundle entry's `Bundle.entry[i]`, or "").
    """

    kind: Kind
    resource_type: str | None
    resource_id: str | None = None
    version: int | None = None  # vread
    criteria: Criteria | None = None
    if_match: int | None = None
    if_none_exist: Criteria | None = None  # a conditional create's criteria
    body: dict | None = None  # the resource of a create or update
    patch: PatchBody | None = None
    lenient: bool = False  # Prefer: handling=lenient (search)
    cursor: str | None = None  # a search or history page
    since: int | None = None  # history
    count: int = 20  # history page size
    where: str = ""

    @property
    def conditional(self) -> bool:
        """An update, patch or delete that names its target by criteria."""
        return self.kind in (Kind.UPDATE, Kind.PATCH, Kind.DELETE) and self.criteria is not None


@dataclass(frozen=True)
class Answer:
    """What performing an interaction gave: its status and what it read or wrote."""

    status: int
    stored: StoredResource | None = None  # read, vread, a write's result, a delete's tombstone
    search: SearchResult | None = None
    history: HistoryPage | None = None

    @property
    def status_line(self) -> str:
        """`201 Created`: a Bundle entry's response.status."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def criteria_of(query: str) -> Criteria:
    return tuple(parse_qsl(query, keep_blank_values=True))


# What `urlsplit` would read otherwise than written: a C0 control character or DEL anywhere,
# a space in front.
_READ_OTHERWISE = re.compile(r"[\x00-\x1f\x7f]|\A ")


def from_entry(request: dict, resource: Any, where: str) -> Interaction:
    """The interaction a batch or transaction entry asks for (Bundle.entry.request: method,
    url, ifMatch, ifNoneExist; the entry's resource: the body, or the patch of a PATCH, a
    Binary holding a JSON Patch or a Parameters, http.html#patch)."""
    method = str(request.get("method", "")).upper()
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request.url is required", f"{where}.request.url")
    if _READ_OTHERWISE.search(url):
        # `urlsplit` drops tabs and line ends anywhere and control characters or spaces in
        # front (WHATWG): `DocumentReference/x\n` was performed as a read of x while the
        # Bundle's checks, reading the url as written, took it for something else (not the
        # plain read MAX_BUNDLE_SEARCHES leaves uncounted). A url is read as written or
        # refused (fail closed).
        raise bad_request(
            f"{where}.request.url holds a control character or begins with a space: a url is"
            " percent-encoded (RFC 3986)",
            f"{where}.request.url",
        )
    parts = urlsplit(url)
    segments = [s for s in parts.path.strip("/").split("/") if s]
    if not segments:
        raise bad_request(
            f"{where}.request.url '{url}' names no resource type", f"{where}.request.url"
        )
    resource_type = segments[0]
    query = criteria_of(parts.query) if parts.query else None
    # `ifMatch` given (even "", 0 or []) is a precondition: one not a version ETag is a 400.
    raw_if_match = request.get("ifMatch")
    if_match = (
        versions.parse_etag(raw_if_match, f"{where}.request.ifMatch")
        if "ifMatch" in request
        else None
    )
    if_none_exist = request.get("ifNoneExist")
    shape = len(segments)
    if method in ("GET", "HEAD"):
        if shape == 1:
            return Interaction(
                Kind.SEARCH, resource_type, criteria=query or (), where=where, if_match=if_match
            )
        if shape == 2:
            return Interaction(
                Kind.READ, resource_type, segments[1], where=where, if_match=if_match
            )
        if shape == 4 and segments[2] == "_history":
            if not is_whole_number(segments[3]):
                raise bad_request(
                    f"'{segments[3]}' is not a version number", f"{where}.request.url"
                )
            return Interaction(
                Kind.VREAD,
                resource_type,
                segments[1],
                version=int(segments[3]),
                where=where,
                if_match=if_match,
            )
        raise bad_request(
            "GET entries support read, vread and type-level search", f"{where}.request.url"
        )
    if method == "POST" and shape == 1:
        body = _resource(resource, method, where)
        return Interaction(
            Kind.CREATE,
            resource_type,
            body=body,
            if_none_exist=criteria_of(if_none_exist.lstrip("?").split("?", 1)[-1])
            if isinstance(if_none_exist, str) and if_none_exist
            else None,
            where=where,
            if_match=if_match,
        )
    if method in ("PUT", "DELETE", "PATCH") and shape in (1, 2):
        if shape == 1 and not query:
            raise bad_request(
                f"{method} needs Type/id or Type?criteria in request.url",
                f"{where}.request.url",
            )
        resource_id = segments[1] if shape == 2 else None
        criteria = query if shape == 1 else None
        if method == "PUT":
            body = _resource(resource, method, where)
            return Interaction(
                Kind.UPDATE,
                resource_type,
                resource_id,
                criteria=criteria,
                body=body,
                where=where,
                if_match=if_match,
            )
        if method == "PATCH":
            _resource(resource, method, where)
            patch = patch_body_of_resource(resource, f"{where}.resource")
            return Interaction(
                Kind.PATCH,
                resource_type,
                resource_id,
                criteria=criteria,
                patch=patch,
                where=where,
                if_match=if_match,
            )
        return Interaction(
            Kind.DELETE,
            resource_type,
            resource_id,
            criteria=criteria,
            where=where,
            if_match=if_match,
        )
    raise bad_request(
        f"{where}: {method} {url} is not an interaction served in a Bundle entry",
        f"{where}.request.url",
    )


def _resource(resource: Any, method: str, where: str) -> dict:
    if not isinstance(resource, dict):
        raise bad_request(f"{where}.resource is required for {method}", f"{where}.resource")
    return resource


__all__ = ["Answer", "Criteria", "Interaction", "Kind", "criteria_of", "from_entry"]

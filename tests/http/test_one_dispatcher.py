"""One request, three doors: alone over REST, as a batch entry, as a transaction entry.

FHIR R4 http.html#transaction: "the actions are performed as if they were separate
interactions" (batch), and a transaction's entries are processed "as if" each were the same
request on its own, save that all succeed or none (http.html#trules). Each row of the table
below is one request; it is run alone, in a batch of one, and in a transaction of one, each
on resources of its own, and every door must answer the same status and the same
OperationOutcome issue code, and a write the same kind of Location and ETag (issue #22,
deliver 2: one dispatcher).

Multiple matches (http.html#ccreate, #cond-update, #cdelete, #patch): "the server returns a
412 Precondition Failed error indicating the client's criteria were not selective enough",
with the issue type `multiple-matches` (valueset-issue-type: "multiple matching records
were found when the operation required only one match") at every door.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import FHIR_JSON, a_patient, auth
from tests.http.metadata_world import JSON_PATCH, World, build_world, label

MASK = [{"op": "add", "path": "/securityLabel/-", "value": label("MASQUE_PS")}]
DELETE_DOCUMENT = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


@dataclass(frozen=True)
class Request:
    """One FHIR request: `url` relative to the base; `body` a resource, or a JSON Patch (a
    list) for PATCH; `actor` a World actor or "system"."""

    method: str
    url: str
    actor: str = "system"
    body: dict | list | None = None
    if_match: str | None = None
    if_none_exist: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None  # the first OperationOutcome issue code of a refusal
    location: tuple[str, str] | None = None  # (type, version) of a write's Location
    etag: str | None = None
    # The AuditEvents the request left (R16): (subtype, outcome) of each, sorted.
    audit: tuple[tuple[str, str], ...] = ()


@dataclass
class Doors:
    world: World
    serial: list[int] = field(default_factory=lambda: [100])

    def token(self, actor: str) -> str:
        return self.world.tokens.system() if actor == "system" else self.world.token(actor)

    def audit_ids(self) -> set[str]:
        """Every AuditEvent held, as the server itself reads them."""
        service = self.world.client.application.extensions["fhir"].service
        result = service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
        assert result.next_cursor is None, "more events than one page"
        return {resource_id for _, resource_id, *_ in result.matches}

    def audited(self, before: set[str]) -> tuple[tuple[str, str], ...]:
        """(subtype, outcome) of the AuditEvents recorded since `before`, sorted."""
        service = self.world.client.application.extensions["fhir"].service
        found = []
        for event_id in self.audit_ids() - before:
            event = service.read(INTERNAL, "AuditEvent", event_id).json()
            subtype = ",".join(c.get("code", "") for c in event.get("subtype") or [])
            found.append((subtype, event.get("outcome", "")))
        return tuple(sorted(found))

    def next(self) -> int:
        self.serial[0] += 1
        return self.serial[0]

    def patient(self, family: str) -> dict:
        """A Patient created by the system, named `family` (the criteria of the rows)."""
        resource = a_patient(self.next(), name=[{"family": family, "given": ["Jeanne"]}])
        response = self.world.post(self.token("system"), resource)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    # -- the three doors ---------------------------------------------------------------------

    def alone(self, request: Request) -> Answer:
        before = self.audit_ids()
        headers = {"Content-Type": FHIR_JSON}
        if request.method == "PATCH":
            headers["Content-Type"] = JSON_PATCH
        if request.if_match:
            headers["If-Match"] = request.if_match
        if request.if_none_exist:
            headers["If-None-Exist"] = request.if_none_exist
        response = self.world.client.open(
            f"/fhir/{request.url}",
            method=request.method,
            data=json.dumps(request.body) if request.body is not None else None,
            headers=auth(self.token(request.actor), **headers),
        )
        body = response.get_json(silent=True) or {}
        location = response.headers.get("Location")
        return Answer(
            response.status_code,
            _code(body) if response.status_code >= 400 else None,
            _location(location) if location and request.method != "GET" else None,
            response.headers.get("ETag"),
            self.audited(before),
        )

    def in_bundle(self, request: Request, bundle_type: str) -> Answer:
        before = self.audit_ids()
        entry_request = {"method": request.method, "url": request.url}
        if request.if_match:
            entry_request["ifMatch"] = request.if_match
        if request.if_none_exist:
            entry_request["ifNoneExist"] = request.if_none_exist
        entry: dict = {"request": entry_request}
        if isinstance(request.body, list):  # a JSON Patch in a Bundle: a Binary (http.html#patch)
            entry["resource"] = {
                "resourceType": "Binary",
                "contentType": JSON_PATCH,
                "data": base64.b64encode(json.dumps(request.body).encode()).decode(),
            }
        elif request.body is not None:
            entry["resource"] = request.body
        response = self.world.client.post(
            "/fhir",
            data=json.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": [entry]}),
            headers=auth(self.token(request.actor), **{"Content-Type": FHIR_JSON}),
        )
        body = response.get_json()
        if response.status_code != 200:  # a transaction that failed as a whole
            assert bundle_type == "transaction", response.get_data(as_text=True)
            return Answer(response.status_code, _code(body), audit=self.audited(before))
        assert body["type"] == f"{bundle_type}-response"
        answer = body["entry"][0]["response"]
        status = int(answer["status"].split()[0])
        location = answer.get("location")
        return Answer(
            status,
            _code(answer["outcome"]) if status >= 400 else None,
            _location(location) if location and request.method != "GET" else None,
            answer.get("etag"),
            self.audited(before),
        )


def _code(outcome: dict) -> str | None:
    issues = outcome.get("issue") or []
    return issues[0].get("code") if issues else None


def _location(location: str) -> tuple[str, str]:
    """(type, version) of `[base/]Type/id/_history/version`: ids differ from door to door."""
    parts = location.split("/")
    return parts[-4], parts[-1]


# -- the rows: each sets up its own resources and gives the request ----------------------------


def _create(doors: Doors) -> Request:
    return Request("POST", "Patient", body=a_patient(doors.next()))


def _conditional_create(matches: int) -> Callable[[Doors], Request]:
    def row(doors: Doors) -> Request:
        family = f"Cc{matches}x{doors.next()}"
        for _ in range(matches):
            doors.patient(family)
        body = a_patient(doors.next(), name=[{"family": family, "given": ["Jeanne"]}])
        return Request("POST", "Patient", body=body, if_none_exist=f"family={family}")

    return row


def _update(doors: Doors) -> Request:
    existing = doors.patient(f"Up{doors.next()}")
    return Request("PUT", f"Patient/{existing['id']}", body={**existing, "gender": "male"})


def _update_stale(doors: Doors) -> Request:
    existing = doors.patient(f"Stale{doors.next()}")
    return Request(
        "PUT", f"Patient/{existing['id']}", body={**existing, "gender": "male"}, if_match='W/"7"'
    )


def _update_absent(doors: Doors) -> Request:
    body = {**a_patient(doors.next()), "id": f"absent{doors.next()}"}
    return Request("PUT", f"Patient/{body['id']}", body=body)


def _conditional_update(matches: int, if_match: str | None = None) -> Callable[[Doors], Request]:
    def row(doors: Doors) -> Request:
        family = f"Cu{matches}x{doors.next()}"
        for _ in range(matches):
            doors.patient(family)
        body = a_patient(doors.next(), name=[{"family": family, "given": ["Jeanne"]}])
        return Request("PUT", f"Patient?family={family}", body=body, if_match=if_match)

    return row


def _delete(doors: Doors) -> Request:
    """The author deletes the document they deposited."""
    return Request("DELETE", f"DocumentReference/{doors.world.deposit('N')['id']}", "author")


def _delete_if_match(version: int) -> Callable[[Doors], Request]:
    """The author deletes their document "at the version they read" (RFC 9110 13.1.1)."""

    def row(doors: Doors) -> Request:
        document = doors.world.deposit("N")
        return Request(
            "DELETE", f"DocumentReference/{document['id']}", "author", if_match=f'W/"{version}"'
        )

    return row


def _delete_absent_if_match(doors: Doors) -> Request:
    return Request("DELETE", f"DocumentReference/absent{doors.next()}", "author", if_match='W/"1"')


def _delete_refused(doors: Doors) -> Request:
    """Who may delete a Patient is not a health insurer (the access rules: 403)."""
    return Request("DELETE", f"Patient/{doors.patient(f'Del{doors.next()}')['id']}")


def _conditional_delete(matches: int, if_match: str | None = None) -> Callable[[Doors], Request]:
    def row(doors: Doors) -> Request:
        unique = f"1.2.250.1.999.23.{doors.next()}"
        for _ in range(matches):
            doors.world.deposit("N", unique=unique)
        url = (
            f"DocumentReference?patient={doors.world.paul}"
            f"&identifier=urn:ietf:rfc:3986|urn:oid:{unique}"
        )
        return Request("DELETE", url, "author", if_match=if_match)

    return row


def _document_url(document: dict) -> str:
    identifier = document["masterIdentifier"]
    return f"DocumentReference?identifier={quote(identifier['system'])}|{identifier['value']}"


def _patch(doors: Doors) -> Request:
    document = doors.world.deposit("N")
    return Request("PATCH", f"DocumentReference/{document['id']}", "patient", MASK)


def _patch_refused(doors: Doors) -> Request:
    """R06: the patient masks, but does not delete, a professional's document (403)."""
    document = doors.world.deposit("N")
    return Request("PATCH", f"DocumentReference/{document['id']}", "patient", DELETE_DOCUMENT)


def _patch_stale(doors: Doors) -> Request:
    document = doors.world.deposit("N")
    return Request(
        "PATCH", f"DocumentReference/{document['id']}", "patient", MASK, if_match='W/"3"'
    )


def _conditional_patch(matches: int) -> Callable[[Doors], Request]:
    def row(doors: Doors) -> Request:
        unique = f"1.2.250.1.999.22.{doors.next()}"
        for _ in range(matches):
            doors.world.deposit("N", unique=unique)
        url = f"DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{unique}"
        return Request("PATCH", url, "author", MASK)

    return row


def _read_hidden(doors: Doors) -> Request:
    """A document masked from OTHER (MASQUE_PS, R06) answers them as a missing one (R18)."""
    document = doors.world.deposit("N", "MASQUE_PS")
    return Request("GET", f"DocumentReference/{document['id']}", "other")


def _read_absent(doors: Doors) -> Request:
    return Request("GET", f"DocumentReference/nothing{doors.next()}", "other")


def _read(doors: Doors) -> Request:
    return Request("GET", f"DocumentReference/{doors.world.deposit('N')['id']}", "other")


def _search(doors: Doors) -> Request:
    return Request("GET", f"DocumentReference?patient={doors.world.paul}", "author")


def _search_refused(doors: Doors) -> Request:
    """R10: a professional the patient did not authorize searches nothing of the record."""
    return Request("GET", f"DocumentReference?patient={doors.world.paul}", "stranger")


def _create_invalid(doors: Doors) -> Request:
    """A Patient without its INS (the DMP Patient profile): refused, nothing written."""
    return Request("POST", "Patient", body={"resourceType": "Patient", "gender": "female"})


def _update_id_mismatch(doors: Doors) -> Request:
    """http.html#update: an id in the body that is not the URL's is 400."""
    existing = doors.patient(f"Mis{doors.next()}")
    return Request("PUT", f"Patient/{existing['id']}", body={**existing, "id": "another"})


def _update_without_id(doors: Doors) -> Request:
    """http.html#update: "If no id element is provided ... the server SHALL respond with an
    HTTP 400 error code" (a transaction entry filled it in from the URL)."""
    existing = doors.patient(f"NoId{doors.next()}")
    body = {key: value for key, value in existing.items() if key != "id"}
    return Request("PUT", f"Patient/{existing['id']}", body=body)


def _vread(doors: Doors) -> Request:
    document = doors.world.deposit("N")
    return Request("GET", f"DocumentReference/{document['id']}/_history/1", "other")


def _read_deleted(doors: Doors) -> Request:
    """http.html#read: a deleted resource is 410 Gone."""
    document = doors.world.deposit("N")
    deleted = doors.world.client.delete(
        f"/fhir/DocumentReference/{document['id']}", headers=auth(doors.token("author"))
    )
    assert deleted.status_code == 204
    return Request("GET", f"DocumentReference/{document['id']}", "author")


# (name, row, status, issue code)
ROWS = [
    ("create", _create, 201, None),
    ("conditional create, no match", _conditional_create(0), 201, None),
    ("conditional create, one match", _conditional_create(1), 200, None),
    ("conditional create, two matches", _conditional_create(2), 412, "multiple-matches"),
    ("update", _update, 200, None),
    ("update, stale If-Match", _update_stale, 412, "conflict"),
    ("update of an absent id (no update as create)", _update_absent, 404, "not-found"),
    ("update, body id not the URL's", _update_id_mismatch, 400, "invalid"),
    ("update, body without id", _update_without_id, 400, "invalid"),
    ("conditional update, no match", _conditional_update(0), 201, None),
    ("conditional update, one match", _conditional_update(1), 200, None),
    ("conditional update, two matches", _conditional_update(2), 412, "multiple-matches"),
    ("delete", _delete, 204, None),
    # If-Match on every change (http.html#concurrency, RFC 9110 13.1.1): a DELETE and a
    # conditional update or delete ignored it, and deleted or overwrote another's version.
    ("delete, current If-Match", _delete_if_match(1), 204, None),
    ("delete, stale If-Match", _delete_if_match(7), 412, "conflict"),
    ("delete of an absent id, If-Match", _delete_absent_if_match, 412, "conflict"),
    ("conditional update, one match, current If-Match", _conditional_update(1, 'W/"1"'), 200, None),
    (
        "conditional update, one match, stale If-Match",
        _conditional_update(1, 'W/"7"'),
        412,
        "conflict",
    ),
    ("conditional update, no match, If-Match", _conditional_update(0, 'W/"1"'), 412, "conflict"),
    ("conditional delete, one match, current If-Match", _conditional_delete(1, 'W/"1"'), 204, None),
    (
        "conditional delete, one match, stale If-Match",
        _conditional_delete(1, 'W/"7"'),
        412,
        "conflict",
    ),
    ("conditional delete, no match, If-Match", _conditional_delete(0, 'W/"1"'), 412, "conflict"),
    ("delete refused", _delete_refused, 403, "forbidden"),
    ("conditional delete, no match", _conditional_delete(0), 204, None),
    ("conditional delete, one match", _conditional_delete(1), 204, None),
    ("conditional delete, two matches", _conditional_delete(2), 412, "multiple-matches"),
    ("patch (JSON Patch)", _patch, 200, None),
    ("patch, stale If-Match", _patch_stale, 412, "conflict"),
    ("patch refused (R06)", _patch_refused, 403, "forbidden"),
    ("conditional patch, no match", _conditional_patch(0), 404, "not-found"),
    ("conditional patch, one match", _conditional_patch(1), 200, None),
    ("conditional patch, two matches", _conditional_patch(2), 412, "multiple-matches"),
    ("read", _read, 200, None),
    ("vread", _vread, 200, None),
    ("read of a deleted resource", _read_deleted, 410, "deleted"),
    ("read of a hidden resource", _read_hidden, 404, "not-found"),
    ("read of an absent resource", _read_absent, 404, "not-found"),
    ("search", _search, 200, None),
    ("search refused (R10)", _search_refused, 403, "forbidden"),
    ("create refused (profile)", _create_invalid, 422, "invariant"),
]


@pytest.fixture
def doors(client, tokens) -> Doors:
    return Doors(build_world(client, tokens))


@pytest.mark.parametrize(
    ("row", "status", "code"),
    [pytest.param(row, status, code, id=name) for name, row, status, code in ROWS],
)
def test_a_request_answers_the_same_alone_in_a_batch_and_in_a_transaction(doors, row, status, code):
    alone = doors.alone(row(doors))
    batch = doors.in_bundle(row(doors), "batch")
    transaction = doors.in_bundle(row(doors), "transaction")
    assert (alone.status, alone.code) == (status, code), alone
    assert batch == alone, f"batch {batch} != alone {alone}"
    assert transaction == alone, f"transaction {transaction} != alone {alone}"

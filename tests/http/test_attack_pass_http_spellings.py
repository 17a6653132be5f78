"""Attack pass: one HTTP request spelled so that the access rules, the trail or the input
limits judge one reading of it while another is served (R01, R02, R16, bounded work, fail
closed; the XDS door's SOAP and MIME framing; the app as gunicorn serves it).

Each test is a spelling that got through:
- the token as an RFC 6750 form parameter of a POST `_search` (ignored under lenient
  handling, the search served and the raw form, token included, kept in the patient's
  trail); a token request giving `scope` (or any parameter) twice (the first granted);
- a search form parsed whole, for its `_format`, before its size was judged, and read
  whole for its AuditEvent before its requester was identified (an anonymous one too);
- a JSON Patch giving a key twice (the last applied), a FHIR body or JSON Patch declared in
  another charset than the UTF-8 it was read as;
- at the XDS door, a message naming two things: two `wsa:Action` (the last served) or
  `wsa:MessageID` headers, an HTTP action (Content-Type `action`, MTOM `start-info`,
  `SOAPAction`) other than the envelope's, a Content-Type parameter given twice (the last
  read), two requests in one Body (the first served), two MIME parts under the `start`
  Content-ID (the first read), a `charset` other than the envelope's XML encoding;
- under `fhir-server serve`, a `SCRIPT_NAME` header from a local peer (a 500, or the path
  judged and audited other than the one sent).
A gateway or a log judging the other reading saw another request than the one served and
audited. Fail closed: what names two things is refused, with an OperationOutcome, an OAuth
error or a SOAP Fault.

Held (not repeated here): path spellings (`//`, `;` matrix parameters, `%2F` and `..` in
ids, the type in lower case, a trailing slash, `%66hir`), under the test client and under
gunicorn, are refused or answered as the same resource under the same judgement; no
method override header or parameter is read, and gunicorn refuses lower-case methods; two
Authorization headers are one unreadable token under gunicorn; two If-Match headers are a
400; `_summary`, `_count` and `_elements` given twice are read the same way by the search
and by its rendering; Bundle entry URLs spelled as above are judged as their read.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import uuid
from urllib.parse import urlencode

import pytest
from flask import Flask
from lxml import etree
from werkzeug.test import EnvironBuilder

from fhir_server.auth.http import create_auth_blueprint
from fhir_server.auth.tokens import TokenValidator
from fhir_server.rest.fhir_api import MAX_SEARCH_FORM_BYTES
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, Tokens, a_patient, auth
from tests.http.metadata_world import JSON_PATCH, build_world, label
from tests.http.test_attack_pass_spellings import AUTHORIZED, PATIENT_A, record  # noqa: F401
from tests.http.test_serve import _free_port, _start, _stop
from tests.http.test_xds_endpoints import GP, fault_of, registry_status, xds  # noqa: F401
from tests.unit.test_auth_clients import assertion, client_key, env, form, server_dir  # noqa: F401
from tests.xds_builders import build_iti41, find_documents_request

# ruff: noqa: F811

FORM = "application/x-www-form-urlencoded"
SOAP = "application/soap+xml; charset=UTF-8"


def _trail_text(client, token: str, patient_id: str) -> str:
    """What the patient's trail says, its base64 values (raw requests) decoded."""
    response = client.get(f"/fhir/AuditEvent?patient={patient_id}&_count=100", headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    values = [
        value
        for entry in response.get_json().get("entry", [])
        for entity in entry["resource"].get("entity", [])
        for value in [entity.get("query")]
        + [d.get("valueBase64Binary") for d in entity.get("detail", [])]
        if value
    ]
    return "\n".join(base64.b64decode(value).decode("utf-8", "replace") for value in values)


# -- R01, R16: the token as a form parameter --------------------------------------------------


def test_r01_r16_access_token_in_a_post_search_form_is_refused_not_kept_in_the_trail(
    client, tokens, record
):
    """RFC 6750 §2.2's form parameter is a second credential, refused like the query one:
    read as a search parameter and ignored under `Prefer: handling=lenient`, the search was
    served (200) and its AuditEvent kept the raw form, so the patient reading their trail
    read the practitioner's bearer token."""
    practitioner = tokens.practitioner(AUTHORIZED)
    response = client.post(
        "/fhir/DocumentReference/_search",
        data=f"patient={PATIENT_A}&access_token={practitioner}",
        headers=auth(practitioner, **{"Content-Type": FORM, "Prefer": "handling=lenient"}),
    )
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "access_token" in response.get_json()["issue"][0]["diagnostics"]
    assert practitioner not in _trail_text(client, tokens.patient(PATIENT_A), PATIENT_A)


def test_r01_r02_token_request_giving_a_parameter_twice_is_invalid_request(env, client_key):
    """`scope=system/Patient.r&scope=system/DocumentReference.c`: the first was granted
    (200, a token for system/Patient.r) where a proxy or a log reading the last saw a
    request for another scope; two `client_assertion`s, the first was verified. RFC 6749
    §3.1: a parameter is given once. Refused (400 invalid_request), no token issued."""
    settings, registry, replay, issuer = env
    app = Flask(__name__)
    app.register_blueprint(
        create_auth_blueprint(
            settings, TokenValidator.from_settings(settings), registry, replay, issuer
        )
    )
    fields = list(form(assertion(client_key), scope="system/Patient.r").items())
    response = app.test_client().post(
        "/oauth/token",
        data=urlencode([*fields, ("scope", "system/DocumentReference.c")]),
        content_type=FORM,
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_request" and "access_token" not in response.json
    assert "scope" in response.json["error_description"]


# -- bounded work: the search form is judged before it is read ----------------------------------


def test_bounded_work_search_form_over_its_limit_is_refused_before_its_format_is_read(
    client, tokens, record
):
    """The answer's format is settled before the search (`_negotiate_first`), from the
    form when the query names none: the form was parsed whole there, whatever its size
    under the body limit, and its `_format` answered (406) before the search refused the
    form as over MAX_SEARCH_FORM_BYTES. The size is judged first: 413."""
    # About 100 KB: over MAX_SEARCH_FORM_BYTES, under the test app's body limit (200 KB).
    filler = "&".join(f"name=a{i:05d}" for i in range(8_000))
    assert MAX_SEARCH_FORM_BYTES < len(filler) < 200_000
    response = client.post(
        "/fhir/Patient/_search",
        data=f"_format=unknown&{filler}",
        headers=auth(tokens.system(), **{"Content-Type": FORM}),
    )
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "too-costly"
    assert "MAX_SEARCH_FORM_BYTES" in response.get_json()["issue"][0]["diagnostics"]


def test_bounded_work_search_form_within_its_limit_still_chooses_the_format(client, tokens, record):
    response = client.post(
        "/fhir/Patient/_search",
        data="_format=xml&_count=1",
        headers=auth(tokens.system(), **{"Content-Type": FORM}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("application/fhir+xml")


class _CountingInput(io.BytesIO):
    """A request body that counts the bytes the server reads from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.consumed += len(line)
        return line

    def readinto(self, buffer) -> int:
        count = super().readinto(buffer)
        self.consumed += count
        return count


@pytest.mark.parametrize("authorized", [False, True], ids=["anonymous", "system"])
def test_bounded_work_search_form_over_its_limit_is_not_read_before_authentication(
    app, tokens, authorized
):
    """The request's raw form, kept for its AuditEvent (R16), was read whole before the
    requester was identified: any client, an anonymous one too, made a worker hold a POST
    `_search` body of up to the body limit, a form the search then refused (401, 413). A
    form over MAX_SEARCH_FORM_BYTES is not read."""
    filler = ("&".join(f"name=a{i:05d}" for i in range(12_000))).encode()
    assert MAX_SEARCH_FORM_BYTES * 2 < len(filler) < 200_000
    headers = {"Content-Type": FORM, **(auth(tokens.system()) if authorized else {})}
    environ = EnvironBuilder(
        method="POST", path="/fhir/Patient/_search", data=filler, headers=headers
    ).get_environ()
    body = environ["wsgi.input"] = _CountingInput(filler)
    statuses: list[str] = []
    b"".join(app(environ, lambda status, _headers, _exc=None: statuses.append(status)))
    assert statuses[0].startswith("413" if authorized else "401"), statuses
    assert body.consumed <= MAX_SEARCH_FORM_BYTES


# -- fail closed: a body has one reading ---------------------------------------------------------


@pytest.fixture
def world(client, tokens):
    """A DocumentReference's metadata updates (test_patch's world)."""
    return build_world(client, tokens)


def _json_patch(world, actor: str, document_id: str, body: str, content_type: str = JSON_PATCH):
    return world.client.patch(
        f"/fhir/DocumentReference/{document_id}",
        data=body.encode(),
        headers=auth(world.token(actor), **{"Content-Type": content_type}),
    )


def test_fail_closed_json_patch_operation_giving_a_key_twice_is_refused(world):
    """A JSON Patch object naming `op`, `path` and `value` twice was applied as its last
    reading (200: MASQUE_PS added) where a reader of the raw body (a gateway, a log) read
    a status change; the duplicate-key refusal of FHIR bodies (finding 14) did not apply
    to the `application/json-patch+json` door."""
    document = world.deposit("N")
    twice = (
        '[{"op": "replace", "path": "/status", "value": "entered-in-error", '
        f'"op": "add", "path": "/securityLabel/-", "value": {json.dumps(label("MASQUE_PS"))}}}]'
    )
    response = _json_patch(world, "patient", document["id"], twice)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "'op' appears more than once" in response.get_json()["issue"][0]["diagnostics"]
    assert world.finds("other", document["id"])  # not masked


@pytest.mark.parametrize("charset", ["utf-16", "ISO-8859-1", '"latin1"'])
def test_fail_closed_fhir_body_declared_in_another_charset_is_refused(client, tokens, charset):
    """FHIR bodies are UTF-8 and read as UTF-8 whatever the header says: a Patient sent as
    `charset=ISO-8859-1` (its bytes UTF-8) was stored as `Hélène` where a reader honouring
    the header read `HÃ©lÃ¨ne` (201). Refused (415), nothing stored."""
    system = tokens.system()
    patient = a_patient(3)
    patient["name"] = [{"family": "Hélène"}]
    response = client.post(
        "/fhir/Patient",
        data=json.dumps(patient, ensure_ascii=False).encode(),
        headers=auth(system, **{"Content-Type": f"{FHIR_JSON}; charset={charset}"}),
    )
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["Content-Type"]
    count = client.get("/fhir/Patient?_summary=count", headers=auth(system))
    assert count.get_json()["total"] == 0


def test_fail_closed_json_patch_declared_in_another_charset_is_refused(world):
    document = world.deposit("N")
    mask = json.dumps([{"op": "add", "path": "/securityLabel/-", "value": label("MASQUE_PS")}])
    refused = _json_patch(world, "patient", document["id"], mask, f"{JSON_PATCH}; charset=utf-16")
    assert refused.status_code == 415, refused.get_data(as_text=True)
    assert world.finds("other", document["id"])
    accepted = _json_patch(world, "patient", document["id"], mask, f'{JSON_PATCH}; charset="UTF-8"')
    assert accepted.status_code == 200, accepted.get_data(as_text=True)


# -- the XDS door: one message, one transaction ------------------------------------------------


def _envelope(
    security: etree._Element,
    bodies: list[etree._Element],
    actions: tuple[str, ...] = (v.ACTION_ITI18,),
    message_ids: int = 1,
) -> bytes:
    envelope = etree.Element(
        f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
    )
    header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
    for action in actions:
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = action
    for _ in range(message_ids):
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    header.append(security)
    body = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body")
    for child in bodies:
        body.append(child)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _query(xds, nir: str, data: bytes, **headers: str):
    return xds.client.post("/xds/registry", data=data, headers={"Content-Type": SOAP, **headers})


def _is_sender_fault(response, subcode: str | None = None) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    code, _ = fault_of(response)
    assert code == "soap:Sender"
    if subcode is not None:
        assert subcode in response.get_data(as_text=True)


def test_xds_two_wsa_actions_are_a_sender_fault_not_the_last_one_served(xds):
    """`wsa:Action` ITI-57 (an update) then ITI-18 (a query): the last was served (200, a
    query answer), so a gateway admitting queries by the first let an update through, and
    a gateway admitting by the last the converse."""
    _, nir = xds.patient(1)
    data = _envelope(
        xds.security(GP, nir), [find_documents_request(nir)], (v.ACTION_ITI57, v.ACTION_ITI18)
    )
    _is_sender_fault(_query(xds, nir, data), "wsa:InvalidAddressingHeader")


def test_xds_two_message_ids_are_a_sender_fault(xds):
    """Of two `wsa:MessageID`s the last was the one the answer's RelatesTo named."""
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)], message_ids=2)
    _is_sender_fault(_query(xds, nir, data), "wsa:InvalidAddressingHeader")


def test_xds_two_requests_in_one_body_are_a_sender_fault_not_the_first_one_served(xds):
    """The first element of the Body was served and the second ignored (200)."""
    _, nir = xds.patient(1)
    data = _envelope(
        xds.security(GP, nir), [find_documents_request(nir), find_documents_request(nir)]
    )
    _is_sender_fault(_query(xds, nir, data))


def test_xds_content_type_action_other_than_the_wsa_action_is_action_mismatch(xds):
    """SOAP 1.2's `action` media type parameter naming ITI-57 on an envelope whose
    `wsa:Action` is ITI-18: the parameter was read by no one, and the query served (200)."""
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)])
    response = xds.client.post(
        "/xds/registry",
        data=data,
        headers={"Content-Type": f'{SOAP}; action="{v.ACTION_ITI57}"'},
    )
    _is_sender_fault(response, "wsa:ActionMismatch")


def test_xds_soapaction_header_other_than_the_wsa_action_is_action_mismatch(xds):
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)])
    _is_sender_fault(_query(xds, nir, data, SOAPAction=v.ACTION_ITI57), "wsa:ActionMismatch")


def test_xds_http_action_equal_to_the_wsa_action_is_served(xds):
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)])
    response = xds.client.post(
        "/xds/registry",
        data=data,
        headers={"Content-Type": f'{SOAP}; action="{v.ACTION_ITI18}"', "SOAPAction": '""'},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert registry_status(response)[0].endswith("Success")


def _mtom_deposit(xds, nir: str, content_type_change) -> object:
    request = build_iti41(nir=nir, mtom=True, security=xds.security(GP, nir))
    return xds.client.post(
        "/xds/repository",
        data=request.body,
        headers={"Content-Type": content_type_change(request.content_type)},
    )


def test_xds_mtom_content_type_parameter_given_twice_is_a_sender_fault(xds):
    """`action="ITI-18"; action="ITI-41"`: the last was read (and matched the envelope), the
    deposit stored (Success) while a gateway reading the first saw a query."""
    _, nir = xds.patient(1)
    response = _mtom_deposit(
        xds,
        nir,
        lambda ct: f'{ct}; action="{v.ACTION_ITI18}"; action="{v.ACTION_ITI41}"',
    )
    _is_sender_fault(response)
    assert "more than once" in fault_of(response)[1]


def test_xds_mtom_start_info_action_other_than_the_wsa_action_is_action_mismatch(xds):
    """MTOM carries the SOAP action in `start-info`; one naming ITI-43 on an ITI-41
    envelope was read as informative and the deposit stored (Success)."""
    _, nir = xds.patient(1)
    start_info = f'application/soap+xml; action=\\"{v.ACTION_ITI43}\\"'
    response = _mtom_deposit(
        xds,
        nir,
        lambda ct: (
            ";".join(
                part
                for part in ct.split(";")
                if not part.strip().startswith(("start-info", "action"))
            )
            + f'; start-info="{start_info}"'
        ),
    )
    _is_sender_fault(response, "wsa:ActionMismatch")


def test_xds_mtom_deposit_with_its_own_action_is_stored(xds):
    _, nir = xds.patient(1)
    response = _mtom_deposit(xds, nir, lambda ct: ct)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert registry_status(response)[0].endswith("Success")


def test_xds_mtom_two_parts_bearing_the_start_content_id_are_a_sender_fault(xds):
    """The root part, given twice under the Content-ID `start` names: the first was read as
    the envelope (the deposit stored, Success) and the second kept as an attachment, where
    a gateway taking the last for the envelope judged another message."""
    _, nir = xds.patient(1)
    request = build_iti41(nir=nir, mtom=True, security=xds.security(GP, nir))
    boundary = re.search(r'boundary="?([^";]+)', request.content_type).group(1).encode()
    first, rest = request.body.split(b"--" + boundary, 2)[1:]
    body = request.body.replace(
        b"--" + boundary + b"--", b"--" + boundary + first + b"--" + boundary + b"--"
    )
    assert body.count(first) == 2 and rest
    response = xds.client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    _is_sender_fault(response)
    assert "more than one MIME part" in fault_of(response)[1]


@pytest.mark.parametrize("charset", ["ISO-8859-1", "utf-16", "no-such-charset"])
def test_xds_envelope_charset_other_than_its_xml_encoding_is_a_sender_fault(xds, charset):
    """RFC 7303: an XML media type's `charset` says how to read the bytes. The server read
    the XML declaration alone: a UTF-8 envelope sent as `charset=ISO-8859-1` was served
    (200) as its UTF-8 reading, where a gateway honouring the header read another."""
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)])
    response = xds.client.post(
        "/xds/registry",
        data=data,
        headers={"Content-Type": f"application/soap+xml; charset={charset}"},
    )
    _is_sender_fault(response)
    assert "charset" in fault_of(response)[1]


def test_xds_envelope_charset_naming_its_xml_encoding_is_served(xds):
    _, nir = xds.patient(1)
    data = _envelope(xds.security(GP, nir), [find_documents_request(nir)])
    response = xds.client.post(
        "/xds/registry", data=data, headers={"Content-Type": 'application/soap+xml; charset="utf8"'}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- the served app: gunicorn's reading of the path is the app's ----------------------------------


def _raw_get(port: int, path: str, **headers: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.mark.slow
def test_r01_r16_served_app_takes_no_script_name_header_from_a_local_peer(tmp_path):
    """Under `fhir-server serve`, gunicorn cut a `SCRIPT_NAME` request header off the path
    for any local peer (its default proxy trust): one not a prefix of the path answered
    500 (gunicorn's own page), and `SCRIPT_NAME: /fhir` on `/fhir/fhir/Patient` was served
    (200) and audited as `/fhir/Patient`, a request the client never sent. The header is
    now read by no one: the path is the one sent."""
    data_dir = tmp_path / "var"
    port = _free_port()
    process = _start(data_dir, port)
    try:
        status, _ = _raw_get(port, "/fhir/metadata", SCRIPT_NAME="/elsewhere")
        assert status == 200
        token = Tokens(data_dir).system()
        status, body = _raw_get(
            port, "/fhir/fhir/Patient", SCRIPT_NAME="/fhir", Authorization=f"Bearer {token}"
        )
        assert status == 404, body
        assert json.loads(body)["resourceType"] == "OperationOutcome"
    finally:
        _stop(process)

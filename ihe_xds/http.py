"""The XDS.b SOAP endpoints: POST /xds/repository (ITI-41, ITI-43), POST /xds/registry (ITI-18,
ITI-57).

Register with `app.register_blueprint(create_xds_blueprint(auth_settings))` after
`app.extensions["fhir"]` (the Runtime) is set: the blueprint reads the runtime from
`current_app` and builds its VIHF trust once, when it is registered, from the identity
settings the app hands it (so this face imports nothing of the REST face).

Answer shapes (IHE ITI TF-2x, SOAP 1.2 HTTP binding):
- a message that cannot be read (size, MIME, XML, envelope, unknown or missing Action, body
  not matching the Action) or that carries no acceptable VIHF (XUA) -> SOAP 1.2 Fault;
  HTTP 400 for Sender faults, 500 otherwise; never a stack trace;
- a readable request -> HTTP 200 with RegistryResponse / AdhocQueryResponse /
  RetrieveDocumentSetResponse, Success, PartialSuccess or Failure with RegistryErrors
  (metadata problems, refusals of the access rules, unexpected failures as
  XDSRepositoryError / XDSRegistryError with a request id to quote);
- every answer carries wsa:Action = request Action + "Response" and wsa:RelatesTo = the
  request's MessageID; ITI-43 answers are MTOM, ITI-41 answers are MTOM when the request was.

/xds is outside /fhir, so the app's bearer-token hook does not run here: each request is
authenticated by its VIHF (ihe_xds.identity) before anything is read.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, g, request
from lxml import etree
from werkzeug.exceptions import RequestEntityTooLarge

from fhir_server.access.requester import Requester
from fhir_server.audit.balp import (
    OUTCOME_MINOR_FAILURE,
    OUTCOME_SERIOUS_FAILURE,
    OUTCOME_SUCCESS,
    DataEntity,
    build_xds_events,
)
from fhir_server.auth.tokens import AuthSettings
from fhir_server.service.context import RequestInfo, current_request
from fhir_server.service.prepared import PreparedEvents
from fhir_server.terminology import SYSTEM_RFC3986
from ihe_xds.errors import (
    XDS_REGISTRY_ERROR,
    XDS_REPOSITORY_ERROR,
    MalformedMessage,
    RegistryError,
    registry_error,
)
from ihe_xds.identity import SUBCODE_FAILED_AUTHENTICATION, XdsAuthenticationError, XdsIdentity
from ihe_xds.mtom import build_mtom_response, parse_http_body
from ihe_xds.responses import (
    QueryAnswer,
    adhoc_query_answer,
    adhoc_query_response,
    answer_envelope,
    registry_response,
    retrieve_response,
)
from ihe_xds.soap import (
    check_action,
    check_charset,
    check_http_action,
    fault_envelope,
    fault_for,
    read_envelope,
    response_envelope,
)
from ihe_xds.stored_query.named import checkable, named_values
from ihe_xds.transactions import SubmissionOutcome, iti18, iti41, iti43
from ihe_xds.update_document_set import iti57
from ihe_xds.vocabulary import ACTION_ITI18, ACTION_ITI41, ACTION_ITI43, ACTION_ITI57

log = logging.getLogger(__name__)

EXTENSION_KEY = "ihe_xds"
SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
REPOSITORY_ACTIONS = (ACTION_ITI41, ACTION_ITI43)
REGISTRY_ACTIONS = (ACTION_ITI18, ACTION_ITI57)


class _TooLarge(MalformedMessage):
    pass


def create_xds_blueprint(identity: AuthSettings) -> Blueprint:
    """The /xds blueprint; its VIHF trust is built from `identity` (the app's authentication
    settings: trusted signer certificates, data directory) when it is registered."""
    blueprint = Blueprint("ihe_xds", __name__, url_prefix="/xds")

    @blueprint.record_once
    def _build_trust(state) -> None:
        state.app.extensions[EXTENSION_KEY] = XdsIdentity.from_auth_settings(identity)

    @blueprint.post("/repository")
    def repository() -> Response:
        return _serve(REPOSITORY_ACTIONS)

    @blueprint.post("/registry")
    def registry() -> Response:
        return _serve(REGISTRY_ACTIONS)

    return blueprint


def _fault(exc: MalformedMessage, relates_to: str | None) -> Response:
    status = 400 if exc.fault_code == "Sender" else 500
    return Response(fault_for(exc, relates_to), status=status, content_type=SOAP_CONTENT_TYPE)


def _request_id() -> str:
    return getattr(g, "request_id", None) or str(uuid.uuid4())


def _serve(actions: tuple[str, ...]) -> Response:
    runtime = current_app.extensions["fhir"]
    identity: XdsIdentity = current_app.extensions[EXTENSION_KEY]
    max_bytes = runtime.settings.max_body_bytes
    relates_to = None
    try:
        try:
            data = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise _TooLarge(f"request body larger than the limit of {max_bytes} bytes") from None
        package = parse_http_body(request.headers.get("Content-Type"), data, max_bytes=max_bytes)
        envelope = read_envelope(package.envelope, max_bytes=max_bytes)
        relates_to = envelope.message_id
        check_charset(package.charset, envelope)
        action = check_action(envelope, actions)
        check_http_action(
            action,
            {
                "Content-Type action parameter": package.action,
                "SOAPAction header": request.headers.get("SOAPAction"),
            },
        )
        requester = _authenticate(identity, envelope.security)
    except MalformedMessage as exc:
        return _fault(exc, relates_to)
    except Exception:
        return _internal_fault(relates_to)
    token = current_request.set(
        RequestInfo(
            request_id=_request_id(),
            raw_query=f"POST {request.path} {action}".encode(),
            client_address=request.remote_addr,
            # Facts the gate computes once per request (the designated patient, its record),
            # as on the FHIR face: without it an ITI-18 resolved its patient twice.
            memo={},
            told=set(),
        )
    )
    try:
        # Every event of the transaction (the service's BALP events, the XDS event) is
        # committed once, when the block ends, before the answer is sent.
        with runtime.service.gate.audit.one_commit():
            if action == ACTION_ITI41:
                return _iti41(runtime, requester, envelope, package, relates_to)
            if action == ACTION_ITI43:
                return _iti43(runtime, requester, envelope, relates_to)
            if action == ACTION_ITI57:
                return _iti57(runtime, requester, envelope, relates_to)
            return _iti18(runtime, requester, envelope, relates_to)
    except MalformedMessage as exc:
        return _fault(exc, relates_to)
    except Exception:
        return _internal_fault(relates_to)
    finally:
        current_request.reset(token)


def _authenticate(identity: XdsIdentity, security) -> Requester:
    """The VIHF's Requester; an assertion the verifier cannot even process (a signature
    whose XML is not what XML-DSig allows, say) is a refused assertion, not a server error."""
    try:
        return identity.requester(security)
    except MalformedMessage:
        raise
    except Exception as exc:
        log.info("VIHF not verifiable: %s", exc.__class__.__name__)
        raise XdsAuthenticationError(
            "VIHF refused: the assertion or its signature cannot be processed",
            SUBCODE_FAILED_AUTHENTICATION,
        ) from None


def _internal_fault(relates_to: str | None) -> Response:
    """A SOAP 1.2 Receiver fault for a failure outside any transaction: never a trace."""
    request_id = _request_id()
    log.exception("unexpected XDS failure (request %s)", request_id)
    body = fault_envelope(
        "Receiver", f"internal server error; quote request id {request_id}", relates_to=relates_to
    )
    return Response(body, status=500, content_type=SOAP_CONTENT_TYPE)


def _unexpected(code: str) -> list[RegistryError]:
    request_id = current_request.get().request_id
    log.exception("unexpected XDS failure (request %s)", request_id)
    return [registry_error(code, f"internal server error; quote request id {request_id}")]


def _soap(body: bytes) -> Response:
    return Response(body, status=200, content_type=SOAP_CONTENT_TYPE)


def _document_entities(outcome) -> list[DataEntity]:
    """The documents an ITI-41 or ITI-57 outcome names, as the audit event's entities (BALP
    role 3, by uniqueId), each with its labels so the patient's trail hides what they hide."""
    return [
        DataEntity(
            identifier=(SYSTEM_RFC3986, f"urn:oid:{unique_id}"),
            role="3",
            security_labels=outcome.document_labels.get(unique_id, ()),
        )
        for unique_id in outcome.document_unique_ids
    ]


def _iti41(runtime, requester: Requester, envelope, package, relates_to) -> Response:
    def deposit_events(outcome: SubmissionOutcome, errors: list[RegistryError]) -> list[dict]:
        return _xds_events(
            runtime,
            "ITI-41",
            requester,
            outcome.patient_ids,
            errors,
            has_results=outcome.stored,
            documents=_document_entities(outcome),
            submission_set_unique_id=outcome.submission_set_unique_id,
        )

    def stored_with_deposit(outcome: SubmissionOutcome) -> PreparedEvents | None:
        # Built as a success: it is stored only if the deposit commits.
        events = deposit_events(outcome, [e for e in outcome.errors if not e.is_error])
        return runtime.service.gate.audit.prepare_events(events) if events else None

    try:
        outcome = iti41(
            runtime, requester, envelope.body, package.attachments, audit=stored_with_deposit
        )
        errors = outcome.errors
    except MalformedMessage:
        raise
    except Exception:
        outcome, errors = None, _unexpected(XDS_REPOSITORY_ERROR)
    body = response_envelope(ACTION_ITI41, relates_to, registry_response(errors))
    if outcome is not None and outcome.submission_set_unique_id and not outcome.audited:
        events = deposit_events(outcome, errors)
        if events:
            runtime.service.gate.audit.record(events)
    if package.is_mtom:
        content_type, payload = build_mtom_response(body, [], action=ACTION_ITI41 + "Response")
        return Response(payload, status=200, content_type=content_type)
    return _soap(body)


def _iti18(runtime, requester: Requester, envelope, relates_to) -> Response:
    try:
        outcome = iti18(runtime, requester, envelope.body)
        answer = adhoc_query_answer(
            outcome.objects, outcome.errors, return_type=outcome.return_type
        )
    except MalformedMessage:
        raise
    except Exception:
        outcome = None
        answer = QueryAnswer(adhoc_query_response([], _unexpected(XDS_REGISTRY_ERROR)))
    if outcome is not None:
        # The event keeps the request as asked: it carries the labels of what it names
        # (a hidden document's uniqueId), found or not, and is hidden from whom they hide it.
        # A request naming more than can be looked up keeps no request (`checkable`).
        values = named_values(envelope.body)
        kept = checkable(values)
        named = runtime.service.gate.entities_named_by(values) if kept else []
        _audit(
            runtime,
            "ITI-18",
            requester,
            outcome.patient_ids,
            outcome.errors,
            has_results=bool(outcome.objects),
            query_id=outcome.query_id,
            raw_query=etree.tostring(envelope.body) if kept else None,
            documents=named,
        )
    return _soap(answer_envelope(answer, ACTION_ITI18, relates_to))


def _iti57(runtime, requester: Requester, envelope, relates_to) -> Response:
    """Update Document Set (ihe_xds.update_document_set): RegistryResponse, and its event."""
    try:
        outcome = iti57(runtime, requester, envelope.body)
        errors = outcome.errors
    except MalformedMessage:
        raise
    except Exception:
        outcome, errors = None, _unexpected(XDS_REGISTRY_ERROR)
    if outcome is not None:
        _audit(
            runtime,
            "ITI-57",
            requester,
            outcome.patient_ids,
            errors,
            has_results=not errors,
            documents=_document_entities(outcome),
        )
    return _soap(response_envelope(ACTION_ITI57, relates_to, registry_response(errors)))


def _iti43(runtime, requester: Requester, envelope, relates_to) -> Response:
    try:
        outcome = iti43(runtime, requester, envelope.body)
        element, attachments = retrieve_response(outcome.documents, outcome.errors)
    except MalformedMessage:
        raise
    except Exception:
        outcome = None
        element, attachments = retrieve_response([], _unexpected(XDS_REPOSITORY_ERROR))
    if outcome is not None:
        _audit(
            runtime,
            "ITI-43",
            requester,
            outcome.patient_ids,
            outcome.errors,
            has_results=bool(outcome.documents),
            documents=[
                # With the document's labels: the event is hidden from whom it is (R07, R14).
                DataEntity(
                    identifier=(SYSTEM_RFC3986, f"urn:oid:{u}"),
                    role="3",
                    security_labels=outcome.document_labels.get(u, ()),
                )
                for u in outcome.document_unique_ids
            ],
        )
    body = response_envelope(ACTION_ITI43, relates_to, element)
    content_type, payload = build_mtom_response(body, attachments, action=ACTION_ITI43 + "Response")
    return Response(payload, status=200, content_type=content_type)


def _xds_events(
    runtime,
    transaction: str,
    requester: Requester,
    patients: list[str],
    errors: list[RegistryError],
    *,
    has_results: bool,
    **details,
) -> list[dict]:
    """The ATNA-shaped XDS event of this transaction (besides the BALP events the service
    writes for each read and write it makes); none for the server's own requests."""
    if not runtime.service.gate.audit.records(requester):
        return []
    if any(e.is_error for e in errors):
        outcome = OUTCOME_MINOR_FAILURE if has_results else OUTCOME_SERIOUS_FAILURE
    else:
        outcome = OUTCOME_SUCCESS
    info = current_request.get()
    return build_xds_events(
        transaction=transaction,
        requester=requester,
        patients=patients,
        outcome=outcome,
        recorded=datetime.now(UTC),
        server_base=runtime.base_url,
        endpoint=request.url,
        request_id=info.request_id,
        client_address=info.client_address,
        outcome_desc="; ".join(e.error_code for e in errors if e.is_error) or None,
        **details,
    )


def _audit(runtime, transaction: str, requester: Requester, patients, errors, **details) -> None:
    """Record the XDS event with the request's other events (`_serve`'s `one_commit`: they
    are durable before the answer leaves)."""
    events = _xds_events(runtime, transaction, requester, patients, errors, **details)
    if events:
        runtime.service.gate.audit.record(events)

"""The application factory: settings in, a WSGI app out (Flask's own pattern).

`create_app` opens the store, loads the registries, builds the service gate and mounts the
faces. Everything a request needs hangs off `app.extensions["fhir"]` (a Runtime), so tests
can build as many independent apps as they like.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import HTTPException

from fhir_server.access.requester import Requester
from fhir_server.auth.clients import ClientRegistry, ReplayStore
from fhir_server.auth.http import bearer_requester, create_auth_blueprint
from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.tokens import AuthSettings, TokenIssuer, TokenValidator
from fhir_server.config import Settings
from fhir_server.errors import FhirError, error
from fhir_server.paths import capability_dir, profiles_dir
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.rest.formats import JSON, negotiate, render
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.bundles import BundleProcessor
from fhir_server.service.capability import build_capability_statement
from fhir_server.service.context import RequestInfo, current_request
from fhir_server.service.core import FhirService
from fhir_server.service.factory import build_service
from fhir_server.store.base import ResourceStore
from fhir_server.store.factory import open_store

log = logging.getLogger("fhir_server")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


def _new_request_id() -> str:
    """A version-4 UUID from the process's Mersenne Twister rather than os.urandom: a request
    id correlates logs and AuditEvents and needs no secrecy, and the system call costs a
    thread its turn at the GIL on every request. (`random` reseeds in each forked worker.)"""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


VALIDATE_OPERATION = {
    "name": "validate",
    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
}

# Paths served without a token (R01).
PUBLIC_PATHS = ("/oauth/", "/healthz")
# The two documents of /fhir read without a token (FHIR R4 http.html#capabilities, SMART
# App Launch 2.0 conformance), and only read: a POST or PUT at the same path reached the
# REST routes as the resource type "metadata" with no requester (a 500).
PUBLIC_FHIR_READS = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")
PUBLIC_METHODS = ("GET", "HEAD", "OPTIONS")


def is_public(path: str, method: str) -> bool:
    """Whether a request is answered without authentication."""
    if path.startswith(PUBLIC_PATHS) or not path.startswith("/fhir"):
        return True
    return path in PUBLIC_FHIR_READS and method in PUBLIC_METHODS


@dataclass
class Runtime:
    settings: Settings
    store: ResourceStore
    registry: SearchRegistry
    service: FhirService
    bundles: BundleProcessor
    base_url: str
    capability: bytes
    authenticate: Callable[[Request], Requester]


def create_app(
    settings: Settings,
    *,
    store: ResourceStore | None = None,
    clock: Callable[[], int] = versions.now_us,
) -> Flask:
    app = Flask("fhir_server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.strict_slashes = False
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    registry = SearchRegistry.load(settings.profiles_dir or profiles_dir())
    if store is None:
        store = open_store(settings, registry)
    service = build_service(
        store,
        registry,
        data_dir=settings.data_dir,
        base_url=settings.fhir_base_url,
        clock=clock,
        profiles_path=settings.profiles_dir,
    )
    base_url = settings.fhir_base_url
    runtime = Runtime(
        settings=settings,
        store=store,
        registry=registry,
        service=service,
        bundles=BundleProcessor(service),
        base_url=base_url,
        capability=build_capability_statement(
            capability_dir() / "CapabilityStatement-server.json",
            registry,
            base_url=base_url,
            profiles_by_type={t: service.profiles.supported_profiles(t) for t in SERVED_TYPES},
            operations={t: [VALIDATE_OPERATION] for t in SERVED_TYPES},
            date=versions.instant(clock()),
        ),
        authenticate=_no_authentication,
    )
    app.extensions["fhir"] = runtime
    _install_authentication(app, runtime, settings)

    from fhir_server.rest.conformance import conformance
    from fhir_server.rest.fhir_api import api
    from ihe_xds.http import create_xds_blueprint

    app.register_blueprint(conformance, url_prefix="/fhir")
    app.register_blueprint(api, url_prefix="/fhir")
    app.register_blueprint(create_xds_blueprint(auth_settings(settings)))
    _install_request_hooks(app)
    _install_error_handlers(app)

    @app.get("/healthz")
    def healthz():
        healthy = runtime.store.ping()
        body = {"status": "ok" if healthy else "unavailable", "store": runtime.store.name}
        return body, 200 if healthy else 503

    return app


def _no_authentication(req) -> Requester:
    raise error(401, "login", "authentication is required")


def auth_settings(settings: Settings) -> AuthSettings:
    return AuthSettings.from_settings(settings)


def _install_authentication(app: Flask, runtime: Runtime, settings: Settings) -> None:
    """Bearer tokens on /fhir (R01), the token endpoint and the SMART configuration."""
    configuration = auth_settings(settings)
    key = load_or_create_signing_key(settings.data_dir)
    validator = TokenValidator.from_settings(configuration, local_key=key)
    issuer = TokenIssuer(
        key=key, issuer=configuration.local_issuer, audience=configuration.effective_audience
    )
    app.register_blueprint(
        create_auth_blueprint(
            configuration,
            validator,
            ClientRegistry.in_data_dir(settings.data_dir),
            ReplayStore.in_data_dir(settings.data_dir),
            issuer,
        )
    )
    base_url = settings.fhir_base_url
    runtime.authenticate = lambda req: bearer_requester(req, validator, base_url)


def _install_request_hooks(app: Flask) -> None:
    @app.before_request
    def identify() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else _new_request_id()
        raw = f"{request.method} {request.full_path.rstrip('?')}".encode()
        if _small_search_form(request):
            raw += b"\n" + request.get_data(cache=True)
        g.request_info = current_request.set(
            RequestInfo(g.request_id, raw, request.remote_addr, memo={}, told=set())
        )
        if is_public(request.path, request.method):
            return
        g.requester = app.extensions["fhir"].authenticate(request)

    @app.teardown_request
    def forget_request(_exc: BaseException | None) -> None:
        """The request's facts (its memo) end with it: a worker thread keeps none for the
        next request, nor does a test client's thread for the test."""
        token = g.pop("request_info", None)
        if token is None:
            return
        try:
            current_request.reset(token)
        except ValueError:  # set in another context: leave a fresh one
            current_request.set(RequestInfo())

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        return response


def _small_search_form(req: Request) -> bool:
    """Whether the request is a POST `_search` whose form the search will read (its AuditEvent
    keeps it, R16): of a declared size within MAX_SEARCH_FORM_BYTES. Before authentication,
    a body of any size under the body limit (32 MB) was read whole into memory, for any
    client, a search the search itself then refused (411, 413) or an anonymous one (401)."""
    from fhir_server.rest.fhir_api import MAX_SEARCH_FORM_BYTES

    if req.method != "POST" or not req.path.endswith("/_search"):
        return False
    size = req.content_length
    return size is not None and size <= MAX_SEARCH_FORM_BYTES


def _outcome_response(exc: FhirError) -> Response:
    try:
        negotiated = negotiate(
            request.args.get("_format"), request.headers.get("Accept"), request.args.get("_pretty")
        )
    except FhirError:
        negotiated = negotiate(None, JSON, None)
    return Response(
        render(exc.operation_outcome(), negotiated),
        status=exc.status,
        headers=exc.headers,
        content_type=negotiated.content_type,
    )


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def fhir_error(exc: FhirError) -> Response:
        return _outcome_response(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = {
            404: "not-found",
            405: "not-supported",
            413: "too-costly",
            415: "not-supported",
        }.get(exc.code or 500, "processing")
        messages: dict[int | None, str] = {
            404: f"no FHIR endpoint at {request.path}",
            405: f"{request.method} is not supported on {request.path}",
            413: f"the request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        return _outcome_response(
            error(exc.code or 500, code, messages.get(exc.code, exc.description or exc.name))
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        request_id = getattr(g, "request_id", "-")
        log.exception("unexpected error (request %s)", request_id)
        return _outcome_response(
            error(
                500,
                "exception",
                f"internal server error; quote request id {request_id} to the operator",
            )
        )

"""The HTTP side of auth: /oauth/token, SMART configuration, JWKS, and bearer extraction.

The token logic lives in `clients.issue_client_token`; this module only translates between
Flask requests and those functions (RFC 6749 §5 response shapes, RFC 6750 §3 challenges).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from typing import Any

from flask import Blueprint, Request, jsonify, request
from werkzeug.datastructures import MultiDict

from fhir_server.access.requester import Requester
from fhir_server.auth.clients import ClientRegistry, OAuthError, ReplayStore, issue_client_token
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import (
    ALLOWED_ALGORITHMS,
    AuthenticationError,
    AuthSettings,
    TokenIssuer,
    TokenValidator,
)
from fhir_server.errors import FhirError, Issue

REALM = "fhir"
SCOPES_SUPPORTED = [
    "patient/*.cruds",
    "user/*.cruds",
    "system/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
    "system/*.read",
    "system/*.write",
]
CAPABILITIES = [
    "client-confidential-asymmetric",
    "permission-v2",
    "permission-v1",
    "permission-patient",
    "permission-user",
]


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def unauthorized(description: str | None) -> FhirError:
    """401 with an OperationOutcome and an RFC 6750 §3 challenge.

    With no credentials at all (description None) the challenge carries no error code
    (RFC 6750 §3.1).
    """
    challenge = f'Bearer realm="{REALM}"'
    if description is not None:
        challenge += f', error="invalid_token", error_description="{_quoted(description)}"'
    diagnostics = description or "authentication required: send a bearer token (R01)"
    return FhirError(
        401,
        [Issue("error", "login", diagnostics, details_code="R01")],
        headers={"WWW-Authenticate": challenge},
    )


def bearer_token(req: Request) -> str | None:
    """The bearer token of the Authorization header, the one place it is read.

    A token in the query string (`access_token`, RFC 6750 §2.3) is refused rather than
    ignored: alongside a header it is a second credential a proxy or a log may take for the
    caller (RFC 6750 §2: one method per request), and alone it was answered as a request
    without credentials."""
    if "access_token" in req.args:
        raise unauthorized(
            "send the token in the Authorization header only (RFC 6750 §2), not as access_token"
        )
    header = req.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


@lru_cache(maxsize=16)
def _requester_of(base_url: str | None) -> Callable[[Mapping[str, Any]], Requester]:
    """The one derivation of a Requester from claims for `base_url`. The verified-token
    cache keeps derived values by (token, function): a `partial` made afresh per request
    never matched, and each request added an entry that lived as long as its token, so any
    holder of a valid token grew the server's memory with every request."""
    return partial(requester_from_claims, base_url=base_url)


def bearer_requester(
    req: Request, validator: TokenValidator, base_url: str | None = None
) -> Requester:
    """The Requester of a FHIR request; a FhirError 401 (R01) if it has no valid token.
    `base_url`: this server's FHIR base, the only one an absolute `fhirUser` may name."""
    token = bearer_token(req)
    if token is None:
        raise unauthorized(None)
    try:
        return validator.authenticated(token, _requester_of(base_url))
    except AuthenticationError as exc:
        raise unauthorized(exc.message) from None


def _refuse_repeated_parameters(form: MultiDict[str, str]) -> None:
    """A token request gives each parameter once (RFC 6749 §3.1): of two `scope`,
    `client_assertion` or `client_id` the first was read, so a token was issued for another
    scope, or another assertion, than a proxy or a log reading the last saw (R01, R02)."""
    for name, values in form.lists():
        if len(values) > 1:
            raise OAuthError(
                "invalid_request", f"{name} is given more than once (RFC 6749 section 3.1)"
            )


def smart_configuration(
    settings: AuthSettings, token_endpoint: str, jwks_uri: str
) -> dict[str, Any]:
    """SMART App Launch 2.0 §Conformance: /.well-known/smart-configuration."""
    return {
        "issuer": settings.local_issuer,
        "jwks_uri": jwks_uri,
        "token_endpoint": token_endpoint,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALLOWED_ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": [],
        "capabilities": CAPABILITIES,
        "code_challenge_methods_supported": [],
    }


def create_auth_blueprint(
    settings: AuthSettings,
    validator: TokenValidator,
    registry: ClientRegistry,
    replay_store: ReplayStore,
    token_issuer: TokenIssuer,
    clock: Callable[[], float] = time.time,
) -> Blueprint:
    """POST /oauth/token, GET /oauth/jwks, GET /fhir/.well-known/smart-configuration.

    Mount at the application root. The token endpoint URL (the aud client assertions must
    carry) comes from FHIR_BASE_URL, else from the request's own root URL.
    """
    blueprint = Blueprint("auth", __name__)

    def root() -> str:
        return (
            settings.token_endpoint or request.url_root.rstrip("/") + "/oauth/token"
        ).removesuffix("/oauth/token")

    @blueprint.post("/oauth/token")
    def token() -> Any:
        try:
            _refuse_repeated_parameters(request.form)
            body = issue_client_token(
                request.form,
                registry,
                replay_store,
                token_issuer,
                clock(),
                token_endpoint=root() + "/oauth/token",
            )
            status = 200
        except OAuthError as exc:
            body, status = exc.body(), exc.status
        response = jsonify(body)
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="oauth"'
        return response

    @blueprint.get("/oauth/jwks")
    def jwks() -> Any:
        return jsonify(token_issuer.key.public_jwks())

    @blueprint.get("/fhir/.well-known/smart-configuration")
    def configuration() -> Any:
        base = root()
        return jsonify(smart_configuration(settings, base + "/oauth/token", base + "/oauth/jwks"))

    return blueprint

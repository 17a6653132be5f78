"""SMART Backend Services token endpoint: RFC 6749 §4.4 / §5.2, RFC 7523, R15."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from fhir_server.access.requester import ActorKind
from fhir_server.auth.clients import (
    JWT_BEARER,
    ClientRegistry,
    OAuthError,
    RegisteredClient,
    ReplayStore,
    issue_client_token,
    public_jwks_from_file,
)
from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import AuthSettings, TokenIssuer, TokenValidator

ENDPOINT = "https://dmp.example/oauth/token"
NOW = time.time()


@pytest.fixture
def client_key():
    return ECKey.generate_key("P-384", parameters={"kid": "lab-key"})


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory):
    """The server's data dir (its signing key), shared: generating RSA keys is slow."""
    return tmp_path_factory.mktemp("server")


@pytest.fixture
def env(tmp_path, server_dir, client_key):
    settings = AuthSettings(data_dir=server_dir, base_url="https://dmp.example/fhir")
    registry = ClientRegistry.in_data_dir(tmp_path)
    registry.add(
        RegisteredClient(
            client_id="lab-1",
            jwks={"keys": [client_key.as_dict(private=False)]},
            scope="system/DocumentReference.c system/Binary.c system/List.c system/Patient.r",
            organization_type="laboratory",
        )
    )
    issuer = TokenIssuer(
        load_or_create_signing_key(server_dir), settings.local_issuer, settings.effective_audience
    )
    return settings, registry, ReplayStore.in_data_dir(tmp_path), issuer


def assertion(
    key, *, iss="lab-1", sub=None, aud=ENDPOINT, exp=None, jti=None, alg="ES384", kid="lab-key"
):
    claims = {
        "iss": iss,
        "sub": sub or iss,
        "aud": aud,
        "exp": exp or NOW + 240,
        "jti": jti or uuid.uuid4().hex,
    }
    return jws.serialize_compact(
        {"alg": alg, "kid": kid, "typ": "JWT"}, orjson.dumps(claims), key, algorithms=[alg]
    )


def form(token, scope=None, **extra):
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": token,
    }
    if scope is not None:
        data["scope"] = scope
    data.update(extra)
    return data


def call(env, data, now=NOW):
    _, registry, replay, issuer = env
    return issue_client_token(data, registry, replay, issuer, now, token_endpoint=ENDPOINT)


def test_rfc7523_signed_assertion_gets_a_short_lived_system_token(env, client_key):
    settings = env[0]
    response = call(env, form(assertion(client_key), scope="system/DocumentReference.c"))
    assert response["token_type"] == "bearer"
    assert response["expires_in"] <= 300
    assert response["scope"] == "system/DocumentReference.c"
    validator = TokenValidator.from_settings(settings)
    validator.clock = lambda: NOW
    claims = validator.validate(response["access_token"])
    assert claims["exp"] - claims["iat"] <= 300
    requester = requester_from_claims(claims)
    assert requester.kind is ActorKind.SYSTEM
    assert requester.subject_id == "lab-1"
    assert requester.organization_type == "laboratory"


def test_rfc7523_replayed_jti_is_refused(env, client_key):
    token = assertion(client_key)
    call(env, form(token))
    with pytest.raises(OAuthError) as info:
        call(env, form(token))
    assert (info.value.error, info.value.status) == ("invalid_client", 401)


def test_rfc7523_replay_store_survives_a_restart(env, client_key, tmp_path):
    token = assertion(client_key, jti="fixed-jti")
    call(env, form(token))
    restarted = (
        env[0],
        ClientRegistry.in_data_dir(tmp_path),
        ReplayStore.in_data_dir(tmp_path),
        env[3],
    )
    with pytest.raises(OAuthError, match="already used"):
        call(restarted, form(assertion(client_key, jti="fixed-jti")))


def test_rfc7523_jti_may_be_reused_once_the_assertion_expired(env, client_key):
    call(env, form(assertion(client_key, jti="j", exp=NOW + 60)))
    later = NOW + 600
    assert call(env, form(assertion(client_key, jti="j", exp=later + 60)), now=later)[
        "access_token"
    ]


def test_rfc7523_expired_assertion_is_refused(env, client_key):
    with pytest.raises(OAuthError, match="expired") as info:
        call(env, form(assertion(client_key, exp=NOW - 120)))
    assert info.value.status == 401


def test_smart_backend_assertion_valid_for_more_than_five_minutes_is_refused(env, client_key):
    with pytest.raises(OAuthError, match="5 minutes"):
        call(env, form(assertion(client_key, exp=NOW + 3600)))


def test_rfc7523_wrong_audience_is_refused(env, client_key):
    with pytest.raises(OAuthError, match="aud") as info:
        call(env, form(assertion(client_key, aud="https://other.example/oauth/token")))
    assert info.value.error == "invalid_client"


def test_rfc7523_iss_and_sub_must_both_be_the_client(env, client_key):
    with pytest.raises(OAuthError, match="iss and sub"):
        call(env, form(assertion(client_key, sub="someone-else")))


def test_rfc7523_assertion_signed_by_another_key_is_refused(env):
    other = ECKey.generate_key("P-384", parameters={"kid": "lab-key"})
    with pytest.raises(OAuthError, match="signature"):
        call(env, form(assertion(other)))


def test_rfc6749_unknown_client_is_invalid_client(env, client_key):
    with pytest.raises(OAuthError, match="unknown client") as info:
        call(env, form(assertion(client_key, iss="nobody")))
    assert (info.value.error, info.value.status) == ("invalid_client", 401)


def test_rfc6749_other_grant_types_are_unsupported(env, client_key):
    with pytest.raises(OAuthError) as info:
        call(env, form(assertion(client_key), grant_type="password"))
    assert (info.value.error, info.value.status) == ("unsupported_grant_type", 400)


def test_rfc6749_client_secret_instead_of_assertion_is_invalid_client(env):
    with pytest.raises(OAuthError) as info:
        call(env, {"grant_type": "client_credentials", "client_id": "lab-1", "client_secret": "s"})
    assert info.value.error == "invalid_client"


def test_r02_requested_scopes_are_intersected_with_registered_ones(env, client_key):
    response = call(env, form(assertion(client_key), scope="system/*.cruds system/Observation.rs"))
    assert set(response["scope"].split()) == {
        "system/DocumentReference.c",
        "system/Binary.c",
        "system/List.c",
        "system/Patient.r",
    }


def test_rfc6749_no_grantable_scope_is_invalid_scope(env, client_key):
    with pytest.raises(OAuthError) as info:
        call(env, form(assertion(client_key), scope="system/DocumentReference.r"))
    assert (info.value.error, info.value.status) == ("invalid_scope", 400)


def test_rfc6749_malformed_scope_is_invalid_scope(env, client_key):
    with pytest.raises(OAuthError) as info:
        call(env, form(assertion(client_key), scope="system/DocumentReference.xyz"))
    assert info.value.error == "invalid_scope"


def test_registry_file_changes_are_seen_without_restart(env, tmp_path, client_key):
    registry = env[1]
    other_view = ClientRegistry.in_data_dir(tmp_path)
    assert other_view.get("lab-1") is not None
    registry.remove("lab-1")
    assert other_view.get("lab-1") is None
    assert json.loads((tmp_path / "clients.json").read_text())["clients"] == {}


def test_registry_refuses_private_keys(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [RSAKey.generate_key(2048).as_dict(private=True)]}))
    with pytest.raises(ValueError, match="private"):
        public_jwks_from_file(path, pem=False)
    pem = tmp_path / "key.pem"
    pem.write_bytes(RSAKey.generate_key(2048).as_pem(private=False))
    assert public_jwks_from_file(pem, pem=True)["keys"][0]["kty"] == "RSA"


@pytest.fixture
def app(env):
    from flask import Flask

    from fhir_server.auth.http import create_auth_blueprint

    settings, registry, replay, issuer = env
    validator = TokenValidator.from_settings(settings)
    flask_app = Flask(__name__)
    flask_app.register_blueprint(
        create_auth_blueprint(settings, validator, registry, replay, issuer)
    )
    return flask_app


def test_rfc6749_token_endpoint_over_http(app, client_key):
    http = app.test_client()
    ok = http.post("/oauth/token", data=form(assertion(client_key, exp=time.time() + 120)))
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "no-store"
    assert ok.json["token_type"] == "bearer" and ok.json["access_token"]
    replay = http.post(
        "/oauth/token", data=form(assertion(client_key, jti="x", exp=time.time() + 120))
    )
    again = http.post(
        "/oauth/token", data=form(assertion(client_key, jti="x", exp=time.time() + 120))
    )
    assert replay.status_code == 200
    assert again.status_code == 401 and again.json["error"] == "invalid_client"
    unsupported = http.post("/oauth/token", data={"grant_type": "authorization_code"})
    assert unsupported.status_code == 400 and unsupported.json["error"] == "unsupported_grant_type"


def test_smart_configuration_advertises_backend_services(app):
    config = app.test_client().get("/fhir/.well-known/smart-configuration").json
    assert config["token_endpoint"] == ENDPOINT
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert "ES384" in config["token_endpoint_auth_signing_alg_values_supported"]
    assert "RS384" in config["token_endpoint_auth_signing_alg_values_supported"]
    assert not any(
        a.startswith("HS") or a == "none"
        for a in config["token_endpoint_auth_signing_alg_values_supported"]
    )
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(
        config["capabilities"]
    )
    assert config["grant_types_supported"] == ["client_credentials"]
    jwks = app.test_client().get("/oauth/jwks").json
    assert [k["kid"] for k in jwks["keys"]] and all("d" not in k for k in jwks["keys"])


def test_r01_missing_or_invalid_bearer_is_401_with_a_challenge(app, env):
    from fhir_server.auth.http import bearer_requester
    from fhir_server.errors import FhirError

    settings, _, _, issuer = env
    validator = TokenValidator.from_settings(settings)
    with app.test_request_context("/fhir/Patient"):
        from flask import request

        with pytest.raises(FhirError) as missing:
            bearer_requester(request, validator)
    assert missing.value.status == 401
    assert missing.value.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    assert missing.value.operation_outcome()["issue"][0]["code"] == "login"
    bad = {"Authorization": "Bearer not.a.token"}
    with (
        app.test_request_context("/fhir/Patient", headers=bad),
        pytest.raises(FhirError) as invalid,
    ):
        bearer_requester(request, validator)
    challenge = invalid.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="fhir", error="invalid_token", error_description="')
    token = issuer.issue(subject="1", scopes="patient/*.rs", fhir_user="Patient/1")
    with app.test_request_context("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}):
        assert bearer_requester(request, validator).subject_id == "1"

"""R01: bearer tokens (RFC 9068 JWT access tokens) issued locally or by a configured issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from fhir_server.auth.keys import TOKEN_KEY_FILE, load_or_create_signing_key
from fhir_server.auth.tokens import (
    AuthenticationError,
    AuthSettings,
    TokenIssuer,
    TokenValidator,
)

EXTERNAL = "https://idp.example"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    # One data dir (one RSA key generation) for the module: keys are read-only here.
    return AuthSettings(
        data_dir=tmp_path_factory.mktemp("data"), base_url="https://dmp.example/fhir"
    )


@pytest.fixture
def issuer(settings):
    key = load_or_create_signing_key(settings.data_dir)
    return TokenIssuer(key, settings.local_issuer, settings.effective_audience)


@pytest.fixture
def validator(settings):
    return TokenValidator.from_settings(settings)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_keys_private_key_is_created_owner_only_and_reloaded(tmp_path):
    first = load_or_create_signing_key(tmp_path)
    path = tmp_path / "keys" / TOKEN_KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    second = load_or_create_signing_key(tmp_path)
    assert first.kid == second.kid
    assert second.public_jwks()["keys"][0]["kid"] == first.kid
    assert "d" not in second.public_jwks()["keys"][0]  # no private exponent published
    assert "PRIVATE" not in repr(second) and "n=" not in repr(second)


def test_keys_workers_starting_together_share_one_key(tmp_path):
    with ThreadPoolExecutor(max_workers=3) as pool:
        kids = {k.kid for k in pool.map(lambda _: load_or_create_signing_key(tmp_path), range(3))}
    assert len(kids) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == [TOKEN_KEY_FILE]


def test_rfc9068_token_carries_the_standard_claims(issuer, validator, settings):
    token = issuer.issue(subject="123", scopes="patient/*.rs", fhir_user="Patient/123")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    claims = validator.validate(token)
    for name in ("iss", "sub", "aud", "exp", "iat", "jti", "scope", "client_id", "fhirUser"):
        assert name in claims
    assert claims["iss"] == "https://dmp.example"
    assert claims["aud"] == "https://dmp.example/fhir"
    assert claims["fhirUser"] == "Patient/123"


def test_r01_expired_token_is_refused(issuer, validator):
    token = issuer.issue(
        subject="1", scopes="patient/*.rs", fhir_user="Patient/1", now=time.time() - 7200
    )
    with pytest.raises(AuthenticationError, match="expired"):
        validator.validate(token)


def test_r01_small_clock_skew_is_tolerated(issuer, validator):
    token = issuer.issue(subject="1", scopes="", lifetime_seconds=60, now=time.time() - 75)
    assert validator.validate(token)["sub"] == "1"


def test_r01_token_for_another_audience_is_refused(settings, validator):
    other = TokenIssuer(
        load_or_create_signing_key(settings.data_dir), settings.local_issuer, "https://other/fhir"
    )
    with pytest.raises(AuthenticationError, match="audience"):
        validator.validate(other.issue(subject="1", scopes=""))


def test_r01_token_of_unknown_issuer_is_refused(settings, validator):
    other = TokenIssuer(
        load_or_create_signing_key(settings.data_dir), "https://evil", settings.effective_audience
    )
    with pytest.raises(AuthenticationError, match="issuer"):
        validator.validate(other.issue(subject="1", scopes=""))


def test_r01_token_signed_by_another_key_is_refused(tmp_path, settings, validator):
    foreign = load_or_create_signing_key(tmp_path / "elsewhere")
    forged = TokenIssuer(foreign, settings.local_issuer, settings.effective_audience).issue(
        subject="1", scopes=""
    )
    with pytest.raises(AuthenticationError):
        validator.validate(forged)


def test_r01_tampered_payload_is_refused(issuer, validator):
    header, payload, signature = issuer.issue(subject="1", scopes="patient/*.rs").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "system/*.cruds"
    with pytest.raises(AuthenticationError, match="signature"):
        validator.validate(f"{header}.{_b64(claims)}.{signature}")


def test_r01_alg_none_is_refused(settings, validator):
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.effective_audience,
        "exp": time.time() + 60,
    }
    with pytest.raises(AuthenticationError, match="algorithm"):
        validator.validate(f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}.")


def test_r01_hs256_signed_with_the_public_key_is_refused(issuer, settings, validator):
    # The classic confusion attack: HMAC keyed with the (public) RSA key.
    public_pem = issuer.key.key.as_pem(private=False)
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.effective_audience,
        "exp": int(time.time()) + 60,
        "sub": "x",
    }
    signing_input = (
        f"{_b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': issuer.key.kid})}.{_b64(claims)}"
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(AuthenticationError, match="algorithm"):
        validator.validate(forged)


def test_r01_malformed_token_gives_a_safe_message(validator):
    for bad in ("", "abc", "a.b", "a.b.c", "....", "x" * 20000):
        with pytest.raises(AuthenticationError) as info:
            validator.validate(bad)
        assert len(info.value.message) < 100


def test_r01_local_token_must_be_an_access_token(issuer, settings, validator):
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.effective_audience,
        "exp": int(time.time()) + 60,
        "sub": "x",
    }
    id_token_like = jws.serialize_compact(
        {"alg": "RS256", "typ": "JWT", "kid": issuer.key.kid},
        orjson.dumps(claims),
        issuer.key.key,
        algorithms=["RS256"],
    )
    with pytest.raises(AuthenticationError, match="at\\+jwt"):
        validator.validate(id_token_like)


def test_r02_token_with_malformed_scope_is_refused(issuer, validator):
    with pytest.raises(AuthenticationError, match="scope"):
        validator.validate(issuer.issue(subject="1", scopes="patient/Observation.sr"))


def _external_token(key, kid, alg, settings, **extra):
    now = int(time.time())
    claims = {
        "iss": EXTERNAL,
        "sub": "u",
        "aud": settings.effective_audience,
        "exp": now + 300,
        "iat": now,
        "scope": "user/*.rs",
    }
    claims.update(extra)
    return jws.serialize_compact(
        {"alg": alg, "kid": kid, "typ": "at+jwt"}, orjson.dumps(claims), key, algorithms=[alg]
    )


class FakeJwks:
    """An issuer's JWKS endpoint whose keys the test rotates; counts fetches."""

    def __init__(self, *keys):
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, url):
        assert url == f"{EXTERNAL}/jwks"
        self.fetches += 1
        return {"keys": [k.as_dict(private=False) for k in self.keys]}


def _external_settings(tmp_path):
    return AuthSettings(
        data_dir=tmp_path,
        issuer=EXTERNAL,
        jwks_url=f"{EXTERNAL}/jwks",
        audience="https://dmp.example/fhir",
    )


def test_r01_external_issuer_tokens_validate_against_its_cached_jwks(tmp_path):
    settings = _external_settings(tmp_path)
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    fake = FakeJwks(key)
    validator = TokenValidator.from_settings(settings, fetch_jwks=fake)
    token = _external_token(key, "k1", "ES256", settings)
    for _ in range(3):
        assert validator.validate(token)["sub"] == "u"
    assert fake.fetches == 1


def test_r01_jwks_is_refetched_on_unknown_kid_but_not_more_often_than_the_interval(tmp_path):
    settings = _external_settings(tmp_path)
    old = RSAKey.generate_key(2048, parameters={"kid": "old"})
    new = RSAKey.generate_key(2048, parameters={"kid": "new"})
    fake = FakeJwks(old)
    clock = [1000.0]
    validator = TokenValidator.from_settings(settings, fetch_jwks=fake)
    validator.jwks.clock = lambda: clock[0]
    assert validator.validate(_external_token(old, "old", "RS256", settings))
    fake.keys.append(new)  # the issuer rotates
    with pytest.raises(AuthenticationError, match="unknown key"):
        validator.validate(_external_token(new, "new", "RS256", settings))  # within the interval
    assert fake.fetches == 1
    clock[0] += 31
    assert validator.validate(_external_token(new, "new", "RS256", settings))["sub"] == "u"
    assert fake.fetches == 2
    clock[0] += 1
    with pytest.raises(AuthenticationError):
        validator.validate(_external_token(new, "random-kid", "RS256", settings))
    assert fake.fetches == 2


def test_r01_external_token_with_wrong_audience_is_refused(tmp_path):
    settings = _external_settings(tmp_path)
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    validator = TokenValidator.from_settings(settings, fetch_jwks=FakeJwks(key))
    with pytest.raises(AuthenticationError, match="audience"):
        validator.validate(_external_token(key, "k1", "ES256", settings, aud="https://other"))


def test_r01_issuer_without_jwks_url_is_a_configuration_error(tmp_path):
    with pytest.raises(ValueError, match="FHIR_AUTH_JWKS_URL"):
        TokenValidator.from_settings(AuthSettings(data_dir=tmp_path, issuer=EXTERNAL))


def test_settings_from_env_read_the_documented_names(tmp_path):
    settings = AuthSettings.from_env(
        {
            "FHIR_DATA_DIR": str(tmp_path),
            "FHIR_BASE_URL": "https://dmp.example/fhir",
            "FHIR_AUTH_ISSUER": EXTERNAL,
            "FHIR_AUTH_JWKS_URL": f"{EXTERNAL}/jwks",
            "FHIR_AUTH_AUDIENCE": "urn:aud",
        }
    )
    assert settings.data_dir == tmp_path
    assert settings.effective_audience == "urn:aud"
    assert settings.local_issuer == "https://dmp.example"
    assert settings.token_endpoint == "https://dmp.example/oauth/token"


def test_r01_token_verified_before_is_still_refused_once_expired(issuer, validator):
    """The verified-signature cache never extends a token's life: exp is checked each use."""
    clock = [time.time()]
    validator.clock = lambda: clock[0]
    token = issuer.issue(subject="1", scopes="patient/*.rs", lifetime_seconds=300, now=clock[0])
    assert validator.validate(token)["sub"] == "1"
    assert validator.validate(token)["sub"] == "1"  # served from the cache
    clock[0] += 300 + validator.leeway_seconds + 1
    with pytest.raises(AuthenticationError, match="expired"):
        validator.validate(token)


def test_r01_requester_of_a_verified_token_is_derived_once_and_expiry_still_checked(
    issuer, validator
):
    """What is derived from a verified token's claims (its Requester) is computed on first
    use only; an expired token is refused before the cached value is returned."""
    clock = [time.time()]
    validator.clock = lambda: clock[0]
    calls: list[str] = []

    def derive(claims):
        calls.append(claims["sub"])
        return ("requester", claims["sub"])

    token = issuer.issue(subject="7", scopes="patient/*.rs", lifetime_seconds=300, now=clock[0])
    assert validator.authenticated(token, derive) == ("requester", "7")
    assert validator.authenticated(token, derive) == ("requester", "7")
    assert calls == ["7"]
    validator.verified.clear()
    assert validator.authenticated(token, derive) == ("requester", "7")
    assert calls == ["7", "7"]
    clock[0] += 300 + validator.leeway_seconds + 1
    with pytest.raises(AuthenticationError, match="expired"):
        validator.authenticated(token, derive)


def test_r01_derived_values_leave_the_cache_with_their_token(issuer, settings):
    """A token pushed out of the bounded cache takes what was derived from it along."""
    validator = TokenValidator.from_settings(settings)
    validator.verified = type(validator.verified)(2)
    tokens = [issuer.issue(subject=str(n), scopes="patient/*.rs") for n in range(3)]
    for token in tokens:
        validator.authenticated(token, lambda claims: claims["sub"])
    assert validator.verified.derived(tokens[0], lambda claims: "recomputed") is None
    assert len(validator.verified._derived) == 2


def test_r01_tampered_copy_of_a_cached_token_is_refused(issuer, validator):
    """A cache hit needs the exact bytes of a verified token: a tampered copy is verified
    again, and fails."""
    token = issuer.issue(subject="1", scopes="patient/*.rs")
    validator.validate(token)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "system/*.cruds"
    with pytest.raises(AuthenticationError, match="signature"):
        validator.validate(f"{header}.{_b64(claims)}.{signature}")

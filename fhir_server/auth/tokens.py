"""Bearer tokens: issued by the local key, validated against it or a configured issuer (R01).

Tokens are RFC 9068 JWT access tokens (`typ: at+jwt`). The JOSE work goes through joserfc,
authlib's JOSE library: authlib 1.6+ deprecates `authlib.jose` in its favour and installs
it as a dependency, so this is authlib's own implementation, not a second one.

Validation is deliberately narrow: a fixed algorithm allow-list of asymmetric algorithms
(never `none`, never HS*: a shared-secret algorithm verified with a public key would let
anyone who knows the public key forge tokens), the issuer chosen before any key is looked
up, `aud` always checked, `exp` required. Every failure becomes an AuthenticationError whose
message is safe to show a client: it names what is wrong, never a key or a claim value the
server does not already publish.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from fhir_server.auth.keys import SigningKey, load_or_create_signing_key
from fhir_server.auth.scopes import ScopeError, ScopeSet

if TYPE_CHECKING:
    from fhir_server.config import Settings

Claims = dict[str, Any]

ALLOWED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
ACCESS_TOKEN_TYP = "at+jwt"
DEFAULT_LEEWAY_SECONDS = 30
DEFAULT_AUDIENCE = "fhir-server"
LOCAL_ISSUER_FALLBACK = "fhir-server"
MAX_TOKEN_BYTES = 16 * 1024


class AuthenticationError(Exception):
    """Credentials missing or not acceptable. `message` is safe to return to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def server_root(base_url: str | None) -> str | None:
    """The server's root URL from FHIR_BASE_URL, which names the FHIR base (…/fhir)."""
    if not base_url:
        return None
    root = base_url.rstrip("/")
    if root.endswith("/fhir"):
        root = root[: -len("/fhir")]
    return root


@dataclass(frozen=True)
class AuthSettings:
    """The auth part of the configuration (FHIR_DATA_DIR, FHIR_BASE_URL, FHIR_AUTH_*).

    With no FHIR_BASE_URL the local issuer and the audience fall back to fixed names, so
    that `fhir-server token` and `fhir-server serve` agree whatever host and port the server
    listens on; set FHIR_BASE_URL in production.
    """

    data_dir: Path
    base_url: str | None = None  # FHIR base, e.g. https://dmp.example/fhir
    issuer: str | None = None  # FHIR_AUTH_ISSUER: an external issuer also trusted
    jwks_url: str | None = None  # FHIR_AUTH_JWKS_URL: that issuer's keys
    audience: str | None = None  # FHIR_AUTH_AUDIENCE
    vihf_trusted_cert_files: tuple[Path, ...] = ()  # FHIR_XDS_TRUSTED_CERTIFICATES
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthSettings:
        """The auth part of the server's `config.Settings`: the one mapping from settings to
        auth, for `fhir-server serve` (the app factory) and `fhir-server token` alike."""
        return cls(
            data_dir=settings.data_dir,
            base_url=settings.base_url or None,
            issuer=settings.auth_issuer or None,
            jwks_url=settings.auth_jwks_url or None,
            audience=settings.auth_audience or None,
            vihf_trusted_cert_files=tuple(Path(p) for p in settings.xds_trusted_certificates),
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> AuthSettings:
        """The environment read by the server's loader (`config.load_settings`), `data_dir`
        overriding FHIR_DATA_DIR as the `--data-dir` flag does. It read its own names: the
        trusted VIHF certificates under FHIR_XDS_VIHF_TRUSTED_CERTS, which the server refuses
        as unknown while its FHIR_XDS_TRUSTED_CERTIFICATES was ignored here, and a mistyped
        FHIR_* variable (FHIR_BASE_URI) was ignored, a token minted for the default audience.
        Now one name per setting, and an unknown one is a `config.ConfigError` here too."""
        from fhir_server.config import load_settings

        flags = {"data_dir": Path(data_dir) if data_dir else None}
        return cls.from_settings(load_settings(flags, environ))

    def validate(self) -> None:
        """Raise ValueError naming the setting when the combination cannot work."""
        if bool(self.issuer) != bool(self.jwks_url):
            raise ValueError("FHIR_AUTH_ISSUER and FHIR_AUTH_JWKS_URL must be set together")
        for name, value in (
            ("FHIR_AUTH_JWKS_URL", self.jwks_url),
            ("FHIR_BASE_URL", self.base_url),
        ):
            if value and not value.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http(s) URL")

    @property
    def local_issuer(self) -> str:
        return server_root(self.base_url) or LOCAL_ISSUER_FALLBACK

    @property
    def effective_audience(self) -> str:
        return self.audience or (self.base_url.rstrip("/") if self.base_url else DEFAULT_AUDIENCE)

    @property
    def token_endpoint(self) -> str | None:
        root = server_root(self.base_url)
        return f"{root}/oauth/token" if root else None


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _DuplicateMember
    return dict(pairs)


def _no_duplicate_members(raw: bytes) -> None:
    """Refuse a JSON object naming a member twice, at any depth (RFC 7515 §4, RFC 7519 §4
    allow refusing it or reading the last): a header or claims set whose `fhirUser`, `alg`
    or `extensions` appears twice says two things, and which one a reader takes depends on
    its parser (fail closed)."""
    try:
        json.loads(raw, object_pairs_hook=_unique_members)
    except _DuplicateMember:
        raise AuthenticationError(
            "token header or claims name a member twice (RFC 7519 §4)"
        ) from None


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, not yet verified: only to choose a key."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthenticationError("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError("token is not a signed JWT")
    try:
        raw_header, raw_payload = _b64decode(parts[0]), _b64decode(parts[1])
        header = orjson.loads(raw_header)
        payload = orjson.loads(raw_payload)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise AuthenticationError("token is not a signed JWT") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise AuthenticationError("token is not a signed JWT")
    _no_duplicate_members(raw_header)
    _no_duplicate_members(raw_payload)
    return header, payload


@dataclass
class TokenIssuer:
    """Mints access tokens with the local key (for `fhir-server token` and /oauth/token)."""

    key: SigningKey
    issuer: str
    audience: str
    clock: Callable[[], float] = time.time

    def issue(
        self,
        *,
        subject: str,
        scopes: Iterable[str] | str,
        lifetime_seconds: int = 3600,
        fhir_user: str | None = None,
        client_id: str | None = None,
        patient: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        issued_at = int(self.clock() if now is None else now)
        scope = scopes if isinstance(scopes, str) else " ".join(scopes)
        claims: Claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "exp": issued_at + int(lifetime_seconds),
            "iat": issued_at,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "client_id": client_id or "fhir-server-cli",
        }
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if patient:
            claims["patient"] = patient
        if extensions:
            claims["extensions"] = dict(extensions)
        header = {"alg": self.key.alg, "kid": self.key.kid, "typ": ACCESS_TOKEN_TYP}
        return jws.serialize_compact(
            header, orjson.dumps(claims), self.key.key, algorithms=[self.key.alg]
        )


def fetch_jwks_over_http(url: str) -> dict[str, Any]:
    """GET a JWKS document (5 s timeout, 1 MiB at most)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - URL from settings
        return json.loads(response.read(1024 * 1024))


@dataclass
class JwksCache:
    """An issuer's keys, fetched lazily and refreshed on an unknown kid (at most every
    `min_refresh_seconds`, so that tokens with random kids cannot hammer the issuer) and
    when older than `max_age_seconds` (key rotation without restart)."""

    url: str
    fetch: Callable[[str], Mapping[str, Any]] = fetch_jwks_over_http
    min_refresh_seconds: float = 30.0
    max_age_seconds: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, Any] = field(default_factory=dict, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _refresh(self) -> None:
        self._fetched_at = self.clock()
        try:
            document = self.fetch(self.url)
            keyset = KeySet.import_key_set(dict(document))  # type: ignore[arg-type]
        except Exception:  # network, JSON or key errors: keep what we had
            return
        keys: dict[str, Any] = {}
        for key in keyset.keys:
            if key.get("use") not in (None, "sig") or key.key_type not in ("RSA", "EC"):
                continue
            keys[key.kid or ""] = key
        self._keys = keys

    def key_for(self, kid: str | None) -> Any | None:
        with self._lock:
            now = self.clock()
            if self._fetched_at is None or now - self._fetched_at >= self.max_age_seconds:
                self._refresh()
            key = self._lookup(kid)
            if key is None and now - (self._fetched_at or 0) >= self.min_refresh_seconds:
                self._refresh()
                key = self._lookup(kid)
            return key

    def _lookup(self, kid: str | None) -> Any | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None


# Tokens live at most a few minutes; a busy server sees a few thousand distinct ones meanwhile.
VERIFIED_TOKENS = 4096


class VerifiedTokens:
    """The claims of recently verified tokens, keyed by the token's SHA-256, least recently
    used dropped first. Verifying an RS256 signature costs ~0.1 ms a request; a hit costs a
    hash and a dictionary lookup."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._claims: OrderedDict[bytes, Claims] = OrderedDict()
        # What callers derive from a token's claims alone (its Requester), by the same key:
        # a pure function of claims that no longer change needs computing once.
        self._derived: dict[tuple[bytes, Callable], Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(bearer: str) -> bytes:
        return hashlib.sha256(bearer.encode("ascii", "replace")).digest()

    def get(self, bearer: str) -> Claims | None:
        key = self._key(bearer)
        with self._lock:
            claims = self._claims.get(key)
            if claims is not None:
                self._claims.move_to_end(key)
            return claims

    def derived(self, bearer: str, derive: Callable[[Claims], Any]) -> Any:
        """`derive(claims)` of a token in the cache, computed on its first call; None when the
        token is not (or no longer) in the cache."""
        key = self._key(bearer)
        with self._lock:
            claims = self._claims.get(key)
            if claims is None:
                return None
            value = self._derived.get((key, derive))
        if value is None:
            value = derive(claims)
            with self._lock:
                if key in self._claims:
                    self._derived[(key, derive)] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._claims.clear()
            self._derived.clear()

    def put(self, bearer: str, claims: Claims) -> None:
        key = self._key(bearer)
        with self._lock:
            self._claims[key] = claims
            self._claims.move_to_end(key)
            while len(self._claims) > self._capacity:
                dropped, _ = self._claims.popitem(last=False)
                for derived_key in [k for k in self._derived if k[0] == dropped]:
                    del self._derived[derived_key]


def _not_a_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float)


@dataclass
class TokenValidator:
    """Validates bearer tokens: local key first, then the configured external issuer."""

    local_key: SigningKey | None
    local_issuer: str
    audiences: frozenset[str]
    external_issuer: str | None = None
    jwks: JwksCache | None = None
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    clock: Callable[[], float] = time.time
    verified: VerifiedTokens = field(default_factory=lambda: VerifiedTokens(VERIFIED_TOKENS))

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        *,
        local_key: SigningKey | None = None,
        fetch_jwks: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> TokenValidator:
        settings.validate()
        jwks = None
        if settings.jwks_url:
            jwks = JwksCache(settings.jwks_url, fetch=fetch_jwks or fetch_jwks_over_http)
        return cls(
            local_key=local_key or load_or_create_signing_key(settings.data_dir),
            local_issuer=settings.local_issuer,
            audiences=frozenset({settings.effective_audience}),
            external_issuer=settings.issuer,
            jwks=jwks,
            leeway_seconds=settings.leeway_seconds,
        )

    def validate(self, bearer: str) -> Claims:
        """The verified claims of `bearer` (the token itself, without "Bearer ").

        A token whose signature was verified before is not verified again (the same bytes
        have the same signature); its time claims are checked on every use.
        """
        if not bearer:
            raise AuthenticationError("missing bearer token")
        known = self.verified.get(bearer)
        if known is not None:
            # Its signature and its other claims were checked when it was first verified,
            # and they cannot have changed since: only the clock has.
            self._check_times(known)
            return known
        header, payload = unverified_parts(bearer)
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthenticationError("token signing algorithm not accepted")
        if "crit" in header:
            raise AuthenticationError("token has unsupported critical header parameters")
        issuer = payload.get("iss")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            # RFC 7515 §4.1.4: a string. An array or an object was looked up in the JWKS
            # cache as a key and raised (a 500 instead of a 401).
            raise AuthenticationError("token header kid must be a string")
        local_key = self.local_key if issuer == self.local_issuer else None
        key: Key | None
        if local_key is not None and kid in (None, local_key.kid):
            if header.get("typ") != ACCESS_TOKEN_TYP:
                raise AuthenticationError("token is not an access token (typ at+jwt)")
            key = local_key.key
        elif self.jwks is not None and issuer == self.external_issuer:
            typ = str(header.get("typ", ACCESS_TOKEN_TYP)).lower()
            if typ not in (ACCESS_TOKEN_TYP, "application/at+jwt", "jwt"):
                raise AuthenticationError("token is not an access token")
            key = self.jwks.key_for(kid)
        elif local_key is not None:
            key = None
        else:
            raise AuthenticationError("token issuer not trusted")
        if key is None:
            raise AuthenticationError("token signed by an unknown key")
        try:
            jws.deserialize_compact(bearer, key, algorithms=[alg])
        except (JoseError, ValueError):
            raise AuthenticationError("token signature is invalid") from None
        self._check_claims(payload)
        self.verified.put(bearer, payload)
        return payload

    def authenticated(self, bearer: str, derive: Callable[[Claims], Any]) -> Any:
        """`derive(claims)` for a valid token: `validate`, with the result of `derive` (a pure
        function of the claims, such as the Requester they describe) computed once per
        verified token rather than once per request."""
        claims = self.validate(bearer)
        value = self.verified.derived(bearer, derive)
        return value if value is not None else derive(claims)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        self._check_times(claims)
        self._check_content(claims)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self.clock()
        leeway = self.leeway_seconds
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthenticationError("token has no expiry (exp)")
        if now > exp + leeway:
            raise AuthenticationError("token expired")
        # A boolean is no NumericDate (RFC 7519 §2), though Python counts it as an int.
        nbf = claims.get("nbf")
        if nbf is not None and (_not_a_number(nbf) or now + leeway < nbf):
            raise AuthenticationError("token not yet valid (nbf)")
        iat = claims.get("iat")
        if iat is not None and (_not_a_number(iat) or now + leeway < iat):
            raise AuthenticationError("token issued in the future (iat)")

    def _check_content(self, claims: Mapping[str, Any]) -> None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in self.audiences for a in audiences):
            raise AuthenticationError("token audience does not name this server")
        if not isinstance(claims.get("sub", ""), str) or not isinstance(
            claims.get("scope", ""), str
        ):
            raise AuthenticationError("token claims sub and scope must be strings")
        try:
            ScopeSet.parse(claims.get("scope", ""))
        except ScopeError as exc:
            raise AuthenticationError(f"token scope malformed: {exc}") from None

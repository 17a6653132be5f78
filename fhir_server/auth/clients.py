"""SMART Backend Services: registered clients and the client-credentials grant (RFC 7523).

A client authenticates with `private_key_jwt`: a JWT it signs with its own key, whose
public part was registered here (`fhir-server client add`). The registry is a JSON file in
the data dir, re-read when it changes so that a running server sees `client add/remove`
without a restart. An assertion's `jti` is remembered until the assertion expires in a
small SQLite table, so a replay is refused across restarts and across worker processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.auth.requester import organization_type
from fhir_server.auth.scopes import ScopeError, ScopeSet
from fhir_server.auth.tokens import (
    ALLOWED_ALGORITHMS,
    AuthenticationError,
    TokenIssuer,
    unverified_parts,
)

CLIENTS_FILE = "clients.json"
# The client id of the tokens `fhir-server token` mints (`TokenIssuer.issue`): a backend
# client registered under it would be confused with them, in its tokens and audit trail.
RESERVED_CLIENT_ID = "fhir-server-cli"
REPLAY_DB_FILE = "auth-replay.sqlite3"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes ahead
MAX_TOKEN_LIFETIME = 300
LEEWAY_SECONDS = 30


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    jwks: dict[str, Any]  # public keys only
    scope: str  # the scopes the client may be granted
    organization_type: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"jwks": self.jwks, "scope": self.scope}
        if self.organization_type:
            data["organization_type"] = self.organization_type
        if self.name:
            data["name"] = self.name
        return data

    @classmethod
    def from_json(cls, client_id: str, data: Mapping[str, Any]) -> RegisteredClient:
        return cls(
            client_id=client_id,
            jwks=dict(data["jwks"]),
            scope=str(data.get("scope", "")),
            organization_type=data.get("organization_type"),
            name=data.get("name"),
        )

    def keyset(self) -> KeySet:
        return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]


def client_id_error(client_id: str) -> str | None:
    """Why `client_id` cannot be registered, or None. RFC 6749 (A.1): visible ASCII and
    spaces; an empty id, or one with spaces around it (a shell quoting slip), names no one."""
    if not client_id.strip():
        return "empty"
    if client_id != client_id.strip():
        return "spaces around it"
    if any(not " " <= c <= "~" for c in client_id):
        return "characters outside visible ASCII (RFC 6749 A.1)"
    if client_id == RESERVED_CLIENT_ID:
        return "reserved for the tokens of `fhir-server token`"
    return None


def public_jwks_from_file(path: str | os.PathLike[str], *, pem: bool) -> dict[str, Any]:
    """A public JWKS from a JWKS JSON file or a PEM public key; private parts refused."""
    raw = Path(path).read_bytes()
    if pem:
        from joserfc.jwk import Key, import_key

        key: Key
        try:
            key = import_key(raw, "RSA")
        except (JoseError, ValueError):
            key = import_key(raw, "EC")
        if key.is_private:
            raise ValueError("give the public key, not the private key")
        jwk = key.as_dict(private=False)
        jwk["kid"] = key.thumbprint()
        return {"keys": [jwk]}
    document = json.loads(raw)
    if "keys" not in document:
        document = {"keys": [document]}
    keyset = KeySet.import_key_set(document)
    if any(k.is_private for k in keyset.keys):
        raise ValueError("the JWKS holds private key material; register public keys only")
    keys = []
    for key in keyset.keys:
        jwk = key.as_dict(private=False)
        jwk["kid"] = key.kid or key.thumbprint()
        keys.append(jwk)
    return {"keys": keys}


@dataclass
class ClientRegistry:
    """The registered backend clients, in `<data_dir>/clients.json`."""

    path: Path
    _clients: dict[str, RegisteredClient] = field(default_factory=dict, init=False)
    _version: tuple[int, int, int] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> ClientRegistry:
        return cls(Path(data_dir) / CLIENTS_FILE)

    def _reload(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._clients, self._version = {}, None
            return
        # The writer replaces the file, so inode and size change even within one mtime tick.
        version = (info.st_ino, info.st_mtime_ns, info.st_size)
        if version == self._version:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._clients = {
                cid: RegisteredClient.from_json(cid, entry)
                for cid, entry in data.get("clients", {}).items()
            }
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            # A file edited by hand or cut short: named, rather than a traceback (or read
            # as no clients, which a `client add` would then write back over the others).
            raise ValueError(f"{self.path}: not a client registry ({exc!r})") from None
        self._version = version

    def get(self, client_id: str) -> RegisteredClient | None:
        with self._lock:
            self._reload()
            return self._clients.get(client_id)

    def list(self) -> list[RegisteredClient]:
        with self._lock:
            self._reload()
            return sorted(self._clients.values(), key=lambda c: c.client_id)

    def add(self, client: RegisteredClient) -> None:
        problem = client_id_error(client.client_id)
        if problem:
            raise ValueError(f"client id {client.client_id!r}: {problem}")
        ScopeSet.parse(client.scope)  # refuse a malformed registration now, not at use
        try:  # and an organization type its tokens would be refused for
            organization_type(client.organization_type)
        except AuthenticationError as exc:
            raise ValueError(exc.message) from None
        client.keyset()
        with self._lock:
            self._reload()
            self._clients[client.client_id] = client
            self._write()

    def remove(self, client_id: str) -> bool:
        with self._lock:
            self._reload()
            if self._clients.pop(client_id, None) is None:
                return False
            self._write()
            return True

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"clients": {cid: c.to_json() for cid, c in sorted(self._clients.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".clients-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._version = None


@dataclass
class ReplayStore:
    """Assertion ids already used, per client, until the assertion expires (RFC 7523 §3 7.)."""

    path: Path

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> ReplayStore:
        return cls(Path(data_dir) / REPLAY_DB_FILE)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS used_assertion ("
            " client_id TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL NOT NULL,"
            " PRIMARY KEY (client_id, jti))"
        )
        return connection

    def remember(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a use of `jti`; False if it was already used and has not expired."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM used_assertion WHERE expires_at < ?", (now,))
            try:
                connection.execute(
                    "INSERT INTO used_assertion (client_id, jti, expires_at) VALUES (?, ?, ?)",
                    (client_id, jti, expires_at),
                )
            except sqlite3.IntegrityError:
                connection.execute("ROLLBACK")
                return False
            connection.execute("COMMIT")
            return True
        finally:
            connection.close()


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OAuthError("invalid_client", f"client assertion claim {name} must be a number", 401)
    return float(value)


def verify_client_assertion(
    assertion: str,
    registry: ClientRegistry,
    replay_store: ReplayStore,
    token_endpoint: str,
    now: float,
) -> RegisteredClient:
    """The client a private_key_jwt assertion authenticates (RFC 7523 §3, SMART Backend
    Services); OAuthError invalid_client (401) otherwise."""
    try:
        header, claims = unverified_parts(assertion)
    except AuthenticationError:
        raise OAuthError("invalid_client", "client_assertion is not a signed JWT", 401) from None
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or claims.get("sub") != client_id:
        raise OAuthError(
            "invalid_client", "client assertion iss and sub must both be the client_id", 401
        )
    client = registry.get(client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown client", 401)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise OAuthError("invalid_client", "client assertion algorithm not accepted", 401)
    try:
        keyset = client.keyset()
        kid = header.get("kid")
        if kid is not None:
            key = keyset.get_by_kid(kid)
        elif len(keyset.keys) == 1:
            key = keyset.keys[0]
        else:
            raise OAuthError("invalid_client", "client assertion needs a kid", 401)
        jws.deserialize_compact(assertion, key, algorithms=[alg])
    except OAuthError:
        raise
    except (JoseError, ValueError, KeyError):
        raise OAuthError("invalid_client", "client assertion signature is invalid", 401) from None
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if token_endpoint not in audiences:
        raise OAuthError(
            "invalid_client", "client assertion aud must be the token endpoint URL", 401
        )
    exp = _number(claims, "exp")
    if exp is None:
        raise OAuthError("invalid_client", "client assertion has no exp", 401)
    if now > exp + LEEWAY_SECONDS:
        raise OAuthError("invalid_client", "client assertion expired", 401)
    if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY_SECONDS:
        raise OAuthError("invalid_client", "client assertion exp is more than 5 minutes ahead", 401)
    nbf = _number(claims, "nbf")
    if nbf is not None and now + LEEWAY_SECONDS < nbf:
        raise OAuthError("invalid_client", "client assertion not yet valid", 401)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise OAuthError("invalid_client", "client assertion has no jti", 401)
    if not replay_store.remember(client_id, jti, exp + LEEWAY_SECONDS, now):
        raise OAuthError("invalid_client", "client assertion jti already used", 401)
    return client


def issue_client_token(
    form: Mapping[str, str],
    registry: ClientRegistry,
    replay_store: ReplayStore,
    token_issuer: TokenIssuer,
    now: float | None = None,
    *,
    token_endpoint: str,
) -> dict[str, Any]:
    """The /oauth/token response body for a client-credentials request; OAuthError otherwise.

    `token_endpoint` is this endpoint's public URL, which the assertion's aud must name.
    """
    now = time.time() if now is None else now
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    if form.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError(
            "invalid_client", f"client_assertion_type must be {JWT_BEARER} (private_key_jwt)", 401
        )
    assertion = form.get("client_assertion")
    if not assertion:
        raise OAuthError("invalid_client", "client_assertion is required", 401)
    client = verify_client_assertion(assertion, registry, replay_store, token_endpoint, now)
    if form.get("client_id") not in (None, "", client.client_id):
        raise OAuthError("invalid_client", "client_id does not match the client assertion", 401)
    registered = ScopeSet.parse(client.scope)
    try:
        requested = ScopeSet.parse(form["scope"]) if form.get("scope") else registered
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    granted = requested.intersect(registered)
    if not granted.resource_scopes:
        raise OAuthError("invalid_scope", "none of the requested scopes is granted to this client")
    extensions = (
        {"dmp": {"organization_type": client.organization_type}}
        if client.organization_type
        else None
    )
    scope = str(granted)
    token = token_issuer.issue(
        subject=client.client_id,
        scopes=scope,
        lifetime_seconds=MAX_TOKEN_LIFETIME,
        client_id=client.client_id,
        extensions=extensions,
        now=now,
    )
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": MAX_TOKEN_LIFETIME,
        "scope": scope,
    }

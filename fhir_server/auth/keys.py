"""The server's own token-signing key, kept in the data dir.

RS256 (RSA 2048, PKCS#1 v1.5 with SHA-256) rather than ES256: every request verifies a token
and only token issuance signs one, and RSA verification is the cheaper of the two (about
70 µs against 180 µs for ES256 through joserfc on this machine); RS256 is also the one JWS
algorithm every resource server and JWT library accepts. Signing (about 0.5 ms) happens once
per token.

The key is created on first start and loaded afterwards. Several workers may start at once:
the key is written to a private temporary file and hard-linked into place, so exactly one
key wins and every worker loads that one. Key material is never logged or put in messages.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from joserfc.jwk import KeySet, KeySetSerialization, RSAKey

from fhir_server.config import ConfigError

TOKEN_KEY_FILE = "token-signing-key.pem"
TOKEN_ALG = "RS256"
RSA_BITS = 2048


def keys_dir(data_dir: str | os.PathLike[str]) -> Path:
    """`<data_dir>/keys`, created owner-only (0700) if missing."""
    path = Path(data_dir) / "keys"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private_file(path: Path, content: bytes) -> bool:
    """Write `content` to `path` with mode 0600 unless the file already exists.

    Returns True when this call created the file. The content is complete before the name
    appears (temporary file + link), so a concurrent reader never sees a partial key.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class KeyFileError(ConfigError, ValueError):
    """A key file the server will not use; the message names the file, never its content."""


def read_private_file(path: Path) -> bytes:
    """The content of the private file `path`, refused (KeyFileError) when its mode lets
    anyone but its owner read or write it: a key others could read may already be theirs,
    and one they could write may be theirs next. Fail closed, as ssh does with its keys."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: a private key others may read or write (mode {mode:04o}); "
            f"`chmod 600 {path}` (and replace the key if others could read it)"
        )
    return path.read_bytes()


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its key id (RFC 7638 thumbprint) and algorithm."""

    key: RSAKey
    kid: str
    alg: str = TOKEN_ALG

    def __repr__(self) -> str:  # never show key material, even in tracebacks
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"

    def public_jwk(self) -> dict[str, Any]:
        jwk = self.key.as_dict(private=False)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk

    def public_jwks(self) -> KeySetSerialization:
        """The JWKS document served at /oauth/jwks."""
        return {"keys": [self.public_jwk()]}

    def verification_keys(self) -> KeySet:
        return KeySet.import_key_set(self.public_jwks())


@functools.lru_cache(maxsize=16)
def private_key_from_pem(pem: bytes) -> PrivateKeyTypes:
    """The private key a PEM file holds. Loading one checks the key's consistency, about
    50 ms for RSA 2048 on this kind of machine: a process that opens the same data dir more
    than once (the command-line tools, the tests, each app a test makes) parses the same bytes
    once. Keys are values: nothing changes one once loaded."""
    return serialization.load_pem_private_key(pem, password=None)


def load_or_create_signing_key(data_dir: str | os.PathLike[str]) -> SigningKey:
    """The data dir's token-signing key, created on first use."""
    path = keys_dir(data_dir) / TOKEN_KEY_FILE
    if not path.exists():
        fresh = RSAKey.generate_key(RSA_BITS, private=True)
        write_private_file(path, fresh.as_pem(private=True))
    pem = read_private_file(path)
    try:
        loaded = private_key_from_pem(pem)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} does not hold a private key") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} does not hold an RSA private key")
    key = RSAKey.import_key(loaded)
    return SigningKey(key=key, kid=key.thumbprint())

"""Cost of validating one bearer token with the keys already loaded (target: <= 300 µs).

    python benchmarks/bench_token.py [--n 5000]

Measures TokenValidator.validate for a local-key token (RS256) and for a token of an
external issuer whose JWKS is cached (ES256 and RS256), in microseconds per validation: on
a token's first use (its signature verified) and on its later requests (the verified-token
cache answers; the time claims are still checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from fhir_server.auth.tokens import (
    AuthSettings,
    TokenIssuer,
    TokenValidator,
    load_or_create_signing_key,
)

EXTERNAL = "https://idp.example"


def per_call_us(fn, n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def first_use_us(validator: TokenValidator, token: str, n: int) -> float:
    """Per validation with the verified-token cache emptied before each one."""

    def first() -> None:
        validator.verified.clear()
        validator.validate(token)

    return per_call_us(first, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        external = {"ES256": ECKey.generate_key("P-256"), "RS256": RSAKey.generate_key(2048)}
        jwks = {"keys": [k.as_dict(private=False, kid=alg) for alg, k in external.items()]}
        settings = AuthSettings(data_dir=Path(tmp), issuer=EXTERNAL, jwks_url=f"{EXTERNAL}/jwks")
        validator = TokenValidator.from_settings(settings, fetch_jwks=lambda url: jwks)
        key = load_or_create_signing_key(tmp)
        issuer = TokenIssuer(key, settings.local_issuer, settings.effective_audience)
        extensions = {
            "ihe_iua": {
                "national_provider_identifier": "810000000001",
                "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
            }
        }
        local = issuer.issue(subject="810000000001", scopes="user/*.cruds", extensions=extensions)
        print(
            f"local RS256     {first_use_us(validator, local, args.n):8.1f} µs/validation (first use),"
            f" {per_call_us(lambda: validator.validate(local), args.n):.1f} µs (later requests)"
        )
        now = int(time.time())
        for alg, k in external.items():
            claims = {
                "iss": EXTERNAL,
                "sub": "x",
                "aud": settings.effective_audience,
                "exp": now + 3600,
                "iat": now,
                "scope": "user/*.rs",
                "extensions": extensions,
            }
            import orjson

            token = jws.serialize_compact(
                {"alg": alg, "kid": alg, "typ": "at+jwt"}, orjson.dumps(claims), k, algorithms=[alg]
            )
            first = first_use_us(validator, token, args.n)
            later = per_call_us(lambda t=token: validator.validate(t), args.n)
            print(
                f"external {alg}  {first:8.1f} µs/validation (first use, JWKS cached),"
                f" {later:.1f} µs (later requests)"
            )


if __name__ == "__main__":
    main()

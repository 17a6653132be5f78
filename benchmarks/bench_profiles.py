"""How much the DMP profiles add to a DocumentReference write: µs per check.

Run: python benchmarks/bench_profiles.py [iterations]. Not a test; prints numbers to compare with
the model's structural validation (about 400 µs, docs/architecture.md "Reading the hot path").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fhir_server.resources.model import validate_resource
from fhir_server.resources.profiles import ProfileRegistry

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/external/pdsm4dmp/DocumentReference-doc-x-id.json"


def per_call_us(fn, iterations: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    start = time.perf_counter()
    registry = ProfileRegistry.load(ROOT / "profiles")
    load_ms = (time.perf_counter() - start) * 1000
    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    document["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b0f3e4e-7f3a-4c1e-9a55-2f8f3c9a1b2d"}
    ]
    assert registry.validate(document, deposit=True) == []
    broken = dict(document, securityLabel=[], category=[{"coding": [{"code": "x"}]}])
    profiles_us = per_call_us(lambda: registry.validate(document, deposit=True), iterations)
    broken_us = per_call_us(lambda: registry.validate(broken, deposit=True), iterations)
    model_us = per_call_us(lambda: validate_resource(document), max(1, iterations // 20))
    print(f"registry load: {load_ms:.1f} ms")
    print(f"DocumentReference, DMP profile, valid:   {profiles_us:6.1f} µs per check")
    print(f"DocumentReference, DMP profile, 2 errors: {broken_us:6.1f} µs per check")
    print(f"DocumentReference, fhir.resources model: {model_us:6.1f} µs per check (for scale)")


if __name__ == "__main__":
    main()

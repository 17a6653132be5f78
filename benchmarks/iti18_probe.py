"""ITI-18 FindDocuments alone, on an existing (already copied) 1M data dir: HTTP and in-process.

    python -m benchmarks.iti18_probe http DIR [--count 300]
    python -m benchmarks.iti18_probe cpu DIR [--rounds 5] [--count 40] [--profile OUT]

`fhir-server bench xds --data-dir` copies the 16 GB corpus before every run; this probe runs
its section 2 (the same envelopes, `_queries` client, server shape) against a data dir the
caller copied once, so that a change can be measured several times. It writes AuditEvents
into DIR: never point it at the reference corpus.

`cpu` calls the Flask app in this process (test client: the whole /xds/registry path, VIHF
check to SOAP answer, audit commit included, without gunicorn and the socket) and reports the
CPU time of the calling thread per query, best of `--rounds` rounds (a figure the other
processes sharing the machine barely move, unlike latency), and the p50/p95 of the queries'
wall times over all rounds (the audit commit and the journal mover of this process
included, as in one gunicorn worker).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import time
from pathlib import Path

from benchmarks.bench_xds import _corpus_nirs, _queries, find_documents_envelope, security
from benchmarks.harness import percentile, running_server
from fhir_server.auth.vihf import load_or_create_structure_credential
from fhir_server.config import load_settings
from fhir_server.rest.app import auth_settings

RETURN_TYPES = ("LeafClass", "ObjectRef")


def envelopes(data_dir: Path, count: int) -> dict[str, list[bytes]]:
    """The bench's envelopes (same patients, bris de glace VIHF) for each return type."""
    nirs, _ = _corpus_nirs(data_dir, count)
    credential = load_or_create_structure_credential(data_dir)
    audience = auth_settings(load_settings({"data_dir": data_dir}, environ={})).effective_audience
    headers = {n: security(credential, audience, n, "bris_de_glace") for n in set(nirs)}
    return {rt: [find_documents_envelope(n, headers[n], rt) for n in nirs] for rt in RETURN_TYPES}


def http(data_dir: Path, count: int) -> dict:
    bodies = envelopes(data_dir, count)
    with running_server(data_dir, workers=2) as server:
        return {rt: _queries(server.port, bodies[rt]) for rt in RETURN_TYPES}


def cpu(
    data_dir: Path,
    rounds: int,
    count: int,
    profile: str | None,
    return_types: tuple[str, ...] = RETURN_TYPES,
) -> dict:
    from fhir_server.rest.app import create_app

    bodies = envelopes(data_dir, count)
    app = create_app(load_settings({"data_dir": data_dir}, environ={}))
    client = app.test_client()
    headers = {"Content-Type": "application/soap+xml; charset=UTF-8"}

    def post(body: bytes) -> bool:
        """True for an answer, False for a consent refusal (the bench counts those apart)."""
        answer = client.post("/xds/registry", data=body, headers=headers).data
        if b"ResponseStatusType:Success" in answer:
            return True
        if b"LocalPolicyRestrictionError" in answer:
            return False
        raise SystemExit(f"query failed: {answer[-1500:]!r}")

    # Warm-up (caches, lazily built schemas), keeping the queries that get an answer.
    bodies = {rt: [b for b in bodies[rt] if post(b)] for rt in return_types}
    result = {}
    for rt in return_types:
        best_cpu = float("inf")
        walls: list[float] = []
        for _ in range(rounds):
            cpu_started = time.thread_time()
            for body in bodies[rt]:
                wall_started = time.perf_counter()
                post(body)
                walls.append((time.perf_counter() - wall_started) * 1000)
            best_cpu = min(best_cpu, (time.thread_time() - cpu_started) / len(bodies[rt]))
        result[rt] = {
            "cpu_ms": round(best_cpu * 1000, 2),
            "wall_p50_ms": round(percentile(walls, 0.50), 1),
            "wall_p95_ms": round(percentile(walls, 0.95), 1),
        }
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for body in bodies["LeafClass"]:
            post(body)
        profiler.disable()
        profiler.dump_stats(profile)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("http", "cpu"))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile")
    args = parser.parse_args()
    if args.mode == "http":
        print(json.dumps(http(args.data_dir, args.count or 300), indent=1))
    else:
        print(json.dumps(cpu(args.data_dir, args.rounds, args.count or 40, args.profile), indent=1))


if __name__ == "__main__":
    main()

"""Foundation benchmarks (issue: server foundation): read vs bare, durable creates, transactions.

    fhir-server bench foundation [--seconds 10]

The read is compared with a bare endpoint of the same app returning the same bytes, on the
same gunicorn server in the same run (`benchmarks/wsgi.py`), twice: with the audit sink off
(the REST read this issue is about: bearer token, scopes, DMP rules, store read, response),
and as deployed, with the AuditEvent each read writes before its answer. The issues set the
two budgets apart: the REST read at >= 0.5 of bare here, the audit at >= 0.7 of the
unaudited read in `fhir-server bench audit`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.datagen import make_patient, nir
from benchmarks.harness import (
    WRK_CONNECTIONS,
    WrkResult,
    median,
    request,
    running_server,
    table,
    temporary_data_dir,
    wrk,
)
from benchmarks.tokens import health_insurer_token, seeded_patient


def run(args: argparse.Namespace) -> str:
    with temporary_data_dir() as data_dir:
        admin = health_insurer_token(data_dir)
        # The REST read: token, scopes and DMP rules, the audit sink off (its cost is the
        # audit benchmark's ratio); then the read as deployed, audited, on the same data.
        with _server(data_dir, args, "benchmarks.wsgi:unaudited_app") as server:
            patient_id, reader = seeded_patient(server.port, data_dir)
            rest_read, rest_bare = _read_and_bare(server.port, patient_id, reader, args.seconds)
        with _server(data_dir, args, "benchmarks.wsgi:app") as server:
            audited_read, audited_bare = _read_and_bare(
                server.port, patient_id, reader, args.seconds
            )
            creates = _creates(server.port, admin, args.seconds)
            transaction_seconds = _transactions(server.port, admin, repeats=5)
    rows = [
        _row("read `GET /fhir/Patient/{id}`, audit sink off", rest_read),
        _row("bare endpoint, same bytes, same server", rest_bare),
        _row("read `GET /fhir/Patient/{id}`, audited", audited_read),
        _row("bare endpoint, same bytes, same server", audited_bare),
    ]
    ratio = rest_read.requests_per_second / rest_bare.requests_per_second
    audited_ratio = audited_read.requests_per_second / audited_bare.requests_per_second
    return "\n".join(
        [
            table(rows, ("endpoint", "throughput", "p50 ms", "p99 ms", "errors")),
            "",
            f"read / bare throughput ratio, audit sink off: **{ratio:.2f}** (target >= 0.5)",
            f"read / bare throughput ratio, audited: **{audited_ratio:.2f}** "
            "(the audit's own cost: `fhir-server bench audit`)",
            f"single creates (`POST /fhir/Patient`, SQLite, synchronous=FULL, {WRK_CONNECTIONS} connections): **{creates.requests_per_second:,.0f}/s**, p50 {creates.p50_ms:.1f} ms (target >= 300/s)",
            f"100-entry transaction Bundle: median **{transaction_seconds * 1000:.0f} ms** over 5 runs (target < 500 ms)",
        ]
    )


def _server(data_dir, args: argparse.Namespace, app: str):
    return running_server(
        data_dir, workers=args.workers, threads=args.threads, app=app, clients=WRK_CONNECTIONS
    )


def _read_and_bare(port: int, patient_id: str, reader: str, seconds: int) -> tuple:
    base = f"http://127.0.0.1:{port}"
    read = wrk(f"{base}/fhir/Patient/{patient_id}", token=reader, seconds=seconds)
    bare = wrk(f"{base}/bench/bare/Patient/{patient_id}", seconds=seconds)
    return read, bare


def _row(label: str, result: WrkResult) -> tuple:
    return (
        label,
        f"{result.requests_per_second:,.0f}/s",
        f"{result.p50_ms:.2f}",
        f"{result.p99_ms:.2f}",
        result.errors,
    )


CREATE_SCRIPT = Path(__file__).with_name("create_patients.lua")


def _creates(port: int, admin: str, seconds: int) -> WrkResult:
    """Single creates, `POST /fhir/Patient`, a different valid Patient each (wrk, as many
    connections as the read load).

    wrk rather than Python clients: they spent about 0.7 ms of CPU per create on the same
    two cores as the server (a seventh of what the server spends), and so measured the
    load generator along with the server.
    """
    result = wrk(
        f"http://127.0.0.1:{port}/fhir/Patient", token=admin, seconds=seconds, script=CREATE_SCRIPT
    )
    if result.errors:
        raise SystemExit(f"{result.errors} creates failed")
    return result


def _transactions(port: int, admin: str, repeats: int) -> float:
    timings = []
    for run_number in range(repeats):
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": make_patient(100_000 + run_number * 100 + n),
                    "request": {"method": "POST", "url": "Patient"},
                }
                for n in range(100)
            ],
        }
        started = time.perf_counter()
        status, body, _ = request(port, "POST", "/fhir", bundle, admin)
        timings.append(time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"transaction failed: {status} {body[:300]!r}")
    return median(timings)


__all__ = ["run", "WrkResult", "nir"]

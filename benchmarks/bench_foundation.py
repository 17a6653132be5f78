"""Foundation benchmarks (issue: server foundation): read vs bare, durable creates, transactions.

fhir-server bench foundation [--seconds 10]
"""

from __future__ import annotations

import argparse
import threading
import time

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
        with running_server(
            data_dir,
            workers=args.workers,
            threads=args.threads,
            app="benchmarks.wsgi:app",
            clients=WRK_CONNECTIONS,
        ) as server:
            patient_id, reader = seeded_patient(server.port, data_dir)
            real = wrk(f"{server.base}/Patient/{patient_id}", token=reader, seconds=args.seconds)
            bare = wrk(
                f"http://127.0.0.1:{server.port}/bench/bare/Patient/{patient_id}",
                seconds=args.seconds,
            )
            creates = _creates(server.port, admin, args.creates)
            transaction_seconds = _transactions(server.port, admin, repeats=5)
    rows = [
        (
            "read `GET /fhir/Patient/{id}`",
            f"{real.requests_per_second:,.0f}/s",
            f"{real.p50_ms:.2f}",
            f"{real.p99_ms:.2f}",
            real.errors,
        ),
        (
            "bare endpoint, same bytes",
            f"{bare.requests_per_second:,.0f}/s",
            f"{bare.p50_ms:.2f}",
            f"{bare.p99_ms:.2f}",
            bare.errors,
        ),
    ]
    ratio = real.requests_per_second / bare.requests_per_second
    return "\n".join(
        [
            table(rows, ("endpoint", "throughput", "p50 ms", "p99 ms", "errors")),
            "",
            f"read / bare throughput ratio: **{ratio:.2f}** (target >= 0.5)",
            f"single creates (`POST /fhir/Patient`, SQLite, synchronous=FULL, {CREATE_CLIENTS} clients): **{creates:,.0f}/s** (target >= 300/s)",
            f"100-entry transaction Bundle: median **{transaction_seconds * 1000:.0f} ms** over 5 runs (target < 500 ms)",
        ]
    )


CREATE_CLIENTS = WRK_CONNECTIONS  # as many connections as the wrk read load


def _creates(port: int, admin: str, total: int) -> float:
    clients = CREATE_CLIENTS
    per_client = total // clients
    failures: list[int] = []

    def work(offset: int) -> None:
        for n in range(per_client):
            status, _, _ = request(
                port,
                "POST",
                "/fhir/Patient",
                make_patient(offset * per_client + n + 1),
                admin,
                {"Prefer": "return=minimal"},
            )
            if status != 201:
                failures.append(status)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} creates failed: {failures[:5]}")
    return clients * per_client / elapsed


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

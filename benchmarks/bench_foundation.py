"""Foundation benchmarks (issue: server foundation): read vs bare, durable creates, transactions.

    fhir-server bench foundation [--seconds 10] [--rounds 3]

The read is compared with a bare endpoint of the same app returning the same bytes, on the
same gunicorn server (`benchmarks/wsgi.py`), twice: with the audit sink off (the REST read
this issue is about: bearer token, scopes, DMP rules, store read, response), and as
deployed, with the AuditEvent each read writes before its answer. Both servers are up at
once and the four loads are taken in turn, round after round (`harness.alternated`): each
ratio is a round's, and the report gives their median and every round's. The issues set the
two budgets apart: the REST read at >= 0.5 of bare here, the audit at >= 0.7 of the
unaudited read in `fhir-server bench audit`. Creates and the transaction Bundle are then
measured on the audited server.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.datagen import make_patient, nir
from benchmarks.harness import (
    WRK_CONNECTIONS,
    WrkResult,
    alternated,
    app_server,
    median,
    ratios,
    request,
    spread,
    table,
    temporary_data_dir,
    throughput_row,
    wrk,
    wrk_load,
)
from benchmarks.tokens import health_insurer_token, seeded_patient


def run(args: argparse.Namespace) -> str:
    with temporary_data_dir() as data_dir:
        admin = health_insurer_token(data_dir)
        with (
            app_server(data_dir, args, "benchmarks.wsgi:unaudited_app") as unaudited_server,
            app_server(data_dir, args, "benchmarks.wsgi:app") as audited_server,
        ):
            patient_id, reader = seeded_patient(unaudited_server.port, data_dir)

            read_path = f"/fhir/Patient/{patient_id}"
            bare_path = f"/bench/bare/Patient/{patient_id}"
            results = alternated(
                {
                    "rest read": wrk_load(
                        unaudited_server, read_path, token=reader, seconds=args.seconds
                    ),
                    "rest bare": wrk_load(
                        unaudited_server, bare_path, token=None, seconds=args.seconds
                    ),
                    "audited read": wrk_load(
                        audited_server, read_path, token=reader, seconds=args.seconds
                    ),
                    "audited bare": wrk_load(
                        audited_server, bare_path, token=None, seconds=args.seconds
                    ),
                },
                args.rounds,
            )
            creates = _creates(audited_server.port, admin, args.seconds)
            transaction_seconds = _transactions(audited_server.port, admin, repeats=5)
    rows = [
        throughput_row("read `GET /fhir/Patient/{id}`, audit sink off", results["rest read"]),
        throughput_row("bare endpoint, same bytes, same server", results["rest bare"]),
        throughput_row("read `GET /fhir/Patient/{id}`, audited", results["audited read"]),
        throughput_row("bare endpoint, same bytes, same server", results["audited bare"]),
    ]
    ratio = spread(ratios(results["rest read"], results["rest bare"]))
    audited_ratio = spread(ratios(results["audited read"], results["audited bare"]))
    return "\n".join(
        [
            table(rows, ("endpoint", "throughput", "p50 ms", "p99 ms", "errors")),
            "",
            f"Rounds: {args.rounds} of {args.seconds} s each; the median round is shown.",
            "",
            f"read / bare throughput ratio, audit sink off: {ratio} (target >= 0.5)",
            f"read / bare throughput ratio, audited: {audited_ratio} "
            "(the audit's own cost: `fhir-server bench audit`)",
            f"single creates (`POST /fhir/Patient`, SQLite, synchronous=FULL, {WRK_CONNECTIONS} connections): **{creates.requests_per_second:,.0f}/s**, p50 {creates.p50_ms:.1f} ms (target >= 300/s)",
            f"100-entry transaction Bundle: median **{transaction_seconds * 1000:.0f} ms** over 5 runs (target < 500 ms)",
        ]
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

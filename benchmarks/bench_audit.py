"""Audit cost (issue 5): read throughput with auditing vs the same reads with the audit sink off.

    fhir-server bench audit [--seconds 10] [--rounds 3] [--workers 2] [--threads 8]

Two servers on the same data, both up at once: the real app (every read writes its BALP
AuditEvent, durably, through the group commit) and the same app with the audit sink
disabled (`AuditTrail.enabled = False`: events are built, then dropped). Same gunicorn
settings, same token, same wrk load, taken in turn round after round (`harness.alternated`):
the ratio is each round's, and the report gives their median and every round's. Target:
audited / unaudited >= 0.7.

The unaudited server is `benchmarks.wsgi:unaudited_app`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import (
    WRK_CONNECTIONS,
    Server,
    WrkResult,
    alternated,
    ratios,
    request,
    running_server,
    spread,
    table,
    temporary_data_dir,
    throughput_row,
    wrk,
)
from benchmarks.tokens import seeded_patient

TARGET = 0.7


def run(args: argparse.Namespace) -> str:
    with (
        temporary_data_dir() as data_dir,
        _server(data_dir, args, "benchmarks.wsgi:app") as audited_server,
        _server(data_dir, args, "benchmarks.wsgi:unaudited_app") as unaudited_server,
    ):
        patient_id, reader = seeded_patient(audited_server.port, data_dir)
        url_path = f"/fhir/Patient/{patient_id}"
        assert request(unaudited_server.port, "GET", url_path, token=reader)[0] == 200

        def reads(server: Server) -> Callable[[], WrkResult]:
            url = f"http://127.0.0.1:{server.port}{url_path}"
            return lambda: wrk(url, token=reader, seconds=args.seconds)

        results = alternated(
            {"audited": reads(audited_server), "unaudited": reads(unaudited_server)},
            args.rounds,
        )
    rows = [
        throughput_row("read, audited (AuditEvent per read)", results["audited"]),
        throughput_row("read, audit sink disabled", results["unaudited"]),
    ]
    headers = ("`GET /fhir/Patient/{id}` (patient token)", "throughput", "p50 ms", "p99 ms")
    return "\n".join(
        [
            table(rows, (*headers, "errors")),
            "",
            f"Rounds: {args.rounds} of {args.seconds} s each; the median round is shown.",
            "",
            "audited / unaudited read throughput: "
            f"{spread(ratios(results['audited'], results['unaudited']))} (target >= {TARGET})",
        ]
    )


def _server(data_dir: Path, args: argparse.Namespace, app: str):
    return running_server(
        data_dir, workers=args.workers, threads=args.threads, app=app, clients=WRK_CONNECTIONS
    )

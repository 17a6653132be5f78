"""Audit cost (issue 5): read throughput with auditing vs the same reads with the audit sink off.

    fhir-server bench audit [--seconds 10] [--workers 2] [--threads 4]

Two servers on the same data, one after the other in the same run: the real app (every read
writes its BALP AuditEvent, durably, through the group commit) and the same app with the
audit sink disabled (`AuditTrail.enabled = False`: events are built, then dropped). Same
gunicorn settings, same token, same wrk load. Target: audited / unaudited >= 0.7.

The unaudited server is `benchmarks.wsgi:unaudited_app`.
"""

from __future__ import annotations

import argparse

from benchmarks.harness import (
    WRK_CONNECTIONS,
    request,
    running_server,
    table,
    temporary_data_dir,
    wrk,
)
from benchmarks.tokens import seeded_patient

TARGET = 0.7


def run(args: argparse.Namespace) -> str:
    with temporary_data_dir() as data_dir:
        with running_server(
            data_dir,
            workers=args.workers,
            threads=args.threads,
            app="benchmarks.wsgi:app",
            clients=WRK_CONNECTIONS,
        ) as server:
            patient_id, reader = seeded_patient(server.port, data_dir)
            url_path = f"/fhir/Patient/{patient_id}"
            audited = wrk(
                f"http://127.0.0.1:{server.port}{url_path}", token=reader, seconds=args.seconds
            )
        with running_server(
            data_dir,
            workers=args.workers,
            threads=args.threads,
            app="benchmarks.wsgi:unaudited_app",
            clients=WRK_CONNECTIONS,
        ) as server:
            assert request(server.port, "GET", url_path, token=reader)[0] == 200
            unaudited = wrk(
                f"http://127.0.0.1:{server.port}{url_path}", token=reader, seconds=args.seconds
            )
    rows = [
        (
            "read, audited (AuditEvent per read)",
            f"{audited.requests_per_second:,.0f}/s",
            f"{audited.p50_ms:.2f}",
            f"{audited.p99_ms:.2f}",
            audited.errors,
        ),
        (
            "read, audit sink disabled",
            f"{unaudited.requests_per_second:,.0f}/s",
            f"{unaudited.p50_ms:.2f}",
            f"{unaudited.p99_ms:.2f}",
            unaudited.errors,
        ),
    ]
    ratio = audited.requests_per_second / unaudited.requests_per_second
    return "\n".join(
        [
            table(
                rows,
                (
                    "`GET /fhir/Patient/{id}` (patient token)",
                    "throughput",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                ),
            ),
            "",
            f"audited / unaudited read throughput: **{ratio:.2f}** (target >= {TARGET})",
        ]
    )

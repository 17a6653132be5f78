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

from benchmarks.harness import (
    alternated,
    app_server,
    ratios,
    request,
    spread,
    table,
    temporary_data_dir,
    throughput_row,
    wrk_load,
)
from benchmarks.tokens import seeded_patient

TARGET = 0.7


def run(args: argparse.Namespace) -> str:
    with (
        temporary_data_dir() as data_dir,
        app_server(data_dir, args, "benchmarks.wsgi:app") as audited_server,
        app_server(data_dir, args, "benchmarks.wsgi:unaudited_app") as unaudited_server,
    ):
        patient_id, reader = seeded_patient(audited_server.port, data_dir)
        url_path = f"/fhir/Patient/{patient_id}"
        assert request(unaudited_server.port, "GET", url_path, token=reader)[0] == 200

        results = alternated(
            {
                "audited": wrk_load(audited_server, url_path, token=reader, seconds=args.seconds),
                "unaudited": wrk_load(
                    unaudited_server, url_path, token=reader, seconds=args.seconds
                ),
            },
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

"""Tokens for benchmarks, made by the same `fhir-server token` command users run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def token(data_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "token", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def health_insurer_token(data_dir: Path) -> str:
    """The record administrator's token (R15): it may create Patients."""
    return token(
        data_dir,
        "--system",
        "bench-admin",
        "--organization-type",
        "health_insurer",
        "--scope",
        "system/*.cruds",
    )


def seeded_patient(port: int, data_dir: Path) -> tuple[str, str]:
    """A Patient created through the API, and that patient's own token (it may read it)."""
    from benchmarks.datagen import make_patient
    from benchmarks.harness import request

    status, body, headers = request(
        port, "POST", "/fhir/Patient", make_patient(0), health_insurer_token(data_dir)
    )
    if status != 201:
        raise SystemExit(f"could not create the benchmark patient: {status} {body[:300]!r}")
    patient_id = headers["Location"].split("/")[-3]
    reader = token(data_dir, "--patient", patient_id)
    if request(port, "GET", f"/fhir/Patient/{patient_id}", token=reader)[0] != 200:
        raise SystemExit("the benchmark patient cannot read their own record")
    return patient_id, reader

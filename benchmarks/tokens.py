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

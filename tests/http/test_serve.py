"""`fhir-server serve` as a real process: gunicorn, a free port, SIGTERM, restart durability."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.http.conftest import FHIR_JSON, Tokens, a_patient


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "FHIR_LOG_LEVEL": "WARNING"}
    env = {
        k: v
        for k, v in env.items()
        if not (k.startswith("FHIR_") and not k.startswith(("FHIR_TEST_", "FHIR_LOG_")))
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fhir_server.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
            "--threads",
            "2",
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not become healthy")


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def _call(port: int, method: str, path: str, token: str, body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


@pytest.mark.slow
def test_serve_runs_under_gunicorn_stops_on_sigterm_and_keeps_data(tmp_path):
    """The server as users run it; data written before a restart is read back after it."""
    data_dir = tmp_path / "var"
    port = _free_port()
    process = _start(data_dir, port)
    try:
        tokens = Tokens(data_dir)  # the key the server created on first start
        status, created, headers = _call(
            port, "POST", "/fhir/Patient", tokens.system(), a_patient()
        )
        assert status == 201 and headers["ETag"] == 'W/"1"'
        status, metadata, _ = _call(port, "GET", "/fhir/metadata", "")
        assert status == 200 and metadata["fhirVersion"] == "4.0.1"
    finally:
        assert _stop(process) == 0  # graceful shutdown on SIGTERM
    process = _start(data_dir, port)
    try:
        status, read, _ = _call(
            port, "GET", f"/fhir/Patient/{created['id']}", Tokens(data_dir).patient(created["id"])
        )
        assert status == 200 and read == created
    finally:
        _stop(process)

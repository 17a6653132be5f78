"""Shared benchmark plumbing: a data dir, a server under gunicorn on a free port, wrk, tokens.

Every server a benchmark starts listens on 127.0.0.1 only and is stopped when the
benchmark ends.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fhir_server.config import Settings

ROOT = Path(__file__).resolve().parent.parent
# `fhir-server serve`'s gunicorn settings, for the apps served by module:callable name.
GUNICORN_CONFIG = "benchmarks.gunicorn_config"
SHARE_WORKER = "benchmarks.share_worker.ShareWorker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    port: int
    data_dir: Path
    process: subprocess.Popen

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


def wait_healthy(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not become healthy")


@contextmanager
def running_server(
    data_dir: Path,
    *,
    workers: int = 2,
    threads: int = Settings.threads,
    app: str | None = None,
    env: dict | None = None,
    clients: int | None = None,
):
    """gunicorn serving the FHIR app (or `app`, a "module:callable" WSGI target) on loopback.

    `clients` (with an `app` only): the number of keep-alive connections the load will open
    at once. Each worker then holds at most its share of them (gunicorn's worker_connections)
    and keeps them all alive (`benchmarks.share_worker`), as a load balancer in front of the
    workers would arrange. Without it, the worker that happens to be accepting when wrk
    opens its connections takes most of them, and a run measures one worker or two by
    chance: the same endpoint gave 1,100/s in some runs and 3,500/s in others, and a ratio of
    two runs depended on which way each fell.
    """
    if clients and app is None:
        raise ValueError("clients= needs a benchmark app: `fhir-server serve` keeps gthread")
    port = free_port()
    environment = {
        **os.environ,
        "FHIR_DATA_DIR": str(data_dir),
        "FHIR_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    worker_connections = -(-clients // workers) if clients else None
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    if app is None:
        command = [
            sys.executable,
            "-m",
            "fhir_server.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            f"python:{GUNICORN_CONFIG}",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            *(
                ["--worker-connections", str(worker_connections), "--worker-class", SHARE_WORKER]
                if worker_connections
                else []
            ),
        ]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        try:
            wait_healthy(port)
        except RuntimeError as exc:
            process.kill()
            _, stderr = process.communicate(timeout=30)
            tail = stderr.decode(errors="replace")[-4000:] if stderr else "(nothing)"
            raise RuntimeError(f"{exc}; its standard error ends with:\n{tail}") from None
        yield Server(port, data_dir, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def temporary_data_dir():
    path = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# wrk's keep-alive connections, opened at once; `running_server(clients=WRK_CONNECTIONS)`.
WRK_CONNECTIONS = 16


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0  # completed in the run
    output: str = ""  # wrk's report, with what a script's done() printed


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    *,
    token: str | None = None,
    seconds: int = 10,
    connections: int = WRK_CONNECTIONS,
    threads: int = 2,
    headers: dict | None = None,
    script: Path | None = None,
    env: dict | None = None,
) -> WrkResult:
    """wrk's figures for `url`; `script`: a wrk Lua script making the requests, `env`: extra
    environment variables for it."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for this benchmark: apt-get install wrk")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    for name, value in {
        **({"Authorization": f"Bearer {token}"} if token else {}),
        **(headers or {}),
    }.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    # Anchored: a "+/- Stdev" column such as "92.50%" must not pass for the 50% percentile.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    completed = int(re.search(r"(\d+) requests in", output).group(1))
    return WrkResult(rps, p50, p99, int(errors.group(1)) if errors else 0, completed, output)


def request(
    server_port: int,
    method: str,
    path: str,
    body: dict | None = None,
    token: str | None = None,
    headers: dict | None = None,
):
    connection = http.client.HTTPConnection("127.0.0.1", server_port, timeout=60)
    all_headers = {"Content-Type": "application/fhir+json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    connection.request(
        method, path, body=json.dumps(body) if body is not None else None, headers=all_headers
    )
    try:
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        # Closed at once: a server worker holding a bounded number of connections (see
        # `running_server(clients=)`) gets its slot back before the next request.
        connection.close()


def app_server(data_dir: Path, args, app: str):
    """`running_server` for a benchmark app ("module:callable") with the run's `--workers`
    and `--threads`, its workers sharing the load's connections (`WRK_CONNECTIONS`)."""
    return running_server(
        data_dir, workers=args.workers, threads=args.threads, app=app, clients=WRK_CONNECTIONS
    )


def wrk_load(
    server: Server, path: str, *, token: str | None, seconds: int
) -> Callable[[], WrkResult]:
    """A wrk run of `seconds` on `path` of `server`, to be taken (again) by `alternated`."""
    url = f"http://127.0.0.1:{server.port}{path}"
    return lambda: wrk(url, token=token, seconds=seconds)


def alternated(
    measures: dict[str, Callable[[], WrkResult]], rounds: int
) -> dict[str, list[WrkResult]]:
    """Each of `measures` taken in turn, round after round (on servers all up at once).

    This host's speed drifts by a third within a minute (another tenant's load: see the
    speed index of `benchmarks.machine`). Measured one after the other, a ratio of two
    throughputs measured that drift as much as the server: the same build gave an audited /
    unaudited ratio of 0.49, 0.79 and 0.64 in three consecutive runs. Taken in turn, both
    sides of each round's ratio meet the same host, and the rounds show the spread.
    """
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    results: dict[str, list[WrkResult]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def ratios(numerators: list[WrkResult], denominators: list[WrkResult]) -> list[float]:
    """Round by round, the throughput of one measure over another's (`alternated`)."""
    return [
        top.requests_per_second / bottom.requests_per_second
        for top, bottom in zip(numerators, denominators, strict=True)
    ]


def spread(values: list[float]) -> str:
    """The median of per-round figures, with each round's: "**0.68** (0.61, 0.74, 0.68)"."""
    rounds = ", ".join(f"{value:.2f}" for value in values)
    return f"**{median(values):.2f}** (rounds: {rounds})"


def median_result(results: list[WrkResult]) -> WrkResult:
    """The round of median throughput, whose latencies go with it."""
    ordered = sorted(results, key=lambda result: result.requests_per_second)
    return ordered[(len(ordered) - 1) // 2]


def throughput_row(label: str, results: list[WrkResult]) -> tuple:
    """A table row of the round of median throughput (`median_result`), with the errors of
    every round: label, throughput, p50 ms, p99 ms, errors."""
    result = median_result(results)
    return (
        label,
        f"{result.requests_per_second:,.0f}/s",
        f"{result.p50_ms:.2f}",
        f"{result.p99_ms:.2f}",
        sum(r.errors for r in results),
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(rows: list[tuple], headers: tuple) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

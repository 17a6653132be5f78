"""The benchmark servers keep their clients' connections alive (benchmarks/share_worker.py).

From 2026-11-22 to 2026-12-07 every wrk request of `bench audit` and `bench foundation` was
made on a new connection: each worker held its share of the connections with as many
threads, and gunicorn's gthread keeps alive only `worker_connections - threads` of them.
"""

from __future__ import annotations

import http.client

import pytest

from benchmarks.harness import running_server


def test_a_worker_holding_its_share_keeps_every_connection_alive(tmp_path):
    # A share of two connections and two threads: stock gthread would close after each answer.
    with running_server(
        tmp_path, workers=1, threads=2, app="benchmarks.wsgi:unaudited_app", clients=2
    ) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("GET", "/healthz")
            first = connection.getresponse()
            first.read()
            socket_used = connection.sock
            connection.request("GET", "/healthz")
            second = connection.getresponse()
            second.read()
            assert (first.status, second.status) == (200, 200)
            assert first.getheader("Connection", "").lower() != "close"
            assert connection.sock is socket_used  # the same connection answered both
        finally:
            connection.close()


def test_a_connection_share_needs_a_benchmark_app(tmp_path):
    """`fhir-server serve` runs stock gthread: a share there would close every connection."""
    with pytest.raises(ValueError, match="benchmark app"), running_server(tmp_path, clients=2):
        pass

"""The gunicorn worker of the benchmark servers: gthread, holding its share of the load's
keep-alive connections (`harness.running_server(clients=)`).

wrk opens its connections all at once, and with gunicorn's defaults the worker that happens
to be accepting takes most of them: the same endpoint measured 1,100/s in one run and
3,500/s in another. Capping a worker's connections at its share (`worker_connections`)
spreads them as a load balancer in front of the workers would, but gthread keeps alive at
most `worker_connections - threads` of them and closes the others after each response: with
a share of 8 and 8 threads, every request was made on a new connection (TCP handshake,
accept, close) from 2026-11-22 until 2026-12-07, for the served and the bare endpoint alike,
which added the same connection cost to both sides of every ratio (docs/performance.md,
"Keep-alive"). This worker keeps every connection it holds alive, as the deployed server
(`worker_connections` 1000) does.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class ShareWorker(ThreadWorker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = self.worker_connections

    @classmethod
    def check_config(cls, cfg, log) -> None:
        """gthread warns that no connection can be kept alive when `worker_connections` is
        not above `threads`; this worker keeps them all."""

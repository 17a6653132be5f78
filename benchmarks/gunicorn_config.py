"""gunicorn configuration for the benchmark apps (`running_server(app=...)`): the settings
of `fhir-server serve` (`fhir_server.cli.gunicorn_settings`), so that a benchmark app is
served as the server is deployed: the start-up objects frozen out of the garbage
collector's reach, an access log line per request, the same keep-alive."""

from fhir_server.cli import gunicorn_settings

globals().update(gunicorn_settings())

# Unlike `fhir-server serve`, every benchmark server keeps the master's one socket: each
# worker holds exactly its share of the load's connections (`benchmarks/share_worker.py`), as
# a perfect load balancer would give them, so that a ratio does not depend on how the kernel
# spread one run's connections. With a socket per worker, a connection beyond its worker's
# share would wait in that worker's queue while the other worker had room.
reuse_port = False

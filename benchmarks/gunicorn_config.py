"""gunicorn configuration for the benchmark apps (`running_server(app=...)`): the settings
of `fhir-server serve` (`fhir_server.cli.gunicorn_settings`), so that a benchmark app is
served as the server is deployed: the start-up objects frozen out of the garbage
collector's reach, an access log line per request, the same keep-alive."""

from fhir_server.cli import gunicorn_settings

globals().update(gunicorn_settings())

"""The benchmark apps: the server's own app plus a bare endpoint returning the same bytes.

`/bench/bare/<Type>/<id>` answers the stored bytes of one resource, read once, with no
authentication, access decision, audit or store read: the floor the real read path is
compared to, on the same WSGI server in the same run.

Two gunicorn targets, each built only when gunicorn asks for it:

- `benchmarks.wsgi:app`: the server as deployed (every read writes its AuditEvent).
- `benchmarks.wsgi:unaudited_app`: the same server with the audit sink disabled
  (`AuditTrail.enabled = False`: the token, scopes and DMP rules still judge every request;
  the events are not built). The foundation's REST read is measured on it, the audit's own
  cost by `fhir-server bench audit` (audited / unaudited).
"""

from __future__ import annotations

from flask import Flask, Response

TARGETS = ("app", "unaudited_app")


def _build(audited: bool) -> Flask:
    from fhir_server.config import load_settings
    from fhir_server.rest.app import create_app

    application = create_app(load_settings())
    application.extensions["fhir"].service.gate.audit.enabled = audited
    cache: dict[tuple[str, str], bytes] = {}

    @application.get("/bench/bare/<resource_type>/<resource_id>")
    def bare(resource_type: str, resource_id: str) -> Response:
        key = (resource_type, resource_id)
        if key not in cache:
            cache[key] = application.extensions["fhir"].store.read(resource_type, resource_id).body
        return Response(cache[key], content_type="application/fhir+json; charset=utf-8")

    return application


def __getattr__(name: str) -> Flask:
    if name not in TARGETS:
        raise AttributeError(name)
    application = _build(audited=name == "app")
    globals()[name] = application
    return application

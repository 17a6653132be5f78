"""The benchmark app: the server's own app plus a bare endpoint returning the same bytes.

`/bench/bare/<Type>/<id>` answers the stored bytes of one resource, read once, with no
authentication, access decision, audit or store read: the floor the real read path is
compared to, on the same WSGI server in the same run.
"""

from __future__ import annotations

from flask import Response

from fhir_server.config import load_settings
from fhir_server.rest.app import create_app

app = create_app(load_settings())
_cache: dict[tuple[str, str], bytes] = {}


@app.get("/bench/bare/<resource_type>/<resource_id>")
def bare(resource_type: str, resource_id: str) -> Response:
    key = (resource_type, resource_id)
    if key not in _cache:
        _cache[key] = app.extensions["fhir"].store.read(resource_type, resource_id).body
    return Response(_cache[key], content_type="application/fhir+json; charset=utf-8")

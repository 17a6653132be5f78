"""Conformance endpoints: the CapabilityStatement and the definitions the server runs on."""

from __future__ import annotations

import orjson
from flask import Blueprint, current_app, request

from fhir_server.errors import not_found
from fhir_server.rest.formats import negotiate, render
from fhir_server.service import versions

conformance = Blueprint("conformance", __name__)


def _respond(body: bytes | dict):
    negotiated = negotiate(
        request.args.get("_format"), request.headers.get("Accept"), request.args.get("_pretty")
    )
    return current_app.response_class(
        render(body, negotiated), content_type=negotiated.content_type
    )


def _definitions(resource_type: str) -> list[dict]:
    runtime = current_app.extensions["fhir"]
    if resource_type == "SearchParameter":
        return runtime.registry.resources()
    return runtime.service.profiles.structure_definitions()


@conformance.get("/metadata")
def metadata():
    return _respond(current_app.extensions["fhir"].capability)


@conformance.get("/<any(SearchParameter, StructureDefinition):resource_type>")
def list_definitions(resource_type: str):
    runtime = current_app.extensions["fhir"]
    wanted = {
        value
        for key, value in request.args.items(multi=True)
        if key in ("url", "code", "name", "_id")
    }
    resources = [
        r
        for r in _definitions(resource_type)
        if not wanted or wanted & {r.get("url"), r.get("code"), r.get("name"), r.get("id")}
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": versions.instant(versions.now_us())},
        "total": len(resources),
        "link": [{"relation": "self", "url": request.url}],
        "entry": [
            {
                "fullUrl": f"{runtime.base_url}/{resource_type}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    return _respond(orjson.dumps(bundle))


@conformance.get("/<any(SearchParameter, StructureDefinition):resource_type>/<resource_id>")
def read_definition(resource_type: str, resource_id: str):
    for resource in _definitions(resource_type):
        if resource.get("id") == resource_id:
            return _respond(resource)
    raise not_found(f"{resource_type}/{resource_id} is not known")

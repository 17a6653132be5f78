"""The FHIR RESTful API (http.html): interactions mapped onto the service.

Each view reads the HTTP request into an `Interaction` (`service.interaction`), has the one
dispatcher perform it (`service.dispatch`, which performs Bundle entries too), and renders
its `Answer` as an HTTP response; nothing here decides who may see what.
"""

from __future__ import annotations

import base64

import orjson
import pybase64
from flask import Blueprint, Response, current_app, g, request

from fhir_server.auth.http import unauthorized
from fhir_server.errors import bad_request, error
from fhir_server.rest import bundles as bundle_views
from fhir_server.rest.formats import negotiate, parse_body, render, wants_fhir
from fhir_server.rest.prefer import request_preferences
from fhir_server.rest.summary import summarize
from fhir_server.search.parameters import is_whole_number
from fhir_server.service import versions
from fhir_server.service.interaction import Answer, Interaction, Kind
from fhir_server.service.patch import MetadataUpdates
from fhir_server.store.base import StoredResource

api = Blueprint("fhir", __name__)

# Parameters that shape the response, not the search.
_RESULT_PARAMS = ("_format", "_pretty", "_cursor")
# Bytes of a POST `_search` form. A GET's query is at most gunicorn's request line (8,190
# bytes, `cli.gunicorn_settings`); the form, under the body limit alone (32 MB by default),
# held 1.1 million fields (1.1 s to parse before MAX_PARAMETERS refused them) or an 8 MB
# value (searched and echoed in the self link: 0.5 s, an 8 MB answer). 64 KB is room for
# MAX_PARAMETERS parameters of long values.
MAX_SEARCH_FORM_BYTES = 64 * 1024


def runtime():
    return current_app.extensions["fhir"]


def _perform(interaction: Interaction) -> Answer:
    """The interaction performed for the request's requester by the one dispatcher."""
    return runtime().bundles.dispatcher.perform(g.requester, interaction)


def _arg(name: str) -> str | None:
    """A query parameter's first value. Most reads have none, and werkzeug answers a missing
    key by building (and catching) a BadRequestKeyError, so an empty query is not asked."""
    args = request.args
    return args.get(name) if args else None


@api.before_request
def _negotiate_first() -> None:
    """The answer's format, settled before the interaction: a `_format` or `_pretty` the
    server cannot honour is refused before anything is stored, read or audited (a create
    asked with an unknown `_format` was stored, then answered 406; a read's event kept the
    value, whatever it named, in the patient's trace)."""
    g.negotiated = negotiate(
        _result_param("_format"), request.headers.get("Accept"), _result_param("_pretty")
    )


def _result_param(name: str) -> str | None:
    """`_format` or `_pretty` from the query, else from a POST `_search`'s form, whose
    parameters are those of the query (search.html#search-post): there, an `_format` or
    `_pretty` was dropped unread, the answer given in JSON to a client asking for XML."""
    value = _arg(name)
    if (
        value is None
        and request.method == "POST"
        and request.path.endswith("/_search")
        and request.mimetype == "application/x-www-form-urlencoded"
    ):
        # The form's size is judged before it is parsed, here as in the search: read here
        # first, a form of any size under the body limit was parsed whole (an `_format`
        # in it answered 406) before its search refused it as over MAX_SEARCH_FORM_BYTES.
        _check_form_size()
        value = request.form.get(name)
    return value


def _negotiated():
    return g.negotiated


def _respond(body: bytes | dict, status: int = 200, headers: dict | None = None) -> Response:
    negotiated = _negotiated()
    return Response(
        render(body, negotiated),
        status=status,
        headers=headers or {},
        content_type=negotiated.content_type,
    )


def _resource_headers(stored: StoredResource, location: bool = False) -> dict[str, str]:
    headers = {
        "ETag": versions.etag(stored.version),
        "Last-Modified": versions.http_date(stored.last_updated),
    }
    if location:
        headers["Location"] = (
            f"{runtime().base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
        )
    return headers


def _prefer_return() -> str:
    return request_preferences().return_


def _lenient() -> bool:
    return request_preferences().lenient


def _write_response(answer: Answer) -> Response:
    stored, status = answer.stored, answer.status
    assert stored is not None
    headers = _resource_headers(stored, location=True)
    mode = _prefer_return()
    if mode == "minimal":
        return Response(status=status, headers=headers)
    if mode == "OperationOutcome":
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{stored.resource_type}/{stored.id} version {stored.version} stored",
                }
            ],
        }
        return _respond(outcome, status, headers)
    return _respond(stored.body, status, headers)


def _body_resource(resource_type: str) -> dict:
    if resource_type == "Binary" and not _is_fhir_content(request.content_type):
        return _binary_from_raw()
    return parse_body(request.get_data(cache=False), request.content_type)


def _is_fhir_content(content_type: str | None) -> bool:
    from fhir_server.rest.formats import normalize_mime

    return normalize_mime(content_type) is not None


def _binary_from_raw() -> dict:
    """Binary raw content in (http.html#binary): the bytes become a Binary resource."""
    data = request.get_data(cache=False)
    content_type = request.content_type or "application/octet-stream"
    resource: dict[str, object] = {
        "resourceType": "Binary",
        "contentType": content_type,
        "data": base64.b64encode(data).decode(),
    }
    security_context = request.headers.get("X-Security-Context")
    if security_context:
        resource["securityContext"] = {"reference": security_context}
    return resource


def _if_match() -> int | None:
    """The If-Match header's version; a header given empty is a precondition too (400)."""
    value = request.headers.get("If-Match")
    return versions.parse_etag(value) if value is not None else None


def _search_params() -> list[tuple[str, str]]:
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in _RESULT_PARAMS]
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            raise error(
                415,
                "not-supported",
                "POST _search needs Content-Type application/x-www-form-urlencoded",
                "Content-Type",
            )
        _check_form_size()
        if "access_token" in request.form:
            # RFC 6750 §2.2's form parameter, refused like its query form (`bearer_token`):
            # read as a search parameter, with `Prefer: handling=lenient` it was ignored and
            # the search served, and the raw request kept in the AuditEvent of the search
            # (R16) handed the caller's token to the patient reading their trail.
            raise unauthorized(
                "send the token in the Authorization header only (RFC 6750 §2), not as"
                " an access_token form parameter"
            )
        params += [(k, v) for k, v in request.form.items(multi=True) if k not in _RESULT_PARAMS]
    return params


def _check_form_size() -> None:
    """Refuse a POST `_search` form over MAX_SEARCH_FORM_BYTES before it is parsed; one of
    unknown length (chunked) too, as its size cannot be checked first (fail closed)."""
    size = request.content_length
    if size is None:
        raise error(
            411,
            "too-costly",
            f"POST _search needs a Content-Length (a form of at most {MAX_SEARCH_FORM_BYTES}"
            " bytes, MAX_SEARCH_FORM_BYTES)",
            "Content-Length",
        )
    if size > MAX_SEARCH_FORM_BYTES:
        raise error(
            413,
            "too-costly",
            f"the POST _search form is {size} bytes; the limit is {MAX_SEARCH_FORM_BYTES}"
            " bytes (MAX_SEARCH_FORM_BYTES)",
            "body",
        )


# -- whole system ------------------------------------------------------------------------------


@api.post("/")
def bundle():
    rt = runtime()
    data = parse_body(request.get_data(cache=False), request.content_type)
    bundle_type, responses = rt.bundles.process(g.requester, data)
    return _respond(
        bundle_views.batch_response(bundle_type, responses, versions.now_us(), rt.base_url)
    )


@api.get("/")
def system_search():
    return _search(None, "")


@api.get("/_history")
def system_history():
    return _history(None, None, "_history")


# -- type level --------------------------------------------------------------------------------


@api.route("/<resource_type>", methods=["GET"])
def search_type(resource_type: str):
    return _search(resource_type, resource_type)


@api.post("/<resource_type>/_search")
def search_post(resource_type: str):
    return _search(resource_type, resource_type)


@api.post("/<resource_type>/$validate")
def validate_type(resource_type: str):
    return _validate(resource_type, None)


@api.post("/<resource_type>/<resource_id>/$validate")
def validate_instance(resource_type: str, resource_id: str):
    return _validate(resource_type, resource_id)


@api.post("/<resource_type>")
def create(resource_type: str):
    """A create; a DocumentReference's (ITI-105 Simplified Publish, any POST of a document)
    is the registry's transaction (`documents.publish`), chosen by the dispatcher."""
    resource = _body_resource(resource_type)
    condition = request.headers.get("If-None-Exist")
    criteria = tuple(_criteria(condition)) if condition is not None else None
    answer = _perform(
        Interaction(Kind.CREATE, resource_type, body=resource, if_none_exist=criteria)
    )
    return _write_response(answer)


@api.put("/<resource_type>")
def conditional_update(resource_type: str):
    criteria = _search_params()
    if not criteria:
        raise bad_request("a conditional update needs search criteria", "url")
    body = _body_resource(resource_type)
    return _write_response(
        _perform(
            Interaction(
                Kind.UPDATE,
                resource_type,
                criteria=tuple(criteria),
                body=body,
                if_match=_if_match(),
            )
        )
    )


@api.delete("/<resource_type>")
def conditional_delete(resource_type: str):
    criteria = _search_params()
    if not criteria:
        raise bad_request("a conditional delete needs search criteria", "url")
    return _delete_response(
        _perform(
            Interaction(Kind.DELETE, resource_type, criteria=tuple(criteria), if_match=_if_match())
        )
    )


@api.get("/<resource_type>/_history")
def type_history(resource_type: str):
    return _history(resource_type, None, f"{resource_type}/_history")


# -- instance level ----------------------------------------------------------------------------


@api.get("/<resource_type>/<resource_id>")
def read(resource_type: str, resource_id: str):
    return _read_response(_perform(Interaction(Kind.READ, resource_type, resource_id)))


@api.get("/<resource_type>/<resource_id>/_history/<version>")
def vread(resource_type: str, resource_id: str, version: str):
    if not is_whole_number(version):
        raise bad_request(f"'{version}' is not a version number", "vid")
    return _read_response(
        _perform(Interaction(Kind.VREAD, resource_type, resource_id, version=int(version)))
    )


def _read_response(answer: Answer) -> Response:
    stored = answer.stored
    assert stored is not None
    headers = _resource_headers(stored)
    if stored.resource_type == "Binary" and not wants_fhir(
        _arg("_format"), request.headers.get("Accept")
    ):
        resource = stored.json()
        raw = pybase64.b64decode(resource.get("data", ""))
        return Response(
            raw,
            headers=headers,
            content_type=resource.get("contentType", "application/octet-stream"),
        )
    summary = _arg("_summary")
    elements = _arg("_elements")
    if summary or elements:
        return _respond(summarize(stored.json(), summary, elements), 200, headers)
    return _respond(stored.body, 200, headers)


@api.put("/<resource_type>/<resource_id>")
def update(resource_type: str, resource_id: str):
    resource = _body_resource(resource_type)
    if resource_type == "Binary" and "id" not in resource:
        resource["id"] = resource_id  # raw Binary content names no id (http.html#binary)
    answer = _perform(
        Interaction(Kind.UPDATE, resource_type, resource_id, body=resource, if_match=_if_match())
    )
    return _write_response(answer)


@api.delete("/<resource_type>/<resource_id>")
def delete(resource_type: str, resource_id: str):
    return _delete_response(
        _perform(Interaction(Kind.DELETE, resource_type, resource_id, if_match=_if_match()))
    )


def _delete_response(answer: Answer) -> Response:
    """204; the ETag of the deletion's version when something was deleted."""
    stored = answer.stored
    headers = {"ETag": versions.etag(stored.version)} if stored else {}
    return Response(status=answer.status, headers=headers)


@api.route("/<resource_type>/<resource_id>", methods=["PATCH"])
def patch(resource_type: str, resource_id: str):
    """PATCH (http.html#patch): a DocumentReference's metadata update (`service.patch`)."""
    MetadataUpdates.check_type(resource_type)  # before the body is read: 405 for any other type
    answer = _perform(
        Interaction(
            Kind.PATCH, resource_type, resource_id, patch=_patch_body(), if_match=_if_match()
        )
    )
    return _write_response(answer)


@api.route("/<resource_type>", methods=["PATCH"])
def conditional_patch(resource_type: str):
    criteria = _search_params()
    if not criteria:
        raise bad_request("a conditional patch needs search criteria", "url")
    MetadataUpdates.check_type(resource_type)
    answer = _perform(
        Interaction(
            Kind.PATCH,
            resource_type,
            criteria=tuple(criteria),
            patch=_patch_body(),
            if_match=_if_match(),
        )
    )
    return _write_response(answer)


def _patch_body():
    """A FHIRPath Patch in either FHIR format (a Parameters, PDSm st_maj.md), or a JSON Patch."""
    from fhir_server.resources.patch import fhirpath_patch_body, read_patch_body
    from fhir_server.rest.formats import normalize_mime

    raw = request.get_data(cache=False)
    if normalize_mime(request.content_type) is not None:
        return fhirpath_patch_body(parse_body(raw, request.content_type))
    return read_patch_body(request.content_type, raw)


@api.get("/<resource_type>/<resource_id>/_history")
def instance_history(resource_type: str, resource_id: str):
    return _history(resource_type, resource_id, f"{resource_type}/{resource_id}/_history")


# -- $validate (Resource-validate) -------------------------------------------------------------


def _validate(resource_type: str, resource_id: str | None) -> Response:
    """`$validate`: a token is needed (the app checks it), no write permission: nothing is stored.

    The body is a Parameters (`resource`, `mode`, `profile`) or the resource itself; `mode` and
    `profile` may also be URL parameters. Always 200 with the OperationOutcome, except for a
    malformed request (400).
    """
    from fhir_server.resources.model import validate_resource
    from fhir_server.resources.validate_operation import validate_operation
    from fhir_server.service.core import require_type

    require_type(resource_type)
    raw = request.get_data(cache=False)
    body = parse_body(raw, request.content_type) if raw.strip() else None
    mode, profile = request.args.get("mode"), request.args.get("profile")
    resource = body
    if (
        isinstance(body, dict)
        and body.get("resourceType") == "Parameters"
        and resource_type != "Parameters"
    ):
        resource = None
        for parameter in body.get("parameter") or []:
            name = parameter.get("name") if isinstance(parameter, dict) else None
            if name == "resource":
                resource = parameter.get("resource")
            elif name == "mode":
                mode = parameter.get("valueCode") or parameter.get("valueString")
            elif name == "profile":
                profile = (
                    parameter.get("valueUri")
                    or parameter.get("valueCanonical")
                    or parameter.get("valueString")
                )
    if resource is None:
        if mode != "delete":
            raise bad_request(
                "$validate needs a resource (the body, or the Parameters 'resource')",
                "resource",
                code="required",
            )
        model_issues = []
    else:
        model_issues = validate_resource(resource, resource_type)
        if (
            resource_id is not None
            and isinstance(resource, dict)
            and resource.get("id") not in (None, resource_id)
        ):
            from fhir_server.errors import Issue

            model_issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{resource_type}.id '{resource.get('id')}' does not match the URL id '{resource_id}'",
                    (f"{resource_type}.id",),
                )
            )
    profiles = getattr(runtime().service, "profiles", None)
    outcome = validate_operation(
        resource, resource_type, mode, profile, model_issues, registry=profiles
    )
    return _respond(outcome, 200)


# -- helpers -----------------------------------------------------------------------------------


def _criteria(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    criteria = parse_qsl(query.lstrip("?").split("?", 1)[-1], keep_blank_values=True)
    if not criteria:
        raise bad_request("If-None-Exist holds no search criteria", "If-None-Exist")
    return criteria


def _search(resource_type: str | None, path: str) -> Response:
    rt = runtime()
    params = _search_params()
    result = _perform(
        Interaction(
            Kind.SEARCH,
            resource_type,
            criteria=tuple(params),
            lenient=_lenient(),
            cursor=request.args.get("_cursor"),
        )
    ).search
    assert result is not None  # a search answers its SearchResult
    summary = dict(params).get("_summary")
    elements = dict(params).get("_elements")
    transform = None
    if summary in ("true", "text", "data") or elements:

        def transform(body: bytes) -> dict:
            return summarize(orjson.loads(body), summary, elements)

    bundle = bundle_views.searchset(
        result,
        base=rt.base_url,
        path=path,
        params=params,
        now_us=versions.now_us(),
        transform=transform,
        summary_count=summary == "count",
    )
    return _respond(orjson.dumps(bundle))


def _history(resource_type: str | None, resource_id: str | None, path: str) -> Response:
    rt = runtime()
    _refuse_unknown_history_parameters()
    since = request.args.get("_since")
    count = request.args.get("_count", "20")
    if not is_whole_number(count):
        raise bad_request(f"_count '{count}' is not a whole number", "_count")
    params = [(k, v) for k, v in request.args.items(multi=True) if k not in _RESULT_PARAMS]
    page = _perform(
        Interaction(
            Kind.HISTORY,
            resource_type,
            resource_id,
            since=versions.parse_instant(since) if since else None,
            count=int(count),
            cursor=request.args.get("_cursor"),
        )
    ).history
    assert page is not None  # a history answers its page
    bundle = bundle_views.history(
        page, base=rt.base_url, path=path, params=params, now_us=versions.now_us()
    )
    return _respond(orjson.dumps(bundle))


# What a history interaction understands (http.html#history): `_at` and `_list` are not
# supported, and are refused like any other parameter it does not know.
_HISTORY_PARAMS = frozenset({"_count", "_since", "_cursor", *_RESULT_PARAMS})


def _refuse_unknown_history_parameters() -> None:
    """400 for a parameter a history does not understand, as a search's is, unless the
    client asked for lenient handling: ignored silently, `_at` or `_list` answered a history
    other than the one asked, and the request, audited as asked, carried whatever value the
    parameter held into the patient's trace. A parameter it understands given twice is
    refused even then: the second value, never read, went into the trace the same way."""
    for name, values in request.args.lists():
        if name in _HISTORY_PARAMS and len(values) > 1:
            # Only the first value is read (an empty one too): the others, unread, would
            # reach the event.
            raise bad_request(f"history parameter '{name}' is given more than once", name)
        if name not in _HISTORY_PARAMS and any(values) and not _lenient():
            raise bad_request(f"Unknown or unsupported history parameter '{name}'", name)


__all__ = ["api"]

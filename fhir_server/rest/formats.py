"""Content negotiation and the two FHIR formats (http.html#mime-type).

JSON is the stored form: a JSON response is the stored bytes, embedded as they are in
Bundles with `orjson.Fragment`. XML is produced from and parsed into the fhir.resources
models, a slower path paid only by XML clients.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import orjson
from lxml import etree

from fhir_server.errors import FhirError, bad_request, error
from fhir_server.resources.input_limits import (
    FORBIDDEN_CHARACTERS,
    check_charset,
    check_json_body,
    check_json_characters,
    check_json_depth,
    check_json_nulls,
    check_xml_breadth,
    check_xml_depth,
)
from fhir_server.resources.model import model_class

JSON = "application/fhir+json"
XML = "application/fhir+xml"

_FORMAT_ALIASES = {
    "json": JSON,
    "application/json": JSON,
    "application/fhir+json": JSON,
    "application/json+fhir": JSON,
    "xml": XML,
    "text/xml": XML,
    "application/xml": XML,
    "application/fhir+xml": XML,
    "application/xml+fhir": XML,
}


@dataclass(frozen=True)
class Negotiated:
    mime: str  # JSON or XML
    pretty: bool

    @property
    def content_type(self) -> str:
        return f"{self.mime}; charset=utf-8"


def normalize_mime(value: str | None) -> str | None:
    if not value:
        return None
    return _FORMAT_ALIASES.get(value.split(";")[0].strip().lower())


@lru_cache(maxsize=256)  # few distinct (_format, Accept, _pretty) triples; errors not cached
def negotiate(format_param: str | None, accept: str | None, pretty_param: str | None) -> Negotiated:
    """`_format` wins over Accept, whose preferred FHIR format (by quality) is taken; JSON
    when neither names one the client accepts (as for `text/html`). `_pretty` is true
    or false (search.html#pretty); anything else is refused, not read as false."""
    if pretty_param not in (None, "", "true", "false"):
        raise error(400, "invalid", f"_pretty '{pretty_param}' is not true or false", "_pretty")
    pretty = pretty_param == "true"
    if format_param:
        mime = normalize_mime(format_param)
        if mime is None:
            raise error(
                406, "not-supported", f"_format '{format_param}' is not json or xml", "_format"
            )
        return Negotiated(mime, pretty)
    if accept:
        weights = _fhir_weights(accept)
        acceptable = {mime: q for mime, q in weights.items() if q > 0}
        if acceptable:
            # The format the client prefers; on a tie, the one it lists first.
            return Negotiated(max(acceptable, key=acceptable.__getitem__), pretty)
        if weights.keys() == {JSON}:  # JSON refused (q=0), XML not: XML
            return Negotiated(XML, pretty)
    return Negotiated(JSON, pretty)


def _fhir_weights(accept: str) -> dict[str, float]:
    """The quality (RFC 9110 section 12.4.2) the Accept header gives each FHIR format it
    names, the highest when one is named twice, in the order first named; `q=0` is "not
    acceptable". A quality that is not a number in [0, 1] is read as 0: the server does not
    answer in a format the client may not have asked for."""
    weights: dict[str, float] = {}
    for candidate in accept.split(","):
        mime = normalize_mime(candidate)
        if mime is None:
            continue
        q = 1.0
        for param in candidate.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        weights[mime] = max(q, weights.get(mime, 0.0))
    return weights


def wants_fhir(format_param: str | None, accept: str | None) -> bool:
    """Whether the client asked for a FHIR format (Binary: otherwise it gets the raw bytes);
    a FHIR format the Accept header names with `q=0` is one it refuses, not one it asks for."""
    if format_param:
        return True
    if not accept:
        return True
    return any(q > 0 for q in _fhir_weights(accept).values())


def parse_body(body: bytes, content_type: str | None) -> dict:
    """A request body in either FHIR format, as a JSON dict; 415/400 naming the problem."""
    mime = normalize_mime(content_type)
    if mime is None:
        raise error(
            415,
            "not-supported",
            f"Content-Type '{content_type or ''}' is not a FHIR format (application/fhir+json or application/fhir+xml)",
            "Content-Type",
        )
    check_charset(content_type)
    if not body:
        raise bad_request("the request has no body", code="required")
    if mime == JSON:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise bad_request(
                f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                code="structure",
            ) from None
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object", code="structure")
        check_json_body(body, data)
        check_json_nulls(body, data)
        check_json_characters(body, data)
        return data
    data = xml_to_json(body)
    check_json_depth(data)
    return data


_local = threading.local()


def _parser() -> etree.XMLParser:
    """This thread's parser: an lxml parser is not thread-safe, and Flask serves threads."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
    return parser


_DTD_REFUSED = "FHIR XML may not carry a DTD (<!DOCTYPE> or <!ENTITY>): it is refused"


def xml_to_json(body: bytes) -> dict:
    """A FHIR XML resource as its JSON dict; 400 for malformed XML, a DTD (whose entities
    the model library's own parser would expand), or nesting deeper than the limit."""
    if b"<!" in body and (b"<!DOCTYPE" in body or b"<!ENTITY" in body):
        raise bad_request(_DTD_REFUSED, code="security")
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise bad_request(f"malformed XML: {exc.msg}", code="structure") from None
    except (ValueError, LookupError) as exc:  # e.g. an unknown encoding declaration
        raise bad_request(f"unreadable XML: {exc}", code="structure") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # e.g. a UTF-16 body
        raise bad_request(_DTD_REFUSED, code="security")
    check_xml_depth(root)
    check_xml_breadth(root, body)
    resource_type = etree.QName(root).localname
    if etree.QName(root).namespace != FHIR_NS:
        raise bad_request(
            "the XML root element is not in the FHIR namespace http://hl7.org/fhir",
            code="structure",
        )
    try:
        model = model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        raise bad_request(f"unknown resource type '{resource_type}'", "resourceType") from None
    given = _fhir_elements(root)
    try:
        parsed = model.model_validate_xml(body)
    except Exception as exc:  # the XML parser of fhir.resources raises several kinds
        raise FhirError(400, [_xml_issue(resource_type, exc)]) from None
    if _fhir_elements(etree.fromstring(parsed.model_dump_xml(), _parser())) != given:
        raise bad_request(_DROPPED, code="structure")
    return orjson.loads(parsed.model_dump_json(by_alias=True, exclude_none=True))


FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_DROPPED = (
    "the XML gives an element or a value that is not read as given: a single element given "
    "twice (JSON refuses a repeated key), a value on an element that has none, or an empty "
    "element"
)


_ATTRIBUTES = frozenset({"value", "url", "id"})
_SCHEMA_LOCATION = "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation"


def _fhir_elements(root: etree._Element) -> Counter[str]:
    """The FHIR elements of `root` and their `value` and `url` attributes, counted by name;
    400 for an element outside the FHIR namespace (the model library reads one by its local
    name, as if FHIR), another attribute (it reads `x:value` as `value`, and drops others) or
    FHIR text content (which it drops: FHIR XML carries values in `value` attributes). A narrative's
    XHTML `div` counts as one element, its markup being the narrative's own value.

    Counted again on the model's own XML, a difference is an element the library did not
    keep as given: the first of two copies of a single element (it keeps the last), a
    `value` on an element that has none (dropped)."""
    counts: Counter[str] = Counter()
    stack = [root]
    while stack:
        element = stack.pop()
        if not isinstance(element.tag, str):  # a comment or processing instruction
            continue
        qname = etree.QName(element)
        if qname.namespace == XHTML_NS and qname.localname == "div":
            counts["div"] += 1
            continue
        if qname.namespace != FHIR_NS:
            raise bad_request(
                f"the XML element '{element.tag}' is not in the FHIR namespace {FHIR_NS}",
                code="structure",
            )
        if (element.text or "").strip() or any((c.tail or "").strip() for c in element):
            raise bad_request(
                f"the XML element '{qname.localname}' has text content: FHIR XML gives "
                "values in `value` attributes",
                code="structure",
            )
        counts[qname.localname] += 1
        for name in element.attrib:
            if name == _SCHEMA_LOCATION and element is root:  # a hint, read by no one here
                continue
            if name not in _ATTRIBUTES:
                raise bad_request(
                    f"the XML element '{qname.localname}' has an attribute '{name}': FHIR "
                    "XML has only `value`, `url` (of an extension) and `id`",
                    code="structure",
                )
            if name != "id":  # the model library neither keeps nor writes an element's id
                counts[f"{qname.localname}@{name}"] += 1
        stack.extend(element)
    return counts


def _xml_issue(resource_type: str, exc: Exception):
    from fhir_server.errors import Issue

    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        path = resource_type + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]
        )
        return Issue("error", "structure", f"{path}: {first['msg']}", (path,))
    return Issue("error", "structure", f"the XML is not a valid {resource_type}")


def render(body: bytes | dict, negotiated: Negotiated) -> bytes:
    """Stored JSON bytes (or a dict) in the negotiated format."""
    if negotiated.mime == JSON:
        if negotiated.pretty:
            data = orjson.loads(body) if isinstance(body, bytes) else body
            return orjson.dumps(data, option=orjson.OPT_INDENT_2)
        return body if isinstance(body, bytes) else orjson.dumps(body)
    data = orjson.loads(body) if isinstance(body, bytes) else body
    return json_to_xml(data, negotiated.pretty)


def json_to_xml(data: dict, pretty: bool = False) -> bytes:
    """`data` in FHIR XML. A character XML cannot carry (a control character a request
    echoed into an OperationOutcome: `/fhir/Foo%01`) is written as its `\\uXXXX` escape:
    lxml refused it, and the XML answer was a 500 where the JSON one was a 400 or 404."""
    try:
        return _to_xml(data, pretty)
    except ValueError:  # lxml: "All strings must be XML compatible"
        return _to_xml(_xml_compatible(data), pretty)


def _to_xml(data: dict, pretty: bool) -> bytes:
    model = model_class(data["resourceType"]).model_validate(data)
    return model.model_dump_xml(pretty_print=pretty) if pretty else model.model_dump_xml()


def _xml_compatible(value):
    """`value` with each character XML 1.0 cannot carry replaced by its `\\uXXXX` escape."""
    if isinstance(value, str):
        return FORBIDDEN_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {key: _xml_compatible(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_xml_compatible(item) for item in value]
    return value

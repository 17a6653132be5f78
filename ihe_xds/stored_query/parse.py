"""Reading an AdhocQueryRequest into a checked StoredQuery, every error of it at once.

Errors: XDSUnknownStoredQuery (unknown query id), XDSStoredQueryMissingParam (a required
parameter, or none of a "one of" group), XDSStoredQueryParamNumber (several values or
slots where one is allowed, both members of a "one of" group), XDSRegistryMetadataError
(a value of the wrong form). A parameter the query does not define is ignored, as ebRS 3.0
6.3.2.1 requires, with a Warning naming it.
"""

from __future__ import annotations

from lxml import etree

from fhir_server.search.parameters import MAX_VALUES
from ihe_xds.errors import (
    SEVERITY_WARNING,
    XDS_REGISTRY_METADATA_ERROR,
    XDS_STORED_QUERY_MISSING_PARAM,
    XDS_STORED_QUERY_PARAM_NUMBER,
    XDS_UNKNOWN_STORED_QUERY,
    RegistryError,
    registry_error,
)
from ihe_xds.stored_query.kinds import QUERIES
from ihe_xds.stored_query.parameters import (
    METADATA_LEVEL,
    MULTI_SLOT,
    SINGLE,
    NotAQuery,
    StoredQuery,
    StoredQueryError,
    parse_value,
    typed_value,
)
from ihe_xds.vocabulary import NS_QUERY, NS_RIM, q

# The values one Slot may hold (its OR-list, across its rim:Value elements), as many as one
# FHIR search parameter takes (`MAX_VALUES`): a by-id query's objects are each searched under
# up to two identifier systems and run in parts (`transactions._searches_in_chunks`), and
# 5,000 uniqueIds in one GetDocuments would be 50 searches for one request.
MAX_SLOT_VALUES = MAX_VALUES


def parse_stored_query(element: etree._Element) -> StoredQuery:
    """Read an AdhocQueryRequest; raise NotAQuery (no query at all) or StoredQueryError."""
    if element.tag != q(NS_QUERY, "AdhocQueryRequest"):
        raise NotAQuery(f"{etree.QName(element).localname} is not an AdhocQueryRequest")
    adhoc = element.find(q(NS_RIM, "AdhocQuery"))
    if adhoc is None:
        raise NotAQuery("AdhocQueryRequest without AdhocQuery")
    option = element.find(q(NS_QUERY, "ResponseOption"))
    return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
    query_id = (adhoc.get("id") or "").strip()
    definition = QUERIES.get(query_id)
    if definition is None:
        raise StoredQueryError(
            [
                registry_error(
                    XDS_UNKNOWN_STORED_QUERY,
                    f"unknown stored query id {query_id!r}",
                    "AdhocQuery/@id",
                )
            ]
        )
    errors: list[RegistryError] = []
    if return_type not in ("LeafClass", "ObjectRef"):
        errors.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR,
                f"unknown returnType {return_type!r}",
                "ResponseOption/@returnType",
            )
        )
    query = StoredQuery(query_id, definition.name, return_type)
    for slot in adhoc.findall(q(NS_RIM, "Slot")):
        name = (slot.get("name") or "").strip()
        kind = definition.params.get(name)
        if kind is None:
            query.warnings.append(
                RegistryError(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"parameter {name!r} is not a parameter of {definition.name}; ignored",
                    name,
                    SEVERITY_WARNING,
                )
            )
            continue
        raw_values = [
            v.text or "" for v in slot.iterfind(f"{q(NS_RIM, 'ValueList')}/{q(NS_RIM, 'Value')}")
        ]
        single = definition.takes_one_value(name)
        group: list[object] = []
        try:
            for raw in raw_values:
                if kind == METADATA_LEVEL and raw.strip() not in ("1", "2"):
                    raise ValueError("$MetadataLevel is the number 1 or 2")
                values, is_list = parse_value(raw)
                # A one-item list for a single-valued id is read as that value (lenient
                # with clients that list everything); two values are refused below.
                if kind in SINGLE and is_list:
                    raise _Number("takes a single value, not a list")
                group += [typed_value(kind, value) for value in values]
        except _Number as exc:
            errors.append(registry_error(XDS_STORED_QUERY_PARAM_NUMBER, f"{name} {exc}", name))
            continue
        except ValueError as exc:
            errors.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR, f"invalid value for {name}: {exc}", name
                )
            )
            continue
        if not group:
            errors.append(registry_error(XDS_REGISTRY_METADATA_ERROR, f"{name} has no value", name))
            continue
        if len(group) > MAX_SLOT_VALUES:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_PARAM_NUMBER,
                    f"{name} holds {len(group)} values; the limit is {MAX_SLOT_VALUES} values"
                    " in one Slot (MAX_SLOT_VALUES)",
                    name,
                )
            )
            continue
        if single and len(group) > 1:
            errors.append(
                registry_error(XDS_STORED_QUERY_PARAM_NUMBER, f"{name} takes a single value", name)
            )
            continue
        if name in query.params and name not in MULTI_SLOT:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_PARAM_NUMBER, f"{name} given in more than one Slot", name
                )
            )
            continue
        query.params.setdefault(name, []).append(group)
    seen = set(query.params) | {e.location for e in errors}
    for name in definition.required:
        if name not in seen:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_MISSING_PARAM, f"{definition.name} requires {name}", name
                )
            )
    if definition.one_of:
        given = [name for name in definition.one_of if name in seen]
        if not given:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_MISSING_PARAM,
                    f"{definition.name} requires one of {', '.join(definition.one_of)}",
                    definition.one_of[0],
                )
            )
        elif len(given) > 1:
            errors.append(
                registry_error(
                    XDS_STORED_QUERY_PARAM_NUMBER,
                    f"{definition.name} takes only one of {', '.join(definition.one_of)}",
                    given[1],
                )
            )
    if errors:
        raise StoredQueryError(errors)
    return query


class _Number(Exception):
    pass

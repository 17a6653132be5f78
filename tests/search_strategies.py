"""Hypothesis strategies: random valid resources of our types and random searches over them.

For the cross-engine property test (SQLite vs MongoDB vs fhir_server.search.evaluate). The
value space is deliberately small (three patients, a handful of codes, dates and names that
collide on purpose, accents included) so that random queries actually match something and
the interesting edges (precision ranges, `:not` on missing values, normalization) show up.

- `corpora()` -> dict[(type, id), resource] with Patients, DocumentReferences, Lists and
  Communications referring to each other;
- `search_params(resource_type)` -> list[(name, value)] as an HTTP query would carry them,
  accepted by parse_search;
- `searches()` -> (resource_type, params).
"""

from __future__ import annotations

from hypothesis import strategies as st

INS = "urn:oid:1.2.250.1.213.1.4.8"
RFC3986 = "urn:ietf:rfc:3986"
LOINC = "http://loinc.org"
CONFIDENTIALITY = "urn:oid:1.2.250.1.213.1.1.4.13"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
IHE_EXT = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"

PATIENT_IDS = ("p1", "p2", "p3")
DATES = (
    "2023",
    "2023-06",
    "2023-06-15",
    "2023-06-15T10:00:00Z",
    "2023-06-15T10:00:00+02:00",
    "2023-06-15T23:30:00-01:00",
    "2024-01-01",
    "2024-01-01T00:00:00.500Z",
)
INSTANTS = ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00.001Z", "2024-03-01T12:00:00+01:00")
NAMES = ("Zoé", "zoe", "Éloïse", "Dupont", "Du Pont", "DUPRÉ", "Dupré-Martin")
TEXTS = ("Compte rendu", "compte-rendu opératoire", "Résultats biologie", "CR  d'hospitalisation")
TYPE_CODES = (
    (LOINC, "11488-4", "Consult note"),
    (LOINC, "34133-9", "Summary of episode note"),
    (LOINC, "11502-2", "Laboratory report"),
)
CATEGORY_CODES = ((LOINC, "11369-6"), ("urn:oid:1.2.250.1.213.1.1.4.1", "10"))
SECURITY = ((CONFIDENTIALITY, "MASQUE_PS"), (CONFIDENTIALITY, "INVISIBLE_PATIENT"), (None, "N"))
IDENTIFIER_SYSTEMS = (INS, RFC3986, None)
IDENTIFIER_VALUES = ("1", "12", "123")
GENDERS = ("male", "female", "other", "unknown")
DOC_STATUS = ("current", "superseded", "entered-in-error")

dates = st.sampled_from(DATES)


def _coding(system: str | None, code: str, display: str | None = None) -> dict:
    coding: dict = {"code": code}
    if system:
        coding["system"] = system
    if display:
        coding["display"] = display
    return coding


@st.composite
def identifiers(draw: st.DrawFn) -> dict:
    identifier: dict = {"value": draw(st.sampled_from(IDENTIFIER_VALUES))}
    system = draw(st.sampled_from(IDENTIFIER_SYSTEMS))
    if system:
        identifier["system"] = system
    if draw(st.booleans()):
        identifier["type"] = {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/v2-0203",
                    draw(st.sampled_from(("NH", "MR"))),
                )
            ]
        }
    return identifier


# The labels a Patient may carry: no DMP masking label (R10, R14: the normal form refuses
# one on a Patient, a Consent or a RelatedPerson).
PATIENT_SECURITY = tuple(pair for pair in SECURITY if pair[0] != CONFIDENTIALITY)


@st.composite
def metas(draw: st.DrawFn, labels: tuple = SECURITY) -> dict:
    meta: dict = {"lastUpdated": draw(st.sampled_from(INSTANTS))}
    security = draw(st.lists(st.sampled_from(labels), max_size=2, unique=True))
    if security:
        meta["security"] = [_coding(s, c) for s, c in security]
    if draw(st.booleans()):
        meta["tag"] = [_coding("http://example.org/tags", draw(st.sampled_from(("a", "b"))))]
    return meta


def _patient_ref() -> st.SearchStrategy[dict]:
    return st.sampled_from(PATIENT_IDS).map(lambda p: {"reference": f"Patient/{p}"})


@st.composite
def patients(draw: st.DrawFn, patient_id: str) -> dict:
    patient: dict = {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": draw(metas(PATIENT_SECURITY)),
    }
    if draw(st.booleans()):
        patient["identifier"] = draw(st.lists(identifiers(), min_size=1, max_size=2))
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3))
    if names:
        patient["name"] = [{"family": names[0], "given": names[1:]}]
    if draw(st.booleans()):
        patient["birthDate"] = draw(
            st.sampled_from(("1980", "1980-05", "1980-05-17", "2023-06-15"))
        )
    if draw(st.booleans()):
        patient["gender"] = draw(st.sampled_from(GENDERS))
    if draw(st.booleans()):
        patient["active"] = draw(st.booleans())
    deceased = draw(st.sampled_from((None, True, False, "2023-06-15")))
    if isinstance(deceased, bool):
        patient["deceasedBoolean"] = deceased
    elif deceased:
        patient["deceasedDateTime"] = deceased
    if draw(st.booleans()):
        patient["telecom"] = [
            {
                "system": draw(st.sampled_from(("phone", "email"))),
                "value": draw(st.sampled_from(("0601", "a@b.fr"))),
            }
        ]
    others = [p for p in PATIENT_IDS if p != patient_id]
    if draw(st.booleans()):
        patient["link"] = [
            {"other": {"reference": f"Patient/{draw(st.sampled_from(others))}"}, "type": "seealso"}
        ]
    return patient


@st.composite
def document_references(draw: st.DrawFn, doc_id: str, doc_ids: tuple[str, ...]) -> dict:
    system, code, display = draw(st.sampled_from(TYPE_CODES))
    doc: dict = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "meta": draw(metas()),
        "status": draw(st.sampled_from(DOC_STATUS)),
        "type": {"coding": [_coding(system, code, display)]},
        "content": [
            {"attachment": {"contentType": draw(st.sampled_from(("text/xml", "application/pdf")))}}
        ],
    }
    if draw(st.booleans()):
        doc["type"]["text"] = draw(st.sampled_from(TEXTS))
    if draw(st.booleans()):
        doc["subject"] = draw(_patient_ref())
    if draw(st.booleans()):
        doc["date"] = draw(st.sampled_from(INSTANTS))
    if draw(st.booleans()):
        doc["content"][0]["attachment"]["creation"] = draw(dates)
    if draw(st.booleans()):
        doc["description"] = draw(st.sampled_from(TEXTS))
    if draw(st.booleans()):
        doc["category"] = [{"coding": [_coding(*draw(st.sampled_from(CATEGORY_CODES)))]}]
    labels = draw(st.lists(st.sampled_from(SECURITY), max_size=2, unique=True))
    if labels:
        doc["securityLabel"] = [{"coding": [_coding(s, c)]} for s, c in labels]
    if draw(st.booleans()):
        doc["masterIdentifier"] = {"system": RFC3986, "value": f"urn:oid:1.2.3.{doc_id}"}
    if draw(st.booleans()):
        doc["identifier"] = [draw(identifiers())]
    author_kind = draw(st.sampled_from(("none", "identifier", "contained", "role")))
    if author_kind == "identifier":
        doc["author"] = [
            {
                "identifier": {
                    "system": RPPS,
                    "value": draw(st.sampled_from(("810000008101", "810000008102"))),
                }
            }
        ]
    elif author_kind == "contained":
        doc["contained"] = [
            {
                "resourceType": "Practitioner",
                "id": "a1",
                "identifier": [{"system": RPPS, "value": "810000008101"}],
            }
        ]
        doc["author"] = [{"reference": "#a1"}]
    elif author_kind == "role":
        doc["contained"] = [
            {
                "resourceType": "Practitioner",
                "id": "a1",
                "identifier": [{"system": RPPS, "value": "810000008102"}],
            },
            {"resourceType": "PractitionerRole", "id": "r1", "practitioner": {"reference": "#a1"}},
        ]
        doc["author"] = [{"reference": "#r1"}]
    if draw(st.booleans()):
        period: dict = {}
        if draw(st.booleans()):
            period["start"] = draw(dates)
        if draw(st.booleans()):
            period["end"] = "2024-01-01"
        if period:
            doc["context"] = {"period": period}
    others = [d for d in doc_ids if d != doc_id]
    if others and draw(st.booleans()):
        doc["relatesTo"] = [
            {
                "code": draw(st.sampled_from(("replaces", "appends"))),
                "target": {"reference": f"DocumentReference/{draw(st.sampled_from(others))}"},
            }
        ]
    return doc


@st.composite
def lists(draw: st.DrawFn, list_id: str, doc_ids: tuple[str, ...]) -> dict:
    resource: dict = {
        "resourceType": "List",
        "id": list_id,
        "meta": draw(metas()),
        "status": draw(st.sampled_from(("current", "retired"))),
        "mode": "working",
        "code": {
            "coding": [_coding(MHD_LIST_TYPES, draw(st.sampled_from(("submissionset", "folder"))))]
        },
    }
    if draw(st.booleans()):
        resource["subject"] = draw(_patient_ref())
    if draw(st.booleans()):
        resource["date"] = draw(st.sampled_from(INSTANTS))
    if draw(st.booleans()):
        resource["title"] = draw(st.sampled_from(TEXTS))
    if draw(st.booleans()):
        resource["identifier"] = [draw(identifiers())]
    extensions = []
    if draw(st.booleans()):
        extensions.append(
            {
                "url": IHE_EXT + "ihe-sourceId",
                "valueIdentifier": {
                    "value": draw(st.sampled_from(("urn:oid:1.2.250.1", "urn:oid:1.2.250.2")))
                },
            }
        )
    if draw(st.booleans()):
        extensions.append(
            {
                "url": IHE_EXT + "ihe-designationType",
                "valueCodeableConcept": {
                    "coding": [_coding(LOINC, draw(st.sampled_from(("11488-4", "34133-9"))))]
                },
            }
        )
    if extensions:
        resource["extension"] = extensions
    items = draw(st.lists(st.sampled_from(doc_ids), max_size=3, unique=True)) if doc_ids else []
    if items:
        resource["entry"] = [{"item": {"reference": f"DocumentReference/{d}"}} for d in items]
    return resource


@st.composite
def communications(draw: st.DrawFn, communication_id: str) -> dict:
    resource: dict = {
        "resourceType": "Communication",
        "id": communication_id,
        "meta": draw(metas()),
        "status": draw(st.sampled_from(("completed", "in-progress"))),
    }
    if draw(st.booleans()):
        resource["subject"] = draw(_patient_ref())
    if draw(st.booleans()):
        resource["recipient"] = [draw(_patient_ref())]
    if draw(st.booleans()):
        resource["sent"] = draw(st.sampled_from(INSTANTS))
    if draw(st.booleans()):
        resource["category"] = [
            {
                "coding": [
                    _coding(
                        "http://example.org/cat", draw(st.sampled_from(("notification", "alert")))
                    )
                ]
            }
        ]
    return resource


@st.composite
def corpora(draw: st.DrawFn) -> dict[tuple[str, str], dict]:
    """A consistent little record: patients p1..p3, documents, lists, communications."""
    corpus: dict[tuple[str, str], dict] = {}
    for patient_id in PATIENT_IDS[: draw(st.integers(1, 3))]:
        corpus[("Patient", patient_id)] = draw(patients(patient_id))
    doc_ids = tuple(f"d{i}" for i in range(1, draw(st.integers(0, 6)) + 1))
    for doc_id in doc_ids:
        corpus[("DocumentReference", doc_id)] = draw(document_references(doc_id, doc_ids))
    for index in range(1, draw(st.integers(0, 2)) + 1):
        corpus[("List", f"l{index}")] = draw(lists(f"l{index}", doc_ids))
    for index in range(1, draw(st.integers(0, 2)) + 1):
        corpus[("Communication", f"c{index}")] = draw(communications(f"c{index}"))
    return corpus


# -- searches ---------------------------------------------------------------------------------

_PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_SEARCH_DATES = ("2023", "2023-06", "2023-06-15", "2023-06-15T08:00:00Z", "2024-01-01", "2024")


def _token_value(pairs: tuple[tuple[str | None, str], ...]) -> st.SearchStrategy[str]:
    @st.composite
    def build(draw: st.DrawFn) -> str:
        system, code = draw(st.sampled_from(pairs))
        form = draw(st.sampled_from(("code", "system|code", "|code", "system|")))
        if form == "code" or (system is None and form != "|code"):
            return code
        if form == "|code":
            return f"|{code}"
        if form == "system|":
            return f"{system}|"
        return f"{system}|{code}"

    return build()


_date_value = st.builds(
    lambda p, d: p + d, st.sampled_from(_PREFIXES), st.sampled_from(_SEARCH_DATES)
)
_name_value = st.sampled_from(("zo", "Zoé", "ZOE", "dup", "du pont", "eloise", "martin", "x"))
_patient_value = st.sampled_from(("Patient/p1", "p2", "Patient/p3", "Patient/p9"))
_identifier_pairs = tuple((s, v) for s in (INS, RFC3986, None) for v in IDENTIFIER_VALUES)
_security_pairs = SECURITY

_CRITERIA: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "Patient": {
        "name": _name_value,
        "family": _name_value,
        "name:exact": st.sampled_from(NAMES),
        "given:contains": st.sampled_from(("o", "e", "oi", "zoe")),
        "birthdate": _date_value,
        "death-date": _date_value,
        "gender": _token_value(tuple((None, g) for g in GENDERS)),
        "gender:not": st.sampled_from(GENDERS),
        "deceased": st.sampled_from(("true", "false")),
        "active": st.sampled_from(("true", "false")),
        "identifier": _token_value(_identifier_pairs),
        "identifier:of-type": st.sampled_from(
            (
                "http://terminology.hl7.org/CodeSystem/v2-0203|NH|1",
                "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12",
            )
        ),
        "telecom": st.sampled_from(("0601", "phone|0601", "email|a@b.fr")),
        "link": _patient_value,
        "_security": _token_value(_security_pairs),
        "_lastUpdated": st.builds(
            lambda p, d: p + d,
            st.sampled_from(_PREFIXES),
            st.sampled_from(("2024-01-01", "2024-01-01T00:00:00Z", "2024-03")),
        ),
        "_has:DocumentReference:patient:status": st.sampled_from(DOC_STATUS),
        "_has:DocumentReference:subject:type": _token_value(
            tuple((s, c) for s, c, _ in TYPE_CODES)
        ),
        "birthdate:missing": st.sampled_from(("true", "false")),
    },
    "DocumentReference": {
        "status": st.sampled_from(DOC_STATUS + ("current,superseded",)),
        "status:not": st.sampled_from(DOC_STATUS),
        "type": _token_value(tuple((s, c) for s, c, _ in TYPE_CODES)),
        "type:text": st.sampled_from(("consult", "compte", "resultats", "summary")),
        "category": _token_value(CATEGORY_CODES),
        "security-label": _token_value(_security_pairs),
        "security-label:not": st.sampled_from(("MASQUE_PS", f"{CONFIDENTIALITY}|MASQUE_PS")),
        "date": _date_value,
        "creation": _date_value,
        "period": _date_value,
        "description": _name_value | st.sampled_from(("compte", "cr d", "resultats")),
        "description:contains": st.sampled_from(("rendu", "hospit", "bio")),
        "patient": _patient_value,
        "subject:Patient": st.sampled_from(("p1", "p2")),
        "subject:missing": st.sampled_from(("true", "false")),
        "patient.identifier": _token_value(_identifier_pairs),
        "patient.name": _name_value,
        "subject:Patient.gender": st.sampled_from(GENDERS),
        "author-identifier": st.sampled_from((f"{RPPS}|810000008101", "810000008102", f"{RPPS}|")),
        "author:identifier": st.sampled_from((f"{RPPS}|810000008101", "810000008102")),
        "identifier": st.sampled_from((f"{RFC3986}|urn:oid:1.2.3.d1", "urn:oid:1.2.3.d2", "12")),
        "relatesto": st.sampled_from(("DocumentReference/d1", "d2")),
        "relation": st.sampled_from(("replaces", "appends")),
        "relationship": st.sampled_from(
            ("replaces$DocumentReference/d1", "appends$DocumentReference/d2")
        ),
        "contenttype": st.sampled_from(("text/xml", "application/pdf")),
        "_lastUpdated": _date_value,
        "_tag": st.sampled_from(("http://example.org/tags|a", "b")),
        "_id": st.sampled_from(("d1", "d2,d3", "d9")),
    },
    "List": {
        "code": st.sampled_from(("submissionset", f"{MHD_LIST_TYPES}|folder")),
        "status": st.sampled_from(("current", "retired")),
        "patient": _patient_value,
        "item": st.sampled_from(("DocumentReference/d1", "d2")),
        "sourceId": st.sampled_from(("urn:oid:1.2.250.1", "urn:oid:1.2.250.2")),
        "designationType": _token_value(((LOINC, "11488-4"), (LOINC, "34133-9"))),
        "date": _date_value,
        "title": _name_value | st.sampled_from(("compte", "resultats")),
        "identifier": _token_value(_identifier_pairs),
        "item:DocumentReference.status": st.sampled_from(DOC_STATUS),
    },
    "Communication": {
        "status": st.sampled_from(("completed", "in-progress")),
        "subject": _patient_value,
        "recipient": _patient_value,
        "sent": _date_value,
        "category": st.sampled_from(("notification", "http://example.org/cat|alert")),
        "patient.gender": st.sampled_from(GENDERS),
    },
}
_SORTS: dict[str, tuple[str, ...]] = {
    "Patient": ("name", "-birthdate", "birthdate", "_lastUpdated", "-_id", "gender,-name"),
    "DocumentReference": ("date", "-date", "-creation,_id", "type", "period", "-period", "patient"),
    "List": ("date", "-date", "title", "-code"),
    "Communication": ("sent", "-sent", "status"),
}

SEARCH_TYPES = tuple(_CRITERIA)


@st.composite
def search_params(draw: st.DrawFn, resource_type: str) -> list[tuple[str, str]]:
    criteria = _CRITERIA[resource_type]
    names = draw(st.lists(st.sampled_from(sorted(criteria)), max_size=3))
    params = [(name, draw(criteria[name])) for name in names]
    if draw(st.booleans()):
        params.append(("_sort", draw(st.sampled_from(_SORTS[resource_type]))))
    return params


@st.composite
def searches(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    resource_type = draw(st.sampled_from(SEARCH_TYPES))
    return resource_type, draw(search_params(resource_type))

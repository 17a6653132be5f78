"""Realistic data: patients with valid INS, documents with DMP metadata distributions."""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.resources.ins import nir_key
from fhir_server.terminology import (
    SYSTEM_ACT_REASON,
    SYSTEM_CONSENT_SCOPE,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_INS_NIR,
    SYSTEM_LOINC,
    SYSTEM_PARTICIPATION_TYPE,
    SYSTEM_RFC3986,
    SYSTEM_V3_CONFIDENTIALITY,
)


def nir(n: int) -> str:
    """A valid 15-character INS-NIR for person number n (deterministic)."""
    sex = 1 + n % 2
    year = 40 + n % 60
    month = 1 + n % 12
    body = f"{sex}{year:02d}{month:02d}75{(n // 1000) % 1000:03d}{n % 1000:03d}"
    return body + f"{nir_key(body):02d}"


def make_patient(n: int) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": nir(n)}],
        "name": [{"family": f"Famille{n}", "given": ["Prénom"]}],
        "gender": "female" if n % 2 else "male",
        "birthDate": f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}",
    }


# -- a realistic DMP corpus ----------------------------------------------------------------
#
# Distributions follow what the DMP holds: mostly consultation, hospital and lab reports,
# nearly all "normal" confidentiality, a few percent masked to professionals, a handful
# invisible to the patient, 5 % superseded by a later version. Everything is drawn from a
# seeded random.Random, so a corpus is reproducible from (seed, sizes).

DMP_DOCUMENT_PROFILE = "https://dmp-server.fr/fhir/StructureDefinition/dmp-document-reference"
SYSTEM_TRE_A03 = "urn:oid:1.2.250.1.213.1.1.4.1"
SYSTEM_TRE_R02 = "urn:oid:1.2.250.1.71.4.2.4"
SYSTEM_TRE_A01 = "urn:oid:1.2.250.1.213.1.1.4.9"
SYSTEM_IHE_FORMAT = "urn:oid:1.3.6.1.4.1.19376.1.2.3"
SYSTEM_TRE_A06 = "urn:oid:1.2.250.1.213.1.1.4.2.282"
SYSTEM_PROFESSION = "urn:oid:1.2.250.1.71.1.2.7"

# (LOINC type, display, TRE_A03 class, weight): the class each type is filed under.
DOCUMENT_TYPES = (
    ("11488-4", "CR ou fiche de consultation ou de visite", "10", 30),
    ("11502-2", "CR d'examens biologiques", "10", 20),
    ("34112-3", "CR hospitalier (séjour)", "10", 10),
    ("18748-4", "CR d'imagerie médicale", "31", 10),
    ("11490-0", "Lettre de liaison à la sortie d'un établissement de soins", "10", 8),
    ("34133-9", "Synthèse d'épisode de soins", "11", 5),
    ("60591-5", "Synthèse médicale", "11", 5),
    ("57833-6", "Prescription de produits de santé", "42", 4),
    ("60593-1", "Dispensation médicamenteuse", "43", 3),
    ("34874-8", "CR opératoire", "10", 2),
    ("89601-9", "Certificat médical", "52", 1),
    ("18776-5", "Plan personnalisé de soins", "44", 1),
)
# Types (and their ASS_X16 classes) of classes DOCUMENT_TYPES seldom reach, drawn for a few
# documents. Every pair here is one JDV_J66 / ASS_X16 admits (profiles/terminology/nos/).
OTHER_TYPES = (
    ("77604-7", "Planification thérapeutique", "44"),
    ("80565-5", "CR d'administration de médicaments", "45"),
)
FACILITIES = tuple(f"SA0{n}" for n in range(1, 10))
FACILITY_WEIGHTS = (40, 2, 10, 15, 8, 2, 12, 8, 3)
PRACTICE_SETTINGS = ("ETABLISSEMENT", "AMBULATOIRE", "HAD", "SAMU_SMUR", "DEPISTAGE")
PRACTICE_WEIGHTS = (50, 40, 5, 3, 2)
# (formatCode system, code, contentType)
FORMATS = (
    (SYSTEM_IHE_FORMAT, "urn:ihe:iti:xds-sd:pdf:2008", "application/pdf", 55),
    (SYSTEM_IHE_FORMAT, "urn:ihe:iti:xds:2017:mimeTypeSufficient", "application/pdf", 15),
    (SYSTEM_IHE_FORMAT, "urn:ihe:lab:xd-lab:2008", "text/xml", 15),
    (SYSTEM_TRE_A06, "urn:asip:ci-sis:vsm:2012", "text/xml", 5),
    (SYSTEM_TRE_A06, "urn:asip:ci-sis:ldl-ses:2017", "text/xml", 5),
    (SYSTEM_IHE_FORMAT, "urn:ihe:iti-fr:xds-sd:jpeg:2010", "image/jpeg", 5),
)
CONFIDENTIALITY = (("N", 85), ("R", 12), ("V", 3))
PROFESSIONS = (
    ("10", "Médecin", 70),
    ("21", "Pharmacien", 10),
    ("60", "Infirmier", 10),
    ("40", "Chirurgien-dentiste", 5),
    ("50", "Sage-femme", 5),
)
FAMILIES = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "Roux",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupré",
)
GIVENS = (
    "Marie",
    "Jean",
    "Zoé",
    "Éloïse",
    "Pierre",
    "Camille",
    "Lucas",
    "Léa",
    "Hugo",
    "Chloé",
    "Louis",
    "Inès",
    "Jules",
    "Manon",
    "Noé",
)
TEN_YEARS_END = datetime(2025, 1, 1, tzinfo=UTC)
TEN_YEARS = timedelta(days=3653)


def _weighted(rng: random.Random, items: tuple) -> tuple:
    return rng.choices(items, weights=[item[-1] for item in items])[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Professional:
    idnat: str
    family: str
    given: str
    profession: str
    profession_display: str


def professionals(count: int, seed: int = 7) -> list[Professional]:
    """A pool of health professionals (IdNat_PS "8" + RPPS-like digits)."""
    rng = random.Random(seed)
    pool = []
    for n in range(count):
        code, display, _ = _weighted(rng, PROFESSIONS)
        pool.append(
            Professional(
                f"8{10000000000 + n:011d}", rng.choice(FAMILIES), rng.choice(GIVENS), code, display
            )
        )
    return pool


def make_ins_patient(n: int, patient_id: str, rng: random.Random) -> dict:
    """A Patient passing the dmp-patient-ins profile: INS-NIR with its key, name, gender, birthDate."""
    patient = make_patient(n)
    patient["id"] = patient_id
    patient["name"] = [
        {"use": "official", "family": rng.choice(FAMILIES).upper(), "given": [rng.choice(GIVENS)]}
    ]
    patient["identifier"][0]["type"] = {
        "coding": [{"system": "http://interopsante.org/CodeSystem/v2-0203", "code": "INS-NIR"}]
    }
    return patient


def make_document_reference(
    rng: random.Random,
    document_id: str,
    patient_id: str,
    patient_nir: str,
    pool: Sequence[Professional],
) -> dict:
    """A DMP DocumentReference (MHD comprehensive metadata, dmp-document-reference profile)."""
    type_code, type_display, class_code, _ = _weighted(rng, DOCUMENT_TYPES)
    if rng.random() < 0.01:
        type_code, type_display, class_code = rng.choice(OTHER_TYPES)
    format_system, format_code, content_type, _ = _weighted(rng, FORMATS)
    author = rng.choice(pool)
    facility = rng.choices(FACILITIES, weights=FACILITY_WEIGHTS)[0]
    practice = rng.choices(PRACTICE_SETTINGS, weights=PRACTICE_WEIGHTS)[0]
    start = TEN_YEARS_END - TEN_YEARS * rng.random()
    created = start + timedelta(hours=rng.uniform(0.5, 72))
    confidentiality = _weighted(rng, CONFIDENTIALITY)[0]
    labels = [{"coding": [{"system": SYSTEM_V3_CONFIDENTIALITY, "code": confidentiality}]}]
    if rng.random() < 0.05:
        labels.append({"coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}]})
    if rng.random() < 0.01:
        labels.append(
            {"coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]}
        )
    size = int(rng.lognormvariate(11, 1.2))
    digest = hashlib.sha1(f"{document_id}:{size}".encode()).digest()
    binary_id = _uuid(rng)
    return {
        "resourceType": "DocumentReference",
        "id": document_id,
        "meta": {"profile": [DMP_DOCUMENT_PROFILE]},
        "contained": [
            {
                "resourceType": "Practitioner",
                "id": "author1",
                "identifier": [{"system": SYSTEM_IDNAT_PS, "value": author.idnat}],
                "name": [{"family": author.family, "given": [author.given]}],
            },
            {
                "resourceType": "PractitionerRole",
                "id": "role1",
                "practitioner": {"reference": "#author1"},
                "code": [
                    {
                        "coding": [
                            {
                                "system": SYSTEM_PROFESSION,
                                "code": author.profession,
                                "display": author.profession_display,
                            }
                        ]
                    }
                ],
            },
            {
                "resourceType": "Patient",
                "id": "patient-info",
                "identifier": [{"system": SYSTEM_INS_NIR, "value": patient_nir}],
            },
        ],
        "masterIdentifier": {
            "system": SYSTEM_RFC3986,
            "value": f"urn:oid:1.2.250.1.999.{rng.randrange(1, 500)}.{document_id[:8]}.{rng.getrandbits(32)}",
        },
        "identifier": [{"system": SYSTEM_RFC3986, "value": f"urn:uuid:{document_id}"}],
        "status": "superseded" if rng.random() < 0.05 else "current",
        "type": {"coding": [{"system": SYSTEM_LOINC, "code": type_code, "display": type_display}]},
        "category": [{"coding": [{"system": SYSTEM_TRE_A03, "code": class_code}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": _instant(created),
        "author": [{"reference": "#role1"}],
        "authenticator": {"reference": "#role1"},
        "description": type_display,
        "securityLabel": labels,
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "language": "fr-FR",
                    "url": f"Binary/{binary_id}",
                    "size": size,
                    "hash": base64.b64encode(digest).decode(),
                    "title": type_display,
                    "creation": _instant(created),
                },
                "format": {"system": format_system, "code": format_code},
            }
        ],
        "context": {
            "period": {"start": _instant(start), "end": _instant(created)},
            "facilityType": {"coding": [{"system": SYSTEM_TRE_R02, "code": facility}]},
            "practiceSetting": {"coding": [{"system": SYSTEM_TRE_A01, "code": practice}]},
            "sourcePatientInfo": {"reference": "#patient-info"},
        },
    }


def _practitioner_actor(idnat: str) -> dict:
    return {
        "role": {"coding": [{"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}]},
        "reference": {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}},
    }


def make_consent(
    rng: random.Random, consent_id: str, patient_id: str, pool: Sequence[Professional]
) -> dict:
    """The patient's DMP Consent (docs/access-rules.md, "Consent shapes"): a root permit with
    a few exceptions (blocked / authorized professionals, oppositions)."""
    exceptions = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        exceptions.append({"type": "deny", "actor": [_practitioner_actor(rng.choice(pool).idnat)]})
    if rng.random() < 0.2:
        exceptions.append(
            {"type": "permit", "actor": [_practitioner_actor(rng.choice(pool).idnat)]}
        )
    if rng.random() < 0.05:
        exceptions.append(
            {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": "BTG"}]}
        )
    if rng.random() < 0.03:
        exceptions.append(
            {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": "ETREAT"}]}
        )
    provision: dict = {"type": "permit"}
    if exceptions:
        provision["provision"] = exceptions
    return {
        "resourceType": "Consent",
        "id": consent_id,
        "status": "active",
        "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
        # The patient also gave their initial consent to the care team's access (CE
        # 15/10/2025, `access/initial_consent.py`): the authorized professionals read.
        "category": [
            {"coding": [{"system": SYSTEM_LOINC, "code": "59284-0"}]},
            {"coding": [INITIAL_CONSENT_CODING]},
        ],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": _instant(TEN_YEARS_END - TEN_YEARS * rng.random()),
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": provision,
    }


def make_communication(
    rng: random.Random, communication_id: str, patient_id: str, document_id: str
) -> dict:
    """A notification to the patient that a document was deposited in the record."""
    sent = TEN_YEARS_END - TEN_YEARS * rng.random()
    return {
        "resourceType": "Communication",
        "id": communication_id,
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                        "code": "notification",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "recipient": [{"reference": f"Patient/{patient_id}"}],
        "about": [{"reference": f"DocumentReference/{document_id}"}],
        "sent": _instant(sent),
        "payload": [{"contentString": "Un nouveau document a été ajouté à votre dossier."}],
    }


def make_audit_event(
    rng: random.Random, audit_id: str, patient_id: str, document_id: str, who: Professional
) -> dict:
    """A BALP-style read AuditEvent: a professional read one of the patient's documents."""
    recorded = TEN_YEARS_END - TEN_YEARS * rng.random()
    return {
        "resourceType": "AuditEvent",
        "id": audit_id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": _instant(recorded),
        "outcome": "0",
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": SYSTEM_IDNAT_PS, "value": who.idnat},
                    "display": f"{who.given} {who.family}",
                },
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": "dmp-server"}},
        "entity": [
            {
                "what": {"reference": f"Patient/{patient_id}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                },
            },
            {
                "what": {"reference": f"DocumentReference/{document_id}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                },
            },
        ],
    }


@dataclass(frozen=True)
class CorpusPlan:
    """How many of everything: ~`per_patient` documents per patient, `heavy` patients with
    `heavy_documents` each (for deep paging), one Consent per patient, and Communications
    and AuditEvents as fractions of the documents."""

    documents: int
    per_patient: int = 50
    heavy: int = 5
    heavy_documents: int = 600
    professionals: int = 3000
    communication_rate: float = 0.05
    audit_rate: float = 0.05
    seed: int = 2024

    @property
    def heavy_total(self) -> int:
        return min(self.heavy * self.heavy_documents, self.documents // 2)

    @property
    def patients(self) -> int:
        regular = self.documents - self.heavy_total
        return self.heavy + max(1, regular // self.per_patient)


def patient_id_of(n: int) -> str:
    return str(uuid.UUID(int=n + (0x5A17 << 112), version=4))


def dmp_corpus(plan: CorpusPlan) -> Iterator[dict]:
    """Every resource of the corpus, patient by patient (Patient, Consent, its documents,
    their Communications and AuditEvents), so that a batch never refers ahead."""
    for n in range(plan.patients):
        yield from patient_resources(plan, n)


def patient_resources(plan: CorpusPlan, n: int) -> list[dict]:
    """The resources of patient `n` in corpus order (see `dmp_corpus`).

    Each patient draws from its own random stream (seeded with the plan's seed and `n`), so
    any range of patients can be generated on its own, e.g. by the bulk loader's worker
    processes, and still give the same corpus.
    """
    rng = random.Random(f"{plan.seed}/{n}")
    pool = _professionals(plan.professionals, plan.seed)
    patient_id = patient_id_of(n)
    patient = make_ins_patient(n, patient_id, rng)
    resources = [patient]
    if rng.random() < 0.9:
        resources.append(make_consent(rng, _uuid(rng), patient_id, pool))
    count = patient_documents(plan, n)
    nir_value = patient["identifier"][0]["value"]
    for _ in range(count):
        document_id = _uuid(rng)
        resources.append(make_document_reference(rng, document_id, patient_id, nir_value, pool))
        if rng.random() < plan.communication_rate:
            resources.append(make_communication(rng, _uuid(rng), patient_id, document_id))
        if rng.random() < plan.audit_rate:
            resources.append(
                make_audit_event(rng, _uuid(rng), patient_id, document_id, rng.choice(pool))
            )
    return resources


def patient_documents(plan: CorpusPlan, n: int) -> int:
    """How many DocumentReferences patient `n` has: `heavy_documents` for the first `heavy`
    patients, the rest spread exactly (no rounding drift) over the regular patients."""
    heavy_each = plan.heavy_total // plan.heavy if plan.heavy else 0
    if n < plan.heavy:
        return heavy_each
    regular_patients = plan.patients - plan.heavy
    regular_docs = plan.documents - heavy_each * plan.heavy
    index = n - plan.heavy
    return regular_docs * (index + 1) // regular_patients - regular_docs * index // regular_patients


@functools.cache
def _professionals(count: int, seed: int) -> tuple[Professional, ...]:
    return tuple(professionals(count, seed))

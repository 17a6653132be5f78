"""Index extraction cost per resource: compiled FHIRPath subset vs fhirpathpy.

Run: python benchmarks/bench_extract.py [--repeat N]. Prints microseconds per resource for a
realistic DMP DocumentReference (MHD comprehensive metadata, contained author) and a Patient.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fhir_server.search.extract import extract
from fhir_server.search.registry import SearchRegistry

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

DOCUMENT = {
    "resourceType": "DocumentReference",
    "id": "2f0e8c1a-8d8b-4f5e-9a57-1c2d3e4f5a6b",
    "meta": {
        "lastUpdated": "2024-03-01T10:00:00.123+01:00",
        "profile": [
            "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"
        ],
        "security": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "N"}],
    },
    "contained": [
        {
            "resourceType": "Practitioner",
            "id": "author1",
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810002345678"}],
            "name": [{"family": "Médecin", "given": ["Jeanne"]}],
        },
        {
            "resourceType": "PractitionerRole",
            "id": "role1",
            "practitioner": {"reference": "#author1"},
            "code": [{"coding": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}]}],
        },
    ],
    "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.1.2.3.4"},
    "identifier": [
        {
            "use": "official",
            "system": "urn:ietf:rfc:3986",
            "value": "urn:uuid:2f0e8c1a-8d8b-4f5e-9a57-1c2d3e4f5a6b",
            "type": {"coding": [{"system": "urn:ietf:rfc:3986", "code": "entryUUID"}]},
        }
    ],
    "status": "current",
    "type": {
        "coding": [
            {"system": "http://loinc.org", "code": "11488-4", "display": "Note de consultation"}
        ]
    },
    "category": [
        {
            "coding": [
                {"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10", "display": "Compte rendu"}
            ]
        }
    ],
    "subject": {"reference": "Patient/p1"},
    "date": "2024-03-01T09:00:00+01:00",
    "author": [{"reference": "#role1"}],
    "description": "Compte rendu de consultation de cardiologie",
    "securityLabel": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "N"}]}],
    "content": [
        {
            "attachment": {
                "contentType": "text/xml",
                "language": "fr-FR",
                "url": "Binary/b1",
                "size": 12345,
                "hash": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
                "creation": "2024-02-28T17:30:00+01:00",
            },
            "format": {
                "system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
            },
        }
    ],
    "context": {
        "event": [{"coding": [{"system": "urn:oid:1.2.250.1.213.2.5", "code": "GLQP012"}]}],
        "period": {"start": "2024-02-28T14:00:00+01:00", "end": "2024-02-28T15:00:00+01:00"},
        "facilityType": {"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": "SA01"}]},
        "practiceSetting": {
            "coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.9", "code": "ORG_SOINS"}]
        },
        "sourcePatientInfo": {"reference": "#patient-info"},
    },
}

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"lastUpdated": "2024-03-01T10:00:00Z"},
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "279035121518989"}],
    "name": [{"use": "official", "family": "Dupré", "given": ["Zoé", "Marie"]}],
    "gender": "female",
    "birthDate": "1979-03-15",
    "telecom": [{"system": "email", "value": "zoe@example.fr"}],
    "address": [
        {"line": ["1 rue de la Paix"], "city": "Paris", "postalCode": "75002", "country": "FR"}
    ],
}


def measure(resource: dict, registry: SearchRegistry, engine: str, repeat: int) -> float:
    extract(resource, registry, engine=engine)  # warm caches (fhirpathpy compilation)
    start = time.perf_counter()
    for _ in range(repeat):
        extract(resource, registry, engine=engine)
    return (time.perf_counter() - start) / repeat * 1e6


def run(args: argparse.Namespace) -> str:
    """The Markdown table (`fhir-server bench extract`)."""
    repeat = getattr(args, "repeat", 300)
    registry = SearchRegistry.load(PROFILES)
    rows = ["| resource | compiled extractors µs | fhirpathpy µs | ratio |", "|---|---|---|---|"]
    for name, resource in (("DocumentReference", DOCUMENT), ("Patient", PATIENT)):
        assert extract(resource, registry) == extract(resource, registry, engine="fhirpathpy")
        compiled = measure(resource, registry, "compiled", repeat)
        general = measure(resource, registry, "fhirpathpy", max(10, repeat // 20))
        rows.append(f"| {name} | {compiled:,.0f} | {general:,.0f} | {general / compiled:.0f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=300)
    print(run(parser.parse_args()))


if __name__ == "__main__":
    main()

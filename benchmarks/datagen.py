"""Realistic data: patients with valid INS, documents with DMP metadata distributions."""

from __future__ import annotations

from fhir_server.resources.ins import nir_key


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

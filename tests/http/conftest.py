"""The app over HTTP, and tokens for each kind of actor (interfaces.md, "Tokens")."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest
from flask import Flask

from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.auth.keys import TOKEN_KEY_FILE, keys_dir, load_or_create_signing_key
from fhir_server.auth.tokens import AuthSettings, TokenIssuer
from fhir_server.auth.vihf import (
    STRUCTURE_CERT_FILE,
    STRUCTURE_KEY_FILE,
    load_or_create_structure_credential,
)
from fhir_server.config import Settings, load_settings
from fhir_server.paths import profiles_dir
from fhir_server.resources.ins import nir_key
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.rest.app import create_app
from fhir_server.search.registry import SearchRegistry
from fhir_server.terminology import SYSTEM_CONSENT_SCOPE, SYSTEM_IDNAT_PS, SYSTEM_PARTICIPATION_TYPE

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
FHIR_JSON = "application/fhir+json"


class Tokens:
    """Bearer tokens signed by the server's own key, as `fhir-server token` makes them."""

    def __init__(self, data_dir: Path) -> None:
        settings = AuthSettings(data_dir=data_dir)
        self.issuer = TokenIssuer(
            key=load_or_create_signing_key(data_dir),
            issuer=settings.local_issuer,
            audience=settings.effective_audience,
        )

    def system(
        self,
        client_id: str = "his",
        scope: str = "system/*.cruds",
        organization_type: str = "health_insurer",
    ) -> str:
        return self.issuer.issue(
            subject=client_id,
            scopes=scope,
            client_id=client_id,
            extensions={"dmp": {"organization_type": organization_type}},
        )

    def patient(self, patient_id: str, scope: str = "patient/*.cruds") -> str:
        return self.issuer.issue(
            subject=patient_id, scopes=scope, fhir_user=f"Patient/{patient_id}", patient=patient_id
        )

    def practitioner(
        self, idnat: str, profession: str = "10", mode: str = "normal", reason: str | None = None
    ) -> str:
        dmp = {"access_mode": mode}
        if reason:
            dmp["access_reason"] = reason
        return self.issuer.issue(
            subject=idnat,
            scopes="user/*.cruds",
            extensions={
                "ihe_iua": {
                    "subject_name": "Dr Marie Durand",
                    "national_provider_identifier": idnat,
                    "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": profession}],
                    "subject_organization": "CH Exemple",
                    "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|1000000001",
                    "purpose_of_use": [{"system": "urn:oid:1.2.250.1.213.1.1.4.248", "code": mode}],
                },
                "dmp": dmp,
            },
        )


@pytest.fixture(scope="session")
def seed_keys(tmp_path_factory) -> list[Path]:
    """One token-signing key and one VIHF structure credential for the whole session, made
    as the server makes them on a data dir's first use. Two 2048-bit RSA keys cost about a
    tenth of a second to generate: a fresh pair for each of some 1,700 HTTP tests was a third
    of the suite's time. Tests of the keys' own creation use data dirs of their own."""
    seed = tmp_path_factory.mktemp("seed") / "var"
    load_or_create_signing_key(seed)
    load_or_create_structure_credential(seed)
    return [
        keys_dir(seed) / name for name in (TOKEN_KEY_FILE, STRUCTURE_KEY_FILE, STRUCTURE_CERT_FILE)
    ]


@pytest.fixture
def data_dir(tmp_path, seed_keys) -> Path:
    """A test's data dir, holding the session's keys (`seed_keys`)."""
    path = tmp_path / "var"
    for key_file in seed_keys:
        shutil.copy2(key_file, keys_dir(path) / key_file.name)
    return path


# The engine the HTTP app of these tests stores in: "sqlite" (the default, as the server's
# own default) or "mongomock" (the production MongoDB engine, on mongomock). Run the whole
# HTTP suite on the MongoDB engine with
#   FHIR_TEST_HTTP_ENGINE=mongomock python -m pytest tests/http
# (slow: mongomock copies the database at each transaction's start). The security tests that
# run on both engines in the normal suite are in test_security_on_mongodb.py.
HTTP_ENGINE = os.environ.get("FHIR_TEST_HTTP_ENGINE", "sqlite")
HTTP_ENGINES = ("sqlite", "mongomock")
if HTTP_ENGINE not in HTTP_ENGINES:
    raise pytest.UsageError(
        f"FHIR_TEST_HTTP_ENGINE={HTTP_ENGINE!r}: expected one of {HTTP_ENGINES}"
    )


def mongomock_store(registry: SearchRegistry):
    """The MongoDB engine as `store.factory.open_store` opens it (facts derivation, indexes,
    audit log in the same database), on a fresh mongomock client instead of a replica set."""
    from fhir_server.store.factory import FACTS_OF, with_audit_log
    from fhir_server.store.mongo import MongoStore
    from tests.support.mongomock_sessions import SessionMongoClient

    mongo = MongoStore(SessionMongoClient(), "fhir", SERVED_TYPES, facts_of=FACTS_OF)
    mongo.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return with_audit_log(mongo, registry)


def create_test_app(settings: Settings, *, engine: str | None = None, **options) -> Flask:
    """`create_app(settings, **options)` on `engine` ("sqlite" or "mongomock"; by default
    FHIR_TEST_HTTP_ENGINE's): the app every HTTP test builds, so that all of them can run on
    the MongoDB engine."""
    if (engine or HTTP_ENGINE) == "sqlite":
        return create_app(settings, **options)
    return create_app(settings, store=mongomock_store(_registry()), **options)


@functools.cache
def _registry() -> SearchRegistry:
    return SearchRegistry.load(profiles_dir())


@pytest.fixture
def app(data_dir):
    settings = load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
    application = create_test_app(settings)
    yield application
    application.extensions["fhir"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(app, data_dir) -> Tokens:
    return Tokens(data_dir)


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def valid_nir(n: int) -> str:
    body = f"1{40 + n % 60:02d}{1 + n % 12:02d}75{n % 1000:03d}{n // 1000 % 1000:03d}"
    return body + f"{nir_key(body):02d}"


def a_patient(n: int = 0, **extra) -> dict:
    """A Patient that satisfies the INS profile (valid NIR key, name, gender, birth date)."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_SYSTEM, "value": valid_nir(n)}],
        "name": [{"family": f"Durand{n}", "given": ["Marie"]}],
        "gender": "female",
        "birthDate": "1985-07-01",
        **extra,
    }


def permit(idnat: str) -> dict:
    """A nested Consent provision authorizing a professional (R10), by IdNat_PS."""
    return {"type": "permit", "actor": [_recipient(idnat)]}


def deny(idnat: str) -> dict:
    """A nested Consent provision blocking a professional (R09), by IdNat_PS."""
    return {"type": "deny", "actor": [_recipient(idnat)]}


def _recipient(idnat: str) -> dict:
    return {
        "role": {"coding": [{"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}]},
        "reference": {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}},
    }


def dmp_consent(patient_id: str, *nested: dict, initial_consent: bool = True) -> dict:
    """The DMP Consent shape (docs/access-rules.md, "Consent shapes"): root permit, exceptions.

    `initial_consent`: the patient's Consent also records their initial consent to the care
    team's access (CE 15/10/2025, `access.initial_consent`), as the patients of these
    fixtures gave it; without it no professional reads the record under R10."""
    category = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    if initial_consent:
        category.append({"coding": [INITIAL_CONSENT_CODING]})
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": category,
        "patient": {"reference": f"Patient/{patient_id}"},
        "provision": {"type": "permit", "provision": list(nested)},
    }

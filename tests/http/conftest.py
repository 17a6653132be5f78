"""The app over HTTP, and tokens for each kind of actor (interfaces.md, "Tokens")."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.access.requester import INTERNAL
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

    def practitioner_claims(
        self, idnat: str, *, iua: dict | None = None, dmp: dict | None = None
    ) -> str:
        """A médecin's token (profession 10) with only the IUA claims `iua` added and the DMP
        claims `dmp` (none at all when None): the spellings the attack passes send."""
        extensions: dict = {
            "ihe_iua": {
                "national_provider_identifier": idnat,
                "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
                **(iua or {}),
            }
        }
        if dmp is not None:
            extensions["dmp"] = dmp
        return self.issuer.issue(subject=idnat, scopes="user/*.cruds", extensions=extensions)

    def practitioner_naming_ins(self, idnat: str, patient_identifier: str) -> str:
        """A practitioner's token naming the patient in context by INS (`system|value` in
        `dmp.patient_identifier`), with no other DMP fact."""
        return self.practitioner_claims(idnat, dmp={"patient_identifier": patient_identifier})


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


# The engine the HTTP apps of these tests store in: "sqlite" (the default, as the server's
# own) or "mongomock" (the production MongoDB engine, through mongomock). The whole HTTP
# suite runs on the MongoDB engine with
#   FHIR_TEST_HTTP_ENGINE=mongomock python -m pytest tests/http
# (about 7 minutes on one core; test_xds_fuzz alone takes 2). In the normal suite, the
# modules of ON_BOTH_ENGINES run on both, and test_security_on_mongodb.py compares them.
HTTP_ENGINE = os.environ.get("FHIR_TEST_HTTP_ENGINE", "sqlite")
HTTP_ENGINES = ("sqlite", "mongomock")
if HTTP_ENGINE not in HTTP_ENGINES:
    raise pytest.UsageError(
        f"FHIR_TEST_HTTP_ENGINE={HTTP_ENGINE!r}: expected one of {HTTP_ENGINES}"
    )

# The security modules that the normal suite also runs on the MongoDB engine: the attack
# passes, the R18 door matrix, every version at every door, and the modules of holes found
# in the search translation (reference spellings, totals, conditional criteria), the audit
# log's doors, Binary ownership and the record cache across workers. Together about a
# minute on mongomock. Left to FHIR_TEST_HTTP_ENGINE=mongomock for their cost (they passed
# there): test_change_door_probes, test_audit_trace_hides, test_audit_trace_own_probes.
ON_BOTH_ENGINES = frozenset(
    {
        "test_attack_pass_consents",
        "test_attack_pass_door_differential",
        "test_attack_pass_followup",
        "test_attack_pass_followup2",
        "test_attack_pass_followup3",
        "test_attack_pass_followup4",
        "test_attack_pass_governance",
        "test_attack_pass_lifecycle",
        "test_attack_pass_messaging",
        "test_attack_pass_minors_lifecycle",
        "test_attack_pass_modes",
        "test_attack_pass_mongo_spellings",
        "test_attack_pass_oracles",
        "test_attack_pass_processes",
        "test_attack_pass_r13",
        "test_attack_pass_races",
        "test_attack_pass_rest",
        "test_attack_pass_spellings",
        "test_attack_pass_trace",
        "test_attack_pass_trace_doors",
        "test_attack_pass_writers",
        "test_attack_pass_xds",
        "test_attack_pass_xds_oracles",
        "test_attack_pass_xds_spellings",
        "test_attack_pass_audit_view",
        "test_attack_pass_xml_door",
        "test_audit_log_doors",
        "test_audit_trace_conditional_criteria",
        "test_binary_ownership",
        "test_every_version_every_door",
        "test_opaque_cursors",
        "test_r18_matrix",
        "test_record_cache",
        "test_reference_forms",
        "test_r13_submission_sets",
        "test_search_total",
    }
)

_engine = [HTTP_ENGINE]  # the engine of the test that runs (`http_engine`)


def current_engine() -> str:
    """The engine the running test's apps are built on."""
    return _engine[-1]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The modules of ON_BOTH_ENGINES run once per engine (module by module, so that their
    module-scoped records are built on each), unless FHIR_TEST_HTTP_ENGINE chose one."""
    module = metafunc.module.__name__.rpartition(".")[2]
    if HTTP_ENGINE == "sqlite" and module in ON_BOTH_ENGINES:
        metafunc.parametrize("http_engine", HTTP_ENGINES, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def http_engine(request) -> Iterator[str]:
    """Selects the engine of `create_test_app` for the module's tests. Module-scoped
    fixtures that build apps must depend on it (autouse comes first in its scope)."""
    _engine.append(getattr(request, "param", HTTP_ENGINE))
    yield _engine[-1]
    _engine.pop()


def mongomock_store(registry: SearchRegistry, client: Any = None):
    """The MongoDB engine as `store.factory.open_store` opens it (facts derivation, indexes,
    audit log in the same database), on mongomock instead of a replica set: a fresh
    database, or `client`'s (another worker of the same server)."""
    from fhir_server.store.factory import FACTS_OF, with_audit_log
    from fhir_server.store.mongo import MongoStore
    from tests.support.mongomock_sessions import SessionMongoClient

    mongo = MongoStore(client or SessionMongoClient(), "fhir", SERVED_TYPES, facts_of=FACTS_OF)
    mongo.create_indexes({t: registry.for_type(t).keys() for t in SERVED_TYPES})
    return with_audit_log(mongo, registry)


def create_test_app(settings: Settings, *, engine: str | None = None, **options) -> Flask:
    """`create_app(settings, **options)` on `engine` ("sqlite" or "mongomock"; by default
    the running test's, `current_engine`): the app every HTTP test builds, so that all of
    them can run on the MongoDB engine."""
    if (engine or current_engine()) == "sqlite":
        return create_app(settings, **options)
    return create_app(settings, store=mongomock_store(_registry()), **options)


def another_worker(app: Flask, settings: Settings) -> Flask:
    """A second app on `app`'s database, as a second gunicorn worker of the same server:
    on SQLite the same data dir, on MongoDB the same database."""
    store = app.extensions["fhir"].store
    if store.name == "sqlite":
        return create_app(settings)
    return create_app(settings, store=mongomock_store(_registry(), store.resources.client))


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


def internal_put(service) -> Callable[[dict, str], None]:
    """`put(resource, id)`: a resource written at its id by the server's own work (INTERNAL),
    as a record's fixture sets up what the test's requesters then read or change."""

    def put(resource: dict, resource_id: str) -> None:
        service.update(
            INTERNAL, resource["resourceType"], resource_id, {**resource, "id": resource_id}
        )

    return put


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

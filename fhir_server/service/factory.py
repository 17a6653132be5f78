"""Assemble the service gate: store + registries + access policy + audit, one way for every face."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.policy import DmpPolicy
from fhir_server.auth.keys import read_private_file, write_private_file
from fhir_server.paths import profiles_dir
from fhir_server.resources.dmp_value_sets import DmpValueSets
from fhir_server.resources.profiles import ProfileRegistry
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.audit_trail import AuditTrail
from fhir_server.service.core import FhirService
from fhir_server.service.gate import Gate
from fhir_server.service.validation import (
    contained_record_validator,
    dmp_value_set_validator,
    naming_element_validator,
    profile_validator,
    record_closure_validator,
)
from fhir_server.store.base import ResourceStore
from fhir_server.store.factory import with_audit_log


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte server secret kept in the data dir (paging cursors), created on first start.

    Written as the keys are (`write_private_file`: owner-only, complete before its name
    appears) and refused, as they are, when others may read it (`read_private_file`): whoever
    holds it can forge the cursors that carry a search's requester binding."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(path, secrets.token_bytes(32))
    return read_private_file(path)


def build_service(
    store: ResourceStore,
    registry: SearchRegistry,
    *,
    data_dir: Path,
    base_url: str = "http://127.0.0.1:8080/fhir",
    clock: Callable[[], int] = versions.now_us,
    profiles: ProfileRegistry | None = None,
    profiles_path: Path | None = None,
) -> FhirService:
    audited = with_audit_log(store, registry, clock)
    cursor_key = load_or_create_secret(Path(data_dir) / "keys" / "cursor.key")
    folder = profiles_path or profiles_dir()
    profiles = profiles or ProfileRegistry.load(folder)
    matrix = load_matrix(
        folder / "habilitation-matrix.json", folder / "habilitation-matrix.schema.json", profiles
    )
    gate = Gate(
        audited,
        registry,
        DmpPolicy(matrix),
        AuditTrail(audited, registry, base_url, clock),
        cursor_key,
    )
    service = FhirService(
        audited,
        registry,
        gate,
        cursor_key=cursor_key,
        clock=clock,
        validators=(
            profile_validator(profiles),
            dmp_value_set_validator(DmpValueSets.from_registry(profiles)),
            record_closure_validator(),
            naming_element_validator(),
            contained_record_validator(),
        ),
        base_url=base_url,
    )
    service.profiles = profiles
    return service

"""Assemble the service gate: store + registries + access policy + audit, one way for every face."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.policy import DmpPolicy
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
    """A 32-byte server secret kept in the data dir (paging cursors), created on first start."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        with open(path, "xb") as handle:
            handle.write(secret)
        path.chmod(0o600)
    except FileExistsError:  # another worker created it first
        return path.read_bytes()
    return secret


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

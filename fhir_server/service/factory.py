"""Assemble the service gate: store + registries + access policy + audit, one way for every face."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.core import FhirService
from fhir_server.service.gate import Gate
from fhir_server.store.base import ResourceStore


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte server secret kept in the data dir (paging cursors), created on first start."""
    import secrets

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
    clock: Callable[[], int] = versions.now_us,
) -> FhirService:
    return FhirService(
        store,
        registry,
        Gate(),
        cursor_key=load_or_create_secret(Path(data_dir) / "keys" / "cursor.key"),
        clock=clock,
    )

"""The habilitation matrix (R13): which document classes a profession may read.

The matrix is data (profiles/habilitation-matrix.json) so that the official table can be
transcribed without touching code. It is checked when loaded, at start-up, against its JSON
Schema and for class codes it does not declare, so that a typo stops the server with a
message naming the element instead of silently hiding (or showing) a class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jsonschema

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
DEFAULT_MATRIX_PATH = PROFILES_DIR / "habilitation-matrix.json"
SCHEMA_PATH = PROFILES_DIR / "habilitation-matrix.schema.json"


class AllClasses:
    """Every document class (the matrix's "*"). A singleton: compare with `is ALL`."""

    _instance: AllClasses | None = None

    def __new__(cls) -> AllClasses:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __contains__(self, item: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL"


ALL: Final = AllClasses()

Classes = frozenset[str] | AllClasses


class HabilitationMatrixError(ValueError):
    """The matrix file is missing, is not JSON, or breaks its schema; the message says where."""


@dataclass(frozen=True)
class _Entry:
    classes: Classes
    specialties: Mapping[str, Classes]


@dataclass(frozen=True)
class HabilitationMatrix:
    class_system: str
    profession_system: str
    known_classes: Mapping[str, str]  # code -> display
    professions: Mapping[str, _Entry]
    placeholder: bool

    def allowed_classes(self, profession: str | None, specialty: str | None = None) -> Classes:
        """Classes the profession (refined by the specialty) may read; empty when unknown."""
        entry = self.professions.get(profession or "")
        if entry is None:
            return frozenset()
        base = entry.classes
        extra = entry.specialties.get(specialty) if specialty else None
        if base is ALL or extra is ALL:
            return ALL
        return base | extra if extra else base  # type: ignore[operator]


def load_matrix(
    path: str | Path = DEFAULT_MATRIX_PATH, schema_path: str | Path = SCHEMA_PATH
) -> HabilitationMatrix:
    """Read and check the matrix; raises HabilitationMatrixError naming the problem."""
    path = Path(path)
    data = _read_json(path, "habilitation matrix")
    schema = _read_json(Path(schema_path), "habilitation matrix schema")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/" + "/".join(str(p) for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise HabilitationMatrixError(f"{path}: at {where}: {first.message}{more}")
    known = dict(data["classes"])
    professions: dict[str, _Entry] = {}
    for code, entry in data["professions"].items():
        specialties = {
            name: _classes(spec["classes"], known, path, f"/professions/{code}/specialties/{name}")
            for name, spec in (entry.get("specialties") or {}).items()
        }
        professions[code] = _Entry(
            _classes(entry["classes"], known, path, f"/professions/{code}/classes"), specialties
        )
    return HabilitationMatrix(
        class_system=data["classSystem"],
        profession_system=data["professionSystem"],
        known_classes=known,
        professions=professions,
        placeholder=data["status"] == "placeholder",
    )


def _classes(value: str | list[str], known: Mapping[str, str], path: Path, where: str) -> Classes:
    if value == "*":
        return ALL
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise HabilitationMatrixError(
            f"{path}: at {where}: class code(s) {', '.join(unknown)} not declared in /classes"
        )
    return frozenset(value)


def _read_json(path: Path, what: str) -> dict:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise HabilitationMatrixError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as exc:
        raise HabilitationMatrixError(
            f"{path}: {what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise HabilitationMatrixError(f"{path}: {what} must be a JSON object")
    return data

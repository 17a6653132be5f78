"""Reading the habilitation matrix (R13) from its files: `profiles/habilitation-matrix.json`,
checked against its schema and the value sets of the registry, and the transcription of the
annex it names (`habilitation_annex`).

Why apart from `habilitation`: the matrix is a value the access policy asks questions of;
reading it is a start-up job that needs both the matrix's types and the annex reader, which
itself builds on those types. Loading here lets `habilitation` and `habilitation_annex` be
read in that order, neither needing the other's importer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jsonschema

from fhir_server.access.habilitation import (
    ALL,
    DEFAULT_MATRIX_PATH,
    PLACEHOLDER,
    SCHEMA_PATH,
    Axes,
    Cell,
    Classes,
    Code,
    HabilitationMatrix,
    HabilitationMatrixError,
    Row,
)
from fhir_server.access.habilitation_annex import read_annex
from fhir_server.resources.profiles import ProfileRegistry, default_registry


def load_matrix(
    path: str | Path = DEFAULT_MATRIX_PATH,
    schema_path: str | Path = SCHEMA_PATH,
    registry: ProfileRegistry | None = None,
    *,
    annex: str | Path | None = None,
) -> HabilitationMatrix:
    """Read and check the matrix and the annex transcription it names (or `annex`, which
    replaces it); raises HabilitationMatrixError naming the problem."""
    path = Path(path)
    data = _read_json(path, "habilitation matrix")
    _check_schema(data, _read_json(Path(schema_path), "habilitation matrix schema"), path)
    axes = Axes.from_registry(registry or default_registry(), data["valueSets"])
    matrix = HabilitationMatrix(axes, _rows(data["roles"], axes, path))
    annex_path = Path(annex) if annex else path.parent / data["annex"] if "annex" in data else None
    if annex_path is None:
        return matrix
    return matrix.with_cells(read_annex(annex_path, matrix))


def _check_schema(data: dict, schema: dict, path: Path) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/" + "/".join(str(p) for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise HabilitationMatrixError(f"{path}: at {where}: {first.message}{more}")


def _rows(data: Mapping[str, Mapping[str, dict]], axes: Axes, path: Path) -> dict[Code, Row]:
    rows: dict[Code, Row] = {}
    seen: dict[Code, str] = {}
    for system, by_code in data.items():
        for code, row in by_code.items():
            where = f"/roles/{system}/{code}"
            role = axes.key(system, code)
            if role not in axes.roles:
                raise HabilitationMatrixError(
                    f"{path}: at {where}: the role {code} ({system}) is not in "
                    "JDV_J65-SubjectRole-DMP"
                )
            if role in seen:
                raise HabilitationMatrixError(
                    f"{path}: at {where}: the role is given twice (also at {seen[role]})"
                )
            seen[role] = where
            rows[role] = Row(
                _classes(row.get("classes", []), axes, path, f"{where}/classes"),
                row.get("status", PLACEHOLDER),
                row.get("source"),
                _cells(row.get("types", []), axes, path, where),
            )
    return rows


def _classes(value: str | list[str], axes: Axes, path: Path, where: str) -> Classes:
    if value == "*":
        return ALL
    unknown = sorted(set(value) - axes.classes)
    if unknown:
        raise HabilitationMatrixError(
            f"{path}: at {where}: class code(s) {', '.join(unknown)} not in "
            "JDV_J57-ClassCode-DMP (TRE_A03)"
        )
    return frozenset(value)


def _cells(items: list[dict], axes: Axes, path: Path, where: str) -> dict[Code, Cell]:
    cells: dict[Code, Cell] = {}
    for i, item in enumerate(items):
        type_code = axes.key(item["system"], item["code"])
        here = f"{where}/types/{i}"
        if type_code not in axes.types:
            raise HabilitationMatrixError(
                f"{path}: at {here}: the type {item['code']} ({item['system']}) is not in "
                "JDV_J66-TypeCode-DMP"
            )
        if type_code in cells:
            raise HabilitationMatrixError(f"{path}: at {here}: the type is given twice")
        cells[type_code] = Cell(
            item["allowed"], item.get("status", PLACEHOLDER), item.get("source")
        )
    return cells


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

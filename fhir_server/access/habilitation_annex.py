"""A transcription of the annex of the arrêté of 26 October 2023, as cells of the matrix.

Why a CSV: the annex is a table (profession x document category) that someone copies by
hand; a spreadsheet export is the natural form for that work and for its review. Columns:

    role_system, role_code, type_system, type_code, allowed, source

`role_*` a JDV_J65 role and `type_*` a JDV_J66 type, each system in any accepted spelling
(OID or NOS URL); `allowed` one of true/false, yes/no, oui/non; `source` the citation (the
annex's row and column as printed). Other columns (a display, a note) are kept for the
reader and ignored. Every cell read here is `transcribed` and overrides the placeholder of
the matrix file; a line that is wrong stops the load with its line number and column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fhir_server.access.habilitation import (
    TRANSCRIBED,
    Cell,
    Code,
    HabilitationMatrix,
    HabilitationMatrixError,
)

COLUMNS = ("role_system", "role_code", "type_system", "type_code", "allowed", "source")
_ALLOWED = {"true": True, "yes": True, "oui": True, "false": False, "no": False, "non": False}


def read_annex(path: Path, matrix: HabilitationMatrix) -> dict[Code, dict[Code, Cell]]:
    """The transcribed cells of `path`, role -> type -> cell (registry spelling)."""
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle))
    except FileNotFoundError:
        raise HabilitationMatrixError(f"{path}: annex transcription file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HabilitationMatrixError(f"{path}: annex transcription unreadable: {exc}") from None
    if not lines:
        raise HabilitationMatrixError(f"{path}: line 1: the header {','.join(COLUMNS)} is missing")
    header = [name.strip() for name in lines[0]]
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise HabilitationMatrixError(f"{path}: line 1: column(s) {', '.join(missing)} missing")
    index = {name: header.index(name) for name in COLUMNS}
    cells: dict[Code, dict[Code, Cell]] = {}
    first_line: dict[tuple[Code, Code], int] = {}
    axes = matrix.axes
    for number, line in enumerate(lines[1:], start=2):
        if not any(value.strip() for value in line):
            continue
        if len(line) < len(header):
            raise HabilitationMatrixError(
                f"{path}: line {number}: {len(line)} value(s) for {len(header)} column(s)"
            )
        value = {name: line[i].strip() for name, i in index.items()}
        for name in COLUMNS:
            if not value[name]:
                raise HabilitationMatrixError(f"{path}: line {number}, column {name}: empty")
        role = axes.key(value["role_system"], value["role_code"])
        if role not in axes.roles:
            raise HabilitationMatrixError(
                f"{path}: line {number}: the role {value['role_code']} ({value['role_system']}) "
                "is not in JDV_J65-SubjectRole-DMP"
            )
        type_code = axes.key(value["type_system"], value["type_code"])
        if type_code not in axes.types:
            raise HabilitationMatrixError(
                f"{path}: line {number}: the type {value['type_code']} ({value['type_system']}) "
                "is not in JDV_J66-TypeCode-DMP"
            )
        allowed = _ALLOWED.get(value["allowed"].lower())
        if allowed is None:
            raise HabilitationMatrixError(
                f"{path}: line {number}, column allowed: {value['allowed']!r} is none of "
                f"{', '.join(_ALLOWED)}"
            )
        if (role, type_code) in first_line:
            raise HabilitationMatrixError(
                f"{path}: line {number}: the cell ({value['role_code']}, {value['type_code']}) "
                f"is already given at line {first_line[(role, type_code)]}"
            )
        first_line[(role, type_code)] = number
        earlier = matrix.cell(role, type_code)
        if earlier.status == TRANSCRIBED and earlier.allowed != allowed:
            raise HabilitationMatrixError(
                f"{path}: line {number}: the cell ({value['role_code']}, {value['type_code']}) "
                f"contradicts the transcription of the matrix file ({earlier.source})"
            )
        cells.setdefault(role, {})[type_code] = Cell(allowed, TRANSCRIBED, value["source"])
    return cells

"""The habilitation matrix (R13): which JDV_J66 document types a JDV_J65 role may read.

The official matrix is the annex of the arrêté of 26 October 2023: rows are the DMP subject
roles (JDV_J65: the TRE_G15 professions, the social professions, the savoir-faire...),
columns the DMP document types (JDV_J66), grouped by class through ASS_X16. The annex is
published as a table nobody has made machine-readable yet, so each cell here is either
*transcribed* from it (with its citation) or a *placeholder* decided here, and says which.

Why data checked at start-up: the matrix is `profiles/habilitation-matrix.json` (schema
`habilitation-matrix.schema.json`) plus an optional transcription of the annex
(`habilitation_annex`), read by `habilitation_loader.load_matrix`, so the official table can be dropped in without touching code. A
role outside J65, a type outside J66, a class outside J57, a row given twice (under two
spellings of one system) stops the server with a message naming the place, instead of
silently hiding (or showing) documents.

Placeholder rows are written by class (a row reads the J66 types ASS_X16 files under its
classes) so that the file stays small; a cell given for one type overrides its row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final

from fhir_server.config import ConfigError
from fhir_server.resources.profiles import ProfileRegistry
from fhir_server.terminology import NOS_BASE

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
DEFAULT_MATRIX_PATH = PROFILES_DIR / "habilitation-matrix.json"
SCHEMA_PATH = PROFILES_DIR / "habilitation-matrix.schema.json"

G15_URL = f"{NOS_BASE}TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
R01_URL = f"{NOS_BASE}TRE_R01-EnsembleSavoirFaire-CISIS/FHIR/TRE-R01-EnsembleSavoirFaire-CISIS"
PLACEHOLDER: Final = "placeholder"
TRANSCRIBED: Final = "transcribed"

Code = tuple[str, str]  # (system in the registry's spelling, code)


class AllClasses:
    """Every class (a row's "*"). A singleton: compare with `is ALL`."""

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


class HabilitationMatrixError(ConfigError, ValueError):
    """The matrix or its annex is missing, unreadable or wrong; the message says where. A
    configuration error: the server stops at start-up with the message, no traceback."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One (role, type) cell: whether the role reads the type, and where that comes from."""

    allowed: bool
    status: str  # PLACEHOLDER or TRANSCRIBED
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One J65 role: its default by class and its cells for single types."""

    classes: Classes
    status: str = PLACEHOLDER
    source: str | None = None
    cells: Mapping[Code, Cell] = field(default_factory=dict)


NO_ROW: Final = Row(frozenset())


@dataclass(frozen=True, slots=True)
class Readable:
    """What a set of roles reads: `types` (J66, registry spelling), and the classes by which
    a document carrying no J66 type is judged."""

    types: frozenset[Code]
    every_type: bool
    untyped_classes: Classes

    @property
    def nothing(self) -> bool:
        return not self.types and not self.untyped_classes


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of the matrix comes from the annex (`fhir-server habilitation check`)."""

    roles: int
    types: int
    transcribed: int
    placeholder: int
    allowed: int
    denied: int

    @property
    def cells(self) -> int:
        return self.roles * self.types


@dataclass(frozen=True)
class Axes:
    """J65, J66, the J57 class codes and ASS_X16, from the registry, every system spelled
    the registry's way (`ProfileRegistry.key`)."""

    registry: ProfileRegistry
    roles: frozenset[Code]
    types: frozenset[Code]
    class_system: str
    classes: frozenset[str]
    classes_of_type: Mapping[Code, frozenset[str]]

    @classmethod
    def from_registry(cls, registry: ProfileRegistry, value_sets: Mapping[str, str]) -> Axes:
        try:
            roles = registry.expansions[value_sets["roles"]].pairs
            types = registry.expansions[value_sets["types"]].pairs
            class_pairs = registry.expansions[value_sets["classes"]].pairs
            concept_map = registry.concept_maps[value_sets["typeToClass"]]
        except KeyError as exc:
            raise HabilitationMatrixError(f"terminology file missing: {exc.args[0]}") from None
        class_system = registry.key("urn:oid:1.2.250.1.213.1.1.4.1")  # TRE_A03
        mapping: dict[Code, set[str]] = {}
        for group in concept_map.get("group", []):
            source = registry.key(group["source"])
            if registry.key(group["target"]) != class_system:
                continue
            for element in group.get("element", []):
                for target in element.get("target", []):
                    mapping.setdefault((source, element["code"]), set()).add(target["code"])
        return cls(
            registry,
            frozenset(roles),
            frozenset(types),
            class_system,
            frozenset(code for system, code in class_pairs if system == class_system),
            {k: frozenset(v) for k, v in mapping.items()},
        )

    def key(self, system: str, code: str) -> Code:
        return self.registry.key(system), code


@dataclass(frozen=True)
class HabilitationMatrix:
    """The matrix as loaded: rows for the roles the file names, every other J65 role reads
    nothing (a placeholder)."""

    axes: Axes
    rows: Mapping[Code, Row]

    # -- one cell ---------------------------------------------------------------------

    def cell(self, role: Code, type_code: Code) -> Cell:
        """The cell of (role, type), both (system, code) in any accepted spelling."""
        role = self.axes.key(*role)
        type_code = self.axes.key(*type_code)
        row = self.rows.get(role, NO_ROW)
        explicit = row.cells.get(type_code)
        if explicit is not None:
            return explicit
        return Cell(self._by_class(row, type_code), row.status, row.source)

    def _by_class(self, row: Row, type_code: Code) -> bool:
        if row.classes is ALL:
            return type_code in self.axes.types
        return bool(self.axes.classes_of_type.get(type_code, frozenset()) & row.classes)  # type: ignore[operator]

    # -- a requester ------------------------------------------------------------------

    def roles_of(self, profession: str | None, specialty: str | None = None) -> tuple[Code, ...]:
        """The J65 roles of a requester: their TRE_G15 profession and, when J65 has it, the
        TRE_R01 savoir-faire their specialty names. Codes outside J65 give no role."""
        wanted = []
        if profession:
            wanted.append(self.axes.key(G15_URL, profession))
        if specialty:
            wanted.append(self.axes.key(R01_URL, specialty))
        return tuple(role for role in wanted if role in self.axes.roles)

    def readable(self, roles: Iterable[Code]) -> Readable:
        """What the roles read together (a specialty adds to its profession)."""
        types: set[Code] = set()
        untyped: set[str] = set()
        every_class = False
        for role in roles:
            types |= self._readable_types.get(role, frozenset())
            row = self.rows.get(role, NO_ROW)
            if row.classes is ALL:
                every_class = True
            else:
                untyped |= row.classes  # type: ignore[arg-type]
        return Readable(
            frozenset(types),
            types >= self.axes.types,
            ALL if every_class else frozenset(untyped),
        )

    @cached_property
    def _readable_types(self) -> dict[Code, frozenset[Code]]:
        return {
            role: frozenset(t for t in self.axes.types if self.cell(role, t).allowed)
            for role in self.rows
        }

    # -- the whole --------------------------------------------------------------------

    def coverage(self) -> Coverage:
        transcribed = allowed = 0
        for role in self.axes.roles:
            for type_code in self.axes.types:
                cell = self.cell(role, type_code)
                transcribed += cell.status == TRANSCRIBED
                allowed += cell.allowed
        cells = len(self.axes.roles) * len(self.axes.types)
        return Coverage(
            len(self.axes.roles),
            len(self.axes.types),
            transcribed,
            cells - transcribed,
            allowed,
            cells - allowed,
        )

    def with_cells(self, cells: Mapping[Code, Mapping[Code, Cell]]) -> HabilitationMatrix:
        """A matrix where `cells` (role -> type -> cell, registry spelling) override."""
        rows = dict(self.rows)
        for role, by_type in cells.items():
            row = rows.get(role, NO_ROW)
            rows[role] = Row(row.classes, row.status, row.source, {**row.cells, **by_type})
        return HabilitationMatrix(self.axes, rows)

"""The DMP masking labels of a resource as bits of its `resource.labels` column (SQLite).

The access rules hide documents carrying a masking confidentiality code (R14: MASQUE_PS,
INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX, R07) in `securityLabel` or in
`meta.security`. As index lookups, that is one or two probes of `ix_token` per candidate row,
about 150 for a 50-document record: as much as the rest of the search. The same facts as
bits of the candidate's own row cost nothing to test. The bits are written with the row
(from its index entries, so they always agree with `ix_token`), and a store made before
them gets them from `ix_token` on its first open (`migrate`).

Only what the index says is encoded: bit (parameter, code) is set when the resource has the
token `system|code` under that search parameter. A clause made of such tokens (one, or an
OR of several) compiles to a mask test; any other clause is compiled as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from fhir_server.search.index import IndexEntries
from fhir_server.search.query import Node, Or, TokenMatch, TokenTest
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_DMP_CONFIDENTIALITY,
)

PARAMS = ("security-label", "_security")
CODES = (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)
SYSTEM = SYSTEM_DMP_CONFIDENTIALITY

BITS: dict[tuple[str, str | None], int] = {
    (param, code): 1 << (p * len(CODES) + c)
    for p, param in enumerate(PARAMS)
    for c, code in enumerate(CODES)
}

COLUMN = "labels INTEGER NOT NULL DEFAULT 0"


def _bits(tokens: Iterable[tuple[str, str | None, str | None]]) -> int:
    value = 0
    for param, system, code in tokens:
        if system == SYSTEM:
            value |= BITS.get((param, code), 0)
    return value


def of_entries(entries: IndexEntries | None) -> int:
    """The bits of a resource version with these index entries (0 without entries)."""
    if entries is None:
        return 0
    return _bits((e.param, e.system, e.code) for e in entries.tokens)


def of_token_rows(rows: Iterable[tuple]) -> int:
    """The bits of the `ix_token` rows (type, param, system, code, display) of a resource."""
    return _bits((row[1], row[2], row[3]) for row in rows)


def mask_of(node: Node) -> int | None:
    """The mask of a clause true exactly when one of its bits is set, or None when the clause
    is not made of labelled tokens only."""
    if isinstance(node, TokenTest):
        if node.match is not TokenMatch.EQ or node.any_system or node.system != SYSTEM:
            return None
        return BITS.get((node.param, node.code))
    if isinstance(node, Or) and node.parts:
        mask = 0
        for part in node.parts:
            bit = mask_of(part)
            if bit is None:
                return None
            mask |= bit
        return mask
    return None


def migrate(connection: sqlite3.Connection) -> None:
    """Add the column to a store made before it, with the bits its `ix_token` rows give,
    in one transaction (an open by another process meanwhile finds it done)."""
    if _has_column(connection):
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not _has_column(connection):
            connection.execute(f"ALTER TABLE resource ADD COLUMN {COLUMN}")
            types = [row[0] for row in connection.execute("SELECT DISTINCT type FROM resource")]
            for (param, code), bit in BITS.items():
                for resource_type in types:
                    connection.execute(
                        "UPDATE resource SET labels = labels | ? WHERE rid IN ("
                        "SELECT rid FROM ix_token WHERE type = ? AND param = ? AND code = ?"
                        " AND system = ?)",
                        (bit, resource_type, param, code, SYSTEM),
                    )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _has_column(connection: sqlite3.Connection) -> bool:
    return any(row[1] == "labels" for row in connection.execute("PRAGMA table_info(resource)"))

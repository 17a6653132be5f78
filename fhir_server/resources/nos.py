"""The official NOS artifacts (`profiles/terminology/nos/`) and the spellings they declare.

Why a module: a French code system is written in the wild under its canonical URL and under
its OID (`CodeSystem.identifier`, `urn:oid:`). The alias table of the normal form
(`resources.normal_form`, `system-aliases.json`) must know both, and the authority for both
is the file the ANS publishes, not a hand copy of it. So the table is completed at load with
the URL and OID of every official CodeSystem found here: a system the table already names
(by any of those spellings) keeps its canonical spelling and gains the others; a system it
does not name is added with its URL as canonical (the spelling the XDS mapping gives it,
`ihe_xds.codes`). A file whose spellings name two systems of the table stops the load.

The files are read as published (see `nos/SOURCE.md`); nothing is rewritten.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

NOS_FOLDER = "nos"  # under profiles/terminology/

_OID_URN = re.compile(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$")


def read_official(terminology_dir: Path) -> list[dict]:
    """Every resource of `terminology_dir/nos/*.json`, in file-name order."""
    folder = Path(terminology_dir) / NOS_FOLDER
    resources = []
    for path in sorted(folder.glob("*.json")):
        with path.open(encoding="utf-8") as handle:
            resources.append(json.load(handle))
    return resources


def official_spellings(code_system: dict) -> tuple[str, ...]:
    """The canonical URL of an official CodeSystem and its OIDs (`urn:oid:` identifiers).

    An identifier that is no OID (TRE_A12 publishes `urn:oid:ASTM`) is not a spelling."""
    spellings = [code_system["url"]]
    identifiers = code_system.get("identifier") or []
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    for identifier in identifiers:
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if isinstance(value, str) and _OID_URN.fullmatch(value) and value not in spellings:
            spellings.append(value)
    return tuple(spellings)


def _declared(item: dict) -> set[str]:
    """Every spelling an entry of system-aliases.json accepts (as AliasTable.load widens them)."""
    out = set()
    for spelling in (item["canonical"], *item.get("aliases", ())):
        out.add(spelling)
        if spelling.startswith("urn:oid:"):
            out.add(spelling[len("urn:oid:") :])
        elif "://" in spelling:
            out.add(spelling + "/")
    return out


def merge_official_spellings(items: list[dict], code_systems: list[dict]) -> list[dict]:
    """The `systems` entries of system-aliases.json completed with the official spellings.

    Returns new entries (the given ones are not changed); raises ValueError when the
    spellings of one file name two entries."""
    merged = [dict(item, aliases=list(item.get("aliases", ()))) for item in items]
    for code_system in code_systems:
        if code_system.get("resourceType") != "CodeSystem":
            continue
        spellings = official_spellings(code_system)
        matches = [item for item in merged if _declared(item) & set(spellings)]
        if len(matches) > 1:
            names = ", ".join(item["name"] for item in matches)
            raise ValueError(f"{code_system['url']}: its spellings name several systems ({names})")
        if matches:
            item = matches[0]
            known = _declared(item)
            item["aliases"].extend(s for s in spellings if s not in known)
        else:
            merged.append(
                {
                    "name": f"{code_system.get('name', code_system['url'])} (official NOS file)",
                    "canonical": spellings[0],
                    "aliases": list(spellings[1:]),
                }
            )
    return merged

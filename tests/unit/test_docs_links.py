"""The documentation in the repository: links that resolve, every rule named, examples that hold.

Issue #22, deliverable 4: the rules the code enforces, the architecture and the performance
figures live in `docs/`, and the README links them. A maintainer who clones the project must
be able to follow every relative link of README.md and docs/*.md, find every rule id the code
cites (R01, R02 ...) in docs/access-rules.md, and paste the Consent examples of
docs/access-rules.md ("Consent shapes") into a request that the server accepts.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhir_server.access.consent import interpret_consent
from fhir_server.resources.model import validate_resource
from fhir_server.resources.profiles import PROFILES_DIR, ProfileRegistry

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
ACCESS_RULES = ROOT / "docs" / "access-rules.md"

# [text](target) outside code; images too. Targets with a scheme are not ours to check.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_RULE_ID = re.compile(r"\bR(0[1-9]|1[0-9]|2[0-9])\b")


def _prose(text: str) -> str:
    """The page without code blocks and code spans, where a `[x](y)` is no link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFC", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _FENCE.sub("", page.read_text()), re.MULTILINE)
    return {_slug(h) for h in headings}


def _relative_links(page: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(_prose(page.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)
    ]


def test_the_three_documents_of_issue_22_exist():
    assert {p.name for p in DOCS} >= {"access-rules.md", "architecture.md", "performance.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path):
    """A relative link names a file of the repository, and its #anchor a heading of it."""
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert broken == []


def test_the_readme_links_the_docs():
    links = {t.partition("#")[0] for t in _relative_links(ROOT / "README.md")}
    assert {"docs/access-rules.md", "docs/architecture.md", "docs/performance.md"} <= links


def _code_rule_ids() -> set[str]:
    ids: set[str] = set()
    for folder in ("fhir_server", "ihe_xds"):
        for source in (ROOT / folder).rglob("*.py"):
            ids.update(f"R{m}" for m in _RULE_ID.findall(source.read_text()))
    return ids


def test_access_rules_states_every_rule_the_code_cites():
    """Every rule id in fhir_server/ and ihe_xds/ has its own section in docs/access-rules.md."""
    cited = _code_rule_ids()
    assert {f"R{n:02d}" for n in range(1, 19)} <= cited  # the scan itself finds the rules
    stated = set(re.findall(r"^### (R\d{2})\b", ACCESS_RULES.read_text(), re.MULTILINE))
    assert sorted(cited - stated) == []


def _consent_examples() -> list[dict]:
    section = ACCESS_RULES.read_text().split("## Consent shapes", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


def test_consent_examples_are_accepted_and_mean_what_they_say():
    """docs/access-rules.md "Consent shapes": root permit, block (R09), authorization (R10),
    oppositions to bris de glace (R11, BTG) and centre 15 (R12, ETREAT)."""
    examples = _consent_examples()
    assert len(examples) == 4
    profiles = ProfileRegistry.load(PROFILES_DIR)
    for example in examples:
        assert validate_resource(example, "Consent") == []
        assert [i for i in profiles.validate(example) if i.severity in ("error", "fatal")] == []
    now = datetime(2026, 6, 1, tzinfo=UTC)
    root, block, authorize, oppose = (interpret_consent(e, now) for e in examples)
    assert (root.permitted, root.blocked) == (frozenset(), frozenset())
    assert not (root.oppose_bris_de_glace or root.oppose_centre_15)
    assert block.is_blocked("810009876543")
    assert authorize.is_authorized("810001234567")
    assert oppose.oppose_bris_de_glace and oppose.oppose_centre_15

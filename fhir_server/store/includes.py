"""`_include` / `_revinclude` rounds and caps, the same for every store.

FHIR R4 search §3.1.1.5 (http://hl7.org/fhir/R4/search.html#revinclude): every include applies
to the page; `:iterate` ones then apply again to what was just included. The rounds and the
caps live here once, so that the SQLite store, the MongoDB store and the audit log's
composite (`store.with_audit_log`, where AuditEvents come from the log) include the same
resources for the same page; each store says only how one round finds resources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from fhir_server.search.query import Include
from fhir_server.store.page import SearchRow

# One round for the page, then at most this many :iterate rounds.
MAX_ITERATE_DEPTH = 3
# At most this many included resources per page (further ones are left out).
MAX_INCLUDED = 5000

# The resources one round of `includes` finds from `rows` (already filtered by the access
# layer's clause), in the store's order; repeats and the page's own rows are dropped here.
Round = Callable[[Sequence[SearchRow], Sequence[Include]], Iterable[SearchRow]]


def resolve_rounds(
    page_rows: Sequence[SearchRow], includes: Sequence[Include], one_round: Round
) -> list[SearchRow]:
    """Resources named by `includes` for a page, without the page's own rows or repeats:
    a first round of every include, then at most MAX_ITERATE_DEPTH rounds of the `:iterate`
    ones on what the round before added. At most MAX_INCLUDED resources."""
    seen = {(row[0], row[1]) for row in page_rows}
    included: list[SearchRow] = []
    current = [SearchRow(*row) for row in page_rows]
    for depth in range(MAX_ITERATE_DEPTH + 1):
        active = [inc for inc in includes if depth == 0 or inc.iterate]
        if not active or not current:
            break
        found: list[SearchRow] = []
        for row in one_round(current, active):
            key = (row.resource_type, row.id)
            if key not in seen and len(included) + len(found) < MAX_INCLUDED:
                seen.add(key)
                found.append(row)
        included.extend(found)
        current = found
    return included

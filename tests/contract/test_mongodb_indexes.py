"""On a real MongoDB, the standard MHD queries use the indexes created at start-up.

mongomock has no query planner, so this module only defines its test when
FHIR_TEST_MONGODB_URI names a real MongoDB (docker compose's `tests` service does).
"""

from __future__ import annotations

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.search.parameters import parse_search
from fhir_server.store.mongo_search import Compiler
from tests.conftest import MONGODB_URI

STANDARD_MHD_QUERIES = [
    [("patient", "Patient/p1"), ("status", "current")],
    [("patient", "Patient/p1"), ("type", "http://loinc.org|11488-4"), ("date", "ge2020-01-01")],
    [("subject", "Patient/p1"), ("category", "urn:oid:1.2.250.1.213.1.1.4.1|10")],
]


def _winning_stages(plan: dict) -> set[str]:
    stages: set[str] = set()
    stack = [plan["queryPlanner"]["winningPlan"]]
    while stack:
        node = stack.pop()
        stages.add(node.get("stage", ""))
        stack.extend(node.get("inputStages", []))
        if "inputStage" in node:
            stack.append(node["inputStage"])
        if "queryPlan" in node:
            stack.append(node["queryPlan"])
    return stages


if MONGODB_URI:

    @pytest.mark.parametrize("params", STANDARD_MHD_QUERIES)
    def test_mhd_query_uses_an_index_on_real_mongodb(params, tmp_path, registry):
        from tests.conftest import make_store

        store = make_store("mongodb", tmp_path, registry)
        try:
            from fhir_server.service.factory import build_service

            service = build_service(store, registry, data_dir=tmp_path)
            for n in range(30):
                service.create(
                    INTERNAL,
                    "DocumentReference",
                    {
                        "resourceType": "DocumentReference",
                        "status": "current",
                        "subject": {"reference": f"Patient/p{n % 3}"},
                        "content": [{"attachment": {"contentType": "text/plain"}}],
                    },
                )
            query = parse_search("DocumentReference", params, registry).query
            mongo_filter = Compiler(store.database).filter(query.where, "DocumentReference")
            plan = (
                store.database["DocumentReference"].find({"del": False, **mongo_filter}).explain()
            )
            stages = _winning_stages(plan)
            assert "IXSCAN" in stages and "COLLSCAN" not in stages, stages
        finally:
            store.database.client.drop_database(store.database.name)
            store.close()

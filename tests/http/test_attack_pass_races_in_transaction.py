"""Time of check, time of use, inside the write transaction: a block and a deposit whose
transactions overlap (R09, R10).

A deposit is judged on the record's facts (its Consents) before its transaction, and its
transaction confirms the record's epoch it was judged under. That confirmation read the
epoch where the transaction could not see what it would commit with: on SQLite through the
thread's reader connection, blind to the earlier units of its own group commit; on MongoDB
outside the transaction's session, touching nothing the block writes, so that a block could
commit between the confirmation and the deposit's commit (write skew). Each race is driven
deterministically: on SQLite two threads handing over with events, on MongoDB (mongomock,
with its write conflicts turned on) the block run inside the deposit's transaction.
"""

from __future__ import annotations

import json
import threading

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError
from tests.http.conftest import FHIR_JSON, auth, deny, dmp_consent, permit
from tests.http.test_attack_pass_races import CONSENT_A, _documents, _new_document
from tests.http.test_r18_matrix import AUTHORIZED, BLOCKED, PATIENT_A, World, _build_world

# The longest a test thread waits for the other (a failure, never a pause of the race).
HANDOVER_SECONDS = 30


@pytest.fixture
def sqlite_world(tmp_path):
    app, built = _build_world(tmp_path / "var", engine="sqlite")
    yield built
    app.extensions["fhir"].store.close()


@pytest.fixture
def mongo_world(tmp_path):
    app, built = _build_world(tmp_path / "var", engine="mongomock")
    yield built
    app.extensions["fhir"].store.close()


def _blocking_consent() -> dict:
    """A's Consent, now blocking AUTHORIZED too (R09)."""
    return {
        **dmp_consent(PATIENT_A, permit(AUTHORIZED), deny(BLOCKED), deny(AUTHORIZED)),
        "id": CONSENT_A,
    }


def _blocks_authorized(world: World) -> bool:
    """Whether A's stored Consent blocks AUTHORIZED."""
    consent = world.service.store.read("Consent", CONSENT_A).json()
    return any(
        nested["type"] == "deny" and AUTHORIZED in json.dumps(nested)
        for nested in consent["provision"]["provision"]
    )


def _deposit(world: World):
    """AUTHORIZED deposits a document in A's record (R10: authorized until blocked)."""
    return world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(_new_document()),
        headers=auth(world.tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )


class _AnnouncingLock:
    """The group commit's unit lock, announcing when `thread` asks for it: its unit is
    then queued, so the unit holding the lock leaves the batch open for it."""

    def __init__(self, lock, thread: threading.Thread, queued: threading.Event) -> None:
        self._lock = lock
        self._thread = thread
        self._queued = queued

    def acquire(self, *args, **kwargs) -> bool:
        if threading.current_thread() is self._thread:
            self._queued.set()
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()


def test_r09_sqlite_a_deposit_in_the_batch_of_a_block_is_judged_on_the_block(
    sqlite_world, monkeypatch
):
    """R09, R10 on SQLite: the write transactions of a process are units of one batch
    transaction, committed together. The patient's block ran in a unit, then AUTHORIZED's
    deposit in the next unit of the same batch: judged before its unit on the reader
    connection, which does not see the uncommitted block, and confirmed in its unit through
    that same reader, it was written and committed with the block that refuses it."""
    world = sqlite_world
    store = world.service.store
    group = store.resources._group
    before = _documents(world)
    block_written, deposit_queued = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def block() -> None:
        try:
            with store.transaction() as tx:
                world.service.update_in(tx, INTERNAL, _blocking_consent())
                block_written.set()
                # The unit ends once the deposit's is queued: the batch stays open for it.
                assert deposit_queued.wait(HANDOVER_SECONDS), "the deposit never queued"
        except BaseException as exc:
            failures.append(exc)
            block_written.set()

    monkeypatch.setattr(
        group,
        "_unit_lock",
        _AnnouncingLock(group._unit_lock, threading.current_thread(), deposit_queued),
    )
    commits = group.commits
    blocker = threading.Thread(target=block)
    blocker.start()
    assert block_written.wait(HANDOVER_SECONDS)
    response = _deposit(world)
    blocker.join(HANDOVER_SECONDS)
    assert not failures, failures
    assert deposit_queued.is_set()
    assert _blocks_authorized(world), "the block was not committed"
    assert response.status_code == 403, (
        f"the deposit ({response.status_code}) was written in the batch of the block refusing it"
    )
    assert _documents(world) == before, "a document of the blocked practitioner was stored"
    # The block and the deposit's unit shared one batch (one commit), as the race needs.
    assert group.commits == commits + 1


def test_r09_mongodb_a_block_committed_after_a_deposits_check_refuses_the_deposit(
    mongo_world, monkeypatch
):
    """R09, R10 on MongoDB: transactions overlap under snapshot isolation, and two conflict
    only when both write one document. The deposit was judged in its transaction on the
    record's facts read outside its session, and wrote nothing the block writes: the
    patient's block committed after that check and before the deposit's commit, and both
    were written, the deposit judged on the Consent the block replaced (write skew). The
    deposit's transaction now claims the record's epoch document, which the block bumped:
    a write conflict, and the deposit is judged again, on the block."""
    world = mongo_world
    world.service.store.resources.client.detect_write_conflicts = True
    gate = world.service.gate
    original = gate.authorize_write
    outcomes: list[str] = []

    def authorize_write(requester, interaction, resource_type, new, old):
        decided = original(requester, interaction, resource_type, new, old)
        if not outcomes and resource_type == "DocumentReference" and requester is not INTERNAL:
            # After the deposit's check, inside its transaction, before its commit.
            try:
                world.service.update(INTERNAL, "Consent", CONSENT_A, _blocking_consent())
                outcomes.append("block committed")
            except FhirError as exc:
                outcomes.append(f"block refused {exc.status}")
        return decided

    monkeypatch.setattr(gate, "authorize_write", authorize_write)
    before = _documents(world)
    response = _deposit(world)
    assert outcomes == ["block committed"], outcomes
    assert _blocks_authorized(world)
    assert _documents(world) == before, (
        f"the deposit ({response.status_code}) committed after the block refusing it"
    )
    assert response.status_code == 403, response.get_data(as_text=True)


def test_r09_mongodb_a_block_during_a_deposits_transaction_conflicts_with_it(
    mongo_world, monkeypatch
):
    """R09, R10 on MongoDB, the other order: the deposit's transaction has claimed the
    record's epoch when the patient's block bumps it. The block fails with a write conflict
    (409, which its client sends again), never commits under the deposit judged on the
    Consent it replaces; sent again after the deposit, it stands and refuses the next."""
    world = mongo_world
    world.service.store.resources.client.detect_write_conflicts = True
    service = world.service
    original = service.create_in
    outcomes: list[str] = []

    def create_in(tx, requester, resource, **kwargs):
        found = original(tx, requester, resource, **kwargs)
        if not outcomes and requester is not INTERNAL:
            # The deposit's document written (its record's epoch claimed), not committed.
            try:
                service.update(INTERNAL, "Consent", CONSENT_A, _blocking_consent())
                outcomes.append("block committed")
            except FhirError as exc:
                outcomes.append(f"block refused {exc.status}")
        return found

    monkeypatch.setattr(service, "create_in", create_in)
    before = _documents(world)
    response = _deposit(world)
    assert outcomes, "the blocking write did not run: the race was not reproduced"
    deposited = _documents(world) - before
    assert not (_blocks_authorized(world) and deposited), (
        f"the deposit ({response.status_code}) and the block refusing it both committed"
    )
    assert outcomes == ["block refused 409"], outcomes
    assert response.status_code == 201, response.get_data(as_text=True)
    monkeypatch.setattr(service, "create_in", original)
    service.update(INTERNAL, "Consent", CONSENT_A, _blocking_consent())
    assert _blocks_authorized(world)
    assert _deposit(world).status_code == 403

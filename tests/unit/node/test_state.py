"""The node's state: journal restart semantics, atomic effects, the Gram cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mpc_engine.dp import PrivacyLoss
from mpc_engine.he import GramBounds, gram_matrix
from mpc_engine.node import GramStore, NodeState, StateError
from mpc_engine.node.state import Effects, GramRelease, JournalState
from mpc_engine.protocol import JobKind, JobOutcome, JobResult, JobSpec, ReasonCode
from tests.unit.node.factories import credit_policy

DATASET = uuid.uuid4()
BUYER = uuid.uuid4()


def _spec() -> JobSpec:
    now = datetime.now(UTC)
    return JobSpec(
        job_id=uuid.uuid4(),
        dataset_id=DATASET,
        dataset_version_id=uuid.uuid4(),
        content_hash="a" * 64,
        policy_hash="b" * 64,
        buyer_id=BUYER,
        buyer_region="DE",
        purpose="research",
        kind=JobKind.AGGREGATE,
        params={"statistics": ["count"]},
        inputs={},
        context_id=None,
        created_at=now,
        deadline=now + timedelta(hours=1),
    )


def _refusal() -> JobResult:
    return JobResult(
        outcome=JobOutcome.REJECTED,
        reason_code=ReasonCode.QUERY_LIMIT,
        reason="used up",
    )


def test_the_journal_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    state = NodeState(db)
    started, finished, reported = _spec(), _spec(), _spec()
    for spec in (started, finished, reported):
        assert state.start_job(spec) is True
        assert state.start_job(spec) is False  # never journaled twice
    state.finish_job(finished.job_id, _refusal(), {"values": b"\x01\x02"})
    state.finish_job(reported.job_id, _refusal(), {"values": b"\x03"})
    state.mark_reported(reported.job_id)
    state.set_node_id(DATASET)
    state.close()

    again = NodeState(db)
    assert again.node_id == DATASET
    assert [e.job_id for e in again.jobs_in(JournalState.STARTED)] == [started.job_id]
    (entry,) = again.jobs_in(JournalState.FINISHED)
    assert entry.job_id == finished.job_id and entry.result == _refusal()
    assert entry.spec == finished
    assert again.blobs(finished.job_id) == {"values": b"\x01\x02"}
    assert again.blobs(reported.job_id) == {}  # dropped once acknowledged
    assert again.job(reported.job_id).state is JournalState.REPORTED  # type: ignore[union-attr]
    assert again.job(uuid.uuid4()) is None
    with pytest.raises(StateError, match="not journaled as started"):
        again.finish_job(finished.job_id, _refusal(), {})
    with pytest.raises(StateError, match="no stored result"):
        again.mark_reported(started.job_id)
    with pytest.raises(StateError, match="refusing to replace"):
        again.set_node_id(uuid.uuid4())
    again.close()


def test_effects_are_all_or_nothing(state: NodeState) -> None:
    policy = credit_policy()
    accountant = state.accountant(DATASET, policy)
    reservation = accountant.reserve(str(BUYER), PrivacyLoss(0.5))
    reservation.commit()
    spec = _spec()
    state.start_job(spec)
    bad = Effects(
        dataset_id=str(DATASET),
        buyer_id=str(BUYER),
        queries=1,
        accountant=accountant.to_json(),
        release=("c" * 64, {"not json": {1, 2}}),  # type: ignore[dict-item]
    )
    with pytest.raises(TypeError):
        state.finish_job(spec.job_id, _refusal(), {"x": b"1"}, bad)
    assert state.job(spec.job_id).state is JournalState.STARTED  # type: ignore[union-attr]
    assert state.usage(DATASET, BUYER).queries == 0
    assert state.blobs(spec.job_id) == {}

    good = Effects(
        dataset_id=str(DATASET),
        buyer_id=str(BUYER),
        queries=1,
        inference_rows=40,
        accountant=accountant.to_json(),
        release=("c" * 64, {"answer": 42}),
        gram_charge="d" * 64,
    )
    state.finish_job(spec.job_id, _refusal(), {"x": b"1"}, good)
    assert state.usage(DATASET, BUYER).queries == 1
    assert state.usage(DATASET, BUYER).inference_rows == 40
    assert state.usage(DATASET, None).queries == 1
    assert state.release("c" * 64) == {"answer": 42}
    assert state.gram_charged(DATASET, BUYER, "d" * 64)
    assert not state.gram_charged(DATASET, uuid.uuid4(), "d" * 64)


def test_the_privacy_ledger_persists_and_follows_the_policy(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    state = NodeState(db)
    policy = credit_policy()
    accountant = state.accountant(DATASET, policy)
    assert state.accountant(DATASET, policy) is accountant
    accountant.reserve(str(BUYER), PrivacyLoss(1.25, 1e-7)).commit()
    spec = _spec()
    state.start_job(spec)
    state.finish_job(
        spec.job_id,
        _refusal(),
        {},
        Effects(str(DATASET), str(BUYER), accountant=accountant.to_json()),
    )
    state.close()

    again = NodeState(db)
    restored = again.accountant(DATASET, policy)
    assert restored.spent(str(BUYER)) == PrivacyLoss(1.25, 1e-7)
    tighter = credit_policy(budget_per_buyer={"epsilon": 1.5, "delta": 1e-6})
    changed = again.accountant(DATASET, tighter)
    assert changed.spent(str(BUYER)) == PrivacyLoss(1.25, 1e-7)
    assert changed.remaining(str(BUYER)).epsilon == pytest.approx(0.25)
    assert again.pin_policy(DATASET, policy) is True
    assert again.pin_policy(DATASET, policy) is False
    assert again.pin_policy(DATASET, tighter) is True
    assert again.pinned_policy(DATASET) == tighter
    first = again.first_seen(DATASET, "e" * 64, datetime(2025, 1, 2, tzinfo=UTC))
    later = again.first_seen(DATASET, "e" * 64, datetime(2026, 1, 2, tzinfo=UTC))
    assert first == later == datetime(2025, 1, 2, tzinfo=UTC)
    again.close()


def _release(features: tuple[str, ...]) -> GramRelease:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(100, len(features)))
    y = rng.uniform(0, 1, 100)
    bounds = GramBounds(tuple((0.0, 1.0) for _ in features), (0.0, 1.0))
    gram = gram_matrix(x, y, bounds)
    noise = rng.normal(0, 0.01, gram.noise_indices(gram.dim)[0].shape[0])
    return GramRelease(
        gram.perturbed(noise), features, "y", PrivacyLoss(0.5), "laplace"
    )


def test_gram_releases_round_trip_through_disk(tmp_path: Path) -> None:
    store = GramStore(tmp_path / "grams")
    release = _release(("a", "b"))
    assert store.get("f" * 64, ["b", "a"], "y", 0.5, 0.0) is None
    store.put("f" * 64, 0.5, 0.0, release)
    assert store.get("f" * 64, ["b", "a"], "y", 0.5, 0.0) is release  # memory
    fresh = GramStore(tmp_path / "grams")
    loaded = fresh.get("f" * 64, ["a", "b"], "y", 0.5, 0.0)  # feature order free
    assert loaded is not None
    assert loaded.release_id == release.release_id
    assert np.array_equal(loaded.gram.moments, release.gram.moments)
    assert loaded.gram.is_perturbed and loaded.loss == PrivacyLoss(0.5)
    assert loaded.gram.bounds == release.gram.bounds
    assert fresh.get("f" * 64, ["a", "b"], "y", 0.25, 0.0) is None  # other ε
    assert fresh.get("0" * 64, ["a", "b"], "y", 0.5, 0.0) is None  # other version
    assert list((tmp_path / "grams").glob("*.tmp")) == []
    with pytest.raises(StateError, match="sorted"):
        store.put("f" * 64, 0.5, 0.0, _release(("b", "a")))

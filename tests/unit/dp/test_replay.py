"""Release keys and deterministic replay: identical question, identical answer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mpc_engine.aggregate import AggregateRequest, AggregateResult, run_aggregate
from mpc_engine.dp import (
    PrivacyAccountant,
    PrivacyLoss,
    ReleaseCache,
    ReleaseKey,
    laplace,
    replay_or_release,
)
from mpc_engine.dp.errors import (
    BudgetExhausted,
    InvalidParameter,
    ReleaseConflict,
    ReservationError,
)
from tests.unit.aggregate.factories import create_random_table, make_policy


def key(**params: object) -> ReleaseKey:
    return ReleaseKey.for_question(dataset_version="v1", buyer="acme", params=params)


def test_release_key_is_canonical() -> None:
    a = key(kind="aggregate", epsilon=1.0, columns=["a", "b"], nested={"x": 1, "y": 2})
    b = key(nested={"y": 2, "x": 1}, columns=["a", "b"], epsilon=1, kind="aggregate")
    assert a == b and len(a.digest) == 64 and str(a) == a.digest
    assert key(epsilon=1.0) != key(epsilon=1.5)
    assert key(columns=["a", "b"]) != key(columns=["b", "a"])  # lists keep order
    assert key(x=-0.0) == key(x=0)
    other_buyer = ReleaseKey.for_question(
        dataset_version="v1", buyer="globex", params={"epsilon": 1.0}
    )
    other_version = ReleaseKey.for_question(
        dataset_version="v2", buyer="acme", params={"epsilon": 1.0}
    )
    assert len({key(epsilon=1.0), other_buyer, other_version}) == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"x": float("nan")}, "params.x"),
        ({"x": float("inf")}, "params.x"),
        ({"x": object()}, "params.x"),
        ({"x": {1: 2}}, "params.x"),
    ],
)
def test_release_key_refuses_non_json(params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        ReleaseKey.for_question(dataset_version="v1", buyer="acme", params=params)
    assert info.value.field == field
    with pytest.raises(InvalidParameter, match="buyer"):
        ReleaseKey.for_question(dataset_version="v1", buyer="", params={})
    with pytest.raises(InvalidParameter, match="digest"):
        ReleaseKey("xyz")


def create_accountant() -> PrivacyAccountant:
    return PrivacyAccountant(
        budget_per_buyer=PrivacyLoss(1.0), budget_per_dataset=PrivacyLoss(2.0)
    )


def noisy_answer() -> tuple[float, PrivacyLoss]:
    release = laplace(100.0, sensitivity=1.0, epsilon=0.25)
    return release.value, release.loss


def test_identical_question_replays_for_free() -> None:
    cache: ReleaseCache[float] = ReleaseCache()
    accountant = create_accountant()
    question = key(kind="count", epsilon=0.25)
    first = replay_or_release(
        cache=cache,
        key=question,
        accountant=accountant,
        buyer="acme",
        planned=PrivacyLoss(0.25),
        produce=noisy_answer,
    )
    assert not first.replayed and first.charged == PrivacyLoss(0.25)
    for _ in range(10):
        again = replay_or_release(
            cache=cache,
            key=question,
            accountant=accountant,
            buyer="acme",
            planned=PrivacyLoss(0.25),
            produce=noisy_answer,
        )
        assert again.replayed and again.value == first.value
        assert again.charged == PrivacyLoss.zero()
    assert accountant.spent("acme") == PrivacyLoss(0.25)
    # A different question gets fresh noise and is charged.
    fresh = replay_or_release(
        cache=cache,
        key=key(kind="count", epsilon=0.25, filter="x > 1"),
        accountant=accountant,
        buyer="acme",
        planned=PrivacyLoss(0.25),
        produce=noisy_answer,
    )
    assert not fresh.replayed and fresh.value != first.value
    assert accountant.spent("acme") == PrivacyLoss(0.5)


def test_a_failed_job_releases_and_stores_nothing() -> None:
    cache: ReleaseCache[float] = ReleaseCache()
    accountant = create_accountant()

    def fail() -> tuple[float, PrivacyLoss]:
        raise RuntimeError("node crashed")

    with pytest.raises(RuntimeError):
        replay_or_release(
            cache=cache,
            key=key(q=1),
            accountant=accountant,
            buyer="acme",
            planned=PrivacyLoss(0.5),
            produce=fail,
        )
    assert accountant.remaining("acme") == PrivacyLoss(1.0)
    assert key(q=1) not in cache and len(cache) == 0

    def overspend() -> tuple[float, PrivacyLoss]:
        return 1.0, PrivacyLoss(0.75)

    with pytest.raises(ReservationError, match="more than planned"):
        replay_or_release(
            cache=cache,
            key=key(q=2),
            accountant=accountant,
            buyer="acme",
            planned=PrivacyLoss(0.5),
            produce=overspend,
        )
    assert accountant.remaining("acme") == PrivacyLoss(1.0) and len(cache) == 0
    with pytest.raises(BudgetExhausted):
        replay_or_release(
            cache=cache,
            key=key(q=3),
            accountant=accountant,
            buyer="acme",
            planned=PrivacyLoss(1.5),
            produce=noisy_answer,
        )


def test_concurrent_identical_questions_compute_once() -> None:
    cache: ReleaseCache[float] = ReleaseCache()
    accountant = create_accountant()
    calls: list[int] = []
    answers: list[float] = []
    lock = threading.Lock()

    def slow() -> tuple[float, PrivacyLoss]:
        with lock:
            calls.append(1)
        time.sleep(0.02)
        return noisy_answer()

    def ask() -> None:
        replay = replay_or_release(
            cache=cache,
            key=key(q="same"),
            accountant=accountant,
            buyer="acme",
            planned=PrivacyLoss(0.25),
            produce=slow,
        )
        with lock:
            answers.append(replay.value)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(answers)) == 1 and len(answers) == 6
    assert accountant.spent("acme") == PrivacyLoss(0.25)


def test_cache_refuses_a_different_answer_and_restores() -> None:
    cache: ReleaseCache[float] = ReleaseCache()
    cache.put(key(q=1), 1.0)
    cache.put(key(q=1), 1.0)
    with pytest.raises(ReleaseConflict) as info:
        cache.put(key(q=1), 2.0)
    assert info.value.key == key(q=1).digest
    restored: ReleaseCache[float] = ReleaseCache(cache.snapshot())
    assert restored.get(key(q=1)) == 1.0 and restored.get(key(q=2)) is None


def test_identical_aggregate_question_gets_the_identical_answer() -> None:
    table, _ = create_random_table(np.random.default_rng(3), 2000)
    policy = make_policy()
    accountant = PrivacyAccountant.from_policy(policy)
    cache: ReleaseCache[AggregateResult] = ReleaseCache()

    def ask(params: dict[str, object]) -> tuple[AggregateResult, bool]:
        request = AggregateRequest.model_validate(params)
        replay = replay_or_release(
            cache=cache,
            key=ReleaseKey.for_question(
                dataset_version="sha256:abc",
                buyer="acme",
                params=request.release_params(),
            ),
            accountant=accountant,
            buyer="acme",
            planned=request.planned_loss(),
            produce=lambda: (
                (result := run_aggregate(request, table, policy)),
                result.privacy_loss,
            ),
        )
        return replay.value, replay.replayed

    params: dict[str, object] = {
        "statistics": ["mean", "count"],
        "columns": ["age"],
        "group_by": ["region"],
        "filter": "age>=18",
        "mode": "dp",
        "dp": {"epsilon": 1},
    }
    first, replayed = ask(params)
    assert not replayed
    # Same question, spelled differently (order, spacing, 1 vs 1.0).
    second, replayed = ask(
        {
            **params,
            "statistics": ["count", "mean"],
            "filter": "age >= 18.0",
            "dp": {"epsilon": 1.0},
        }
    )
    assert replayed and second == first
    assert accountant.spent("acme").epsilon == pytest.approx(1.0)
    third, replayed = ask({**params, "filter": "age >= 19"})
    assert not replayed and third != first

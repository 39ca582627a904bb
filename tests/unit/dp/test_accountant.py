"""The privacy accountant: never overspends, reservations restore, state persists."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc_engine.dp import PrivacyAccountant, PrivacyLoss
from mpc_engine.dp.errors import (
    AccountantStateError,
    BudgetExhausted,
    InvalidParameter,
    ReservationError,
)
from mpc_engine.policy import RightsPolicy

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
BUYERS = ["acme", "globex", "initech"]


def create_accountant(
    buyer: tuple[float, float] = (1.0, 1e-6), dataset: tuple[float, float] = (2.0, 1e-5)
) -> PrivacyAccountant:
    return PrivacyAccountant(
        budget_per_buyer=PrivacyLoss(*buyer), budget_per_dataset=PrivacyLoss(*dataset)
    )


def exact(loss: PrivacyLoss) -> tuple[Decimal, Decimal]:
    return Decimal(repr(loss.epsilon)), Decimal(repr(loss.delta))


def test_ten_tenths_fill_a_budget_of_one_exactly() -> None:
    accountant = create_accountant(buyer=(1.0, 0.0), dataset=(1.0, 0.0))
    for _ in range(10):
        accountant.reserve("acme", PrivacyLoss(0.1)).commit()
    assert accountant.spent("acme") == PrivacyLoss(1.0)
    assert accountant.remaining() == PrivacyLoss(0.0)
    with pytest.raises(BudgetExhausted):
        accountant.reserve("acme", PrivacyLoss(1e-12))


def test_buyer_budget_refusal_names_scope_and_remaining() -> None:
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.75)).commit()
    with pytest.raises(BudgetExhausted) as info:
        accountant.reserve("acme", PrivacyLoss(0.5))
    error = info.value
    assert (error.scope, error.buyer) == ("buyer", "acme")
    assert error.requested == PrivacyLoss(0.5)
    assert error.remaining == PrivacyLoss(0.25, 1e-6)
    assert "'acme'" in str(error) and "ε=0.25" in str(error) and "ε=0.5" in str(error)
    # Another buyer still has its own budget.
    accountant.reserve("globex", PrivacyLoss(0.5)).commit()


def test_dataset_budget_caps_all_buyers_together() -> None:
    accountant = create_accountant(buyer=(1.0, 0.0), dataset=(2.0, 0.0))
    accountant.reserve("acme", PrivacyLoss(1.0)).commit()
    accountant.reserve("globex", PrivacyLoss(0.75)).commit()
    assert accountant.remaining("initech") == PrivacyLoss(0.25)
    with pytest.raises(BudgetExhausted) as info:
        accountant.reserve("initech", PrivacyLoss(0.5))
    assert info.value.scope == "dataset"
    assert info.value.remaining == PrivacyLoss(0.25)


def test_delta_is_budgeted_like_epsilon() -> None:
    accountant = create_accountant(buyer=(10.0, 1e-6), dataset=(10.0, 1e-6))
    accountant.reserve("acme", PrivacyLoss(0.1, 6e-7)).commit()
    with pytest.raises(BudgetExhausted) as info:
        accountant.reserve("acme", PrivacyLoss(0.1, 6e-7))
    assert info.value.remaining.delta == pytest.approx(4e-7)


def test_pending_reservations_count_until_released() -> None:
    accountant = create_accountant(buyer=(1.0, 0.0), dataset=(1.0, 0.0))
    held = accountant.reserve("acme", PrivacyLoss(0.75))
    with pytest.raises(BudgetExhausted):
        accountant.reserve("globex", PrivacyLoss(0.5))
    held.release()
    assert accountant.remaining() == PrivacyLoss(1.0)
    accountant.reserve("globex", PrivacyLoss(0.5)).commit()


def test_commit_of_the_actual_smaller_loss() -> None:
    accountant = create_accountant()
    held = accountant.reserve("acme", PrivacyLoss(0.5, 1e-7))
    held.commit(PrivacyLoss(0.25))
    assert accountant.spent("acme") == PrivacyLoss(0.25)
    other = accountant.reserve("acme", PrivacyLoss(0.1))
    with pytest.raises(ReservationError, match="more than the reserved"):
        other.commit(PrivacyLoss(0.2))
    assert other.open  # a refused commit leaves it pending
    other.release()


def test_a_reservation_closes_once() -> None:
    accountant = create_accountant()
    held = accountant.reserve("acme", PrivacyLoss(0.1))
    held.commit()
    for action in (held.commit, held.release):
        with pytest.raises(ReservationError) as info:
            action()
        assert info.value.reservation_id == held.id
    stranger = create_accountant().reserve("acme", PrivacyLoss(0.1))
    with pytest.raises(ReservationError):
        accountant.commit(stranger)


def test_reservation_as_context_manager() -> None:
    accountant = create_accountant()
    with accountant.reserve("acme", PrivacyLoss(0.25)):
        pass
    assert accountant.spent("acme") == PrivacyLoss(0.25)
    with pytest.raises(RuntimeError), accountant.reserve("acme", PrivacyLoss(0.5)):
        raise RuntimeError("job failed")
    assert accountant.spent("acme") == PrivacyLoss(0.25)
    assert accountant.remaining("acme") == PrivacyLoss(0.75, 1e-6)


def test_bad_inputs_are_refused() -> None:
    accountant = create_accountant()
    with pytest.raises(InvalidParameter, match="buyer"):
        accountant.reserve("", PrivacyLoss(0.1))
    with pytest.raises(InvalidParameter, match="loss"):
        accountant.reserve("acme", 0.1)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="epsilon"):
        PrivacyLoss(-0.1)
    with pytest.raises(InvalidParameter, match="delta"):
        PrivacyLoss(0.1, 1.0)


# -- random sequences: never overspend, release restores ------------------------

operation = st.tuples(
    st.sampled_from(["reserve", "commit", "commit_less", "release"]),
    st.sampled_from(BUYERS),
    st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.7]),
    st.sampled_from([0.0, 1e-7, 3e-7]),
    st.integers(0, 20),
)


@given(ops=st.lists(operation, max_size=60))
@PROPERTY
def test_random_sequences_never_overspend(
    ops: list[tuple[str, str, float, float, int]],
) -> None:
    accountant = create_accountant(buyer=(1.0, 1e-6), dataset=(1.5, 1.5e-6))
    pending = []
    committed: dict[str, list[PrivacyLoss]] = {b: [] for b in BUYERS}
    for action, buyer, eps, dlt, pick in ops:
        if action == "reserve":
            try:
                pending.append(accountant.reserve(buyer, PrivacyLoss(eps, dlt)))
            except BudgetExhausted as exc:
                assert not exc.requested.within(exc.remaining)
        elif pending:
            held = pending.pop(pick % len(pending))
            if action == "release":
                held.release()
            else:
                spend = held.loss
                if action == "commit_less":
                    spend = PrivacyLoss(held.loss.epsilon / 2, held.loss.delta / 2)
                held.commit(spend)
                committed[held.buyer].append(spend)
        # Invariant: committed + pending within both budgets, exactly.
        held_by = {b: [r.loss for r in pending if r.buyer == b] for b in BUYERS}
        total_e, total_d = Decimal(0), Decimal(0)
        for b in BUYERS:
            amounts = [exact(x) for x in committed[b] + held_by[b]]
            e = sum((a for a, _ in amounts), Decimal(0))
            d = sum((x for _, x in amounts), Decimal(0))
            assert e <= Decimal("1.0") and d <= Decimal("0.000001")
            total_e, total_d = total_e + e, total_d + d
        assert total_e <= Decimal("1.5") and total_d <= Decimal("0.0000015")
    for held in pending:
        held.release()
    # With everything released, only commitments remain spent.
    for b in BUYERS:
        spent = sum((exact(x)[0] for x in committed[b]), Decimal(0))
        assert Decimal(repr(accountant.spent(b).epsilon)) == spent


@given(
    amounts=st.lists(st.sampled_from([0.01, 0.02, 0.05, 0.1]), min_size=1, max_size=30)
)
@PROPERTY
def test_reserve_then_release_restores_the_budget(amounts: list[float]) -> None:
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.3)).commit()
    before = (accountant.remaining("acme"), accountant.remaining())
    held = []
    for eps in amounts:
        try:
            held.append(accountant.reserve("acme", PrivacyLoss(eps)))
        except BudgetExhausted:
            break
    for reservation in reversed(held):
        reservation.release()
    assert (accountant.remaining("acme"), accountant.remaining()) == before


def test_concurrent_reservations_never_overspend() -> None:
    accountant = create_accountant(buyer=(1.0, 0.0), dataset=(3.0, 0.0))
    successes: list[tuple[str, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        buyer = BUYERS[index % len(BUYERS)] + str(index % 4)
        barrier.wait()
        for step in range(60):
            eps = 0.01 * (1 + (index + step) % 3)
            try:
                reservation = accountant.reserve(buyer, PrivacyLoss(eps))
            except BudgetExhausted:
                continue
            if step % 5 == 0:
                reservation.release()
            else:
                reservation.commit()
                with lock:
                    successes.append((buyer, eps))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum((Decimal(repr(e)) for _, e in successes), Decimal(0))
    assert total <= Decimal(3)
    assert Decimal(repr(accountant.spent().epsilon)) == total
    for buyer in {b for b, _ in successes}:
        mine = sum((Decimal(repr(e)) for b, e in successes if b == buyer), Decimal(0))
        assert mine <= Decimal(1)
        assert Decimal(repr(accountant.spent(buyer).epsilon)) == mine
    # Four buyers with a budget of 1 each could spend up to 4 > 3: the dataset
    # budget was binding, and it was filled to within the smallest step.
    assert total > Decimal("2.9")


# -- persistence ------------------------------------------------------------------


def test_state_round_trips_and_counts_pending_as_spent() -> None:
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.25, 1e-7)).commit()
    accountant.reserve("globex", PrivacyLoss(0.5))  # pending: fail closed
    state = json.loads(accountant.to_json())
    assert state["buyers"] == {
        "acme": {"epsilon": "0.25", "delta": "1E-7"},
        "globex": {"epsilon": "0.5", "delta": "0.0"},
    }
    restored = PrivacyAccountant.from_json(accountant.to_json())
    assert restored.spent("acme") == PrivacyLoss(0.25, 1e-7)
    assert restored.spent("globex") == PrivacyLoss(0.5)
    assert restored.spent() == PrivacyLoss(0.75, 1e-7)
    assert restored.budget_per_buyer == PrivacyLoss(1.0, 1e-6)
    assert restored.to_json() == accountant.to_json()


def test_state_takes_budgets_from_a_new_policy() -> None:
    policy = RightsPolicy.model_validate(
        {
            "permitted_kinds": ["aggregate"],
            "permitted_columns": ["age"],
            "purposes": ["research"],
            "regions": ["DE"],
            "budget_per_buyer": {"epsilon": 0.5, "delta": 0.0},
            "budget_per_dataset": {"epsilon": 5.0, "delta": 0.0},
            "column_bounds": {"age": {"lower": 0, "upper": 120}},
        }
    )
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.75)).commit()
    restored = PrivacyAccountant.from_json(accountant.to_json(), policy=policy)
    assert restored.budget_per_buyer == PrivacyLoss(0.5)
    assert restored.remaining("acme") == PrivacyLoss(0.0)
    with pytest.raises(BudgetExhausted):
        restored.reserve("acme", PrivacyLoss(0.01))
    assert PrivacyAccountant.from_policy(policy).remaining() == PrivacyLoss(5.0)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: "not json", "(document)"),
        (lambda s: json.dumps([1]), "(document)"),
        (lambda s: json.dumps({**s, "extra": 1}), "(document)"),
        (lambda s: json.dumps({**s, "version": 3}), "version"),
        (
            lambda s: json.dumps({k: v for k, v in s.items() if k != "shared"}),
            "(document)",
        ),
        (
            lambda s: json.dumps({**s, "shared": {"epsilon": "-1", "delta": "0"}}),
            "shared.epsilon",
        ),
        (
            lambda s: json.dumps({**s, "spent": {"epsilon": "-1", "delta": "0"}}),
            "spent.epsilon",
        ),
        (
            lambda s: json.dumps({**s, "spent": {"epsilon": 1, "delta": "0"}}),
            "spent.epsilon",
        ),
        (
            lambda s: json.dumps({**s, "spent": {"epsilon": "NaN", "delta": "0"}}),
            "spent.epsilon",
        ),
        (
            lambda s: json.dumps({**s, "spent": {"epsilon": "x", "delta": "0"}}),
            "spent.epsilon",
        ),
        (
            lambda s: json.dumps({**s, "spent": {"epsilon": "0", "delta": "1"}}),
            "spent.delta",
        ),
        (
            lambda s: json.dumps({**s, "buyers": {"": {"epsilon": "0", "delta": "0"}}}),
            "buyers.",
        ),
        (lambda s: json.dumps({**s, "buyers": []}), "buyers"),
    ],
)
def test_invalid_state_is_refused_with_the_field(mutate: object, field: str) -> None:
    state = json.loads(create_accountant().to_json())
    with pytest.raises(AccountantStateError) as info:
        PrivacyAccountant.from_json(mutate(state))  # type: ignore[operator]
    assert info.value.field == field


def test_restored_dataset_total_is_never_below_its_buyers() -> None:
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.5)).commit()
    state = json.loads(accountant.to_json())
    state["spent"] = {"epsilon": "0", "delta": "0"}  # tampered or stale
    restored = PrivacyAccountant.from_json(json.dumps(state))
    assert restored.spent() == PrivacyLoss(0.5)


def test_a_shared_release_counts_in_the_dataset_total_once() -> None:
    accountant = PrivacyAccountant(
        budget_per_buyer=PrivacyLoss(1.0), budget_per_dataset=PrivacyLoss(1.5)
    )
    accountant.reserve("acme", PrivacyLoss(0.5)).commit()  # the release
    for buyer in ("beta", "gamma", "delta"):  # three more buyers re-use it
        accountant.reserve(buyer, PrivacyLoss(0.5), dataset=False).commit()
    assert accountant.spent() == PrivacyLoss(0.5)
    assert accountant.spent("gamma") == PrivacyLoss(0.5)
    assert accountant.remaining() == PrivacyLoss(1.0)
    # The buyer's own budget still binds a re-use.
    with pytest.raises(BudgetExhausted):
        accountant.reserve("gamma", PrivacyLoss(0.6), dataset=False)
    # A pending re-use holds the buyer's budget, not the dataset's.
    held = accountant.reserve("beta", PrivacyLoss(0.5), dataset=False)
    assert accountant.remaining() == PrivacyLoss(1.0)
    assert accountant.remaining("beta") == PrivacyLoss(0.0)
    # Persisted (a pending re-use counts as spent, fail-closed) and restored
    # without inflating the total to the sum of the buyers.
    restored = PrivacyAccountant.from_json(accountant.to_json())
    assert restored.spent() == PrivacyLoss(0.5)
    assert restored.spent("beta") == PrivacyLoss(1.0)
    held.release()
    # Tampering that lowers the total below buyers − shared is undone.
    state = json.loads(accountant.to_json())
    state["spent"] = {"epsilon": "0", "delta": "0"}
    assert PrivacyAccountant.from_json(json.dumps(state)).spent() == PrivacyLoss(0.5)


def test_a_version_1_state_still_restores() -> None:
    accountant = create_accountant()
    accountant.reserve("acme", PrivacyLoss(0.5)).commit()
    state = json.loads(accountant.to_json())
    state["version"] = 1
    del state["shared"]
    restored = PrivacyAccountant.from_json(json.dumps(state))
    assert restored.spent() == PrivacyLoss(0.5)
    assert json.loads(restored.to_json())["version"] == 2

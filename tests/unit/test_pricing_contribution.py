"""Revenue splits by contribution: rows, leave-one-out, exact and sampled Shapley."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing import (
    MAX_EXACT_PARTIES,
    MoneyError,
    leave_one_out,
    shapley_exact,
    shapley_sampled,
    split_by_rows,
    split_by_value,
)


def additive(weights: dict[str, float]) -> object:
    return lambda s: sum(weights[p] for p in s)


def test_additive_game_gives_each_its_own_weight() -> None:
    w = {"a": 3.0, "b": 1.0, "c": 6.0}
    v = additive(w)
    assert shapley_exact(v, list(w)) == pytest.approx(w)  # type: ignore[arg-type]
    assert leave_one_out(v, list(w)) == pytest.approx(w)  # type: ignore[arg-type]


def test_glove_game_textbook_values() -> None:
    # One left glove (L), two right gloves (R1, R2): a pair is worth 1.
    def v(s: frozenset[str]) -> float:
        return 1.0 if "L" in s and ({"R1", "R2"} & s) else 0.0

    phi = shapley_exact(v, ["L", "R1", "R2"])
    assert phi == pytest.approx({"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6})
    assert leave_one_out(v, ["L", "R1", "R2"]) == {"L": 1.0, "R1": 0.0, "R2": 0.0}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.randoms(use_true_random=False))
def test_shapley_is_efficient_and_symmetric(n: int, rnd: object) -> None:
    parties = [f"p{i}" for i in range(n)]
    table = {
        frozenset(c): rnd.random()  # type: ignore[attr-defined]
        for k in range(n + 1)
        for c in itertools.combinations(parties, k)
    }
    table[frozenset()] = 0.0
    phi = shapley_exact(table.__getitem__, parties)
    assert sum(phi.values()) == pytest.approx(table[frozenset(parties)])


def test_exact_shapley_refuses_too_many_parties() -> None:
    parties = list(range(MAX_EXACT_PARTIES + 1))
    with pytest.raises(MoneyError, match="shapley_sampled"):
        shapley_exact(lambda s: float(len(s)), parties)


def test_sampled_shapley_is_within_its_bound_of_the_exact_value() -> None:
    parties = [f"p{i}" for i in range(8)]

    def v(s: frozenset[str]) -> float:  # diminishing returns: not additive
        return min(1.0, 0.3 * len(s)) + (0.2 if "p0" in s and "p1" in s else 0.0)

    exact = shapley_exact(v, parties)
    est = shapley_sampled(v, parties, permutations=400, value_range=1.2, seed=7)
    assert est.permutations == 400 and est.confidence == 0.95
    assert 0 < est.error_bound < 0.5
    for p in parties:
        assert abs(est.values[p] - exact[p]) <= est.error_bound
    more = shapley_sampled(v, parties, permutations=1_600, value_range=1.2, seed=7)
    assert more.error_bound == pytest.approx(est.error_bound / 2)


def test_sampled_shapley_scales_past_the_exact_limit() -> None:
    parties = list(range(40))
    est = shapley_sampled(
        lambda s: float(len(s)), parties, permutations=50, value_range=1.0, seed=1
    )
    assert est.values == {p: pytest.approx(1.0) for p in parties}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"permutations": 0, "value_range": 1.0}, "permutation"),
        ({"permutations": 5, "value_range": 0.0}, "value_range"),
        ({"permutations": 5, "value_range": 1.0, "confidence": 1.0}, "confidence"),
    ],
)
def test_sampled_shapley_refuses_bad_settings(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(MoneyError, match=message):
        shapley_sampled(lambda s: 0.0, ["a"], **kwargs)  # type: ignore[arg-type]


@given(
    st.integers(0, 10**12),
    st.dictionaries(
        st.text(min_size=1, max_size=4), st.integers(0, 10**9), min_size=1, max_size=12
    ),
)
def test_splits_by_rows_sum_exactly(amount: int, rows: dict[str, int]) -> None:
    if sum(rows.values()) == 0:
        with pytest.raises(MoneyError):
            split_by_rows(amount, rows)
        return
    parts = split_by_rows(amount, rows)
    assert sum(parts.values()) == amount and set(parts) == set(rows)


def test_split_by_value_gives_negative_contributors_nothing() -> None:
    parts = split_by_value(1_000, {"good": 0.75, "fine": 0.25, "harmful": -0.4})
    assert parts == {"good": 750, "fine": 250, "harmful": 0}
    assert split_by_value(10, {"a": -1.0, "b": 0.0}) == {"a": 5, "b": 5}
    with pytest.raises(MoneyError, match="finite"):
        split_by_value(10, {"a": float("nan")})


def test_parties_must_be_distinct() -> None:
    with pytest.raises(MoneyError, match="distinct"):
        leave_one_out(lambda s: 0.0, ["a", "a"])

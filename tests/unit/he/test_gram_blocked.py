"""``gram_matrix``'s blocked reduction against the row-by-row definition.

``_reference`` is the previous implementation, kept verbatim: clamp every row,
normalise it to ``z = [1, (x - c)/h, (y - c_y)/h_y]`` and add ``zᵀz`` chunk by
chunk. The blocked one centres and bound-tests whole blocks, clamps only blocks
that need it, and divides by the half-widths on the m × m sums; it must agree up
to floating-point rounding, refuse the same inputs with the same errors, and clamp
to exactly the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_engine.he import GramBounds, _gram, gram_matrix
from mpc_engine.he.errors import InvalidInput

Array = npt.NDArray[np.float64]


def _reference(x: npt.ArrayLike, y: npt.ArrayLike, bounds: GramBounds) -> Array:
    """The moments as the previous, row-by-row implementation computed them."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 2 or xs.shape[1] != bounds.n_features:
        raise InvalidInput(
            "x", f"must be a matrix with {bounds.n_features} columns (one per bound)"
        )
    if ys.ndim != 1 or ys.shape[0] != xs.shape[0]:
        raise InvalidInput("y", "must be a vector with one label per row of x")
    n = int(xs.shape[0])
    if n == 0:
        raise InvalidInput("x", "has no rows")
    if not np.all(np.isfinite(xs)):
        col = int(np.argwhere(~np.isfinite(xs))[0][1])
        raise InvalidInput(
            "x", f"column {col} has NaN or infinite values; clamping cannot place them"
        )
    if not np.all(np.isfinite(ys)):
        raise InvalidInput(
            "y", "has NaN or infinite values; clamping cannot place them"
        )
    chunk = 1 << 16
    lo, hi = (np.array(v) for v in zip(*bounds.features, strict=True))
    centres, halves = bounds.centres, bounds.half_widths
    m = bounds.dim
    total = np.zeros((m, m))
    z = np.empty((min(n, chunk), m))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        zc = z[: stop - start]
        zc[:, 0] = 1.0
        np.clip(xs[start:stop], lo, hi, out=zc[:, 1:-1])
        zc[:, 1:-1] -= centres[:-1]
        zc[:, 1:-1] /= halves[:-1]
        np.clip(ys[start:stop], *bounds.label, out=zc[:, -1])
        zc[:, -1] -= centres[-1]
        zc[:, -1] /= halves[-1]
        total += zc.T @ zc
    moments: Array = total / n
    return (moments + moments.T) / 2.0


def _tolerance(bounds: GramBounds) -> float:
    """Rounding of the centred values, relative to the half-width: ~ε·|c|/h."""
    ratio = float(np.max(1.0 + np.abs(bounds.centres) / bounds.half_widths))
    return 1e-13 + 8 * np.finfo(np.float64).eps * ratio


def _assert_matches_reference(
    x: npt.ArrayLike, y: npt.ArrayLike, b: GramBounds
) -> None:
    got = gram_matrix(x, y, b).moments
    want = _reference(x, y, b)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=_tolerance(b))
    np.testing.assert_array_equal(got, got.T)
    assert got[0, 0] == 1.0
    assert np.all(np.abs(got) <= 1.0)


def _bounds(rng: np.random.Generator, d: int, offset: float = 100.0) -> GramBounds:
    """Boxes of width 0.5..8 whose centres lie up to ``offset`` widths from 0."""
    widths = rng.uniform(0.5, 8.0, d + 1)
    lows = rng.uniform(-offset, offset, d + 1) * widths
    pairs = [(float(lo), float(lo + w)) for lo, w in zip(lows, widths, strict=True)]
    return GramBounds(tuple(pairs[:-1]), pairs[-1])


def _rows(
    rng: np.random.Generator, n: int, b: GramBounds, outside: float
) -> tuple[Array, Array]:
    """Rows uniform in the boxes widened by ``outside`` widths on each side."""
    lo = np.array([*(f[0] for f in b.features), b.label[0]])
    hi = np.array([*(f[1] for f in b.features), b.label[1]])
    w = hi - lo
    data = rng.uniform(lo - outside * w, hi + outside * w, size=(n, lo.size))
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].copy()


def _c(x: Array) -> Array:
    return np.ascontiguousarray(x)


def _f(x: Array) -> Array:
    return np.asfortranarray(x)


def _every_other_row(x: Array) -> Array:
    """Rows not adjacent in memory: neither row- nor column-major."""
    return np.repeat(x, 2, axis=0)[::2]


def _reversed(x: Array) -> Array:
    return np.ascontiguousarray(x[::-1])[::-1]


def _columns_of_a_wider_matrix(x: Array) -> Array:
    wide = np.zeros((x.shape[0], x.shape[1] + 3))
    wide[:, 1:-2] = x
    return wide[:, 1:-2]


def _transposed_storage(x: Array) -> Array:
    """Column-major through a transpose view (``.T`` of a row-major array)."""
    return np.ascontiguousarray(x.T).T


LAYOUTS: dict[str, Callable[[Array], Array]] = {
    "row_major": _c,
    "column_major": _f,
    "every_other_row": _every_other_row,
    "reversed_rows": _reversed,
    "columns_of_a_wider_matrix": _columns_of_a_wider_matrix,
    "transposed_storage": _transposed_storage,
}


@pytest.fixture(params=["default_blocks", "tiny_blocks"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The production block sizes, or 64-row blocks in 3-block chunks.

    Tiny blocks put every path — whole row-major chunks, a last short chunk, a
    last block whose rows are not a multiple of the wide views' span — into
    inputs of a few hundred rows.
    """
    if request.param == "tiny_blocks":
        monkeypatch.setattr(_gram, "_BLOCK_VALUES", 64)
        monkeypatch.setattr(_gram, "_CHUNK_BLOCKS", 3)
    return str(request.param)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    ("n", "d"),
    [(1, 1), (2, 3), (63, 2), (64, 1), (65, 4), (191, 3), (192, 5), (400, 16)],
)
def test_small_inputs_match_the_reference(
    blocks: str, layout: str, n: int, d: int
) -> None:
    rng = np.random.default_rng(n * 100 + d)
    b = _bounds(rng, d)
    x, y = _rows(rng, n, b, outside=0.3)  # about 40 % of the values get clamped
    _assert_matches_reference(LAYOUTS[layout](x), y, b)


@pytest.mark.parametrize("layout", ["row_major", "column_major", "every_other_row"])
@pytest.mark.parametrize("n", [4095, 4096, 4097, 65_536, 140_001])
def test_production_block_sizes_match_the_reference(layout: str, n: int) -> None:
    # d = 16 as in the benchmark: 4096-row blocks, 65 536-row chunks
    rng = np.random.default_rng(n)
    b = _bounds(rng, 16, offset=5.0)
    x, y = _rows(rng, n, b, outside=0.0)  # inside the bounds: the unclamped path
    _assert_matches_reference(LAYOUTS[layout](x), y, b)
    x[n // 2, 3] = b.features[3][1] + 1.0  # one value to clamp, in one block
    y[-1] = b.label[0] - 1.0
    _assert_matches_reference(LAYOUTS[layout](x), y, b)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Array, Array, GramBounds]:
    d = draw(st.integers(1, 6))
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = _bounds(rng, d, offset=draw(st.sampled_from([0.0, 3.0, 1e4])))
    x, y = _rows(rng, n, b, outside=draw(st.sampled_from([0.0, 0.05, 2.0])))
    # some values exactly on a bound, or one step of rounding beyond it
    lo = np.array([*(f[0] for f in b.features), b.label[0]])
    hi = np.array([*(f[1] for f in b.features), b.label[1]])
    data = np.column_stack([x, y])
    mask = rng.random(data.shape) < 0.1
    edge = rng.integers(0, 4, size=data.shape)
    ends = np.stack(
        [
            np.broadcast_to(v, data.shape)
            for v in (lo, hi, np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf))
        ]
    )
    data = np.where(mask, np.take_along_axis(ends, edge[None], axis=0)[0], data)
    layout = LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))]
    return layout(data[:, :-1]), data[:, -1].copy(), b


@settings(max_examples=200, deadline=None)
@given(_cases())
def test_random_inputs_match_the_reference(
    case: tuple[Array, Array, GramBounds],
) -> None:
    x, y, b = case
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_gram, "_BLOCK_VALUES", 64)
        mp.setattr(_gram, "_CHUNK_BLOCKS", 2)
        _assert_matches_reference(x, y, b)
    _assert_matches_reference(x, y, b)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_clamping_gives_exactly_the_clamped_rows_sums(blocks: str, layout: str) -> None:
    # Centres far from 0 against the widths make x - c round coarsely: a value
    # just beyond a bound must still centre and clamp to exactly bound - c.
    rng = np.random.default_rng(7)
    d, n = 5, 1000
    lows = rng.uniform(1e6, 2e6, d + 1)
    widths = rng.uniform(0.001, 0.01, d + 1)
    pairs = [(float(a), float(a + w)) for a, w in zip(lows, widths, strict=True)]
    b = GramBounds(tuple(pairs[:-1]), pairs[-1])
    lo, hi = lows, lows + widths
    choices = np.stack(
        [
            rng.uniform(lo, hi, (n, d + 1)),
            np.broadcast_to(np.nextafter(hi, np.inf), (n, d + 1)),
            np.broadcast_to(np.nextafter(lo, -np.inf), (n, d + 1)),
            np.broadcast_to(hi + 3 * widths, (n, d + 1)),
            np.broadcast_to(lo - 1e3, (n, d + 1)),
            np.broadcast_to(hi, (n, d + 1)),
        ]
    )
    data = np.take_along_axis(choices, rng.integers(0, 6, (1, n, d + 1)), axis=0)[0]
    clipped = np.clip(data, lo, hi)
    got = gram_matrix(LAYOUTS[layout](data[:, :-1]), data[:, -1], b)
    want = gram_matrix(LAYOUTS[layout](clipped[:, :-1]), clipped[:, -1], b)
    np.testing.assert_array_equal(got.moments, want.moments)
    assert got.digest() == want.digest()
    _assert_matches_reference(LAYOUTS[layout](data[:, :-1]), data[:, -1], b)


def test_huge_finite_values_are_clamped_not_refused(blocks: str) -> None:
    # x - c overflows to ±inf for these: still finite inputs, so clamped.
    top = float(np.finfo(np.float64).max)
    b = GramBounds(((-1e308, -0.5e308), (0.0, 1.0)), (0.5e308, 1e308))
    x = np.array([[top, 0.5], [-top, top], [-1e308, -top], [top, 0.25]] * 50)
    y = np.array([-top, top, 1e308, -1e308] * 50)
    for layout in LAYOUTS.values():
        got = gram_matrix(layout(x), y, b).moments
        want = _reference(layout(x), y, b)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _non_finite_cases() -> Iterator[tuple[str, list[tuple[str, int, int, float]]]]:
    """(name, [(where, row, column, value), ...]) for 300 rows of 3 features."""
    for value, label in [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")]:
        yield f"x_first_row_{label}", [("x", 0, 2, value)]
        yield f"x_last_row_{label}", [("x", 299, 1, value)]
        yield f"y_{label}", [("y", 150, 0, value)]
    # features before labels, even if the label's row comes first
    yield "y_then_x", [("y", 3, 0, np.nan), ("x", 280, 0, np.inf)]
    # the first non-finite value in row-major order names the column
    yield "two_columns", [("x", 200, 2, np.nan), ("x", 200, 1, -np.inf)]
    yield "two_rows", [("x", 250, 0, np.nan), ("x", 100, 2, np.inf)]
    # a clamped value in the same block does not hide a NaN
    yield "with_clamped", [("x", 10, 0, 1e9), ("x", 11, 1, np.nan)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    ("name", "bad"), list(_non_finite_cases()), ids=[c[0] for c in _non_finite_cases()]
)
def test_non_finite_values_are_refused_like_the_reference(
    blocks: str, layout: str, name: str, bad: list[tuple[str, int, int, float]]
) -> None:
    rng = np.random.default_rng(3)
    b = _bounds(rng, 3)
    x, y = _rows(rng, 300, b, outside=0.2)
    for where, row, col, value in bad:
        if where == "x":
            x[row, col] = value
        else:
            y[row] = value
    with pytest.raises(InvalidInput) as want:
        _reference(x, y, b)
    with pytest.raises(InvalidInput) as got:
        gram_matrix(LAYOUTS[layout](x), y, b)
    assert (got.value.field, str(got.value)) == (want.value.field, str(want.value))


def test_other_dtypes_and_sequences_match_the_reference(blocks: str) -> None:
    rng = np.random.default_rng(11)
    b = GramBounds(((0.0, 10.0), (-3.0, 3.0)), (0.0, 1.0))
    x = rng.integers(-5, 15, size=(129, 2))
    y = rng.integers(0, 2, size=129)
    _assert_matches_reference(x, y, b)
    _assert_matches_reference(x.astype(np.float32), y.astype(np.float32), b)
    _assert_matches_reference(x.tolist(), y.tolist(), b)


def test_the_result_is_deterministic_and_layout_independent(blocks: str) -> None:
    rng = np.random.default_rng(5)
    b = _bounds(rng, 4, offset=3.0)
    x, y = _rows(rng, 1000, b, outside=0.1)
    first = gram_matrix(x, y, b)
    assert gram_matrix(x.copy(), y.copy(), b).digest() == first.digest()
    for layout in LAYOUTS.values():
        np.testing.assert_allclose(
            gram_matrix(layout(x), y, b).moments, first.moments, rtol=0, atol=1e-14
        )


def test_moments_stay_in_range_when_centres_round() -> None:
    # c = (lower + upper)/2 rounds at this magnitude, so (upper - c)/h ≠ 1 exactly:
    # the reference can leave [-1, 1] by rounding; the moments never do.
    b = GramBounds(((1e6, 1e6 + 0.3),), (-1e9, -1e9 + 0.7))
    x = np.full((10, 1), 1e6 + 0.3)
    y = np.full(10, -1e9)
    moments = gram_matrix(x, y, b).moments
    assert np.all(np.abs(moments) <= 1.0)
    np.testing.assert_allclose(moments, _reference(x, y, b), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-300, 1e-130, 1e130, 1e300])
def test_extreme_half_widths_match_the_reference(blocks: str, scale: float) -> None:
    # Σ x̃² would overflow or lose its digits to underflow: rows are normalised
    # before they are summed instead.
    rng = np.random.default_rng(13)
    b0 = _bounds(rng, 3, offset=2.0)
    b = GramBounds(
        tuple((lo * scale, hi * scale) for lo, hi in b0.features),
        (b0.label[0] * scale, b0.label[1] * scale),
    )
    x, y = _rows(rng, 700, b0, outside=0.2)
    got = gram_matrix(x * scale, y * scale, b).moments
    np.testing.assert_allclose(got, _reference(x * scale, y * scale, b), atol=1e-12)
    np.testing.assert_allclose(got, gram_matrix(x, y, b0).moments, atol=1e-12)

"""Plaintext sufficient statistics for ``encrypted_model_eval``: the Gram matrix.

The node reduces its rows once per dataset version (DESIGN §4: O(rows) work in
plaintext, O(features) under encryption). Each row is clamped to the policy bounds
and mapped affinely onto [-1, 1] per column, ``x' = (x - c) / h`` with centre
``c = (lower + upper) / 2`` and half-width ``h = (upper - lower) / 2``; with
``z = [1, x'₁ … x'_d, y']`` the node keeps the normalised moment matrix

    M = (1/n) Σᵢ zᵢ zᵢᵀ        (m × m, m = d + 2, every entry in [-1, 1])

which holds the row count (M₀₀ = 1), the column means (row 0) and all second
moments — everything a linear or logistic model's degree-2 metrics need. The
normalisation keeps every encrypted value O(1), so CKKS precision is relative to
the data's range and the sensitivities below depend only on m and n.

Sensitivity is for replace-one neighbours (bounded DP: n is public, as the node
releases it and enforces a minimum group size). One row changes each entry of M by
at most ``range(zᵢzⱼ) / n`` over the clamping box; :func:`sensitivity` sums those
ranges into ℓ1, ℓ2 and ℓ∞ bounds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from mpc_engine.he.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]


class HasBounds(Protocol):
    """Anything with ``lower`` and ``upper``, such as ``policy.ColumnBounds``."""

    @property
    def lower(self) -> float:
        """Lowest value kept; smaller values are clamped up to it."""

    @property
    def upper(self) -> float:
        """Highest value kept; larger values are clamped down to it."""


def _check_range(name: str, lower: float, upper: float) -> tuple[float, float]:
    lo, hi = float(lower), float(upper)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInput(name, "bounds must be finite numbers")
    if lo >= hi:
        raise InvalidInput(name, f"lower ({lo:g}) must be below upper ({hi:g})")
    return lo, hi


@dataclass(frozen=True)
class GramBounds:
    """Clamping bounds for the feature columns and the label column.

    Parameters
    ----------
    features
        ``(lower, upper)`` per feature column, in column order.
    label
        ``(lower, upper)`` for the label; ``(0, 1)`` for a logistic model.
    """

    features: tuple[tuple[float, float], ...]
    label: tuple[float, float]

    def __post_init__(self) -> None:
        """Check every range is finite and ordered."""
        if not isinstance(self.features, tuple) or not self.features:
            raise InvalidInput("bounds.features", "needs at least one feature column")
        checked = tuple(
            _check_range(f"bounds.features[{j}]", *pair)
            for j, pair in enumerate(self.features)
        )
        object.__setattr__(self, "features", checked)
        object.__setattr__(self, "label", _check_range("bounds.label", *self.label))

    @classmethod
    def from_policy(
        cls,
        column_bounds: Mapping[str, HasBounds],
        features: Sequence[str],
        label: str,
    ) -> GramBounds:
        """Take the bounds of the named columns from a rights policy.

        Raises
        ------
        InvalidInput
            A column has no bounds in the policy.
        """
        pairs: list[tuple[float, float]] = []
        for name in [*features, label]:
            b = column_bounds.get(name)
            if b is None:
                raise InvalidInput(
                    f"column_bounds.{name}",
                    "no bounds in the policy; encrypted_model_eval clamps every "
                    "column to its bounds",
                )
            pairs.append((b.lower, b.upper))
        return cls(tuple(pairs[:-1]), pairs[-1])

    @property
    def n_features(self) -> int:
        """d, the number of feature columns."""
        return len(self.features)

    @property
    def dim(self) -> int:
        """The dimension m = d + 2: the constant column, the features, the label."""
        return len(self.features) + 2

    def _columns(self) -> tuple[FloatArray, FloatArray]:
        pairs = np.array([*self.features, self.label], dtype=np.float64)
        return pairs[:, 0], pairs[:, 1]

    @property
    def centres(self) -> FloatArray:
        """Per column (features, then label): (lower + upper) / 2."""
        lo, hi = self._columns()
        out: FloatArray = (lo + hi) / 2.0
        return out

    @property
    def half_widths(self) -> FloatArray:
        """Per column (features, then label): (upper - lower) / 2."""
        lo, hi = self._columns()
        out: FloatArray = (hi - lo) / 2.0
        return out


@dataclass(frozen=True, eq=False)
class Gram:
    """The normalised moment matrix M of one dataset version (read-only).

    Build it with :func:`gram_matrix`; add DP noise with :meth:`perturbed`.
    """

    moments: FloatArray
    n_rows: int
    bounds: GramBounds
    is_perturbed: bool = False

    @property
    def dim(self) -> int:
        """The dimension m = d + 2."""
        return self.bounds.dim

    @staticmethod
    def noise_indices(dim: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Where :meth:`perturbed` adds noise: the upper triangle without M₀₀.

        ``np.triu_indices(dim)`` order, skipping ``(0, 0)`` (the constant 1: n is
        public). These are the entries :func:`sensitivity` bounds as ``moments``.
        """
        rows, cols = np.triu_indices(dim)
        return rows[1:], cols[1:]

    def perturbed(self, noise: npt.ArrayLike) -> Gram:
        """Return a copy with DP noise added to the unique entries of M.

        Every encrypted evaluation is then post-processing of this one release,
        whatever functional a buyer submits (sufficient-statistics perturbation,
        as in Dwork, Talwar, Thakurta, Zhang, "Analyze Gauss", STOC 2014). Entries
        are clipped back to their feasible range afterwards (post-processing).

        Parameters
        ----------
        noise
            One value per entry of :meth:`noise_indices`, drawn by the caller
            (OpenDP) for the ``moments`` sensitivity.
        """
        rows, cols = self.noise_indices(self.dim)
        arr = np.asarray(noise, dtype=np.float64)
        if arr.shape != rows.shape:
            raise InvalidInput(
                "noise",
                f"needs {rows.size} values (upper triangle of the "
                f"{self.dim}×{self.dim} moments without the constant entry)",
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInput("noise", "contains NaN or infinite values")
        out = self.moments.copy()
        out[rows, cols] += arr
        out[cols, rows] = out[rows, cols]
        np.clip(out, -1.0, 1.0, out=out)
        diag = np.arange(1, self.dim)
        out[diag, diag] = np.clip(out[diag, diag], 0.0, 1.0)
        out.setflags(write=False)
        return Gram(out, self.n_rows, self.bounds, is_perturbed=True)

    def digest(self) -> str:
        """SHA-256 (hex) of n, the bounds and M: a cache key and receipt input."""
        h = hashlib.sha256()
        h.update(self.n_rows.to_bytes(8, "big"))
        h.update(np.asarray([*self.bounds.features, self.bounds.label]).tobytes())
        h.update(np.ascontiguousarray(self.moments, dtype="<f8").tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"Gram(dim={self.dim}, n_rows={self.n_rows}, perturbed={self.is_perturbed})"
        )


def gram_matrix(x: npt.ArrayLike, y: npt.ArrayLike, bounds: GramBounds) -> Gram:
    """Clamp the rows to ``bounds`` and reduce them to the normalised moments.

    Parameters
    ----------
    x
        ``(n, d)`` feature matrix. Row- or column-major float64 is read in place,
        other layouts are copied a block at a time.
    y
        ``(n,)`` labels.
    bounds
        The policy's clamping bounds for the d features and the label.

    Returns
    -------
    Gram
        M = (1/n) Σ zᵢzᵢᵀ over the clamped, normalised rows.

    Raises
    ------
    InvalidInput
        Shapes disagree, there are no rows, or a value is NaN or infinite (clamping
        cannot give a missing value a place in the bounded domain).

    Notes
    -----
    One pass over the rows, in blocks small enough to stay in the L2 cache
    (:class:`_Sums`). A block is centred, ``x - c``, and its column minima and
    maxima tested against the centred bounds: only a block that fails is clamped,
    and NaN and ±inf always fail, so the same test finds them (no separate
    finiteness pass). Centring before summing keeps the precision of the
    definition however far the box lies from 0. BLAS then reduces the block to
    ``Σ x̃x̃ᵀ`` (syrk), ``Σ x̃`` and ``Σ x̃ỹ`` (gemv), and the division by the
    half-widths is applied to the m × m sums at the end,
    ``M = D⁻¹ S D⁻¹ / n`` with ``D = diag(1, h₁ … h_d, h_y)``, instead of to every
    value; M differs from normalising every row first only by rounding (and stays
    in [-1, 1]).
    """
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
    sums = _Sums(xs, ys, bounds)
    with np.errstate(over="ignore"):  # a huge value may overflow when centred
        for start in range(0, n, sums.chunk_rows):
            sums.add_chunk(start, min(start + sums.chunk_rows, n))
    moments = sums.moments()
    moments.setflags(write=False)
    return Gram(moments, n, bounds)


# A row-major block of k rows is viewed as (k / _SPAN, _SPAN · d), so that numpy's
# element-wise loops and reductions run over long contiguous rows, not d at a time.
_SPAN = 64
# Values per block (512 KiB): a block's centred copy stays in the L2 cache through
# the passes over it. Blocks have a multiple of _SPAN rows: 4096 rows at d = 16.
_BLOCK_VALUES = 1 << 16
# Blocks per chunk: the labels are centred, and the blocks' sums collected, a chunk
# at a time (65 536 rows at d = 16).
_CHUNK_BLOCKS = 16
# Half-widths in this range keep every sum of centred products, ≤ n·h², well
# inside float64 for any n; outside it the centred values are normalised before
# they are summed, as the definition does.
_SAFE_HALF_WIDTHS = (2.0**-400, 2.0**400)


class _Tiles(NamedTuple):
    """Per-column centres and centred bounds, repeated to a working view's width.

    ``left`` and ``right`` hold a block's bound test as one comparison,
    ``[lower, maxima] ≤ [minima, upper]``: the block's column minima are reduced
    into ``right[0]``, its maxima into ``left[1]``.
    """

    centre: FloatArray
    lower: FloatArray  # lower bound - centre, rounded as the centred values are
    upper: FloatArray  # upper bound - centre
    half: FloatArray
    left: FloatArray
    right: FloatArray
    passed: npt.NDArray[np.bool_]

    @classmethod
    def of(
        cls, centre: FloatArray, lower: FloatArray, upper: FloatArray, half: FloatArray
    ) -> _Tiles:
        """The tiles of the centres, the centred bounds and the half-widths."""
        left, right = np.stack([lower, lower]), np.stack([upper, upper])
        passed = np.empty(left.shape, dtype=bool)
        return cls(centre, lower, upper, half, left, right, passed)

    def repeated(self, times: int) -> _Tiles:
        """The tiles of ``times`` consecutive rows of a row-major block."""
        return _Tiles.of(*(np.tile(v, times) for v in self[:4]))


class _Sums:
    """The sums ``S = Σ z̃ z̃ᵀ`` of the centred, clamped rows, chunk by chunk.

    ``z̃ = [1, clamp(x) - c, clamp(y) - c_y]``: ``xx`` is ``Σ x̃x̃ᵀ``, ``x1`` and
    ``xy`` are ``Σ x̃`` and ``Σ x̃ỹ``, ``y1`` and ``yy`` are ``Σ ỹ`` and ``Σ ỹ²``.

    Every block is centred first, ``x̃ = x - c``, then clamped to the centred
    bounds ``[lower - c, upper - c]`` only if its column minima or maxima leave
    them. Rounding is monotonic, so a value beyond a bound centres to at least as
    far out as that bound does: clamping afterwards gives exactly ``clamp(x) - c``.
    NaN fails both bound tests and ±inf one of them, so they can only reach the
    clamp, which refuses them; an infinite centred value that comes from a huge
    finite one overflowing is clamped like any other.
    """

    def __init__(self, xs: FloatArray, ys: FloatArray, bounds: GramBounds) -> None:
        self.xs, self.ys = xs, ys
        self.n = n = int(xs.shape[0])
        d = bounds.n_features
        lower, upper = (
            np.array(v, dtype=np.float64) for v in zip(*bounds.features, strict=True)
        )
        centres, halves = bounds.centres, bounds.half_widths
        low, high = _SAFE_HALF_WIDTHS
        self.normalise = not bool(np.all((halves > low) & (halves < high)))
        self.scale = np.ones(d + 2) if self.normalise else np.append(1.0, halves)
        self.label_centre, self.label_half = float(centres[-1]), float(halves[-1])
        self.label_lower, self.label_upper = (
            v - self.label_centre for v in bounds.label
        )
        c = centres[:-1].copy()
        self.narrow = _Tiles.of(c, lower - c, upper - c, halves[:-1].copy())
        self.wide = self.narrow.repeated(_SPAN)
        self.block_rows = max(_SPAN, _BLOCK_VALUES // d // _SPAN * _SPAN)
        self.chunk_rows = self.block_rows * _CHUNK_BLOCKS
        # Row-major rows are read through the wide views; column-major ones through
        # (k, d) views, whose columns are long contiguous runs already; any other
        # layout is copied, block by block, to a row-major scratch block first.
        self.row_major = bool(xs.flags.c_contiguous)
        self.column_major = bool(xs.flags.f_contiguous) and not self.row_major
        rows = min(self.block_rows, n)
        self.block = np.empty((rows, d), order="F" if self.column_major else "C")
        self.scratch = (
            None if self.row_major or self.column_major else np.empty((rows, d))
        )
        self.ones = np.ones(rows)
        self.labels = np.empty(min(self.chunk_rows, n))
        blocks = -(-self.labels.shape[0] // rows)
        self.products = np.empty((blocks, d, d))
        self.col_sums = np.empty((blocks, d))
        self.label_sums = np.empty((blocks, d))
        # each block's outputs in a whole chunk, sliced once
        self.outputs = [
            (p, c1, cy, self.labels[i * rows : (i + 1) * rows])
            for i, (p, c1, cy) in enumerate(
                zip(self.products, self.col_sums, self.label_sums, strict=True)
            )
        ]
        self.xx = np.zeros((d, d))
        self.x1 = np.zeros(d)
        self.xy = np.zeros(d)
        self.y1 = 0.0
        self.yy = 0.0

    def add_chunk(self, start: int, stop: int) -> None:
        """Add the sums of rows ``start:stop`` (at most ``chunk_rows`` of them)."""
        labels = self._labels(start, stop)
        if self.row_major and stop - start == self.chunk_rows and not self.normalise:
            blocks = self._whole_chunk(start)
        else:
            blocks = 0
            for first in range(start, stop, self.block_rows):
                last = min(first + self.block_rows, stop)
                block = self._centred(first, last)
                np.matmul(block.T, block, out=self.products[blocks])
                np.matmul(self.ones[: last - first], block, out=self.col_sums[blocks])
                np.matmul(
                    labels[first - start : last - start],
                    block,
                    out=self.label_sums[blocks],
                )
                blocks += 1
        self.xx += self.products[:blocks].sum(axis=0)
        self.x1 += self.col_sums[:blocks].sum(axis=0)
        self.xy += self.label_sums[:blocks].sum(axis=0)

    def _labels(self, start: int, stop: int) -> FloatArray:
        """``clamp(y) - c_y`` for rows ``start:stop``; adds Σ ỹ and Σ ỹ²."""
        labels = self.labels[: stop - start]
        src = self.ys[start:stop]
        np.subtract(src, self.label_centre, out=labels)
        low, high = float(np.min(labels)), float(np.max(labels))
        if not (low >= self.label_lower and high <= self.label_upper):
            if not (math.isfinite(low) and math.isfinite(high)):
                self._refuse_if_non_finite(src)
            np.clip(labels, self.label_lower, self.label_upper, out=labels)
        if self.normalise:
            labels /= self.label_half
        self.y1 += float(np.add.reduce(labels))
        # numpy's own loop, not a BLAS ddot: OpenBLAS threads a ddot this long,
        # and on a busy machine waiting for its threads costs more than the sum
        self.yy += float(np.einsum("i,i->", labels, labels))
        return labels

    def _whole_chunk(self, start: int) -> int:
        """:meth:`_centred` and the sums for a whole row-major chunk, kept lean."""
        tiles = self.wide
        width = tiles.centre.shape[0]
        rows = self.block_rows // _SPAN
        parts = self.xs[start : start + self.chunk_rows].reshape(-1, rows, width)
        block, block_t, ones = self.block, self.block.T, self.ones
        dst = block.reshape(rows, width)
        centre, _, _, _, left, right, passed = tiles
        lows, highs = right[0], left[1]
        for src, (product, col_sum, label_sum, labels) in zip(
            parts, self.outputs, strict=True
        ):
            np.subtract(src, centre, out=dst)
            np.minimum.reduce(dst, axis=0, out=lows)
            np.maximum.reduce(dst, axis=0, out=highs)
            if not np.less_equal(left, right, out=passed).all():
                self._clamp(src, dst, tiles)
            np.matmul(block_t, block, out=product)
            np.matmul(ones, block, out=col_sum)
            np.matmul(labels, block, out=label_sum)
        return len(self.outputs)

    def _centred(self, first: int, last: int) -> FloatArray:
        """``clamp(x) - c`` for rows ``first:last``, in the block buffer."""
        k = last - first
        part = self.xs[first:last]
        block = self.block[:k]
        if self.scratch is not None:
            np.copyto(self.scratch[:k], part)
            part = self.scratch[:k]
        if self.column_major or k % _SPAN:
            src, dst, tiles = part, block, self.narrow
        else:
            width = _SPAN * part.shape[1]
            src, dst = part.reshape(-1, width), block.reshape(-1, width)
            tiles = self.wide
        np.subtract(src, tiles.centre, out=dst)
        np.minimum.reduce(dst, axis=0, out=tiles.right[0])
        np.maximum.reduce(dst, axis=0, out=tiles.left[1])
        if not np.less_equal(tiles.left, tiles.right, out=tiles.passed).all():
            self._clamp(src, dst, tiles)
        if self.normalise:
            dst /= tiles.half
        return block

    def _clamp(self, src: FloatArray, dst: FloatArray, tiles: _Tiles) -> None:
        """Clamp ``dst``, the centred ``src``, after it failed the bound test."""
        if not (np.isfinite(tiles.right[0]).all() and np.isfinite(tiles.left[1]).all()):
            self._refuse_if_non_finite(src)
        np.maximum(dst, tiles.lower, out=dst)
        np.minimum(dst, tiles.upper, out=dst)

    def _refuse_if_non_finite(self, src: FloatArray) -> None:
        if not np.isfinite(src).all():
            _refuse_non_finite(self.xs, self.ys)

    def moments(self) -> FloatArray:
        """``M = D⁻¹ S D⁻¹ / n``, symmetric and clipped to [-1, 1] against rounding.

        ``D = diag(1, h₁ … h_d, h_y)``, or the identity if the rows were normalised
        already (half-widths outside ``_SAFE_HALF_WIDTHS``).
        """
        s = np.empty((self.xx.shape[0] + 2,) * 2)
        s[0, 0] = self.n
        s[0, 1:-1] = self.x1
        s[0, -1] = self.y1
        s[1:-1, 1:-1] = self.xx
        s[1:-1, -1] = self.xy
        s[-1, -1] = self.yy
        s[1:, 0] = s[0, 1:]
        s[-1, 1:-1] = s[1:-1, -1]
        s /= self.scale[:, None]
        s /= self.scale[None, :]
        s /= self.n
        moments: FloatArray = (s + s.T) / 2.0  # exact symmetry despite rounding
        np.clip(moments, -1.0, 1.0, out=moments)
        moments[0, 0] = 1.0
        return moments


def _refuse_non_finite(xs: FloatArray, ys: FloatArray) -> None:
    """Raise for the first NaN or infinite value, features before labels."""
    if not np.all(np.isfinite(xs)):
        col = int(np.argwhere(~np.isfinite(xs))[0][1])
        raise InvalidInput(
            "x", f"column {col} has NaN or infinite values; clamping cannot place them"
        )
    if not np.all(np.isfinite(ys)):
        raise InvalidInput(
            "y", "has NaN or infinite values; clamping cannot place them"
        )


@dataclass(frozen=True)
class Sensitivity:
    """How much one replaced row can move a released statistic (a vector)."""

    l1: float
    l2: float
    linf: float


@dataclass(frozen=True)
class GramSensitivity:
    """Replace-one sensitivities of the statistics derived from the Gram matrix.

    Attributes
    ----------
    moments
        The normalised M over :meth:`Gram.noise_indices` — what :meth:`Gram.perturbed`
        needs noise for, and what covers every encrypted evaluation.
    raw_means
        The column means in the data's own units (features then label).
    raw_second_moments
        E[xᵢxⱼ] in the data's own units, upper triangle (features then label).
    """

    moments: Sensitivity
    raw_means: Sensitivity
    raw_second_moments: Sensitivity


def _product_range(a: tuple[float, float], b: tuple[float, float], same: bool) -> float:
    if same:
        lo, hi = a
        top = max(lo * lo, hi * hi)
        bottom = 0.0 if lo <= 0.0 <= hi else min(lo * lo, hi * hi)
        return top - bottom
    corners = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return max(corners) - min(corners)


def _from_ranges(ranges: FloatArray, n: int) -> Sensitivity:
    return Sensitivity(
        l1=float(ranges.sum() / n),
        l2=float(math.sqrt(float((ranges**2).sum())) / n),
        linf=float(ranges.max() / n),
    )


def sensitivity(bounds: GramBounds, n_rows: int) -> GramSensitivity:
    """Return the replace-one sensitivities derived from the bounds and n.

    Each entry's bound is the range of its per-row term over the clamping box
    divided by n; the vector bounds sum them (ℓ1), take the root sum of squares
    (ℓ2, valid because no entry moves more than its own range) and the maximum.

    Parameters
    ----------
    bounds
        The clamping bounds the Gram matrix was built with.
    n_rows
        The dataset's row count n ≥ 1.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise InvalidInput("n_rows", "must be a positive integer")
    m = bounds.dim
    unit = (-1.0, 1.0)
    boxes = [(1.0, 1.0), *([unit] * (m - 1))]
    rows, cols = Gram.noise_indices(m)
    normalised = np.array(
        [
            _product_range(boxes[i], boxes[j], i == j)
            for i, j in zip(rows, cols, strict=True)
        ]
    )
    raw = [*bounds.features, bounds.label]
    means = np.array([hi - lo for lo, hi in raw])
    r2, c2 = np.triu_indices(len(raw))
    second = np.array(
        [_product_range(raw[i], raw[j], i == j) for i, j in zip(r2, c2, strict=True)]
    )
    return GramSensitivity(
        moments=_from_ranges(normalised, n_rows),
        raw_means=_from_ranges(means, n_rows),
        raw_second_moments=_from_ranges(second, n_rows),
    )

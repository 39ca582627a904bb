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
from typing import Protocol

import numpy as np
import numpy.typing as npt

from mpc_engine.he.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]

_CHUNK_ROWS = 1 << 16


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
        ``(n, d)`` feature matrix.
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
    if not np.all(np.isfinite(xs)):
        col = int(np.argwhere(~np.isfinite(xs))[0][1])
        raise InvalidInput(
            "x", f"column {col} has NaN or infinite values; clamping cannot place them"
        )
    if not np.all(np.isfinite(ys)):
        raise InvalidInput(
            "y", "has NaN or infinite values; clamping cannot place them"
        )
    lo, hi = (np.array(v) for v in zip(*bounds.features, strict=True))
    centres, halves = bounds.centres, bounds.half_widths
    m = bounds.dim
    total = np.zeros((m, m))
    z = np.empty((min(n, _CHUNK_ROWS), m))
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        k = stop - start
        zc = z[:k]
        zc[:, 0] = 1.0
        np.clip(xs[start:stop], lo, hi, out=zc[:, 1:-1])
        zc[:, 1:-1] -= centres[:-1]
        zc[:, 1:-1] /= halves[:-1]
        np.clip(ys[start:stop], *bounds.label, out=zc[:, -1])
        zc[:, -1] -= centres[-1]
        zc[:, -1] /= halves[-1]
        total += zc.T @ zc
    moments = total / n
    moments = (moments + moments.T) / 2.0  # exact symmetry despite rounding
    moments.setflags(write=False)
    return Gram(moments, n, bounds)


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

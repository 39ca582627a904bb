"""Run an ``aggregate`` request on a table under a rights policy.

All O(rows) work is numpy (``np.bincount`` over group ids, never a Python loop
over rows); OpenDP sees only per-group aggregates.

**Exact mode** releases a group only if it has at least ``k`` rows (the policy's
``min_group_size``); smaller groups are left out entirely. Within a released group
a column's statistics are withheld (``None``) when fewer than ``k`` of its values
are non-null, and each histogram cell below ``k`` is withheld (``None``, zeros
included: telling 0 from 1..k-1 would reveal the rare cells). The result says only
*whether* something was withheld (``suppressed``), not how many groups, so the
number of small groups is not revealed. Values are clamped to the policy's
``column_bounds`` when the policy has them (top/bottom coding).

**DP mode** (neighbouring tables differ by adding or removing one row):

* Values are clamped to ``column_bounds`` (required) and, for sums, put on a
  fixed-point grid of 2²² steps of the bound, so sums are *exact* integers in
  float64 (≤ 2³¹ rows) and sensitivities are exact integers: no floating-point
  underestimate of sensitivity (Casacuberta et al., CCS 2022). Sensitivities:
  count 1; sum ``max(|lo|, |hi|)``; mean and variance from the noisy count and
  noisy sums of ``x − m`` and ``(x − m)²`` around the bounds' midpoint ``m``
  (sensitivities ``(hi − lo)/2`` and ``((hi − lo)/2)²``, the standard
  centred-moments trick); histogram 1 for the whole group × bin vector; each
  quantile level by the exponential mechanism over ``quantile_candidates``
  equally spaced values spanning the bounds (OpenDP's score and noisy-max).
* The request's ε is split **evenly over the noisy primitives** (the distinct
  noisy vectors: the count, each column's sum / centred sums / per-column count
  of non-null values, each histogram, each quantile level) — sequential
  composition. Each primitive is one vector over *all* groups; a row is in one
  group only, so the vector's sensitivity is a single group's (parallel
  composition): groups cost nothing extra. δ is split evenly over the
  primitives that use it (Gaussian noise, the key threshold).
* Group keys never depend on the data in a way that leaks: if every group-by
  column has a declared domain, every combination of declared values is released
  (rows outside it are dropped); otherwise (δ > 0 needed) observed keys go
  through OpenDP's Laplace threshold mechanism — a noisy count per key, kept
  only if it reaches τ ≥ ``min_group_size`` with δ confirmed by OpenDP (a stable
  histogram); its noisy counts are the released counts.
* Derived values are post-processing and clamped to what the bounds allow:
  means to ``[lo, hi]``, variances to ``[0, ((hi − lo)/2)²]``; a mean or
  variance is ``None`` when its noisy count is below 1. Noisy counts are left
  unbiased (they may be negative).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mpc_engine.aggregate._evaluate import evaluate_filter, validate_filter
from mpc_engine.aggregate._filter import predicates
from mpc_engine.aggregate._request import AggregateRequest, Mode, Statistic
from mpc_engine.aggregate._table import CategoryValue, ColumnType, Table
from mpc_engine.aggregate.errors import PolicyViolation, RequestMismatch
from mpc_engine.dp import (
    Mechanism,
    PrivacyLoss,
    add_noise,
    quantile_index,
    split_evenly,
    threshold_release,
    total_loss,
)
from mpc_engine.policy import ComputationKind, RightsPolicy

MAX_DECLARED_GROUPS = 10_000
_GRID_BITS = 22  # fixed-point steps per bound magnitude: |x_q| ≤ 2²²

GroupKey = tuple[CategoryValue | None, ...]
Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Index = NDArray[np.intp]


@dataclass(frozen=True)
class GroupResult:
    """The released statistics of one group.

    Only requested statistics are present; per-column statistics are keyed by
    column. ``None`` marks a withheld value (exact mode) or an undefined one (a DP
    mean or variance whose noisy count is below 1).
    """

    key: GroupKey
    count: int | None = None
    sum: dict[str, float | None] = field(default_factory=dict)
    mean: dict[str, float | None] = field(default_factory=dict)
    variance: dict[str, float | None] = field(default_factory=dict)
    histogram: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    quantiles: dict[str, tuple[float | None, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"key": list(self.key)}
        if self.count is not None:
            out["count"] = self.count
        for name in ("sum", "mean", "variance"):
            if getattr(self, name):
                out[name] = dict(getattr(self, name))
        if self.histogram:
            out["histogram"] = {c: list(v) for c, v in self.histogram.items()}
        if self.quantiles:
            out["quantiles"] = {c: list(v) for c, v in self.quantiles.items()}
        return out


@dataclass(frozen=True)
class AggregateResult:
    """What an ``aggregate`` request releases.

    Attributes
    ----------
    group_by
        The group-by columns; each group's ``key`` follows this order.
    groups
        The released groups.
    dp_applied
        Whether noise was added (mode ``dp``).
    privacy_loss
        The total loss spent (basic composition of the confirmed per-primitive
        losses; zero in exact mode). At most the request's (ε, δ).
    mechanism
        The additive-noise mechanism under DP, else ``None``.
    suppressed
        Exact mode: whether any group, statistic or cell was withheld for being
        below the minimum group size. Always ``False`` under DP, where nothing is
        withheld for being small (thresholded keys are indistinguishable from
        absent ones by design).
    histogram_edges
        Per histogram column, the ``bins + 1`` bin edges.
    quantile_levels
        The quantile levels, in the order of each group's quantile values.
    """

    group_by: tuple[str, ...]
    groups: tuple[GroupResult, ...]
    dp_applied: bool
    privacy_loss: PrivacyLoss
    mechanism: Mechanism | None
    suppressed: bool
    histogram_edges: dict[str, tuple[float, ...]] = field(default_factory=dict)
    quantile_levels: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for storage and replay)."""
        return {
            "group_by": list(self.group_by),
            "groups": [g.as_dict() for g in self.groups],
            "dp_applied": self.dp_applied,
            "privacy_loss": self.privacy_loss.as_dict(),
            "mechanism": None if self.mechanism is None else self.mechanism.value,
            "suppressed": self.suppressed,
            "histogram_edges": {c: list(e) for c, e in self.histogram_edges.items()},
            "quantile_levels": list(self.quantile_levels),
        }


# -- planning: schema and policy checks -----------------------------------------


@dataclass(frozen=True)
class _Plan:
    request: AggregateRequest
    stats: frozenset[Statistic]
    bounds: dict[str, tuple[float, float] | None]
    k: int


def _plan(request: AggregateRequest, table: Table, policy: RightsPolicy) -> _Plan:
    if ComputationKind.AGGREGATE not in policy.permitted_kinds:
        raise PolicyViolation("kind", "'aggregate' is not permitted by the policy")
    if policy.require_dp and request.mode is not Mode.DP:
        raise PolicyViolation(
            "mode",
            "the policy requires differential privacy for this dataset; ask with "
            "mode 'dp' and an epsilon",
        )
    permitted = set(policy.permitted_columns)
    specs = table.specs
    for field_name, names in (
        ("columns", request.columns),
        ("group_by", request.group_by),
    ):
        for name in names:
            if name not in specs:
                raise RequestMismatch(f"{field_name}.{name}", "no such column")
            if name not in permitted:
                raise PolicyViolation(
                    f"{field_name}.{name}", "not a permitted column of the policy"
                )
    expr = request.parsed_filter()
    if expr is not None:
        validate_filter(expr, specs)
        for predicate in predicates(expr):
            if predicate.column not in permitted:
                raise PolicyViolation(
                    "filter",
                    f"column {predicate.column!r} (position {predicate.position}) is "
                    "not a permitted column of the policy",
                )
    stats = frozenset(request.statistics)
    dp = request.mode is Mode.DP
    bounds: dict[str, tuple[float, float] | None] = {}
    for name in request.columns:
        if specs[name].type is not ColumnType.NUMBER:
            raise RequestMismatch(
                f"columns.{name}",
                f"statistics need a number column; this is a {specs[name].type.value} "
                "column (group by it and count instead)",
            )
        bound = policy.column_bounds.get(name)
        bounds[name] = None if bound is None else (bound.lower, bound.upper)
        if bound is None and (dp or Statistic.HISTOGRAM in stats):
            why = (
                "DP clamping and sensitivity derive from it"
                if dp
                else "histogram bins span the bounds"
            )
            raise PolicyViolation(f"column_bounds.{name}", f"required: {why}")
    for name in request.group_by:
        if not specs[name].categorical:
            raise RequestMismatch(
                f"group_by.{name}",
                "group-by needs a categorical column (text, boolean, or a number "
                "column with declared categories)",
            )
    if dp and request.dp is not None and request.group_by:
        undeclared = [n for n in request.group_by if specs[n].domain is None]
        if undeclared and request.dp.delta == 0:
            raise RequestMismatch(
                "group_by",
                f"{', '.join(undeclared)} ha{'s' if len(undeclared) == 1 else 've'} no "
                "declared category domain; under pure ε-DP (delta = 0) group keys "
                "must come from declared domains. Declare the categories, or allow "
                "delta > 0 for noisy-threshold key selection",
            )
        if not undeclared:
            n_groups = math.prod(len(specs[n].domain or ()) for n in request.group_by)
            if n_groups > MAX_DECLARED_GROUPS:
                raise RequestMismatch(
                    "group_by",
                    f"the declared domains make {n_groups} groups, more than "
                    f"{MAX_DECLARED_GROUPS}",
                )
    return _Plan(request, stats, bounds, policy.min_group_size)


def run_aggregate(
    request: AggregateRequest, table: Table, policy: RightsPolicy
) -> AggregateResult:
    """Run ``request`` on ``table`` as ``policy`` allows.

    Parameters
    ----------
    request
        The validated request.
    table
        The dataset (``Table`` built from the columns and their specs).
    policy
        The dataset's rights policy: permitted kind and columns, bounds, k.

    Returns
    -------
    AggregateResult
        The released groups, the privacy loss spent and whether DP was applied.

    Raises
    ------
    PolicyViolation
        If the policy forbids the request (kind, a column, missing bounds).
    RequestMismatch
        If the request does not fit the schema.
    FilterValidationError
        If the filter names an unknown column or mistypes a literal.
    """
    plan = _plan(request, table, policy)
    expr = request.parsed_filter()
    rows: Index | None = (
        None if expr is None else np.flatnonzero(evaluate_filter(expr, table))
    )
    if request.mode is Mode.EXACT:
        return _run_exact(plan, table, rows)
    return _run_dp(plan, table, rows)


# -- grouping --------------------------------------------------------------------


def _take(values: NDArray[Any], rows: Index | None) -> NDArray[Any]:
    return values if rows is None else values[rows]


def _n_rows(table: Table, rows: Index | None) -> int:
    return table.n_rows if rows is None else int(rows.shape[0])


def _group_codes(
    table: Table, name: str, rows: Index | None
) -> tuple[Index, tuple[CategoryValue, ...]]:
    """Codes (-1 for null) into the levels observed (numbers) or encoded."""
    if table.specs[name].type is ColumnType.NUMBER:
        values = _take(table.numbers(name), rows)
        null = np.isnan(values)
        levels, inverse = np.unique(values[~null], return_inverse=True)
        codes = np.full(values.shape[0], -1, dtype=np.intp)
        codes[~null] = inverse
        return codes, tuple(float(v) for v in levels.tolist())
    encoded = table.encoded(name)
    return _take(encoded.codes, rows), encoded.levels


def _observed_groups(
    table: Table, group_by: Sequence[str], rows: Index | None
) -> tuple[Index, list[GroupKey]]:
    """Group id per row and the observed keys, sorted; null sorts last."""
    n = _n_rows(table, rows)
    if not group_by:
        return np.zeros(n, dtype=np.intp), [()]
    parts = [_group_codes(table, name, rows) for name in group_by]
    radices = [len(levels) + 1 for _, levels in parts]  # + 1: null
    combined = np.zeros(n, dtype=np.intp)
    for (codes, levels), radix in zip(parts, radices, strict=True):
        combined *= radix
        combined += np.where(codes < 0, len(levels), codes)
    total = math.prod(radices)
    if total <= max(4 * n, 1 << 16):
        present = np.flatnonzero(np.bincount(combined, minlength=total))
        lookup = np.full(total, -1, dtype=np.intp)
        lookup[present] = np.arange(present.shape[0])
        gid = lookup[combined]
    else:
        present, gid = np.unique(combined, return_inverse=True)
    keys_columns: list[list[CategoryValue | None]] = []
    remainder = present.copy()
    for (_, levels), radix in reversed(list(zip(parts, radices, strict=True))):
        digit = remainder % radix
        remainder //= radix
        keys_columns.append(
            [levels[d] if d < len(levels) else None for d in digit.tolist()]
        )
    keys = [tuple(k) for k in zip(*reversed(keys_columns), strict=True)]
    return gid.astype(np.intp, copy=False), keys


def _declared_groups(
    table: Table, group_by: Sequence[str], rows: Index | None
) -> tuple[Index, list[GroupKey]]:
    """Group id per row (-1 outside the declared domains) and all declared keys."""
    n = _n_rows(table, rows)
    if not group_by:
        return np.zeros(n, dtype=np.intp), [()]
    gid = np.zeros(n, dtype=np.intp)
    outside = np.zeros(n, dtype=np.bool_)
    domains: list[tuple[CategoryValue, ...]] = []
    for name in group_by:
        spec = table.specs[name]
        domain = spec.domain or ()
        domains.append(domain)
        if spec.type is ColumnType.NUMBER:
            values = _take(table.numbers(name), rows)
            declared = np.array(domain, dtype=np.float64)
            order = np.argsort(declared)
            ordered = declared[order]
            pos = np.clip(np.searchsorted(ordered, values), 0, len(domain) - 1)
            codes = np.where(ordered[pos] == values, order[pos], -1)
        else:
            encoded = table.encoded(name)
            where = {v: i for i, v in enumerate(domain)}
            lookup = np.array(
                [where.get(level, -1) for level in encoded.levels] + [-1],
                dtype=np.intp,
            )
            codes = lookup[_take(encoded.codes, rows)]  # code -1 → last entry, -1
        outside |= codes < 0
        gid *= len(domain)
        gid += codes
    gid[outside] = -1
    keys: list[GroupKey] = [tuple(k) for k in itertools.product(*domains)]
    return gid, keys


@dataclass(frozen=True)
class _Groups:
    """Rows' bins and the released keys.

    Every row is in one of ``bins`` bins (``gid``, possibly the table's own code
    array: never written to); per-bin aggregates become per-key ones by
    ``per_key``: key ``g`` takes bin ``src[g]`` (zero when ``src[g]`` is -1: no
    row can have that key), or bin ``g`` when ``src`` is ``None``. A bin no key
    takes holds rows outside the declared domains: they are aggregated and
    dropped, which gives exactly the aggregates of the rows kept.
    """

    gid: Index
    bins: int
    keys: list[GroupKey]
    src: Index | None = None

    def per_key(self, values: NDArray[Any]) -> NDArray[Any]:
        """Per-bin ``values`` (first axis) as per-key values, in key order."""
        if self.src is None:
            return values
        out = np.zeros((len(self.keys), *values.shape[1:]), dtype=values.dtype)
        has = self.src >= 0
        out[has] = values[self.src[has]]
        return out


_MAX_SPARE_BINS = 16


def _declared_bins(
    table: Table, group_by: Sequence[str], rows: Index | None
) -> _Groups | None:
    """Declared keys, with rows binned by their columns' own codes.

    A text or boolean column's bin digit is its dictionary code (plus one digit
    for null when nullable), a number column's its position in the declared
    domain (plus one for values outside it); digits combine in mixed radix. With
    one text column and no filter the bins *are* the table's codes (no pass over
    the rows at all); aggregates are mapped to keys per bin (``_Groups``).
    ``None`` when that makes more than ``2 · keys + 16`` bins (many undeclared
    levels): the caller then maps rows to keys (``_declared_groups``).
    """
    if not group_by:
        return None
    domains: list[tuple[CategoryValue, ...]] = []
    digit_keys: list[list[int]] = []  # per column: digit → domain position or -1
    plan: list[tuple[str, int]] = []
    for name in group_by:
        spec = table.specs[name]
        domain = spec.domain or ()
        domains.append(domain)
        if spec.type is ColumnType.NUMBER:
            digit_keys.append([*range(len(domain)), -1])
        else:
            where = {v: i for i, v in enumerate(domain)}
            levels = table.encoded(name).levels
            digit_keys.append(
                [where.get(level, -1) for level in levels] + [-1] * spec.nullable
            )
        plan.append((name, len(digit_keys[-1])))
    bins = math.prod(radix for _, radix in plan)
    n_keys = math.prod(len(d) for d in domains)
    if bins > 2 * n_keys + _MAX_SPARE_BINS:
        return None
    gid: Index | None = None
    for name, radix in plan:
        digits = _domain_digits(table, name, rows)
        if gid is None:
            gid = digits
        else:
            gid = gid * radix  # a new array: ``digits`` may be the table's codes
            gid += digits
    assert gid is not None  # noqa: S101 - group_by is not empty
    # Each bin's key: mixed radix over the domains, -1 if any digit is outside.
    key = np.zeros(1, dtype=np.intp)
    for domain, to_key in zip(domains, digit_keys, strict=True):
        digit = np.array(to_key, dtype=np.intp)
        key = np.where(
            (key[:, None] < 0) | (digit[None, :] < 0),
            -1,
            key[:, None] * len(domain) + digit[None, :],
        ).reshape(-1)
    src = np.full(n_keys, -1, dtype=np.intp)
    inside = np.flatnonzero(key >= 0)
    src[key[inside]] = inside
    keys: list[GroupKey] = [tuple(k) for k in itertools.product(*domains)]
    return _Groups(gid, bins, keys, src)


def _domain_digits(table: Table, name: str, rows: Index | None) -> Index:
    """Per row, the column's bin digit (see ``_declared_bins``).

    Text and boolean: the code (null: the last digit), possibly the table's own
    code array. Numbers: the declared-domain position (outside it: the last).
    """
    spec = table.specs[name]
    if spec.type is ColumnType.NUMBER:
        domain = spec.domain or ()
        values = _take(table.numbers(name), rows)
        declared = np.array(domain, dtype=np.float64)
        order = np.argsort(declared)
        ordered = declared[order]
        pos = np.clip(np.searchsorted(ordered, values), 0, len(domain) - 1)
        return np.where(ordered[pos] == values, order[pos], len(domain))
    encoded = table.encoded(name)
    codes = _take(encoded.codes, rows)
    if spec.nullable:
        return np.where(codes < 0, len(encoded.levels), codes)
    return codes


def _select(gid: Index, rows: Index | None) -> tuple[Index, Index | None]:
    """Drop rows whose group id is -1."""
    if gid.size and int(gid.min()) < 0:
        keep = np.flatnonzero(gid >= 0)
        return gid[keep], keep if rows is None else rows[keep]
    return gid, rows


_FEW_GROUPS = 6  # up to this many, a comparison per group beats np.bincount


def _group_count(gid: Index, n_groups: int) -> Ints:
    """Rows per group (``gid`` in ``[0, n_groups)``)."""
    if n_groups == 1:
        return np.array([gid.shape[0]], dtype=np.int64)
    if n_groups <= _FEW_GROUPS:
        # bincount's scatter stalls on runs of one group; compare-and-count is
        # ~0.15 ns a row per group (vectorised), bincount ~1.4 ns a row.
        return np.array(
            [np.count_nonzero(gid == g) for g in range(n_groups)], dtype=np.int64
        )
    return np.bincount(gid, minlength=n_groups).astype(np.int64, copy=False)


def _group_sum(gid: Index, weights: Floats, n_groups: int) -> Floats:
    """Sum of ``weights`` per group (one pass; ``np.sum`` for a single group)."""
    if n_groups == 1:
        return np.array([weights.sum()], dtype=np.float64)
    return np.bincount(gid, weights=weights, minlength=n_groups).astype(
        np.float64, copy=False
    )


@dataclass(frozen=True)
class _Column:
    """One statistic column's non-null values and their group ids.

    The values are clamped to ``bounds`` unless made with ``clamp=False``.
    """

    x: Floats
    gid: Index
    bounds: tuple[float, float] | None


def _column(
    table: Table,
    name: str,
    rows: Index | None,
    gid: Index,
    bounds: Any,
    *,
    clamp: bool = True,
) -> _Column:
    """The column's non-null values and their group ids.

    Clamped to ``bounds`` unless ``clamp`` is false (then ``x`` may be the
    table's own array: read only).
    """
    x = _take(table.numbers(name), rows)
    fresh = rows is not None  # a gathered copy may be clamped in place
    if table.specs[name].nullable:
        valid = ~np.isnan(x)
        x, gid, fresh = x[valid], gid[valid], True
    if bounds is not None and clamp:
        x = np.clip(x, bounds[0], bounds[1], out=x if fresh else None)
    return _Column(x, gid, bounds)


def _bin_index(x: Floats, lo: float, hi: float, bins: int) -> Index:
    """Equal-width bin of each (clamped) value; ``hi`` falls in the last bin."""
    scaled = (x - lo) * (bins / (hi - lo))
    return np.clip(scaled.astype(np.intp), 0, bins - 1)


def _edges(lo: float, hi: float, bins: int) -> tuple[float, ...]:
    return tuple(float(e) for e in np.linspace(lo, hi, bins + 1).tolist())


# -- exact mode -------------------------------------------------------------------


def _run_exact(plan: _Plan, table: Table, rows: Index | None) -> AggregateResult:
    request, stats, k = plan.request, plan.stats, plan.k
    gid, keys = _observed_groups(table, request.group_by, rows)
    n_groups = len(keys)
    counts = _group_count(gid, n_groups)
    released = np.flatnonzero(counts >= k)
    suppressed = released.shape[0] < n_groups
    results: list[dict[str, Any]] = [
        {"key": keys[g], "count": int(counts[g]) if Statistic.COUNT in stats else None}
        for g in released.tolist()
    ]
    for name in request.columns:
        col = _column(table, name, rows, gid, plan.bounds[name])
        n = _group_count(col.gid, n_groups)
        small = n < k
        suppressed = suppressed or bool(small[released].any())
        sums = _group_sum(col.gid, col.x, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / n
        per_stat: dict[str, NDArray[Any]] = {"sum": sums, "mean": means}
        if Statistic.VARIANCE in stats:
            dev = col.x - means[col.gid]
            with np.errstate(invalid="ignore", divide="ignore"):
                per_stat["variance"] = _group_sum(col.gid, dev * dev, n_groups) / n
        for stat in (Statistic.SUM, Statistic.MEAN, Statistic.VARIANCE):
            if stat in stats:
                values = per_stat[stat.value]
                for out, g in zip(results, released.tolist(), strict=True):
                    out.setdefault(stat.value, {})[name] = (
                        None if small[g] else float(values[g])
                    )
        if Statistic.HISTOGRAM in stats:
            assert col.bounds is not None  # noqa: S101 - _plan requires bounds
            bins = request.histogram_bins or 1
            cells = np.bincount(
                col.gid * bins + _bin_index(col.x, *col.bounds, bins),
                minlength=n_groups * bins,
            ).reshape(n_groups, bins)
            suppressed = suppressed or bool((cells[released] < k).any())
            for out, g in zip(results, released.tolist(), strict=True):
                out.setdefault("histogram", {})[name] = tuple(
                    None if c < k else int(c) for c in cells[g].tolist()
                )
        if Statistic.QUANTILES in stats:
            levels = np.array(request.quantiles or [], dtype=np.float64)
            table_q = _exact_quantiles(col, n, levels)
            for out, g in zip(results, released.tolist(), strict=True):
                out.setdefault("quantiles", {})[name] = (
                    tuple(None for _ in levels)
                    if small[g]
                    else tuple(float(v) for v in table_q[g].tolist())
                )
    return AggregateResult(
        group_by=tuple(request.group_by),
        groups=tuple(GroupResult(**r) for r in results),
        dp_applied=False,
        privacy_loss=PrivacyLoss.zero(),
        mechanism=None,
        suppressed=suppressed,
        histogram_edges=_histogram_edges(plan),
        quantile_levels=tuple(request.quantiles or ()),
    )


def _exact_quantiles(col: _Column, n: Ints, levels: Floats) -> Floats:
    """Per group, numpy's default ('linear') quantiles; NaN for empty groups."""
    order = np.lexsort((col.x, col.gid))
    ordered = col.x[order]
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    out = np.full((n.shape[0], levels.shape[0]), np.nan)
    nonempty = n > 0
    size = n[nonempty][:, None]
    pos = levels[None, :] * (size - 1)
    below = np.floor(pos).astype(np.intp)
    above = np.minimum(below + 1, size - 1)
    frac = pos - below
    start = starts[nonempty][:, None]
    low, high = ordered[start + below], ordered[start + above]
    out[nonempty] = low + (high - low) * frac
    return out


def _histogram_edges(plan: _Plan) -> dict[str, tuple[float, ...]]:
    if Statistic.HISTOGRAM not in plan.stats:
        return {}
    bins = plan.request.histogram_bins or 1
    return {
        name: _edges(*bounds, bins)
        for name, bounds in plan.bounds.items()
        if bounds is not None
    }


# -- DP mode -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """A fixed-point grid for a bounded column: ``x ≈ step · x_q``, |x_q| ≤ 2²².

    ``step`` is a power of two, so ``x / step`` is exact and ``rint`` is monotone:
    every clamped value lands in ``[lo_q, hi_q]``, and sums of up to 2³¹ grid
    values are exact integers in float64.
    """

    step: float
    lo_q: int
    hi_q: int

    @classmethod
    def of(cls, lo: float, hi: float) -> _Grid:
        _, exponent = math.frexp(max(abs(lo), abs(hi)))  # |bound| < 2^exponent
        step = math.ldexp(1.0, exponent - _GRID_BITS)
        return cls(step, int(np.rint(lo / step)), int(np.rint(hi / step)))

    def quantize(self, x: Floats, out: Floats | None = None) -> Floats:
        """``rint(clip(x, lo, hi) / step)``, into ``out`` if given (3 passes).

        Quantised first and clamped on the grid: the same numbers, since
        ``rint(x / step)`` is monotone in ``x`` and equals ``lo_q`` / ``hi_q`` at
        the bounds; ±inf (or a value that overflows to it) clamps like any value
        outside the bounds.
        """
        # Multiplying by 1/step (a power of two) is exact, like dividing.
        with np.errstate(over="ignore"):
            scaled = np.multiply(x, 1.0 / self.step, out=out)
        np.rint(scaled, out=scaled)
        return np.clip(scaled, float(self.lo_q), float(self.hi_q), out=scaled)


class _Noiser:
    """Adds noise primitive by primitive and collects the confirmed losses."""

    def __init__(self, mechanism: Mechanism, epsilon: float, delta: float) -> None:
        self.mechanism = mechanism
        self.epsilon = epsilon
        self.delta = delta
        self.losses: list[PrivacyLoss] = []

    def integers(self, values: Ints, sensitivity: int) -> Ints:
        release = add_noise(
            values.astype(np.int64),
            mechanism=self.mechanism,
            sensitivity=sensitivity,
            epsilon=self.epsilon,
            delta=self.delta,
        )
        self.losses.append(release.loss)
        return release.value.astype(np.int64, copy=False)


def _primitives(plan: _Plan, table: Table, thresholded: bool) -> list[tuple[str, ...]]:
    """The distinct noisy vectors the request needs (each spends one ε share)."""
    stats, columns = plan.stats, plan.request.columns
    moments = {Statistic.MEAN, Statistic.VARIANCE} & stats
    prims: list[tuple[str, ...]] = []
    if (
        Statistic.COUNT in stats
        or thresholded
        or (moments and any(not table.specs[c].nullable for c in columns))
    ):
        prims.append(("count",))
    for name in columns:
        if Statistic.SUM in stats:
            prims.append(("sum", name))
        if moments:
            if table.specs[name].nullable:
                prims.append(("count", name))
            prims.append(("csum", name))
        if Statistic.VARIANCE in stats:
            prims.append(("csum2", name))
        if Statistic.HISTOGRAM in stats:
            prims.append(("histogram", name))
        if Statistic.QUANTILES in stats:
            prims.extend(
                ("quantile", name, repr(q)) for q in plan.request.quantiles or []
            )
    return prims


def _run_dp(plan: _Plan, table: Table, rows: Index | None) -> AggregateResult:
    request, stats = plan.request, plan.stats
    settings = request.dp
    assert settings is not None  # noqa: S101 - the request validator ensures it
    group_by = request.group_by
    declared = all(table.specs[n].domain is not None for n in group_by)
    thresholded = not declared
    prims = _primitives(plan, table, thresholded)
    # δ goes to the key threshold and, under Gaussian noise, to every additive
    # primitive (the exponential mechanism for quantiles is pure ε-DP).
    n_delta = 1 if thresholded else 0
    if settings.mechanism is Mechanism.GAUSSIAN:
        n_delta += sum(
            1
            for p in prims
            if p[0] != "quantile" and not (thresholded and p == ("count",))
        )
    eps = split_evenly(settings.epsilon, len(prims))
    dlt = split_evenly(settings.delta, n_delta) if n_delta else 0.0
    noiser = _Noiser(settings.mechanism, eps, dlt)

    counts: Ints | None = None
    if declared:
        groups = _declared_bins(table, group_by, rows)
        if groups is None:
            gid, keys = _declared_groups(table, group_by, rows)
            if group_by:
                gid, rows = _select(gid, rows)
            groups = _Groups(gid, len(keys), keys)
        true_counts = groups.per_key(_group_count(groups.gid, groups.bins))
        if ("count",) in prims:
            counts = noiser.integers(true_counts, 1)
    else:
        gid, keys = _observed_groups(table, group_by, rows)
        released = threshold_release(
            np.bincount(gid, minlength=len(keys)),
            epsilon=eps,
            delta=dlt,
            min_threshold=plan.k,
        )
        noiser.losses.append(released.loss)
        lookup = np.full(len(keys), -1, dtype=np.intp)
        lookup[released.kept] = np.arange(released.kept.shape[0])
        gid, rows = _select(lookup[gid], rows)
        keys = [keys[i] for i in released.kept.tolist()]
        groups = _Groups(gid, len(keys), keys)
        counts = released.counts
        true_counts = _group_count(gid, len(keys))
    keys, n_groups, bins = groups.keys, len(groups.keys), groups.bins

    results: list[dict[str, Any]] = [
        {
            "key": key,
            "count": int(counts[g])
            if Statistic.COUNT in stats and counts is not None
            else None,
        }
        for g, key in enumerate(keys)
    ]

    def put(stat: str, name: str, values: Sequence[Any]) -> None:
        for out, value in zip(results, values, strict=True):
            out.setdefault(stat, {})[name] = value

    moments = {Statistic.MEAN, Statistic.VARIANCE} & stats
    clamped = bool({Statistic.HISTOGRAM, Statistic.QUANTILES} & stats)
    scratch: Floats | None = None  # one buffer for every column's grid values
    for name in request.columns:
        bounds = plan.bounds[name]
        assert bounds is not None  # noqa: S101 - _plan requires bounds under DP
        lo, hi = bounds
        # Clamped values only for histograms and quantiles; sums clamp on the grid.
        col = _column(table, name, rows, groups.gid, bounds, clamp=clamped)
        grid = _Grid.of(lo, hi)
        if Statistic.SUM in stats or moments:
            size = col.x.shape[0]
            if scratch is None or scratch.shape[0] < size:
                scratch = np.empty(size, dtype=np.float64)
            xq = grid.quantize(col.x, out=scratch[:size])
            # Exact: integers of magnitude ≤ 2²² · 2³¹ ≤ 2⁵³ in float64.
            sum_q = groups.per_key(_group_sum(col.gid, xq, bins)).astype(np.int64)
        if Statistic.SUM in stats:
            noisy = noiser.integers(sum_q, max(abs(grid.lo_q), abs(grid.hi_q)))
            put("sum", name, [float(v) * grid.step for v in noisy.tolist()])
        if moments:
            nullable = table.specs[name].nullable
            n_true = (
                groups.per_key(_group_count(col.gid, bins)) if nullable else true_counts
            )
            n_noisy = noiser.integers(n_true, 1) if nullable else counts
            assert n_noisy is not None  # noqa: S101 - ("count",) is a primitive
            _dp_moments(
                stats, name, col, groups, grid, xq, sum_q, n_true, n_noisy, noiser, put
            )
        if Statistic.HISTOGRAM in stats:
            hist_bins = request.histogram_bins or 1
            cells = np.bincount(
                col.gid * hist_bins + _bin_index(col.x, lo, hi, hist_bins),
                minlength=bins * hist_bins,
            ).reshape(bins, hist_bins)
            noisy = noiser.integers(groups.per_key(cells).reshape(-1), 1).reshape(
                n_groups, hist_bins
            )
            put(
                "histogram",
                name,
                [tuple(int(c) for c in row) for row in noisy.tolist()],
            )
        if Statistic.QUANTILES in stats:
            put(
                "quantiles",
                name,
                _dp_quantiles(col, groups, request, eps, noiser),
            )

    if len(noiser.losses) != len(prims):  # the ε split must match what was spent
        raise RuntimeError(
            f"spent {len(noiser.losses)} noisy primitives but planned {len(prims)}"
        )
    loss = total_loss(noiser.losses)
    return AggregateResult(
        group_by=tuple(group_by),
        groups=tuple(GroupResult(**r) for r in results),
        dp_applied=True,
        privacy_loss=loss,
        mechanism=settings.mechanism,
        suppressed=False,
        histogram_edges=_histogram_edges(plan),
        quantile_levels=tuple(request.quantiles or ()),
    )


def _dp_moments(
    stats: frozenset[Statistic],
    name: str,
    col: _Column,
    groups: _Groups,
    grid: _Grid,
    xq: Floats,
    sum_q: Ints,
    n_true: Ints,
    n_noisy: Ints,
    noiser: _Noiser,
    put: Any,
) -> None:
    """Noisy mean / variance from noisy centred sums and a noisy count.

    Centred at the grid midpoint ``m``: ``Σ(x_q − m) = Σx_q − n·m`` exactly (all
    integers), sensitivity ``max(hi_q − m, m − lo_q)``; ``Σ(x_q − m)²`` goes on
    its own grid of ≤ 2²² steps so its sums stay exact too. For the variance
    ``xq`` is overwritten (in place) by the rounded squares.
    """
    assert col.bounds is not None  # noqa: S101
    lo, hi = col.bounds
    mid_q = (grid.lo_q + grid.hi_q) // 2
    radius_q = max(grid.hi_q - mid_q, mid_q - grid.lo_q)
    s1 = noiser.integers(sum_q - n_true * mid_q, radius_q).astype(np.float64)
    n = n_noisy.astype(np.float64)
    defined = n >= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_q = s1 / n
    if Statistic.MEAN in stats:
        means = np.clip((mid_q + mean_q) * grid.step, lo, hi)
        put(
            "mean",
            name,
            [float(m) if d else None for m, d in zip(means, defined, strict=True)],
        )
    if Statistic.VARIANCE in stats:
        shift = max(0, (radius_q * radius_q).bit_length() - _GRID_BITS)
        # (x_q − m)² · 2^-shift, rounded: exact squares (< 2⁵³), exact scaling.
        squares = np.subtract(xq, mid_q, out=xq)
        np.multiply(squares, squares, out=squares)
        np.multiply(squares, math.ldexp(1.0, -shift), out=squares)
        np.rint(squares, out=squares)
        s2 = noiser.integers(
            groups.per_key(_group_sum(col.gid, squares, groups.bins)).astype(np.int64),
            int(np.rint((radius_q * radius_q) * math.ldexp(1.0, -shift))),
        ).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            var_q = s2 * math.ldexp(1.0, shift) / n - mean_q * mean_q
        variances = np.clip(var_q * grid.step * grid.step, 0.0, ((hi - lo) / 2) ** 2)
        put(
            "variance",
            name,
            [float(v) if d else None for v, d in zip(variances, defined, strict=True)],
        )


def quantile_counts(
    x: Floats, gid: Index, n_groups: int, candidates: Floats
) -> tuple[Ints, Ints]:
    """Per group and candidate: how many values lie strictly below and above it.

    ``candidates`` must be equally spaced and increasing and ``x`` within their
    range. Avoids ``np.searchsorted`` (≈7 comparisons a row): an arithmetic guess of
    the position, off by at most one, is corrected by three comparisons.
    """
    c = candidates.shape[0]
    lo, hi = float(candidates[0]), float(candidates[-1])
    guess = np.clip(np.floor((x - lo) * ((c - 1) / (hi - lo))), 0, c - 1).astype(
        np.intp
    )
    padded = np.concatenate(([-np.inf], candidates, [np.inf]))
    # below_count = #{candidates < x}
    below_count = (
        guess
        - 1
        + (padded[guess] < x)
        + (padded[guess + 1] < x)
        + (padded[guess + 2] < x)
    )
    equal = padded[below_count + 1] == x
    cells = np.bincount(
        (gid * (c + 1) + below_count) * 2 + equal, minlength=n_groups * (c + 1) * 2
    ).reshape(n_groups, c + 1, 2)
    with_sl = cells[:, :, 0] + cells[:, :, 1]  # rows with #{cand < x} = s
    with_sr = cells[:, :, 0].copy()  # rows with #{cand ≤ x} = s
    with_sr[:, 1:] += cells[:, :-1, 1]
    n = with_sl.sum(axis=1, keepdims=True)
    below = np.cumsum(with_sr, axis=1)[:, :c]  # x < c_j  ⇔  #{cand ≤ x} ≤ j
    above = n - np.cumsum(with_sl, axis=1)[:, :c]  # x > c_j  ⇔  #{cand < x} > j
    return below.astype(np.int64), above.astype(np.int64)


def _dp_quantiles(
    col: _Column,
    groups: _Groups,
    request: AggregateRequest,
    eps: float,
    noiser: _Noiser,
) -> list[tuple[float | None, ...]]:
    assert col.bounds is not None  # noqa: S101
    candidates = np.linspace(*col.bounds, request.quantile_candidates)
    if not bool(np.all(np.diff(candidates) > 0)):
        raise RequestMismatch(
            "quantile_candidates",
            "too many candidates for the column's bounds (they would repeat)",
        )
    below, above = (
        groups.per_key(counts)
        for counts in quantile_counts(col.x, col.gid, groups.bins, candidates)
    )
    n_groups = len(groups.keys)
    per_level = []
    for q in request.quantiles or []:
        picked = quantile_index(below, above, alpha=q, epsilon=eps)
        noiser.losses.append(picked.loss)
        per_level.append(candidates[picked.indices])
    return [tuple(float(level[g]) for level in per_level) for g in range(n_groups)]

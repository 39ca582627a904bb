"""The typed ``aggregate`` request: what to compute, on what, with what privacy."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mpc_engine.aggregate._filter import FilterExpr, parse_filter, render_filter
from mpc_engine.dp import Mechanism, PrivacyLoss

ColumnName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="A column name.")
]

MAX_GROUP_BY = 4
MAX_COLUMNS = 32
MAX_QUANTILES = 19


class Statistic(StrEnum):
    """A statistic the ``aggregate`` template can release per group."""

    COUNT = "count"
    """Rows per group (no column)."""
    SUM = "sum"
    MEAN = "mean"
    VARIANCE = "variance"
    """Population variance (ddof = 0)."""
    HISTOGRAM = "histogram"
    """Counts in ``histogram_bins`` equal-width bins spanning the column's bounds."""
    QUANTILES = "quantiles"
    """Values at the ``quantiles`` levels."""


class Mode(StrEnum):
    """How the release is protected."""

    EXACT = "exact"
    """No noise; groups (and cells) below the policy's minimum size are withheld."""
    DP = "dp"
    """Differential privacy with the request's (ε, δ) and mechanism."""


class DPSettings(BaseModel):
    """The privacy parameters of a DP release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0, le=100, description="Total ε for this request.")
    delta: float = Field(
        default=0.0,
        ge=0,
        lt=1e-3,
        description="Total δ (0 for pure ε-DP; required above 0 for Gaussian noise "
        "and for group keys without a declared domain).",
    )
    mechanism: Mechanism = Mechanism.LAPLACE

    @field_validator("epsilon", "delta")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _gaussian_needs_delta(self) -> DPSettings:
        if self.mechanism is Mechanism.GAUSSIAN and self.delta == 0:
            raise ValueError("the gaussian mechanism needs delta > 0")
        return self


def _unique(value: list[Any], what: str) -> None:
    dupes = sorted({str(v) for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {', '.join(dupes)}")


class AggregateRequest(BaseModel):
    """An ``aggregate`` computation (DESIGN §4), validated on construction.

    Every statistic except ``count`` applies to each of ``columns`` (numeric),
    per group of the ``group_by`` columns (categorical), over the rows matching
    ``filter``. Lists whose order carries no meaning are stored sorted, so equal
    requests serialise equally (see ``release_params``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    statistics: list[Statistic] = Field(min_length=1)
    columns: list[ColumnName] = Field(default_factory=list, max_length=MAX_COLUMNS)
    group_by: list[ColumnName] = Field(default_factory=list, max_length=MAX_GROUP_BY)
    filter: str | None = Field(
        default=None,
        description="A filter in the safe grammar (see parse_filter).",
    )
    histogram_bins: int | None = Field(default=None, ge=1, le=1000)
    quantiles: list[float] | None = Field(default=None, min_length=1, max_length=19)
    quantile_candidates: int = Field(
        default=101,
        ge=2,
        le=2001,
        description="Under DP, quantiles are chosen among this many equally spaced "
        "values spanning the column's bounds.",
    )
    mode: Mode = Mode.EXACT
    dp: DPSettings | None = None

    @field_validator("statistics", "columns")
    @classmethod
    def _unique_sorted(cls, value: list[Any]) -> list[Any]:
        _unique(value, "entries")
        return sorted(value)

    @field_validator("group_by")
    @classmethod
    def _unique_group_by(cls, value: list[str]) -> list[str]:
        _unique(value, "entries")
        return value  # order is the order of the group keys

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        for q in value:
            if not (math.isfinite(q) and 0 < q < 1):
                raise ValueError(f"levels must be strictly between 0 and 1 (got {q!r})")
        _unique(value, "levels")
        return sorted(value)

    @field_validator("filter")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        # FilterSyntaxError is a ValueError, so it reports position and reason.
        # The text is kept as written, so later positions (validation against
        # the schema) point into what the buyer wrote.
        if value is not None:
            parse_filter(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AggregateRequest:
        stats = set(self.statistics)
        per_column = stats - {Statistic.COUNT}
        if per_column and not self.columns:
            raise ValueError(
                f"columns: required for {', '.join(sorted(per_column))} "
                "(every statistic except count applies to each listed column)"
            )
        if not per_column and self.columns:
            raise ValueError(
                "columns: given, but only count was requested (count needs no column)"
            )
        both = sorted(set(self.columns) & set(self.group_by))
        if both:
            raise ValueError(f"group_by: also in columns: {', '.join(both)}")
        if (Statistic.HISTOGRAM in stats) != (self.histogram_bins is not None):
            raise ValueError(
                "histogram_bins: required with the histogram statistic, and only then"
            )
        if (Statistic.QUANTILES in stats) != (self.quantiles is not None):
            raise ValueError(
                "quantiles: the levels are required with the quantiles statistic, "
                "and only then"
            )
        if (self.mode is Mode.DP) != (self.dp is not None):
            raise ValueError("dp: required when mode is 'dp', and only then")
        return self

    def parsed_filter(self) -> FilterExpr | None:
        """The filter's AST (``None`` without a filter)."""
        return None if self.filter is None else parse_filter(self.filter)

    def planned_loss(self) -> PrivacyLoss:
        """The most this request spends: its (ε, δ) under DP, zero when exact.

        Reserve this with the accountant before running; the actual loss returned
        in the result is at most this.
        """
        if self.dp is None:
            return PrivacyLoss.zero()
        return PrivacyLoss(self.dp.epsilon, self.dp.delta)

    def release_params(self) -> dict[str, Any]:
        """The canonical JSON parameters for ``ReleaseKey.for_question``.

        The filter is in its canonical text (``render_filter``), so ``age>30`` and
        ``age > 30`` are the same question.
        """
        params = self.model_dump(mode="json")
        if self.filter is not None:
            params["filter"] = render_filter(parse_filter(self.filter))
        return {"kind": "aggregate", **params}

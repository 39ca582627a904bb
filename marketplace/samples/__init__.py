"""The sample catalog of ``veilx demo``: two providers, their datasets, synthetic data.

The catalog is ``catalog.json`` next to this module (shipped as package data). Each
dataset entry holds a full :class:`~marketplace.models.DatasetCreate` body (DCAT-style
metadata, schema, rights policy and pricing plan) and what is needed to synthesise
its content deterministically:

``rows``
    How many rows to generate.
``seed``
    The seed of the :class:`random.Random` that draws every value.
``categories`` (optional)
    ``{"column": [values]}``: the values of categorical and (non-identifier) string
    columns.
``generators`` (optional)
    ``{"column": {"kind": ..., ...}}``: how a column is drawn, see
    :data:`ColumnGenerator`. A column without one gets a default: uniform within the
    policy's ``column_bounds`` for numbers, a fair coin for booleans, a uniform
    choice among its categories, unique sequence values for identifier columns and
    uniform dates within the dataset's temporal coverage.

Columns are generated in schema order, so a ``linear`` or ``logistic`` generator may
depend on the columns before it. Numbers always lie within the policy's
``column_bounds``. The data is synthetic: no row describes a real person.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from marketplace.models import ColumnSpec, ColumnType, DatasetCreate
from mpc_engine.policy import ColumnInfo, Sensitivity, check_against_schema

__all__ = [
    "CATALOG_RESOURCE",
    "AnyGenerator",
    "BernoulliGen",
    "ColumnGenerator",
    "IdentifierGen",
    "LinearGen",
    "LogNormalGen",
    "LogisticGen",
    "NormalGen",
    "PoissonGen",
    "SampleCatalog",
    "SampleDataset",
    "SampleProvider",
    "TemporalGen",
    "TriangularGen",
    "UniformGen",
    "WeightedGen",
    "generate_rows",
    "load_catalog",
    "write_csv",
]

CATALOG_RESOURCE = "catalog.json"
"""The name of the catalog file inside this package."""

_MAX_TRIES = 25
"""Redraws of an out-of-bounds number before it is clamped."""

_DEFAULT_DECIMALS = 2
"""Decimals of generated float values unless a generator says otherwise."""

Coefficients = dict[str, float | dict[str, float]]
"""Weights by column: a number for numeric/boolean columns, a map for categories."""


# --------------------------------------------------------------------------- generators


class _Gen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    null_rate: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Share of nulls (nullable columns)."
    )


class _NumericGen(_Gen):
    decimals: int | None = Field(
        default=None, ge=0, le=6, description="Decimals of float values (default 2)."
    )
    min: float | None = Field(default=None, description="Hard lower limit.")
    max: float | None = Field(default=None, description="Hard upper limit.")


class UniformGen(_NumericGen):
    """A number drawn uniformly from ``[low, high]``."""

    kind: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformGen:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        return self


class NormalGen(_NumericGen):
    """A normally distributed number."""

    kind: Literal["normal"] = "normal"
    mean: float
    sd: float = Field(gt=0)


class LogNormalGen(_NumericGen):
    """A log-normal number (right-skewed: costs, amounts, durations)."""

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(gt=0, le=5)


class TriangularGen(_NumericGen):
    """A number from a triangular distribution (a skewed range, e.g. ages)."""

    kind: Literal["triangular"] = "triangular"
    low: float
    mode: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> TriangularGen:
        if not (self.low <= self.mode <= self.high and self.low < self.high):
            raise ValueError("need low <= mode <= high and low < high")
        return self


class PoissonGen(_NumericGen):
    """A Poisson count (events per period)."""

    kind: Literal["poisson"] = "poisson"
    lam: float = Field(gt=0, le=100)


class LinearGen(_NumericGen):
    """A number derived from earlier columns.

    ``(intercept + Σ coefficient·x) · Π multiply_by · LogNormal(0, noise_cv)
    + offset + Normal(0, noise_sd)``; a null input contributes nothing.
    """

    kind: Literal["linear"] = "linear"
    intercept: float = 0.0
    coefficients: Coefficients = Field(default_factory=dict)
    multiply_by: list[str] = Field(default_factory=list)
    offset: float = 0.0
    noise_cv: float = Field(default=0.0, ge=0, le=5)
    noise_sd: float = Field(default=0.0, ge=0)


class BernoulliGen(_Gen):
    """A boolean that is true with probability ``p``."""

    kind: Literal["bernoulli"] = "bernoulli"
    p: float = Field(ge=0, le=1)


class LogisticGen(_Gen):
    """A boolean (e.g. a label) true with probability ``σ(intercept + Σ coef·x)``."""

    kind: Literal["logistic"] = "logistic"
    intercept: float = 0.0
    coefficients: Coefficients = Field(default_factory=dict)


class WeightedGen(_Gen):
    """A category drawn with the given weights (aligned with ``categories``)."""

    kind: Literal["weighted"] = "weighted"
    weights: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive(self) -> WeightedGen:
        if any(w < 0 or not math.isfinite(w) for w in self.weights):
            raise ValueError("weights must be finite and non-negative")
        if sum(self.weights) <= 0:
            raise ValueError("weights must not all be zero")
        return self


class IdentifierGen(_Gen):
    """Unique values, for identifier columns.

    Numbers are drawn without replacement from ``[start, start + rows·spread)`` and
    formatted with ``template`` (``{n}``) for string columns. ``spread > 1`` leaves
    gaps, so two parties' sequences overlap only in part (useful for PSI demos).
    """

    kind: Literal["identifier"] = "identifier"
    template: str | None = Field(default=None, max_length=100)
    start: int = Field(default=1, ge=0)
    spread: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _template(self) -> IdentifierGen:
        if self.template is not None:
            if "{n" not in self.template:
                raise ValueError("template must contain '{n}'")
            try:
                self.template.format(n=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"template does not format: {exc}") from exc
        return self


class TemporalGen(_Gen):
    """A date or UTC timestamp, uniform over days in ``[start, end]``.

    ``start``/``end`` default to the dataset's temporal coverage; ``hour_weights``
    (24 values, UTC hours) shape the time of day of timestamps.
    """

    kind: Literal["temporal"] = "temporal"
    start: date | None = None
    end: date | None = None
    hour_weights: list[float] | None = Field(default=None, min_length=24, max_length=24)

    @model_validator(mode="after")
    def _consistent(self) -> TemporalGen:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("start must not be after end")
        if self.hour_weights is not None and (
            any(w < 0 or not math.isfinite(w) for w in self.hour_weights)
            or sum(self.hour_weights) <= 0
        ):
            raise ValueError("hour_weights must be non-negative, not all zero")
        return self


AnyGenerator = (
    UniformGen
    | NormalGen
    | LogNormalGen
    | TriangularGen
    | PoissonGen
    | LinearGen
    | BernoulliGen
    | LogisticGen
    | WeightedGen
    | IdentifierGen
    | TemporalGen
)
"""The union of generator classes, for type annotations."""

ColumnGenerator = Annotated[AnyGenerator, Field(discriminator="kind")]
"""A column generator, discriminated by ``kind`` (use in pydantic models)."""

_NumericGenerator = (
    UniformGen | NormalGen | LogNormalGen | TriangularGen | PoissonGen | LinearGen
)
_NUMERIC_GENERATORS = (
    UniformGen,
    NormalGen,
    LogNormalGen,
    TriangularGen,
    PoissonGen,
    LinearGen,
)


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class SampleProvider:
    """A provider organisation of the sample catalog."""

    key: str
    name: str
    country: str
    website: str


@dataclass(frozen=True)
class SampleDataset:
    """A sample dataset: its listing body and how to synthesise its content."""

    provider: str
    rows: int
    seed: int
    body: DatasetCreate
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    generators: Mapping[str, AnyGenerator] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The dataset's title."""
        return self.body.title

    @property
    def column_names(self) -> list[str]:
        """The column names, in schema order."""
        return [c.name for c in self.body.columns]


@dataclass(frozen=True)
class SampleCatalog:
    """The providers and datasets of the sample catalog."""

    providers: tuple[SampleProvider, ...]
    datasets: tuple[SampleDataset, ...]

    def provider(self, key: str) -> SampleProvider:
        """Return the provider with handle ``key`` (``KeyError`` if none)."""
        for provider in self.providers:
            if provider.key == key:
                return provider
        raise KeyError(key)

    def datasets_of(self, key: str) -> tuple[SampleDataset, ...]:
        """Return the datasets of the provider with handle ``key``."""
        return tuple(d for d in self.datasets if d.provider == key)


class _RawProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    name: str = Field(min_length=2, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    website: str = Field(pattern=r"^https://[^\s/]+(/\S*)?$")


class _RawDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    rows: int = Field(ge=1, le=1_000_000)
    seed: int
    categories: dict[str, list[str]] = Field(default_factory=dict)
    generators: dict[str, ColumnGenerator] = Field(default_factory=dict)
    dataset: dict[str, Any]


class _RawCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[_RawProvider] = Field(min_length=1)
    datasets: list[_RawDataset] = Field(min_length=1)


def load_catalog() -> SampleCatalog:
    """Load and validate the sample catalog shipped with the package.

    Returns
    -------
    SampleCatalog
        The providers and datasets, each dataset body validated as a
        :class:`~marketplace.models.DatasetCreate`.

    Raises
    ------
    pydantic.ValidationError
        If the file or a dataset body does not validate (a note says which entry).
    ValueError
        If a dataset names an unknown provider, its policy does not fit its schema
        or its generation settings do not fit its columns.
    """
    text = (
        resources.files(__name__).joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    )
    raw = _RawCatalog.model_validate_json(text)
    providers = tuple(
        SampleProvider(key=p.key, name=p.name, country=p.country, website=p.website)
        for p in raw.providers
    )
    keys = [p.key for p in providers]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate provider keys in the sample catalog")
    datasets: list[SampleDataset] = []
    for index, entry in enumerate(raw.datasets):
        where = f"datasets[{index}] ({entry.dataset.get('title', '?')!r})"
        if entry.provider not in keys:
            raise ValueError(f"{where}: unknown provider {entry.provider!r}")
        try:
            body = DatasetCreate.model_validate(entry.dataset)
        except ValidationError as exc:
            exc.add_note(f"in {where} of the sample catalog")
            raise
        sample = SampleDataset(
            provider=entry.provider,
            rows=entry.rows,
            seed=entry.seed,
            body=body,
            categories={k: tuple(v) for k, v in entry.categories.items()},
            generators=dict(entry.generators),
        )
        try:
            _check_sample(sample)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        datasets.append(sample)
    titles = [d.title for d in datasets]
    if len(set(titles)) != len(titles):
        raise ValueError("duplicate dataset titles in the sample catalog")
    return SampleCatalog(providers=providers, datasets=tuple(datasets))


# --------------------------------------------------------------------------- checks


def _check_sample(sample: SampleDataset) -> None:
    """Raise ``ValueError`` if the sample's policy or generators misfit its schema."""
    body = sample.body
    columns = {c.name: c for c in body.columns}
    order = {c.name: i for i, c in enumerate(body.columns)}
    issues = check_against_schema(
        body.policy,
        [ColumnInfo(c.name, c.type.numeric, c.sensitivity) for c in body.columns],
    )
    if issues:
        raise ValueError(
            "policy does not fit the schema: "
            + "; ".join(f"{f}: {m}" for f, m in issues)
        )
    if sample.rows < 1:
        raise ValueError("rows must be positive")
    for name, values in sample.categories.items():
        col = columns.get(name)
        if col is None:
            raise ValueError(f"categories.{name}: no such column")
        if col.type not in (ColumnType.CATEGORICAL, ColumnType.STRING):
            raise ValueError(f"categories.{name}: not a categorical or string column")
        if not values or len(set(values)) != len(values):
            raise ValueError(f"categories.{name}: must be non-empty and distinct")
    for name in sample.generators:
        if name not in columns:
            raise ValueError(f"generators.{name}: no such column")
    for col in body.columns:
        gen = _generator_for(sample, col)
        where = f"generators.{col.name}"
        if gen.null_rate > 0 and not col.nullable:
            raise ValueError(f"{where}: null_rate set for a non-nullable column")
        if col.sensitivity is Sensitivity.IDENTIFIER and not isinstance(
            gen, IdentifierGen
        ):
            raise ValueError(
                f"{where}: identifier columns need an identifier generator"
            )
        _check_kind(sample, col, gen, where)
        refs: list[str] = []
        if isinstance(gen, LinearGen | LogisticGen):
            refs.extend(gen.coefficients)
            for ref, coef in gen.coefficients.items():
                ref_col = columns.get(ref)
                if ref_col is None:
                    continue
                categorical = ref_col.type in (
                    ColumnType.CATEGORICAL,
                    ColumnType.STRING,
                )
                if isinstance(coef, dict) != categorical:
                    raise ValueError(
                        f"{where}: coefficient of {ref!r} must be "
                        + ("a map of categories" if categorical else "a number")
                    )
                if not categorical and not (
                    ref_col.type.numeric or ref_col.type is ColumnType.BOOLEAN
                ):
                    raise ValueError(f"{where}: {ref!r} is not numeric or boolean")
        if isinstance(gen, LinearGen):
            refs.extend(gen.multiply_by)
            for ref in gen.multiply_by:
                if ref in columns and not columns[ref].type.numeric:
                    raise ValueError(f"{where}: multiply_by {ref!r} is not numeric")
        for ref in refs:
            if ref not in columns:
                raise ValueError(f"{where}: refers to unknown column {ref!r}")
            if order[ref] >= order[col.name]:
                raise ValueError(f"{where}: {ref!r} must come earlier in the schema")


def _check_kind(
    sample: SampleDataset, col: ColumnSpec, gen: AnyGenerator, where: str
) -> None:
    kind = col.type
    if isinstance(gen, _NUMERIC_GENERATORS):
        if not kind.numeric:
            raise ValueError(f"{where}: {gen.kind} needs a numeric column")
        low, high = _limits(sample, col, gen)
        no_integer = (
            kind is ColumnType.INTEGER
            and math.isfinite(low)
            and math.isfinite(high)
            and math.ceil(low) > math.floor(high)
        )
        if low > high or no_integer:
            raise ValueError(f"{where}: min/max leave no value within the bounds")
    elif isinstance(gen, BernoulliGen | LogisticGen):
        if kind is not ColumnType.BOOLEAN:
            raise ValueError(f"{where}: {gen.kind} needs a boolean column")
    elif isinstance(gen, WeightedGen):
        cats = sample.categories.get(col.name)
        if cats is None:
            raise ValueError(f"{where}: a categorical column needs categories")
        if len(gen.weights) != len(cats):
            raise ValueError(
                f"{where}: {len(gen.weights)} weights for {len(cats)} values"
            )
    elif isinstance(gen, IdentifierGen):
        if kind not in (ColumnType.STRING, ColumnType.INTEGER):
            raise ValueError(f"{where}: identifiers must be string or integer columns")
        if kind is ColumnType.INTEGER and gen.template is not None:
            raise ValueError(f"{where}: template set for an integer column")
        if gen.null_rate > 0:
            raise ValueError(f"{where}: identifiers are never null")
    elif isinstance(gen, TemporalGen):
        if kind not in (ColumnType.DATE, ColumnType.DATETIME):
            raise ValueError(f"{where}: temporal needs a date or datetime column")
        if gen.hour_weights is not None and kind is not ColumnType.DATETIME:
            raise ValueError(f"{where}: hour_weights apply to datetime columns only")
        start, end = _span(sample, gen)
        if start is None or end is None:
            raise ValueError(f"{where}: needs start/end or a temporal coverage")
        if start > end:
            raise ValueError(f"{where}: start is after end")


def _generator_for(sample: SampleDataset, col: ColumnSpec) -> AnyGenerator:
    """Return the column's generator, or its default."""
    explicit = sample.generators.get(col.name)
    if explicit is not None:
        return explicit
    if col.sensitivity is Sensitivity.IDENTIFIER:
        return IdentifierGen()
    if col.type.numeric:
        bounds = sample.body.policy.column_bounds.get(col.name)
        if bounds is None:
            raise ValueError(
                f"generators.{col.name}: a numeric column without column_bounds "
                "needs a generator"
            )
        return UniformGen(low=bounds.lower, high=bounds.upper)
    if col.type is ColumnType.BOOLEAN:
        return BernoulliGen(p=0.5)
    if col.type in (ColumnType.DATE, ColumnType.DATETIME):
        return TemporalGen()
    cats = sample.categories.get(col.name)
    if cats is None:
        raise ValueError(
            f"categories.{col.name}: missing for a {col.type.value} column"
        )
    return WeightedGen(weights=[1.0] * len(cats))


def _limits(
    sample: SampleDataset, col: ColumnSpec, gen: _NumericGenerator
) -> tuple[float, float]:
    """Return the range a number must fall in: column bounds ∩ generator min/max."""
    low, high = -math.inf, math.inf
    bounds = sample.body.policy.column_bounds.get(col.name)
    if bounds is not None:
        low, high = bounds.lower, bounds.upper
    if gen.min is not None:
        low = max(low, gen.min)
    if gen.max is not None:
        high = min(high, gen.max)
    return low, high


def _span(sample: SampleDataset, gen: TemporalGen) -> tuple[date | None, date | None]:
    return (
        gen.start or sample.body.temporal_start,
        gen.end or sample.body.temporal_end,
    )


def _decimals(sample: SampleDataset, col: ColumnSpec) -> int:
    if col.type is ColumnType.INTEGER:
        return 0
    gen = _generator_for(sample, col)
    if isinstance(gen, _NUMERIC_GENERATORS) and gen.decimals is not None:
        return gen.decimals
    return _DEFAULT_DECIMALS


# --------------------------------------------------------------------------- generation


def generate_rows(sample: SampleDataset) -> list[dict[str, object]]:
    """Synthesise the rows of a sample dataset, deterministically from its seed.

    Columns are drawn in schema order from one ``random.Random(sample.seed)``.
    Values are Python objects: ``int``, ``float``, ``bool``, ``str``,
    ``datetime.date``, UTC-aware ``datetime.datetime`` or ``None`` (nullable
    columns only).

    Parameters
    ----------
    sample : SampleDataset
        The dataset to synthesise.

    Returns
    -------
    list of dict
        ``sample.rows`` rows, each mapping every column name to its value.

    Raises
    ------
    ValueError
        If the sample's generation settings do not fit its schema.
    """
    _check_sample(sample)
    rng = random.Random(sample.seed)  # noqa: S311 - synthetic data, not secrets
    rows: list[dict[str, object]] = [{} for _ in range(sample.rows)]
    for col in sample.body.columns:
        gen = _generator_for(sample, col)
        if isinstance(gen, IdentifierGen):
            template = gen.template or f"{col.name}-{{n}}"
            numbers = _identifiers(gen, sample.rows, rng)
            for row, n in zip(rows, numbers, strict=True):
                row[col.name] = n if col.type.numeric else template.format(n=n)
            continue
        for row in rows:
            if gen.null_rate > 0 and rng.random() < gen.null_rate:
                row[col.name] = None
            else:
                row[col.name] = _draw(sample, col, gen, row, rng)
    return rows


def _identifiers(gen: IdentifierGen, count: int, rng: random.Random) -> list[int]:
    return rng.sample(range(gen.start, gen.start + count * gen.spread), count)


def _draw(
    sample: SampleDataset,
    col: ColumnSpec,
    gen: AnyGenerator,
    row: Mapping[str, object],
    rng: random.Random,
) -> object:
    match gen:
        case BernoulliGen():
            return rng.random() < gen.p
        case LogisticGen():
            z = gen.intercept + _weighted_sum(gen.coefficients, row)
            z = max(-50.0, min(50.0, z))
            return rng.random() < 1.0 / (1.0 + math.exp(-z))
        case WeightedGen():
            return rng.choices(sample.categories[col.name], weights=gen.weights)[0]
        case TemporalGen():
            return _draw_temporal(sample, col, gen, rng)
        case IdentifierGen():  # pragma: no cover - handled per column
            raise AssertionError("identifiers are drawn per column")
        case _:
            return _draw_bounded(sample, col, gen, row, rng)


def _draw_bounded(
    sample: SampleDataset,
    col: ColumnSpec,
    gen: _NumericGenerator,
    row: Mapping[str, object],
    rng: random.Random,
) -> int | float:
    low, high = _limits(sample, col, gen)
    value = _draw_number(gen, row, rng)
    for _ in range(_MAX_TRIES):
        if low <= value <= high:
            break
        value = _draw_number(gen, row, rng)
    value = min(max(value, low), high)
    if col.type is ColumnType.INTEGER:
        whole = round(value)
        if math.isfinite(low):
            whole = max(whole, math.ceil(low))
        if math.isfinite(high):
            whole = min(whole, math.floor(high))
        return whole
    scale = 10.0 ** _decimals(sample, col)
    rounded = round(value * scale) / scale
    if rounded > high:
        rounded = math.floor(high * scale) / scale
    elif rounded < low:
        rounded = math.ceil(low * scale) / scale
    return rounded + 0.0  # no negative zero


def _draw_number(
    gen: _NumericGenerator, row: Mapping[str, object], rng: random.Random
) -> float:
    match gen:
        case UniformGen():
            return rng.uniform(gen.low, gen.high)
        case NormalGen():
            return rng.normalvariate(gen.mean, gen.sd)
        case LogNormalGen():
            return rng.lognormvariate(math.log(gen.median), gen.sigma)
        case TriangularGen():
            return rng.triangular(gen.low, gen.high, gen.mode)
        case PoissonGen():
            return float(_poisson(gen.lam, rng))
        case LinearGen():
            value = gen.intercept + _weighted_sum(gen.coefficients, row)
            for name in gen.multiply_by:
                value *= _as_number(row[name])
            if gen.noise_cv > 0:
                value *= rng.lognormvariate(0.0, gen.noise_cv)
            value += gen.offset
            if gen.noise_sd > 0:
                value += rng.normalvariate(0.0, gen.noise_sd)
            return value


def _poisson(lam: float, rng: random.Random) -> int:
    """Knuth's method (fine for the small rates used here)."""
    threshold = math.exp(-lam)
    k, p = 0, rng.random()
    while p > threshold:
        k += 1
        p *= rng.random()
    return k


def _as_number(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool | int | float):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def _weighted_sum(coefficients: Coefficients, row: Mapping[str, object]) -> float:
    total = 0.0
    for name, coef in coefficients.items():
        value = row.get(name)
        if value is None:
            continue
        if isinstance(coef, dict):
            total += coef.get(str(value), 0.0)
        else:
            total += coef * _as_number(value)
    return total


def _draw_temporal(
    sample: SampleDataset, col: ColumnSpec, gen: TemporalGen, rng: random.Random
) -> date | datetime:
    start, end = _span(sample, gen)
    if start is None or end is None:  # pragma: no cover - checked by _check_sample
        raise ValueError(f"generators.{col.name}: no start/end for dates")
    day = start + timedelta(days=rng.randrange((end - start).days + 1))
    if col.type is ColumnType.DATE:
        return day
    if gen.hour_weights is not None:
        hour = rng.choices(range(24), weights=gen.hour_weights)[0]
    else:
        hour = rng.randrange(24)
    minute, second = rng.randrange(60), rng.randrange(60)
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


# --------------------------------------------------------------------------- CSV


def _format(value: object, decimals: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _csv_bytes(sample: SampleDataset, rows: Sequence[Mapping[str, object]]) -> bytes:
    columns = sample.body.columns
    decimals = [_decimals(sample, c) for c in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    for row in rows:
        writer.writerow(
            [_format(row[c.name], d) for c, d in zip(columns, decimals, strict=True)]
        )
    return buffer.getvalue().encode("utf-8")


def write_csv(sample: SampleDataset, path: str | os.PathLike[str]) -> str:
    """Generate the sample's rows and write them to ``path`` as CSV.

    The header holds the column names in schema order; lines end in LF;
    booleans are ``true``/``false``, nulls empty, floats fixed-point, dates ISO 8601
    and timestamps UTC (``...Z``). The same seed always gives the same bytes.

    Parameters
    ----------
    sample : SampleDataset
        The dataset to synthesise.
    path : str or os.PathLike
        The file to write (overwritten if it exists; its directory must exist).

    Returns
    -------
    str
        The SHA-256 of the file's bytes, hex-encoded: the content hash of a
        dataset version.
    """
    data = _csv_bytes(sample, generate_rows(sample))
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()

"""Factories for aggregate tests: a schema, random tables and policies."""

from __future__ import annotations

from typing import Any

import numpy as np

from mpc_engine.aggregate import ColumnSpec, ColumnType, Table
from mpc_engine.policy import RightsPolicy, Sensitivity

REGIONS = ("north", "south", "east", "west")

SPECS = [
    ColumnSpec("age", ColumnType.NUMBER, Sensitivity.QUASI_IDENTIFIER),
    ColumnSpec("income", ColumnType.NUMBER, Sensitivity.SENSITIVE, nullable=True),
    ColumnSpec("region", ColumnType.STRING, Sensitivity.PUBLIC, categories=REGIONS),
    ColumnSpec("city", ColumnType.STRING, Sensitivity.QUASI_IDENTIFIER, nullable=True),
    ColumnSpec("smoker", ColumnType.BOOLEAN, Sensitivity.SENSITIVE),
    ColumnSpec(
        "year",
        ColumnType.NUMBER,
        Sensitivity.PUBLIC,
        categories=(2022, 2023, 2024),
    ),
]

BOUNDS = {"age": (0.0, 120.0), "income": (0.0, 200_000.0), "year": (2000.0, 2030.0)}


def make_policy(**changes: Any) -> RightsPolicy:
    """A policy permitting aggregate on every column, with bounds and k = 5."""
    doc: dict[str, Any] = {
        "permitted_kinds": ["aggregate"],
        "permitted_columns": sorted(s.name for s in SPECS),
        "purposes": ["research"],
        "regions": ["DE"],
        "min_group_size": 5,
        "budget_per_buyer": {"epsilon": 10.0, "delta": 1e-5},
        "budget_per_dataset": {"epsilon": 100.0, "delta": 1e-4},
        "column_bounds": {
            name: {"lower": lo, "upper": hi} for name, (lo, hi) in BOUNDS.items()
        },
    }
    doc.update(changes)
    return RightsPolicy.model_validate(doc)


def create_random_columns(
    rng: np.random.Generator, n: int, *, null_rate: float = 0.1
) -> dict[str, np.ndarray]:
    """Columns matching ``SPECS``; ``income`` and ``city`` have nulls."""
    income = rng.lognormal(10, 1, n)
    income[rng.random(n) < null_rate] = np.nan
    city = np.array(["aa", "bb", "cc", "dd", "ee"], dtype=object)[rng.integers(0, 5, n)]
    city[rng.random(n) < null_rate] = None
    return {
        "age": rng.integers(0, 130, n).astype(np.float64),  # some above the bound
        "income": income,
        "region": np.array((*REGIONS, "elsewhere"))[rng.integers(0, 5, n)],
        "city": city,
        "smoker": rng.random(n) < 0.3,
        "year": rng.choice([2022.0, 2023.0, 2024.0, 1999.0], n),
    }


def create_random_table(
    rng: np.random.Generator, n: int, *, null_rate: float = 0.1
) -> tuple[Table, dict[str, np.ndarray]]:
    """A random table and its raw columns."""
    columns = create_random_columns(rng, n, null_rate=null_rate)
    return Table(columns, SPECS), columns

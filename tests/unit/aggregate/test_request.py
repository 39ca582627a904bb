"""Request validation and table/spec validation: every refusal names field and rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from mpc_engine.aggregate import (
    AggregateRequest,
    ColumnSpec,
    ColumnType,
    Mode,
    Statistic,
    Table,
)
from mpc_engine.aggregate.errors import FilterSyntaxError, SchemaError
from mpc_engine.dp import Mechanism, PrivacyLoss
from mpc_engine.policy import Sensitivity

BASE: dict[str, Any] = {"statistics": ["mean"], "columns": ["age"]}


def rejection(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        AggregateRequest.model_validate({**BASE, **changes})
    errors = info.value.errors()
    assert len(errors) == 1, errors
    error = errors[0]
    return ".".join(map(str, error["loc"])) + ": " + error["msg"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"statistics": []}, "statistics: List should have at least 1 item"),
        ({"statistics": ["median"]}, "statistics.0: Input should be"),
        ({"statistics": ["sum", "sum"]}, "duplicate entries: sum"),
        ({"columns": []}, "columns: required for mean"),
        ({"statistics": ["count"]}, "columns: given, but only count was requested"),
        ({"columns": ["Age"]}, "columns.0: String should match pattern"),
        ({"group_by": ["age"]}, "group_by: also in columns: age"),
        (
            {"group_by": ["a", "b", "c", "d", "e"]},
            "group_by: List should have at most 4",
        ),
        ({"statistics": ["histogram"]}, "histogram_bins: required with the histogram"),
        ({"histogram_bins": 10}, "histogram_bins: required with the histogram"),
        ({"statistics": ["quantiles"]}, "quantiles: the levels are required"),
        (
            {"statistics": ["quantiles"], "quantiles": [0.5, 1.0]},
            "strictly between 0 and 1",
        ),
        (
            {"statistics": ["quantiles"], "quantiles": [0.5, 0.5]},
            "duplicate levels: 0.5",
        ),
        ({"mode": "dp"}, "dp: required when mode is 'dp'"),
        ({"dp": {"epsilon": 1}}, "dp: required when mode is 'dp'"),
        (
            {"mode": "dp", "dp": {"epsilon": 0}},
            "dp.epsilon: Input should be greater than 0",
        ),
        (
            {"mode": "dp", "dp": {"epsilon": 1, "delta": 0.5}},
            "dp.delta: Input should be less",
        ),
        (
            {"mode": "dp", "dp": {"epsilon": 1, "mechanism": "gaussian"}},
            "the gaussian mechanism needs delta > 0",
        ),
        ({"filter": "age >"}, "filter: at position 5: expected a literal"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_request_rejections_name_field_and_rule(
    changes: dict[str, Any], expected: str
) -> None:
    assert expected in rejection(**changes)


def test_filter_syntax_error_keeps_its_position() -> None:
    with pytest.raises(ValidationError) as info:
        AggregateRequest.model_validate({**BASE, "filter": "age = = 3"})
    cause = info.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, FilterSyntaxError) and cause.position == 6


def test_request_is_canonical_and_states_its_loss() -> None:
    request = AggregateRequest.model_validate(
        {
            "statistics": ["variance", "count", "mean"],
            "columns": ["income", "age"],
            "group_by": ["region", "city"],
            "filter": "age>30   AND   region='north'",
            "mode": "dp",
            "dp": {"epsilon": 0.5, "delta": 1e-7, "mechanism": "gaussian"},
        }
    )
    assert request.statistics == [Statistic.COUNT, Statistic.MEAN, Statistic.VARIANCE]
    assert request.columns == ["age", "income"]
    assert request.group_by == ["region", "city"]  # order of the keys is kept
    assert request.filter == "age>30   AND   region='north'"  # as written
    assert request.release_params()["filter"] == "age > 30.0 and region = 'north'"
    assert request.mode is Mode.DP and request.dp is not None
    assert request.dp.mechanism is Mechanism.GAUSSIAN
    assert request.planned_loss() == PrivacyLoss(0.5, 1e-7)
    params = request.release_params()
    assert params["kind"] == "aggregate" and params["dp"]["epsilon"] == 0.5
    assert AggregateRequest.model_validate(BASE).planned_loss() == PrivacyLoss.zero()
    with pytest.raises(ValidationError):
        request.columns = []  # type: ignore[misc]  # frozen


# -- specs and tables -----------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "column", "reason"),
    [
        (
            lambda: ColumnSpec("Age", ColumnType.NUMBER, Sensitivity.PUBLIC),
            "Age",
            "name",
        ),
        (lambda: ColumnSpec("a", "number", Sensitivity.PUBLIC), "a", "ColumnType"),  # type: ignore[arg-type]
        (
            lambda: ColumnSpec(
                "a", ColumnType.NUMBER, Sensitivity.PUBLIC, categories=()
            ),
            "a",
            "must not be empty",
        ),
        (
            lambda: ColumnSpec(
                "a", ColumnType.NUMBER, Sensitivity.PUBLIC, categories=(1, 1.0)
            ),
            "a",
            "unique",
        ),
        (
            lambda: ColumnSpec(
                "a", ColumnType.STRING, Sensitivity.PUBLIC, categories=("x", 1)
            ),
            "a",
            "category 1 is not a string",
        ),
        (
            lambda: ColumnSpec(
                "a", ColumnType.NUMBER, Sensitivity.PUBLIC, categories=(float("nan"),)
            ),
            "a",
            "(finite)",
        ),
    ],
)
def test_spec_rejections(make: Any, column: str, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        make()
    assert info.value.column == column and reason in info.value.reason


SPECS = [
    ColumnSpec("x", ColumnType.NUMBER, Sensitivity.SENSITIVE),
    ColumnSpec("s", ColumnType.STRING, Sensitivity.PUBLIC),
    ColumnSpec("b", ColumnType.BOOLEAN, Sensitivity.PUBLIC, nullable=True),
]
GOOD = {
    "x": np.array([1.0, 2.0]),
    "s": np.array(["a", "b"]),
    "b": np.array([True, None], dtype=object),
}


@pytest.mark.parametrize(
    ("changes", "column", "reason"),
    [
        ({"y": np.zeros(2)}, "y", "has data but no ColumnSpec"),
        ({"x": None}, "x", "one-dimensional numpy array"),
        ({"x": np.zeros((2, 1))}, "x", "one-dimensional numpy array"),
        ({"x": np.array([1.0, np.nan])}, "x", "holds nulls (NaN) but is not nullable"),
        ({"x": np.array(["1", "2"])}, "x", "integer or float dtype"),
        ({"s": np.array(["a", None], dtype=object)}, "s", "holds nulls (None)"),
        ({"s": np.array(["a", 3], dtype=object)}, "s", "values must all be str"),
        ({"s": np.array([1, 2])}, "s", "needs a str or object dtype"),
        ({"b": np.array(["yes", None], dtype=object)}, "b", "values must all be bool"),
        ({"x": np.zeros(3)}, "(table)", "different lengths"),
    ],
)
def test_table_rejections(changes: dict[str, Any], column: str, reason: str) -> None:
    columns = {**GOOD, **changes}
    with pytest.raises(SchemaError) as info:
        Table(columns, SPECS)
    assert info.value.column == column and reason in info.value.reason


def test_table_encodes_columns() -> None:
    table = Table(GOOD, SPECS)
    assert table.n_rows == 2
    assert table.encoded("s").levels == ("a", "b")
    assert table.encoded("b").codes.tolist() == [1, -1]
    with pytest.raises(SchemaError, match="missing from the data"):
        Table({"x": GOOD["x"]}, SPECS)
    with pytest.raises(SchemaError, match="declared twice"):
        Table(GOOD, [*SPECS, SPECS[0]])

"""The ``aggregate`` computation template (DESIGN §4).

Count, sum, mean, variance, histogram and quantiles per group, over the rows that
match a filter in a small safe grammar — exact under the policy's minimum group
size, or differentially private with OpenDP noise (see ``run_aggregate``'s module
for how ε is split and why released group keys do not leak).

Typical use at the node::

    table = Table(columns, specs)            # once per dataset version
    request = AggregateRequest.model_validate(params)
    result = run_aggregate(request, table, policy)
"""

from mpc_engine.aggregate._evaluate import evaluate_filter, validate_filter
from mpc_engine.aggregate._execute import (
    AggregateResult,
    GroupKey,
    GroupResult,
    run_aggregate,
)
from mpc_engine.aggregate._filter import (
    And,
    Between,
    CompareOp,
    Comparison,
    FilterExpr,
    InList,
    IsNull,
    Not,
    Or,
    parse_filter,
    render_filter,
)
from mpc_engine.aggregate._request import AggregateRequest, DPSettings, Mode, Statistic
from mpc_engine.aggregate._table import ColumnSpec, ColumnType, Table

__all__ = [
    "AggregateRequest",
    "AggregateResult",
    "And",
    "Between",
    "ColumnSpec",
    "ColumnType",
    "CompareOp",
    "Comparison",
    "DPSettings",
    "FilterExpr",
    "GroupKey",
    "GroupResult",
    "InList",
    "IsNull",
    "Mode",
    "Not",
    "Or",
    "Statistic",
    "Table",
    "evaluate_filter",
    "parse_filter",
    "render_filter",
    "run_aggregate",
    "validate_filter",
]

"""Validate a filter against column specs and evaluate it on a table, vectorised.

Nulls follow SQL's three-valued logic: a comparison with a null is *unknown*,
``not unknown`` is unknown, ``unknown and false`` is false, ``unknown or true`` is
true, and a row is kept only when the filter is *true*. So ``x != 3`` and
``not (x = 3)`` both drop rows where ``x`` is null; ``x is null`` finds them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from mpc_engine.aggregate._filter import (
    And,
    Between,
    CompareOp,
    Comparison,
    FilterExpr,
    InList,
    IsNull,
    Literal,
    Not,
    Or,
)
from mpc_engine.aggregate._table import ColumnSpec, ColumnType, Table
from mpc_engine.aggregate.errors import FilterValidationError

Mask = NDArray[np.bool_]


def _kind(value: Literal) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    return "string"


def validate_filter(expr: FilterExpr, specs: Mapping[str, ColumnSpec]) -> None:
    """Check that ``expr`` names known columns and compares them with their type.

    Raises
    ------
    FilterValidationError
        With the predicate's position, the column and the rule it breaks.
    """
    if isinstance(expr, Not):
        validate_filter(expr.operand, specs)
        return
    if isinstance(expr, And | Or):
        for operand in expr.operands:
            validate_filter(operand, specs)
        return
    spec = specs.get(expr.column)
    if spec is None:
        raise FilterValidationError(expr.position, expr.column, "no such column")
    if isinstance(expr, IsNull):
        return
    wanted = spec.type.value
    if isinstance(expr, Comparison):
        values: tuple[Literal, ...] = (expr.value,)
        if spec.type is not ColumnType.NUMBER and expr.op not in (
            CompareOp.EQ,
            CompareOp.NE,
        ):
            raise FilterValidationError(
                expr.position,
                expr.column,
                f"a {wanted} column can only be compared with '=' or '!=', "
                f"not {expr.op.value!r}",
            )
    elif isinstance(expr, InList):
        values = expr.values
    else:
        if spec.type is not ColumnType.NUMBER:
            raise FilterValidationError(
                expr.position,
                expr.column,
                f"'between' needs a number column; this is a {wanted} column",
            )
        values = (expr.low, expr.high)
    for value in values:
        if _kind(value) != wanted:
            raise FilterValidationError(
                expr.position,
                expr.column,
                f"a {wanted} column cannot be compared with the {_kind(value)} "
                f"{value!r}",
            )
    if isinstance(expr, Between) and float(expr.low) > float(expr.high):
        raise FilterValidationError(
            expr.position,
            expr.column,
            f"the lower bound {expr.low!r} is above the upper bound {expr.high!r}",
        )


def evaluate_filter(expr: FilterExpr, table: Table) -> Mask:
    """The rows for which ``expr`` is true (SQL three-valued logic for nulls).

    ``expr`` must have passed ``validate_filter`` against ``table.specs``.
    """
    true, _ = _Evaluator(table).truth(expr)
    return true


# A predicate's outcome: (rows where true, rows where false). ``None`` for the
# false rows means "exactly the rows that are not true" (no unknowns), which keeps
# filters on non-nullable columns as cheap as two-valued logic.
_Truth = tuple[Mask, Mask | None]


def _false(truth: _Truth) -> Mask:
    true, false = truth
    return ~true if false is None else false


class _Evaluator:
    def __init__(self, table: Table) -> None:
        self.table = table
        self.level_index: dict[str, dict[Literal, int]] = {}

    def truth(self, expr: FilterExpr) -> _Truth:
        """``(rows where expr is true, rows where it is false or None)``."""
        if isinstance(expr, Not):
            true, false = self.truth(expr.operand)
            return (~true, None) if false is None else (false, true)
        if isinstance(expr, And | Or):
            parts = [self.truth(e) for e in expr.operands]
            join, meet = (
                (np.logical_and, np.logical_or)
                if isinstance(expr, And)
                else (np.logical_or, np.logical_and)
            )
            true = join.reduce([p[0] for p in parts])
            if all(p[1] is None for p in parts):
                return true, None
            return true, meet.reduce([_false(p) for p in parts])
        spec = self.table.specs[expr.column]
        if spec.type is ColumnType.NUMBER:
            return self.number(expr)
        return self.encoded(expr)

    def number(self, expr: Comparison | InList | Between | IsNull) -> _Truth:
        x = self.table.numbers(expr.column)
        nullable = self.table.specs[expr.column].nullable
        if isinstance(expr, IsNull):
            null = np.isnan(x) if nullable else np.zeros(x.shape, dtype=np.bool_)
            return (~null, None) if expr.negated else (null, None)
        if isinstance(expr, Comparison):
            cond = _compare(x, expr.op, float(expr.value))
        elif isinstance(expr, InList):
            cond = np.isin(x, np.array([float(v) for v in expr.values]))
        else:
            cond = (x >= float(expr.low)) & (x <= float(expr.high))
        if not nullable:
            return cond, None
        valid = ~np.isnan(x)
        return cond & valid, ~cond & valid

    def levels(self, column: str) -> dict[Literal, int]:
        index = self.level_index.get(column)
        if index is None:
            levels = self.table.encoded(column).levels
            index = {level: i for i, level in enumerate(levels)}
            self.level_index[column] = index
        return index

    def encoded(self, expr: Comparison | InList | Between | IsNull) -> _Truth:
        codes = self.table.encoded(expr.column).codes
        nullable = self.table.specs[expr.column].nullable
        if isinstance(expr, IsNull):
            null = codes < 0 if nullable else np.zeros(codes.shape, dtype=np.bool_)
            return (~null, None) if expr.negated else (null, None)
        index = self.levels(expr.column)
        if isinstance(expr, Comparison):
            position = index.get(expr.value)
            cond: Mask = (
                codes == position
                if position is not None
                else np.zeros(codes.shape, dtype=np.bool_)
            )
            negate = expr.op is CompareOp.NE
        else:
            assert isinstance(expr, InList)  # noqa: S101 - validate_filter: no Between
            wanted = [index[v] for v in expr.values if v in index]
            cond = np.isin(codes, np.array(wanted, dtype=np.intp))
            negate = False
        if not nullable:
            return (~cond, None) if negate else (cond, None)
        valid = codes >= 0
        return (valid & ~cond, cond) if negate else (cond, valid & ~cond)


def _compare(x: NDArray[np.float64], op: CompareOp, value: float) -> Mask:
    result: Mask
    if op is CompareOp.EQ:
        result = x == value
    elif op is CompareOp.NE:
        result = x != value
    elif op is CompareOp.LT:
        result = x < value
    elif op is CompareOp.LE:
        result = x <= value
    elif op is CompareOp.GT:
        result = x > value
    else:
        result = x >= value
    return result

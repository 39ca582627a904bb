"""The filter grammar: parse, round-trip, positions of errors, vectorised evaluation."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc_engine.aggregate import (
    And,
    Between,
    ColumnSpec,
    ColumnType,
    CompareOp,
    Comparison,
    FilterExpr,
    InList,
    IsNull,
    Not,
    Or,
    Table,
    evaluate_filter,
    parse_filter,
    render_filter,
    validate_filter,
)
from mpc_engine.aggregate.errors import FilterSyntaxError, FilterValidationError
from mpc_engine.policy import Sensitivity

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_parses_into_the_typed_ast() -> None:
    expr = parse_filter(
        "age >= 18 AND (region in ['north', \"south\"] or not smoker = true) "
        "and income between -1.5 and 2e3 and city is not null"
    )
    assert expr == And(
        (
            Comparison("age", CompareOp.GE, 18.0),
            Or(
                (
                    InList("region", ("north", "south")),
                    Not(Comparison("smoker", CompareOp.EQ, True)),
                )
            ),
            Between("income", -1.5, 2000.0),
            IsNull("city", negated=True),
        )
    )
    assert parse_filter("x = 'it\\'s'") == Comparison("x", CompareOp.EQ, "it's")
    assert parse_filter("x is null") == IsNull("x")
    first = parse_filter("a = 1 or b = 2")
    assert isinstance(first, Or) and first.operands[1].position == 9  # type: ignore[union-attr]


# -- round trip ----------------------------------------------------------------

names = st.sampled_from(["age", "income", "region", "x1", "a_b"])
literals = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
predicates = st.one_of(
    st.builds(Comparison, names, st.sampled_from(list(CompareOp)), literals),
    st.builds(InList, names, st.lists(literals, min_size=1, max_size=4).map(tuple)),
    st.builds(Between, names, literals, literals),
    st.builds(IsNull, names, st.booleans()),
)


def _combine(children: st.SearchStrategy[FilterExpr]) -> st.SearchStrategy[FilterExpr]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Not, children), st.builds(And, many), st.builds(Or, many)
    )


expressions = st.recursive(predicates, _combine, max_leaves=12)


@given(expr=expressions)
@PROPERTY
def test_render_then_parse_round_trips(expr: FilterExpr) -> None:
    text = render_filter(expr)
    assert parse_filter(text) == expr
    assert render_filter(parse_filter(text)) == text


# -- rejections, with positions -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 0, "the filter is empty"),
        ("age >", 5, "expected a literal"),
        ("age = 'abc", 6, "unterminated string"),
        ("age == 3", 4, "use '=' for equality"),
        ("age <> 3", 4, "use '!='"),
        ("age ! 3", 4, "'!' must be followed by '='"),
        ("(age = 3", 8, "expected ')'"),
        ("age = 3 and", 11, "expected a column name, found the end"),
        ("age in [1, 2", 12, "expected ',' or ']'"),
        ("age in []", 8, "expected a literal"),
        ("age in 1", 7, "expected '[' to open the list"),
        ("age between 1 or 2", 14, "expected 'and' between the two bounds"),
        ("age is nul", 7, "expected 'null', found 'nul'"),
        ("age = 3 age = 4", 8, "expected 'and', 'or' or the end"),
        ("age = null", 6, "is null"),
        ("age = 1e999", 6, "number out of range"),
        ("age # 3", 4, "unexpected character '#'"),
        ("age = -x", 7, "expected a number after '-'"),
        ("and = 3", 0, "found the keyword 'and'"),
        ("age = 'a\\q'", 8, "unknown escape"),
        ("age = 3abc", 7, "unexpected 'a' after the number"),
        ("age = 1e", 7, "an exponent needs digits"),
        ("age ≥ 3", 4, "unexpected character '≥'"),
        ("age", 3, "expected an operator"),
        ("= 3", 0, "expected a column name"),
        ("(" * 40 + "a = 1" + ")" * 40, 32, "nested deeper than 32"),
        ("not " * 40 + "a = 1", 128, "nested deeper than 32"),
        ("a = 1 or " * 500, 4096, "longer than 4096"),
        (" or ".join(["a = 1"] * 257), 256 * 9, "more than 256 conditions"),
        ("a in [" + ",".join(["1"] * 1001) + "]", 6 + 2 * 1000, "at most 1000 values"),
        ("a = '" + "x" * 1001 + "'", 4, "longer than 1000"),
    ],
)
def test_rejects_with_position_and_reason(
    text: str, position: int, reason: str
) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == position
    assert reason in info.value.reason
    assert str(info.value) == f"filter: at position {position}: {info.value.reason}"


@given(text=st.text(alphabet="ab =!<>()[],'\"-.e1is nulotrAND\\", max_size=40))
@PROPERTY
def test_garbage_is_rejected_only_with_a_position(text: str) -> None:
    try:
        expr = parse_filter(text)
    except FilterSyntaxError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse_filter(render_filter(expr)) == expr


# -- validation ------------------------------------------------------------------------

SPECS = {
    "n": ColumnSpec("n", ColumnType.NUMBER, Sensitivity.SENSITIVE, nullable=True),
    "m": ColumnSpec("m", ColumnType.NUMBER, Sensitivity.SENSITIVE),
    "s": ColumnSpec("s", ColumnType.STRING, Sensitivity.PUBLIC, nullable=True),
    "b": ColumnSpec("b", ColumnType.BOOLEAN, Sensitivity.SENSITIVE, nullable=True),
}


@pytest.mark.parametrize(
    ("text", "position", "column", "reason"),
    [
        ("m = 1 and zz = 3", 10, "zz", "no such column"),
        ("s = 3", 0, "s", "cannot be compared with the number 3.0"),
        ("s < 'a'", 0, "s", "only be compared with '=' or '!='"),
        ("s between 'a' and 'b'", 0, "s", "'between' needs a number column"),
        ("m between 3 and 1", 0, "m", "the lower bound 3.0 is above the upper bound"),
        ("m in [1, 'x']", 0, "m", "cannot be compared with the string 'x'"),
        ("b = 'true'", 0, "b", "a boolean column cannot be compared"),
        ("n = true", 0, "n", "a number column cannot be compared with the boolean"),
    ],
)
def test_validation_names_position_column_and_rule(
    text: str, position: int, column: str, reason: str
) -> None:
    with pytest.raises(FilterValidationError) as info:
        validate_filter(parse_filter(text), SPECS)
    assert (info.value.position, info.value.column) == (position, column)
    assert reason in info.value.reason


# -- evaluation against a row-by-row reference -------------------------------------

NUMS = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]
STRS = ["a", "b", "c", "zz"]
OPS: dict[CompareOp, Callable[[Any, Any], bool]] = {
    CompareOp.EQ: operator.eq,
    CompareOp.NE: operator.ne,
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
}
num = st.sampled_from(NUMS)
typed_predicates = st.one_of(
    st.builds(
        Comparison, st.sampled_from(["n", "m"]), st.sampled_from(list(CompareOp)), num
    ),
    st.builds(
        InList,
        st.sampled_from(["n", "m"]),
        st.lists(num, min_size=1, max_size=3).map(tuple),
    ),
    st.tuples(st.sampled_from(["n", "m"]), num, num).map(
        lambda t: Between(t[0], min(t[1], t[2]), max(t[1], t[2]))
    ),
    st.builds(
        Comparison,
        st.just("s"),
        st.sampled_from([CompareOp.EQ, CompareOp.NE]),
        st.sampled_from(STRS),
    ),
    st.builds(
        InList,
        st.just("s"),
        st.lists(st.sampled_from(STRS), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(
        Comparison,
        st.just("b"),
        st.sampled_from([CompareOp.EQ, CompareOp.NE]),
        st.booleans(),
    ),
    st.builds(
        InList, st.just("b"), st.lists(st.booleans(), min_size=1, max_size=2).map(tuple)
    ),
    st.builds(IsNull, st.sampled_from(["n", "m", "s", "b"]), st.booleans()),
)
typed_expressions = st.recursive(typed_predicates, _combine, max_leaves=10)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "n": st.none() | num,
            "m": num,
            "s": st.none() | st.sampled_from(STRS[:3]),
            "b": st.none() | st.booleans(),
        }
    ),
    max_size=25,
)


def reference(expr: FilterExpr, row: dict[str, Any]) -> bool | None:
    """SQL three-valued logic, one row at a time."""
    if isinstance(expr, Not):
        inner = reference(expr.operand, row)
        return None if inner is None else not inner
    if isinstance(expr, And | Or):
        parts = [reference(e, row) for e in expr.operands]
        decisive = isinstance(expr, Or)
        if decisive in parts:
            return decisive
        return None if None in parts else not decisive
    value = row[expr.column]
    if isinstance(expr, IsNull):
        return (value is None) != expr.negated
    if value is None:
        return None
    if isinstance(expr, Comparison):
        return OPS[expr.op](value, expr.value)
    if isinstance(expr, InList):
        return value in expr.values
    low: Any = expr.low
    high: Any = expr.high
    return bool(low <= value <= high)


def to_table(data: list[dict[str, Any]]) -> Table:
    return Table(
        {
            "n": np.array(
                [math.nan if r["n"] is None else r["n"] for r in data], dtype=float
            ),
            "m": np.array([r["m"] for r in data], dtype=float),
            "s": np.array([r["s"] for r in data], dtype=object),
            "b": np.array([r["b"] for r in data], dtype=object),
        },
        list(SPECS.values()),
    )


@given(expr=typed_expressions, data=rows)
@PROPERTY
def test_evaluation_equals_the_reference(
    expr: FilterExpr, data: list[dict[str, Any]]
) -> None:
    validate_filter(expr, SPECS)
    mask = evaluate_filter(expr, to_table(data))
    assert mask.dtype == np.bool_
    assert mask.tolist() == [reference(expr, row) is True for row in data]


def test_nulls_follow_sql() -> None:
    table = to_table(
        [
            {"n": None, "m": 1.0, "s": None, "b": None},
            {"n": 3.0, "m": 1.0, "s": "a", "b": True},
        ]
    )
    for text, expected in [
        ("n != 1", [False, True]),
        ("not (n = 1)", [False, True]),
        ("n is null", [True, False]),
        ("n = 1 or m = 1", [True, True]),
        ("not (n = 1 and m = 2)", [True, True]),
        ("s != 'b'", [False, True]),
        ("s in ['zz']", [False, False]),
        ("b = false", [False, False]),
    ]:
        assert evaluate_filter(parse_filter(text), table).tolist() == expected, text

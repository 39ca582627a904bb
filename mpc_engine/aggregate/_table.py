"""Column specs and the validated, encoded in-memory table the engine runs on.

A ``Table`` is built once per dataset version (the node can cache it): numbers are
held as float64 with NaN for null; text and boolean columns are dictionary-encoded
(``codes`` into sorted ``levels``, -1 for null), so filters and group-by on them are
integer operations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mpc_engine.aggregate.errors import SchemaError
from mpc_engine.policy import Sensitivity

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_ROWS = 2**31
"""Row limit: fixed-point DP sums of up to 2³¹ rows are exact in float64."""
MAX_CATEGORIES = 10_000

CategoryValue = str | float | bool
"""A value of a categorical column (a number for numeric columns)."""


class ColumnType(StrEnum):
    """The value type of a column."""

    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class ColumnSpec:
    """What the engine knows about a column.

    Parameters
    ----------
    name
        The column name (``^[a-z][a-z0-9_]{0,62}$``, as in the rights policy).
    type
        ``number``, ``string`` or ``boolean``.
    sensitivity
        How sensitive the column is (from the dataset's schema).
    nullable
        Whether the column may hold nulls (NaN or ``None``). Public: it decides
        whether DP means need a per-column count.
    categories
        The column's declared, public value domain, if any. Text and boolean
        columns are categorical; a number column is categorical only with a
        declared domain. Under DP, grouping by columns with declared domains
        releases every combination (no data-dependent keys). Boolean columns
        default to ``(False, True)``.
    """

    name: str
    type: ColumnType
    sensitivity: Sensitivity
    nullable: bool = False
    categories: tuple[CategoryValue, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SchemaError(str(self.name), "name must match ^[a-z][a-z0-9_]{0,62}$")
        if not isinstance(self.type, ColumnType):
            raise SchemaError(
                self.name, f"type must be a ColumnType, not {self.type!r}"
            )
        if not isinstance(self.sensitivity, Sensitivity):
            raise SchemaError(self.name, "sensitivity must be a Sensitivity")
        if not isinstance(self.nullable, bool):
            raise SchemaError(self.name, "nullable must be a bool")
        if self.categories is not None:
            object.__setattr__(self, "categories", self._checked_categories())

    def _checked_categories(self) -> tuple[CategoryValue, ...]:
        values = tuple(self.categories or ())
        if not values:
            raise SchemaError(self.name, "categories, if given, must not be empty")
        if len(values) > MAX_CATEGORIES:
            raise SchemaError(
                self.name, f"at most {MAX_CATEGORIES} categories may be declared"
            )
        out: list[CategoryValue] = []
        for value in values:
            if self.type is ColumnType.STRING and isinstance(value, str):
                out.append(value)
            elif self.type is ColumnType.BOOLEAN and isinstance(value, bool):
                out.append(value)
            elif (
                self.type is ColumnType.NUMBER
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                out.append(float(value))
            else:
                raise SchemaError(
                    self.name,
                    f"category {value!r} is not a {self.type.value}"
                    + (" (finite)" if self.type is ColumnType.NUMBER else ""),
                )
        if len(set(out)) != len(out):
            raise SchemaError(self.name, "categories must be unique")
        return tuple(out)

    @property
    def categorical(self) -> bool:
        """Whether the column can be grouped by (text, boolean or declared domain)."""
        return self.type is not ColumnType.NUMBER or self.categories is not None

    @property
    def domain(self) -> tuple[CategoryValue, ...] | None:
        """The declared public domain (booleans: ``(False, True)`` by default)."""
        if self.categories is None and self.type is ColumnType.BOOLEAN:
            return (False, True)
        return self.categories


@dataclass(frozen=True)
class Encoded:
    """A dictionary-encoded column: ``codes`` index ``levels``; -1 is null."""

    codes: NDArray[np.intp]
    levels: tuple[CategoryValue, ...]


class Table:
    """A validated table: one 1-D numpy array per declared column.

    Parameters
    ----------
    columns
        Column name → 1-D array. Numbers: an integer or float dtype (NaN is null).
        Text: a ``str`` dtype or ``object`` of ``str`` / ``None``. Booleans: a
        ``bool`` dtype or ``object`` of ``bool`` / ``None``.
    specs
        One ``ColumnSpec`` per column, no more and no fewer.

    Raises
    ------
    SchemaError
        If a column is missing, undeclared, of the wrong shape or type, or holds
        nulls without being nullable.
    """

    def __init__(
        self, columns: Mapping[str, NDArray[Any]], specs: Sequence[ColumnSpec]
    ) -> None:
        by_name: dict[str, ColumnSpec] = {}
        for spec in specs:
            if not isinstance(spec, ColumnSpec):
                raise SchemaError(str(spec), "specs must be ColumnSpec objects")
            if spec.name in by_name:
                raise SchemaError(spec.name, "declared twice")
            by_name[spec.name] = spec
        for name in columns:
            if name not in by_name:
                raise SchemaError(str(name), "has data but no ColumnSpec")
        lengths: set[int] = set()
        self._numbers: dict[str, NDArray[np.float64]] = {}
        self._encoded: dict[str, Encoded] = {}
        for name, spec in by_name.items():
            if name not in columns:
                raise SchemaError(name, "declared but missing from the data")
            array = columns[name]
            if not isinstance(array, np.ndarray) or array.ndim != 1:
                raise SchemaError(name, "must be a one-dimensional numpy array")
            lengths.add(array.shape[0])
            if spec.type is ColumnType.NUMBER:
                self._numbers[name] = _number_column(spec, array)
            else:
                self._encoded[name] = _encoded_column(spec, array)
        if len(lengths) > 1:
            raise SchemaError(
                "(table)", f"columns have different lengths: {sorted(lengths)}"
            )
        self.n_rows = lengths.pop() if lengths else 0
        if self.n_rows > MAX_ROWS:
            raise SchemaError("(table)", f"more than {MAX_ROWS} rows")
        self.specs: Mapping[str, ColumnSpec] = dict(by_name)

    def numbers(self, name: str) -> NDArray[np.float64]:
        """A number column as float64 (NaN is null)."""
        return self._numbers[name]

    def encoded(self, name: str) -> Encoded:
        """A text or boolean column, dictionary-encoded."""
        return self._encoded[name]


def _number_column(spec: ColumnSpec, array: NDArray[Any]) -> NDArray[np.float64]:
    if array.dtype.kind not in "iuf":
        raise SchemaError(
            spec.name,
            f"a number column needs an integer or float dtype, not {array.dtype}",
        )
    values = array.astype(np.float64, copy=False)
    if not spec.nullable and np.isnan(values).any():
        raise SchemaError(spec.name, "holds nulls (NaN) but is not nullable")
    return values


def _encoded_column(spec: ColumnSpec, array: NDArray[Any]) -> Encoded:
    wanted = str if spec.type is ColumnType.STRING else bool
    if spec.type is ColumnType.BOOLEAN and array.dtype == np.bool_:
        return Encoded(array.astype(np.intp), (False, True))
    if spec.type is ColumnType.STRING and array.dtype.kind == "U":
        levels, codes = np.unique(array, return_inverse=True)
        return Encoded(codes.astype(np.intp), tuple(str(v) for v in levels.tolist()))
    if array.dtype != np.object_:
        raise SchemaError(
            spec.name,
            f"a {spec.type.value} column needs a "
            f"{'str' if wanted is str else 'bool'} or object dtype, not {array.dtype}",
        )
    null: NDArray[np.bool_] = np.equal(array, np.full(1, None, dtype=object))
    if null.any() and not spec.nullable:
        raise SchemaError(spec.name, "holds nulls (None) but is not nullable")
    present = array[~null]
    try:
        levels, inverse = np.unique(present, return_inverse=True)
    except TypeError as exc:
        raise SchemaError(
            spec.name, f"values must all be {wanted.__name__} or None"
        ) from exc
    level_values = levels.tolist()
    if not all(type(v) is wanted for v in level_values):
        raise SchemaError(spec.name, f"values must all be {wanted.__name__} or None")
    codes = np.full(array.shape[0], -1, dtype=np.intp)
    codes[~null] = inverse
    if spec.type is ColumnType.BOOLEAN:
        # Fixed levels (False, True) whatever subset occurs.
        remap = np.array([1 if v else 0 for v in level_values], dtype=np.intp)
        codes[~null] = remap[inverse]
        return Encoded(codes, (False, True))
    return Encoded(codes, tuple(level_values))

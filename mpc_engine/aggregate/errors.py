"""Errors raised by ``mpc_engine.aggregate``.

Tree::

    AggregateError
    ├── FilterError            (also ValueError) the filter cannot be used;
    │   │                      ``position`` (0-based character offset), ``reason``
    │   ├── FilterSyntaxError      the text is not in the grammar, or too long/deep
    │   └── FilterValidationError  an unknown column or a literal of the wrong type;
    │                              also ``column``
    ├── SchemaError            (also ValueError) column specs or table data are
    │                          inconsistent; ``column``, ``reason``
    ├── RequestMismatch        the request does not fit the dataset's schema (e.g. a
    │                          sum over a text column); ``field``, ``reason``
    └── PolicyViolation        the rights policy forbids the request (kind, column,
                               missing bounds); ``field``, ``reason``

A ``SchemaError`` is the provider's problem (its data does not match its own
declared schema) and should surface as an internal error, never to a buyer: its
message may describe the data.
"""

from __future__ import annotations

__all__ = [
    "AggregateError",
    "FilterError",
    "FilterSyntaxError",
    "FilterValidationError",
    "PolicyViolation",
    "RequestMismatch",
    "SchemaError",
]


class AggregateError(Exception):
    """Base of every error raised by ``mpc_engine.aggregate``."""


class FilterError(AggregateError, ValueError):
    """The filter expression cannot be used; ``position`` is a 0-based offset."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"filter: at position {position}: {reason}")


class FilterSyntaxError(FilterError):
    """The filter text is not in the grammar (or exceeds a size limit)."""


class FilterValidationError(FilterError):
    """The filter names an unknown column or compares it with the wrong type."""

    def __init__(self, position: int, column: str, reason: str) -> None:
        self.column = column
        super().__init__(position, f"column {column!r}: {reason}")


class SchemaError(AggregateError, ValueError):
    """Column specs or table data are inconsistent."""

    def __init__(self, column: str, reason: str) -> None:
        self.column = column
        self.reason = reason
        super().__init__(f"column {column!r}: {reason}")


class RequestMismatch(AggregateError):
    """The request does not fit the dataset's schema."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class PolicyViolation(AggregateError):
    """The dataset's rights policy forbids the request."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

r"""The safe filter grammar: tokenizer, recursive-descent parser, typed AST.

A filter is data, never code: it is tokenized and parsed by hand into frozen
dataclasses, validated against the column specs and evaluated with vectorised
numpy operations. No SQL is built from it and nothing is ``eval``-ed.

Grammar (keywords are case-insensitive; column names are as declared)::

    filter     := or_expr EOF
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | predicate
    predicate  := column op literal
                | column "in" "[" literal ("," literal)* "]"
                | column "between" literal "and" literal
                | column "is" ["not"] "null"
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    literal    := number | string | "true" | "false"
    number     := ["-"] digits ["." digits] [("e" | "E") ["+" | "-"] digits]
    string     := '...' | "..."   (backslash escapes \\ \' \" \n \t)

Limits: 4,096 characters, nesting depth 32, 256 predicates, 1,000 items in a list,
1,000 characters in a string literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from mpc_engine.aggregate.errors import FilterSyntaxError

MAX_LENGTH = 4096
MAX_DEPTH = 32
MAX_PREDICATES = 256
MAX_LIST = 1000
MAX_STRING = 1000

KEYWORDS = frozenset(
    {"and", "or", "not", "in", "between", "is", "null", "true", "false"}
)

Literal = str | float | bool
"""A literal value: text, a (finite) number or a boolean."""


class CompareOp(StrEnum):
    """A comparison operator."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


@dataclass(frozen=True, slots=True)
class Comparison:
    """``column op value``."""

    column: str
    op: CompareOp
    value: Literal
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class InList:
    """``column in [values...]``."""

    column: str
    values: tuple[Literal, ...]
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Between:
    """``column between low and high`` (both ends included)."""

    column: str
    low: Literal
    high: Literal
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IsNull:
    """``column is null`` (``negated``: ``column is not null``)."""

    column: str
    negated: bool = False
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: FilterExpr


@dataclass(frozen=True, slots=True)
class And:
    """``a and b and ...`` (two or more operands)."""

    operands: tuple[FilterExpr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("And needs at least two operands")


@dataclass(frozen=True, slots=True)
class Or:
    """``a or b or ...`` (two or more operands)."""

    operands: tuple[FilterExpr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("Or needs at least two operands")


Predicate = Comparison | InList | Between | IsNull
FilterExpr = Comparison | InList | Between | IsNull | Not | And | Or


# -- tokenizer -----------------------------------------------------------------


class _Kind(StrEnum):
    NAME = "name"
    KEYWORD = "keyword"
    NUMBER = "number"
    STRING = "string"
    OP = "operator"
    PUNCT = "punctuation"
    END = "end"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str  # keywords lower-cased; strings unescaped
    position: int


_PUNCT = "()[],-"
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


def _describe(token: _Token) -> str:
    if token.kind is _Kind.END:
        return "the end of the filter"
    if token.kind is _Kind.STRING:
        return "a string"
    return f"{token.text!r}"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        start = i
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            while i < n and text[i].isascii() and (text[i].isalnum() or text[i] == "_"):
                i += 1
            word = text[start:i]
            if word.lower() in KEYWORDS:
                tokens.append(_Token(_Kind.KEYWORD, word.lower(), start))
            else:
                tokens.append(_Token(_Kind.NAME, word, start))
        elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            i = _scan_number(text, i)
            tokens.append(_Token(_Kind.NUMBER, text[start:i], start))
        elif ch in "'\"":
            value, i = _scan_string(text, i)
            tokens.append(_Token(_Kind.STRING, value, start))
        elif ch in "<>!=":
            two = text[i : i + 2]
            if two in ("<=", ">=", "!="):
                tokens.append(_Token(_Kind.OP, two, start))
                i += 2
            elif two == "==":
                raise FilterSyntaxError(start, "use '=' for equality, not '=='")
            elif two == "<>":
                raise FilterSyntaxError(start, "use '!=' for inequality, not '<>'")
            elif ch == "!":
                raise FilterSyntaxError(start, "'!' must be followed by '=' ('!=')")
            else:
                tokens.append(_Token(_Kind.OP, ch, start))
                i += 1
        elif ch in _PUNCT:
            tokens.append(_Token(_Kind.PUNCT, ch, start))
            i += 1
        else:
            raise FilterSyntaxError(start, f"unexpected character {ch!r}")
    tokens.append(_Token(_Kind.END, "", n))
    return tokens


def _scan_number(text: str, i: int) -> int:
    n = len(text)
    start = i
    while i < n and text[i].isdigit():
        i += 1
    if i < n and text[i] == ".":
        i += 1
        if not (i < n and text[i].isdigit()) and i - 1 == start:
            raise FilterSyntaxError(start, "a number needs digits")
        while i < n and text[i].isdigit():
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if not (j < n and text[j].isdigit()):
            raise FilterSyntaxError(i, "an exponent needs digits")
        i = j
        while i < n and text[i].isdigit():
            i += 1
    if i < n and (text[i].isalnum() or text[i] in "._"):
        raise FilterSyntaxError(i, f"unexpected {text[i]!r} after the number")
    return i


def _scan_string(text: str, i: int) -> tuple[str, int]:
    quote, start, n = text[i], i, len(text)
    i += 1
    out: list[str] = []
    while True:
        if i >= n:
            raise FilterSyntaxError(start, "unterminated string")
        ch = text[i]
        if ch == quote:
            i += 1
            break
        if ch == "\\":
            if i + 1 >= n:
                raise FilterSyntaxError(start, "unterminated string")
            escaped = _ESCAPES.get(text[i + 1])
            if escaped is None:
                raise FilterSyntaxError(
                    i, f"unknown escape '\\{text[i + 1]}' (use \\\\ \\' \\\" \\n \\t)"
                )
            out.append(escaped)
            i += 2
        else:
            out.append(ch)
            i += 1
        if len(out) > MAX_STRING:
            raise FilterSyntaxError(
                start, f"string longer than {MAX_STRING} characters"
            )
    return "".join(out), i


# -- parser --------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.predicates = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind is not _Kind.END:
            self.index += 1
        return token

    def at(self, kind: _Kind, text: str | None = None) -> bool:
        token = self.token
        return token.kind is kind and (text is None or token.text == text)

    def expect(self, kind: _Kind, text: str, what: str) -> _Token:
        if not self.at(kind, text):
            raise FilterSyntaxError(
                self.token.position, f"expected {what}, found {_describe(self.token)}"
            )
        return self.advance()

    def enter(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterSyntaxError(position, f"nested deeper than {MAX_DEPTH} levels")

    def parse(self) -> FilterExpr:
        if self.at(_Kind.END):
            raise FilterSyntaxError(0, "the filter is empty")
        expr = self.or_expr()
        if not self.at(_Kind.END):
            raise FilterSyntaxError(
                self.token.position,
                f"expected 'and', 'or' or the end, found {_describe(self.token)}",
            )
        return expr

    def or_expr(self) -> FilterExpr:
        operands = [self.and_expr()]
        while self.at(_Kind.KEYWORD, "or"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> FilterExpr:
        operands = [self.not_expr()]
        while self.at(_Kind.KEYWORD, "and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> FilterExpr:
        token = self.token
        if self.at(_Kind.KEYWORD, "not"):
            self.advance()
            self.enter(token.position)
            operand = self.not_expr()
            self.depth -= 1
            return Not(operand)
        if self.at(_Kind.PUNCT, "("):
            self.advance()
            self.enter(token.position)
            inner = self.or_expr()
            self.expect(_Kind.PUNCT, ")", "')'")
            self.depth -= 1
            return inner
        return self.predicate()

    def predicate(self) -> Predicate:
        token = self.token
        if token.kind is not _Kind.NAME:
            if token.kind is _Kind.KEYWORD and token.text not in ("not",):
                reason = f"expected a column name, found the keyword {token.text!r}"
            else:
                reason = f"expected a column name, found {_describe(token)}"
            raise FilterSyntaxError(token.position, reason)
        self.predicates += 1
        if self.predicates > MAX_PREDICATES:
            raise FilterSyntaxError(
                token.position, f"more than {MAX_PREDICATES} conditions"
            )
        column = self.advance().text
        position = token.position
        if self.at(_Kind.OP):
            op = CompareOp(self.advance().text)
            return Comparison(column, op, self.literal(), position)
        if self.at(_Kind.KEYWORD, "in"):
            self.advance()
            return InList(column, self.literal_list(), position)
        if self.at(_Kind.KEYWORD, "between"):
            self.advance()
            low = self.literal()
            self.expect(_Kind.KEYWORD, "and", "'and' between the two bounds")
            return Between(column, low, self.literal(), position)
        if self.at(_Kind.KEYWORD, "is"):
            self.advance()
            negated = self.at(_Kind.KEYWORD, "not")
            if negated:
                self.advance()
            self.expect(_Kind.KEYWORD, "null", "'null'")
            return IsNull(column, negated, position)
        raise FilterSyntaxError(
            self.token.position,
            f"expected an operator (= != < <= > >=), 'in', 'between' or 'is' after "
            f"{column!r}, found {_describe(self.token)}",
        )

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect(_Kind.PUNCT, "[", "'[' to open the list")
        values = [self.literal()]
        while self.at(_Kind.PUNCT, ","):
            self.advance()
            if len(values) >= MAX_LIST:
                raise FilterSyntaxError(
                    self.token.position, f"a list may hold at most {MAX_LIST} values"
                )
            values.append(self.literal())
        self.expect(_Kind.PUNCT, "]", "',' or ']'")
        return tuple(values)

    def literal(self) -> Literal:
        token = self.token
        if token.kind is _Kind.STRING:
            self.advance()
            return token.text
        if token.kind is _Kind.KEYWORD and token.text in ("true", "false"):
            self.advance()
            return token.text == "true"
        negative = False
        if self.at(_Kind.PUNCT, "-"):
            self.advance()
            negative = True
            if not self.at(_Kind.NUMBER):
                raise FilterSyntaxError(
                    self.token.position,
                    f"expected a number after '-', found {_describe(self.token)}",
                )
        token = self.token
        if token.kind is _Kind.NUMBER:
            self.advance()
            value = float(token.text)
            if not math.isfinite(value):
                raise FilterSyntaxError(token.position, "number out of range")
            return -value if negative else value
        if token.kind is _Kind.KEYWORD and token.text == "null":
            reason = "compare with null using 'is null' or 'is not null'"
        else:
            reason = "expected a literal (number, string, true, false), found " + (
                _describe(token)
            )
        raise FilterSyntaxError(token.position, reason)


def parse_filter(text: str) -> FilterExpr:
    """Parse a filter expression into its typed AST.

    Parameters
    ----------
    text
        The filter, in the grammar of this module's docstring.

    Returns
    -------
    FilterExpr
        The expression tree (``Comparison``, ``InList``, ``Between``, ``IsNull``,
        ``Not``, ``And``, ``Or``); numbers are floats.

    Raises
    ------
    FilterSyntaxError
        With the 0-based ``position`` and the reason, if the text is not in the
        grammar or exceeds a limit.
    """
    if not isinstance(text, str):
        raise FilterSyntaxError(0, f"must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(MAX_LENGTH, f"longer than {MAX_LENGTH} characters")
    return _Parser(_tokenize(text)).parse()


# -- rendering -----------------------------------------------------------------


def _render_literal(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    return f"'{escaped}'"


def render_filter(expr: FilterExpr) -> str:
    """The canonical text of ``expr``; ``parse_filter`` of it gives ``expr`` back."""
    if isinstance(expr, Comparison):
        return f"{expr.column} {expr.op.value} {_render_literal(expr.value)}"
    if isinstance(expr, InList):
        items = ", ".join(_render_literal(v) for v in expr.values)
        return f"{expr.column} in [{items}]"
    if isinstance(expr, Between):
        return (
            f"{expr.column} between {_render_literal(expr.low)} "
            f"and {_render_literal(expr.high)}"
        )
    if isinstance(expr, IsNull):
        return f"{expr.column} is {'not ' if expr.negated else ''}null"
    if isinstance(expr, Not):
        inner = render_filter(expr.operand)
        return (
            f"not ({inner})" if isinstance(expr.operand, And | Or) else f"not {inner}"
        )
    if isinstance(expr, And):
        return " and ".join(
            f"({render_filter(e)})" if isinstance(e, And | Or) else render_filter(e)
            for e in expr.operands
        )
    return " or ".join(
        f"({render_filter(e)})" if isinstance(e, Or) else render_filter(e)
        for e in expr.operands
    )


def predicates(expr: FilterExpr) -> list[Predicate]:
    """The predicates of ``expr``, left to right."""
    if isinstance(expr, Not):
        return predicates(expr.operand)
    if isinstance(expr, And | Or):
        return [p for e in expr.operands for p in predicates(e)]
    return [expr]

r"""Load a dataset's source (CSV, Parquet, SQL) into a numpy-backed table.

The listing's schema decides how each column is read; columns the listing does
not declare are never loaded. In memory (and in the ``aggregate`` engine's
:class:`~mpc_engine.aggregate.Table`):

==========================  ==================================================
listing type                array
==========================  ==================================================
``integer``, ``float``      float64, NaN for null (integers must be whole)
``boolean``                 object: ``True`` / ``False`` / ``None``
``string``, ``categorical`` object: ``str`` / ``None``
``date``                    object: ISO ``YYYY-MM-DD`` / ``None``
``datetime``                object: ISO UTC ``YYYY-MM-DDTHH:MM:SSZ`` / ``None``
                            (a time without zone is taken as UTC; sub-seconds
                            are dropped)
==========================  ==================================================

A column without nulls is held as a ``bool`` or ``str`` array instead of
``object`` (the same values, encoded many times faster).

Dates and timestamps stay text: ISO strings sort like the instants they name, so
the engine can group and compare them, and they are what the attestation reports.

Text sources (CSV, text columns of Parquet or SQL): booleans are ``true`` /
``false`` (any case) or ``1`` / ``0``; an empty cell is null.

Content hash (the dataset version's identity): CSV and Parquet — SHA-256 of the
file's bytes (what ``marketplace.samples.write_csv`` returns). SQL — SHA-256 of a
canonical serialisation: the line ``["col1",…]`` (the listing's column order),
then one line per row, the canonical JSON list of its normalised values
(numbers as shortest float repr, nulls as ``null``), rows sorted bytewise, lines
joined with ``\n``; the byte size is that serialisation's length. Equal content
in any row order has the same hash.

Error messages name the dataset, the column and the row, never a value.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from mpc_engine.aggregate import ColumnSpec, ColumnType, Table
from mpc_engine.aggregate.errors import SchemaError
from mpc_engine.node.config import CsvSource, DatasetConfig, ParquetSource, SqlSource
from mpc_engine.node.errors import SourceError
from mpc_engine.node.listing import ListingColumn, ListingColumnType

__all__ = ["LoadedDataset", "load_dataset", "null_mask"]

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_MAX_EXACT = 2.0**53
_HASH_CHUNK = 1 << 20
_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, eq=False)
class LoadedDataset:
    """One version of a dataset, loaded and checked against the listing.

    Attributes
    ----------
    dataset_id
        The listing's id.
    schema
        The listing's columns, in listing order.
    columns
        One array per column (see the module docstring for the encodings).
    table
        The same data as the ``aggregate`` engine's table.
    content_hash, row_count, byte_size
        The version's identity and size (see the module docstring).
    modified_at
        The file's modification time (UTC); ``None`` for SQL sources.
    """

    dataset_id: uuid.UUID
    schema: tuple[ListingColumn, ...]
    columns: Mapping[str, NDArray[Any]]
    table: Table
    content_hash: str
    row_count: int
    byte_size: int
    modified_at: datetime | None
    column_types: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "column_types", {c.name: c.type.value for c in self.schema}
        )

    def column(self, name: str) -> ListingColumn:
        """The listing's column ``name`` (``KeyError`` if there is none)."""
        for col in self.schema:
            if col.name == name:
                return col
        raise KeyError(name)

    def __repr__(self) -> str:
        return (
            f"LoadedDataset(dataset_id={self.dataset_id}, rows={self.row_count}, "
            f"content_hash={self.content_hash[:16]}…)"
        )


def load_dataset(
    config: DatasetConfig, schema: Sequence[ListingColumn]
) -> LoadedDataset:
    """Load ``config.source`` as the listing's ``schema`` describes it.

    Raises
    ------
    SourceError
        The source is missing or unreadable, a declared column is absent, a value
        does not fit its column's type, or a non-nullable column holds nulls.
    """
    ds = str(config.dataset_id)
    columns = tuple(schema)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise SourceError(ds, "columns", "the listing declares a column twice")
    source = config.source
    if isinstance(source, CsvSource):
        arrays = _read_csv(ds, source.path, columns)
        content_hash, size, mtime = _file_facts(ds, source.path)
    elif isinstance(source, ParquetSource):
        arrays = _read_parquet(ds, source.path, columns)
        content_hash, size, mtime = _file_facts(ds, source.path)
    else:
        arrays = _read_sql(ds, source, columns)
        content_hash, size = _canonical_hash(columns, arrays)
        mtime = None
    for col in columns:
        if not col.nullable and null_mask(arrays[col.name]).any():
            count = int(null_mask(arrays[col.name]).sum())
            raise SourceError(
                ds,
                f"column {col.name}",
                f"{count} null value(s), but the listing says it is not nullable",
            )
    arrays = {col.name: _compact(col, arrays[col.name]) for col in columns}
    table = _table(ds, config, columns, arrays)
    return LoadedDataset(
        dataset_id=config.dataset_id,
        schema=columns,
        columns=arrays,
        table=table,
        content_hash=content_hash,
        row_count=table.n_rows,
        byte_size=size,
        modified_at=mtime,
    )


# -- the engine's table ------------------------------------------------------------


def _engine_type(col: ListingColumn) -> ColumnType:
    if col.type.numeric:
        return ColumnType.NUMBER
    if col.type is ListingColumnType.BOOLEAN:
        return ColumnType.BOOLEAN
    return ColumnType.STRING


def _table(
    ds: str,
    config: DatasetConfig,
    columns: Sequence[ListingColumn],
    arrays: Mapping[str, NDArray[Any]],
) -> Table:
    by_name = {c.name: c for c in columns}
    for name in config.categories:
        if name not in by_name:
            raise SourceError(
                ds, f"categories.{name}", "no such column in the listing's schema"
            )
    try:
        specs = [
            ColumnSpec(
                name=c.name,
                type=_engine_type(c),
                sensitivity=c.sensitivity,
                nullable=c.nullable,
                categories=(
                    tuple(config.categories[c.name])
                    if c.name in config.categories
                    else None
                ),
            )
            for c in columns
        ]
        return Table(arrays, specs)
    except SchemaError as exc:
        raise SourceError(ds, f"column {exc.column}", exc.reason) from None


def null_mask(values: NDArray[Any]) -> NDArray[np.bool_]:
    """Where a loaded column is null (NaN for numbers, ``None`` in object arrays)."""
    if values.dtype.kind == "f":
        mask: NDArray[np.bool_] = np.isnan(values)
        return mask
    if values.dtype.kind != "O":  # str or bool arrays hold no nulls
        return np.zeros(values.shape[0], dtype=bool)
    return np.asarray(np.equal(values, np.full(1, None, dtype=object)), dtype=bool)


def _compact(col: ListingColumn, values: NDArray[Any]) -> NDArray[Any]:
    """Hold a column without nulls as a ``bool`` or ``str`` array.

    Encoding and counting those is much faster than Python objects; columns with
    nulls stay ``object``.
    """
    if values.dtype.kind != "O" or null_mask(values).any():
        return values
    if col.type is ListingColumnType.BOOLEAN:
        return values.astype(bool)
    if values.shape[0] == 0:
        return values
    return values.astype(str)


# -- file facts --------------------------------------------------------------------


def _file_facts(ds: str, path: Path) -> tuple[str, int, datetime]:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
        st = path.stat()
    except OSError as exc:
        raise SourceError(ds, "source.path", f"{path}: {exc.strerror}") from None
    mtime = datetime.fromtimestamp(st.st_mtime, UTC).replace(microsecond=0)
    return digest.hexdigest(), int(st.st_size), mtime


# -- CSV ---------------------------------------------------------------------------


def _read_csv(
    ds: str, path: Path, columns: Sequence[ListingColumn]
) -> dict[str, NDArray[Any]]:
    if not path.is_file():
        raise SourceError(ds, "source.path", f"{path} does not exist")
    names = [c.name for c in columns]
    try:
        with path.open("rb") as fh:
            first = fh.readline()
        header = first.decode("utf-8-sig").rstrip("\r\n").split(",")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(ds, "source.path", f"{path}: cannot read ({exc})") from None
    header = [h.strip().strip('"') for h in header]
    missing = [n for n in names if n not in header]
    if missing:
        raise SourceError(
            ds,
            f"column {missing[0]}",
            f"in the listing's schema but not in the CSV header of {path}",
        )
    try:
        table = pa_csv.read_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                include_columns=names,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        # pyarrow's messages quote the offending line: keep only its first clauses.
        reason = ": ".join(str(exc).split(":")[:2]).strip()
        raise SourceError(
            ds, "source.path", f"{path} is not well-formed CSV ({reason})"
        ) from None
    out: dict[str, NDArray[Any]] = {}
    for col in columns:
        cells = np.asarray(table.column(col.name).to_pylist(), dtype=object)
        out[col.name] = _from_text(ds, col, cells)
    return out


def _from_text(ds: str, col: ListingColumn, cells: NDArray[Any]) -> NDArray[Any]:
    """Convert text cells ('' is null) to the column's array."""
    null = cells == ""
    where = f"column {col.name}"
    if col.type.numeric:
        values = np.full(cells.shape[0], np.nan)
        present = np.flatnonzero(~null)
        try:
            values[present] = cells[present].astype(np.float64)
        except ValueError:
            row = _first_bad(cells, present, lambda s: float(s))
            raise SourceError(ds, where, f"row {row}: not a number") from None
        spelled_nan = np.isnan(values[present])
        if spelled_nan.any():  # "nan" parses as a float; it is not a value
            row = int(present[np.flatnonzero(spelled_nan)[0]]) + 1
            raise SourceError(ds, where, f"row {row}: not a number")
        return _checked_numbers(ds, col, values)
    if col.type is ListingColumnType.BOOLEAN:
        out = np.full(cells.shape[0], None, dtype=object)
        lowered = np.char.lower(cells.astype(str))
        is_true = np.isin(lowered, list(_TRUE))
        is_false = np.isin(lowered, list(_FALSE))
        bad = ~(is_true | is_false | null)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            raise SourceError(
                ds, where, f"row {row}: not a boolean (true/false or 1/0)"
            )
        out[is_true] = True
        out[is_false] = False
        return out
    out = cells.copy()
    out[null] = None
    if col.type.temporal:
        return _normalise_temporal(ds, col, out)
    return out


def _first_bad(
    cells: NDArray[Any], rows: NDArray[np.intp], convert: Callable[[Any], object]
) -> int:
    for i in rows.tolist():
        try:
            value = convert(cells[i])
            if isinstance(value, float) and not math.isfinite(value):
                return int(i) + 1
        except (TypeError, ValueError, ArithmeticError):
            return int(i) + 1
    return int(rows[0]) + 1 if rows.size else 1


def _checked_numbers(
    ds: str, col: ListingColumn, values: NDArray[np.float64]
) -> NDArray[np.float64]:
    where = f"column {col.name}"
    bad = np.isinf(values)
    if bad.any():
        raise SourceError(
            ds, where, f"row {int(np.flatnonzero(bad)[0]) + 1}: not a finite number"
        )
    if col.type is ListingColumnType.INTEGER:
        present = ~np.isnan(values)
        fractional = present & (np.floor(values) != values)
        if fractional.any():
            row = int(np.flatnonzero(fractional)[0]) + 1
            raise SourceError(ds, where, f"row {row}: not a whole number")
        huge = present & (np.abs(values) > _MAX_EXACT)
        if huge.any():
            row = int(np.flatnonzero(huge)[0]) + 1
            raise SourceError(ds, where, f"row {row}: beyond ±2^53")
    return values


def _normalise_temporal(
    ds: str, col: ListingColumn, values: NDArray[Any]
) -> NDArray[Any]:
    """Parse ISO dates / timestamps (str or date objects) into canonical text."""
    where = f"column {col.name}"
    out = np.full(values.shape[0], None, dtype=object)
    cache: dict[object, str] = {}
    for i, value in enumerate(values.tolist()):
        if value is None:
            continue
        key = (type(value), value)
        text = cache.get(key)
        if text is None:
            try:
                text = (
                    _iso_date(value)
                    if col.type is ListingColumnType.DATE
                    else _iso_datetime(value)
                )
            except (TypeError, ValueError):
                kind = (
                    "date (YYYY-MM-DD)"
                    if col.type is ListingColumnType.DATE
                    else ("date-time (ISO 8601)")
                )
                raise SourceError(ds, where, f"row {i + 1}: not a {kind}") from None
            cache[key] = text
        out[i] = text
    return out


def _iso_date(value: object) -> str:
    if isinstance(value, datetime):
        raise TypeError("a timestamp, not a date")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return date.fromisoformat(value.strip()).isoformat()
    raise TypeError(type(value).__name__)


def _iso_datetime(value: object) -> str:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())
    else:
        raise TypeError(type(value).__name__)
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_DATETIME_FORMAT)


# -- Python objects (Parquet lists, SQL rows) ------------------------------------------


def _from_objects(ds: str, col: ListingColumn, values: list[object]) -> NDArray[Any]:
    """Convert Python values (None is null) to the column's array."""
    where = f"column {col.name}"
    n = len(values)
    if col.type.numeric:
        out = np.full(n, np.nan)
        for i, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(
                value, int | float | Decimal | np.integer | np.floating
            ):
                raise SourceError(ds, where, f"row {i + 1}: not a number")
            out[i] = float(value)
        return _checked_numbers(ds, col, out)
    if col.type is ListingColumnType.BOOLEAN:
        obj = np.full(n, None, dtype=object)
        for i, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bool | np.bool_):
                obj[i] = bool(value)
            elif isinstance(value, int) and value in (0, 1):
                obj[i] = value == 1
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                obj[i] = value.strip().lower() in _TRUE
            elif isinstance(value, str) and not value:
                continue
            else:
                raise SourceError(
                    ds, where, f"row {i + 1}: not a boolean (true/false or 1/0)"
                )
        return obj
    obj = np.full(n, None, dtype=object)
    for i, value in enumerate(values):
        if value is None or value == "":
            continue
        if col.type.temporal:
            if not isinstance(value, str | date):
                raise SourceError(ds, where, f"row {i + 1}: not a date or text")
        elif not isinstance(value, str):
            raise SourceError(
                ds,
                where,
                f"row {i + 1}: not text ({type(value).__name__}); the listing says "
                f"{col.type.value}",
            )
        obj[i] = value
    if col.type.temporal:
        return _normalise_temporal(ds, col, obj)
    return obj


# -- Parquet -----------------------------------------------------------------------


def _read_parquet(
    ds: str, path: Path, columns: Sequence[ListingColumn]
) -> dict[str, NDArray[Any]]:
    if not path.is_file():
        raise SourceError(ds, "source.path", f"{path} does not exist")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            ds, "source.path", f"{path} is not a Parquet file ({exc})"
        ) from None
    missing = [c.name for c in columns if c.name not in schema.names]
    if missing:
        raise SourceError(
            ds,
            f"column {missing[0]}",
            f"in the listing's schema but not in the Parquet file {path}",
        )
    try:
        table = pq.read_table(path, columns=[c.name for c in columns])
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(ds, "source.path", f"{path}: cannot read ({exc})") from None
    out: dict[str, NDArray[Any]] = {}
    for col in columns:
        out[col.name] = _from_arrow(ds, col, table.column(col.name))
    return out


def _from_arrow(ds: str, col: ListingColumn, data: pa.ChunkedArray) -> NDArray[Any]:
    kind = data.type
    if pa.types.is_dictionary(kind):
        data = data.cast(kind.value_type)
        kind = data.type
    where = f"column {col.name}"
    if col.type.numeric:
        if (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or (pa.types.is_decimal(kind))
        ):
            values = np.asarray(
                data.cast(pa.float64()).to_numpy(zero_copy_only=False),
                dtype=np.float64,
            )
            return _checked_numbers(ds, col, values.copy())
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _from_text(ds, col, _text_cells(data))
        raise SourceError(
            ds, where, f"is {kind} in the file; the listing says {col.type.value}"
        )
    if col.type is ListingColumnType.BOOLEAN:
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
            return _from_objects(ds, col, data.to_pylist())
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _from_text(ds, col, _text_cells(data))
        raise SourceError(ds, where, f"is {kind} in the file; the listing says boolean")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _from_text(ds, col, _text_cells(data))
    if col.type.temporal and (pa.types.is_date(kind) or pa.types.is_timestamp(kind)):
        return _from_objects(ds, col, data.to_pylist())
    raise SourceError(
        ds, where, f"is {kind} in the file; the listing says {col.type.value}"
    )


def _text_cells(data: pa.ChunkedArray) -> NDArray[Any]:
    return np.asarray(["" if v is None else v for v in data.to_pylist()], dtype=object)


# -- SQL ---------------------------------------------------------------------------


def _read_sql(
    ds: str, source: SqlSource, columns: Sequence[ListingColumn]
) -> dict[str, NDArray[Any]]:
    from sqlalchemy import Executable, column, create_engine, select, table
    from sqlalchemy.exc import SQLAlchemyError

    schema_name, _, table_name = source.table.rpartition(".")
    target = table(table_name, schema=schema_name or None)
    query: Executable = select(*(column(c.name) for c in columns)).select_from(target)
    try:
        engine = create_engine(source.url.get_secret_value())
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SourceError(
            ds, "source.url", f"cannot use {source.display_url()} ({exc})"
        ) from None
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise SourceError(
            ds,
            "source.table",
            f"cannot read {source.table} from {source.display_url()} ({reason})",
        ) from None
    finally:
        engine.dispose()
    out: dict[str, NDArray[Any]] = {}
    for j, col in enumerate(columns):
        out[col.name] = _from_objects(ds, col, [row[j] for row in rows])
    return out


def _canonical_value(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return value


def _canonical_hash(
    columns: Sequence[ListingColumn], arrays: Mapping[str, NDArray[Any]]
) -> tuple[str, int]:
    """SHA-256 and length of the canonical serialisation (module docstring)."""
    names = [c.name for c in columns]
    n = arrays[names[0]].shape[0] if names else 0
    lists = [arrays[name].tolist() for name in names]
    lines = sorted(
        json.dumps(
            [_canonical_value(values[i]) for values in lists],
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode()
        for i in range(n)
    )
    header = json.dumps(names, separators=(",", ":")).encode()
    blob = b"\n".join([header, *lines])
    return hashlib.sha256(blob).hexdigest(), len(blob)

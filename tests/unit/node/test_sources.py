"""Sources: CSV (sample data), Parquet (pyarrow), SQL (SQLite) against a schema."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mpc_engine.aggregate import AggregateRequest, run_aggregate
from mpc_engine.node import SourceError, load_dataset
from mpc_engine.node.config import DatasetConfig
from mpc_engine.node.listing import ListingColumn
from mpc_engine.policy import RightsPolicy
from tests.unit.node.factories import (
    CREDIT,
    LOYALTY,
    credit_policy,
    listing_columns,
    sample,
    write_sample,
)

SCHEMA = [
    ListingColumn(name="pid", type="string", sensitivity="identifier"),
    ListingColumn(name="age", type="integer", sensitivity="quasi_identifier"),
    ListingColumn(name="income", type="float", sensitivity="sensitive", nullable=True),
    ListingColumn(name="smoker", type="boolean", sensitivity="sensitive"),
    ListingColumn(name="region", type="categorical", sensitivity="public"),
    ListingColumn(name="seen", type="date", sensitivity="quasi_identifier"),
    ListingColumn(name="at", type="datetime", sensitivity="public", nullable=True),
]

ROWS = [
    ("p1", 34, 52000.5, True, "north", "2024-01-05", "2024-01-05T10:00:00Z"),
    ("p2", 51, None, False, "south", "2023-12-31", None),
    ("p3", 29, 31000.0, False, "north", "2024-02-29", "2024-02-29T23:59:59+01:00"),
]


def _config(source: dict[str, object], **extra: object) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {"dataset_id": str(uuid.uuid4()), "source": source, **extra}
    )


def _csv(rows: list[tuple[object, ...]] = ROWS) -> str:
    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    head = ",".join(c.name for c in SCHEMA)
    return "\n".join([head, *(",".join(cell(v) for v in r) for r in rows)]) + "\n"


def _check_small(ds: object) -> None:
    from mpc_engine.node.sources import LoadedDataset

    assert isinstance(ds, LoadedDataset)
    assert ds.row_count == 3
    cols = ds.columns
    assert cols["age"].dtype == np.float64 and cols["age"].tolist() == [34, 51, 29]
    assert np.isnan(cols["income"][1]) and cols["income"][0] == 52000.5
    assert cols["smoker"].tolist() == [True, False, False]
    assert cols["region"].tolist() == ["north", "south", "north"]
    assert cols["seen"].tolist() == ["2024-01-05", "2023-12-31", "2024-02-29"]
    # ISO UTC text; an offset is converted, a null stays null.
    assert cols["at"].tolist() == [
        "2024-01-05T10:00:00Z",
        None,
        "2024-02-29T22:59:59Z",
    ]
    assert ds.column_types["income"] == "float"


def test_csv_from_the_samples_hashes_like_write_csv(tmp_path: Path) -> None:
    for title in (CREDIT, LOYALTY):
        s = sample(title)
        path, digest = write_sample(s, tmp_path)
        ds = load_dataset(
            _config({"kind": "csv", "path": str(path)}), listing_columns(s)
        )
        assert ds.content_hash == digest
        assert ds.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
        assert ds.row_count == s.rows
        assert ds.byte_size == path.stat().st_size
        assert ds.modified_at is not None
        assert ds.table.n_rows == s.rows


def test_a_loaded_table_runs_aggregates(tmp_path: Path) -> None:
    s = sample(CREDIT)
    path, _ = write_sample(s, tmp_path)
    ds = load_dataset(_config({"kind": "csv", "path": str(path)}), listing_columns(s))
    request = AggregateRequest(statistics=["count", "mean"], columns=["age_years"])
    result = run_aggregate(request, ds.table, credit_policy())
    ages = ds.columns["age_years"]
    assert result.groups[0].count == s.rows
    assert result.groups[0].mean["age_years"] == pytest.approx(float(ages.mean()))


def test_csv_small_schema(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(_csv())
    ds = load_dataset(_config({"kind": "csv", "path": str(path)}), SCHEMA)
    _check_small(ds)


def _parquet_table() -> pa.Table:
    return pa.table(
        {
            "pid": ["p1", "p2", "p3"],
            "age": pa.array([34, 51, 29], type=pa.int32()),
            "income": [52000.5, None, 31000.0],
            "smoker": [True, False, False],
            "region": pa.array(["north", "south", "north"]).dictionary_encode(),
            "seen": [date(2024, 1, 5), date(2023, 12, 31), date(2024, 2, 29)],
            "at": pa.array(
                [
                    datetime(2024, 1, 5, 10, tzinfo=UTC),
                    None,
                    datetime(2024, 2, 29, 22, 59, 59, tzinfo=UTC),
                ],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "ignored": [1, 2, 3],  # not in the listing: never loaded
        }
    )


def test_parquet_written_with_pyarrow(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(_parquet_table(), path)
    ds = load_dataset(_config({"kind": "parquet", "path": str(path)}), SCHEMA)
    _check_small(ds)
    assert "ignored" not in ds.columns
    assert ds.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def _sqlite(path: Path, rows: list[tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE people (pid TEXT, age INTEGER, income REAL, smoker INTEGER, "
        "region TEXT, seen TEXT, at TEXT, extra TEXT)"
    )
    conn.executemany(
        "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, 'x')",
        [(*r[:3], None if r[3] is None else int(bool(r[3])), *r[4:]) for r in rows],
    )
    conn.commit()
    conn.close()


def test_sql_table_in_sqlite_with_an_order_free_hash(tmp_path: Path) -> None:
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    _sqlite(first, ROWS)
    _sqlite(second, list(reversed(ROWS)))
    loaded = [
        load_dataset(
            _config({"kind": "sql", "url": f"sqlite:///{db}", "table": "people"}),
            SCHEMA,
        )
        for db in (first, second)
    ]
    _check_small(loaded[0])
    assert loaded[0].modified_at is None
    assert loaded[0].content_hash == loaded[1].content_hash  # row order is no content
    assert loaded[0].byte_size > 0
    changed = [ROWS[0], ROWS[1], (*ROWS[2][:1], 30, *ROWS[2][2:])]
    third = tmp_path / "c.db"
    _sqlite(third, changed)
    other = load_dataset(
        _config({"kind": "sql", "url": f"sqlite:///{third}", "table": "people"}),
        SCHEMA,
    )
    assert other.content_hash != loaded[0].content_hash


@pytest.mark.parametrize(
    ("row_change", "field", "reason"),
    [
        ({1: "34.5"}, "column age", "row 1: not a whole number"),
        ({1: "abc"}, "column age", "row 1: not a number"),
        ({2: "nan"}, "column income", "row 1: not a number"),
        ({2: "inf"}, "column income", "not a finite number"),
        ({3: "yes"}, "column smoker", "row 1: not a boolean"),
        ({5: "05/01/2024"}, "column seen", "row 1: not a date"),
        ({6: "tomorrow"}, "column at", "row 1: not a date-time"),
        ({1: ""}, "column age", "1 null value(s), but the listing says it is not"),
    ],
)
def test_csv_mismatches_name_column_and_row_never_the_value(
    tmp_path: Path, row_change: dict[int, str], field: str, reason: str
) -> None:
    row = list(_csv().splitlines()[1].split(","))
    for i, value in row_change.items():
        row[i] = value
    lines = _csv().splitlines()
    lines[1] = ",".join(row)
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as err:
        load_dataset(_config({"kind": "csv", "path": str(path)}), SCHEMA)
    assert err.value.field == field
    assert reason in err.value.reason
    # The message names the dataset by its random id, whose hex may contain a
    # planted value (``abc``) by chance: only the rest of the message counts.
    message = str(err.value).replace(err.value.dataset, "")
    for value in row_change.values():
        if value:
            assert value not in message


def test_structural_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent.csv"
    with pytest.raises(SourceError, match="does not exist"):
        load_dataset(_config({"kind": "csv", "path": str(missing)}), SCHEMA)
    path = tmp_path / "d.csv"
    path.write_text(_csv().replace("region", "area", 1))
    with pytest.raises(SourceError) as err:
        load_dataset(_config({"kind": "csv", "path": str(path)}), SCHEMA)
    assert err.value.field == "column region" and "not in the CSV header" in str(
        err.value
    )
    path.write_text(_csv() + "p4,1,2\n")
    with pytest.raises(SourceError, match="not well-formed CSV"):
        load_dataset(_config({"kind": "csv", "path": str(path)}), SCHEMA)
    path.write_text(_csv())
    with pytest.raises(SourceError) as err:
        load_dataset(
            _config({"kind": "csv", "path": str(path)}, categories={"colour": ["red"]}),
            SCHEMA,
        )
    assert err.value.field == "categories.colour"
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"pid": ["a"], "age": ["x"]}), parquet)
    with pytest.raises(SourceError) as err:
        load_dataset(_config({"kind": "parquet", "path": str(parquet)}), SCHEMA)
    assert err.value.field == "column income"
    fractional = _parquet_table().set_column(
        1, "age", pa.array([34.0, 51.5, 29.0], type=pa.float64())
    )
    pq.write_table(fractional, parquet)
    with pytest.raises(SourceError) as err:
        load_dataset(_config({"kind": "parquet", "path": str(parquet)}), SCHEMA)
    assert err.value.field == "column age" and "row 2: not a whole number" in str(
        err.value
    )
    db = tmp_path / "e.db"
    _sqlite(db, ROWS)
    with pytest.raises(SourceError) as err:
        load_dataset(
            _config({"kind": "sql", "url": f"sqlite:///{db}", "table": "nobody"}),
            SCHEMA,
        )
    assert err.value.field == "source.table" and "nobody" in str(err.value)


def test_declared_categories_reach_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(_csv())
    ds = load_dataset(
        _config(
            {"kind": "csv", "path": str(path)},
            categories={"region": ["north", "south", "east"]},
        ),
        SCHEMA,
    )
    assert ds.table.specs["region"].domain == ("north", "south", "east")
    policy = RightsPolicy.model_validate(
        {
            "permitted_kinds": ["aggregate"],
            "permitted_columns": ["region"],
            "purposes": ["research"],
            "regions": ["DE"],
            "min_group_size": 2,
            "budget_per_buyer": {"epsilon": 1, "delta": 0},
            "budget_per_dataset": {"epsilon": 1, "delta": 0},
        }
    )
    request = AggregateRequest.model_validate(
        {
            "statistics": ["count"],
            "group_by": ["region"],
            "mode": "dp",
            "dp": {"epsilon": 1.0},
        }
    )
    keys = [g.key for g in run_aggregate(request, ds.table, policy).groups]
    assert keys == [("north",), ("south",), ("east",)]

"""The sample catalog of ``veilx demo``: valid listings and deterministic data."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from datetime import date, datetime
from importlib import resources
from pathlib import Path

import pytest

from marketplace.models import ColumnType, DatasetCreate
from marketplace.samples import (
    BernoulliGen,
    SampleDataset,
    generate_rows,
    load_catalog,
    write_csv,
)
from mpc_engine.policy import (
    ColumnInfo,
    ComputationKind,
    Sensitivity,
    check_against_schema,
)

CATALOG = load_catalog()
SAMPLES = CATALOG.datasets
IDS = [s.title.split(" - ")[0].lower().replace(" ", "-") for s in SAMPLES]


@pytest.fixture(scope="module")
def generated() -> dict[str, list[dict[str, object]]]:
    """Rows of every sample, generated once per module."""
    return {s.title: generate_rows(s) for s in SAMPLES}


def test_catalog_shape() -> None:
    assert len(CATALOG.providers) == 2
    assert len(SAMPLES) >= 5
    keys = {p.key for p in CATALOG.providers}
    assert len(keys) == len(CATALOG.providers)
    assert {s.provider for s in SAMPLES} == keys
    for provider in CATALOG.providers:
        assert CATALOG.provider(provider.key) is provider
        assert CATALOG.datasets_of(provider.key)
        assert provider.website.startswith("https://")


def test_raw_bodies_validate_as_dataset_create() -> None:
    package = resources.files("marketplace.samples")
    text = package.joinpath("catalog.json").read_text("utf-8")
    raw = json.loads(text)
    assert len(raw["datasets"]) == len(SAMPLES)
    for entry, sample in zip(raw["datasets"], SAMPLES, strict=True):
        body = DatasetCreate.model_validate(entry["dataset"])
        assert body == sample.body
        assert 2000 <= entry["rows"] <= 20000


def test_catalog_mixes_pricing_kinds_computation_kinds_and_licenses() -> None:
    pricing = {s.body.pricing_plan.kind for s in SAMPLES}
    assert pricing == {
        "fixed_per_query",
        "subscription",
        "metered",
        "privacy_priced",
        "volume_tiered",
    }
    kinds = {k for s in SAMPLES for k in s.body.policy.permitted_kinds}
    assert kinds == set(ComputationKind)
    assert len({s.body.license for s in SAMPLES}) >= 2
    assert len({t for s in SAMPLES for t in s.body.themes}) >= 3


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_body_is_complete(sample: SampleDataset) -> None:
    body = sample.body
    policy = body.policy
    assert DatasetCreate.model_validate(body.model_dump()) == body
    assert policy.purposes and policy.prohibitions and policy.regions
    assert policy.min_group_size >= 2
    assert policy.budget_per_buyer.epsilon <= policy.budget_per_dataset.epsilon
    assert policy.budget_per_buyer.delta <= policy.budget_per_dataset.delta
    assert policy.expires_at is not None
    assert policy.expires_at.utcoffset() is not None
    assert policy.expires_at.year >= 2028
    assert all(k == k.lower() for k in body.keywords)
    assert body.temporal_start is not None and body.temporal_end is not None
    if ComputationKind.PSI in policy.permitted_kinds:
        assert policy.join_keys
    if ComputationKind.ENCRYPTED_INFERENCE in policy.permitted_kinds:
        assert policy.inference_row_budget is not None


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_policy_fits_schema(sample: SampleDataset) -> None:
    columns = [
        ColumnInfo(c.name, c.type.numeric, c.sensitivity) for c in sample.body.columns
    ]
    assert check_against_schema(sample.body.policy, columns) == []
    identifiers = {
        c.name for c in sample.body.columns if c.sensitivity is Sensitivity.IDENTIFIER
    }
    assert identifiers.isdisjoint(sample.body.policy.permitted_columns)
    assert set(sample.body.policy.join_keys) <= identifiers


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_row_count_and_columns(
    sample: SampleDataset, generated: dict[str, list[dict[str, object]]]
) -> None:
    rows = generated[sample.title]
    assert len(rows) == sample.rows
    names = sample.column_names
    assert all(list(row) == names for row in rows)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_values_follow_types_and_bounds(
    sample: SampleDataset, generated: dict[str, list[dict[str, object]]]
) -> None:
    rows = generated[sample.title]
    bounds = sample.body.policy.column_bounds
    start, end = sample.body.temporal_start, sample.body.temporal_end
    assert start is not None and end is not None
    for col in sample.body.columns:
        values = [row[col.name] for row in rows]
        if not col.nullable:
            assert None not in values, col.name
        present = [v for v in values if v is not None]
        assert present, col.name
        if col.type is ColumnType.INTEGER:
            assert all(type(v) is int for v in present), col.name
        elif col.type is ColumnType.FLOAT:
            assert all(type(v) is float for v in present), col.name
        elif col.type is ColumnType.BOOLEAN:
            assert all(type(v) is bool for v in present), col.name
            assert len(set(present)) == 2, col.name
        elif col.type is ColumnType.DATE:
            assert all(type(v) is date for v in present), col.name
        elif col.type is ColumnType.DATETIME:
            stamps = [v for v in present if isinstance(v, datetime)]
            assert len(stamps) == len(present), col.name
            assert all(v.utcoffset() is not None for v in stamps), col.name
            assert all(start <= v.date() <= end for v in stamps), col.name
        else:
            assert all(isinstance(v, str) and v for v in present), col.name
        if col.name in sample.categories:
            assert set(present) <= set(sample.categories[col.name]), col.name
        if col.type.numeric and col.name in bounds:
            b = bounds[col.name]
            numbers = [v for v in present if isinstance(v, int | float)]
            assert all(b.lower <= v <= b.upper for v in numbers), col.name
            assert len(set(numbers)) > 1, col.name


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_dates_lie_in_coverage_unless_overridden(
    sample: SampleDataset, generated: dict[str, list[dict[str, object]]]
) -> None:
    for col in sample.body.columns:
        if col.type is not ColumnType.DATE or col.name in sample.generators:
            continue
        values = [row[col.name] for row in generated[sample.title]]
        assert all(
            isinstance(v, date)
            and sample.body.temporal_start is not None
            and sample.body.temporal_end is not None
            and sample.body.temporal_start <= v <= sample.body.temporal_end
            for v in values
        ), col.name


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_identifiers_are_unique(
    sample: SampleDataset, generated: dict[str, list[dict[str, object]]]
) -> None:
    rows = generated[sample.title]
    for col in sample.body.columns:
        if col.sensitivity is Sensitivity.IDENTIFIER:
            values = [row[col.name] for row in rows]
            assert len(set(values)) == len(values), col.name


def test_psi_join_key_is_an_email() -> None:
    psi = [s for s in SAMPLES if ComputationKind.PSI in s.body.policy.permitted_kinds]
    assert psi
    for sample in psi:
        rows = generate_rows(sample)
        for key in sample.body.policy.join_keys:
            values = [r[key] for r in rows]
            assert all(
                isinstance(v, str) and v.endswith("@example.org") for v in values
            )


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_csv_is_deterministic(sample: SampleDataset, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    hash_a = write_csv(sample, first)
    hash_b = write_csv(sample, second)
    data = first.read_bytes()
    assert hash_a == hash_b == hashlib.sha256(data).hexdigest()
    assert data == second.read_bytes()
    assert b"\r" not in data
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == ""
    assert lines[0] == ",".join(sample.column_names)
    assert len(lines) == sample.rows + 2
    with first.open(newline="", encoding="utf-8") as handle:
        parsed = list(csv.reader(handle))
    assert len(parsed) == sample.rows + 1
    assert all(len(r) == len(sample.column_names) for r in parsed)


def test_another_seed_gives_other_content(tmp_path: Path) -> None:
    sample = SAMPLES[0]
    other = dataclasses.replace(sample, seed=sample.seed + 1)
    assert write_csv(sample, tmp_path / "a.csv") != write_csv(other, tmp_path / "b.csv")


def test_loading_twice_gives_equal_catalogs() -> None:
    again = load_catalog()
    assert again.providers == CATALOG.providers
    assert [s.body for s in again.datasets] == [s.body for s in SAMPLES]


def test_generators_must_fit_their_columns() -> None:
    sample = SAMPLES[0]
    numeric = next(c.name for c in sample.body.columns if c.type.numeric)
    wrong = dataclasses.replace(
        sample, generators={**sample.generators, numeric: BernoulliGen(p=0.5)}
    )
    with pytest.raises(ValueError, match="boolean column"):
        generate_rows(wrong)
    unknown = dataclasses.replace(
        sample, generators={**sample.generators, "no_such_column": BernoulliGen(p=0.5)}
    )
    with pytest.raises(ValueError, match="no such column"):
        generate_rows(unknown)

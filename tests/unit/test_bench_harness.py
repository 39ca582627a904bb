"""The benchmark harness: result JSON shape, merging into latest.json, selection."""

from __future__ import annotations

import json
import math
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from bench import harness
from bench._loadgen import summarise
from bench.harness import (
    CORE_FIELDS,
    Benchmark,
    Result,
    load_results,
    merge_results,
    resolve,
    write_results,
)


def result(name: str, value: float = 1.0, **extras: Any) -> Result:
    return Result(
        name=name,
        value=value,
        unit="req/s",
        baseline_name=None,
        baseline_value=None,
        ratio=None,
        goal="a goal",
        met=True,
        params={"k": 1},
        extras=extras,
    )


def test_json_entry_has_core_fields_then_extras_as_top_level_keys() -> None:
    r = result("a.b", 2.5, p50_ms=1.5, p99_ms=float("nan"))
    entry = r.to_json()
    assert list(entry) == [*CORE_FIELDS, "p50_ms", "p99_ms"]
    assert entry["value"] == 2.5
    assert entry["p50_ms"] == 1.5
    assert entry["p99_ms"] is None  # NaN is not JSON
    assert "extras" not in entry
    json.dumps(entry, allow_nan=False)


def test_core_field_set_is_exactly_the_documented_one() -> None:
    assert set(CORE_FIELDS) == {
        "name",
        "value",
        "unit",
        "baseline_name",
        "baseline_value",
        "ratio",
        "goal",
        "met",
        "params",
    }


def test_round_trip_through_json() -> None:
    r = result("x", 3.0, p99_ms=4.0)
    assert Result.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_extras_may_not_shadow_core_fields() -> None:
    with pytest.raises(ValueError, match="core field"):
        result("x", value_extra=1, **{"met": False})


def test_merge_replaces_by_name_in_place_keeps_others_appends_new() -> None:
    existing: list[dict[str, Any]] = [
        {"name": "other.one", "value": 1},
        {"name": "catalog.search", "value": 10},
        {"name": "other.two", "value": 2},
        {"name": "catalog.search", "value": 11},  # a stale duplicate
        {"no_name": True},
    ]
    merged = merge_results(
        existing, [result("catalog.search", 20.0), result("catalog.search.text", 5.0)]
    )
    names = [e.get("name") for e in merged]
    assert names == [
        "other.one",
        "catalog.search",
        "other.two",
        None,
        "catalog.search.text",
    ]
    assert merged[1]["value"] == 20.0
    assert merged[0] == {"name": "other.one", "value": 1}


def test_merge_with_nothing_new_keeps_everything() -> None:
    existing = [{"name": "a", "value": 1}]
    assert merge_results(existing, []) == existing


def test_write_merges_into_existing_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "results" / "latest.json"
    write_results([result("a", 1.0), result("b", 2.0)], path)
    write_results([result("b", 3.0, p50_ms=1.0)], path)
    data = json.loads(path.read_text())
    assert isinstance(data, list)
    assert [(e["name"], e["value"]) for e in data] == [("a", 1.0), ("b", 3.0)]
    assert data[1]["p50_ms"] == 1.0
    for entry in data:
        assert set(CORE_FIELDS) <= set(entry)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latest.json"
    write_results([result("a", 1.0)], path)
    before = path.read_text()

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("bench.harness.json.dump", boom)
    with pytest.raises(OSError, match="disk full"):
        write_results([result("a", 2.0)], path)
    assert path.read_text() == before
    assert list(tmp_path.iterdir()) == [path]


def test_load_refuses_a_file_that_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    assert load_results(path) == []
    path.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="not a JSON list"):
        load_results(path)


REG = (
    Benchmark("catalog_search", ("catalog.search",), "search"),
    Benchmark("ledger_append", ("ledger.append",), "ledger"),
)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ["catalog_search", "ledger_append"]),
        (["catalog_search"], ["catalog_search"]),
        (["catalog.search"], ["catalog_search"]),
        (["catalog"], ["catalog_search"]),
        (["catalog.search.text"], ["catalog_search"]),
        (["ledger.append", "catalog_search"], ["catalog_search", "ledger_append"]),
    ],
)
def test_resolve_by_module_or_entry_prefix(
    names: list[str], expected: list[str]
) -> None:
    assert [b.module for b in resolve(names, REG)] == expected


@pytest.mark.parametrize("name", ["nope", "catalog.searching", "catalog_"])
def test_resolve_rejects_unknown_names(name: str) -> None:
    with pytest.raises(KeyError):
        resolve([name], REG)


def test_registry_modules_exist_and_expose_run() -> None:
    for bench in harness.REGISTRY:
        assert callable(bench.load())


def test_summarise_percentiles_nearest_rank() -> None:
    stats = summarise([i * 1_000_000 for i in range(1, 101)], errors=2, seconds=2.0)
    assert stats["count"] == 100
    assert stats["throughput"] == 50.0
    assert stats["p50_ms"] == 50.0
    assert stats["p99_ms"] == 99.0
    assert stats["max_ms"] == 100.0
    assert stats["errors"] == 2
    assert math.isnan(summarise([], 0, 1.0)["p50_ms"])


def test_query_mix_is_valid_search_requests() -> None:
    from bench.catalog_search import MIX, SEARCH, build_plans
    from marketplace.services.search import SearchService, SortOrder

    provider = "3f1c2f0e-6a8a-4c55-9a3e-2b1f0c9d8e7a"
    plans, mix = build_plans([provider], n=500)
    assert len(plans) == 500
    assert mix["plan_shares"] == MIX
    assert {p["kind"] for p in plans} <= {*MIX, "text1", "text2", "browse"}
    assert any(p.get("then_page2") for p in plans)
    for p in plans:
        url = urllib.parse.urlsplit(p["path"])
        assert url.path == SEARCH
        qs = urllib.parse.parse_qs(url.query)
        sort = qs.get("sort", [None])[0]
        SearchService.parse(  # raises on an invalid request
            q=qs.get("q", [None])[0],
            theme=qs.get("theme", []),
            license=qs.get("license", []),
            kind=qs.get("kind", []),
            provider=qs.get("provider", []),
            price=qs.get("price", []),
            currency=qs.get("currency", []),
            price_min=None,
            price_max=None,
            sort=SortOrder(sort) if sort else None,
            limit=20,
            cursor=None,
            facets=True,
        )

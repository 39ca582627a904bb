"""The ``ledger.merkle`` benchmark at tiny sizes: result structure and checks."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bench import ledger_merkle
from bench.harness import CORE_FIELDS, REGISTRY, Result, resolve

SETTINGS = ledger_merkle.Settings(
    sizes=(100, 1_000), proofs=50, repeats=1, min_seconds=0.0
)


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {r.name: r for r in ledger_merkle.run(SETTINGS)}


def test_registry_lists_the_merkle_benchmark() -> None:
    assert {b.module: b for b in REGISTRY}["ledger_merkle"].entries == (
        "ledger.merkle",
    )
    assert [b.module for b in resolve(["ledger.merkle.build"])] == ["ledger_merkle"]


def test_entries_baseline_and_checks(results: dict[str, Result]) -> None:
    assert set(results) == {
        "ledger.merkle.build",
        "ledger.merkle.build.sha256",
        "ledger.merkle.proof",
        "ledger.merkle.verify",
    }
    for name, r in results.items():
        entry = r.to_json()
        assert list(entry)[: len(CORE_FIELDS)] == list(CORE_FIELDS)
        json.dumps(entry, allow_nan=False)
        assert r.value > 0, name
    build, base = results["ledger.merkle.build"], results["ledger.merkle.build.sha256"]
    assert build.baseline_name == base.name and build.baseline_value == base.value
    assert build.ratio == pytest.approx(build.value / base.value)
    assert build.unit == "leaves/s"
    x = build.extras
    assert x["checks_passed"] is True
    assert x["root_matches_eth_hash"] and x["sampled_proofs_verify"]
    assert x["flipped_leaf_fails"]
    assert x["leaves_per_s_1e3"] == build.value and x["leaves_per_s_1e2"] > 0
    assert not build.met  # the goal is stated at 10⁶ leaves
    assert results["ledger.merkle.proof"].extras["proof_length"] == 10  # 2·1000 − 1
    assert results["ledger.merkle.verify"].extras["leaf_hashes_per_s"] > 0


def test_sha256_baseline_builds_the_same_shape() -> None:
    leaves = ledger_merkle.make_leaves(5, np.random.default_rng(1))
    assert len(leaves) == 5 and all(len(x) == 32 for x in leaves)
    a, b = sorted(leaves[:2])
    assert ledger_merkle.sha256_pairs(leaves[:2]) == [hashlib.sha256(a + b).digest()]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILX_BENCH_MERKLE_LEAVES", "1e6, 1e5,1e6")
    assert ledger_merkle.Settings.from_env().sizes == (100_000, 1_000_000)
    monkeypatch.setenv("VEILX_BENCH_MERKLE_LEAVES", "lots")
    with pytest.raises(ValueError, match="VEILX_BENCH_MERKLE_LEAVES"):
        ledger_merkle.Settings.from_env()

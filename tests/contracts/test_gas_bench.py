"""The ``ledger_gas`` benchmark at small sizes: gas figures are internally consistent.

Gas is deterministic, so these are exact assertions about the measured figures, not
timings.
"""

from __future__ import annotations

import json

import pytest

from bench import ledger_gas
from bench.harness import CORE_FIELDS, REGISTRY, Result, resolve
from bench.ledger_gas import GasReport, Settings, TxGas

SETTINGS = Settings(batch_sizes=(10, 100, 200), receipt_counts=(100, 1_000))


@pytest.fixture(scope="module")
def report() -> GasReport:
    return ledger_gas.measure_gas(SETTINGS)


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {r.name: r for r in ledger_gas.run(SETTINGS)}


def _all_txs(report: GasReport) -> list[TxGas]:
    return [
        report.erc20_transfer,
        report.update_asset,
        *report.single.values(),
        *report.single_escrow.values(),
        *report.batched.values(),
        *report.batched_escrow.values(),
        *report.hashes_only.values(),
        *report.receipts.values(),
        *report.register.values(),
    ]


def test_checks_pass(report: GasReport) -> None:
    assert report.checks == {
        "prague": True,
        "update_bumped_once": True,
        "floor_le_gas": True,
        "gas_is_max_of_floor_and_unfloored": True,
    }


def test_floor_is_the_eip7623_formula_and_a_lower_bound(report: GasReport) -> None:
    for t in _all_txs(report):
        assert t.calldata_bytes <= t.tokens <= 4 * t.calldata_bytes
        assert t.floor == 21_000 + 10 * t.tokens
        assert t.floor <= t.gas
        if t.unfloored is not None:
            assert t.gas == max(t.floor, t.unfloored)
            # Without the floor, calldata costs 4 gas per token, not 10.
            assert t.unfloored >= 21_000 + 4 * t.tokens


def test_per_trade_gas_decreases_with_batch_size(report: GasReport) -> None:
    sizes = sorted(report.batched)
    for escrow in (False, True):
        per_trade = [report.per_trade(n, escrow=escrow) for n in sizes]
        assert per_trade == sorted(per_trade, reverse=True)
        assert len(set(per_trade)) == len(per_trade)
    # Random 32-byte hashes: the floor alone is ≥ 1,280 gas per trade (128 tokens).
    for n in sizes:
        assert report.batched[n].floor / n > 1_280
    # A batch of 100 costs far less per trade than one recordTrade, and the
    # escrow's transferFrom can only add gas.
    assert report.per_trade(100) < report.single[1].gas / 10
    for n in sizes:
        assert report.batched_escrow[n].gas >= report.batched[n].gas


def test_totals_cost_is_per_batch_not_per_trade(report: GasReport) -> None:
    for n in report.batched:
        bare = report.hashes_only[n]
        assert bare.gas <= report.batched[n].gas
        assert report.totals_gas(n) > 0
    # The same five totals cost the same whatever the number of hashes (±
    # calldata differences of a few non-zero bytes in the summed amounts).
    costs = [report.totals_gas(n) for n in report.batched]
    assert max(costs) - min(costs) < 1_000


def test_single_trade_gas(report: GasReport) -> None:
    base = report.erc20_transfer.gas
    assert 21_000 < base < report.single[1].gas < report.single[3].gas
    for k in (1, 3):
        assert report.single_escrow[k].gas > report.single[k].gas
        assert report.register[k].gas > report.single[k].gas
    assert report.register[1].gas < report.register[3].gas
    assert 21_000 < report.update_asset.gas < report.register[1].gas


def test_receipt_gas_per_item(report: GasReport) -> None:
    assert report.per_receipt(1_000) <= ledger_gas.RECEIPT_GOAL
    assert report.per_receipt(100) > report.per_receipt(1_000)
    # One anchor costs the same for any count (only the count's calldata differs).
    gas = [t.gas for t in report.receipts.values()]
    assert max(gas) - min(gas) <= 16


def test_entries_baseline_and_goals(
    results: dict[str, Result], report: GasReport
) -> None:
    assert set(results) == {
        "ledger.gas.erc20_transfer",
        "ledger.gas_per_trade.single",
        "ledger.gas_per_trade.batched",
        "ledger.gas_per_receipt",
        "ledger.gas.register",
        "ledger.gas.update_asset",
    }
    base = results["ledger.gas.erc20_transfer"]
    assert base.value == report.erc20_transfer.gas and base.goal == "baseline"
    for name, r in results.items():
        entry = r.to_json()
        assert list(entry)[: len(CORE_FIELDS)] == list(CORE_FIELDS)
        json.dumps(entry, allow_nan=False)
        assert r.value > 0, name
        if r is not base:
            assert r.baseline_name == base.name and r.baseline_value == base.value
            assert r.ratio == pytest.approx(r.value / base.value)
    batched = results["ledger.gas_per_trade.batched"]
    assert batched.value == report.per_trade(100)  # the smallest size ≥ 100
    assert batched.met == all(report.per_trade(n) <= 1_500 for n in (100, 200))
    assert batched.extras["checks_passed"] is True
    assert batched.extras["floor_per_trade_200"] == report.batched[200].floor / 200
    receipt = results["ledger.gas_per_receipt"]
    assert receipt.value == report.per_receipt(1_000) and receipt.met
    assert results["ledger.gas_per_trade.single"].extras["gas_3_payees"] == (
        report.single[3].gas
    )


def test_calldata_tokens_and_floor() -> None:
    assert ledger_gas.calldata_tokens(b"\x00\x01\x00\xff") == 2 + 8
    assert ledger_gas.calldata_floor(b"") == 21_000
    assert ledger_gas.calldata_floor(b"\x01" * 32) == 21_000 + 1_280


def test_registry_lists_the_gas_benchmark() -> None:
    assert {b.module: b for b in REGISTRY}["ledger_gas"].entries == (
        "ledger.gas",
        "ledger.gas_per_trade",
        "ledger.gas_per_receipt",
    )
    assert [b.module for b in resolve(["ledger.gas_per_trade.batched"])] == [
        "ledger_gas"
    ]
    assert [b.module for b in resolve(["ledger.merkle"])] == ["ledger_merkle"]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILX_BENCH_GAS_TRADES", "1e3, 100,100")
    monkeypatch.setenv("VEILX_BENCH_GAS_RECEIPTS", "1e4")
    settings = Settings.from_env()
    assert settings.batch_sizes == (100, 1_000)
    assert settings.receipt_counts == (10_000,)
    monkeypatch.setenv("VEILX_BENCH_GAS_TRADES", "many")
    with pytest.raises(ValueError, match="VEILX_BENCH_GAS_TRADES"):
        Settings.from_env()

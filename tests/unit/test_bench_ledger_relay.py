"""The ``ledger.trades_per_s`` benchmark at tiny sizes: structure and correctness.

600 trades make two batches (500 + 100); SQLite only (PostgreSQL switched off, so
the skip path is exercised too). No timing is asserted.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from bench import ledger_relay
from bench.harness import CORE_FIELDS, REGISTRY, Result, resolve
from marketplace.chain import open_runtime
from marketplace.db import Database
from marketplace.models import LedgerEvent, Trade
from marketplace.services.ledger import trade_hash, trade_record
from marketplace.services.relay import make_relay

TRADES = 600
SETTINGS = ledger_relay.Settings(
    trades=TRADES,
    onchain_trades=TRADES,
    transfers=3,
    repeats=1,
    engines=("sqlite", "postgresql"),
    postgres_url=None,
)
ENTRIES = {
    "ledger.trades_per_s.erc20_transfer",
    "ledger.trades_per_s.update_floor",
    "ledger.trades_per_s.batching",
    "ledger.trades_per_s.onchain",
}


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {r.name: r for r in ledger_relay.run(SETTINGS)}


def test_registry_lists_the_relay_benchmark() -> None:
    bench = {b.module: b for b in REGISTRY}["ledger_relay"]
    assert bench.entries == ("ledger.trades_per_s",)
    assert [b.module for b in resolve(["ledger.trades_per_s.batching"])] == [
        "ledger_relay"
    ]
    assert [b.module for b in resolve(["ledger_relay"])] == ["ledger_relay"]


def test_entries_and_baselines(results: dict[str, Result]) -> None:
    assert set(results) == ENTRIES  # PostgreSQL switched off: no .postgresql
    for name, r in results.items():
        entry = r.to_json()
        assert list(entry)[: len(CORE_FIELDS)] == list(CORE_FIELDS)
        json.dumps(entry, allow_nan=False)
        assert r.value > 0, name
        assert "postgresql" in r.params["skipped"]
    base = results["ledger.trades_per_s.erc20_transfer"]
    assert base.unit == "transfers/s" and base.baseline_name is None
    assert base.extras["transfers"] == 3
    for name in ("ledger.trades_per_s.batching", "ledger.trades_per_s.onchain"):
        r = results[name]
        assert r.unit == "trades/s"
        assert r.baseline_name == base.name and r.baseline_value == base.value
        assert r.ratio == pytest.approx(r.value / base.value)
    floor = results["ledger.trades_per_s.update_floor"]
    batching = results["ledger.trades_per_s.batching"]
    assert floor.unit == "rows/s"
    assert batching.extras["update_floor_rows_per_s"] == floor.value
    assert batching.extras["ratio_vs_update_floor"] == pytest.approx(
        batching.value / floor.value
    )
    assert batching.met == (batching.value >= ledger_relay.BATCHING_GOAL)


def test_every_trade_batched_once_and_relayed(results: dict[str, Result]) -> None:
    batching = results["ledger.trades_per_s.batching"].extras
    assert batching["checks_passed"] is True
    assert batching["batches"] == 2
    for check in (
        "batching_formed_count",
        "all_records_batched",
        "batch_count",
        "batches_full",
        "batched_exactly_once",
        "batch_members_match",
        "batch_totals_match",
    ):
        assert batching[check] is True, check
    onchain = results["ledger.trades_per_s.onchain"]
    x = onchain.extras
    assert onchain.params["trades"] == TRADES
    assert x["checks_passed"] is True and x["batches"] == 2
    for check in (
        "onchain_all_records_confirmed",
        "onchain_batch_count",
        "onchain_batched_exactly_once",
        "onchain_relay_report",
        "onchain_batches_confirmed",
        "onchain_chain_holds_every_trade_once",
        "onchain_verify_ledger_ok",
    ):
        assert x[check] is True, check
    assert x["tx_ms_per_batch"] >= x["sign_ms_per_batch"] > 0


def test_seeded_trades_are_the_recorders_and_batch_exactly_once(
    sqlite_only_db: Database, tmp_path: Path
) -> None:
    """Checked from the database directly, not through the benchmark's checks."""
    db = sqlite_only_db
    settings = ledger_relay.Settings(trades=TRADES, repeats=1)
    app = ledger_relay._app_settings(tmp_path / "data", db, settings)
    runtime = open_runtime(app)
    try:
        world = ledger_relay.seed_world(db, settings)
        seeded = ledger_relay.seed_trades(db, world, TRADES, settings, random.Random(7))
        with db.session() as s:
            trades = {str(t.id): t for t in s.exec(select(Trade)).all()}
            records = s.exec(
                select(LedgerEvent).where(LedgerEvent.kind == "trade.record")
            ).all()
        assert len(trades) == len(records) == TRADES
        assert len({t.dataset_id for t in trades.values()}) == settings.datasets
        for r in records:  # what LedgerRecorder.record_release would have written
            trade = trades[r.subject]
            assert r.status == "pending"
            assert r.payload == {
                "trade": trade_record(trade),
                "trade_hash": trade_hash(trade_record(trade)),
            }
            assert trade.trade_hash == r.payload["trade_hash"]

        relay = make_relay(db, runtime.ledger, app)
        assert relay.form_batches(force=True) == 2
        with db.session() as s:
            records = s.exec(
                select(LedgerEvent).where(LedgerEvent.kind == "trade.record")
            ).all()
            batches = s.exec(
                select(LedgerEvent).where(LedgerEvent.kind == "trades.batch")
            ).all()
        assert all(r.status == "batched" for r in records)
        sizes = Counter(r.batch_id for r in records)
        assert sorted(sizes.values()) == [100, 500]
        assert {b.id for b in batches} == set(sizes)
        listed = [h for b in batches for h in b.payload["trade_hashes"]]
        assert sorted(listed) == sorted(t.trade_hash for t in trades.values())
        checks = ledger_relay.check_batches(db, seeded, 500, status="batched")
        assert all(checks.values()), checks

        with db.engine.begin() as conn:  # a record slips out of its batch
            conn.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.id) == seeded.last_event_id)
                .values(status="pending", batch_id=None)
            )
        checks = ledger_relay.check_batches(db, seeded, 500, status="batched")
        assert not checks["all_records_batched"]
    finally:
        runtime.close()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILX_BENCH_RELAY_TRADES", "2e4")
    monkeypatch.setenv("VEILX_BENCH_RELAY_ONCHAIN", "1000")
    monkeypatch.setenv("VEILX_BENCH_POSTGRES_URL", "off")
    s = ledger_relay.Settings.from_env()
    assert (s.trades, s.onchain_trades, s.postgres_url) == (20_000, 1_000, None)
    monkeypatch.setenv("VEILX_BENCH_RELAY_TRADES", "lots")
    with pytest.raises(ValueError, match="VEILX_BENCH_RELAY_TRADES"):
        ledger_relay.Settings.from_env()

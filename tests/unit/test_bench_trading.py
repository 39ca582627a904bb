"""``bench/trading.py`` at a tiny size: it runs, checks its own results, and its
figures are well formed (the numbers themselves are for ``make bench``).
"""

from __future__ import annotations

from bench import trading


def test_the_trading_benchmark_runs_small() -> None:
    results = trading.run(
        trading.Settings(menus=50, orders=4, repeats=1, postgres_url="")
    )
    by_name = {r.name: r for r in results}
    assert set(by_name) == {"trading.quotes_per_s", "trading.orders_per_s.sqlite"}
    menus = by_name["trading.quotes_per_s"]
    assert menus.value > 0 and menus.baseline_value and menus.baseline_value > 0
    assert menus.extras["check_prices_monotone"] is True
    orders = by_name["trading.orders_per_s.sqlite"]
    assert orders.value > 0 and orders.params["orders"] == 4
    assert orders.extras["check_journal_ok"] is True
    assert orders.extras["check_credits_match_holds"] is True

"""The demo's money: quotes, a DP price menu, purchases with credits, settlement.

Before the computations the operator records the buyer's prepaid credits, the
buyer looks at a DP quote menu (ε, expected error, price) and buys an
entitlement on each dataset it will query. After them the buyer closes its
entitlements (the unused credits come back), the operator settles the period,
each provider gets its statement (CSV, written next to the demo's data), and the
journal's invariants are recomputed.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

__all__ = ["DEMO_PURCHASES", "buy_entitlements", "settle_period"]

DEMO_PURCHASES: dict[str, dict[str, Any]] = {
    # two DP means (the second replays, but reserves its ε until then)
    "smart_meter": {"queries": 3, "epsilon": 1.5},
    "inpatient": {"queries": 2, "epsilon": 0.6},
    # two encrypted model evaluations (1 + 4 features compute units each)
    "diabetes": {"queries": 3, "compute_units_per_query": 5},
    # one encrypted inference of 2,000 rows (20 compute units)
    "credit": {"queries": 2, "compute_units_per_query": 20},
}
"""What the buyer buys on each dataset the computations use."""

CREDITS_MINOR = 2_000_000
"""The buyer's prepaid credits (20,000.00 EUR)."""


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


def _call(
    base: str, key: str, method: str, path: str, body: Any = None, **params: Any
) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if method == "POST":
        headers["Idempotency-Key"] = uuid.uuid4().hex
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        r = client.request(method, path, json=body, params=params or None)
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path} failed: {r.status_code} {r.text}")
    if r.headers.get("content-type", "").startswith("text/csv"):
        return r.text
    return r.json() if r.content else None


def buy_entitlements(
    console: Console,
    *,
    base_url: str,
    operator_key: str,
    buyer_key: str,
    buyer_id: str,
    datasets: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Credit the buyer, show a DP menu, and buy what the computations need."""
    console.rule("[bold]trading[/] — quotes, a DP price menu, entitlements")
    balance = _call(
        base_url,
        operator_key,
        "POST",
        f"/v1/organisations/{buyer_id}/credits",
        {"amount_minor": CREDITS_MINOR, "currency": "EUR", "reference": "wire-0001"},
    )
    console.print(
        "the operator records Aurora's bank transfer as prepaid credits: "
        f"{_money(balance['balance_minor'], 'EUR')}"
    )
    hospital = datasets["inpatient"]
    menu = _call(
        base_url,
        buyer_key,
        "POST",
        "/v1/quotes/menu",
        {
            "dataset_id": hospital["id"],
            "sensitivity": 1.0,
            "epsilons": [0.1, 0.25, 0.5, 1.0, 2.0],
        },
    )
    table = Table(
        "ε",
        "expected |error|",
        "95% interval ±",
        "price",
        title=f"{hospital['title']}: one DP count — privacy, accuracy and price "
        f"({hospital['pricing_plan']['kind']})",
    )
    for option in menu["options"]:
        quote = option["quote"]
        table.add_row(
            f"{option['epsilon']:g}",
            f"{option['expected_abs_error']:.1f} rows",
            f"{option['ci95_half_width']:.1f} rows",
            _money(quote["gross_minor"], quote["currency"]),
        )
    console.print(table)
    console.print(
        "a larger ε buys a more accurate answer and never costs less; splitting one "
        "question into smaller-ε ones never costs less either (arbitrage-free)"
    )
    orders = Table(
        "dataset",
        "plan",
        "queries",
        "ε budget",
        "held",
        "fee inside",
        title="Entitlements bought with credits",
    )
    bought: dict[str, Any] = {}
    for name, terms in DEMO_PURCHASES.items():
        ds = datasets[name]
        quote = _call(
            base_url,
            buyer_key,
            "POST",
            "/v1/quotes",
            {"dataset_id": ds["id"], **terms},
        )
        order = _call(
            base_url, buyer_key, "POST", "/v1/orders", {"quote_id": quote["id"]}
        )
        bought[name] = {"quote": quote, "order": order}
        orders.add_row(
            ds["title"][:40],
            quote["plan_kind"],
            str(quote["queries"]),
            f"{quote['epsilon']:g}",
            _money(order["amount_minor"], order["currency"]),
            _money(quote["exchange_fee_minor"], quote["currency"]),
        )
    console.print(orders)
    left = _balances(base_url, buyer_key, "buyer_funds")
    console.print(f"credits left after the holds: {_money(left, 'EUR')}")
    return {"menu": menu, "bought": bought, "credits_after_orders": left}


def _balances(base_url: str, key: str, kind: str) -> int:
    accounts = _call(base_url, key, "GET", "/v1/balances")
    return sum(int(a["balance_minor"]) for a in accounts if a["kind"] == kind)


def settle_period(
    console: Console,
    *,
    base_url: str,
    operator_key: str,
    buyer_key: str,
    regulator_key: str,
    provider_keys: dict[str, str],
    bought: dict[str, Any],
    period_start: datetime,
    out_dir: Path,
) -> dict[str, Any]:
    """Close the entitlements, settle the period, write and show statements."""
    console.rule("[bold]settlement[/] — charged only for what was released")
    table = Table(
        "dataset",
        "jobs released",
        "charged",
        "held",
        "released back",
        title="What the buyer paid",
    )
    for name, item in bought.items():
        ent_id = item["order"]["entitlement_id"]
        ent = _call(base_url, buyer_key, "POST", f"/v1/entitlements/{ent_id}/close")
        held = int(item["order"]["amount_minor"])
        charged = int(ent["amount_captured_minor"])
        table.add_row(
            name,
            str(ent["queries_used"]),
            _money(charged, ent["currency"]),
            _money(held, ent["currency"]),
            _money(held - charged, ent["currency"]),
        )
    console.print(table)
    credits = _balances(base_url, buyer_key, "buyer_funds")
    console.print(f"the buyer's credits after closing: {_money(credits, 'EUR')}")
    period_end = datetime.now(UTC)
    run = _call(
        base_url,
        operator_key,
        "POST",
        "/v1/settlements",
        {
            "period_start": period_start.isoformat(),
            "period_end": period_end.isoformat(),
            "currency": "EUR",
        },
    )
    payouts = Table(
        "payee", "method", "payout", "status", title="Settlement run: payouts"
    )
    names = {
        str(_call(base_url, key, "GET", "/v1/me")["organisation"]["id"]): name
        for name, key in provider_keys.items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    statements: dict[str, str] = {}
    for payout in run["payouts"]:
        payee = payout["payee_id"]
        name = names.get(payee, payee[:8])
        payouts.add_row(
            name,
            payout["method"],
            _money(payout["amount_minor"], payout["currency"]),
            payout["status"],
        )
        key = provider_keys.get(name, regulator_key)
        csv_text = _call(
            base_url,
            key,
            "GET",
            f"/v1/settlements/{run['id']}/statements/{payee}",
            format="csv",
        )
        path = out_dir / f"statement-{name}-{run['id']}.csv"
        path.write_text(csv_text, encoding="utf-8")
        statements[name] = str(path)
    console.print(payouts)
    console.print(
        f"gross {_money(run['gross_minor'], run['currency'])} over "
        f"{run['charges']} charges · exchange fees "
        f"{_money(run['fee_minor'], run['currency'])} · paid out "
        f"{_money(run['payout_minor'], run['currency'])}"
    )
    width = 36
    top = max((p["amount_minor"] for p in run["payouts"]), default=0) or 1
    for payout in run["payouts"]:
        bar = "█" * max(1, math.ceil(width * payout["amount_minor"] / top))
        name = names.get(payout["payee_id"], payout["payee_id"][:8])
        console.print(f"  {name:<12} {bar} {_money(payout['amount_minor'], 'EUR')}")
    for name, where in statements.items():
        console.print(f"statement for {name}: {where}")
    check = _call(base_url, regulator_key, "GET", "/v1/journal/check")
    mark = "[green]✓[/]" if check["ok"] else "[red]✗[/]"
    console.print(
        f"{mark} journal: {check['entries']} balanced entries, balances match "
        "their lines, no account negative"
        if check["ok"]
        else f"{mark} journal check failed: {check}"
    )
    return {
        "run": run,
        "statements": statements,
        "journal": check,
        "credits_after": credits,
    }

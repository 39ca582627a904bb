"""The demo's money: quotes, a DP price menu, purchases, settlement, withdrawals.

Before the computations the operator records the buyer's prepaid credits, the
buyer looks at a DP quote menu (ε, expected error, price) and buys an
entitlement on each dataset it will query: with credits, and one from its own
wallet through the chain's payment escrow (``onchain``: the wallet deposits vEUR,
the order holds part of it on chain). After them the buyer closes its
entitlements (unused credits and the unused hold come back), the operator settles
the period (the onchain payee's share is credited to its wallet in the escrow,
which it withdraws itself), each provider gets its statement (CSV, written next
to the demo's data), and the journal's invariants are recomputed.
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

from ledger import (
    Ledger,
    LocalSigner,
    PaymentEscrow,
    SettlementToken,
    TransactionSender,
)
from marketplace.payments.onchain import sign_wallet_proof

__all__ = [
    "DEMO_PURCHASES",
    "ONCHAIN_DATASET",
    "DemoWallet",
    "buy_entitlements",
    "settle_period",
]

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

ONCHAIN_DATASET = "credit"
"""The dataset the buyer pays for from its wallet (the others with credits)."""

WALLET_DEPOSIT_MINOR = 500_000
"""What the buyer's wallet deposits into the payment escrow (5,000.00 vEUR)."""


class DemoWallet:
    """An organisation's wallet as its own software holds it (the key stays here).

    The key file lives in the organisation's key directory (0600), never on the
    exchange; the exchange learns the address and a signature proving it.
    """

    def __init__(self, ledger: Ledger, key_path: Path) -> None:
        signer = LocalSigner.load_or_create(key_path)
        self._key = key_path.read_text(encoding="utf-8").strip()
        self.address = signer.address
        escrow, token = ledger.escrow, ledger.payment_token
        if escrow is None or token is None:
            raise RuntimeError("the demo chain has no payment escrow")
        sender = TransactionSender(escrow.w3, signer)
        self.escrow = PaymentEscrow(escrow.w3, escrow.address, sender)
        self.token = SettlementToken(token.w3, token.address, sender)
        self._ledger = ledger

    def register(self, base_url: str, api_key: str, org_id: str) -> None:
        """Sign the proof and register the wallet as the organisation's."""
        address, signature = sign_wallet_proof(self._key, uuid.UUID(org_id))
        _call(
            base_url,
            api_key,
            "PUT",
            f"/v1/organisations/{org_id}/wallet",
            {"address": address, "signature": signature},
        )

    def fund_and_deposit(self, amount_minor: int) -> None:
        """Fund the wallet, then deposit from it into the escrow.

        The on-ramp: the operator mints vEUR for fiat received and sends gas; then
        the wallet approves the escrow and deposits.
        """
        operator = self._ledger.sender
        token = self._ledger.payment_token
        if operator is None or token is None:
            raise RuntimeError("the demo ledger is read-only")
        operator.send_ether(self.address, 10**17)
        token.submit_mint(self.address, amount_minor)
        self.token.submit_approve(self.escrow.address, amount_minor)
        self.escrow.submit_deposit(self.address, amount_minor)

    def gas(self) -> None:
        """Gas money for a wallet that only withdraws."""
        if self._ledger.sender is None:
            raise RuntimeError("the demo ledger is read-only")
        self._ledger.sender.send_ether(self.address, 10**17)


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
    ledger: Ledger,
    key_dir: Path,
) -> dict[str, Any]:
    """Credit the buyer, fund its wallet, show a DP menu, buy what jobs need."""
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
    wallet = DemoWallet(ledger, key_dir / "wallet.key")
    wallet.register(base_url, buyer_key, buyer_id)
    wallet.fund_and_deposit(WALLET_DEPOSIT_MINOR)
    console.print(
        f"Aurora's wallet {wallet.address} (registered with its signature) deposits "
        f"{_money(WALLET_DEPOSIT_MINOR, 'vEUR')} into the chain's payment escrow"
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
        "paid by",
        title="Entitlements bought",
    )
    bought: dict[str, Any] = {}
    for name, terms in DEMO_PURCHASES.items():
        ds = datasets[name]
        method = "onchain" if name == ONCHAIN_DATASET else "credits"
        quote = _call(
            base_url,
            buyer_key,
            "POST",
            "/v1/quotes",
            {"dataset_id": ds["id"], "payment_method": method, **terms},
        )
        order = _call(
            base_url, buyer_key, "POST", "/v1/orders", {"quote_id": quote["id"]}
        )
        bought[name] = {"quote": quote, "order": order}
        orders.add_row(
            name,
            quote["plan_kind"],
            str(quote["queries"]),
            f"{quote['epsilon']:g}",
            _money(order["amount_minor"], order["currency"]),
            _money(quote["exchange_fee_minor"], quote["currency"]),
            "wallet (escrow hold)" if method == "onchain" else "credits",
        )
    console.print(orders)
    left = _balances(base_url, buyer_key, "buyer_funds")
    console.print(f"credits left after the holds: {_money(left, 'EUR')}")
    escrow_left = wallet.escrow.get_balance_of(wallet.address)
    console.print(
        f"the wallet's escrow balance beside its hold: {_money(escrow_left, 'vEUR')}"
    )
    return {
        "menu": menu,
        "bought": bought,
        "credits_after_orders": left,
        "wallet": wallet.address,
        "escrow_after_orders": escrow_left,
    }


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
    ledger: Ledger,
    wallet_dir: Path,
    buyer_wallet_dir: Path,
) -> dict[str, Any]:
    """Close the entitlements, settle the period, write and show statements.

    Each provider registers a wallet first (onchain payouts are credited to it in
    the escrow); afterwards every wallet with a balance withdraws it itself.
    """
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
    names = {
        str(_call(base_url, key, "GET", "/v1/me")["organisation"]["id"]): name
        for name, key in provider_keys.items()
    }
    wallets: dict[str, DemoWallet] = {}
    for org_id, name in names.items():
        wallets[org_id] = DemoWallet(ledger, wallet_dir / f"{name}-wallet.key")
        wallets[org_id].register(base_url, provider_keys[name], org_id)
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
        label = f"{name} ({payout['method']})"
        console.print(f"  {label:<21} {bar} {_money(payout['amount_minor'], 'EUR')}")
    for name, where in statements.items():
        console.print(f"statement for {name}: {where}")
    withdrawals = _withdraw(console, ledger, run, wallets, names, buyer_wallet_dir)
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
        "withdrawals": withdrawals,
    }


def _withdraw(
    console: Console,
    ledger: Ledger,
    run: dict[str, Any],
    wallets: dict[str, DemoWallet],
    names: dict[str, str],
    buyer_wallet_dir: Path,
) -> dict[str, int]:
    """Every wallet with an escrow balance pulls it out (pull payments)."""
    table = Table(
        "wallet of", "address", "withdrew", title="Payment escrow: pull withdrawals"
    )
    done: dict[str, int] = {}
    onchain = {p["payee_id"] for p in run["payouts"] if p["method"] == "onchain"}
    holders = [(names[org], wallets[org]) for org in sorted(onchain) if org in wallets]
    holders.append(("Aurora", DemoWallet(ledger, buyer_wallet_dir / "wallet.key")))
    for name, wallet in holders:
        amount = wallet.escrow.get_balance_of(wallet.address)
        if amount == 0:
            continue
        if name != "Aurora":
            wallet.gas()
        wallet.escrow.submit_withdraw()
        done[name] = wallet.token.get_balance_of(wallet.address)
        table.add_row(name, wallet.address, _money(amount, "vEUR"))
    console.print(table)
    escrow = ledger.escrow
    if escrow is not None:
        console.print(
            "left in the escrow: the exchange's onchain fees "
            f"{_money(escrow.get_captured(), 'vEUR')}, open holds "
            f"{_money(escrow.get_held(), 'vEUR')}"
        )
    return done

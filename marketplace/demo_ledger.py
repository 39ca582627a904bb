"""The demo's ledger act: relay, what the chain now holds, a proof, verification.

After the computations, the outbox is relayed to the embedded chain; the console
shows the registered assets, the trade and receipt batches and each provider's
revenue; the buyer proves one of its receipts is anchored, trusting only the
chain; the regulator verifies everything through the API. Once the exchange has
stopped, :func:`verify_after_restart` reopens the chain from disk and runs what
``veilx verify`` runs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from marketplace.chain import LazyChain
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.models import (
    Dataset,
    Job,
    LedgerEvent,
    LedgerEventKind,
    Organisation,
    Trade,
    VerifyReport,
)
from marketplace.services.relay import make_relay
from marketplace.verify_report import print_verify_report, verify_configured
from sdk import Client

__all__ = ["show_ledger", "verify_after_restart"]

K = LedgerEventKind


def _short(value: str, n: int = 10) -> str:
    return value[:n] + "…" if len(value) > n else value


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


def show_ledger(
    console: Console,
    *,
    settings: Settings,
    db: Database,
    chain: LazyChain,
    base_url: str,
    buyer_key: str,
    regulator_key: str,
    key_dir: Path,
) -> VerifyReport:
    """Relay the outbox, show the chain's records, prove a receipt, verify."""
    console.rule("[bold]ledger[/] — ownership, trades and receipts on chain")
    runtime = chain.get()
    with console.status("relaying the outbox to the embedded chain…"):
        report = make_relay(db, runtime.ledger, settings).flush()
    console.print(f"relay: {report}", highlight=False)
    d = runtime.ledger.deployment
    console.print(
        f"chain [bold]{d.network}[/] (id {d.chain_id}): registry {d.registry}, "
        f"settlement {d.settlement}, anchor {d.anchor}",
        highlight=False,
    )
    with db.session() as s:
        batches = s.exec(
            select(LedgerEvent)
            .where(
                col(LedgerEvent.kind).in_(
                    [K.TRADES_BATCH, K.RECEIPTS_BATCH, K.SETTLEMENT_ANCHOR]
                )
            )
            .order_by(col(LedgerEvent.id))
        ).all()
        assets = s.exec(
            select(LedgerEvent).where(
                col(LedgerEvent.kind).in_([K.ASSET_REGISTER.value, K.ASSET_UPDATE])
            )
        ).all()
        trades = s.exec(select(Trade).order_by(col(Trade.created_at))).all()
        orgs = {o.id: o.name for o in s.exec(select(Organisation)).all()}
        datasets = {ds.id: ds for ds in s.exec(select(Dataset)).all()}
        job = s.exec(
            select(Job)
            .where(Job.state == "succeeded")
            .order_by(col(Job.created_at))
            .limit(1)
        ).first()
    table = Table(
        "event", "batch", "records", "amount (fee)", "tx", "block", title="On chain"
    )
    table.add_row(
        "assets registered / updated",
        "—",
        str(len(assets)),
        "—",
        "one transaction each",
        "—",
    )
    for b in batches:
        p = b.payload
        table.add_row(
            {
                K.TRADES_BATCH: "trades recorded",
                K.RECEIPTS_BATCH: "receipts anchored",
                K.SETTLEMENT_ANCHOR: "settlement payouts anchored",
            }[K(b.kind)],
            str(b.id),
            str(p["count"]),
            _money(p["amount"], p["currency"]) + f" ({_money(p['fee'], p['currency'])})"
            if b.kind == K.TRADES_BATCH
            else "root " + _short("0x" + p["root"], 14),
            _short(b.tx_hash or "", 14),
            str(b.block_number),
        )
    console.print(table)

    revenue: dict[str, int] = defaultdict(int)
    currency = "EUR"
    for t in trades:
        ds = datasets[t.dataset_id]
        revenue[orgs[ds.organisation_id]] += t.amount_minor - t.fee_minor
        currency = t.currency
    fees = sum(t.fee_minor for t in trades)
    if revenue:
        top = max(revenue.values()) or 1
        console.print("[bold]Revenue credited on chain[/] (net of the exchange's fee)")
        for name, amount in sorted(revenue.items(), key=lambda kv: -kv[1]):
            bar = "█" * max(1, round(36 * amount / top))
            console.print(f"  {name:<24} {bar} {_money(amount, currency)}")
        console.print(f"  {'exchange fees':<24} {_money(fees, currency)}")

    if job is not None:
        with Client(buyer_key, base_url=base_url, key_dir=key_dir) as buyer:
            proved = buyer.receipts.verify_inclusion(job.id)
        pr = proved.proof
        console.print(
            f"the buyer proves its receipt of job {_short(str(job.id), 8)} is leaf "
            f"{pr.leaf_index} of {pr.count} in batch {pr.anchor.batch_id}, whose root "
            f"{_short(pr.root, 14)} the anchor contract returns on chain "
            f"(tx {_short(pr.anchor.tx_hash, 14)}) [green]✓[/]",
            highlight=False,
        )
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {regulator_key}"},
        timeout=120,
    ) as reg:
        answer = VerifyReport.model_validate(reg.get("/v1/ledger/verify").json())
    mark = "[green]✓[/]" if answer.ok else "[red]✗[/]"
    console.print(f"the regulator's API: {mark} {answer.summary}", highlight=False)
    return answer


def verify_after_restart(console: Console, settings: Settings) -> VerifyReport:
    """Reopen the chain from disk and verify it against the database.

    This is ``veilx verify``: the embedded chain's state survived the exchange's
    shutdown, and every record still matches.
    """
    console.rule("[bold]veilx verify[/] — after the exchange stopped")
    report = verify_configured(settings, console)
    print_verify_report(console, report)
    return report

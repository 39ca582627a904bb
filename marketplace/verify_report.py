"""``veilx verify`` as a function, shared by the CLI and the demo.

It opens the configured database and chain, verifies, and prints the report.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from marketplace.chain import open_runtime
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.models import VerifyReport
from marketplace.services.relay import make_relay
from marketplace.services.verify import verify_ledger

__all__ = ["print_verify_report", "verify_configured"]


def verify_configured(
    settings: Settings, console: Console, *, flush: bool = False
) -> VerifyReport:
    """Verify the database of ``settings`` against its chain; return the report.

    With ``flush`` the outbox is relayed first. Progress goes to ``console``.
    """
    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    runtime = open_runtime(settings)
    try:
        if flush:
            with console.status("relaying the outbox to the chain…"):
                done = make_relay(db, runtime.ledger, settings).flush()
            console.print(f"relayed: {done}", markup=False, highlight=False)
        with (
            console.status("verifying the database against the chain…"),
            db.session() as s,
        ):
            return verify_ledger(s, runtime.ledger)
    finally:
        runtime.close()
        db.dispose()


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def print_verify_report(console: Console, report: VerifyReport) -> None:
    """The verifier's report for people: where, a mismatch table, the verdict."""
    console.print(
        f"{report.network} (chain {report.chain_id}, block {report.head_block}): "
        f"{report.assets} assets, {report.trades} trades in "
        f"{_n(report.trade_batches, 'batch', 'batches')}, {report.receipts} "
        f"receipts in {_n(report.receipt_batches, 'batch', 'batches')}",
        highlight=False,
    )
    if report.mismatches:
        table = Table(title="records that do not match the chain")
        for column in ("kind", "id", "field", "database", "chain", "detail"):
            table.add_column(column, overflow="fold")
        for m in report.mismatches:
            table.add_row(
                m.kind, m.id, m.field or "", m.database or "", m.chain or "", m.detail
            )
        console.print(table)
    mark = "[green]✓[/]" if report.ok else "[red]✗[/]"
    console.print(f"{mark} {report.summary}", highlight=False)

"""``trading.quotes_per_s`` and ``trading.orders_per_s``: pricing and buying.

``trading.quotes_per_s``: DP quote menus priced per second by
:func:`pricing.quote_menu` — five ε choices of one DP mean (Laplace accuracy, fee
and card surcharge) on a privacy-priced plan with exponent 0.8, one core.
Baseline (``trading.quotes_per_s.bare_call``): calls per second of a bare Python
function taking the same arguments and returning them — the floor of any
in-process pricing call. Goal: ≥ 5,000 menus/s (a menu in under 0.2 ms).

``trading.orders_per_s`` (PostgreSQL; ``….sqlite`` beside it): purchases per second
end to end through :class:`marketplace.services.trading.TradingService` — a quote
(dataset visibility, terms, pricing, the stored quote; one transaction) then its
order with credits (idempotency key, the entitlement, the journal entry moving
the buyer's funds into the hold with its two conditional balance updates; one
transaction), buyers spread over listed datasets, one process. Baseline
(``trading.orders_per_s.bare_insert``): single-row ``INSERT`` + ``COMMIT`` per
second into a two-column table on the same database. Goal: ≥ 100 purchases/s on
PostgreSQL. Checks: the journal balances, every balance matches its lines, each
buyer's credits fell by exactly what its orders hold.

Times are the best of ``repeats`` runs, this process pinned to one CPU
(``bench._onecore``; the PostgreSQL server runs unpinned).

Environment: ``VEILX_BENCH_TRADING_MENUS`` (20,000), ``VEILX_BENCH_TRADING_ORDERS``
(400), ``VEILX_BENCH_REPEATS`` (3), ``VEILX_BENCH_POSTGRES_URL``
(``postgresql://postgres@127.0.0.1:5432/test``; empty or ``off`` skips
PostgreSQL), ``VEILX_BENCH_CPU``.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from rich.console import Console

import pricing
from bench._onecore import Timing, measure, one_core
from bench.harness import Result
from bench.ledger_relay import (
    EngineUnavailable,
    engine_version,
    open_database,
    seed_world,
)
from bench.ledger_relay import Settings as RelaySettings
from marketplace.db import Database
from marketplace.models import (
    CreditTopUp,
    OrderCreate,
    OrganisationStatus,
    QuoteRequestBody,
    Role,
)
from marketplace.payments import CreditsProvider
from marketplace.services.identity import Caller
from marketplace.services.journal import check_journal
from marketplace.services.trading import TradingConfig, TradingService

__all__ = ["MENU_GOAL", "ORDER_GOAL", "Settings", "run"]

MENU_GOAL: Final = 5_000.0  # menus/s
ORDER_GOAL: Final = 100.0  # purchases/s on PostgreSQL
EPSILONS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    menus: int = 20_000
    orders: int = 400
    repeats: int = 3
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    cpu: int | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_*``."""
        env = os.environ
        url = env.get("VEILX_BENCH_POSTGRES_URL", cls.postgres_url)
        cpu = env.get("VEILX_BENCH_CPU")
        return cls(
            menus=int(float(env.get("VEILX_BENCH_TRADING_MENUS", "2e4"))),
            orders=int(float(env.get("VEILX_BENCH_TRADING_ORDERS", "400"))),
            repeats=int(env.get("VEILX_BENCH_REPEATS", "3")),
            postgres_url="" if url in ("", "off") else url,
            cpu=int(cpu) if cpu else None,
        )


def _bare(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    return args, kwargs


def _menus(settings: Settings) -> tuple[Timing, Timing, list[Any]]:
    plan = pricing.PrivacyPriced(
        currency="EUR",
        base_price_minor=2_500,
        price_per_epsilon_minor=15_000,
        exponent=0.8,
        reference_epsilon=0.5,
    )
    accuracy = pricing.Accuracy(sensitivity=50.0)
    surcharge = pricing.Surcharge(bps=150, fixed_minor=25)
    now = datetime.now(UTC)
    ttl = timedelta(minutes=15)
    n = settings.menus
    last: list[Any] = []

    def price() -> None:
        for _ in range(n):
            menu = pricing.quote_menu(
                plan,
                accuracy=accuracy,
                epsilons=EPSILONS,
                now=now,
                ttl=ttl,
                fee_bps=1000,
                surcharge=surcharge,
            )
        last[:] = menu

    def bare() -> None:
        for _ in range(n):
            _bare(
                plan,
                accuracy=accuracy,
                epsilons=EPSILONS,
                now=now,
                ttl=ttl,
                fee_bps=1000,
                surcharge=surcharge,
            )

    base = measure(bare, repeats=settings.repeats, warmup=1)
    timing = measure(price, repeats=settings.repeats, warmup=1)
    return timing, base, last


@dataclass(frozen=True)
class OrderReport:
    """One engine's purchase figures."""

    engine: str
    version: str
    orders: int
    timing: Timing
    insert: Timing
    checks: dict[str, bool]

    @property
    def orders_per_s(self) -> float:
        """Quote + order pairs per second (best run)."""
        return self.orders / self.timing.best

    @property
    def inserts_per_s(self) -> float:
        """Single-row insert + commit per second (best run)."""
        return self.orders / self.insert.best


def _caller(org_id: uuid.UUID) -> Caller:
    return Caller(
        organisation_id=org_id,
        organisation_name="bench buyer",
        roles=frozenset({Role.BUYER}),
        status=OrganisationStatus.ADMITTED,
    )


def _orders(db: Database, settings: Settings) -> OrderReport:
    world = seed_world(db, RelaySettings(datasets=20, buyers=8, providers=4))
    config = TradingConfig()
    providers = {"credits": CreditsProvider()}
    funds = 10**12
    with db.session() as session:
        for buyer in world.buyers:
            TradingService(session, config, providers).top_up(
                buyer,
                CreditTopUp(amount_minor=funds, reference=f"bench-{buyer}"),
            )
    held: dict[uuid.UUID, int] = dict.fromkeys(world.buyers, 0)
    n = settings.orders

    def buy() -> None:
        with db.session() as session:
            trading = TradingService(session, config, providers)
            for i in range(n):
                buyer = world.buyers[i % len(world.buyers)]
                ds = world.datasets[i % len(world.datasets)]
                caller = _caller(buyer)
                quote = trading.quote(
                    caller, QuoteRequestBody(dataset_id=ds.id, queries=10)
                )
                order = trading.order(
                    caller, OrderCreate(quote_id=quote.id), secrets.token_hex(12)
                )
                held[buyer] += order.amount_minor

    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE bench_bare "
                "(id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL)"
            )
        )
    counter = iter(range(10**9))

    def insert() -> None:
        with db.engine.connect() as conn:
            stmt = sa.text("INSERT INTO bench_bare (id, v) VALUES (:id, :v)")
            for _ in range(n):
                conn.execute(stmt, {"id": next(counter), "v": "x" * 32})
                conn.commit()

    base = measure(insert, repeats=settings.repeats, warmup=0)
    timing = measure(buy, repeats=settings.repeats, warmup=0)
    with db.session() as session:
        found = check_journal(session)
        balances = TradingService(session, config, providers)
        ok_funds = True
        for buyer, amount in held.items():
            accounts = balances.balances(_caller(buyer))
            left = sum(a.balance_minor for a in accounts if a.kind == "buyer_funds")
            ok_funds &= left == funds - amount
    return OrderReport(
        engine=db.dialect,
        version=engine_version(db),
        orders=n,
        timing=timing,
        insert=base,
        checks={"journal_ok": found.ok, "credits_match_holds": ok_funds},
    )


def run(settings: Settings | None = None) -> list[Result]:
    """Price menus, then buy on each engine."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    results: list[Result] = []
    with one_core(settings.cpu) as pin:
        console.print(f"pinned to CPU {pin.cpu}, load {os.getloadavg()[0]:.2f}")
        timing, base, menu = _menus(settings)
        menus_s = settings.menus / timing.best
        bare_s = settings.menus / base.best
        prices = [o.quote.breakdown.gross_minor for o in menu]
        ok = prices == sorted(prices) and len(menu) == len(EPSILONS)
        results.append(
            Result(
                name="trading.quotes_per_s",
                value=round(menus_s, 1),
                unit="menus/s",
                baseline_name="trading.quotes_per_s.bare_call",
                baseline_value=round(bare_s, 1),
                ratio=round(menus_s / bare_s, 4),
                goal=f">= {MENU_GOAL:,.0f} menus/s (5 options each)",
                met=menus_s >= MENU_GOAL and ok,
                params={"menus": settings.menus, "options": len(EPSILONS)},
                extras={
                    "us_per_menu": round(1e6 / menus_s, 2),
                    "median_menus_per_s": round(settings.menus / timing.median, 1),
                    "check_prices_monotone": ok,
                },
            )
        )
        reports: list[OrderReport] = []
        where = RelaySettings(postgres_url=settings.postgres_url or None)
        for engine in ("postgresql", "sqlite"):
            with tempfile.TemporaryDirectory(prefix="veilx-bench-trading-") as tmp:
                try:
                    with open_database(engine, where, Path(tmp)) as db:
                        reports.append(_orders(db, settings))
                except EngineUnavailable as exc:
                    console.print(f"{engine}: skipped — {exc}")
        console.print(f"pinning: {pin.describe()}")
    for r in reports:
        suffix = "" if r.engine == "postgresql" else f".{r.engine}"
        goal_met = r.orders_per_s >= ORDER_GOAL if r.engine == "postgresql" else True
        results.append(
            Result(
                name=f"trading.orders_per_s{suffix}",
                value=round(r.orders_per_s, 1),
                unit="purchases/s",
                baseline_name=f"trading.orders_per_s.bare_insert{suffix}",
                baseline_value=round(r.inserts_per_s, 1),
                ratio=round(r.orders_per_s / r.inserts_per_s, 4),
                goal=f">= {ORDER_GOAL:,.0f} purchases/s"
                if r.engine == "postgresql"
                else "(reported beside PostgreSQL)",
                met=goal_met and all(r.checks.values()),
                params={"orders": r.orders, "engine": r.version},
                extras={
                    "ms_per_purchase": round(1e3 / r.orders_per_s, 2),
                    "median_purchases_per_s": round(r.orders / r.timing.median, 1),
                    **{f"check_{k}": v for k, v in r.checks.items()},
                },
            )
        )
    return results

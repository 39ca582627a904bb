"""``ledger.trades_per_s``: trades the outbox relay batches, and relays, per second.

Each database engine — a SQLite file and PostgreSQL (a fresh schema, created and
dropped here; skipped with the reason when the server does not answer) — gets an
exchange of its own: a migrated database and a fresh embedded chain in a temporary
data dir (``marketplace.chain.open_runtime``, which deploys the contracts), with the
relay of ``make_relay`` (``trades_per_batch``, default 500).

The outbox is what released jobs leave: the organisations (a few providers and
``buyers`` buyers), one node per provider, ``datasets`` listed datasets (generated
and validated as ``bench._seed`` does, one currency — the relay batches one
currency at a time), registered on chain through ``LedgerRecorder.sync_asset`` and
the relay, then per trade a succeeded ``job`` row, its ``trade`` row and its
``trade.record`` event, built exactly as ``LedgerRecorder.record_release`` builds
them (``trade_record``, ``trade_hash``, ``pricing.fee_bps``, ``org_address``) and bulk
inserted. Receipt events are left out: only trades are measured.

``ledger.trades_per_s.batching`` (SQLite; ``….postgresql``): ``trades`` pending
``trade.record`` events, then ``Relay.form_batches(force=True)`` timed:
trades / time. Goal: ≥ 10,000 trades/s on one core. Between runs the records go
back to pending and the batch events are deleted (untimed; on PostgreSQL followed
by ``VACUUM ANALYZE``, as autovacuum would). Checks: every trade batched exactly
once, ⌈trades / 500⌉ batches of ≤ 500, batch hashes and totals equal the trades'.

``ledger.trades_per_s.onchain`` (``….postgresql``): ``onchain_trades`` pending
trades relayed end to end, ``Relay.flush()`` timed (batching, simulating and
signing, storing, broadcasting — the embedded chain mines on receipt — waiting,
confirming): trades / time, with the per-batch transaction time and its parts.
Checks: every trade confirmed, the chain's ``TradesRecorded`` events hold exactly
the trades' hashes, and ``verify_ledger`` finds no mismatch.

Baselines, measured in the same run:

- ``ledger.trades_per_s.erc20_transfer``: ERC-20 transfers per second on the same
  embedded chain (``test/BenchToken``, deployed with the whole supply to the
  operator; ``transfers`` ``transfer`` calls to an existing holder, each sent with
  ``TransactionSender.send``); the ratios are trades/s ÷ transfers/s. Measured on
  every engine's chain; the entry holds the first one's.
- ``ledger.trades_per_s.update_floor`` (``….postgresql``): one ``UPDATE`` setting
  the status of the same pending rows, committed — the floor of any batching
  (rows/s); reported beside each batching figure as ``ratio_vs_update_floor``.

Times are the best of ``repeats`` runs (median beside it), garbage collection off
while timing, this process pinned to one CPU (``bench._onecore``); the PostgreSQL
server runs in its own processes, unpinned.

Environment: ``VEILX_BENCH_RELAY_TRADES`` (20,000), ``VEILX_BENCH_RELAY_ONCHAIN``
(5,000), ``VEILX_BENCH_RELAY_TRANSFERS`` (200), ``VEILX_BENCH_REPEATS`` (3),
``VEILX_BENCH_POSTGRES_URL`` (``postgresql://postgres@127.0.0.1:5432/test``; empty
or ``off`` skips PostgreSQL), ``VEILX_BENCH_RELAY_PROFILE=1`` (print a cProfile of
one more batching run per engine), ``VEILX_BENCH_CPU`` (default: the last CPU this
process may use).
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from bench import _vocab as vocab
from bench._onecore import Timing, one_core
from bench._seed import Provider, dataset_row, generate, version_row
from bench.harness import Result
from ledger import Ledger
from ledger._artifacts import load_artifact
from marketplace.chain import ChainRuntime, open_runtime
from marketplace.config import Settings as AppSettings
from marketplace.db import Database, make_engine
from marketplace.models import (
    Dataset,
    DatasetVersion,
    Job,
    LedgerEvent,
    LedgerEventKind,
    LedgerEventStatus,
    Node,
    OrganisationCreate,
    OrganisationStatus,
    Role,
    Trade,
    utcnow,
)
from marketplace.services.identity import IdentityService
from marketplace.services.ledger import (
    LedgerRecorder,
    org_address,
    trade_hash,
    trade_record,
)
from marketplace.services.relay import Relay, RelayReport, make_relay
from marketplace.services.verify import verify_ledger
from pricing import fee_bps

__all__ = [
    "BATCHING_GOAL",
    "EngineReport",
    "Settings",
    "World",
    "measure_engine",
    "run",
    "seed_trades",
    "seed_world",
]

BATCHING_GOAL: Final = 10_000.0  # trades accepted into batches per second
DEFAULT_PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
CURRENCY: Final = "EUR"
INSERT_CHUNK: Final = 5_000

_events_t = LedgerEvent.__table__  # type: ignore[attr-defined]
_trades_t = Trade.__table__  # type: ignore[attr-defined]
_jobs_t = Job.__table__  # type: ignore[attr-defined]
_datasets_t = Dataset.__table__  # type: ignore[attr-defined]
_versions_t = DatasetVersion.__table__  # type: ignore[attr-defined]

K = LedgerEventKind
St = LedgerEventStatus


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    trades: int = 20_000
    onchain_trades: int = 5_000
    transfers: int = 200
    trades_per_batch: int = 500
    datasets: int = 6
    providers: int = 3
    buyers: int = 4
    fee_bps: int = 1_000
    repeats: int = 3
    engines: tuple[str, ...] = ("sqlite", "postgresql")
    postgres_url: str | None = DEFAULT_PG_URL
    profile: bool = False
    cpu: int | None = None
    seed: int = 20_262

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_*``."""
        env = os.environ
        pg = env.get("VEILX_BENCH_POSTGRES_URL", DEFAULT_PG_URL).strip()
        cpu = env.get("VEILX_BENCH_CPU")
        return cls(
            trades=_count(env, "VEILX_BENCH_RELAY_TRADES", "20000"),
            onchain_trades=_count(env, "VEILX_BENCH_RELAY_ONCHAIN", "5000"),
            transfers=_count(env, "VEILX_BENCH_RELAY_TRANSFERS", "200"),
            repeats=_count(env, "VEILX_BENCH_REPEATS", "3"),
            postgres_url=None if pg.lower() in ("", "off", "none") else pg,
            profile=env.get("VEILX_BENCH_RELAY_PROFILE", "") not in ("", "0"),
            cpu=int(cpu) if cpu else None,
        )


def _count(env: Any, key: str, default: str) -> int:
    raw = env.get(key, default)
    try:
        value = int(float(raw))
    except ValueError as exc:
        raise ValueError(f"{key}: {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{key}: {raw!r} (must be ≥ 1)")
    return value


class EngineUnavailable(RuntimeError):
    """The database engine cannot be used here (the reason is the message)."""


# -- the databases ---------------------------------------------------------------------


@contextmanager
def open_database(engine: str, settings: Settings, workdir: Path) -> Iterator[Database]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema.

    Raises
    ------
    EngineUnavailable
        PostgreSQL is switched off or does not answer.
    """
    if engine == "sqlite":
        db = Database.from_url(f"sqlite:///{workdir / 'exchange.db'}")
        try:
            db.upgrade()
            yield db
        finally:
            db.dispose()
        return
    if engine != "postgresql":
        raise ValueError(f"unknown engine {engine!r}")
    url = settings.postgres_url
    if not url:
        raise EngineUnavailable("switched off (VEILX_BENCH_POSTGRES_URL is empty)")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        raise EngineUnavailable(f"{url} does not answer: {exc}".strip()) from exc
    schema = f"veilx_bench_relay_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url, pool_size=1)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = (
            sa.make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        db = Database.from_url(scoped)
        try:
            db.upgrade()
            yield db
        finally:
            db.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def engine_version(db: Database) -> str:
    """``SQLite 3.x`` or ``PostgreSQL 16.x``."""
    if db.dialect == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with db.engine.connect() as conn:
        version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    return f"PostgreSQL {version.split()[0]}"


def _maintain(db: Database) -> None:
    """On PostgreSQL, what autovacuum does after a bulk change (SQLite: nothing)."""
    if db.dialect != "postgresql":
        return
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("ledger_event", "trade", "job"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


# -- the exchange's rows -------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """A listed dataset a trade can be on."""

    id: uuid.UUID
    version_id: uuid.UUID
    node_id: uuid.UUID
    price_minor: int
    content_hash: str
    policy_hash: str


@dataclass(frozen=True)
class World:
    """The rows trades hang on: buyers and listed datasets."""

    buyers: tuple[uuid.UUID, ...]
    datasets: tuple[Listed, ...]


def seed_world(db: Database, settings: Settings) -> World:
    """Organisations, nodes and listed datasets; the datasets owe their registration.

    The datasets are generated and validated as :mod:`bench._seed` does (``EUR``,
    a positive reference price), their ``asset.register`` events written by
    :meth:`LedgerRecorder.sync_asset`.
    """
    tag = secrets.token_hex(3)
    themes = list(vocab.THEMES)
    with db.session() as session:
        identity = IdentityService(session)

        def org(name: str, role: Role) -> uuid.UUID:
            created = identity.create_organisation(
                OrganisationCreate(name=name, country="DE", roles=[role]),
                status=OrganisationStatus.ADMITTED,
            )
            return created.id

        providers = [
            Provider(
                org(f"Relay Provider {i} {tag}", Role.PROVIDER),
                f"Relay Provider {i} {tag}",
                (themes[i % len(themes)],),
            )
            for i in range(settings.providers)
        ]
        buyers = tuple(
            org(f"Relay Buyer {i} {tag}", Role.BUYER) for i in range(settings.buyers)
        )
    nodes = {p.id: uuid.uuid4() for p in providers}
    with db.session() as session:
        for p in providers:
            session.add(
                Node(
                    id=nodes[p.id],
                    organisation_id=p.id,
                    name=f"node of {p.name}",
                    public_key=secrets.token_hex(32),
                )
            )
        session.commit()
    picked = [
        item
        for item in generate(settings.datasets * 20, providers, now=utcnow())
        if item.body.pricing_plan.currency == CURRENCY
        and item.reference_price_minor > 0
    ][: settings.datasets]
    if len(picked) < settings.datasets:
        raise RuntimeError(f"generated only {len(picked)} {CURRENCY} listings")
    with db.engine.begin() as conn:
        conn.execute(sa.insert(_datasets_t), [dataset_row(i) for i in picked])
        conn.execute(sa.insert(_versions_t), [version_row(i) for i in picked])
    with db.session() as session:
        recorder = LedgerRecorder(session)
        for item in picked:
            ds = session.get(Dataset, item.id)
            assert ds is not None
            recorder.sync_asset(ds)
        session.commit()
    datasets = tuple(
        Listed(
            id=i.id,
            version_id=i.version_id,
            node_id=nodes[i.provider.id],
            price_minor=i.reference_price_minor,
            content_hash=i.content_hash,
            policy_hash=i.template.policy_hash,
        )
        for i in picked
    )
    return World(buyers, datasets)


@dataclass(frozen=True)
class Seeded:
    """Trades written by :func:`seed_trades`."""

    first_event_id: int
    last_event_id: int
    hashes: tuple[str, ...]
    amount: int
    fee: int
    seconds: float


def seed_trades(
    db: Database, world: World, n: int, settings: Settings, rng: random.Random
) -> Seeded:
    """``n`` released jobs: their ``job`` and ``trade`` rows and pending events.

    Each trade is built as :meth:`LedgerRecorder.record_release` builds it (priced
    at the listing's reference price, the fee inside it) and bulk inserted, ids
    rising with time as on a live exchange.
    """
    started = time.perf_counter()
    addresses = {b: org_address(b) for b in world.buyers}
    jobs: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    hashes: list[str] = []
    amount = fee = 0
    for _ in range(n):
        ds = rng.choice(world.datasets)
        buyer = rng.choice(world.buyers)
        now = utcnow()
        job_id = uuid.uuid4()
        jobs.append(
            {
                "id": job_id,
                "dataset_id": ds.id,
                "dataset_version_id": ds.version_id,
                "buyer_id": buyer,
                "node_id": ds.node_id,
                "kind": "aggregate",
                "purpose": "research",
                "params": {"statistics": ["count"], "group_by": ["region"]},
                "inputs": {},
                "context_id": None,
                "content_hash": ds.content_hash,
                "policy_hash": ds.policy_hash,
                "buyer_region": "DE",
                "state": "succeeded",
                "created_at": now,
                "updated_at": now,
                "deadline": now + timedelta(hours=1),
                "output_blobs": {},
            }
        )
        trade = Trade(
            job_id=job_id,
            dataset_id=ds.id,
            buyer_id=buyer,
            buyer_address=addresses[buyer],
            amount_minor=ds.price_minor,
            fee_minor=fee_bps(ds.price_minor, settings.fee_bps),
            currency=CURRENCY,
            trade_hash="",
            created_at=now,
        )
        record = trade_record(trade)
        trade.trade_hash = trade_hash(record)
        trades.append({c.name: getattr(trade, c.name) for c in _trades_t.columns})
        events.append(
            {
                "kind": K.TRADE_RECORD.value,
                "subject": str(trade.id),
                "payload": {"trade": record, "trade_hash": trade.trade_hash},
                "status": St.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        hashes.append(trade.trade_hash)
        amount += trade.amount_minor
        fee += trade.fee_minor
    with db.engine.begin() as conn:
        before = conn.execute(sa.select(sa.func.max(_events_t.c.id))).scalar() or 0
        for rows, table in ((jobs, _jobs_t), (trades, _trades_t), (events, _events_t)):
            for i in range(0, len(rows), INSERT_CHUNK):
                conn.execute(sa.insert(table), rows[i : i + INSERT_CHUNK])
        last = conn.execute(sa.select(sa.func.max(_events_t.c.id))).scalar_one()
    _maintain(db)
    return Seeded(
        before + 1, last, tuple(hashes), amount, fee, time.perf_counter() - started
    )


# -- timing ---------------------------------------------------------------------------


def _timed_runs(
    fn: Callable[[], Any], reset: Callable[[], None], repeats: int
) -> tuple[Timing, list[Any]]:
    """``repeats`` × (``reset`` untimed, then ``fn`` timed with gc off)."""
    runs: list[float] = []
    answers: list[Any] = []
    for _ in range(max(repeats, 1)):
        reset()
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            answers.append(fn())
            runs.append(time.perf_counter() - start)
        finally:
            if enabled:
                gc.enable()
    return Timing(tuple(runs)), answers


@contextmanager
def _spans(relay: Relay) -> Iterator[dict[str, list[float]]]:
    """Time the relay's batching and deliveries and its sender's steps."""
    spans: dict[str, list[float]] = defaultdict(list)
    sender = relay.ledger.sender
    assert sender is not None
    patched: list[tuple[object, str]] = []

    def wrap(obj: object, name: str, key: str) -> None:
        original = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spans[key].append(time.perf_counter() - start)

        setattr(obj, name, timed)  # on the instance: the class stays untouched
        patched.append((obj, name))

    wrap(relay, "form_batches", "form")
    wrap(relay, "_deliver", "deliver")
    wrap(sender, "sign", "sign")
    wrap(sender, "broadcast", "broadcast")
    wrap(sender, "wait", "wait")
    try:
        yield spans
    finally:
        for obj, name in patched:
            delattr(obj, name)


# -- one engine -----------------------------------------------------------------------


@dataclass
class EngineReport:
    """Everything measured on one database engine (and its chain)."""

    engine: str
    version: str
    transfers: int
    transfer: Timing  # one run per transfer
    onchain_trades: int
    onchain_seconds: float
    onchain_report: RelayReport
    onchain_spans: dict[str, list[float]]
    trades: int
    batching: Timing
    batches: int
    update_floor: Timing
    seed_seconds: float
    chain_open_seconds: float
    checks: dict[str, bool] = field(default_factory=dict)
    profile: str | None = None

    @property
    def transfers_per_s(self) -> float:
        """ERC-20 transfers per second on this engine's chain."""
        return self.transfers / sum(self.transfer.runs)

    @property
    def batching_per_s(self) -> float:
        """Trades accepted into batches per second (best run)."""
        return self.trades / self.batching.best

    @property
    def update_per_s(self) -> float:
        """Rows per second of the bare status ``UPDATE`` (best run)."""
        return self.trades / self.update_floor.best

    @property
    def onchain_per_s(self) -> float:
        """Trades relayed to the chain end to end per second."""
        return self.onchain_trades / self.onchain_seconds


def _app_settings(data_dir: Path, db: Database, settings: Settings) -> AppSettings:
    return AppSettings(
        environment="development",
        data_dir=data_dir,
        database_url=db.engine.url.render_as_string(hide_password=False),
        chain_url=None,
        chain_confirmations=0,
        exchange_fee_bps=settings.fee_bps,
        ledger_trades_per_batch=settings.trades_per_batch,
    )


def _erc20_transfers(ledger: Ledger, n: int) -> Timing:
    """Deploy ``test/BenchToken`` and time ``n`` transfers to an existing holder."""
    sender = ledger.sender
    assert sender is not None
    w3 = sender.w3
    art = load_artifact("test/BenchToken")
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = sender.send(factory.constructor(10**30))
    assert receipt.contract_address is not None
    token = w3.eth.contract(
        address=w3.to_checksum_address(receipt.contract_address), abi=art.abi
    )
    holder = org_address(uuid.uuid4())
    sender.send(token.functions.transfer(holder, 10**18))  # now a holder
    runs: list[float] = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(n):
            fn = token.functions.transfer(holder, 1_000 + i)
            start = time.perf_counter()
            sender.send(fn)
            runs.append(time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    balance = int(token.functions.balanceOf(holder).call())
    if balance != 10**18 + sum(1_000 + i for i in range(n)):
        raise RuntimeError(f"ERC-20 baseline: holder balance {balance} is wrong")
    return Timing(tuple(runs))


def _batch_rows(
    db: Database, first: int
) -> tuple[list[LedgerEvent], list[LedgerEvent]]:
    with db.session() as session:
        records = list(
            session.exec(
                select(LedgerEvent)
                .where(LedgerEvent.kind == K.TRADE_RECORD.value)
                .where(col(LedgerEvent.id) >= first)
                .order_by(col(LedgerEvent.id))
            ).all()
        )
        batches = list(
            session.exec(
                select(LedgerEvent)
                .where(LedgerEvent.kind == K.TRADES_BATCH.value)
                .where(col(LedgerEvent.id) >= first)
                .order_by(col(LedgerEvent.id))
            ).all()
        )
    return records, batches


def check_batches(
    db: Database, seeded: Seeded, per_batch: int, *, status: str
) -> dict[str, bool]:
    """Every seeded trade in exactly one batch whose hashes and totals are its own."""
    records, batches = _batch_rows(db, seeded.first_event_id)
    n = len(seeded.hashes)
    members: dict[int, list[LedgerEvent]] = defaultdict(list)
    for r in records:
        if r.batch_id is not None:
            members[r.batch_id].append(r)
    listed = [h for b in batches for h in b.payload["trade_hashes"]]
    return {
        "all_records_" + status: len(records) == n
        and all(r.status == status and r.batch_id is not None for r in records),
        "batch_count": len(batches) == math.ceil(n / per_batch),
        "batches_full": all(len(members[b.id]) <= per_batch for b in batches)  # type: ignore[index]
        and all(
            len(members[b.id]) == per_batch  # type: ignore[index]
            for b in batches[:-1]
        ),
        "batched_exactly_once": len(listed) == n and set(listed) == set(seeded.hashes),
        "batch_members_match": all(
            b.payload["trade_hashes"]
            == [m.payload["trade_hash"] for m in members[b.id]]  # type: ignore[index]
            and b.payload["count"] == len(members[b.id])  # type: ignore[index]
            for b in batches
        ),
        "batch_totals_match": sum(b.payload["amount"] for b in batches) == seeded.amount
        and sum(b.payload["fee"] for b in batches) == seeded.fee,
    }


def _reset_batching(db: Database, first: int) -> Callable[[], None]:
    """Put the seeded records back to pending and drop the batches formed of them."""

    def reset() -> None:
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(_events_t)
                .where(_events_t.c.kind == K.TRADE_RECORD.value)
                .where(_events_t.c.id >= first)
                .values(status=St.PENDING.value, batch_id=None)
            )
            conn.execute(
                sa.delete(_events_t)
                .where(_events_t.c.kind == K.TRADES_BATCH.value)
                .where(_events_t.c.id >= first)
            )
        _maintain(db)

    return reset


def _update_floor(db: Database, first: int, n: int, repeats: int) -> Timing:
    """One committed ``UPDATE`` of the ``n`` pending records' status, timed."""
    reset = _reset_batching(db, first)

    def update() -> int:
        with db.engine.begin() as conn:
            done = conn.execute(
                sa.update(_events_t)
                .where(_events_t.c.kind == K.TRADE_RECORD.value)
                .where(_events_t.c.status == St.PENDING.value)
                .values(status=St.BATCHED.value, updated_at=utcnow())
            ).rowcount
        return int(done)

    timing, counts = _timed_runs(update, reset, repeats)
    if any(c != n for c in counts):
        raise RuntimeError(f"the floor UPDATE changed {counts} rows, not {n}")
    return timing


def _profile(relay: Relay, reset: Callable[[], None]) -> str:
    reset()
    profiler = cProfile.Profile()
    profiler.enable()
    relay.form_batches(force=True)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def _onchain_checks(
    db: Database, ledger: Ledger, seeded: Seeded, report: RelayReport, per: int
) -> dict[str, bool]:
    batches = math.ceil(len(seeded.hashes) / per)
    checks = check_batches(db, seeded, per, status=St.CONFIRMED.value)
    _, rows = _batch_rows(db, seeded.first_event_id)
    on_chain = {
        e.batch_id: e
        for e in ledger.settlement.get_trade_batches(ledger.deployment.block_number)
    }
    chain_hashes = [
        h.hex() for b in rows if b.id in on_chain for h in on_chain[b.id].trade_hashes
    ]
    with db.session() as session:
        verified = verify_ledger(session, ledger)
    checks |= {
        "relay_report": report.batches_formed == batches
        and report.sent == batches
        and report.confirmed == batches
        and report.failed == 0,
        "batches_confirmed": all(
            b.status == St.CONFIRMED.value and b.tx_hash for b in rows
        ),
        "chain_holds_every_trade_once": len(chain_hashes) == len(seeded.hashes)
        and set(chain_hashes) == set(seeded.hashes),
        "verify_ledger_ok": verified.ok and verified.trades >= len(seeded.hashes),
    }
    return checks


def measure_engine(
    engine: str, settings: Settings, console: Console
) -> EngineReport | None:
    """Measure one engine; ``None`` (reason printed) when it is unavailable."""
    rng = random.Random(settings.seed)
    with (
        tempfile.TemporaryDirectory(prefix="veilx-bench-relay-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        try:
            db = stack.enter_context(open_database(engine, settings, workdir))
        except EngineUnavailable as exc:
            console.print(f"[yellow]{engine}: skipped — {exc}[/]")
            return None
        return _measure(engine, db, workdir, settings, rng)


def _measure(
    engine: str,
    db: Database,
    workdir: Path,
    settings: Settings,
    rng: random.Random,
) -> EngineReport:
    version = engine_version(db)
    app = _app_settings(workdir / "data", db, settings)
    started = time.perf_counter()
    runtime: ChainRuntime = open_runtime(app)
    chain_open = time.perf_counter() - started
    try:
        ledger = runtime.ledger
        relay = make_relay(db, ledger, app)
        per = relay.trades_per_batch
        transfer = _erc20_transfers(ledger, settings.transfers)

        world = seed_world(db, settings)
        registered = relay.flush()  # the datasets' registrations, untimed
        if registered.confirmed != settings.datasets or registered.failed:
            raise RuntimeError(f"asset registration failed: {registered}")

        owed = seed_trades(db, world, settings.onchain_trades, settings, rng)
        gc.collect()
        gc.disable()
        try:
            with _spans(relay) as spans:
                start = time.perf_counter()
                report = relay.flush()
                onchain_seconds = time.perf_counter() - start
        finally:
            gc.enable()
        checks = {
            f"onchain_{k}": v
            for k, v in _onchain_checks(db, ledger, owed, report, per).items()
        }

        pending = seed_trades(db, world, settings.trades, settings, rng)
        reset = _reset_batching(db, pending.first_event_id)
        floor = _update_floor(
            db, pending.first_event_id, settings.trades, settings.repeats
        )
        batching, formed = _timed_runs(
            lambda: relay.form_batches(force=True), reset, settings.repeats
        )
        expected = math.ceil(settings.trades / per)
        checks["batching_formed_count"] = all(f == expected for f in formed)
        checks |= check_batches(db, pending, per, status=St.BATCHED.value)
        profile = _profile(relay, reset) if settings.profile else None
    finally:
        runtime.close()
    return EngineReport(
        engine=engine,
        version=version,
        transfers=settings.transfers,
        transfer=transfer,
        onchain_trades=settings.onchain_trades,
        onchain_seconds=onchain_seconds,
        onchain_report=report,
        onchain_spans=dict(spans),
        trades=settings.trades,
        batching=batching,
        batches=expected,
        update_floor=floor,
        seed_seconds=owed.seconds + pending.seconds,
        chain_open_seconds=chain_open,
        checks=checks,
        profile=profile,
    )


# -- output ---------------------------------------------------------------------------


def _ms(values: list[float]) -> float:
    return 1000 * statistics.fmean(values) if values else float("nan")


def _span_extras(r: EngineReport) -> dict[str, Any]:
    s = r.onchain_spans
    deliver = s.get("deliver", [])
    parts = {k: _ms(s.get(k, [])) for k in ("sign", "broadcast", "wait")}
    other = _ms(deliver) - sum(parts.values()) if deliver else float("nan")
    return {
        "batches": len(deliver),
        "tx_ms_per_batch": _ms(deliver),
        "tx_ms_per_batch_max": 1000 * max(deliver) if deliver else None,
        "sign_ms_per_batch": parts["sign"],
        "broadcast_mine_ms_per_batch": parts["broadcast"],
        "wait_ms_per_batch": parts["wait"],
        "db_and_checks_ms_per_batch": other,
        "form_batches_ms": 1000 * sum(s.get("form", [])),
        "erc20_tx_ms": 1000 * statistics.fmean(r.transfer.runs),
        "tx_ms_per_batch_over_erc20_tx_ms": _ms(deliver)
        / (1000 * statistics.fmean(r.transfer.runs)),
    }


def _print_engines(console: Console, reports: list[EngineReport]) -> None:
    batching = Table(
        title="batching: Relay.form_batches(force=True)", title_justify="left"
    )
    for h in (
        "engine",
        "trades",
        "batches",
        "trades/s best",
        "median",
        "ms/batch",
        "UPDATE floor rows/s",
        "÷ floor",
        "checks",
    ):
        batching.add_column(h, justify="right")
    onchain = Table(
        title="on chain: Relay.flush() (per-batch tx = sign + mine + wait + other)",
        title_justify="left",
    )
    for h in (
        "engine",
        "trades",
        "batches",
        "trades/s",
        "ms/batch tx",
        "sign",
        "mine",
        "wait",
        "other",
        "ms/ERC-20 tx",
        "ERC-20 tx/s",
        "checks",
    ):
        onchain.add_column(h, justify="right")
    for r in reports:
        x = _span_extras(r)
        ok = "ok" if all(r.checks.values()) else "FAILED"
        batching.add_row(
            r.version,
            f"{r.trades:,}",
            str(r.batches),
            f"{r.batching_per_s:,.0f}",
            f"{r.trades / r.batching.median:,.0f}",
            f"{1000 * r.batching.best / r.batches:,.1f}",
            f"{r.update_per_s:,.0f}",
            f"{r.batching_per_s / r.update_per_s:.3f}",
            ok,
        )
        onchain.add_row(
            r.version,
            f"{r.onchain_trades:,}",
            str(x["batches"]),
            f"{r.onchain_per_s:,.0f}",
            *(
                f"{x[k]:,.1f}"
                for k in (
                    "tx_ms_per_batch",
                    "sign_ms_per_batch",
                    "broadcast_mine_ms_per_batch",
                    "wait_ms_per_batch",
                    "db_and_checks_ms_per_batch",
                    "erc20_tx_ms",
                )
            ),
            f"{r.transfers_per_s:,.1f}",
            ok,
        )
    console.print(batching)
    console.print(onchain)


def _suffix(engine: str) -> str:
    return "" if engine == "sqlite" else f".{engine}"


def run(settings: Settings | None = None) -> list[Result]:
    """Measure every engine on one core and return the entries."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    load = os.getloadavg()[0]
    reports: list[EngineReport] = []
    skipped: dict[str, str] = {}
    with one_core(settings.cpu) as pin:
        console.print(
            f"pinned to CPU {pin.cpu}, load average {load:.2f}; {settings.trades:,} "
            f"trades to batch, {settings.onchain_trades:,} to relay, "
            f"{settings.trades_per_batch} per batch, {settings.transfers} ERC-20 "
            "transfers"
        )
        for engine in settings.engines:
            report = measure_engine(engine, settings, console)
            if report is None:
                skipped[engine] = "unavailable (see the printed reason)"
                continue
            reports.append(report)
            console.print(
                f"{engine}: seeded {settings.trades + settings.onchain_trades:,} "
                f"trades in {report.seed_seconds:.1f} s; chain opened (deployed) in "
                f"{report.chain_open_seconds:.1f} s"
            )
        pinning = pin.describe()
    if not reports:
        raise RuntimeError("no database engine could be measured")
    _print_engines(console, reports)
    for r in reports:
        failed = [k for k, v in r.checks.items() if not v]
        if failed:
            console.print(f"[red]{r.engine}: checks failed: {', '.join(failed)}[/]")
        if r.profile:
            console.print(f"[bold]cProfile of form_batches on {r.engine}[/]")
            console.print(r.profile, markup=False, highlight=False)

    first = reports[0]
    base_name = "ledger.trades_per_s.erc20_transfer"
    base = first.transfers_per_s
    params: dict[str, Any] = {
        "trades": settings.trades,
        "onchain_trades": settings.onchain_trades,
        "trades_per_batch": settings.trades_per_batch,
        "datasets": settings.datasets,
        "buyers": settings.buyers,
        "currency": CURRENCY,
        "chain": "embedded py-evm (marketplace.chain.open_runtime), 0 confirmations",
        "timing": f"best of {settings.repeats} runs, gc off",
        **pinning,
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(load, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if skipped:
        params["skipped"] = skipped
    results = [
        Result(
            name=base_name,
            value=base,
            unit="transfers/s",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline",
            met=True,
            params={**params, "engine_chain": first.engine},
            extras={
                "transfers": settings.transfers,
                "ms_per_transfer": 1000 * statistics.fmean(first.transfer.runs),
                "ms_per_transfer_best": 1000 * first.transfer.best,
                "via": "TransactionSender.send (simulate, sign, send, wait)",
            }
            | {f"transfers_per_s_{r.engine}_chain": r.transfers_per_s for r in reports},
        )
    ]
    for r in reports:
        ok = all(r.checks.values())
        sfx = _suffix(r.engine)
        eparams = {**params, "engine": r.version}
        floor_name = f"ledger.trades_per_s.update_floor{sfx}"
        results.append(
            Result(
                name=floor_name,
                value=r.update_per_s,
                unit="rows/s",
                baseline_name=None,
                baseline_value=None,
                ratio=None,
                goal="baseline (one UPDATE of the same rows' status, committed)",
                met=True,
                params=eparams,
                extras={
                    "seconds": r.update_floor.best,
                    "median_rows_per_s": r.trades / r.update_floor.median,
                },
            )
        )
        results.append(
            Result(
                name=f"ledger.trades_per_s.batching{sfx}",
                value=r.batching_per_s,
                unit="trades/s",
                baseline_name=base_name,
                baseline_value=base,
                ratio=r.batching_per_s / base,
                goal=f"≥ {BATCHING_GOAL:,.0f} trades/s on one core",
                met=r.batching_per_s >= BATCHING_GOAL and ok,
                params=eparams,
                extras={
                    "seconds": r.batching.best,
                    "median_trades_per_s": r.trades / r.batching.median,
                    "runs": r.batching.count,
                    "batches": r.batches,
                    "ms_per_batch": 1000 * r.batching.best / r.batches,
                    "update_floor_rows_per_s": r.update_per_s,
                    "ratio_vs_update_floor": r.batching_per_s / r.update_per_s,
                    "erc20_transfers_per_s_same_chain": r.transfers_per_s,
                    **{
                        k: v
                        for k, v in r.checks.items()
                        if not k.startswith("onchain_")
                    },
                    "checks_passed": ok,
                },
            )
        )
        results.append(
            Result(
                name=f"ledger.trades_per_s.onchain{sfx}",
                value=r.onchain_per_s,
                unit="trades/s",
                baseline_name=base_name,
                baseline_value=base,
                ratio=r.onchain_per_s / base,
                goal="none (reported)",
                met=ok,
                params={**eparams, "trades": r.onchain_trades},
                extras={
                    "seconds": r.onchain_seconds,
                    **_span_extras(r),
                    "erc20_transfers_per_s_same_chain": r.transfers_per_s,
                    **{k: v for k, v in r.checks.items() if k.startswith("onchain_")},
                    "checks_passed": ok,
                },
            )
        )
    return results

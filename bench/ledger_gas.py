"""``ledger.gas*``: gas of the ledger contracts on the in-process EVM (Prague).

Every figure is the ``gasUsed`` of a mined transaction on eth-tester's py-evm chain
(the one ``tests/contracts`` use), with the contracts from ``contracts/artifacts``.
Gas is deterministic, so these are exact numbers, not timings: the same artifacts,
seed and sizes give the same figures on any machine.

Baseline (``ledger.gas.erc20_transfer``): an OpenZeppelin ERC-20 ``transfer`` to a
holder that already has a balance, the sender keeping one (``test/BenchToken``) —
the cheapest useful state-changing transaction, and what a payment costs anyway.

All measurements are in the steady state: the trade's payees already hold credits,
the contract's totals are non-zero, so a trade costs what the thousandth does, not
the first (a first credit to a payee costs ≈ 17k more, zero to non-zero storage).
The settlement contract records only (no settlement token) unless marked *escrow*:
then each transaction also pulls the amount from the operator (an ERC-20
``transferFrom``).

``ledger.gas_per_trade.single``: ``Settlement.recordTrade`` (new random 32-byte
trade id) on an asset with 1 payee (the value) and with 3 payees.

``ledger.gas_per_trade.batched``: ``Settlement.recordTrades`` gas / trade with
``n`` random 32-byte trade hashes per transaction and totals for ``assets``
distinct assets (1–3 payees each), at each ``n`` of ``VEILX_BENCH_GAS_TRADES``.
Goal: ≤ 1,500 gas/trade at every ``n`` ≥ 100. Explained by EIP-7623's calldata
floor: a transaction pays at least ``21,000 + 10 × tokens``, tokens = zero bytes +
4 × non-zero bytes of calldata, so a random 32-byte hash costs ≈ 1,280 gas at the
floor whatever the contract does; ``floor`` is that figure for the very calldata
sent, and ``unfloored`` the gas the same transaction would use without the floor
(same chain state, py-evm's floor switched off, then reverted). ``hashes_only`` is
the same transaction with no totals (nothing credited; probed, then reverted), and
``totals_unfloored_gas`` what the totals add without the floor (their calldata,
the registry look-ups and the payees' credits).

``ledger.gas_per_receipt``: ``ReceiptAnchor.anchor`` (a new batch id and a random
root) gas / receipt for batches of each count in ``VEILX_BENCH_GAS_RECEIPTS``; the
headline is 1,000 receipts per batch. Goal: ≤ 60 gas/receipt.

``ledger.gas.register`` (1 and 3 payees) and ``ledger.gas.update_asset``
(compare-and-set on the version): reported for information.

Environment: ``VEILX_BENCH_GAS_TRADES`` (``100,200,500,1000``),
``VEILX_BENCH_GAS_RECEIPTS`` (``100,1000,10000``).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from eth.vm.forks.prague.state import PragueTransactionExecutor
from rich.console import Console
from rich.table import Table
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from bench.harness import Result
from ledger._artifacts import load_artifact

__all__ = [
    "BATCH_GOAL",
    "RECEIPT_GOAL",
    "GasReport",
    "Settings",
    "TxGas",
    "calldata_floor",
    "calldata_tokens",
    "measure_gas",
    "run",
]

BATCH_GOAL: Final = 1_500  # gas per trade, at ≥ 100 trades per transaction
BATCH_GOAL_MIN_TRADES: Final = 100
RECEIPT_GOAL: Final = 60  # gas per receipt, at 1,000 receipts per batch
RECEIPT_GOAL_COUNT: Final = 1_000

TX_GAS: Final = 21_000  # G_transaction
FLOOR_PER_TOKEN: Final = 10  # EIP-7623 TOTAL_COST_FLOOR_PER_TOKEN
STANDARD_PER_TOKEN: Final = 4  # EIP-7623 STANDARD_TOKEN_COST (16 per non-zero byte)
GAS_LIMIT: Final = 15_000_000
PAYEES: Final = (1, 2, 3)  # payees of the assets of a batch, cycled

_ZERO_ADDRESS: Final = "0x" + "00" * 20


def calldata_tokens(data: bytes) -> int:
    """EIP-7623 tokens of ``data``: zero bytes + 4 × non-zero bytes."""
    zeros = data.count(0)
    return zeros + 4 * (len(data) - zeros)


def calldata_floor(data: bytes) -> int:
    """The least gas a transaction with calldata ``data`` pays (EIP-7623)."""
    return TX_GAS + FLOOR_PER_TOKEN * calldata_tokens(data)


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    batch_sizes: tuple[int, ...] = (100, 200, 500, 1_000)
    receipt_counts: tuple[int, ...] = (100, 1_000, 10_000)
    assets: int = 5
    seed: int = 20_262

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_GAS_*``."""
        env = os.environ
        return cls(
            batch_sizes=_sizes(env, "VEILX_BENCH_GAS_TRADES", "100,200,500,1000"),
            receipt_counts=_sizes(env, "VEILX_BENCH_GAS_RECEIPTS", "100,1000,10000"),
        )


def _sizes(env: Any, key: str, default: str) -> tuple[int, ...]:
    raw = env.get(key, default)
    try:
        sizes = tuple(sorted({int(float(s)) for s in raw.split(",") if s.strip()}))
    except ValueError as exc:
        raise ValueError(f"{key}: {raw!r}") from exc
    if not sizes or sizes[0] < 1:
        raise ValueError(f"{key}: {raw!r}")
    return sizes


@dataclass(frozen=True)
class TxGas:
    """The gas of one mined transaction and its calldata's EIP-7623 figures.

    Attributes
    ----------
    gas
        ``gasUsed`` from the receipt.
    calldata_bytes, tokens
        Length of the calldata and its EIP-7623 token count.
    floor
        ``21,000 + 10 × tokens``: the least the transaction can cost.
    unfloored
        What the same transaction uses with the floor switched off (intrinsic
        ``21,000 + 4 × tokens`` plus execution), or ``None`` when not measured.
    """

    gas: int
    calldata_bytes: int
    tokens: int
    floor: int
    unfloored: int | None = None

    @property
    def floor_bound(self) -> bool:
        """Whether the floor, not execution, set the price."""
        return self.gas == self.floor and (
            self.unfloored is None or self.unfloored <= self.floor
        )


@dataclass(frozen=True)
class GasReport:
    """Everything :func:`measure_gas` measured; sizes map to one transaction each."""

    erc20_transfer: TxGas
    single: dict[int, TxGas]  # payees → recordTrade
    single_escrow: dict[int, TxGas]
    batched: dict[int, TxGas]  # trades per transaction → recordTrades
    batched_escrow: dict[int, TxGas]
    hashes_only: dict[int, TxGas]  # the same hashes with no totals (nothing credited)
    receipts: dict[int, TxGas]  # receipts per batch → anchor
    register: dict[int, TxGas]  # payees → register
    update_asset: TxGas
    assets: int
    checks: dict[str, bool] = field(default_factory=dict)

    def per_trade(self, n: int, *, escrow: bool = False) -> float:
        """Gas per trade of the batch of ``n`` trades."""
        return (self.batched_escrow if escrow else self.batched)[n].gas / n

    def totals_gas(self, n: int) -> int:
        """Unfloored gas the totals add to the batch of ``n`` (calldata and credits)."""
        with_totals, bare = self.batched[n].unfloored, self.hashes_only[n].unfloored
        assert with_totals is not None and bare is not None
        return with_totals - bare

    def per_receipt(self, n: int) -> float:
        """Gas per receipt of the batch of ``n`` receipts."""
        return self.receipts[n].gas / n


# -- the chain ------------------------------------------------------------------------


class _Chain:
    """An in-process Prague chain (eth-tester, py-evm) that mines and reads gas."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester: Any = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self.accounts: list[str] = list(self.w3.eth.accounts)

    @property
    def fork(self) -> str:
        """The fork the next block is built with (``prague``)."""
        return str(self.tester.backend.chain.get_vm().fork)

    def deploy(self, name: str, *args: Any, sender: str) -> Contract:
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = factory.constructor(*args).transact({"from": sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"deploying {name} failed")
        address = receipt["contractAddress"]
        assert address is not None
        return self.w3.eth.contract(address=address, abi=art.abi)

    def send(self, fn: Any, sender: str, *, unfloored: bool = False) -> TxGas:
        """Mine ``fn`` from ``sender``; with ``unfloored``, also without the floor."""
        without: int | None = None
        if unfloored:
            snapshot = self.tester.take_snapshot()
            with _no_data_floor():
                without = self._mine(fn, sender)[0]
            self.tester.revert_to_snapshot(snapshot)
        gas, data = self._mine(fn, sender)
        tokens = calldata_tokens(data)
        return TxGas(gas, len(data), tokens, TX_GAS + FLOOR_PER_TOKEN * tokens, without)

    def probe(self, fn: Any, sender: str) -> TxGas:
        """Like ``send(fn, sender, unfloored=True)``, leaving the chain unchanged."""
        snapshot = self.tester.take_snapshot()
        try:
            return self.send(fn, sender, unfloored=True)
        finally:
            self.tester.revert_to_snapshot(snapshot)

    def _mine(self, fn: Any, sender: str) -> tuple[int, bytes]:
        tx = fn.transact({"from": sender, "gas": GAS_LIMIT})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"{fn.fn_name} reverted")
        data = bytes(self.w3.eth.get_transaction(tx)["input"])
        return int(receipt["gasUsed"]), data


@contextmanager
def _no_data_floor() -> Iterator[None]:
    """Switch py-evm's EIP-7623 floor off (to see what execution alone costs)."""
    original = PragueTransactionExecutor.__dict__["calc_data_floor_gas"]

    def zero(transaction: Any, gas_used: int, gas_refund: int) -> int:
        return 0

    PragueTransactionExecutor.calc_data_floor_gas = staticmethod(zero)  # type: ignore[method-assign]
    try:
        yield
    finally:
        PragueTransactionExecutor.calc_data_floor_gas = original  # type: ignore[method-assign]


def _role(contract: Contract, name: str) -> bytes:
    value: bytes = getattr(contract.functions, name)().call()
    return value


@dataclass
class _Ledger:
    chain: _Chain
    registry: Contract
    record: Contract  # Settlement without a token
    escrow: Contract  # Settlement with BenchToken
    token: Contract
    operator: str
    holder: str  # an existing ERC-20 holder
    payees: list[str]


def _deploy(chain: _Chain) -> _Ledger:
    admin, operator, holder, *payees = chain.accounts
    registry = chain.deploy("DataAssetRegistry", admin, sender=admin)
    chain.send(
        registry.functions.grantRole(_role(registry, "REGISTRAR_ROLE"), operator), admin
    )
    token = chain.deploy("test/BenchToken", 10**30, sender=operator)
    record = chain.deploy(
        "Settlement", registry.address, _ZERO_ADDRESS, admin, sender=admin
    )
    escrow = chain.deploy(
        "Settlement", registry.address, token.address, admin, sender=admin
    )
    for s in (record, escrow):
        chain.send(s.functions.grantRole(_role(s, "OPERATOR_ROLE"), operator), admin)
    chain.send(token.functions.approve(escrow.address, 2**256 - 1), operator)
    chain.send(token.functions.transfer(holder, 10**18), operator)  # now a holder
    return _Ledger(chain, registry, record, escrow, token, operator, holder, payees)


def _shares(payees: Sequence[str], k: int) -> list[tuple[str, int]]:
    """``k`` payees splitting 10,000 basis points, the remainder to the first."""
    part = 10_000 // k
    return [
        (p, part + (10_000 - part * k if i == 0 else 0))
        for i, p in enumerate(payees[:k])
    ]


def _register(led: _Ledger, k: int, rng: np.random.Generator) -> tuple[int, TxGas]:
    ds = uuid.UUID(bytes=rng.bytes(16), version=4)
    fn = led.registry.functions.register(
        ds.bytes, led.payees[0], rng.bytes(32), rng.bytes(32), _shares(led.payees, k)
    )
    return ds.int, led.chain.send(fn, led.operator)


def _trade_batch(
    n: int, tokens: Sequence[int], rng: np.random.Generator
) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    """``n`` random trade hashes and the per-asset totals of their amounts and fees."""
    raw = rng.bytes(32 * n)
    hashes = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    amounts = rng.integers(100, 100_000, n)  # minor units
    which = rng.integers(0, len(tokens), n)
    totals = []
    for j, token in enumerate(tokens):
        picked = amounts[which == j]
        if picked.size:
            amount = int(picked.sum())
            fee = int((picked // 10).sum())
            totals.append((token, amount, fee))
    return hashes, totals


# -- measuring ------------------------------------------------------------------------


def measure_gas(settings: Settings | None = None) -> GasReport:
    """Deploy the ledger on a fresh chain and measure every transaction's gas."""
    settings = settings or Settings.from_env()
    rng = np.random.default_rng(settings.seed)
    chain = _Chain()
    led = _deploy(chain)
    op = led.operator

    erc20 = chain.send(led.token.functions.transfer(led.holder, 12_345_678), op)

    register: dict[int, TxGas] = {}
    single_assets: dict[int, int] = {}
    for k in (1, 3):
        single_assets[k], register[k] = _register(led, k, rng)
    asset = single_assets[1]
    before = led.registry.functions.assetOf(asset).call()[2]
    update = chain.send(
        led.registry.functions.updateAsset(asset, rng.bytes(32), rng.bytes(32), before),
        op,
    )
    after = led.registry.functions.assetOf(asset).call()[2]

    batch_assets = [
        _register(led, PAYEES[j % len(PAYEES)], rng)[0] for j in range(settings.assets)
    ]

    # Warm up: every payee holds credits, totals and fees are non-zero.
    for s in (led.record, led.escrow):
        for token in (*single_assets.values(), *batch_assets):
            chain.send(
                s.functions.recordTrade(rng.bytes(32), token, op, 1_000, 100), op
            )

    single: dict[int, TxGas] = {}
    single_escrow: dict[int, TxGas] = {}
    for k, token in single_assets.items():
        for s, out in ((led.record, single), (led.escrow, single_escrow)):
            fn = s.functions.recordTrade(rng.bytes(32), token, led.holder, 2_500, 250)
            out[k] = chain.send(fn, op, unfloored=True)

    batched: dict[int, TxGas] = {}
    batched_escrow: dict[int, TxGas] = {}
    hashes_only: dict[int, TxGas] = {}
    batch_id = 1
    for n in settings.batch_sizes:
        for s, out in ((led.record, batched), (led.escrow, batched_escrow)):
            hashes, totals = _trade_batch(n, batch_assets, rng)
            fn = s.functions.recordTrades(batch_id, hashes, totals)
            if s is led.record:
                bare = s.functions.recordTrades(batch_id, hashes, [])
                hashes_only[n] = chain.probe(bare, op)
            out[n] = chain.send(fn, op, unfloored=True)
            batch_id += 1

    anchor = chain.deploy("ReceiptAnchor", chain.accounts[0], sender=chain.accounts[0])
    chain.send(
        anchor.functions.grantRole(_role(anchor, "OPERATOR_ROLE"), op),
        chain.accounts[0],
    )
    receipts: dict[int, TxGas] = {}
    for i, n in enumerate(settings.receipt_counts, start=1):
        receipts[n] = chain.send(anchor.functions.anchor(rng.bytes(32), i, n), op)

    checks = {
        "prague": chain.fork == "prague",
        "update_bumped_once": after == before + 1,
        "floor_le_gas": all(
            t.floor <= t.gas
            for t in (
                erc20,
                update,
                *single.values(),
                *single_escrow.values(),
                *batched.values(),
                *batched_escrow.values(),
                *receipts.values(),
                *register.values(),
            )
        ),
        "gas_is_max_of_floor_and_unfloored": all(
            t.gas == max(t.floor, t.unfloored)
            for t in (
                *single.values(),
                *single_escrow.values(),
                *batched.values(),
                *batched_escrow.values(),
                *hashes_only.values(),
            )
            if t.unfloored is not None
        ),
    }
    return GasReport(
        erc20_transfer=erc20,
        single=single,
        single_escrow=single_escrow,
        batched=batched,
        batched_escrow=batched_escrow,
        hashes_only=hashes_only,
        receipts=receipts,
        register=register,
        update_asset=update,
        assets=settings.assets,
        checks=checks,
    )


# -- output ---------------------------------------------------------------------------


def _print_batches(console: Console, report: GasReport, base: int) -> None:
    table = Table(
        title=f"recordTrades per transaction ({report.assets} assets, 1–3 payees, "
        "random 32-byte hashes)",
        title_justify="left",
    )
    for h in (
        "trades/tx",
        "tx gas",
        "gas/trade",
        "× ERC-20",
        "EIP-7623 floor",
        "floor/trade",
        "unfloored/trade",
        "floor-bound",
        "calldata B",
        "hashes only/trade",
        "totals gas",
        "escrow gas/trade",
    ):
        table.add_column(h, justify="right")
    for n, t in report.batched.items():
        assert t.unfloored is not None
        table.add_row(
            f"{n:,}",
            f"{t.gas:,}",
            f"{t.gas / n:,.1f}",
            f"{t.gas / n / base:.4f}",
            f"{t.floor:,}",
            f"{t.floor / n:,.1f}",
            f"{t.unfloored / n:,.1f}",
            "yes" if t.floor_bound else "no",
            f"{t.calldata_bytes:,}",
            f"{report.hashes_only[n].gas / n:,.1f}",
            f"{report.totals_gas(n):,}",
            f"{report.per_trade(n, escrow=True):,.1f}",
        )
    console.print(table)


def _tx_extras(prefix: str, t: TxGas) -> dict[str, Any]:
    extras: dict[str, Any] = {
        f"{prefix}gas": t.gas,
        f"{prefix}floor": t.floor,
        f"{prefix}calldata_bytes": t.calldata_bytes,
    }
    if t.unfloored is not None:
        extras[f"{prefix}unfloored"] = t.unfloored
    return extras


def run(settings: Settings | None = None) -> list[Result]:
    """Measure the gas and return the entries (printing the per-batch breakdown)."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    report = measure_gas(settings)
    ok = all(report.checks.values())
    base = report.erc20_transfer.gas
    params: dict[str, Any] = {
        "evm": "eth-tester / py-evm, Prague (EIP-7623 calldata floor)",
        "py_evm": importlib.metadata.version("py-evm"),
        "web3": importlib.metadata.version("web3"),
        "artifacts": load_artifact("Settlement").compiler_version,
        "optimizer_runs": 200,
        "state": "steady: payees hold credits, totals non-zero; new trade/batch ids",
        "data": f"random 32-byte hashes and roots (numpy PCG64, seed {settings.seed})",
        "python": platform.python_version(),
    }
    base_name = "ledger.gas.erc20_transfer"

    sizes = list(report.batched)
    goal_sizes = [n for n in sizes if n >= BATCH_GOAL_MIN_TRADES]
    head_n = goal_sizes[0] if goal_sizes else sizes[0]
    head = report.per_trade(head_n)
    batch_met = bool(goal_sizes) and all(
        report.per_trade(n) <= BATCH_GOAL for n in goal_sizes
    )
    batch_extras: dict[str, Any] = {}
    for n in sizes:
        t = report.batched[n]
        assert t.unfloored is not None
        batch_extras |= {
            f"gas_per_trade_{n}": t.gas / n,
            f"tx_gas_{n}": t.gas,
            f"floor_{n}": t.floor,
            f"floor_per_trade_{n}": t.floor / n,
            f"unfloored_per_trade_{n}": t.unfloored / n,
            f"floor_bound_{n}": t.floor_bound,
            f"calldata_bytes_{n}": t.calldata_bytes,
            f"calldata_tokens_{n}": t.tokens,
            f"escrow_gas_per_trade_{n}": report.per_trade(n, escrow=True),
            f"hashes_only_gas_per_trade_{n}": report.hashes_only[n].gas / n,
            f"hashes_only_floor_per_trade_{n}": report.hashes_only[n].floor / n,
            f"totals_unfloored_gas_{n}": report.totals_gas(n),
        }

    receipt_sizes = list(report.receipts)
    r_n = (
        RECEIPT_GOAL_COUNT
        if RECEIPT_GOAL_COUNT in report.receipts
        else max(receipt_sizes)
    )
    per_receipt = report.per_receipt(r_n)

    s1, s3 = report.single[1], report.single[3]
    results = [
        Result(
            name=base_name,
            value=float(base),
            unit="gas",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline",
            met=True,
            params=params,
            extras=_tx_extras("", report.erc20_transfer) | {"to": "existing holder"},
        ),
        Result(
            name="ledger.gas_per_trade.single",
            value=float(s1.gas),
            unit="gas/trade",
            baseline_name=base_name,
            baseline_value=float(base),
            ratio=s1.gas / base,
            goal="none (reported)",
            met=ok,
            params=params,
            extras={
                "payees": 1,
                **_tx_extras("", s1),
                "gas_3_payees": s3.gas,
                "ratio_3_payees": s3.gas / base,
                "escrow_gas_1_payee": report.single_escrow[1].gas,
                "escrow_gas_3_payees": report.single_escrow[3].gas,
            },
        ),
        Result(
            name="ledger.gas_per_trade.batched",
            value=head,
            unit="gas/trade",
            baseline_name=base_name,
            baseline_value=float(base),
            ratio=head / base,
            goal=f"≤ {BATCH_GOAL:,} gas/trade at ≥ {BATCH_GOAL_MIN_TRADES} trades/tx "
            f"(value at {head_n:,}/tx)",
            met=batch_met and ok,
            params={**params, "trades_per_tx": sizes, "assets": report.assets},
            extras={**batch_extras, **report.checks, "checks_passed": ok},
        ),
        Result(
            name="ledger.gas_per_receipt",
            value=per_receipt,
            unit="gas/receipt",
            baseline_name=base_name,
            baseline_value=float(base),
            ratio=per_receipt / base,
            goal=f"≤ {RECEIPT_GOAL} gas/receipt at {RECEIPT_GOAL_COUNT:,} "
            f"receipts/batch (value at {r_n:,})",
            met=per_receipt <= RECEIPT_GOAL and r_n >= RECEIPT_GOAL_COUNT and ok,
            params={**params, "receipts_per_batch": receipt_sizes},
            extras={"tx_gas": report.receipts[r_n].gas}
            | {f"gas_per_receipt_{n}": report.per_receipt(n) for n in receipt_sizes},
        ),
        Result(
            name="ledger.gas.register",
            value=float(report.register[1].gas),
            unit="gas",
            baseline_name=base_name,
            baseline_value=float(base),
            ratio=report.register[1].gas / base,
            goal="none (reported)",
            met=ok,
            params=params,
            extras={"payees": 1, "gas_3_payees": report.register[3].gas},
        ),
        Result(
            name="ledger.gas.update_asset",
            value=float(report.update_asset.gas),
            unit="gas",
            baseline_name=base_name,
            baseline_value=float(base),
            ratio=report.update_asset.gas / base,
            goal="none (reported)",
            met=ok,
            params=params,
            extras={"compare_and_set": True},
        ),
    ]
    console.print(f"EVM {params['evm']}; baseline ERC-20 transfer {base:,} gas")
    _print_batches(console, report, base)
    over = [n for n in goal_sizes if report.per_trade(n) > BATCH_GOAL]
    for n in over:
        t, bare = report.batched[n], report.hashes_only[n]
        console.print(
            f"{n:,} trades/tx: {t.gas / n:,.1f} gas/trade > {BATCH_GOAL:,}. EIP-7623 "
            f"floor {t.floor / n:,.1f} gas/trade (21,000 + 10 × {t.tokens:,} tokens "
            f"= {t.floor:,}){'; floor-bound' if t.floor_bound else ''}. The same "
            f"hashes without totals: {bare.gas / n:,.1f} gas/trade (floor "
            f"{bare.floor / n:,.1f}); the {report.assets} totals add "
            f"{report.totals_gas(n):,} gas unfloored "
            f"({report.totals_gas(n) / n:,.1f}/trade)."
        )
    if not ok:
        failed = [k for k, v in report.checks.items() if not v]
        console.print(f"[red]consistency checks failed: {', '.join(failed)}[/]")
    return results

"""Attacks on the running demo that must fail to leak (issue 3, "privacy tests").

The whole demo runs once (exchange, two data nodes, a buyer's SDK) with every
log record and every API response recorded. While it is still up, a buyer tries
the classic attacks: a group below k, a differencing pair, spending past the
budget, a tampered receipt, malformed ciphertexts. Afterwards the exchange's
database, its logs and every API response are scanned for the providers' raw
values, the buyer's private inputs and the buyer's secret key.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console
from sqlmodel import select

import marketplace.demo as demo_module
from marketplace.demo import DemoRun, run_demo
from marketplace.models import LedgerEvent
from marketplace.models.jobs import Job as JobRow
from mpc_engine.protocol import JobState
from sdk import Client
from sdk.errors import JobFailedError, ReceiptVerificationError
from tests.conftest import make_settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Recorder:
    """ASGI middleware keeping every response body the exchange sends."""

    def __init__(self, app: Any, bodies: list[bytes]) -> None:
        self.app = app
        self.bodies = bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def capture(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    self.bodies.append(b"".join(chunks))
            await send(message)

        await self.app(scope, receive, capture)


@dataclass
class Probe:
    """What the attacks inside the running demo observed."""

    run: DemoRun | None = None
    outcomes: dict[str, Any] = field(default_factory=dict)


def _raw_csv(path: Path) -> tuple[list[str], list[dict[str, str]], str]:
    text = path.read_text()
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader), text


def _one_row_value(rows: list[dict[str, str]], column: str) -> str:
    """A value of ``column`` held by exactly one row (for a differencing pair)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[column]] = counts.get(r[column], 0) + 1
    return next(v for v, c in sorted(counts.items()) if c == 1 and v)


def _key_dir(run: DemoRun) -> Path:
    """The buyer's key directory (``<data_dir>/buyer-keys``)."""
    return run.csv_paths[run.datasets["smart_meter"]["id"]].parents[2] / "buyer-keys"


def _buy(base: str, key: str, dataset_id: str, **terms: Any) -> dict[str, Any]:
    """Quote and order an entitlement with the buyer's remaining credits."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        r = c.post("/v1/quotes", json={"dataset_id": dataset_id, **terms})
        assert r.status_code == 201, r.text
        r = c.post(
            "/v1/orders",
            json={"quote_id": r.json()["id"]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


def _attacks(run: DemoRun, probe: Probe) -> None:
    """Run while the exchange and the nodes are up."""
    probe.run = run
    out = probe.outcomes
    base = run.base_url
    meter, inpatient = run.datasets["smart_meter"], run.datasets["inpatient"]
    diabetes = run.datasets["diabetes"]
    key_dir = _key_dir(run)
    # The attacker pays like anyone: the demo's entitlements were closed.
    out["meter_order"] = _buy(
        base, run.keys["buyer"], meter["id"], queries=8, epsilon=5.0
    )
    _buy(base, run.keys["buyer"], inpatient["id"], queries=1)
    _buy(base, run.keys["buyer"], diabetes["id"], queries=2, compute_units_per_query=5)
    with (
        Client(run.keys["buyer"], base_url=base, key_dir=key_dir) as buyer,
        Client(run.keys["meridian"], base_url=base) as meridian,
    ):
        # A group below k: 'diverse' patients in one small state.
        job = buyer.compute.aggregate(
            inpatient["id"],
            statistics=["count", "mean"],
            columns=["length_of_stay_days"],
            group_by=["sex"],
            filter="residence_state = 'thuringia'",
            purpose="epidemiology",
            wait=False,
        )
        meridian.jobs.approve(job.id)
        out["small_group"] = buyer.compute.result(
            buyer.jobs.wait(job.id, poll_interval=0.2)
        )

        # Exact mode where the policy requires DP (differencing on exact counts).
        with pytest.raises(JobFailedError) as exact:
            buyer.compute.aggregate(
                meter["id"],
                statistics=["count"],
                filter="consumption_kwh < 5",
                purpose="grid-planning",
                poll_interval=0.2,
            )
        out["exact_refused"] = exact.value

        # A differencing pair: two DP counts whose filters differ by one row.
        _, rows, _ = _raw_csv(run.csv_paths[meter["id"]])
        value = _one_row_value(rows, "consumption_kwh")
        pair = []
        for op in ("<=", "<"):
            pair.append(
                buyer.compute.aggregate(
                    meter["id"],
                    statistics=["count"],
                    filter=f"consumption_kwh {op} {value}",
                    mode="dp",
                    epsilon=0.25,
                    purpose="grid-planning",
                    poll_interval=0.2,
                )
            )
        out["pair"] = pair
        out["pair_value"] = value
        out["pair_truth"] = [
            sum(float(r["consumption_kwh"]) <= float(value) for r in rows),
            sum(float(r["consumption_kwh"]) < float(value) for r in rows),
        ]
        out["budget_before"] = buyer.datasets.budget(meter["id"])

        # Spending past the budget is refused by the node.
        left = 4.0 - out["budget_before"].buyers[0].epsilon_spent
        ok = buyer.compute.aggregate(
            meter["id"],
            statistics=["count"],
            group_by=["heating_type"],
            mode="dp",
            epsilon=round(left - 0.05, 6),
            purpose="grid-planning",
            poll_interval=0.2,
        )
        out["last_affordable"] = ok
        with pytest.raises(JobFailedError) as refused:
            buyer.compute.aggregate(
                meter["id"],
                statistics=["count"],
                group_by=["has_ev"],
                mode="dp",
                epsilon=0.1,
                purpose="grid-planning",
                poll_interval=0.2,
            )
        out["overspend"] = refused.value
        out["budget_after"] = buyer.datasets.budget(meter["id"])
        ent = out["meter_order"]["entitlement_id"]
        with httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {run.keys['buyer']}"},
            timeout=30,
        ) as c:
            out["meter_charges"] = c.get(f"/v1/entitlements/{ent}/charges").json()

        # A tampered receipt: the exchange's copy altered after the fact.
        target = out["pair"][0].job.id
        with run.db.session() as session:
            row = session.exec(select(JobRow).where(JobRow.id == target)).one()
            receipt = dict(row.receipt or {})
            receipt["receipt"] = {
                **receipt["receipt"],
                "privacy_loss": {"epsilon": 0.0, "delta": 0.0},
            }
            row.receipt = receipt
            row.privacy_loss = {"epsilon": 0.0, "delta": 0.0}
            session.add(row)
            session.commit()
        with pytest.raises(ReceiptVerificationError) as tampered:
            buyer.receipts.verify(target)
        out["tampered"] = tampered.value

        # Malformed ciphertexts: garbage, and a real ciphertext cut short.
        evaluated = next(iter(run.results["model_eval"].values())).job
        context_id, inputs = evaluated.context_id, evaluated.inputs
        real = buyer.blobs.download(inputs["outer"])
        garbage = buyer.blobs.upload(b"\x00" * 4096).sha256
        truncated = buyer.blobs.upload(real[: len(real) // 2]).sha256
        for name, outer in (("garbage", garbage), ("truncated", truncated)):
            bad = buyer.jobs.create(
                diabetes["id"],
                kind="encrypted_model_eval",
                purpose="model-validation",
                params={
                    "model_kind": "logistic",
                    "features": [
                        "age_years",
                        "bmi_kg_m2",
                        "baseline_hba1c_pct",
                        "on_insulin",
                    ],
                    "label": "hba1c_above_target_12m",
                },
                inputs={"outer": outer, "linear": inputs["linear"]},
                context_id=context_id,
            )
            meridian.jobs.approve(bad.id)
            out[f"malformed_{name}"] = buyer.jobs.wait(bad.id, poll_interval=0.2)


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Probe, list[bytes], str, str, Path]]:
    """Run the demo once with recording; yield (probe, bodies, logs, console, dir)."""
    data_dir = tmp_path_factory.mktemp("demo") / "run"
    bodies: list[bytes] = []
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    original = demo_module.create_app

    def recording_app(*args: Any, **kwargs: Any) -> Any:
        return _Recorder(original(*args, **kwargs), bodies)

    demo_module.create_app = recording_app  # type: ignore[assignment]
    console_out = io.StringIO()
    probe = Probe()
    try:
        run_demo(
            make_settings(data_dir.parent),
            data_dir,
            Console(file=console_out, width=200),
            after=lambda run: _attacks(run, probe),
        )
    finally:
        demo_module.create_app = original
        root.removeHandler(handler)
        root.setLevel(old_level)
    yield probe, bodies, stream.getvalue(), console_out.getvalue(), data_dir


# -- the attacks ----------------------------------------------------------------


def test_a_group_below_k_is_never_released(demo: Any) -> None:
    probe, *_ = demo
    run = probe.run
    _, rows, _ = _raw_csv(run.csv_paths[run.datasets["inpatient"]["id"]])
    k = run.datasets["inpatient"]["policy"]["min_group_size"]
    sizes: dict[str, int] = {}
    for r in rows:
        if r["residence_state"] == "thuringia":
            sizes[r["sex"]] = sizes.get(r["sex"], 0) + 1
    small = [s for s, n in sizes.items() if 0 < n < k]
    assert small, f"the data must hold a group below k={k} for this test: {sizes}"
    released = {g.key[0]: g for g in probe.outcomes["small_group"].groups}
    for sex in small:
        g = released.get(sex)
        assert g is None or (
            g.count is None and g.mean.get("length_of_stay_days") is None
        ), f"group {sex!r} of {sizes[sex]} < k leaked"
    big = [s for s, n in sizes.items() if n >= k]
    assert all(released[s].count == sizes[s] for s in big)


def test_exact_mode_is_refused_where_the_policy_requires_dp(demo: Any) -> None:
    probe, *_ = demo
    job = probe.outcomes["exact_refused"].job
    assert job.state is JobState.REJECTED
    assert job.reason_code == "policy_violation"
    assert "requires differential privacy" in (job.reason or "")


def test_a_differencing_pair_costs_its_accounted_epsilon(demo: Any) -> None:
    probe, *_ = demo
    first, second = probe.outcomes["pair"]
    truth = probe.outcomes["pair_truth"]
    assert truth[0] - truth[1] == 1
    assert first.dp_applied and second.dp_applied
    assert first.receipt.receipt.privacy_loss.epsilon == pytest.approx(0.25)
    assert second.receipt.receipt.privacy_loss.epsilon == pytest.approx(0.25)
    assert not first.receipt.receipt.replayed and not second.receipt.receipt.replayed
    # The node's ledger moved by exactly the two receipts' ε (and only that).
    before = probe.outcomes["budget_before"].buyers[0].epsilon_spent
    assert before == pytest.approx(0.5 + 0.5)  # demo's DP mean + this pair


def test_spending_past_the_budget_is_refused_and_nothing_is_charged(demo: Any) -> None:
    probe, *_ = demo
    refused = probe.outcomes["overspend"]
    assert refused.job.state is JobState.REJECTED
    assert refused.job.reason_code == "budget_exhausted"
    assert "ε=0.05" in (refused.job.reason or "") and "left" in (
        refused.job.reason or ""
    )
    after = probe.outcomes["budget_after"].buyers[0]
    assert after.epsilon_spent == pytest.approx(3.95)
    assert after.epsilon_spent <= after.epsilon_budget
    # Nor is money: the refused job's reservation was voided.
    charges = probe.outcomes["meter_charges"]
    (charge,) = [c for c in charges if c["job_id"] == str(refused.job.id)]
    assert charge["status"] == "voided" and charge["amount_minor"] == 0
    assert all(c["status"] in ("captured", "voided") for c in charges)


def test_a_tampered_receipt_fails_verification(demo: Any) -> None:
    probe, *_ = demo
    err = probe.outcomes["tampered"]
    assert err.field == "signature"


@pytest.mark.parametrize("name", ["garbage", "truncated"])
def test_a_malformed_ciphertext_is_rejected_by_the_node(demo: Any, name: str) -> None:
    probe, *_ = demo
    job = probe.outcomes[f"malformed_{name}"]
    assert job.state is JobState.REJECTED
    assert job.reason_code == "invalid_input"
    assert "outer" in (job.reason or ""), job.reason
    assert job.output is None and job.receipt is None


# -- the scans ------------------------------------------------------------------


def _secret_windows(key_dir: Path) -> list[bytes]:
    """48-byte windows of each secret key serialisation that its public part lacks.

    A key file holds the secret serialisation, then the public one (see
    ``SecretContext.save``); the secret serialisation repeats the public key
    objects, so only windows absent from the public bytes identify the secret.
    """
    windows: list[bytes] = []
    for path in sorted(key_dir.iterdir()):
        if path.suffix == ".json":
            continue
        blob = path.read_bytes()
        n = int.from_bytes(blob[8:16], "big")
        secret = blob[16 : 16 + n]
        m = int.from_bytes(blob[16 + n : 24 + n], "big")
        public = blob[24 + n : 24 + n + m]
        mine = [
            w
            for w in (secret[i : i + 48] for i in range(0, len(secret) - 48, 4099))
            if w not in public
        ]
        assert len(mine) >= 20, path
        windows += mine
    return windows


@dataclass(frozen=True)
class Needles:
    """Raw values that must appear nowhere.

    ``tokens``: identifiers and exact non-public decimal values (7+ characters),
    looked up among the haystack's tokens; ``lines``: whole CSV rows (every 25th),
    looked up as substrings.
    """

    tokens: frozenset[str]
    lines: tuple[str, ...]


_TOKEN = re.compile(r"[\w@+\-]+(?:\.[\w@+\-]+)*")


def _needles(probe: Probe) -> Needles:
    """The providers' raw values and the buyer's private inputs.

    The one value the buyer itself typed into a filter (the differencing pair) is
    the buyer's own input, not a leak, and is left out.
    """
    run = probe.run
    assert run is not None
    typed = probe.outcomes["pair_value"]
    tokens: set[str] = set()
    lines: list[str] = []
    for ds in run.datasets.values():
        public = {c["name"] for c in ds["columns"] if c["sensitivity"] == "public"}
        ids = {c["name"] for c in ds["columns"] if c["sensitivity"] == "identifier"}
        header, rows, text = _raw_csv(run.csv_paths[ds["id"]])
        lines += [line for line in text.splitlines()[1::25] if line]
        for r in rows:
            tokens.update(r[c] for c in ids if r[c])
            for c in header:
                v = r[c].lstrip("-")
                if (
                    c not in public
                    and c not in ids
                    and "." in v
                    and len(v) >= 7
                    and v != typed.lstrip("-")
                ):
                    tokens.add(v)
    applicants = run.results["applicants"]
    tokens.update(repr(float(v)) for v in applicants[:, 1])  # full-precision incomes
    tokens.update(_wallet_keys(run.csv_paths[run.datasets["smart_meter"]["id"]]))
    return Needles(frozenset(tokens), tuple(lines))


def _wallet_keys(csv_path: Path) -> set[str]:
    """The wallets' private keys (buyer and providers), as hex with and without 0x."""
    data_dir = csv_path.parents[2]
    paths = [
        *(data_dir / "buyer-wallet").glob("*.key"),
        *(data_dir / "provider-wallets").glob("*.key"),
    ]
    assert len(paths) >= 2, paths
    keys = {p.read_text(encoding="utf-8").strip().removeprefix("0x") for p in paths}
    return keys | {"0x" + k for k in keys}


def _scan(haystack: str, needles: Needles) -> list[str]:
    found = sorted(needles.tokens.intersection(_TOKEN.findall(haystack)))
    found += [line for line in needles.lines if line in haystack]
    return found[:5]


def _db_text(data_dir: Path) -> tuple[str, bytes]:
    db = data_dir / "veilx.db"
    conn = sqlite3.connect(db)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    raw = b"".join(p.read_bytes() for p in data_dir.glob("veilx.db*"))
    return text, raw


def test_the_scan_finds_planted_values(demo: Any) -> None:
    """The scanner is not blind: each kind of planted value is found."""
    probe, *_ = demo
    needles = _needles(probe)
    assert len(needles.tokens) > 50_000 and len(needles.lines) > 1_000
    identifier = next(t for t in sorted(needles.tokens) if "-" in t or "@" in t)
    number = next(t for t in sorted(needles.tokens) if t[0].isdigit())
    for planted in (
        f'{{"note": "{identifier}"}}',
        f'{{"x": {number}, "y": 1}}',
        f"rows: {needles.lines[3]}\n",
    ):
        assert _scan(planted, needles), planted
    assert _scan('{"mean": 10.5, "id": "n/a"}', needles) == []


def test_no_raw_value_in_the_exchange_database(demo: Any) -> None:
    probe, _bodies, _logs, _console, data_dir = demo
    needles = _needles(probe)
    text, raw = _db_text(data_dir)
    assert "encrypted_model_eval" in text  # the dump holds the jobs
    assert _scan(text, needles) == []
    for window in _secret_windows(data_dir / "buyer-keys"):
        assert window not in raw


def test_no_raw_value_in_any_api_response(demo: Any) -> None:
    probe, bodies, _logs, _console, data_dir = demo
    needles = _needles(probe)
    assert len(bodies) > 100
    text = "\n".join(b.decode("utf-8", "replace") for b in bodies)
    assert "attestation" in text
    assert _scan(text, needles) == []
    joined = b"".join(bodies)
    for window in _secret_windows(data_dir / "buyer-keys"):
        assert window not in joined


def test_no_raw_value_in_the_logs_or_the_console(demo: Any) -> None:
    probe, _bodies, logs, console, _ = demo
    needles = _needles(probe)
    assert logs, "nothing was logged: the scan would be vacuous"
    assert _scan(logs, needles) == []
    assert "demo finished" in console
    assert _scan(console, needles) == []
    assert np.isfinite(probe.run.results["inference"].scores).all()


def test_the_demo_ends_with_verify_and_the_chain_holds_no_raw_value(
    demo: Any,
) -> None:
    """The demo ends with a passing ``veilx verify``; the chain's files (every
    block, transaction, receipt and log) hold hashes and amounts, no raw value."""
    probe, _bodies, _logs, console, data_dir = demo
    report = probe.run.results["verify"]
    assert report.ok, report.mismatches
    # A trade per released job, plus the subscription's prepaid periods.
    assert report.receipts >= 6 and report.trades == report.receipts + 1
    assert report.summary in console and "veilx verify" in console
    files = sorted(p for p in (data_dir / "chain").rglob("*") if p.is_file())
    raw = b"".join(p.read_bytes() for p in files)
    assert len(raw) > 100_000, files
    with probe.run.db.session() as s:  # the trades relayed before the attacks
        batches = s.exec(
            select(LedgerEvent).where(
                LedgerEvent.kind == "trades.batch", LedgerEvent.status == "confirmed"
            )
        ).all()
    trade_hashes = [h for b in batches for h in b.payload["trade_hashes"]]
    assert len(trade_hashes) >= 6
    assert all(bytes.fromhex(h) in raw for h in trade_hashes)
    needles = _needles(probe)
    assert _scan(raw.decode("latin-1"), needles) == []
    for window in _secret_windows(data_dir / "buyer-keys"):
        assert window not in raw

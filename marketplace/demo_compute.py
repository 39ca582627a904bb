"""The computation half of ``veilx demo``: data nodes, then a buyer's three jobs.

Each provider runs a data node (in a thread here; ``veilx node serve`` in
production) next to its CSV files. The buyer then uses the Python SDK exactly as
a customer would: a DP group-by mean, a private model evaluated on a provider's
data, a provider's model scoring the buyer's private rows — every answer decrypted
on the buyer's side and every receipt verified.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from mpc_engine.node import NodeService, load_config
from sdk import Client, JobProgress, Result
from sdk.types import (
    AggregateResult,
    Budget,
    InferenceResult,
    Job,
    ModelEvalResult,
    VerifiedReceipt,
)

__all__ = [
    "DemoNode",
    "fit_logistic",
    "read_columns",
    "run_computations",
    "running_nodes",
    "write_node_config",
]

CREDIT_FEATURES = (
    "age_years",
    "annual_income_eur",
    "credit_limit_eur",
    "months_on_book",
    "utilisation_ratio",
    "avg_monthly_spend_eur",
    "cash_advance_share",
    "late_payments_12m",
)
DIABETES_FEATURES = (
    "age_years",
    "bmi_kg_m2",
    "baseline_hba1c_pct",
    "on_insulin",
)


@dataclass(frozen=True)
class DemoNode:
    """A provider's node: its config file and the datasets it serves."""

    provider: str
    config_path: Path
    dataset_ids: tuple[uuid.UUID, ...]


def read_columns(path: Path, names: Sequence[str]) -> npt.NDArray[np.float64]:
    """Numeric (and true/false) columns of a CSV as a float matrix; drops null rows."""
    rows: list[list[float]] = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            values = [rec[n] for n in names]
            if any(v == "" for v in values):
                continue
            rows.append(
                [
                    1.0 if v == "true" else 0.0 if v == "false" else float(v)
                    for v in values
                ]
            )
    return np.asarray(rows, dtype=np.float64)


def fit_logistic(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], iterations: int = 25
) -> tuple[npt.NDArray[np.float64], float]:
    """Fit a ridge-regularised logistic regression by Newton's method (IRLS).

    Returns
    -------
    tuple[numpy.ndarray, float]
        Weights in the original units of ``x``, and the bias.
    """
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = 1.0
    z = np.column_stack([np.ones(len(x)), (x - mu) / sd])
    beta = np.zeros(z.shape[1])
    ridge = 1e-3 * np.eye(z.shape[1])
    ridge[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        grad = z.T @ (p - y) + ridge @ beta
        hess = (z * (p * (1 - p))[:, None]).T @ z + ridge
        beta -= np.linalg.solve(hess, grad)
    weights = beta[1:] / sd
    bias = float(beta[0] - weights @ mu)
    return weights, bias


def _toml(value: Any) -> str:
    """A TOML value: strings JSON-escaped (valid TOML basic strings), inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no TOML form here")
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    if isinstance(value, str | Path | uuid.UUID):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence | np.ndarray):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(header: str | None, fields: Mapping[str, Any]) -> list[str]:
    lines = [] if header is None else [header]
    return [*lines, *(f"{k} = {_toml(v)}" for k, v in fields.items()), ""]


def write_node_config(
    directory: Path,
    *,
    exchange_url: str,
    api_key: str,
    provider: str,
    datasets: Sequence[tuple[uuid.UUID, Path, Mapping[str, Sequence[str]]]],
    models: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write a provider's ``node.toml`` (and its API key file, mode 0600).

    ``datasets`` holds (dataset id, CSV path, public category domains by column);
    ``models`` the ``[[models]]`` fields (name, dataset_id, kind, features,
    weights, bias, description).
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "api-key.txt"
    key_file.touch(mode=0o600)
    key_file.write_text(api_key + "\n")
    lines = _toml_table(
        None,
        {
            "exchange_url": exchange_url,
            "api_key_file": key_file.name,
            "name": f"{provider}-node-1",
            "poll_wait": 2,
        },
    )
    for dataset_id, path, categories in datasets:
        fields: dict[str, Any] = {
            "dataset_id": dataset_id,
            "source": {"kind": "csv", "path": path},
        }
        if categories:
            fields["categories"] = dict(sorted(categories.items()))
        lines += _toml_table("[[datasets]]", fields)
    for model in models:
        lines += _toml_table("[[models]]", model)
    path = directory / "node.toml"
    path.write_text("\n".join(lines))
    return path


@contextmanager
def running_nodes(nodes: Sequence[DemoNode]) -> Iterator[list[NodeService]]:
    """Start every node (registration, attestations) and serve jobs in threads."""
    stop = threading.Event()
    services: list[NodeService] = []
    threads: list[threading.Thread] = []
    try:
        for node in nodes:
            svc = NodeService(load_config(node.config_path))
            svc.start()
            services.append(svc)
            t = threading.Thread(
                target=svc.serve,
                args=(stop,),
                name=f"node-{node.provider}",
                daemon=True,
            )
            t.start()
            threads.append(t)
        yield services
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for svc in services:
            svc.close()


def _progress(console: Console, label: str) -> Any:
    def report(p: JobProgress) -> None:
        if p.changed:
            console.print(f"  [dim]{label}: {p.state.value} after {p.elapsed:.1f} s[/]")

    return report


def _approved(
    console: Console, buyer: Client, provider: Client, job: Job, who: str
) -> Result:
    """Have the provider approve ``job``, then wait for and collect its result."""
    console.print(
        f"  job {str(job.id)[:8]} is [bold]{job.state.value}[/]: the policy asks "
        f"for human approval; {who} approves it"
    )
    provider.jobs.approve(job.id, note=f"approved by {who}")
    return buyer.compute.result(buyer.jobs.wait(job.id, poll_interval=0.2))


def _receipt_row(table: Table, what: str, receipt: VerifiedReceipt) -> None:
    r = receipt.receipt
    table.add_row(
        what,
        r.kind.value,
        f"ε={r.privacy_loss.epsilon:g}" + (" (replay)" if r.replayed else ""),
        r.output_hash[:12] + "…",
        r.dataset_version_hash[:12] + "…",
        receipt.signature[:12] + "… ✓",
    )


def _aggregate_table(title: str, res: AggregateResult, column: str) -> Table:
    table = Table(*res.group_by, "count", f"mean {column}", title=title)
    for g in res.groups:
        mean = g.mean.get(column)
        table.add_row(
            *(str(k) for k in g.key),
            "withheld" if g.count is None else str(g.count),
            "—" if mean is None else f"{mean:,.2f}",
        )
    return table


def _budget_chart(console: Console, title: str, budget: Budget) -> None:
    width = 40
    total = budget.budget_per_buyer.epsilon
    console.print(f"[bold]{title}[/] — ε per buyer {total:g}")
    for usage in budget.buyers:
        spent = usage.epsilon_spent
        filled = round(width * min(spent / total, 1.0))
        bar = "█" * filled + "░" * (width - filled)
        console.print(
            f"  buyer {str(usage.buyer_id)[:8]} {bar} {spent:.3g} / {total:g} ε "
            f"({usage.queries} queries)"
        )


def run_computations(
    console: Console,
    *,
    base_url: str,
    buyer_key: str,
    provider_keys: dict[str, str],
    datasets: dict[str, dict[str, Any]],
    key_dir: Path,
) -> dict[str, Any]:
    """Run the buyer's three computations; return what the caller may check.

    ``datasets`` maps a short name (``smart_meter``, ``inpatient``, ``diabetes``,
    ``credit``) to the dataset listing (``DatasetPublic`` JSON).
    """
    receipts = Table(
        "question",
        "kind",
        "privacy loss",
        "output hash",
        "dataset version",
        "signature",
        title="Receipts signed by the data nodes (verified by the buyer's SDK)",
    )
    out: dict[str, Any] = {}
    with (
        Client(buyer_key, base_url=base_url, key_dir=key_dir) as buyer,
        Client(provider_keys["meridian"], base_url=base_url) as meridian,
        Client(provider_keys["northwind"], base_url=base_url) as northwind,
    ):
        # 1. A DP group-by mean, twice: the identical question replays.
        meter = datasets["smart_meter"]
        console.rule("[bold]1. aggregate[/] — a DP group-by mean")

        def mean_by_dwelling(progress: Any = None) -> AggregateResult:
            return buyer.compute.aggregate(
                meter["id"],
                statistics=["count", "mean"],
                columns=["consumption_kwh"],
                group_by=["dwelling_type"],
                mode="dp",
                epsilon=0.5,
                purpose="energy-efficiency-research",
                progress=progress,
                poll_interval=0.2,
            )

        first = mean_by_dwelling(_progress(console, "DP mean"))
        console.print(
            _aggregate_table(
                f"{meter['title']}: daily consumption by dwelling type "
                f"(Laplace, ε={first.privacy_loss.epsilon:g})",
                first,
                "consumption_kwh",
            )
        )
        again = mean_by_dwelling()
        same = [g.model_dump() for g in again.groups] == [
            g.model_dump() for g in first.groups
        ]
        console.print(
            f"asked again: {'the identical answer' if same else 'a DIFFERENT answer'}"
            f", replayed={again.receipt.receipt.replayed}, "
            f"charged ε={again.receipt.receipt.privacy_loss.epsilon:g}"
        )
        _receipt_row(receipts, "DP mean by dwelling type", first.receipt)
        _receipt_row(receipts, "the same, asked again", again.receipt)
        out["aggregate"] = first
        out["aggregate_again"] = again

        # 1b. The hospital's policy needs a human: the job waits for approval.
        inpatient = datasets["inpatient"]
        job = buyer.compute.aggregate(
            inpatient["id"],
            statistics=["count", "mean"],
            columns=["length_of_stay_days"],
            group_by=["admission_type"],
            mode="dp",
            epsilon=0.3,
            purpose="health-services-planning",
            wait=False,
        )
        stay = _approved(console, buyer, meridian, job, "Meridian's DPO")
        if not isinstance(stay, AggregateResult):
            raise TypeError(f"expected an aggregate result, got {type(stay).__name__}")
        console.print(
            _aggregate_table(
                f"{inpatient['title']}: length of stay by admission type (DP)",
                stay,
                "length_of_stay_days",
            )
        )
        _receipt_row(receipts, "DP length of stay (approved)", stay.receipt)
        out["approved"] = stay

        # 2. The buyer's private models, evaluated on the provider's cohort.
        diabetes = datasets["diabetes"]
        console.rule("[bold]2. encrypted_model_eval[/] — my model, their data")
        candidates = {
            "clinical model": (np.array([-0.015, 0.04, 1.0, 0.3]), -8.6),
            "HbA1c only": (np.array([0.0, 0.0, 0.9, 0.0]), -7.6),
        }
        table = Table(
            "buyer's model",
            "log-loss (deg-2)",
            "mean logit",
            "± noise",
            title=f"{diabetes['title']}: label hba1c_above_target_12m",
        )
        evals = {}
        for name, (w, b) in candidates.items():
            submitted = buyer.compute.model_eval(
                diabetes["id"],
                weights=w,
                bias=b,
                kind="logistic",
                features=list(DIABETES_FEATURES),
                label="hba1c_above_target_12m",
                purpose="model-validation",
                wait=False,
            )
            res = _approved(console, buyer, meridian, submitted, "Meridian's DPO")
            if not isinstance(res, ModelEvalResult):
                raise TypeError(f"expected model metrics, got {type(res).__name__}")
            evals[name] = res
            table.add_row(
                name,
                f"{res.log_loss:.4f}",
                f"{res.mean_score:+.3f}",
                f"{res.loss_noise_std:.1e}",
            )
            _receipt_row(receipts, f"evaluate '{name}'", res.receipt)
        console.print(table)
        console.print(
            "the weights travelled encrypted under the buyer's CKKS key; the node "
            "evaluated them on its DP-perturbed Gram matrix and never saw them"
        )
        out["model_eval"] = evals

        # 3. The provider's model scores the buyer's private applicants.
        credit = datasets["credit"]
        console.rule("[bold]3. encrypted_inference[/] — their model, my rows")
        rng = np.random.default_rng(7)
        n = 2000
        applicants = np.column_stack(
            [
                rng.integers(18, 80, n),
                rng.lognormal(10.6, 0.5, n),
                rng.choice([1000.0, 2500.0, 5000.0, 10000.0], n),
                rng.integers(0, 200, n),
                rng.beta(2, 4, n) * 1.2,
                rng.lognormal(6.5, 0.6, n),
                rng.beta(1, 9, n),
                rng.poisson(0.6, n),
            ]
        ).astype(np.float64)
        submitted = buyer.compute.inference(
            credit["id"],
            model="default-risk-v1",
            rows=applicants,
            purpose="credit-risk-model-validation",
            wait=False,
        )
        scored = _approved(
            console, buyer, northwind, submitted, "Northwind's risk team"
        )
        if not isinstance(scored, InferenceResult):
            raise TypeError(f"expected scores, got {type(scored).__name__}")
        risk = 1.0 / (1.0 + np.exp(-scored.scores))
        bins = np.histogram(risk, bins=[0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])[0]
        table = Table(
            "predicted 6-month default risk",
            "applicants",
            "",
            title=f"{n:,} private applicants scored by Northwind's model",
        )
        edges = ["<2 %", "2–5 %", "5–10 %", "10–20 %", "20–50 %", "≥50 %"]
        for label, count in zip(edges, bins, strict=True):
            table.add_row(label, f"{count:,}", "█" * max(1, round(40 * count / n)))
        console.print(table)
        console.print(
            f"scores decrypted locally (noise σ={scored.noise_std:.1e}); the "
            "exchange and the node saw only ciphertexts"
        )
        _receipt_row(receipts, f"score {n:,} applicants", scored.receipt)
        out["inference"] = scored
        out["applicants"] = applicants
        out["models"] = candidates

        console.rule("[bold]receipts and budgets[/]")
        console.print(receipts)
        for name in ("smart_meter", "inpatient", "diabetes"):
            ds = datasets[name]
            _budget_chart(console, ds["title"], buyer.datasets.budget(ds["id"]))
    return out

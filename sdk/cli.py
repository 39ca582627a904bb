"""Buyer and provider commands, as typer apps the ``veilx`` command line mounts.

* ``compute_app`` — ``veilx compute aggregate | model-eval | inference``
* ``jobs_app`` — ``veilx jobs show | list | approve | deny | wait``
* ``receipts_app`` — ``veilx receipts show | verify``
* ``keys_app`` — ``veilx keys generate | list``
* ``datasets_app`` — ``veilx datasets budget | quote | buy | entitlements``

Credentials come from ``--api-key`` (or ``VEILX_API_KEY``) and ``--url`` (or
``VEILX_URL``); local HE keys live in ``--key-dir`` (or ``VEILX_KEY_DIR``).
Errors are printed as one line, ``veilx: error: <what and why>``, with exit code
2; ``receipts verify`` exits 1 when a receipt does not verify. An
``httpx.Client`` passed as the click context's ``obj`` is used to send requests
(embedding and tests).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import numpy as np
import typer
from rich.bar import Bar
from rich.console import Console
from rich.table import Table

from mpc_engine.he.errors import HEError
from sdk._client import DEFAULT_BASE_URL, Client
from sdk._compute import Result
from sdk._keys import PRESETS, Keys
from sdk.errors import ReceiptVerificationError, VeilxError
from sdk.types import (
    AggregateResult,
    BudgetUsage,
    InferenceResult,
    Job,
    JobProgress,
    Quote,
)

__all__ = ["compute_app", "datasets_app", "jobs_app", "keys_app", "receipts_app"]

compute_app = typer.Typer(
    help="Run computations; results are verified and decrypted locally.",
    no_args_is_help=True,
)
jobs_app = typer.Typer(help="Computation jobs.", no_args_is_help=True)
receipts_app = typer.Typer(help="Receipts signed by data nodes.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Local HE keys (secret keys never leave this machine).",
    no_args_is_help=True,
)
datasets_app = typer.Typer(
    help="Dataset listings: privacy budgets, quotes, purchases, entitlements.",
    no_args_is_help=True,
)


@datasets_app.callback()
def _datasets() -> None:
    """Dataset listings: privacy budgets, quotes, purchases, entitlements."""


settlements_app = typer.Typer(
    help="Settlement runs and payees' statements (revenue over time).",
    no_args_is_help=True,
)


@settlements_app.callback()
def _settlements() -> None:
    """Settlement runs and payees' statements (revenue over time)."""


wallet_app = typer.Typer(
    help="Your organisation's wallet: the onchain way of paying and being paid.",
    no_args_is_help=True,
)


@wallet_app.callback()
def _wallet() -> None:
    """Your organisation's wallet: the onchain way of paying and being paid."""


ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VEILX_API_KEY",
        help="Your API key (or VEILX_API_KEY).",
        show_default=False,
    ),
]
Url = Annotated[
    str,
    typer.Option("--url", envvar="VEILX_URL", help="The exchange (or VEILX_URL)."),
]
KeyDir = Annotated[
    Path | None,
    typer.Option(
        "--key-dir",
        envvar="VEILX_KEY_DIR",
        help="Local HE key directory (default ~/.config/veilx/keys).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Purpose = Annotated[
    str, typer.Option(help="A purpose the dataset's policy permits, e.g. research.")
]
JobTimeout = Annotated[
    int, typer.Option("--job-timeout", help="The job's deadline at the exchange (s).")
]
PollInterval = Annotated[
    float, typer.Option(min=0.0, help="Seconds between job status polls.")
]


def _out() -> Console:
    return Console(soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    line = " ".join(str(message).split())
    _err().print(f"veilx: error: {line}", markup=False, highlight=False)
    raise typer.Exit(2)


@contextmanager
def _reported() -> Iterator[None]:
    """Turn SDK and HE errors into the one-line error convention."""
    try:
        yield
    except (VeilxError, HEError) as exc:
        fail(str(exc))


def _connect(
    ctx: typer.Context, api_key: str | None, url: str, key_dir: Path | None
) -> Client:
    if not api_key:
        fail("no API key: pass --api-key or set VEILX_API_KEY")
    transport = ctx.obj if isinstance(ctx.obj, httpx.Client) else None
    try:
        return Client(
            api_key,
            base_url=url,
            key_dir=key_dir,
            http_client=transport,
            max_network_retries=2,
        )
    except VeilxError as exc:
        fail(str(exc))


@contextmanager
def _spinner(what: str) -> Iterator[Callable[[JobProgress], None]]:
    """A transient spinner on stderr (terminals only) fed by job progress."""
    with _err().status(f"{what}: submitting…") as status:

        def report(p: JobProgress) -> None:
            status.update(f"{what}: job {p.job.id} {p.state.value} · {p.elapsed:.0f} s")

        yield report


# -- input files ------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"{what}: cannot read {path} ({exc.strerror or exc})")
    except UnicodeDecodeError:
        fail(f"{what}: {path} is not a text file")


def _number(cell: Any, where: str) -> float:
    if isinstance(cell, bool):
        fail(f"{where}: {cell!r} is not a number")
    try:
        value = float(cell)
    except (TypeError, ValueError):
        fail(f"{where}: {cell!r} is not a number")
    if not math.isfinite(value):
        fail(f"{where}: {cell!r} is not a finite number")
    return value


def _csv_rows(text: str) -> tuple[list[str] | None, list[list[str]]]:
    """Rows of a CSV file; a first row that is not all numbers is a header."""
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if not rows:
        return None, []

    def numeric(row: list[str]) -> bool:
        try:
            [float(c) for c in row]
        except ValueError:
            return False
        return True

    if numeric(rows[0]):
        return None, rows
    return [c.strip() for c in rows[0]], rows[1:]


def _read_rows(path: Path) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Rows from a CSV file (optional header) or JSON (``[[…], …]`` / ``{"rows"}``)."""
    text = _read_text(path, "rows")
    raw: Any
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            fail(f"rows: {path} is not valid JSON ({exc})")
        if isinstance(raw, dict):
            raw = raw.get("rows")
        if not isinstance(raw, list) or not all(isinstance(r, list) for r in raw):
            fail(f"rows: {path} must hold a list of rows (lists of numbers)")
    else:
        _, raw = _csv_rows(text)
    if not raw:
        fail(f"rows: {path} holds no rows")
    width = len(raw[0])
    out = []
    for i, row in enumerate(raw):
        if len(row) != width:
            fail(f"rows: row {i + 1} of {path} has {len(row)} values, not {width}")
        out.append([_number(c, f"rows: row {i + 1} of {path}") for c in row])
    return np.asarray(out, dtype=np.float64)


def _read_weights(
    path: Path, features: Sequence[str]
) -> tuple[list[str], list[float], float | None]:
    """Weights (and feature names and bias, if the file has them).

    JSON: ``[w…]``, or ``{"weights": [w…] | {feature: w}, "bias": b,
    "features": [names]}``. CSV: a header of feature names (``bias`` may be one)
    over one row of weights, or bare numbers in one row or one column.
    """
    text = _read_text(path, "weights")
    names: list[str] | None = None
    bias: float | None = None
    values: list[float]
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            fail(f"weights: {path} is not valid JSON ({exc})")
        if isinstance(raw, dict):
            if "bias" in raw:
                bias = _number(raw["bias"], "weights: bias")
            weights = raw.get("weights")
            if isinstance(weights, dict):
                names = [str(k) for k in weights]
                weights = list(weights.values())
            elif isinstance(raw.get("features"), list):
                names = [str(n) for n in raw["features"]]
            raw = weights
        if not isinstance(raw, list) or not raw:
            fail(f"weights: {path} must hold a non-empty list of weights")
        values = [_number(v, f"weights: {path}") for v in raw]
    else:
        header, rows = _csv_rows(text)
        if header is not None:
            if len(rows) != 1 or len(rows[0]) != len(header):
                fail(f"weights: {path} must have one row of weights under its header")
            cells = dict(zip(header, rows[0], strict=True))
            if "bias" in cells:
                bias = _number(cells.pop("bias"), "weights: bias")
            names = list(cells)
            values = [_number(v, f"weights: {n}") for n, v in cells.items()]
        else:
            flat = [c for row in rows for c in row]
            if not flat:
                fail(f"weights: {path} holds no weights")
            values = [_number(c, f"weights: {path}") for c in flat]
    if names is not None and len(names) != len(values):
        fail(f"weights: {path} names {len(names)} features for {len(values)} weights")
    if features:
        if names is not None:
            by_name = dict(zip(names, values, strict=True))
            missing = [f for f in features if f not in by_name]
            if missing:
                fail(f"weights: {path} has no weight for {', '.join(missing)}")
            values = [by_name[f] for f in features]
        return list(features), values, bias
    if names is None:
        fail("features: name them with --feature, or give the weights file a header")
    return names, values, bias


# -- compute ----------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _aggregate_table(result: AggregateResult) -> Table:
    table = Table(title="aggregate")
    for name in result.group_by:
        table.add_column(name)
    cells: list[tuple[str, str, str | None]] = []
    if any(g.count is not None for g in result.groups):
        cells.append(("count", "count", None))
    for stat in ("sum", "mean", "variance", "histogram", "quantiles"):
        columns = sorted({c for g in result.groups for c in getattr(g, stat)})
        cells.extend((f"{stat}({c})", stat, c) for c in columns)
    for title, _, _ in cells:
        table.add_column(title, justify="right")
    for group in result.groups:
        row = [_fmt(k) for k in group.key]
        for _, stat, column in cells:
            value = group.count if column is None else getattr(group, stat).get(column)
            row.append(_fmt(value))
        table.add_row(*row)
    return table


def _result_footer(job: Job, privacy: str, node: str) -> str:
    return f"job {job.id} · {privacy} · receipt verified (node {node})"


def _result_json(result: Result) -> dict[str, Any]:
    data = result.model_dump(mode="json", exclude={"job", "receipt", "scores"})
    if isinstance(result, InferenceResult):
        data["scores"] = result.scores.tolist()
    receipt = result.receipt
    data["job_id"] = str(result.job.id)
    data["receipt"] = {
        "verified": True,
        "node_id": str(receipt.node_id),
        "output_hash": receipt.receipt.output_hash,
        "privacy_loss": receipt.privacy_loss.model_dump(mode="json"),
    }
    return data


@compute_app.command("aggregate")
def compute_aggregate(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    purpose: Purpose,
    stat: Annotated[
        list[str],
        typer.Option(
            "--stat",
            help="count, sum, mean, variance, histogram or quantiles (repeat).",
        ),
    ],
    column: Annotated[
        list[str] | None, typer.Option("--column", help="Numeric column (repeat).")
    ] = None,
    group_by: Annotated[
        list[str] | None,
        typer.Option("--group-by", help="Categorical column to group by (repeat)."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--filter", help="Row filter, e.g. \"age >= 30 and region = 'DE'\"."
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="exact or dp.")] = "exact",
    epsilon: Annotated[float | None, typer.Option(help="DP ε (mode dp).")] = None,
    delta: Annotated[float, typer.Option(help="DP δ (mode dp).")] = 0.0,
    mechanism: Annotated[str, typer.Option(help="laplace or gaussian.")] = "laplace",
    bins: Annotated[int | None, typer.Option("--bins", help="Histogram bins.")] = None,
    quantile: Annotated[
        list[float] | None, typer.Option("--quantile", help="Quantile level (repeat).")
    ] = None,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Return the values encrypted to you.")
    ] = False,
    job_timeout: JobTimeout = 900,
    poll_interval: PollInterval = 1.0,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
    key_dir: KeyDir = None,
) -> None:
    """Count/sum/mean/variance/histogram/quantiles per group (exact or DP)."""
    if mode not in ("exact", "dp"):
        fail(f"--mode: {mode!r} is not exact or dp")
    if mechanism not in ("laplace", "gaussian"):
        fail(f"--mechanism: {mechanism!r} is not laplace or gaussian")
    with (
        _connect(ctx, api_key, url, key_dir) as client,
        _reported(),
        _spinner("aggregate") as progress,
    ):
        result = client.compute.aggregate(
            dataset,
            statistics=stat,
            columns=column or (),
            group_by=group_by or (),
            filter=where,
            mode="dp" if mode == "dp" else "exact",
            epsilon=epsilon,
            delta=delta,
            mechanism="gaussian" if mechanism == "gaussian" else "laplace",
            histogram_bins=bins,
            quantiles=quantile,
            encrypt_result=encrypt,
            purpose=purpose,
            timeout_seconds=job_timeout,
            poll_interval=poll_interval,
            progress=progress,
        )
    out = _out()
    if as_json:
        out.print_json(data=_result_json(result))
        return
    out.print(_aggregate_table(result))
    loss = result.privacy_loss
    privacy = (
        f"DP ({result.mechanism}) ε={loss.epsilon:g} δ={loss.delta:g}"
        if result.dp_applied
        else "exact" + (" (small groups withheld)" if result.suppressed else "")
    )
    if result.encrypted:
        privacy += " · decrypted locally"
    out.print(
        _result_footer(result.job, privacy, str(result.receipt.node_id)),
        markup=False,
        highlight=False,
    )


@compute_app.command("model-eval")
def compute_model_eval(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    weights: Annotated[
        Path,
        typer.Option(
            "--weights", help="Weights file: JSON list/object, or CSV (header=names)."
        ),
    ],
    label: Annotated[str, typer.Option(help="The label column.")],
    purpose: Purpose,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="Feature column, in weight order (repeat)."),
    ] = None,
    bias: Annotated[
        float | None, typer.Option(help="Intercept (default: the file's, or 0).")
    ] = None,
    kind: Annotated[str, typer.Option(help="linear or logistic.")] = "linear",
    job_timeout: JobTimeout = 900,
    poll_interval: PollInterval = 1.0,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
    key_dir: KeyDir = None,
) -> None:
    """Evaluate your model on the provider's data, encrypted under your key."""
    if kind not in ("linear", "logistic"):
        fail(f"--kind: {kind!r} is not linear or logistic")
    names, values, file_bias = _read_weights(weights, feature or [])
    intercept = bias if bias is not None else (file_bias or 0.0)
    with (
        _connect(ctx, api_key, url, key_dir) as client,
        _reported(),
        _spinner("model-eval") as progress,
    ):
        result = client.compute.model_eval(
            dataset,
            weights=values,
            bias=intercept,
            features=names,
            label=label,
            kind="logistic" if kind == "logistic" else "linear",
            purpose=purpose,
            timeout_seconds=job_timeout,
            poll_interval=poll_interval,
            progress=progress,
        )
    out = _out()
    if as_json:
        out.print_json(data=_result_json(result))
        return
    table = Table(title=f"{result.kind.value} model on {len(names)} features")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("± noise std", justify="right")
    if result.mse is not None:
        table.add_row("mse", _fmt(result.mse), _fmt(result.loss_noise_std))
    if result.log_loss is not None:
        table.add_row(
            "log-loss (degree 2)", _fmt(result.log_loss), _fmt(result.loss_noise_std)
        )
    score = "mean prediction" if result.kind.value == "linear" else "mean logit"
    table.add_row(score, _fmt(result.mean_score), _fmt(result.mean_score_noise_std))
    out.print(table)
    gram = result.gram_privacy_loss
    privacy = (
        "no DP" if gram is None else f"Gram DP ε={gram.epsilon:g} δ={gram.delta:g}"
    )
    out.print(
        _result_footer(result.job, privacy, str(result.receipt.node_id)),
        markup=False,
        highlight=False,
    )


@compute_app.command("inference")
def compute_inference(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    model: Annotated[str, typer.Option(help="The provider model's name.")],
    rows: Annotated[
        Path, typer.Option("--rows", help="Rows: CSV (optional header) or JSON.")
    ],
    purpose: Purpose,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write all scores to this CSV.")
    ] = None,
    show: Annotated[int, typer.Option(help="Scores to print.")] = 20,
    job_timeout: JobTimeout = 900,
    poll_interval: PollInterval = 1.0,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
    key_dir: KeyDir = None,
) -> None:
    """Score your rows with a provider's model; rows stay encrypted."""
    x = _read_rows(rows)
    with (
        _connect(ctx, api_key, url, key_dir) as client,
        _reported(),
        _spinner("inference") as progress,
    ):
        result = client.compute.inference(
            dataset,
            model=model,
            rows=x,
            purpose=purpose,
            timeout_seconds=job_timeout,
            poll_interval=poll_interval,
            progress=progress,
        )
    scores = result.scores.tolist()
    if output is not None:
        try:
            with output.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["row", "score"])
                writer.writerows((i, repr(s)) for i, s in enumerate(scores))
        except OSError as exc:
            fail(f"--output: cannot write {output} ({exc.strerror or exc})")
    out = _out()
    if as_json:
        out.print_json(data=_result_json(result))
        return
    table = Table(title=f"{result.model}: {result.n_rows} rows")
    table.add_column("row", justify="right")
    table.add_column("score", justify="right")
    for i, s in enumerate(scores[: max(show, 0)]):
        table.add_row(str(i), _fmt(s))
    out.print(table)
    more = f" · {len(scores) - show} more" if len(scores) > show else ""
    out.print(
        _result_footer(
            result.job,
            f"noise std {result.noise_std:.3g}{more}",
            str(result.receipt.node_id),
        ),
        markup=False,
        highlight=False,
    )


# -- jobs -------------------------------------------------------------------------


def _job_table(job: Job) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    loss = job.privacy_loss
    for name, value in (
        ("id", job.id),
        ("kind", job.kind.value),
        ("state", job.state.value),
        ("reason", f"{job.reason_code}: {job.reason}" if job.reason_code else None),
        ("dataset", job.dataset_id),
        ("node", job.node_id),
        ("purpose", job.purpose),
        ("created", job.created_at.isoformat()),
        ("updated", job.updated_at.isoformat()),
        ("deadline", job.deadline.isoformat() if job.deadline else None),
        ("approved by", job.approved_by),
        ("privacy loss", f"ε={loss.epsilon:g} δ={loss.delta:g}" if loss else None),
        ("outputs", ", ".join(sorted(job.output_blobs)) or None),
        ("receipt", "signed" if job.receipt else None),
    ):
        if value is not None:
            table.add_row(name, str(value))
    return table


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Show a job."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        found = client.jobs.get(job)
    if as_json:
        _out().print_json(found.model_dump_json())
    else:
        _out().print(_job_table(found))


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Only this state (repeat).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Jobs to show at most.")] = 20,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """List jobs, newest first (following pages up to --limit)."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        page = client.jobs.list(
            state=state or None, dataset_id=dataset, limit=min(limit, 100)
        )
        jobs: list[Job] = []
        for item in page.auto_paging_iter():
            jobs.append(item)
            if len(jobs) >= limit:
                break
    if as_json:
        _out().print_json(data=[j.model_dump(mode="json") for j in jobs])
        return
    table = Table(title=f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}")
    for name in ("id", "kind", "state", "dataset", "created"):
        table.add_column(name)
    for j in jobs:
        table.add_row(
            str(j.id),
            j.kind.value,
            j.state.value + (f" ({j.reason_code})" if j.reason_code else ""),
            str(j.dataset_id),
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _out().print(table)


@jobs_app.command("approve")
def jobs_approve(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    note: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Approve a job awaiting approval (provider)."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        done = client.jobs.approve(job, note=note)
    _out().print(f"job {done.id} approved: {done.state.value}", markup=False)


@jobs_app.command("deny")
def jobs_deny(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    reason: Annotated[str, typer.Option(help="Why (shown to the buyer).")],
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Deny a job awaiting approval (provider)."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        done = client.jobs.deny(job, reason=reason)
    _out().print(f"job {done.id} denied: {done.state.value}", markup=False)


@jobs_app.command("wait")
def jobs_wait(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds.")
    ] = None,
    poll_interval: PollInterval = 1.0,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Wait for a job to finish, with a progress spinner; exit 2 unless it succeeds."""
    with (
        _connect(ctx, api_key, url, None) as client,
        _reported(),
        _spinner("wait") as progress,
    ):
        final = client.jobs.wait(
            job, timeout=timeout, poll_interval=poll_interval, progress=progress
        )
    if not final.succeeded:
        why = f" ({final.reason_code}): {final.reason}" if final.reason_code else ""
        fail(f"job {final.id} {final.state.value}{why}")
    _out().print(f"job {final.id} succeeded", markup=False)


# -- receipts -----------------------------------------------------------------------


@receipts_app.command("show")
def receipts_show(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Show a succeeded job's receipt as the exchange holds it."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        info = client.receipts.get(job)
    if as_json:
        _out().print_json(info.model_dump_json())
        return
    r = info.receipt.receipt
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in (
        ("job", r.job_id),
        ("node", r.node_id),
        ("node key", info.node_public_key),
        ("dataset", r.dataset_id),
        ("dataset version hash", r.dataset_version_hash),
        ("policy hash", r.policy_hash),
        ("kind", r.kind.value),
        ("params hash", r.params_hash),
        ("inputs hash", r.inputs_hash),
        ("output hash", r.output_hash),
        ("privacy loss", f"ε={r.privacy_loss.epsilon:g} δ={r.privacy_loss.delta:g}"),
        ("replayed", r.replayed),
        ("issued", r.issued_at),
        ("signature", info.receipt.signature),
    ):
        table.add_row(name, str(value))
    _out().print(table)


@receipts_app.command("verify")
def receipts_verify(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Verify a job's receipt yourself; exit 0 if it verifies, 1 if not."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        try:
            verified = client.receipts.verify(job)
        except ReceiptVerificationError as exc:
            _out().print(
                f"receipt of job {exc.job_id} does NOT verify: {exc.field}: "
                f"{exc.reason}",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1) from None
    loss = verified.privacy_loss
    _out().print(
        f"receipt of job {verified.receipt.job_id} verifies: signed by node "
        f"{verified.node_id}, output, params and inputs match, "
        f"ε={loss.epsilon:g} δ={loss.delta:g}",
        markup=False,
        highlight=False,
    )


# -- keys -----------------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Argument(help="The key's name.")] = "default",
    preset: Annotated[
        str, typer.Option(help="inference, model_eval or high_precision.")
    ] = "inference",
    galois: Annotated[
        bool,
        typer.Option(help="Also make Galois keys (model evaluation; ≈35 MB public)."),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
    key_dir: KeyDir = None,
) -> None:
    """Generate an HE key pair locally (file mode 0600)."""
    if preset not in PRESETS:
        fail(f"--preset: {preset!r} is not one of {', '.join(sorted(PRESETS))}")
    keys = Keys(key_dir)
    with _reported():
        key = keys.generate(
            name,
            preset=PRESETS[preset],
            galois=galois,
            overwrite=overwrite,
        )
    _out().print(
        f"key {name!r} at {keys.path(name)} · context {key.context_id}",
        markup=False,
        highlight=False,
    )


@keys_app.command("list")
def keys_list(key_dir: KeyDir = None, as_json: AsJson = False) -> None:
    """List local HE keys."""
    keys = Keys(key_dir)
    with _reported():
        found = keys.list()
    if as_json:
        _out().print_json(data=[k.model_dump(mode="json") for k in found])
        return
    if not found:
        _out().print(f"no keys in {keys.key_dir}", markup=False)
        return
    table = Table(title=str(keys.key_dir))
    for column in ("name", "parameters", "galois", "context id", "uploaded to"):
        table.add_column(column)
    for k in found:
        table.add_row(
            k.name,
            f"N={k.poly_modulus_degree} {list(k.coeff_mod_bit_sizes)}",
            "yes" if k.galois else "no",
            k.context_id[:16] + "…",
            ", ".join(k.uploaded_to) or "—",
        )
    _out().print(table)


# -- datasets -----------------------------------------------------------------------


def _budget_row(table: Table, label: str, usage: BudgetUsage, width: int) -> None:
    share = usage.epsilon_spent / usage.epsilon_budget if usage.epsilon_budget else 0.0
    color = "green" if share < 0.5 else "yellow" if share < 0.9 else "red"
    table.add_row(
        label,
        Bar(
            size=usage.epsilon_budget,
            begin=0.0,
            end=min(usage.epsilon_spent, usage.epsilon_budget),
            width=width,
            color=color,
            bgcolor="grey23",
        ),
        f"{usage.epsilon_spent:g} / {usage.epsilon_budget:g}",
        f"{share:.0%}",
        f"{usage.delta_spent:g} / {usage.delta_budget:g}",
        str(usage.queries),
    )


@datasets_app.command("budget")
def datasets_budget(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    width: Annotated[int, typer.Option(min=10, max=120, help="Bar width.")] = 40,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Chart ε spent against the budget, per buyer and in total."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        budget = client.datasets.budget(dataset)
    if as_json:
        _out().print_json(budget.model_dump_json())
        return
    per = budget.budget_per_buyer
    table = Table(
        title=f"privacy budget of {budget.dataset_id} "
        f"(per buyer ε={per.epsilon:g} δ={per.delta:g})"
    )
    table.add_column("buyer")
    table.add_column("ε spent", min_width=width)
    table.add_column("ε", justify="right")
    table.add_column("%", justify="right")
    table.add_column("δ", justify="right")
    table.add_column("queries", justify="right")
    for usage in sorted(budget.buyers, key=lambda u: -u.epsilon_spent):
        _budget_row(table, str(usage.buyer_id), usage, width)
    if budget.total is not None:
        table.add_section()
        _budget_row(table, "all buyers", budget.total, width)
    if not budget.buyers and budget.total is None:
        _out().print(
            f"no privacy budget spent on {budget.dataset_id} yet", markup=False
        )
        return
    _out().print(table)


# -- trading ------------------------------------------------------------------------

# ISO 4217 currencies without minor units; the rest have two.
_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split()
)


def _money(amount_minor: int, currency: str) -> str:
    if currency in _ZERO_DECIMAL:
        return f"{amount_minor:,} {currency}"
    return f"{amount_minor / 100:,.2f} {currency}"


def _quote_table(quote: Quote) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in (
        ("quote", quote.id),
        ("dataset", quote.dataset_id),
        ("plan", quote.plan_kind),
        ("queries", quote.queries),
        ("periods", quote.periods if quote.periods != 1 else None),
        (
            "privacy",
            f"ε={quote.epsilon:g} δ={quote.delta:g}" if quote.epsilon else None,
        ),
        (
            "expected error",
            f"±{quote.expected_abs_error:.4g} (95% ±{quote.ci95_half_width:.4g})"
            if quote.expected_abs_error is not None
            and quote.ci95_half_width is not None
            else None,
        ),
        ("price", _money(quote.gross_minor, quote.currency)),
        (
            "surcharge",
            _money(quote.surcharge_minor, quote.currency)
            if quote.surcharge_minor
            else None,
        ),
        (
            "to pay",
            f"{_money(quote.amount_minor, quote.currency)} by {quote.payment_method}",
        ),
        ("expires", quote.expires_at.isoformat()),
    ):
        if value is not None:
            table.add_row(name, str(value))
    return table


@datasets_app.command("quote")
def datasets_quote(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    queries: Annotated[int, typer.Option(min=1, help="Computations to buy.")] = 1,
    epsilon: Annotated[
        float, typer.Option(min=0.0, help="Total DP ε to buy (0: exact/HE jobs).")
    ] = 0.0,
    delta: Annotated[float, typer.Option(min=0.0, help="Total DP δ.")] = 0.0,
    periods: Annotated[
        int, typer.Option(min=1, help="Subscription periods (subscription plans).")
    ] = 1,
    sensitivity: Annotated[
        float | None,
        typer.Option(help="The query's sensitivity, to state the expected DP error."),
    ] = None,
    mechanism: Annotated[str, typer.Option(help="laplace or gaussian.")] = "laplace",
    payment_method: Annotated[
        str,
        typer.Option(
            "--payment-method",
            help="credits, or onchain (your registered wallet's escrow deposit).",
        ),
    ] = "credits",
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Price an entitlement on a dataset, paid with credits or from your wallet."""
    if mechanism not in ("laplace", "gaussian"):
        fail(f"--mechanism: {mechanism!r} is not laplace or gaussian")
    if payment_method not in ("credits", "onchain"):
        fail(
            f"--payment-method: {payment_method!r} is not credits or onchain (cards "
            "are paid through the SDK with a Stripe payment method)"
        )
    with _connect(ctx, api_key, url, None) as client, _reported():
        quote = client.quotes.create(
            dataset,
            queries=queries,
            epsilon=epsilon,
            delta=delta,
            periods=periods,
            sensitivity=sensitivity,
            mechanism="gaussian" if mechanism == "gaussian" else "laplace",
            payment_method="onchain" if payment_method == "onchain" else "credits",
        )
    if as_json:
        _out().print_json(quote.model_dump_json())
        return
    _out().print(_quote_table(quote))


@datasets_app.command("buy")
def datasets_buy(
    ctx: typer.Context,
    quote: Annotated[str, typer.Argument(help="Quote id (from `datasets quote`).")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Reuse to retry safely: the same key never buys twice.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Order a quote (credits or your wallet's escrow); print its entitlement."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        order = client.orders.create(quote, idempotency_key=idempotency_key)
    if as_json:
        _out().print_json(order.model_dump_json())
        return
    if order.status != "active" or order.entitlement_id is None:
        why = f": {order.failure_reason}" if order.failure_reason else ""
        fail(f"order {order.id} is {order.status}{why}")
    _out().print(
        f"order {order.id} paid {_money(order.amount_minor, order.currency)}: "
        f"entitlement {order.entitlement_id}",
        markup=False,
        highlight=False,
    )


@datasets_app.command("entitlements")
def datasets_entitlements(
    ctx: typer.Context,
    dataset: Annotated[
        str | None, typer.Argument(help="Only those on this dataset.")
    ] = None,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """List your entitlements: queries, ε and money used and left."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        found = client.entitlements.list(dataset)
    if as_json:
        _out().print_json(data=[e.model_dump(mode="json") for e in found])
        return
    if not found:
        _out().print("no entitlements", markup=False)
        return
    table = Table(title=f"{len(found)} entitlement{'s' if len(found) != 1 else ''}")
    for name in ("id", "dataset", "status", "queries", "ε", "charged", "expires"):
        table.add_column(name, justify="right" if name in ("queries", "ε") else "left")
    for e in found:
        table.add_row(
            str(e.id),
            str(e.dataset_id),
            e.status,
            f"{e.queries_used + e.queries_reserved} / {e.quota_queries}",
            f"{e.epsilon_used + e.epsilon_reserved:g} / {e.epsilon_budget:g}",
            f"{_money(e.amount_captured_minor, e.currency)} of "
            f"{_money(e.amount_authorized_minor, e.currency)}",
            e.expires_at.strftime("%Y-%m-%d %H:%M"),
        )
    _out().print(table)


@wallet_app.command("register")
def wallet_register(
    ctx: typer.Context,
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="The wallet's private key (hex); signs the proof here and is "
            "never sent.",
            dir_okay=False,
        ),
    ],
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Register the wallet of --key-file as your organisation's."""
    try:
        mode = key_file.stat().st_mode
        private_key = key_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        fail(f"--key-file: cannot read {key_file} ({exc.strerror})")
    if mode & 0o077:
        fail(f"--key-file: {key_file} is readable by others; chmod 600 it first")
    with _connect(ctx, api_key, url, None) as client, _reported():
        wallet = client.wallets.register_key(private_key)
    if as_json:
        _out().print_json(wallet.model_dump_json())
        return
    _out().print(
        f"wallet {wallet.address} is your organisation's; deposit into the "
        "exchange's payment escrow from it to pay onchain",
        markup=False,
        highlight=False,
    )


@wallet_app.command("show")
def wallet_show(
    ctx: typer.Context,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Your organisation's wallet and what it holds in the payment escrow."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        wallet = client.wallets.mine()
    if as_json:
        _out().print_json(wallet.model_dump_json())
        return
    balance = (
        "unknown (the chain did not answer)"
        if wallet.escrow_balance_minor is None
        else _money(wallet.escrow_balance_minor, wallet.currency or "")
    )
    _out().print(
        f"wallet {wallet.address} · escrow balance {balance}",
        markup=False,
        highlight=False,
    )


_BUCKETS = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}


@settlements_app.command("list")
def settlements_list(
    ctx: typer.Context,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """Every settlement run (operator, regulator), newest period first."""
    with _connect(ctx, api_key, url, None) as client, _reported():
        runs = client.settlements.list()
    if as_json:
        _out().print_json(data=[r.model_dump(mode="json") for r in runs])
        return
    if not runs:
        _out().print("no settlement runs", markup=False)
        return
    table = Table(title=f"{len(runs)} settlement run{'s' if len(runs) != 1 else ''}")
    for name in ("id", "period", "status", "charges", "gross", "fees", "paid out"):
        table.add_column(name)
    for r in runs:
        table.add_row(
            str(r.id),
            f"{r.period_start:%Y-%m-%d %H:%M} → {r.period_end:%Y-%m-%d %H:%M}",
            r.status,
            str(r.charges),
            _money(r.gross_minor, r.currency),
            _money(r.fee_minor, r.currency),
            _money(r.payout_minor, r.currency),
        )
    _out().print(table)


@settlements_app.command("statement")
def settlements_statement(
    ctx: typer.Context,
    settlement: Annotated[str, typer.Argument(help="Settlement run id.")],
    payee: Annotated[
        str | None,
        typer.Option(
            help="The payee organisation (default: yours).", show_default=False
        ),
    ] = None,
    by: Annotated[
        str, typer.Option(help="Chart revenue per hour, day or month.")
    ] = "day",
    csv_out: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also write the statement as CSV here.", dir_okay=False
        ),
    ] = None,
    as_json: AsJson = False,
    api_key: ApiKey = None,
    url: Url = DEFAULT_BASE_URL,
) -> None:
    """A payee's statement: totals, revenue over time (a chart) and per dataset."""
    if by not in _BUCKETS:
        fail(f"--by: {by!r} is not hour, day or month")
    with _connect(ctx, api_key, url, None) as client, _reported():
        statement = client.settlements.statement(settlement, payee)
        csv_text = (
            client.settlements.statement_csv(settlement, payee)
            if csv_out is not None
            else None
        )
    if csv_out is not None and csv_text is not None:
        try:
            csv_out.write_text(csv_text, encoding="utf-8")
        except OSError as exc:
            fail(f"--csv: cannot write {csv_out} ({exc.strerror})")
    if as_json:
        _out().print_json(statement.model_dump_json())
        return
    cur = statement.currency
    out = _out()
    out.print(
        f"statement of {statement.payee_id} for "
        f"{statement.period_start:%Y-%m-%d %H:%M} → "
        f"{statement.period_end:%Y-%m-%d %H:%M}: {len(statement.lines)} charges, "
        f"gross {_money(statement.gross_minor, cur)}, exchange fees "
        f"{_money(statement.fee_minor, cur)}, paid to you "
        f"{_money(statement.payout_minor, cur)}",
        markup=False,
        highlight=False,
    )
    if not statement.lines:
        return
    buckets: dict[str, int] = {}
    datasets: dict[str, int] = {}
    for line in statement.lines:
        key = line.captured_at.strftime(_BUCKETS[by])
        buckets[key] = buckets.get(key, 0) + line.payee_minor
        ds = str(line.dataset_id)
        datasets[ds] = datasets.get(ds, 0) + line.payee_minor
    for title, values in (
        (f"revenue per {by}", sorted(buckets.items())),
        ("revenue per dataset", sorted(datasets.items(), key=lambda kv: -kv[1])),
    ):
        top = max(v for _, v in values) or 1
        table = Table(title=title, show_header=False, box=None)
        table.add_column("when")
        table.add_column("bar")
        table.add_column("amount", justify="right")
        for label, amount in values:
            table.add_row(
                label, "█" * max(1, round(40 * amount / top)), _money(amount, cur)
            )
        out.print(table)
    if csv_out is not None:
        out.print(f"wrote {csv_out}", markup=False, highlight=False)

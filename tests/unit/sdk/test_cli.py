"""The SDK's typer apps, driven by ``CliRunner`` against the fake exchange."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from sdk import Keys
from sdk.cli import compute_app, datasets_app, jobs_app, keys_app, receipts_app
from tests.unit.sdk._fake import API_KEY, MODEL, MODEL_BIAS, MODEL_WEIGHTS, FakeExchange

runner = CliRunner()


def run(
    app: typer.Typer,
    args: list[str],
    exchange: FakeExchange | None = None,
    *,
    key_dir: Path | None = None,
    api_key: str | None = API_KEY,
) -> Result:
    """Invoke ``app`` with the exchange's transport and credentials from env."""
    env = {"COLUMNS": "200", "VEILX_API_KEY": api_key or ""}
    if exchange is not None:
        env["VEILX_URL"] = exchange.base_url
    if key_dir is not None:
        env["VEILX_KEY_DIR"] = str(key_dir)
    http = (
        httpx.Client(transport=httpx.MockTransport(exchange.handle))
        if exchange is not None
        else None
    )
    if app is compute_app or args[:1] == ["wait"]:
        args = [*args, "--poll-interval", "0"]
    return runner.invoke(app, args, env=env, obj=http)


def one_line_error(result: Result) -> str:
    """The single stderr line of a failed command (exit 2)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("veilx: error: ")
    return lines[0].removeprefix("veilx: error: ")


def _finished_job(exchange: FakeExchange, key_dir: Path) -> uuid.UUID:
    with exchange.client(key_dir) as client:
        job = client.jobs.create(
            exchange.dataset_id,
            kind="aggregate",
            purpose="research",
            params={"statistics": ["count"], "group_by": ["region"]},
        )
        client.jobs.wait(job.id, poll_interval=0)
    return job.id


# -- compute ------------------------------------------------------------------------


def test_aggregate_prints_a_table_and_the_receipt(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    result = run(
        compute_app,
        [
            "aggregate",
            str(exchange.dataset_id),
            "--purpose",
            "research",
            "--stat",
            "count",
            "--stat",
            "mean",
            "--column",
            "income",
            "--group-by",
            "region",
        ],
        exchange,
        key_dir=tmp_path,
    )
    assert result.exit_code == 0, result.stderr
    assert "mean(income)" in result.stdout
    counts = {r: int((exchange.data["region"] == r).sum()) for r in ("east", "west")}
    for region, count in counts.items():
        line = next(x for x in result.stdout.splitlines() if f" {region} " in x)
        assert f" {count} " in line
    assert "receipt verified" in result.stdout
    assert result.stderr == ""  # the spinner shows on terminals only


def test_aggregate_json(exchange: FakeExchange, tmp_path: Path) -> None:
    result = run(
        compute_app,
        [
            "aggregate",
            str(exchange.dataset_id),
            "--purpose",
            "research",
            "--stat",
            "count",
            "--mode",
            "dp",
            "--epsilon",
            "0.5",
            "--json",
        ],
        exchange,
        key_dir=tmp_path,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dp_applied"] is True
    assert data["receipt"]["verified"] is True
    assert data["receipt"]["node_id"] == str(exchange.node_id)
    assert 0 < data["privacy_loss"]["epsilon"] <= 0.5


def test_errors_are_one_line_with_exit_2(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    args = [
        "aggregate",
        str(exchange.dataset_id),
        "--purpose",
        "research",
        "--stat",
        "count",
    ]
    assert one_line_error(run(compute_app, args, exchange, api_key=None)) == (
        "no API key: pass --api-key or set VEILX_API_KEY"
    )
    missing = str(uuid.uuid4())
    message = one_line_error(
        run(compute_app, ["aggregate", missing, *args[2:]], exchange, key_dir=tmp_path)
    )
    assert message.startswith(f"no dataset {missing} (HTTP 404, not_found, request ")
    message = one_line_error(
        run(compute_app, [*args, "--mode", "dp"], exchange, key_dir=tmp_path)
    )
    assert message == "epsilon: is required when mode is 'dp'"
    failing = FakeExchange(fail_kind=("budget_exhausted", "ε budget spent"))
    message = one_line_error(
        run(compute_app, ["aggregate", str(failing.dataset_id), *args[2:]], failing)
    )
    assert message.endswith("rejected (budget_exhausted): ε budget spent")


def test_model_eval_with_csv_weights(
    exchange: FakeExchange, shared_key_dir: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "w.csv"
    weights.write_text("income,age,bias\n1.5,0.8,10\n")
    result = run(
        compute_app,
        [
            "model-eval",
            str(exchange.dataset_id),
            "--weights",
            str(weights),
            "--label",
            "spend",
            "--purpose",
            "research",
            "--json",
        ],
        exchange,
        key_dir=shared_key_dir,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    x = np.column_stack([exchange.data["income"], exchange.data["age"]])
    mse = float(np.mean((x @ [1.5, 0.8] + 10 - exchange.data["spend"]) ** 2))
    assert abs(data["mse"] - mse) <= 6 * data["loss_noise_std"] + 1e-3 * mse
    job = exchange.jobs[uuid.UUID(data["job_id"])]
    assert job["params"]["features"] == ["income", "age"]


def test_model_eval_table_and_json_weights(
    exchange: FakeExchange, shared_key_dir: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"weights": {"age": 0.8, "income": 1.5}, "bias": 9}))
    result = run(
        compute_app,
        [
            "model-eval",
            str(exchange.dataset_id),
            "--weights",
            str(weights),
            "--feature",
            "income",
            "--feature",
            "age",
            "--bias",
            "10",
            "--label",
            "spend",
            "--purpose",
            "research",
        ],
        exchange,
        key_dir=shared_key_dir,
    )
    assert result.exit_code == 0, result.stderr
    assert "mse" in result.stdout and "mean prediction" in result.stdout
    job = next(iter(exchange.jobs.values()))
    assert job["params"]["features"] == ["income", "age"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("w.json", '[1, "x"]', "is not a number"),
        ("w.json", "{", "is not valid JSON"),
        ("w.csv", "1,2,3\n", "features: name them with --feature"),
        ("w.csv", "age,income\n1\n", "one row of weights under its header"),
    ],
)
def test_bad_weight_files_are_one_line_errors(
    exchange: FakeExchange, tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = one_line_error(
        run(
            compute_app,
            [
                "model-eval",
                str(exchange.dataset_id),
                "--weights",
                str(path),
                "--label",
                "spend",
                "--purpose",
                "research",
            ],
            exchange,
            key_dir=tmp_path,
        )
    )
    assert message in error
    assert exchange.requests == []


def test_inference_from_csv_rows(
    exchange: FakeExchange, shared_key_dir: Path, tmp_path: Path
) -> None:
    rows = np.random.default_rng(2).uniform(0, 100, size=(25, 2))
    path = tmp_path / "rows.csv"
    path.write_text("age,income\n" + "\n".join(f"{a},{b}" for a, b in rows))
    out = tmp_path / "scores.csv"
    result = run(
        compute_app,
        [
            "inference",
            str(exchange.dataset_id),
            "--model",
            MODEL,
            "--rows",
            str(path),
            "--purpose",
            "research",
            "--output",
            str(out),
            "--show",
            "5",
        ],
        exchange,
        key_dir=shared_key_dir,
    )
    assert result.exit_code == 0, result.stderr
    assert "20 more" in result.stdout
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    expected = rows @ MODEL_WEIGHTS + MODEL_BIAS
    assert written.shape == (25, 2)
    assert np.abs(written[:, 1] - expected).max() < 1e-3


def test_inference_json_rows_and_bad_rows(
    exchange: FakeExchange, shared_key_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"rows": [[20, 50], [30, 60]]}))
    result = run(
        compute_app,
        [
            "inference",
            str(exchange.dataset_id),
            "--model",
            MODEL,
            "--rows",
            str(path),
            "--purpose",
            "research",
            "--json",
        ],
        exchange,
        key_dir=shared_key_dir,
    )
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)["scores"]
    assert scores == pytest.approx([101.0, 124.0], abs=1e-3)
    path.write_text("[[1, 2], [3]]")
    error = one_line_error(
        run(
            compute_app,
            [
                "inference",
                str(exchange.dataset_id),
                "--model",
                MODEL,
                "--rows",
                str(path),
                "--purpose",
                "research",
            ],
            exchange,
            key_dir=tmp_path,
        )
    )
    assert error == f"rows: row 2 of {path} has 1 values, not 2"


# -- jobs and receipts --------------------------------------------------------------


def test_jobs_show_list_and_wait(exchange: FakeExchange, tmp_path: Path) -> None:
    job_id = _finished_job(exchange, tmp_path)
    shown = run(jobs_app, ["show", str(job_id)], exchange)
    assert shown.exit_code == 0 and "succeeded" in shown.stdout
    assert str(exchange.node_id) in shown.stdout
    as_json = json.loads(
        run(jobs_app, ["show", str(job_id), "--json"], exchange).stdout
    )
    assert as_json["id"] == str(job_id)
    listed = run(jobs_app, ["list", "--state", "succeeded"], exchange)
    assert listed.exit_code == 0 and str(job_id) in listed.stdout
    assert "1 job" in listed.stdout
    waited = run(jobs_app, ["wait", str(job_id)], exchange)
    assert waited.exit_code == 0 and f"job {job_id} succeeded" in waited.stdout
    error = one_line_error(run(jobs_app, ["show", "nope"], exchange))
    assert error == "job_id: 'nope' is not a UUID"


def test_jobs_approve_deny_and_a_failed_wait(tmp_path: Path) -> None:
    from tests.unit.sdk._fake import make_policy

    exchange = FakeExchange(policy=make_policy(human_approval=True))
    with exchange.client(tmp_path) as client:
        ids = [
            client.jobs.create(
                exchange.dataset_id,
                kind="aggregate",
                purpose="research",
                params={"statistics": ["count"]},
            ).id
            for _ in range(2)
        ]
    approved = run(jobs_app, ["approve", str(ids[0]), "--note", "ok"], exchange)
    assert approved.exit_code == 0 and "approved: queued" in approved.stdout
    denied = run(jobs_app, ["deny", str(ids[1]), "--reason", "no"], exchange)
    assert denied.exit_code == 0 and "denied: rejected" in denied.stdout
    error = one_line_error(run(jobs_app, ["wait", str(ids[1])], exchange))
    assert error == f"job {ids[1]} rejected (denied): no"
    error = one_line_error(run(jobs_app, ["approve", str(ids[1])], exchange))
    assert "invalid_transition" in error


def test_receipts_show_and_verify(exchange: FakeExchange, tmp_path: Path) -> None:
    job_id = _finished_job(exchange, tmp_path)
    shown = run(receipts_app, ["show", str(job_id)], exchange)
    assert shown.exit_code == 0
    assert exchange.node_key.public_key_hex in shown.stdout
    verified = run(receipts_app, ["verify", str(job_id)], exchange)
    assert verified.exit_code == 0
    assert verified.stdout.strip().splitlines() == [
        f"receipt of job {job_id} verifies: signed by node {exchange.node_id}, "
        "output, params and inputs match, ε=0 δ=0"
    ]


def test_a_tampered_receipt_fails_verify_with_exit_1(tmp_path: Path) -> None:
    exchange = FakeExchange(tamper="foreign_key")
    job_id = _finished_job(exchange, tmp_path)
    result = run(receipts_app, ["verify", str(job_id)], exchange)
    assert result.exit_code == 1
    [line] = result.stdout.strip().splitlines()
    assert line.startswith(f"receipt of job {job_id} does NOT verify: signature: ")
    missing = one_line_error(run(receipts_app, ["verify", str(uuid.uuid4())], exchange))
    assert "HTTP 404" in missing


# -- keys and budgets ---------------------------------------------------------------


def test_keys_generate_and_list(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    made = run(keys_app, ["generate", "mine"], key_dir=key_dir)
    assert made.exit_code == 0, made.stderr
    context_id = Keys(key_dir).load("mine").context_id
    assert context_id in made.stdout
    assert oct((key_dir / "mine.key").stat().st_mode & 0o777) == "0o600"
    listed = run(keys_app, ["list"], key_dir=key_dir)
    assert "mine" in listed.stdout and "N=8192" in listed.stdout
    as_json = json.loads(run(keys_app, ["list", "--json"], key_dir=key_dir).stdout)
    assert as_json[0]["context_id"] == context_id
    error = one_line_error(run(keys_app, ["generate", "mine"], key_dir=key_dir))
    assert error.startswith("key 'mine': exists at ")
    error = one_line_error(
        run(keys_app, ["generate", "x", "--preset", "fast"], key_dir=key_dir)
    )
    assert error.startswith("--preset: 'fast' is not one of")
    empty = run(keys_app, ["list"], key_dir=tmp_path / "none")
    assert empty.exit_code == 0 and "no keys" in empty.stdout


def test_budget_chart(exchange: FakeExchange) -> None:
    other = uuid.uuid4()
    exchange.spent = {exchange.buyer_id: [0.5, 0.25], other: [3.8]}
    result = run(datasets_app, ["budget", str(exchange.dataset_id)], exchange)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    mine = next(x for x in lines if str(exchange.buyer_id) in x)
    theirs = next(x for x in lines if str(other) in x)
    total = next(x for x in lines if "all buyers" in x)
    assert "0.75 / 4" in mine and "19%" in mine
    assert "3.8 / 4" in theirs and "95%" in theirs
    assert "4.55 / 20" in total
    # the bars: longer for the buyer who spent more
    assert theirs.count("█") > mine.count("█") > 0
    assert lines.index(theirs) < lines.index(mine)
    data = json.loads(
        run(
            datasets_app, ["budget", str(exchange.dataset_id), "--json"], exchange
        ).stdout
    )
    assert len(data["buyers"]) == 2


def test_an_empty_budget(exchange: FakeExchange) -> None:
    result = run(datasets_app, ["budget", str(exchange.dataset_id)], exchange)
    assert result.exit_code == 0
    assert "no privacy budget spent" in result.stdout

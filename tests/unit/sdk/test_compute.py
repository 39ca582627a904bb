"""Compute flows end to end against the fake exchange, whose node really computes.

Results are checked against numpy on the node's data: exact aggregates exactly,
encrypted ones within CKKS precision, model metrics and inference scores within
the flooding noise the node reports.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from mpc_engine.he import ModelKind
from mpc_engine.protocol import JobState
from sdk import (
    AggregateResult,
    Client,
    InferenceResult,
    InputError,
    JobFailedError,
    JobProgress,
    KeyStoreError,
    ReceiptVerificationError,
    ResultError,
)
from tests.unit.sdk._fake import (
    MODEL,
    MODEL_BIAS,
    MODEL_WEIGHTS,
    REGIONS,
    FakeExchange,
)


def _by_region(exchange: FakeExchange, column: str) -> dict[str, np.ndarray]:
    data = exchange.data
    return {r: data[column][data["region"] == r] for r in REGIONS}


def test_exact_aggregate_matches_numpy(client: Client, exchange: FakeExchange) -> None:
    seen: list[JobProgress] = []
    result = client.compute.aggregate(
        exchange.dataset_id,
        statistics=["count", "mean", "sum"],
        columns=["income"],
        group_by=["region"],
        purpose="research",
        poll_interval=0,
        progress=seen.append,
    )
    expected = _by_region(exchange, "income")
    assert result.group_by == ["region"]
    assert [g.key for g in result.groups] == [(r,) for r in REGIONS]
    for group in result.groups:
        values = expected[str(group.key[0])]
        assert group.count == values.size
        assert group.mean["income"] == pytest.approx(values.mean(), rel=1e-12)
        assert group.sum["income"] == pytest.approx(values.sum(), rel=1e-12)
    assert not result.dp_applied and not result.encrypted
    assert result.privacy_loss.epsilon == 0.0
    assert result.receipt.node_id == exchange.node_id
    assert result.job.state is JobState.SUCCEEDED
    assert seen[-1].state is JobState.SUCCEEDED


def test_dp_aggregate_spends_and_reports_epsilon(
    client: Client, exchange: FakeExchange
) -> None:
    result = client.compute.aggregate(
        exchange.dataset_id,
        statistics=["count"],
        group_by=["region"],
        mode="dp",
        epsilon=1.0,
        purpose="research",
        poll_interval=0,
    )
    assert result.dp_applied and result.mechanism == "laplace"
    assert 0 < result.privacy_loss.epsilon <= 1.0
    assert result.receipt.privacy_loss == result.privacy_loss
    for group in result.groups:
        true = int((exchange.data["region"] == group.key[0]).sum())
        assert group.count is not None and abs(group.count - true) < 40
    budget = client.datasets.budget(exchange.dataset_id)
    assert budget.buyers[0].epsilon_spent == result.privacy_loss.epsilon


def test_encrypted_aggregate_decrypts_to_the_plain_answer(
    client: Client, exchange: FakeExchange
) -> None:
    kwargs = {
        "statistics": ["count", "sum", "mean", "histogram"],
        "columns": ["income"],
        "group_by": ["region"],
        "histogram_bins": 4,
        "purpose": "research",
        "poll_interval": 0,
    }
    plain = client.compute.aggregate(exchange.dataset_id, **kwargs)
    secret = client.compute.aggregate(
        exchange.dataset_id, encrypt_result=True, **kwargs
    )
    assert secret.encrypted and not plain.encrypted
    job = secret.job
    assert job.output["encrypted"] is True
    assert set(job.output_blobs) == {"values"}
    assert "$slot" in str(job.output["groups"])  # the exchange saw only the layout
    assert secret.histogram_edges == plain.histogram_edges
    for enc, ref in zip(secret.groups, plain.groups, strict=True):
        assert enc.key == ref.key
        assert enc.count == ref.count
        assert enc.histogram == ref.histogram
        assert enc.sum["income"] == pytest.approx(ref.sum["income"], abs=1e-3)
        assert enc.mean["income"] == pytest.approx(ref.mean["income"], abs=1e-4)


def test_aggregate_arguments_are_checked_first(
    client: Client, exchange: FakeExchange
) -> None:
    with pytest.raises(InputError) as caught:
        client.compute.aggregate(
            exchange.dataset_id, statistics=["count"], mode="dp", purpose="research"
        )
    assert caught.value.field == "epsilon"
    with pytest.raises(InputError) as caught:
        client.compute.aggregate(
            exchange.dataset_id, statistics=["count"], epsilon=1, purpose="research"
        )
    assert caught.value.field == "epsilon"
    with pytest.raises(InputError) as caught:
        client.compute.aggregate(
            exchange.dataset_id,
            statistics=["histogram"],
            columns=["income"],
            purpose="research",
        )
    assert caught.value.field == "histogram_bins"
    assert exchange.requests == []


def test_a_rejected_job_raises_with_its_reason(
    shared_key_dir: Path,
) -> None:
    exchange = FakeExchange(fail_kind=("budget_exhausted", "ε budget spent"))
    with exchange.client(shared_key_dir) as client:
        with pytest.raises(JobFailedError) as caught:
            client.compute.aggregate(
                exchange.dataset_id,
                statistics=["count"],
                purpose="research",
                poll_interval=0,
            )
    err = caught.value
    assert (err.state, err.reason_code, err.reason) == (
        JobState.REJECTED,
        "budget_exhausted",
        "ε budget spent",
    )
    assert str(err) == f"job {err.job_id} rejected (budget_exhausted): ε budget spent"


@pytest.mark.parametrize("tamper", ["signature", "output"])
def test_compute_never_returns_an_unverified_result(
    shared_key_dir: Path, tamper: str
) -> None:
    exchange = FakeExchange(tamper=tamper)
    with exchange.client(shared_key_dir) as client:
        with pytest.raises(ReceiptVerificationError):
            client.compute.aggregate(
                exchange.dataset_id,
                statistics=["count"],
                purpose="research",
                poll_interval=0,
            )


def test_linear_model_eval_matches_numpy(
    client: Client, exchange: FakeExchange
) -> None:
    w, b = np.array([0.75, 1.55]), 12.0
    result = client.compute.model_eval(
        exchange.dataset_id,
        weights=w,
        bias=b,
        features=["age", "income"],
        label="spend",
        purpose="research",
        poll_interval=0,
    )
    x = np.column_stack([exchange.data["age"], exchange.data["income"]])
    pred = x @ w + b
    mse = float(np.mean((pred - exchange.data["spend"]) ** 2))
    assert result.kind is ModelKind.LINEAR and result.log_loss is None
    assert result.mse is not None
    assert abs(result.mse - mse) <= 6 * result.loss_noise_std + 1e-3 * mse
    assert (
        abs(result.mean_score - pred.mean()) <= 6 * result.mean_score_noise_std + 1e-6
    )
    assert result.label_bounds == (0.0, 500.0) and result.n_features == 2
    assert result.gram_privacy_loss is not None
    job = result.job
    assert set(job.inputs) == {"outer", "linear"} and job.context_id is not None
    assert set(job.output_blobs) == {"loss", "mean_score"}
    assert result.receipt.receipt.kind.value == "encrypted_model_eval"


def test_logistic_model_eval_matches_the_degree_two_loss(
    client: Client, exchange: FakeExchange
) -> None:
    w, b = np.array([0.01, -0.01]), -0.2
    result = client.compute.model_eval(
        exchange.dataset_id,
        weights=w,
        bias=b,
        features=["age", "income"],
        label="defaulted",
        kind="logistic",
        purpose="research",
        poll_interval=0,
    )
    x = np.column_stack([exchange.data["age"], exchange.data["income"]])
    y = exchange.data["defaulted"].astype(np.float64)
    t = x @ w + b
    approx = float(np.mean(np.log(2) + (0.5 - y) * t + t**2 / 8))
    assert result.kind is ModelKind.LOGISTIC and result.mse is None
    assert result.log_loss is not None
    assert abs(result.log_loss - approx) <= 6 * result.loss_noise_std + 1e-6
    assert abs(result.mean_score - t.mean()) <= 6 * result.mean_score_noise_std + 1e-6


def test_model_eval_refuses_what_the_policy_does_not_bound(
    client: Client, exchange: FakeExchange
) -> None:
    with pytest.raises(InputError) as caught:
        client.compute.model_eval(
            exchange.dataset_id,
            weights=[1.0],
            bias=0.0,
            features=["region"],
            label="spend",
            purpose="research",
        )
    assert caught.value.field == "features"
    assert "only numeric and boolean" in caught.value.reason
    with pytest.raises(InputError) as caught:
        client.compute.model_eval(
            exchange.dataset_id,
            weights=[1.0, 2.0, 3.0],
            bias=0.0,
            features=["age", "income"],
            label="spend",
            purpose="research",
        )
    assert caught.value.field == "weights"
    with pytest.raises(InputError) as caught:
        client.compute.model_eval(
            exchange.dataset_id,
            weights=[1e6, 1e6],
            bias=0.0,
            features=["age", "income"],
            label="spend",
            purpose="research",
        )
    assert caught.value.field == "weights" and "range" in caught.value.reason
    assert not any(r.method == "POST" for r in exchange.requests)


def test_model_eval_needs_a_galois_key(exchange: FakeExchange, tmp_path: Path) -> None:
    with exchange.client(tmp_path) as client:
        client.keys.generate("model-eval", preset="model_eval")  # no Galois keys
        with pytest.raises(KeyStoreError) as caught:
            client.compute.model_eval(
                exchange.dataset_id,
                weights=[1.0, 1.0],
                bias=0.0,
                features=["age", "income"],
                label="spend",
                purpose="research",
            )
    assert "Galois" in caught.value.reason


def test_inference_matches_numpy_across_batches(
    client: Client, exchange: FakeExchange
) -> None:
    rng = np.random.default_rng(3)
    rows = rng.uniform([18, 0], [90, 200], size=(4096 + 37, 2))  # two batches
    result = client.compute.inference(
        exchange.dataset_id, model=MODEL, rows=rows, purpose="research", poll_interval=0
    )
    expected = rows @ MODEL_WEIGHTS + MODEL_BIAS
    assert result.scores.shape == (rows.shape[0],)
    assert np.abs(result.scores - expected).max() <= 6 * result.noise_std + 1e-7
    assert result.n_rows == rows.shape[0] and result.model == MODEL
    assert result.job.params == {"model": MODEL, "n_rows": rows.shape[0]}


def test_inference_checks_the_model_and_row_shape(
    client: Client, exchange: FakeExchange
) -> None:
    with pytest.raises(InputError) as caught:
        client.compute.inference(
            exchange.dataset_id, model="other", rows=np.ones((2, 2)), purpose="research"
        )
    assert caught.value.field == "model" and MODEL in caught.value.reason
    with pytest.raises(InputError) as caught:
        client.compute.inference(
            exchange.dataset_id, model=MODEL, rows=np.ones((2, 3)), purpose="research"
        )
    assert caught.value.field == "rows"
    with pytest.raises(InputError) as caught:
        client.compute.inference(
            exchange.dataset_id,
            model=MODEL,
            rows=[[1.0, float("nan")]],
            purpose="research",
        )
    assert caught.value.field == "rows"


def test_a_forgotten_context_is_uploaded_again(shared_key_dir: Path) -> None:
    exchange = FakeExchange()
    with exchange.client(shared_key_dir) as client:
        client.keys.upload_context("default")
        exchange.forget_contexts = True
        result = client.compute.inference(
            exchange.dataset_id,
            model=MODEL,
            rows=np.ones((2, 2)),
            purpose="research",
            poll_interval=0,
        )
    assert result.n_rows == 2
    uploads = [r for r in exchange.requests if r.path == "/v1/he-contexts"]
    jobs = [r for r in exchange.requests if r.path == "/v1/jobs" and r.method == "POST"]
    assert len(uploads) == 2 and len(jobs) == 2


def test_a_swapped_result_blob_is_refused(shared_key_dir: Path) -> None:
    exchange = FakeExchange()
    original = exchange._put

    def swap(data: bytes) -> str:
        sha = original(data)
        exchange.blobs[sha] = data[:-1] + bytes([data[-1] ^ 1])
        return sha

    exchange._put = swap  # type: ignore[method-assign]
    with exchange.client(shared_key_dir) as client:
        with pytest.raises(ResultError) as caught:
            client.compute.inference(
                exchange.dataset_id,
                model=MODEL,
                rows=np.ones((2, 2)),
                purpose="research",
                poll_interval=0,
            )
    assert "hash" in caught.value.reason


def test_submit_now_collect_later(shared_key_dir: Path) -> None:
    exchange = FakeExchange()
    rows = np.array([[20.0, 50.0], [30.0, 60.0]])
    with exchange.client(shared_key_dir) as client:
        inference = client.compute.inference(
            exchange.dataset_id, model=MODEL, rows=rows, purpose="research", wait=False
        )
        aggregate = client.compute.aggregate(
            exchange.dataset_id,
            statistics=["sum"],
            columns=["spend"],
            encrypt_result=True,
            purpose="research",
            wait=False,
        )
        assert inference.state is JobState.QUEUED
        assert aggregate.state is JobState.QUEUED
    # A new client (a later session) finds the keys by the jobs' context ids.
    with exchange.client(shared_key_dir) as later:
        scored = later.compute.result(str(inference.id), poll_interval=0)
        summed = later.compute.result(aggregate, poll_interval=0)
    assert isinstance(scored, InferenceResult)
    assert scored.scores == pytest.approx(rows @ MODEL_WEIGHTS + MODEL_BIAS, abs=1e-3)
    assert isinstance(summed, AggregateResult) and summed.encrypted
    assert summed.groups[0].sum["spend"] == pytest.approx(
        float(exchange.data["spend"].sum()), abs=1e-2
    )


def test_a_result_needs_the_key_that_submitted_it(
    shared_key_dir: Path, tmp_path: Path
) -> None:
    exchange = FakeExchange()
    with exchange.client(shared_key_dir) as client:
        job = client.compute.inference(
            exchange.dataset_id,
            model=MODEL,
            rows=np.ones((2, 2)),
            purpose="research",
            wait=False,
        )
    with exchange.client(tmp_path) as elsewhere, pytest.raises(KeyStoreError) as e:
        elsewhere.compute.result(job.id, poll_interval=0)
    assert "no key in" in e.value.reason


def test_a_job_recorded_with_other_params_is_not_used(
    client: Client, exchange: FakeExchange
) -> None:
    real = exchange._post_job

    def altered(request: httpx.Request, content: bytes) -> httpx.Response:
        response = real(request, content)
        job = exchange.jobs[uuid.UUID(response.json()["id"])]
        job["params"] = {**job["params"], "group_by": ["region"]}
        return httpx.Response(201, json=job)

    exchange._post_job = altered  # type: ignore[method-assign]
    with pytest.raises(ResultError) as caught:
        client.compute.aggregate(
            exchange.dataset_id, statistics=["count"], purpose="research"
        )
    assert caught.value.field == "params"

"""encrypted_model_eval and encrypted_inference jobs with real CKKS.

Cheapest presets (N = 8192): ``CKKSParams.model_eval()`` with Galois keys for
model evaluation, the default preset for inference.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import pytest

from mpc_engine.he import (
    EncryptedMetrics,
    EncryptedVector,
    ModelKind,
    SecretContext,
    decrypt_metrics,
    encrypt_columns,
    encrypt_model,
)
from mpc_engine.node import (
    Execution,
    GramStore,
    NodeIdentity,
    NodeState,
    ServedDataset,
    execute,
)
from mpc_engine.node import executor as executor_module
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.protocol import (
    JobKind,
    JobOutcome,
    ReasonCode,
    inputs_hash,
    model_eval_bounds,
    output_hash,
    pack_bundle,
    unpack_bundle,
)
from tests.unit.he._helpers import assert_only_intended
from tests.unit.node.factories import (
    BUYER,
    OTHER_BUYER,
    SCORE_MODEL,
    FakeInputs,
    credit_policy,
    make_spec,
    served,
)

FEATURES = ["age_years", "utilisation_ratio", "late_payments_12m"]
LABEL = "credit_limit_eur"


class Node:
    """A served dataset, its state and the job inputs the buyer uploaded."""

    def __init__(
        self,
        ds: ServedDataset,
        state: NodeState,
        grams: GramStore,
        identity: NodeIdentity,
    ) -> None:
        self.ds, self.state, self.grams, self.identity = ds, state, grams, identity
        self.inputs = FakeInputs()

    def run(self, kind: JobKind, params: dict[str, Any], **changes: Any) -> Execution:
        spec = make_spec(self.ds, kind, params, **changes)
        return execute(
            spec,
            dataset=self.ds,
            state=self.state,
            grams=self.grams,
            identity=self.identity,
            inputs=self.inputs,
        )

    def spent(self, buyer: Any = BUYER) -> float:
        accountant = self.state.accountant(self.ds.dataset_id, self.ds.policy)
        return accountant.spent(str(buyer)).epsilon


def _node(
    data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    *,
    epsilon: float = 0.5,
    **policy: Any,
) -> Node:
    return Node(
        served(data, credit_policy(**policy), epsilon=epsilon), state, grams, identity
    )


def _model_job(
    node: Node,
    keys: SecretContext,
    weights: list[float],
    bias: float,
    *,
    features: list[str] = FEATURES,
    label: str = LABEL,
    kind: ModelKind = ModelKind.LINEAR,
    **changes: Any,
) -> Execution:
    policy = node.ds.policy
    bounds = model_eval_bounds(policy, node.ds.data.column_types, features, label)
    model = encrypt_model(keys, weights, bias, kind, bounds)
    inputs = {
        "outer": node.inputs.add_blob(model.outer.to_bytes()),
        "linear": node.inputs.add_blob(model.linear.to_bytes()),
    }
    params = {"model_kind": kind.value, "features": features, "label": label}
    doc = {
        "inputs": inputs,
        "context_id": node.inputs.add_context(keys.public_bytes()),
    }
    doc.update(changes)
    return node.run(JobKind.ENCRYPTED_MODEL_EVAL, params, **doc)


def _metrics(keys: SecretContext, out: Execution) -> Any:
    output = out.result.output
    assert output is not None
    metrics = EncryptedMetrics(
        ModelKind(output["model_kind"]),
        EncryptedVector.from_bytes(keys, out.blobs["loss"], fresh=False),
        EncryptedVector.from_bytes(keys, out.blobs["mean_score"], fresh=False),
        tuple(output["label_bounds"]),
        tuple(output["noise_std"]),
    )
    return metrics, decrypt_metrics(keys, metrics)


def _clamped(data: LoadedDataset, policy: Any, names: list[str]) -> np.ndarray:
    cols = []
    for name in names:
        values = data.columns[name]
        if values.dtype.kind != "f":
            values = np.array([1.0 if v else 0.0 for v in values.tolist()])
        b = policy.column_bounds.get(name)
        cols.append(values if b is None else np.clip(values, b.lower, b.upper))
    return np.column_stack(cols)


def test_linear_model_metrics_match_the_data(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    # A large ε so the DP noise on the Gram matrix is small against the check.
    node = _node(
        credit_data,
        state,
        grams,
        identity,
        epsilon=50.0,
        budget_per_buyer={"epsilon": 60.0, "delta": 1e-6},
        budget_per_dataset={"epsilon": 100.0, "delta": 1e-5},
    )
    w, b = [30.0, 4000.0, -300.0], 1500.0
    out = _model_job(node, eval_keys, w, b)
    result = out.result
    assert result.outcome is JobOutcome.SUCCEEDED, result.reason
    xy = _clamped(credit_data, node.ds.policy, [*FEATURES, LABEL])
    pred = xy[:, :3] @ np.array(w) + b
    mse = float(np.mean((pred - xy[:, 3]) ** 2))
    _, metrics = _metrics(eval_keys, out)
    assert metrics.mse == pytest.approx(mse, rel=0.02)
    assert metrics.mean_score == pytest.approx(float(pred.mean()), rel=0.02)
    output = result.output
    assert output is not None
    assert output["n_features"] == 3 and output["model_kind"] == "linear"
    assert output["label_bounds"] == [250.0, 25000.0]
    loss = output["gram_privacy_loss"]
    assert 0 < loss["epsilon"] <= 50.0 and loss["delta"] == 0
    receipt = result.receipt
    assert receipt is not None
    receipt.verify(identity.key.public_key_hex)
    assert receipt.receipt.privacy_loss.epsilon == loss["epsilon"]
    spec = state.job(receipt.receipt.job_id).spec  # type: ignore[union-attr]
    assert receipt.receipt.inputs_hash == inputs_hash(spec.inputs, spec.context_id)
    assert receipt.receipt.output_hash == output_hash(output, result.output_blobs)
    assert node.spent() == loss["epsilon"]


def test_the_gram_release_is_computed_once_and_charged_once_per_buyer(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = executor_module.gram_matrix

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "gram_matrix", counting)
    node = _node(credit_data, state, grams, identity)
    w, b = [30.0, 4000.0, -300.0], 1500.0
    first = _model_job(node, eval_keys, w, b)
    assert first.result.outcome is JobOutcome.SUCCEEDED, first.result.reason
    charged = first.result.receipt.receipt.privacy_loss.epsilon  # type: ignore[union-attr]
    assert 0 < charged <= 0.5
    # The same features in another order (weights reordered): the same release,
    # post-processing only — no new Gram, no charge, the same metrics.
    order = [2, 0, 1]
    second = _model_job(
        node,
        eval_keys,
        [w[i] for i in order],
        b,
        features=[FEATURES[i] for i in order],
    )
    assert second.result.outcome is JobOutcome.SUCCEEDED
    assert second.result.receipt.receipt.privacy_loss.epsilon == 0  # type: ignore[union-attr]
    assert second.result.receipt.receipt.replayed is False  # type: ignore[union-attr]
    assert node.spent() == charged
    m1, first_metrics = _metrics(eval_keys, first)
    _, second_metrics = _metrics(eval_keys, second)
    std_mse = m1.noise_std[0] * (24750 / 2) ** 2
    assert abs(first_metrics.mse - second_metrics.mse) <= 12 * std_mse
    assert len(list(grams.directory.glob("*.npz"))) == 1
    assert len(calls) == 1
    # Another buyer pays for its first use of the same release.
    third = _model_job(node, eval_keys, w, b, buyer_id=OTHER_BUYER)
    assert third.result.receipt.receipt.privacy_loss.epsilon == charged  # type: ignore[union-attr]
    assert len(calls) == 1
    # ... from its own budget: the dataset's total counts the one release once.
    accountant = node.state.accountant(node.ds.dataset_id, node.ds.policy)
    assert node.spent(OTHER_BUYER) == charged
    assert accountant.spent().epsilon == charged
    # After a restart (a new cache object on the same directory) it is reused.
    node.grams = GramStore(grams.directory)
    fourth = _model_job(node, eval_keys, w, b)
    assert fourth.result.receipt.receipt.privacy_loss.epsilon == 0  # type: ignore[union-attr]
    assert len(calls) == 1
    # A different label is a different release.
    fifth = _model_job(node, eval_keys, w[:2], b, features=FEATURES[:2])
    assert fifth.result.outcome is JobOutcome.SUCCEEDED
    assert len(calls) == 2 and node.spent() > charged


def test_logistic_metrics_and_every_slot_of_the_answer(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    node = _node(
        credit_data,
        state,
        grams,
        identity,
        epsilon=50.0,
        budget_per_buyer={"epsilon": 60.0, "delta": 1e-6},
        budget_per_dataset={"epsilon": 100.0, "delta": 1e-5},
    )
    features = ["utilisation_ratio", "late_payments_12m", "cash_advance_share"]
    w, b = [1.2, 0.3, 0.5], -2.0
    out = _model_job(
        node,
        eval_keys,
        w,
        b,
        features=features,
        label="defaulted_next_6m",
        kind=ModelKind.LOGISTIC,
    )
    assert out.result.outcome is JobOutcome.SUCCEEDED, out.result.reason
    xy = _clamped(credit_data, node.ds.policy, [*features, "defaulted_next_6m"])
    t = xy[:, :3] @ np.array(w) + b
    approx = float(np.mean(np.log(2) + (0.5 - xy[:, 3]) * t + t**2 / 8))
    encrypted, metrics = _metrics(eval_keys, out)
    assert metrics.log_loss == pytest.approx(approx, rel=0.02)
    assert metrics.mean_score == pytest.approx(float(t.mean()), abs=0.02)
    for vec, std in zip(
        (encrypted.loss, encrypted.mean_score), encrypted.noise_std, strict=True
    ):
        slots = eval_keys.decrypt_slots(vec)
        assert_only_intended(
            slots,
            {0: float(slots[0].real)},
            std,
            forbidden=np.asarray([*w, b]),
        )


@pytest.mark.parametrize(
    ("params", "code", "reason"),
    [
        ({"features": ["account_ref"]}, ReasonCode.POLICY_VIOLATION,
         "column 'account_ref' is not permitted"),
        ({"features": ["employment_status"]}, ReasonCode.INVALID_PARAMS,
         "is categorical; only numeric and boolean"),
        ({"features": ["nope"]}, ReasonCode.INVALID_PARAMS, "has no column 'nope'"),
        ({"model_kind": "logistic"}, ReasonCode.INVALID_PARAMS,
         "a logistic model needs labels within [0, 1]"),
        ({"features": ["age_years", "age_years"]}, ReasonCode.INVALID_PARAMS,
         "columns named twice"),
    ],
)  # fmt: skip
def test_model_eval_parameter_refusals(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    params: dict[str, Any],
    code: ReasonCode,
    reason: str,
) -> None:
    node = _node(credit_data, state, grams, identity)
    doc = {"model_kind": "linear", "features": FEATURES, "label": LABEL} | params
    result = node.run(
        JobKind.ENCRYPTED_MODEL_EVAL,
        doc,
        inputs={"outer": "1" * 64, "linear": "2" * 64},
        context_id="3" * 64,
    ).result
    assert result.reason_code is code
    assert reason in (result.reason or "")
    assert node.inputs.fetched == []  # refused before reading any input


def test_too_few_complete_rows(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity, min_group_size=20_000)
    result = _model_job(node, eval_keys, [1.0, 1.0, 1.0], 0.0).result
    assert result.reason_code is ReasonCode.POLICY_VIOLATION
    assert "minimum group size (20000)" in (result.reason or "")
    assert node.spent() == 0
    assert list(grams.directory.glob("*.npz")) == []


def test_budget_for_a_new_release_is_checked_first(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity, epsilon=5.0)
    result = _model_job(node, eval_keys, [1.0, 1.0, 1.0], 0.0).result
    assert result.reason_code is ReasonCode.BUDGET_EXHAUSTED
    assert "has ε=3, δ=1e-06 left; the request needs ε=5" in (result.reason or "")
    assert list(grams.directory.glob("*.npz")) == []


def test_malformed_ciphertexts_and_contexts_are_refused_by_name(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
    infer_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity)
    garbage = node.inputs.add_blob(os.urandom(4096))
    out = _model_job(
        node,
        eval_keys,
        [1.0, 1.0, 1.0],
        0.0,
        inputs={"outer": garbage, "linear": garbage},
    )
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert (out.result.reason or "").startswith("inputs.outer: malformed ciphertext")
    # A model shaped for two features while the job names three.
    bounds = model_eval_bounds(
        node.ds.policy, credit_data.column_types, FEATURES[:2], LABEL
    )
    small = encrypt_model(eval_keys, [1.0, 1.0], 0.0, ModelKind.LINEAR, bounds)
    out = _model_job(
        node,
        eval_keys,
        [1.0, 1.0, 1.0],
        0.0,
        inputs={
            "outer": node.inputs.add_blob(small.outer.to_bytes()),
            "linear": node.inputs.add_blob(small.linear.to_bytes()),
        },
    )
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert "outer: has 16 slots; 3 features need 32" in (out.result.reason or "")
    # A blob whose bytes are not what its hash says.
    real = node.inputs.add_blob(small.outer.to_bytes())
    node.inputs.blobs[real] = b"tampered"
    out = _model_job(
        node, eval_keys, [1.0, 1.0, 1.0], 0.0, inputs={"outer": real, "linear": real}
    )
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert "do not match their SHA-256" in (out.result.reason or "")
    # A context without Galois keys cannot sum slots.
    out = _model_job(node, infer_keys, [1.0, 1.0, 1.0], 0.0)
    assert out.result.reason_code is ReasonCode.INVALID_CONTEXT
    assert "Galois keys" in (out.result.reason or "")
    # Bytes that are not a context at all.
    bogus = node.inputs.add_context(b"\x0a\x03abc")
    out = _model_job(node, eval_keys, [1.0, 1.0, 1.0], 0.0, context_id=bogus)
    assert out.result.reason_code is ReasonCode.INVALID_CONTEXT
    assert (out.result.reason or "").startswith("context_id: malformed context")
    assert node.spent() == 0  # every refusal released its reservation


# -- encrypted_inference ----------------------------------------------------------


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(0, 1.5, n), rng.integers(0, 12, n), rng.uniform(0, 1, n)]
    )


def _inference(
    node: Node, keys: SecretContext, x: np.ndarray, **changes: Any
) -> Execution:
    columns = encrypt_columns(keys, x)
    bundle = pack_bundle([[v.to_bytes() for v in batch] for batch in columns.batches])
    doc = {
        "inputs": {"columns": node.inputs.add_blob(bundle)},
        "context_id": node.inputs.add_context(keys.public_bytes()),
    }
    doc.update(changes)
    params = {"model": SCORE_MODEL.name, "n_rows": int(x.shape[0])}
    params.update(doc.pop("params", {}))
    return node.run(JobKind.ENCRYPTED_INFERENCE, params, **doc)


def test_inference_scores_and_every_slot(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    infer_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity)
    x = _rows(infer_keys.slot_count + 37)  # one full batch and a partial one
    out = _inference(node, infer_keys, x)
    result = out.result
    assert result.outcome is JobOutcome.SUCCEEDED, result.reason
    output = result.output
    assert output is not None
    assert output["model"] == "default-risk" and output["n_rows"] == x.shape[0]
    std = output["noise_std"]
    (row,) = unpack_bundle(out.blobs["scores"])
    assert len(row) == 2
    w, b = np.array(SCORE_MODEL.weights), SCORE_MODEL.bias
    expected = x @ w + b
    start = 0
    for blob in row:
        vec = EncryptedVector.from_bytes(infer_keys, blob, fresh=False)
        got = infer_keys.decrypt(vec)
        assert np.abs(got - expected[start : start + vec.size]).max() <= 6 * std
        slots = infer_keys.decrypt_slots(vec)
        if vec.size < infer_keys.slot_count:  # unused slots: noise only
            intended = {i: float(expected[start + i]) for i in range(vec.size)}
            assert_only_intended(slots, intended, std, forbidden=[*w, b])
        start += vec.size
    assert result.receipt is not None
    assert result.receipt.receipt.privacy_loss.epsilon == 0
    assert result.budget[0].inference_rows == x.shape[0]


def test_the_row_budget_per_buyer(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    infer_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity, inference_row_budget=60)
    first = _inference(node, infer_keys, _rows(50)).result
    assert first.outcome is JobOutcome.SUCCEEDED
    second = _inference(node, infer_keys, _rows(11)).result
    assert second.reason_code is ReasonCode.ROW_BUDGET_EXHAUSTED
    assert "has scored 50 of its 60 rows" in (second.reason or "")
    assert "needs 11" in (second.reason or "")
    third = _inference(node, infer_keys, _rows(10)).result
    assert third.outcome is JobOutcome.SUCCEEDED
    assert third.budget[0].inference_rows == 60
    other = _inference(node, infer_keys, _rows(60), buyer_id=OTHER_BUYER).result
    assert other.outcome is JobOutcome.SUCCEEDED
    assert other.budget[1].inference_rows == 120


def test_inference_refusals(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    infer_keys: SecretContext,
) -> None:
    node = _node(credit_data, state, grams, identity)
    x = _rows(20)
    out = _inference(node, infer_keys, x, params={"model": "no-such-model"})
    assert out.result.reason_code is ReasonCode.INVALID_PARAMS
    assert "registered: default-risk" in (out.result.reason or "")
    out = _inference(node, infer_keys, x, params={"n_rows": 21})
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert "holds 20 rows; params.n_rows says 21" in (out.result.reason or "")
    out = _inference(node, infer_keys, x[:, :2])
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert "has 2 feature columns; model 'default-risk' takes 3" in (
        out.result.reason or ""
    )
    bad = node.inputs.add_blob(b"not a bundle")
    out = _inference(node, infer_keys, x, inputs={"columns": bad})
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert out.result.reason == "inputs.columns: is not a veilx blob bundle (bad magic)"
    junk = node.inputs.add_blob(pack_bundle([[os.urandom(100)] * 3]))
    out = _inference(node, infer_keys, x, inputs={"columns": junk})
    assert out.result.reason_code is ReasonCode.INVALID_INPUT
    assert (out.result.reason or "").startswith("inputs.columns: malformed ciphertext")
    assert state.usage(node.ds.dataset_id, BUYER).inference_rows == 0


def test_a_gaussian_gram_release_spends_delta(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    node = Node(
        served(credit_data, credit_policy(), epsilon=0.5, delta=1e-7),
        state,
        grams,
        identity,
    )
    out = _model_job(node, eval_keys, [30.0, 4000.0, -300.0], 1500.0)
    assert out.result.outcome is JobOutcome.SUCCEEDED, out.result.reason
    output = out.result.output
    assert output is not None
    assert output["gram_privacy_loss"]["delta"] == 1e-7
    loss = out.result.receipt.receipt.privacy_loss  # type: ignore[union-attr]
    assert 0 < loss.epsilon <= 0.5 and loss.delta == 1e-7
    (release,) = grams.directory.glob("*.npz")
    with np.load(release) as data:
        assert str(data["mechanism"]) == "gaussian"
        # Only the perturbed moments and their description are stored.
        assert set(data.files) == {
            "moments", "n_rows", "feature_bounds", "label_bounds",
            "features", "label", "loss", "mechanism",
        }  # fmt: skip


@pytest.mark.slow
def test_a_million_rows_cost_the_encrypted_part_nothing(
    tmp_path: Any,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
) -> None:
    """Production size: 10⁶ rows in Parquet, reduced once, evaluated twice."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mpc_engine.node import load_dataset
    from mpc_engine.node.config import DatasetConfig
    from mpc_engine.node.listing import ListingColumn

    rng = np.random.default_rng(11)
    n = 1_000_000
    x = rng.uniform(0, 1, size=(n, 2))
    y = 2.0 * x[:, 0] - x[:, 1] + rng.normal(0, 0.1, n)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": y}), path)
    schema = [
        ListingColumn(name=c, type="float", sensitivity="sensitive")
        for c in ("a", "b", "y")
    ]
    config = DatasetConfig.model_validate(
        {
            "dataset_id": str(uuid.uuid4()),
            "source": {"kind": "parquet", "path": str(path)},
        }
    )
    data = load_dataset(config, schema)
    policy = credit_policy(
        permitted_kinds=["encrypted_model_eval"],
        permitted_columns=["a", "b", "y"],
        inference_row_budget=None,
        column_bounds={
            "a": {"lower": 0, "upper": 1},
            "b": {"lower": 0, "upper": 1},
            "y": {"lower": -2, "upper": 3},
        },
    )
    node = Node(served(data, policy, models=()), state, grams, identity)
    for _ in range(2):
        out = _model_job(
            node, eval_keys, [2.0, -1.0], 0.0, features=["a", "b"], label="y"
        )
        assert out.result.outcome is JobOutcome.SUCCEEDED, out.result.reason
        _, metrics = _metrics(eval_keys, out)
        assert metrics.mse == pytest.approx(0.01, abs=2e-3)
    assert len(list(grams.directory.glob("*.npz"))) == 1


def test_a_release_whose_first_job_failed_is_still_counted_by_the_next(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    eval_keys: SecretContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache may hold a release no job paid for (its job then failed): the
    next buyer's use must count it in the dataset's total, not ride on it.
    """
    real = executor_module.evaluate_model
    failures = [1]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise RuntimeError("the node ran out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "evaluate_model", flaky)
    node = _node(credit_data, state, grams, identity)
    w, b = [30.0, 4000.0, -300.0], 1500.0
    failed = _model_job(node, eval_keys, w, b)
    assert failed.result.outcome is JobOutcome.FAILED
    assert len(list(grams.directory.glob("*.npz"))) == 1  # the release is cached
    accountant = node.state.accountant(node.ds.dataset_id, node.ds.policy)
    assert accountant.spent().epsilon == 0
    other = _model_job(node, eval_keys, w, b, buyer_id=OTHER_BUYER)
    assert other.result.outcome is JobOutcome.SUCCEEDED, other.result.reason
    charged = other.result.receipt.receipt.privacy_loss.epsilon  # type: ignore[union-attr]
    accountant = node.state.accountant(node.ds.dataset_id, node.ds.policy)
    assert charged > 0 and accountant.spent().epsilon == charged

"""aggregate jobs: exact and DP answers, replay, budgets, encrypted results."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from mpc_engine.he import EncryptedVector, SecretContext
from mpc_engine.node import (
    Execution,
    GramStore,
    NodeIdentity,
    NodeState,
    ServedDataset,
    execute,
)
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.protocol import (
    AggregateParams,
    JobKind,
    JobOutcome,
    ReasonCode,
    inputs_hash,
    output_hash,
    params_hash,
    sha256_hex,
    unflatten_aggregate,
)
from tests.unit.node.factories import (
    BUYER,
    OTHER_BUYER,
    FakeInputs,
    credit_policy,
    make_spec,
    served,
)

DP_MEAN = {
    "statistics": ["mean", "count"],
    "columns": ["annual_income_eur"],
    "group_by": ["defaulted_next_6m"],
    "filter": "age_years >= 30",
    "mode": "dp",
    "dp": {"epsilon": 1.0},
}


class Node:
    """One node's executor context for a test."""

    def __init__(
        self,
        ds: ServedDataset,
        state: NodeState,
        grams: GramStore,
        identity: NodeIdentity,
        inputs: FakeInputs | None = None,
    ) -> None:
        self.ds, self.state, self.grams, self.identity = ds, state, grams, identity
        self.inputs = inputs or FakeInputs()

    def run(self, params: dict[str, Any], **changes: Any) -> Execution:
        spec = make_spec(self.ds, JobKind.AGGREGATE, params, **changes)
        return execute(
            spec,
            dataset=self.ds,
            state=self.state,
            grams=self.grams,
            identity=self.identity,
            inputs=self.inputs,
        )

    def spent(self, buyer: uuid.UUID | None = BUYER) -> float:
        accountant = self.state.accountant(self.ds.dataset_id, self.ds.policy)
        return accountant.spent(None if buyer is None else str(buyer)).epsilon


@pytest.fixture
def node(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> Node:
    return Node(served(credit_data, credit_policy()), state, grams, identity)


def test_exact_answer_and_its_receipt(node: Node, credit_data: LoadedDataset) -> None:
    params = {"statistics": ["count", "mean"], "columns": ["age_years"]}
    out = node.run(params)
    result = out.result
    assert result.outcome is JobOutcome.SUCCEEDED and out.blobs == {}
    group = result.output["groups"][0]  # type: ignore[index]
    ages = credit_data.columns["age_years"]
    assert group["count"] == ages.size
    assert group["mean"]["age_years"] == pytest.approx(float(ages.mean()))
    signed = result.receipt
    assert signed is not None
    signed.verify(node.identity.key.public_key_hex)
    r = signed.receipt
    spec = node.state.job(r.job_id).spec  # type: ignore[union-attr]
    normalised = AggregateParams.model_validate(spec.params).model_dump(mode="json")
    assert r.params_hash == params_hash(normalised) == params_hash(spec.params)
    assert r.inputs_hash == inputs_hash({}, None)
    assert r.output_hash == output_hash(result.output, {})
    assert r.dataset_version_hash == credit_data.content_hash
    assert r.policy_hash == node.ds.policy_hash
    assert r.node_id == node.identity.node_id
    assert r.privacy_loss.epsilon == 0 and r.replayed is False
    mine, total = result.budget
    assert mine.queries == 1 and total.queries == 1 and mine.epsilon_budget == 3.0


def test_identical_dp_question_is_replayed_at_no_cost(node: Node) -> None:
    first = node.run(DP_MEAN).result
    assert first.receipt is not None
    assert first.receipt.receipt.privacy_loss.epsilon == pytest.approx(1.0)
    assert first.receipt.receipt.replayed is False
    assert node.spent() == pytest.approx(1.0)
    # The same question, written differently: statistics order, filter spacing.
    same = DP_MEAN | {"statistics": ["count", "mean"], "filter": "age_years>=30"}
    again = node.run(same).result
    assert again.output == first.output
    assert again.receipt is not None
    assert again.receipt.receipt.replayed is True
    assert again.receipt.receipt.privacy_loss.epsilon == 0
    assert node.spent() == pytest.approx(1.0)
    assert again.budget[0].epsilon_spent == pytest.approx(1.0)
    assert again.budget[0].queries == 2
    # A different question gets fresh noise and is charged.
    other = node.run(DP_MEAN | {"filter": "age_years >= 31"}).result
    assert other.receipt is not None and other.receipt.receipt.replayed is False
    assert node.spent() == pytest.approx(2.0)
    # Another buyer asking the same question is charged for its own release.
    theirs = node.run(DP_MEAN, buyer_id=OTHER_BUYER).result
    assert theirs.receipt is not None and theirs.receipt.receipt.replayed is False
    assert node.spent(OTHER_BUYER) == pytest.approx(1.0)
    assert node.spent(None) == pytest.approx(3.0)
    assert theirs.budget[1].epsilon_spent == pytest.approx(3.0)


def test_overspend_is_refused_with_the_remaining_budget(node: Node) -> None:
    big = DP_MEAN | {"dp": {"epsilon": 2.0}}
    assert node.run(big).result.outcome is JobOutcome.SUCCEEDED
    refused = node.run(big | {"filter": "age_years >= 40"}).result
    assert refused.outcome is JobOutcome.REJECTED
    assert refused.reason_code is ReasonCode.BUDGET_EXHAUSTED
    assert "has ε=1, δ=1e-06 left" in (refused.reason or "")
    assert "needs ε=2" in (refused.reason or "")
    assert node.spent() == pytest.approx(2.0)  # nothing held or spent
    fits = node.run(DP_MEAN | {"filter": "age_years >= 50"}).result
    assert fits.outcome is JobOutcome.SUCCEEDED
    assert fits.budget[0].epsilon_spent == pytest.approx(3.0)


def test_the_dataset_total_budget_binds_across_buyers(
    credit_data: LoadedDataset,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
) -> None:
    policy = credit_policy(
        budget_per_buyer={"epsilon": 1.0, "delta": 1e-6},
        budget_per_dataset={"epsilon": 1.5, "delta": 1e-5},
    )
    node = Node(served(credit_data, policy), state, grams, identity)
    assert node.run(DP_MEAN).result.outcome is JobOutcome.SUCCEEDED
    refused = node.run(DP_MEAN, buyer_id=OTHER_BUYER).result
    assert refused.reason_code is ReasonCode.BUDGET_EXHAUSTED
    assert "the dataset's total budget" in (refused.reason or "")


def _decrypt_all(keys: SecretContext, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    vec = EncryptedVector.from_bytes(keys, blob, fresh=False)
    return keys.decrypt(vec), keys.decrypt_slots(vec)


def test_encrypted_result_decrypts_only_to_the_released_numbers(
    node: Node, infer_keys: SecretContext
) -> None:
    context_id = node.inputs.add_context(infer_keys.public_bytes())
    clear = node.run(DP_MEAN).result
    encrypted = node.run(DP_MEAN | {"encrypt_result": True}, context_id=context_id)
    result = encrypted.result
    assert result.outcome is JobOutcome.SUCCEEDED
    # Same question (encrypt_result is delivery, not a new question): replayed.
    assert result.receipt is not None and result.receipt.receipt.replayed is True
    assert node.spent() == pytest.approx(1.0)
    output = result.output
    assert output is not None and output["encrypted"] is True
    assert set(encrypted.blobs) == {"values"}
    assert result.output_blobs == {"values": sha256_hex(encrypted.blobs["values"])}
    assert "count" in str(output) and "$slot" in str(output)
    values, slots = _decrypt_all(infer_keys, encrypted.blobs["values"])
    skeleton = {k: v for k, v in output.items() if k != "encrypted"}
    decrypted = unflatten_aggregate(skeleton, values.tolist())
    assert clear.output is not None
    for got, want in zip(decrypted["groups"], clear.output["groups"], strict=True):
        assert got["key"] == want["key"] and got["count"] == want["count"]
        mean = want["mean"]["annual_income_eur"]
        assert got["mean"]["annual_income_eur"] == pytest.approx(mean, abs=1e-3)
    # Every slot: the released numbers, then nothing but encryption noise.
    n = values.size
    flat = np.array(
        [g[s] if s == "count" else g[s]["annual_income_eur"]
         for g in clear.output["groups"] for s in ("count", "mean")]
    )  # fmt: skip
    assert np.allclose(np.sort(slots[:n].real), np.sort(flat), atol=1e-3)
    assert np.abs(slots[:n].imag).max() < 1e-3
    assert np.abs(slots[n:]).max() < 1e-3


def test_encrypted_result_of_an_exact_question(
    node: Node, infer_keys: SecretContext
) -> None:
    context_id = node.inputs.add_context(infer_keys.public_bytes())
    params = {
        "statistics": ["sum", "count"],
        "columns": ["credit_limit_eur"],
        "group_by": ["housing_status"],
        "encrypt_result": True,
    }
    out = node.run(params, context_id=context_id)
    clear = node.run({k: v for k, v in params.items() if k != "encrypt_result"})
    assert out.result.outcome is JobOutcome.SUCCEEDED
    values, slots = _decrypt_all(infer_keys, out.blobs["values"])
    skeleton = {k: v for k, v in out.result.output.items() if k != "encrypted"}  # type: ignore[union-attr]
    got = unflatten_aggregate(skeleton, values.tolist())
    assert clear.result.output is not None
    for a, b in zip(got["groups"], clear.result.output["groups"], strict=True):
        assert a["count"] == b["count"]
        # Sums in the millions fit: the scale adapts to the magnitude.
        assert a["sum"]["credit_limit_eur"] == pytest.approx(
            b["sum"]["credit_limit_eur"], rel=1e-9
        )
    assert np.abs(slots[values.size :]).max() < 1e-2


def test_encrypted_result_refuses_a_malformed_context(node: Node) -> None:
    context_id = node.inputs.add_context(b"definitely not a TenSEAL context")
    result = node.run(DP_MEAN | {"encrypt_result": True}, context_id=context_id).result
    assert result.outcome is JobOutcome.REJECTED
    assert result.reason_code is ReasonCode.INVALID_CONTEXT
    assert (result.reason or "").startswith("context_id: malformed context")
    assert node.spent() == 0  # the reservation was released, nothing stored
    retry = node.run(DP_MEAN).result
    assert retry.receipt is not None and retry.receipt.receipt.replayed is False


def test_a_context_holding_a_secret_key_is_refused(
    node: Node, infer_keys: SecretContext
) -> None:
    from mpc_engine.he._backend import NativeContext

    native = NativeContext.generate(
        8192, (60, 40, 40, 60), 40, galois=False, n_threads=1
    )
    with_secret = native.serialize(secret=True, galois=False)
    context_id = node.inputs.add_context(with_secret)
    result = node.run(
        {"statistics": ["count"], "encrypt_result": True}, context_id=context_id
    ).result
    assert result.reason_code is ReasonCode.INVALID_CONTEXT
    assert "contains a secret key" in (result.reason or "")

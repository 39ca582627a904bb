"""encrypted_model_eval: correct metrics, nothing else recoverable, DP hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpc_engine.he import (
    EncryptedModel,
    Gram,
    GramBounds,
    ModelKind,
    PublicContext,
    SecretContext,
    augmented_weights,
    decrypt_metrics,
    encrypt_model,
    evaluate_model,
    gram_matrix,
    noise_bound,
)
from mpc_engine.he._backend import finalize
from mpc_engine.he._context import wrap_vector
from mpc_engine.he._model_eval import model_slots
from mpc_engine.he.errors import (
    ContextMismatch,
    InvalidInput,
    MissingGaloisKeys,
    ValueOutOfRange,
)
from tests.unit.he._helpers import assert_only_intended, uniform_rows

D = 16


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray, GramBounds, np.ndarray, float]:
    """Synthetic data inside its bounds, and a buyer's imperfect model of it."""
    rng = np.random.default_rng(42)
    lows = rng.uniform(-5, 0, D)
    highs = lows + rng.uniform(1, 6, D)
    x = uniform_rows(rng, 20_000, lows, highs)
    w_true = rng.normal(0, 0.4, D)
    y = x @ w_true + 1.5 + rng.normal(0, 2.0, 20_000)
    pad = 0.05 * (y.max() - y.min())
    bounds = GramBounds(
        tuple(zip(lows.tolist(), highs.tolist(), strict=True)),
        (float(y.min() - pad), float(y.max() + pad)),
    )
    w_buyer = w_true + rng.normal(0, 0.05, D)
    return x, y, bounds, w_buyer, 1.2


def test_linear_mse_and_mean_prediction(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    x, y, bounds, w, b = regression
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, ModelKind.LINEAR, bounds)
    metrics = decrypt_metrics(eval_keys, evaluate_model(eval_node, gram, model))
    mse = float(np.mean((x @ w + b - y) ** 2))
    assert metrics.kind is ModelKind.LINEAR and metrics.log_loss is None
    assert metrics.mse is not None
    assert abs(metrics.mse - mse) / mse <= 1e-3
    assert abs(metrics.mean_score - float(np.mean(x @ w + b))) <= (
        6 * metrics.mean_score_noise_std + 1e-6
    )
    assert 0 < metrics.loss_noise_std < 1e-3 * mse


def test_logistic_degree_two_log_loss(
    eval_keys: SecretContext, eval_node: PublicContext
) -> None:
    rng = np.random.default_rng(5)
    x = uniform_rows(rng, 10_000, [-2.0] * 6, [3.0] * 6)
    w, b = rng.normal(0, 0.3, 6), -0.2
    logits = x @ w + b
    y = (rng.uniform(size=10_000) < 1 / (1 + np.exp(-logits))).astype(float)
    bounds = GramBounds(((-2.0, 3.0),) * 6, (0.0, 1.0))
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, "logistic", bounds)
    metrics = decrypt_metrics(eval_keys, evaluate_model(eval_node, gram, model))
    closed_form = math.log(2) + float(np.mean((0.5 - y) * logits + logits**2 / 8))
    assert metrics.log_loss is not None and metrics.mse is None
    assert abs(metrics.log_loss - closed_form) <= 1e-3 * closed_form
    assert abs(metrics.mean_score - float(np.mean(logits))) <= (
        6 * metrics.mean_score_noise_std + 1e-6
    )
    # and nothing else is recoverable from either ciphertext
    enc = evaluate_model(eval_node, gram, model)
    intended = (closed_form, float(np.mean(logits)))
    for vec, value, std in zip(
        (enc.loss, enc.mean_score), intended, enc.noise_std, strict=True
    ):
        slots = eval_keys.decrypt_slots(vec)
        assert_only_intended(slots, {0: value}, std, forbidden=gram.moments, tol=1e-6)


def test_every_slot_of_every_result_shows_only_the_intended_value(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    x, y, bounds, w, b = regression
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, "linear", bounds)
    enc = evaluate_model(eval_node, gram, model)
    a = augmented_weights(w, b, "linear", bounds)
    intended = {
        "loss": float(a @ gram.moments @ a),
        "mean_score": float(a[:-1] @ gram.moments[0, :-1]),
    }
    entries = gram.moments[np.triu_indices(gram.dim)]
    assert np.sum(np.abs(entries) >= 8 * max(enc.noise_std)) >= entries.size // 2
    for (name, value), vec, std in zip(
        intended.items(), (enc.loss, enc.mean_score), enc.noise_std, strict=True
    ):
        slots = eval_keys.decrypt_slots(vec)
        assert slots.size == eval_keys.slot_count, name
        assert_only_intended(slots, {0: value}, std, forbidden=entries)


def test_the_leak_check_catches_an_unprotected_result(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    # Without masking and re-randomisation the slots hold partial sums and, for a
    # buyer that encrypts all ones, the Gram entries themselves.
    x, y, bounds, _, _ = regression
    gram = gram_matrix(x, y, bounds)
    outer_len, _ = model_slots(D)
    ones = eval_keys.encrypt(np.ones(outer_len))
    op = np.zeros(outer_len)
    op[: gram.dim**2] = gram.moments.ravel()
    moved = eval_node._adopt(ones, "ones", fresh=True)
    raw = eval_keys.decrypt_slots(wrap_vector(eval_node, moved._native.mul_plain(op)))
    np.testing.assert_allclose(raw.real[: gram.dim**2], gram.moments.ravel(), atol=1e-6)
    with pytest.raises(AssertionError):
        assert_only_intended(raw, {0: 0.0}, 1e-5, forbidden=gram.moments)
    summed = eval_keys.decrypt_slots(
        wrap_vector(eval_node, moved._native.mul_plain(op).sum())
    )
    with pytest.raises(AssertionError):
        assert_only_intended(summed, {0: float(op.sum())}, 1e-5)


def test_results_are_rerandomised(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    x, y, bounds, w, b = regression
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, "linear", bounds)
    one = evaluate_model(eval_node, gram, model)
    two = evaluate_model(eval_node, gram, model)
    assert one.loss.to_bytes() != two.loss.to_bytes()
    d1 = eval_keys.decrypt_slots(one.loss)
    d2 = eval_keys.decrypt_slots(two.loss)
    assert np.abs(d1[1:] - d2[1:]).max() > 0  # independent flooding draws


def test_circuit_noise_is_within_the_estimate(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    # The flooding calibration rests on this estimate: measure the real noise.
    x, y, bounds, w, b = regression
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, "linear", bounds)
    outer = eval_node._adopt(model.outer, "outer", fresh=True)
    op = np.zeros(model.outer.size)
    op[: gram.dim**2] = gram.moments.ravel()
    keep = np.zeros(eval_keys.slot_count)
    keep[0] = 1.0
    raw = finalize(
        outer._native.mul_plain(op).sum(), keep=keep, offset=None, flood_std=0.0, size=1
    )
    a = augmented_weights(w, b, "linear", bounds)
    slots = eval_keys.decrypt_slots(wrap_vector(eval_node, raw))
    bound = noise_bound(
        eval_keys.params, operand_norm=float(np.linalg.norm(op)), rotations=True
    )
    assert abs(slots[0] - a @ gram.moments @ a) <= bound
    assert np.abs(slots[1:]).max() <= bound


def test_a_dishonest_buyer_reads_one_moment_per_query_and_dp_covers_it(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    # Documented leak: encrypting a unit vector instead of a ⊗ a reads one entry.
    x, y, bounds, _, _ = regression
    gram = gram_matrix(x, y, bounds)
    outer_len, linear_len = model_slots(D)
    i, j = 3, 7
    unit = np.zeros(outer_len)
    unit[i * gram.dim + j] = 1.0
    model = EncryptedModel(
        ModelKind.LINEAR,
        D,
        eval_keys.encrypt(unit),
        eval_keys.encrypt(np.zeros(linear_len)),
    )
    enc = evaluate_model(eval_node, gram, model)
    leaked = float(eval_keys.decrypt(enc.loss)[0])
    assert abs(leaked - gram.moments[i, j]) <= 6 * enc.noise_std[0]
    # With the Gram matrix perturbed for DP, the same query reads the noisy entry.
    rows, _ = Gram.noise_indices(gram.dim)
    noisy = gram.perturbed(np.full(rows.size, 0.05))
    enc = evaluate_model(eval_node, noisy, model)
    leaked = float(eval_keys.decrypt(enc.loss)[0])
    assert abs(leaked - noisy.moments[i, j]) <= 6 * enc.noise_std[0]
    assert abs(leaked - gram.moments[i, j]) > 0.04


def test_refusals(
    eval_keys: SecretContext,
    eval_node: PublicContext,
    infer_node: PublicContext,
    regression: tuple,
) -> None:
    x, y, bounds, w, b = regression
    gram = gram_matrix(x, y, bounds)
    model = encrypt_model(eval_keys, w, b, "linear", bounds)
    with pytest.raises(MissingGaloisKeys) as err:
        evaluate_model(infer_node, gram, model)
    assert err.value.computation == "encrypted_model_eval"
    small = gram_matrix(x[:, :3], y, GramBounds(bounds.features[:3], bounds.label))
    with pytest.raises(ContextMismatch, match="16 features"):
        evaluate_model(eval_node, small, model)
    other = SecretContext.generate(eval_keys.params, galois=False)
    foreign = encrypt_model(other, w, b, "linear", bounds)
    with pytest.raises(ContextMismatch, match="another key"):
        evaluate_model(eval_node, gram, foreign)
    with pytest.raises(InvalidInput, match=r"within \[0, 1\]"):
        encrypt_model(eval_keys, w, b, "logistic", bounds)
    with pytest.raises(ValueOutOfRange) as out:
        encrypt_model(eval_keys, w * 1e4, b, "linear", bounds)
    assert out.value.limit == eval_keys.params.max_result_magnitude
    with pytest.raises(InvalidInput) as bad:
        encrypt_model(eval_keys, w[:3], b, "linear", bounds)
    assert bad.value.field == "weights"
    with pytest.raises(InvalidInput):
        encrypt_model(eval_keys, w, float("nan"), "linear", bounds)


def test_uploaded_model_bytes_are_checked(
    eval_keys: SecretContext, eval_node: PublicContext, regression: tuple
) -> None:
    _, _, bounds, w, b = regression
    model = encrypt_model(eval_keys, w, b, "linear", bounds)
    loaded = EncryptedModel.from_bytes(
        eval_node,
        kind="linear",
        n_features=D,
        outer=model.outer.to_bytes(),
        linear=model.linear.to_bytes(),
    )
    assert loaded.outer.context is eval_node
    with pytest.raises(ContextMismatch, match="slots"):
        EncryptedModel.from_bytes(
            eval_node,
            kind="linear",
            n_features=D,
            outer=model.linear.to_bytes(),
            linear=model.linear.to_bytes(),
        )

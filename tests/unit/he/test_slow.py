"""Production-size parameters and row counts (``-m slow``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpc_engine.he import (
    CKKSParams,
    GramBounds,
    PublicContext,
    SecretContext,
    augmented_weights,
    decrypt_metrics,
    decrypt_scores,
    encrypt_columns,
    encrypt_model,
    evaluate_model,
    gram_matrix,
    score_linear,
)
from tests.unit.he._helpers import assert_only_intended, uniform_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_keys() -> SecretContext:
    """N=16384, Δ=2^50, with Galois keys."""
    return SecretContext.generate(CKKSParams.high_precision(), galois=True)


@pytest.fixture(scope="module")
def big_node(big_keys: SecretContext) -> PublicContext:
    """The node's view of ``big_keys``."""
    return PublicContext.from_bytes(big_keys.public_bytes())


def test_high_precision_model_eval(
    big_keys: SecretContext, big_node: PublicContext
) -> None:
    rng = np.random.default_rng(17)
    d = 24
    x = uniform_rows(rng, 50_000, [-1.0] * d, [1.0] * d)
    w = rng.normal(0, 0.3, d)
    y = x @ w + rng.normal(0, 0.5, 50_000)
    bounds = GramBounds(((-1.0, 1.0),) * d, (float(y.min()), float(y.max())))
    gram = gram_matrix(x, y, bounds)
    w_buyer = w + rng.normal(0, 0.01, d)
    enc = evaluate_model(
        big_node, gram, encrypt_model(big_keys, w_buyer, 0.0, "linear", bounds)
    )
    metrics = decrypt_metrics(big_keys, enc)
    mse = float(np.mean((x @ w_buyer - y) ** 2))
    assert metrics.mse is not None
    assert abs(metrics.mse - mse) / mse <= 1e-3
    a = augmented_weights(w_buyer, 0.0, "linear", bounds)
    slots = big_keys.decrypt_slots(enc.loss)
    assert slots.size == 8192
    assert_only_intended(
        slots,
        {0: float(a @ gram.moments @ a)},
        enc.noise_std[0],
        forbidden=gram.moments,
    )

    yl = (rng.uniform(size=50_000) < 1 / (1 + np.exp(-(x @ w)))).astype(float)
    lb = GramBounds(bounds.features, (0.0, 1.0))
    enc = evaluate_model(
        big_node,
        gram_matrix(x, yl, lb),
        encrypt_model(big_keys, w, 0.1, "logistic", lb),
    )
    t = x @ w + 0.1
    closed = math.log(2) + float(np.mean((0.5 - yl) * t + t**2 / 8))
    log_loss = decrypt_metrics(big_keys, enc).log_loss
    assert log_loss is not None and abs(log_loss - closed) <= 1e-4 * closed


def test_high_precision_inference(
    big_keys: SecretContext, big_node: PublicContext
) -> None:
    rng = np.random.default_rng(18)
    x = rng.uniform(-3, 3, size=(3 * big_keys.slot_count + 17, 9))
    w, b = rng.normal(0, 1, 9), 0.5
    scores = score_linear(big_node, encrypt_columns(big_keys, x), w, b)
    got = decrypt_scores(big_keys, scores)
    assert np.abs(got - (x @ w + b)).max() <= 6 * scores.noise_std + 1e-9
    last = big_keys.decrypt_slots(scores.batches[-1])
    intended = {i: float(x[-17 + i] @ w + b) for i in range(17)}
    assert_only_intended(last, intended, scores.noise_std, forbidden=np.r_[w, b])


def test_a_million_rows(eval_keys: SecretContext, eval_node: PublicContext) -> None:
    rng = np.random.default_rng(19)
    d = 16
    x = uniform_rows(rng, 1_000_000, [0.0] * d, [10.0] * d)
    w = rng.normal(0, 0.2, d)
    y = x @ w + rng.normal(0, 3.0, 1_000_000)
    bounds = GramBounds(((0.0, 10.0),) * d, (float(y.min()), float(y.max())))
    gram = gram_matrix(x, y, bounds)
    assert gram.n_rows == 1_000_000
    metrics = decrypt_metrics(
        eval_keys,
        evaluate_model(
            eval_node, gram, encrypt_model(eval_keys, w, 0.0, "linear", bounds)
        ),
    )
    mse = float(np.mean((x @ w - y) ** 2))
    assert metrics.mse is not None and abs(metrics.mse - mse) / mse <= 1e-3

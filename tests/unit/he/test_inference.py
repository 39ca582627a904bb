"""encrypted_inference: column-packed scores, masked and flooded batches."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_engine.he import (
    EncryptedColumns,
    PublicContext,
    SecretContext,
    decrypt_scores,
    encrypt_columns,
    score_linear,
)
from mpc_engine.he._context import wrap_vector
from mpc_engine.he.errors import ContextMismatch, InvalidInput
from tests.unit.he._helpers import assert_only_intended

FEATURES = 9


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, float]:
    """The provider's registered linear model."""
    rng = np.random.default_rng(9)
    return rng.normal(0, 1.0, FEATURES), 3.75


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, FEATURES))


def test_scores_match_numpy_across_full_and_partial_batches(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    w, b = model
    x = _rows(infer_keys.slot_count + 300)  # one full batch, one partial
    columns = encrypt_columns(infer_keys, x)
    assert [len(batch) for batch in columns.batches] == [FEATURES, FEATURES]
    scores = score_linear(infer_node, columns, w, b)
    got = decrypt_scores(infer_keys, scores)
    assert got.shape == (x.shape[0],)
    assert np.abs(got - (x @ w + b)).max() <= 6 * scores.noise_std + 1e-7
    assert scores.noise_std < 1e-4


def test_every_slot_shows_only_the_scores(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    w, b = model
    x = _rows(infer_keys.slot_count + 300, seed=1)
    scores = score_linear(infer_node, encrypt_columns(infer_keys, x), w, b)
    expected = x @ w + b
    forbidden = np.concatenate([w, [b]])
    start = 0
    for vec in scores.batches:
        slots = infer_keys.decrypt_slots(vec)
        rows = vec.size
        intended = {i: float(expected[start + i]) for i in range(rows)}
        if rows == infer_keys.slot_count:  # full batch: real parts are all scores
            assert np.abs(slots.real - expected[start : start + rows]).max() <= (
                6 * scores.noise_std
            )
            imag = slots.imag
            assert np.abs(imag).max() <= 6 * scores.noise_std
            assert 0.9 <= float(np.std(imag)) / scores.noise_std <= 1.1
        else:  # partial batch: unused slots must not show the bias or row copies
            assert_only_intended(slots, intended, scores.noise_std, forbidden=forbidden)
        start += rows


def test_the_leak_check_catches_an_unmasked_batch(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    # Zero-padded columns scored without the mask: every unused slot holds the bias.
    w, b = model
    padded = np.zeros((infer_keys.slot_count, FEATURES))
    padded[:10] = _rows(10, seed=2)
    columns = encrypt_columns(infer_keys, padded)
    cols = [infer_node._adopt(v, "c", fresh=True) for v in columns.batches[0]]
    acc = cols[0]._native.mul_scalar(w[0])
    for j in range(1, FEATURES):
        acc.add_(cols[j]._native.mul_scalar(w[j]))
    raw = infer_keys.decrypt_slots(wrap_vector(infer_node, acc)) + b  # bias, no mask
    intended = {i: float(padded[i] @ w + b) for i in range(10)}
    with pytest.raises(AssertionError):
        assert_only_intended(raw, intended, 1e-5, forbidden=[b])


def test_dp_noise_is_added_per_row(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    w, b = model
    x = _rows(50, seed=3)
    noise = np.random.default_rng(4).laplace(0, 0.5, 50)
    scores = score_linear(infer_node, encrypt_columns(infer_keys, x), w, b, noise=noise)
    got = decrypt_scores(infer_keys, scores)
    assert np.abs(got - (x @ w + b + noise)).max() <= 6 * scores.noise_std + 1e-7
    with pytest.raises(InvalidInput, match="one value per row"):
        score_linear(infer_node, encrypt_columns(infer_keys, x), w, b, noise=noise[:10])


def test_zero_weights_score_the_bias(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    x = _rows(20, seed=5)
    scores = score_linear(
        infer_node, encrypt_columns(infer_keys, x), np.zeros(FEATURES), -1.25
    )
    got = decrypt_scores(infer_keys, scores)
    assert np.abs(got + 1.25).max() <= 6 * scores.noise_std + 1e-7


def test_uploaded_batches_are_checked(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    w, b = model
    x = _rows(infer_keys.slot_count + 10, seed=6)
    columns = encrypt_columns(infer_keys, x)
    wire = [[vec.to_bytes() for vec in batch] for batch in columns.batches]
    loaded = EncryptedColumns.from_bytes(infer_node, wire)
    assert loaded.n_rows == x.shape[0] and loaded.n_features == FEATURES
    got = decrypt_scores(infer_keys, score_linear(infer_node, loaded, w, b))
    assert np.abs(got - (x @ w + b)).max() < 1e-3
    with pytest.raises(ContextMismatch, match="columns"):
        EncryptedColumns.from_bytes(infer_node, [wire[0], wire[1][:3]])
    with pytest.raises(ContextMismatch, match="only the last batch"):
        EncryptedColumns.from_bytes(infer_node, [wire[1], wire[0]])
    mixed = [[*wire[1][:-1], wire[0][-1]]]
    with pytest.raises(ContextMismatch, match="different row counts"):
        EncryptedColumns.from_bytes(infer_node, mixed)
    with pytest.raises(InvalidInput):
        EncryptedColumns.from_bytes(infer_node, [])


def test_bad_inputs_are_refused(
    infer_keys: SecretContext, infer_node: PublicContext, model: tuple
) -> None:
    w, b = model
    columns = encrypt_columns(infer_keys, _rows(5))
    with pytest.raises(ContextMismatch, match="9"):
        score_linear(infer_node, columns, w[:4], b)
    with pytest.raises(InvalidInput) as err:
        score_linear(infer_node, columns, np.full(FEATURES, np.nan), b)
    assert err.value.field == "weights"
    with pytest.raises(InvalidInput):
        score_linear(infer_node, columns, w, float("inf"))
    with pytest.raises(InvalidInput):
        encrypt_columns(infer_keys, np.zeros((0, 3)))
    with pytest.raises(InvalidInput):
        encrypt_columns(infer_keys, [[1.0, np.nan]])
    other = SecretContext.generate()
    with pytest.raises(ContextMismatch, match="another key"):
        score_linear(infer_node, encrypt_columns(other, _rows(5)), w, b)

"""``encrypted_model_eval``: a buyer's encrypted model scored on the node's Gram matrix.

Protocol (Aono, Hayashi, Trieu Phong, Wang, "Scalable and secure logistic
regression via homomorphic encryption", CODASPY 2016, push the row dimension into
plaintext sufficient statistics the same way):

1. Buyer: from its weights w, bias b and the public clamping bounds, forms the
   augmented vector a of length m = d + 2 in the node's normalised coordinates
   (:func:`augmented_weights`) and encrypts ``vec(a ⊗ a)`` and ``a``, each
   zero-padded to a power of two (TenSEAL sums a power-of-two length with log₂
   rotations; other lengths cost about twice as many).
2. Node: with M the normalised moments (:mod:`._gram`),

   * linear: ``aᵀMa = MSE / h_y²`` — one plaintext-ciphertext dot product of
     ``vec(a ⊗ a)`` with ``vec(M)``; the mean prediction from ``a · M[0]``;
   * logistic (labels in [0, 1], t = b + w·x): the degree-2 Taylor expansion of
     the log-loss at t = 0, ``log(1 + eᵗ) − y·t ≈ log 2 + (½ − y)·t + t²/8``,
     averaged: ``log 2 + a·((½ − c_y)·M[0] − h_y·M[m−1]) + aᵀMa / 8``.

   Each metric is one ct×pt product (depth 1), a rotation sum, then the 0/1 mask
   keeping slot 0 (depth 2), a fresh encryption of zero and flooding noise
   (:func:`._backend.finalize`). The cost is independent of the row count.
3. Buyer: decrypts slot 0 of each result and maps it back to its units.

What a dishonest buyer learns: it chooses what it encrypts. In place of
``vec(a ⊗ a)`` it can submit any vector u and learn ``Σ uₖ·vec(M)ₖ`` — an
arbitrary linear functional of the normalised moments — per query, and any linear
functional of the first row of M through the ``a`` ciphertext. A unit vector reads
one entry (a column mean, a covariance); m(m+1)/2 queries read all of M. M is an
aggregate over n clamped rows, but aggregates still leak rows (small n,
differencing across dataset versions), so the node must make M differentially
private: draw noise for :func:`.sensitivity` ``(bounds, n).moments`` and evaluate on
``gram.perturbed(noise)``. Every answer, for any u, is then post-processing of that
one release; caching the perturbed Gram per dataset version gives identical
answers to identical questions. Noise added to the encrypted result instead
(:func:`.add_noise`) cannot be calibrated: its sensitivity depends on u, which the
node cannot see. The flooding noise separately hides the computation's own noise
(which depends on M and is otherwise readable by the key holder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from mpc_engine.he._backend import FloatArray, finalize
from mpc_engine.he._context import (
    EncryptedVector,
    PublicContext,
    SecretContext,
    real_vector,
    wrap_vector,
)
from mpc_engine.he._gram import Gram, GramBounds
from mpc_engine.he._params import DEFAULT_HIDING_BITS, flooding_std
from mpc_engine.he.errors import (
    ContextMismatch,
    InvalidInput,
    MissingGaloisKeys,
    ValueOutOfRange,
)

_LOG2 = math.log(2.0)


class ModelKind(StrEnum):
    """The model families ``encrypted_model_eval`` scores."""

    LINEAR = "linear"
    LOGISTIC = "logistic"


def _padded(length: int) -> int:
    """The power of two at or above ``length``: the slot length of a model vector."""
    return 1 << (length - 1).bit_length()


def model_slots(n_features: int) -> tuple[int, int]:
    """Slot lengths of the ``outer`` and ``linear`` ciphertexts for d features."""
    m = n_features + 2
    return _padded(m * m), _padded(m)


def _check_label_bounds(kind: ModelKind, bounds: GramBounds) -> None:
    lo, hi = bounds.label
    if kind is ModelKind.LOGISTIC and not (0.0 <= lo and hi <= 1.0):
        raise InvalidInput(
            "bounds.label",
            f"is ({lo:g}, {hi:g}); a logistic model needs labels within [0, 1]",
        )


def augmented_weights(
    weights: npt.ArrayLike, bias: float, kind: ModelKind, bounds: GramBounds
) -> FloatArray:
    """Map a model onto the node's normalised coordinates.

    With ``x = c + h ∘ x'`` and ``y = c_y + h_y y'`` (see :mod:`._gram`):

    * linear: ``a = [(b + w·c − c_y) / h_y, (w ∘ h) / h_y, −1]``, so that
      ``a·z = (b + w·x − y) / h_y`` is the scaled residual;
    * logistic: ``a = [b + w·c, w ∘ h, 0]``, so that ``a·z`` is the logit.

    Returns
    -------
    numpy.ndarray
        The vector a of length d + 2.
    """
    kind = ModelKind(kind)
    d = bounds.n_features
    w = real_vector(weights, "weights", 1 << 20)
    if w.size != d:
        raise InvalidInput("weights", f"has {w.size} values; the bounds have {d}")
    b = float(bias)
    if not math.isfinite(b):
        raise InvalidInput("bias", "must be a finite number")
    c, h = bounds.centres, bounds.half_widths
    c_y, h_y = float(c[-1]), float(h[-1])
    scaled = w * h[:-1]
    offset = b + float(w @ c[:-1])
    if kind is ModelKind.LINEAR:
        out: FloatArray = np.concatenate([[(offset - c_y) / h_y], scaled / h_y, [-1.0]])
    else:
        out = np.concatenate([[offset], scaled, [0.0]])
    return out


@dataclass(frozen=True)
class EncryptedModel:
    """A buyer's model as the node receives it (see the module docstring)."""

    kind: ModelKind
    n_features: int
    outer: EncryptedVector
    linear: EncryptedVector

    @classmethod
    def from_bytes(
        cls,
        context: PublicContext,
        *,
        kind: ModelKind | str,
        n_features: int,
        outer: bytes,
        linear: bytes,
    ) -> EncryptedModel:
        """Load the two fresh ciphertexts a buyer uploaded (see :func:`model_slots`)."""
        kind = ModelKind(kind)
        if isinstance(n_features, bool) or not isinstance(n_features, int):
            raise InvalidInput("n_features", "must be an integer")
        if n_features < 1:
            raise InvalidInput("n_features", "must be at least 1")
        vectors = []
        lengths = model_slots(n_features)
        for name, data, length in zip(
            ("outer", "linear"), (outer, linear), lengths, strict=True
        ):
            vec = EncryptedVector.from_bytes(context, data, fresh=True)
            if vec.size != length:
                raise ContextMismatch(
                    name, f"has {vec.size} slots; {n_features} features need {length}"
                )
            vectors.append(vec)
        return cls(kind, n_features, vectors[0], vectors[1])


def encrypt_model(
    context: SecretContext,
    weights: npt.ArrayLike,
    bias: float,
    kind: ModelKind | str,
    bounds: GramBounds,
) -> EncryptedModel:
    """Encrypt a linear or logistic model for ``encrypted_model_eval`` (buyer side).

    Parameters
    ----------
    context
        The buyer's key pair; its public part must have Galois keys at the node.
    weights, bias
        The model: score = bias + weights · x.
    kind
        ``"linear"`` or ``"logistic"``.
    bounds
        The public clamping bounds of the listing (from its rights policy).

    Raises
    ------
    ValueOutOfRange
        The model is so large (in normalised units) that a metric could exceed
        the ciphertext's range and decrypt to garbage.
    """
    kind = ModelKind(kind)
    _check_label_bounds(kind, bounds)
    a = augmented_weights(weights, bias, kind, bounds)
    m = a.size
    outer_len, linear_len = model_slots(m - 2)
    if outer_len > context.slot_count:
        raise InvalidInput(
            "weights",
            f"(d + 2)² = {m * m} (padded to {outer_len}) exceeds the "
            f"{context.slot_count} slots of one ciphertext; use a larger "
            "poly_modulus_degree",
        )
    norm1 = float(np.abs(a).sum())
    h_y, c_y = float(bounds.half_widths[-1]), float(bounds.centres[-1])
    if kind is ModelKind.LINEAR:
        bound = norm1 * norm1
    else:
        bound = _LOG2 + norm1 * (abs(0.5 - c_y) + h_y) + norm1 * norm1 / 8.0
    limit = context.params.max_result_magnitude
    if bound > limit:
        raise ValueOutOfRange(
            "weights",
            bound,
            limit,
            "on some data inside the clamping box the metric, in the node's "
            "normalised units, would exceed the ciphertext's range and decrypt to "
            "garbage (‖a‖₁² bounds it); check the model's scale, or use parameters "
            "with more headroom such as CKKSParams() (2^19, less precise)",
        )
    outer = np.zeros(outer_len)
    outer[: m * m] = np.outer(a, a).ravel()
    linear = np.zeros(linear_len)
    linear[:m] = a
    return EncryptedModel(kind, m - 2, context.encrypt(outer), context.encrypt(linear))


@dataclass(frozen=True)
class EncryptedMetrics:
    """The node's answer: two ciphertexts, each with its value in slot 0.

    ``loss`` holds ``MSE / h_y²`` (linear) or the degree-2 log-loss (logistic);
    ``mean_score`` holds ``(mean prediction − c_y) / h_y`` (linear) or the mean
    logit (logistic). ``noise_std`` is the flooding std of each, in those units.
    """

    kind: ModelKind
    loss: EncryptedVector
    mean_score: EncryptedVector
    label_bounds: tuple[float, float]
    noise_std: tuple[float, float]


def evaluate_model(
    context: PublicContext,
    gram: Gram,
    model: EncryptedModel,
    *,
    hiding_bits: int = DEFAULT_HIDING_BITS,
) -> EncryptedMetrics:
    """Score an encrypted model on a Gram matrix (node side).

    Parameters
    ----------
    context
        The buyer's public context, with Galois keys.
    gram
        The dataset's Gram matrix, normally ``gram.perturbed(noise)`` (see the
        module docstring for why DP noise belongs there).
    model
        The buyer's encrypted model.
    hiding_bits
        Flooding margin over the circuit's noise estimate (see ``flooding_std``).

    Returns
    -------
    EncryptedMetrics
        Masked, re-randomised, flooded ciphertexts under the buyer's key.
    """
    if not context.has_galois_keys:
        raise MissingGaloisKeys("encrypted_model_eval")
    kind = ModelKind(model.kind)
    _check_label_bounds(kind, gram.bounds)
    m = gram.dim
    if model.n_features != m - 2:
        raise ContextMismatch(
            "model",
            f"has {model.n_features} features; the Gram matrix has {m - 2}",
        )
    outer_len, linear_len = model_slots(m - 2)
    if outer_len > context.slot_count:
        raise InvalidInput("gram", f"(d + 2)² = {m * m} exceeds the slot count")
    outer = context._adopt(model.outer, "model.outer", fresh=True)
    linear = context._adopt(model.linear, "model.linear", fresh=True)
    for name, vec, length in (
        ("model.outer", outer, outer_len),
        ("model.linear", linear, linear_len),
    ):
        if vec.size != length:
            raise ContextMismatch(name, f"has {vec.size} slots; expected {length}")

    moments = gram.moments
    c_y = float(gram.bounds.centres[-1])
    h_y = float(gram.bounds.half_widths[-1])
    mean_op = np.zeros(linear_len)
    mean_op[: m - 1] = moments[0, : m - 1]
    slots = context.slot_count
    keep = np.zeros(slots)
    keep[0] = 1.0
    quad_op = np.zeros(outer_len)
    offset: FloatArray | None = None
    params = context.params

    def flood(operand: FloatArray) -> float:
        norm = float(np.linalg.norm(operand))
        return flooding_std(
            params, operand_norm=norm, rotations=True, hiding_bits=hiding_bits
        )

    if kind is ModelKind.LINEAR:
        quad_op[: m * m] = moments.ravel()
        loss = outer._native.mul_plain(quad_op).sum()
        loss_std = flood(quad_op)
    else:
        quad_op[: m * m] = moments.ravel() / 8.0
        lin_op = np.zeros(linear_len)
        lin_op[:m] = (0.5 - c_y) * moments[0] - h_y * moments[m - 1]
        loss = outer._native.mul_plain(quad_op).sum()
        loss.add_(linear._native.mul_plain(lin_op).sum())
        loss_std = flood(quad_op) + flood(lin_op)  # two sums, two noise terms
        offset = np.zeros(slots)
        offset[0] = _LOG2
    mean_std = flood(mean_op)
    loss_out = finalize(loss, keep=keep, offset=offset, flood_std=loss_std, size=1)
    mean_out = finalize(
        linear._native.mul_plain(mean_op).sum(),
        keep=keep,
        offset=None,
        flood_std=mean_std,
        size=1,
    )
    return EncryptedMetrics(
        kind,
        wrap_vector(context, loss_out),
        wrap_vector(context, mean_out),
        gram.bounds.label,
        (loss_std, mean_std),
    )


@dataclass(frozen=True)
class ModelMetrics:
    """Decrypted metrics in the buyer's units.

    ``mse`` is set for linear models, ``log_loss`` (the degree-2 approximation)
    for logistic ones. ``mean_score`` is the mean prediction (linear) or mean logit
    (logistic). The ``*_noise_std`` fields are the flooding noise's std in the same
    units: the precision the re-randomisation cost.
    """

    kind: ModelKind
    mse: float | None
    log_loss: float | None
    mean_score: float
    loss_noise_std: float
    mean_score_noise_std: float


def decrypt_metrics(context: SecretContext, metrics: EncryptedMetrics) -> ModelMetrics:
    """Decrypt the node's answer and map it back to the buyer's units."""
    loss = float(context.decrypt(metrics.loss)[0])
    mean = float(context.decrypt(metrics.mean_score)[0])
    lo, hi = metrics.label_bounds
    c_y, h_y = (lo + hi) / 2.0, (hi - lo) / 2.0
    loss_std, mean_std = metrics.noise_std
    if metrics.kind is ModelKind.LINEAR:
        return ModelMetrics(
            ModelKind.LINEAR,
            mse=loss * h_y * h_y,
            log_loss=None,
            mean_score=mean * h_y + c_y,
            loss_noise_std=loss_std * h_y * h_y,
            mean_score_noise_std=mean_std * h_y,
        )
    return ModelMetrics(
        ModelKind.LOGISTIC,
        mse=None,
        log_loss=loss,
        mean_score=mean,
        loss_noise_std=loss_std,
        mean_score_noise_std=mean_std,
    )

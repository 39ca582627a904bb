"""``encrypted_inference``: the provider's linear model scores a buyer's encrypted rows.

Column packing (SIMD): the buyer encrypts each feature column of a batch of up to
N/2 rows in one ciphertext, row i in slot i. The node computes, per batch,

    score = Σⱼ wⱼ · ctⱼ + b        (ct × scalar products, one rescale: depth 1)

so each batch costs d scalar products and d − 1 additions, whatever the batch
size. A batch with fewer than N/2 rows is masked (depth 2) so the unused slots —
which TenSEAL fills with copies of the rows, and which would otherwise carry the
bias — decrypt to flooding noise only. The bias and any DP noise are added as
plaintext at the result's exact scale, then the result is re-randomised and
flooded (:func:`._backend.finalize`).

What the buyer learns: the scores, i.e. ``w·x + b`` for rows it chose — d + 1
independent rows reveal a linear model exactly, which is why the rights policy caps
the rows a buyer may score (``inference_row_budget``). The flooding noise hides the
computation's noise (``Σ wⱼ eⱼ`` over the buyer's known encryption noise eⱼ), so the
ciphertexts reveal nothing beyond the scores themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mpc_engine.he._backend import FloatArray, NativeVector, finalize
from mpc_engine.he._context import (
    EncryptedVector,
    PublicContext,
    SecretContext,
    real_vector,
    wrap_vector,
)
from mpc_engine.he._params import DEFAULT_HIDING_BITS, flooding_std
from mpc_engine.he.errors import ContextMismatch, InvalidInput


@dataclass(frozen=True)
class EncryptedColumns:
    """A buyer's rows, column-packed: ``batches[k][j]`` is column j of batch k.

    Every batch holds N/2 rows except possibly the last.
    """

    n_rows: int
    n_features: int
    batches: tuple[tuple[EncryptedVector, ...], ...]

    @classmethod
    def from_bytes(
        cls, context: PublicContext, batches: list[list[bytes]]
    ) -> EncryptedColumns:
        """Load uploaded batches; each vector must be fresh and batches well formed."""
        if not batches or not batches[0]:
            raise InvalidInput("batches", "needs at least one batch of columns")
        d = len(batches[0])
        loaded: list[tuple[EncryptedVector, ...]] = []
        for k, batch in enumerate(batches):
            if len(batch) != d:
                raise ContextMismatch(
                    f"batches[{k}]", f"has {len(batch)} columns; batch 0 has {d}"
                )
            loaded.append(
                tuple(EncryptedVector.from_bytes(context, b, fresh=True) for b in batch)
            )
        return cls._checked(context, tuple(loaded))

    @classmethod
    def _checked(
        cls,
        context: PublicContext | SecretContext,
        batches: tuple[tuple[EncryptedVector, ...], ...],
    ) -> EncryptedColumns:
        slots = context.slot_count
        n_rows = 0
        for k, batch in enumerate(batches):
            sizes = {vec.size for vec in batch}
            if len(sizes) != 1:
                raise ContextMismatch(
                    f"batches[{k}]", "its columns have different row counts"
                )
            size = sizes.pop()
            if size != slots and k != len(batches) - 1:
                raise ContextMismatch(
                    f"batches[{k}]", f"only the last batch may hold fewer than {slots}"
                )
            n_rows += size
        return cls(n_rows, len(batches[0]), batches)


def encrypt_columns(context: SecretContext, x: npt.ArrayLike) -> EncryptedColumns:
    """Encrypt a buyer's feature rows column-packed (buyer side).

    Parameters
    ----------
    context
        The buyer's key pair (no Galois keys needed).
    x
        ``(n, d)`` feature matrix; rows are split into batches of N/2.
    """
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 2 or xs.shape[0] == 0 or xs.shape[1] == 0:
        raise InvalidInput("x", "must be a non-empty (rows, features) matrix")
    if not np.all(np.isfinite(xs)):
        raise InvalidInput("x", "contains NaN or infinite values")
    slots = context.slot_count
    batches = tuple(
        tuple(context.encrypt(xs[start : start + slots, j]) for j in range(xs.shape[1]))
        for start in range(0, xs.shape[0], slots)
    )
    return EncryptedColumns._checked(context, batches)


@dataclass(frozen=True)
class EncryptedScores:
    """One ciphertext of scores per batch; ``noise_std`` is the flooding std."""

    n_rows: int
    batches: tuple[EncryptedVector, ...]
    noise_std: float


def score_linear(
    context: PublicContext,
    columns: EncryptedColumns,
    weights: npt.ArrayLike,
    bias: float,
    *,
    noise: npt.ArrayLike | None = None,
    hiding_bits: int = DEFAULT_HIDING_BITS,
) -> EncryptedScores:
    """Score encrypted rows with the provider's plaintext linear model (node side).

    Parameters
    ----------
    context
        The buyer's public context.
    columns
        The buyer's encrypted rows.
    weights, bias
        The provider's registered model: score = bias + weights · x.
    noise
        Optional DP noise, one value per row, added before re-randomisation.
    hiding_bits
        Flooding margin over the circuit's noise estimate (see ``flooding_std``).

    Returns
    -------
    EncryptedScores
        Masked, re-randomised, flooded scores under the buyer's key.
    """
    w = real_vector(weights, "weights", 1 << 20)
    if w.size != columns.n_features:
        raise ContextMismatch(
            "weights", f"has {w.size} values; the rows have {columns.n_features}"
        )
    b = float(bias)
    if not math.isfinite(b):
        raise InvalidInput("bias", "must be a finite number")
    extra: FloatArray | None = None
    if noise is not None:
        extra = real_vector(noise, "noise", max(columns.n_rows, 1))
        if extra.size != columns.n_rows:
            raise InvalidInput("noise", f"needs one value per row ({columns.n_rows})")
    slots = context.slot_count
    std = flooding_std(
        context.params,
        operand_norm=float(np.linalg.norm(w)),
        rotations=False,
        hiding_bits=hiding_bits,
    )
    nonzero = [j for j in range(w.size) if w[j] != 0.0]
    out: list[EncryptedVector] = []
    start = 0
    for k, batch in enumerate(columns.batches):
        cols = [
            context._adopt(vec, f"columns.batches[{k}][{j}]", fresh=True)
            for j, vec in enumerate(batch)
        ]
        rows = cols[0].size
        acc: NativeVector
        if nonzero:
            acc = cols[nonzero[0]]._native.mul_scalar(w[nonzero[0]])
            for j in nonzero[1:]:
                acc.add_(cols[j]._native.mul_scalar(w[j]))
        else:
            acc = cols[0]._native.mul_scalar(0.0)
        keep: FloatArray | None = None
        offset = np.zeros(slots)
        offset[:rows] = b
        if extra is not None:
            offset[:rows] += extra[start : start + rows]
        if rows < slots:
            keep = np.zeros(slots)
            keep[:rows] = 1.0
        result = finalize(acc, keep=keep, offset=offset, flood_std=std, size=rows)
        out.append(wrap_vector(context, result))
        start += rows
    return EncryptedScores(columns.n_rows, tuple(out), std)


def decrypt_scores(context: SecretContext, scores: EncryptedScores) -> FloatArray:
    """Decrypt every batch and concatenate the scores (buyer side)."""
    parts = [context.decrypt(vec) for vec in scores.batches]
    out: FloatArray = np.concatenate(parts) if parts else np.zeros(0)
    if out.size != scores.n_rows:
        raise ContextMismatch(
            "scores", f"decrypted {out.size} rows, expected {scores.n_rows}"
        )
    return out

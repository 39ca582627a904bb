"""``he.*``: encrypted_model_eval, encrypted_inference and CKKS encryption, one core.

Every figure is compared with a plaintext baseline measured in the same run, on the
same data, on the same core: the whole process is pinned to one CPU with numpy's
OpenBLAS limited to one thread and TenSEAL contexts made with ``n_threads=1``
(``bench._onecore``). Times are the best of at least ``repeats`` runs (and at
least ``min_seconds`` of runs for fast steps); medians are kept beside them.

``he.model_eval.first`` / ``he.model_eval.cached`` (DESIGN §4, d = 16 features):
a buyer's linear model, encrypted under ``CKKSParams.model_eval()``, scored on the
node's rows. *first* is what the node does for the first query of a dataset
version: clamp the rows and reduce ``[1 X y]`` to the Gram matrix
(``gram_matrix``), draw Laplace noise (OpenDP) for ``sensitivity(bounds, n).moments``
and perturb the Gram (``Gram.perturbed``), then ``evaluate_model``. *cached* is
``evaluate_model`` on the cached perturbed Gram only. Both are node-side times;
the buyer's ``encrypt_model`` and ``decrypt_metrics`` (and the ciphertexts'
(de)serialisation) are reported separately. Baseline (``he.model_eval.numpy``):
``np.mean((X @ w - y) ** 2)``. Check: the decrypted MSE equals the plaintext
evaluation on the same perturbed Gram within 6σ of the flooding noise (+1e-6
relative), and numpy's MSE on the raw rows within that plus 10σ of the DP noise's
effect on the MSE (σ computed from the Laplace scale and the model; the effect is
close to a single Laplace draw, whose tail beyond 10σ has probability e^(−10√2) ≈
7e-7). Goals at 10⁷ rows: first ≤ 4×, cached ≤ 0.5× the baseline.

``he.inference`` (d = 9, ``CKKSParams.inference()``): rows scored per second by
``score_linear`` (incl. masking, re-randomisation, flooding) on columns the node
loaded from the buyer's bytes; end to end (buyer ``encrypt_columns``, upload
bytes, node load + score, download bytes, ``decrypt_scores``) from one full pass.
Baseline (``he.inference.numpy``): ``X @ w + b`` rows/s. Check: every decrypted
score within 7σ of the flooding noise of numpy's. Goal: ≥ 250,000 rows/s/core.

``he.encrypt.model_eval`` / ``he.encrypt.inference``: ``SecretContext.encrypt`` of
full N/2-slot vectors, values/s, sustained over batches of vectors. Baseline
(``he.encrypt.aes_gcm``): AES-256-GCM of the same float64 values (fresh nonce per
vector). Check: a decryption matches within 1e-5. Goal: ≥ 0.8 M values/s/core.

Scaling: model_eval at every ``VEILX_BENCH_HE_ROWS`` size and inference at every
``VEILX_BENCH_HE_INFER_ROWS`` size, printed as tables and stored in the entries as
``s_<rows>`` / ``ratio_<rows>`` (model_eval) and ``node_rows_per_s_<rows>`` /
``e2e_rows_per_s_<rows>`` (inference) extras.

Environment: ``VEILX_BENCH_HE_ROWS`` (``1e5,1e6,1e7``; the largest size is the
headline), ``VEILX_BENCH_HE_INFER_ROWS`` (``4096,32768,262144``),
``VEILX_BENCH_HE_EPSILON`` (1.0, ε of the Gram release),
``VEILX_BENCH_HE_ENCRYPT_VECTORS`` (64 vectors per timed batch),
``VEILX_BENCH_REPEATS`` (5), ``VEILX_BENCH_MIN_SECONDS`` (1.0),
``VEILX_BENCH_CPU`` (default: the last CPU this process may use).
"""

from __future__ import annotations

import gc
import importlib.metadata
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.table import Table

from bench._onecore import Pinning, Timing, measure, one_core
from bench.harness import Result
from mpc_engine import dp
from mpc_engine.he import (
    CKKSParams,
    EncryptedColumns,
    EncryptedMetrics,
    EncryptedModel,
    EncryptedScores,
    EncryptedVector,
    Gram,
    GramBounds,
    ModelKind,
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
    sensitivity,
)

__all__ = [
    "EVAL_FEATURES",
    "INFER_FEATURES",
    "Settings",
    "make_regression",
    "run",
    "size_label",
]

FloatArray = npt.NDArray[np.float64]

EVAL_FEATURES: Final = 16
INFER_FEATURES: Final = 9
GOAL_ROWS: Final = 10_000_000
FIRST_GOAL: Final = 4.0
CACHED_GOAL: Final = 0.5
INFER_GOAL: Final = 250_000.0
ENCRYPT_GOAL: Final = 800_000.0
HE_SIGMAS: Final = 6.0
HE_RELATIVE: Final = 1e-6
DP_SIGMAS: Final = 10.0
INFER_SIGMAS: Final = 7.0
ENCRYPT_TOL: Final = 1e-5
_GEN_CHUNK = 1 << 20


def _sizes(text: str, name: str) -> tuple[int, ...]:
    try:
        sizes = sorted({int(float(part)) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"{name} must list row counts, comma-separated") from None
    if not sizes or sizes[0] < 1:
        raise ValueError(f"{name} must list positive row counts")
    return tuple(sizes)


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    eval_rows: tuple[int, ...] = (100_000, 1_000_000, 10_000_000)
    infer_rows: tuple[int, ...] = (4096, 32768, 262144)
    epsilon: float = 1.0
    encrypt_vectors: int = 64
    repeats: int = 5
    min_seconds: float = 1.0
    cpu: int | None = None
    seed: int = 20_260

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_*``."""
        env = os.environ
        cpu = env.get("VEILX_BENCH_CPU")
        return cls(
            eval_rows=_sizes(
                env.get("VEILX_BENCH_HE_ROWS", "1e5,1e6,1e7"), "VEILX_BENCH_HE_ROWS"
            ),
            infer_rows=_sizes(
                env.get("VEILX_BENCH_HE_INFER_ROWS", "4096,32768,262144"),
                "VEILX_BENCH_HE_INFER_ROWS",
            ),
            epsilon=float(env.get("VEILX_BENCH_HE_EPSILON", "1.0")),
            encrypt_vectors=int(env.get("VEILX_BENCH_HE_ENCRYPT_VECTORS", "64")),
            repeats=int(env.get("VEILX_BENCH_REPEATS", "5")),
            min_seconds=float(env.get("VEILX_BENCH_MIN_SECONDS", "1.0")),
            cpu=int(cpu) if cpu else None,
        )


def size_label(n: int) -> str:
    """``1e6`` for powers of ten, else the number: the suffix of scaling extras."""
    if n >= 10:
        k = round(math.log10(n))
        if 10**k == n:
            return f"1e{k}"
    return str(n)


# -- data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regression:
    """Rows inside their public bounds, their labels, and a buyer's model."""

    x: FloatArray
    y: FloatArray
    bounds: GramBounds
    weights: FloatArray


def make_regression(n: int, d: int, rng: np.random.Generator) -> Regression:
    """``n`` × ``d`` float64 rows uniform in per-column boxes, y = X·w + U(-2, 2).

    The bounds are the exact boxes (the label's from the weights), so clamping
    changes nothing and the Gram matrix reproduces numpy's MSE exactly. Filled in
    place chunk by chunk: 10⁷ × 16 rows take 1.28 GB and no temporary of that size.
    """
    lows = rng.uniform(-5.0, 0.0, d)
    widths = rng.uniform(1.0, 6.0, d)
    w_true = rng.normal(0.0, 0.4, d)
    x = np.empty((n, d))
    for start in range(0, n, _GEN_CHUNK):
        part = x[start : start + _GEN_CHUNK]
        rng.random(out=part)
        part *= widths
        part += lows
    y = x @ w_true
    y += rng.uniform(-2.0, 2.0, n)
    highs = lows + widths
    ends = np.stack([w_true * lows, w_true * highs])
    label = (float(ends.min(axis=0).sum()) - 2.0, float(ends.max(axis=0).sum()) + 2.0)
    bounds = GramBounds(tuple(zip(lows.tolist(), highs.tolist(), strict=True)), label)
    weights = w_true + rng.normal(0.0, 0.05, d)
    return Regression(x, y, bounds, weights)


# -- encrypted_model_eval ----------------------------------------------------------


@dataclass
class EvalSize:
    """Everything measured for one row count."""

    rows: int
    numpy: Timing
    first: Timing
    cached: Timing
    phases: tuple[float, float, float]  # gram, perturb, evaluate of the best run
    mse_numpy: float
    mse_gram: float  # a·M·a on the unperturbed Gram, data units
    mse_perturbed: float  # a·M̃·a on the perturbed Gram, data units
    mse_first: float
    mse_cached: float
    flood_sigma: float
    dp_sigma: float
    laplace_scale: float

    @property
    def he_tol(self) -> float:
        """Decrypted vs plaintext on the same perturbed Gram."""
        return HE_SIGMAS * self.flood_sigma + HE_RELATIVE * abs(self.mse_perturbed)

    @property
    def dp_tol(self) -> float:
        """Decrypted vs numpy on the raw rows."""
        return self.he_tol + DP_SIGMAS * self.dp_sigma

    @property
    def checks(self) -> dict[str, bool]:
        """Each correctness check and whether it passed."""
        return {
            "gram_exact": abs(self.mse_gram - self.mse_numpy)
            <= 1e-9 * abs(self.mse_numpy),
            "first_vs_plain": abs(self.mse_first - self.mse_perturbed) <= self.he_tol,
            "cached_vs_plain": abs(self.mse_cached - self.mse_perturbed) <= self.he_tol,
            "first_vs_numpy": abs(self.mse_first - self.mse_numpy) <= self.dp_tol,
            "cached_vs_numpy": abs(self.mse_cached - self.mse_numpy) <= self.dp_tol,
        }

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(self.checks.values())

    @property
    def first_ratio(self) -> float:
        """First query over the numpy baseline."""
        return self.first.best / self.numpy.best

    @property
    def cached_ratio(self) -> float:
        """Cached query over the numpy baseline."""
        return self.cached.best / self.numpy.best


@dataclass
class EvalRun:
    """The model_eval measurements and the buyer-side and one-off costs."""

    sizes: list[EvalSize] = field(default_factory=list)
    context_bytes: int = 0
    context_load_s: float = 0.0
    context_first_use_s: float = 0.0
    encrypt_model: Timing | None = None
    upload_bytes: int = 0
    download_bytes: int = 0
    model_load_s: float = 0.0
    result_serialize_s: float = 0.0
    decrypt: Timing | None = None


def _download(enc: EncryptedMetrics) -> tuple[bytes, bytes]:
    return enc.loss.to_bytes(), enc.mean_score.to_bytes()


def _decrypt_mse(
    buyer: SecretContext, enc: EncryptedMetrics, blobs: tuple[bytes, bytes]
) -> float:
    loss, mean = (EncryptedVector.from_bytes(buyer, b, fresh=False) for b in blobs)
    received = EncryptedMetrics(enc.kind, loss, mean, enc.label_bounds, enc.noise_std)
    mse = decrypt_metrics(buyer, received).mse
    if mse is None:  # pragma: no cover - a linear model always has an MSE
        raise RuntimeError("decrypt_metrics returned no MSE for a linear model")
    return float(mse)


def _dp_sigma(a: FloatArray, dim: int, h_y: float, scale: float) -> float:
    """Std of the Laplace perturbation's effect on the MSE, in data units.

    The MSE is ``h_y² · aᵀM̃a``; entry (i, j) of the upper triangle enters with
    weight ``a_i a_j`` (twice off the diagonal), each with Laplace variance 2b².
    """
    rows, cols = Gram.noise_indices(dim)
    coef = np.where(rows == cols, 1.0, 2.0) * a[rows] * a[cols] * h_y * h_y
    return float(math.sqrt(2.0) * scale * np.linalg.norm(coef))


def _model_eval(settings: Settings, buyer: SecretContext, console: Console) -> EvalRun:
    run = EvalRun()
    rng = np.random.default_rng(settings.seed)
    biggest = max(settings.eval_rows)
    console.print(
        f"model_eval: generating {biggest:,} × {EVAL_FEATURES} float64 rows "
        f"({biggest * EVAL_FEATURES * 8 / 1e9:.2f} GB)"
    )
    data = make_regression(biggest, EVAL_FEATURES, rng)
    bounds, w = data.bounds, data.weights
    a = augmented_weights(w, 0.0, ModelKind.LINEAR, bounds)
    h_y = float(bounds.half_widths[-1])

    public = buyer.public_bytes()
    run.context_bytes = len(public)
    start = time.perf_counter()
    node = PublicContext.from_bytes(public, n_threads=1)
    run.context_load_s = time.perf_counter() - start

    run.encrypt_model = measure(
        lambda: encrypt_model(buyer, w, 0.0, ModelKind.LINEAR, bounds),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds / 5,
    )
    model = encrypt_model(buyer, w, 0.0, ModelKind.LINEAR, bounds)
    outer, linear = model.outer.to_bytes(), model.linear.to_bytes()
    run.upload_bytes = len(outer) + len(linear)
    start = time.perf_counter()
    node_model = EncryptedModel.from_bytes(
        node, kind="linear", n_features=EVAL_FEATURES, outer=outer, linear=linear
    )
    run.model_load_s = time.perf_counter() - start

    # The node's context builds its SEAL mirror on first use: once per buyer key,
    # not per dataset version, so it is reported apart.
    warm = gram_matrix(data.x[:1000], data.y[:1000], bounds)
    start = time.perf_counter()
    evaluate_model(node, warm, node_model)
    run.context_first_use_s = time.perf_counter() - start

    for n in settings.eval_rows:
        run.sizes.append(
            _eval_size(settings, n, data, a, h_y, node, node_model, buyer, run)
        )
        s = run.sizes[-1]
        console.print(
            f"  {n:>11,} rows: numpy {s.numpy.best * 1e3:9.2f} ms, "
            f"first {s.first.best * 1e3:9.2f} ms ({s.first_ratio:6.2f}×), "
            f"cached {s.cached.best * 1e3:7.2f} ms ({s.cached_ratio:6.2f}×), "
            f"checks {'ok' if s.ok else 'FAILED'}"
        )
        console.print(
            f"      decrypted MSE {s.mse_first:.6f} vs numpy {s.mse_numpy:.6f}: "
            f"|Δ| {abs(s.mse_first - s.mse_numpy):.2e} ≤ {s.dp_tol:.2e} "
            f"({DP_SIGMAS:g}σ DP + {HE_SIGMAS:g}σ flooding); vs plaintext on the "
            f"perturbed Gram "
            f"{s.mse_perturbed:.6f}: |Δ| {abs(s.mse_first - s.mse_perturbed):.2e} "
            f"≤ {s.he_tol:.2e}"
        )
    del data
    gc.collect()
    return run


def _eval_size(
    settings: Settings,
    n: int,
    data: Regression,
    a: FloatArray,
    h_y: float,
    node: PublicContext,
    model: EncryptedModel,
    buyer: SecretContext,
    run: EvalRun,
) -> EvalSize:
    x, y, bounds, w = data.x[:n], data.y[:n], data.bounds, data.weights
    mse_numpy = float(np.mean((x @ w - y) ** 2))
    numpy_t = measure(
        lambda: np.mean((x @ w - y) ** 2),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
        warmup=1,
    )
    phases: list[tuple[float, float, float]] = []
    state: dict[str, Any] = {}

    def first() -> None:
        t0 = time.perf_counter()
        gram = gram_matrix(x, y, bounds)
        t1 = time.perf_counter()
        rows, _ = Gram.noise_indices(gram.dim)
        sens = sensitivity(bounds, n).moments
        noise = dp.laplace(
            np.zeros(rows.size), sensitivity=sens.l1, epsilon=settings.epsilon
        )
        perturbed = gram.perturbed(noise.value)
        t2 = time.perf_counter()
        enc = evaluate_model(node, perturbed, model)
        t3 = time.perf_counter()
        phases.append((t1 - t0, t2 - t1, t3 - t2))
        state.update(gram=gram, perturbed=perturbed, enc=enc, scale=noise.scale)

    first_t = measure(first, repeats=settings.repeats, min_seconds=settings.min_seconds)
    best_phases = phases[first_t.runs.index(first_t.best)]
    gram, perturbed = state["gram"], state["perturbed"]
    enc_first: EncryptedMetrics = state["enc"]
    cached_out: list[EncryptedMetrics] = []
    cached_t = measure(
        lambda: cached_out.append(evaluate_model(node, perturbed, model)),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
    )
    start = time.perf_counter()
    blobs = _download(enc_first)
    run.result_serialize_s = time.perf_counter() - start
    run.download_bytes = sum(len(b) for b in blobs)
    mse_first = _decrypt_mse(buyer, enc_first, blobs)
    run.decrypt = measure(
        lambda: _decrypt_mse(buyer, enc_first, blobs),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds / 10,
    )
    enc_cached = cached_out[-1]
    mse_cached = _decrypt_mse(buyer, enc_cached, _download(enc_cached))
    return EvalSize(
        rows=n,
        numpy=numpy_t,
        first=first_t,
        cached=cached_t,
        phases=best_phases,
        mse_numpy=mse_numpy,
        mse_gram=float(a @ gram.moments @ a) * h_y * h_y,
        mse_perturbed=float(a @ perturbed.moments @ a) * h_y * h_y,
        mse_first=mse_first,
        mse_cached=mse_cached,
        flood_sigma=float(enc_first.noise_std[0]) * h_y * h_y,
        dp_sigma=_dp_sigma(a, gram.dim, h_y, float(state["scale"])),
        laplace_scale=float(state["scale"]),
    )


# -- encrypted_inference -----------------------------------------------------------


@dataclass
class InferSize:
    """One row count of encrypted_inference."""

    rows: int
    batches: int
    numpy: Timing
    node: Timing
    encrypt_s: float
    upload_s: float
    node_load_s: float
    score_s: float
    download_s: float
    decrypt_s: float
    upload_bytes: int
    download_bytes: int
    max_abs_err: float
    noise_std: float

    @property
    def e2e_s(self) -> float:
        """One full pass: encrypt, bytes up, load, score, bytes down, decrypt."""
        return (
            self.encrypt_s
            + self.upload_s
            + self.node_load_s
            + self.score_s
            + self.download_s
            + self.decrypt_s
        )

    @property
    def tol(self) -> float:
        """Largest accepted |decrypted − numpy| score error."""
        return INFER_SIGMAS * self.noise_std

    @property
    def ok(self) -> bool:
        """Whether every decrypted score is within the tolerance."""
        return self.max_abs_err <= self.tol

    @property
    def node_rows_per_s(self) -> float:
        """Node-side scoring throughput (best run)."""
        return self.rows / self.node.best

    @property
    def e2e_rows_per_s(self) -> float:
        """End-to-end throughput of the full pass."""
        return self.rows / self.e2e_s

    @property
    def numpy_rows_per_s(self) -> float:
        """Plaintext ``X @ w + b`` throughput (best run)."""
        return self.rows / self.numpy.best


def _inference(
    settings: Settings, buyer: SecretContext, console: Console
) -> list[InferSize]:
    rng = np.random.default_rng(settings.seed + 1)
    w = rng.normal(0.0, 0.5, INFER_FEATURES)
    b = 0.3
    x_all = rng.normal(0.0, 1.0, (max(settings.infer_rows), INFER_FEATURES))
    node = PublicContext.from_bytes(buyer.public_bytes(), n_threads=1)
    # first use of the node context builds its SEAL mirror (once per buyer key)
    warm = encrypt_columns(buyer, x_all[:16])
    blobs = [[v.to_bytes() for v in batch] for batch in warm.batches]
    score_linear(node, EncryptedColumns.from_bytes(node, blobs), w, b)
    out: list[InferSize] = []
    for n in settings.infer_rows:
        size = _infer_size(settings, x_all[:n], w, b, node, buyer)
        out.append(size)
        gc.collect()
        console.print(
            f"  {n:>9,} rows ({size.batches} batches): node "
            f"{size.node_rows_per_s:>10,.0f} rows/s, end to end "
            f"{size.e2e_rows_per_s:>10,.0f} rows/s, numpy "
            f"{size.numpy_rows_per_s:>14,.0f} rows/s, check "
            f"{'ok' if size.ok else 'FAILED'}"
        )
    return out


def _infer_size(
    settings: Settings,
    x: FloatArray,
    w: FloatArray,
    b: float,
    node: PublicContext,
    buyer: SecretContext,
) -> InferSize:
    numpy_t = measure(
        lambda: x @ w + b,
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
        warmup=1,
    )
    t0 = time.perf_counter()
    columns = encrypt_columns(buyer, x)
    t1 = time.perf_counter()
    blobs = [[v.to_bytes() for v in batch] for batch in columns.batches]
    t2 = time.perf_counter()
    del columns
    node_cols = EncryptedColumns.from_bytes(node, blobs)
    t3 = time.perf_counter()
    scores = score_linear(node, node_cols, w, b)
    t4 = time.perf_counter()
    down = [v.to_bytes() for v in scores.batches]
    t5 = time.perf_counter()
    received = EncryptedScores(
        scores.n_rows,
        tuple(EncryptedVector.from_bytes(buyer, d, fresh=False) for d in down),
        scores.noise_std,
    )
    got = decrypt_scores(buyer, received)
    t6 = time.perf_counter()
    node_t = measure(
        lambda: score_linear(node, node_cols, w, b),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
    )
    return InferSize(
        rows=x.shape[0],
        batches=len(blobs),
        numpy=numpy_t,
        node=node_t,
        encrypt_s=t1 - t0,
        upload_s=t2 - t1,
        node_load_s=t3 - t2,
        score_s=t4 - t3,
        download_s=t5 - t4,
        decrypt_s=t6 - t5,
        upload_bytes=sum(len(v) for batch in blobs for v in batch),
        download_bytes=sum(len(v) for v in down),
        max_abs_err=float(np.max(np.abs(got - (x @ w + b)))),
        noise_std=float(scores.noise_std),
    )


# -- encryption --------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptRun:
    """Sustained encryption of batches of full vectors."""

    name: str
    values_per_vector: int
    vectors: int
    timing: Timing
    ciphertext_bytes: int
    max_abs_err: float

    @property
    def values_per_s(self) -> float:
        """Values encrypted per second (best batch)."""
        return self.values_per_vector * self.vectors / self.timing.best

    @property
    def ok(self) -> bool:
        """Whether a decryption matched the input."""
        return self.max_abs_err <= ENCRYPT_TOL


def _encrypt(settings: Settings, context: SecretContext, name: str) -> EncryptRun:
    rng = np.random.default_rng(settings.seed + 2)
    values = rng.uniform(-1.0, 1.0, context.slot_count)
    k = settings.encrypt_vectors

    def batch() -> None:
        for _ in range(k):
            context.encrypt(values)

    timing = measure(batch, repeats=settings.repeats, warmup=1)
    vec = context.encrypt(values)
    err = float(np.max(np.abs(context.decrypt(vec) - values)))
    return EncryptRun(name, values.size, k, timing, len(vec.to_bytes()), err)


def _aes(settings: Settings, slots: int) -> EncryptRun:
    rng = np.random.default_rng(settings.seed + 3)
    values = rng.uniform(-1.0, 1.0, slots)
    aes = AESGCM(AESGCM.generate_key(bit_length=256))
    k = settings.encrypt_vectors

    def batch() -> None:
        for _ in range(k):
            aes.encrypt(os.urandom(12), values.tobytes(), None)

    timing = measure(batch, repeats=settings.repeats, min_seconds=0.2, warmup=1)
    nonce = os.urandom(12)
    blob = aes.encrypt(nonce, values.tobytes(), None)
    back = np.frombuffer(aes.decrypt(nonce, blob, None), dtype=np.float64)
    err = float(np.max(np.abs(back - values)))
    return EncryptRun("aes_gcm", slots, k, timing, len(blob), err)


# -- output ------------------------------------------------------------------------


def _print_scaling(
    console: Console, evals: Sequence[EvalSize], infers: Sequence[InferSize]
) -> None:
    table = Table(
        title="encrypted_model_eval scaling (d = 16, one core)", title_justify="left"
    )
    for h in (
        "rows",
        "numpy MSE ms",
        "first ms",
        "first ×",
        "  gram ms",
        "  perturb ms",
        "  evaluate ms",
        "cached ms",
        "cached ×",
        "HE err/MSE",
        "DP err/MSE",
        "DP σ/MSE",
        "checks",
    ):
        table.add_column(h, justify="right")
    for s in evals:
        table.add_row(
            f"{s.rows:,}",
            f"{s.numpy.best * 1e3:,.2f}",
            f"{s.first.best * 1e3:,.1f}",
            f"{s.first_ratio:.2f}",
            f"{s.phases[0] * 1e3:,.1f}",
            f"{s.phases[1] * 1e3:,.2f}",
            f"{s.phases[2] * 1e3:,.1f}",
            f"{s.cached.best * 1e3:,.1f}",
            f"{s.cached_ratio:.2f}",
            f"{abs(s.mse_first - s.mse_perturbed) / abs(s.mse_numpy):.1e}",
            f"{abs(s.mse_first - s.mse_numpy) / abs(s.mse_numpy):.1e}",
            f"{s.dp_sigma / abs(s.mse_numpy):.1e}",
            "[green]ok[/]" if s.ok else "[red]FAILED[/]",
        )
    console.print(table)
    table = Table(
        title="encrypted_inference scaling (d = 9, one core)", title_justify="left"
    )
    for h in (
        "rows",
        "batches",
        "numpy rows/s",
        "node rows/s",
        "end-to-end rows/s",
        "encrypt s",
        "node s",
        "decrypt s",
        "check",
    ):
        table.add_column(h, justify="right")
    for i in infers:
        table.add_row(
            f"{i.rows:,}",
            str(i.batches),
            f"{i.numpy_rows_per_s:,.0f}",
            f"{i.node_rows_per_s:,.0f}",
            f"{i.e2e_rows_per_s:,.0f}",
            f"{i.encrypt_s:.2f}",
            f"{i.node.best:.3f}",
            f"{i.decrypt_s:.3f}",
            "[green]ok[/]" if i.ok else "[red]FAILED[/]",
        )
    console.print(table)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("tenseal", "opendp"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[dist] = "unknown"
    return out


def _timing_note(settings: Settings) -> str:
    return (
        f"best of ≥ {settings.repeats} runs and ≥ {settings.min_seconds:g} s of runs "
        "(medians in extras); whole process pinned to one CPU"
    )


def _params(settings: Settings, pin: Pinning, load: float) -> dict[str, Any]:
    return {
        **pin.describe(),
        "tenseal_threads": 1,
        "timing": _timing_note(settings),
        **_versions(),
        "loadavg_1m_at_start": round(load, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


def _eval_results(
    settings: Settings, run: EvalRun, common: dict[str, Any]
) -> list[Result]:
    head = run.sizes[-1]
    at_goal = head.rows >= GOAL_ROWS
    enc_model = run.encrypt_model
    decrypt = run.decrypt
    assert enc_model is not None and decrypt is not None
    params = {
        "rows": [s.rows for s in run.sizes],
        "headline_rows": head.rows,
        "goal_rows": GOAL_ROWS,
        "features": EVAL_FEATURES,
        "model": "linear, bias 0 (score = w·x)",
        "data": "float64 rows uniform in per-column boxes (lower ~ U(-5, 0), width "
        "~ U(1, 6)), y = X·w_true + U(-2, 2); bounds = the boxes, so clamping is "
        "a no-op; seeded numpy Generator",
        "ckks": "CKKSParams.model_eval(): N=8192, primes (55, 47, 47, 60), Δ=2^47, "
        "Galois keys",
        "dp": f"Laplace (OpenDP), ε={settings.epsilon:g}, on the {_n_noise()} unique "
        "Gram entries, L1 sensitivity sensitivity(bounds, n).moments.l1",
        "check": f"decrypted MSE vs plaintext a·M̃·a: ≤ {HE_SIGMAS:g}σ_flood + "
        f"{HE_RELATIVE:g}·|MSE|; vs numpy on the raw rows: that + {DP_SIGMAS:g}σ_DP",
        **common,
    }

    def scaling(kind: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in run.sizes:
            label = size_label(s.rows)
            timing = s.first if kind == "first" else s.cached
            out[f"s_{label}"] = timing.best
            out[f"ratio_{label}"] = timing.best / s.numpy.best
        return out

    passed = all(s.ok for s in run.sizes)
    check = {
        "mse_numpy": head.mse_numpy,
        "mse_plain_perturbed": head.mse_perturbed,
        "flood_sigma": head.flood_sigma,
        "dp_sigma": head.dp_sigma,
        "laplace_scale": head.laplace_scale,
        "tolerance_vs_plain": head.he_tol,
        "tolerance_vs_numpy": head.dp_tol,
        "checks_passed": passed,
    }
    buyer = {
        "buyer_encrypt_ms": enc_model.best * 1e3,
        "buyer_decrypt_ms": decrypt.best * 1e3,
        "upload_bytes": run.upload_bytes,
        "download_bytes": run.download_bytes,
        "node_model_load_ms": run.model_load_s * 1e3,
        "node_result_serialize_ms": run.result_serialize_s * 1e3,
        "context_bytes": run.context_bytes,
        "context_load_s": run.context_load_s,
        "context_first_use_ms": run.context_first_use_s * 1e3,
    }
    first_met = at_goal and head.first_ratio <= FIRST_GOAL and passed
    cached_met = at_goal and head.cached_ratio <= CACHED_GOAL and passed
    where = f"at {GOAL_ROWS:.0e} rows".replace("e+0", "e")
    return [
        Result(
            name="he.model_eval.first",
            value=head.first.best,
            unit="s",
            baseline_name="he.model_eval.numpy",
            baseline_value=head.numpy.best,
            ratio=head.first_ratio,
            goal=f"≤ {FIRST_GOAL:g}× numpy {where} (clamp + Gram + DP perturbation "
            "+ evaluate_model), decrypted MSE within tolerance",
            met=first_met,
            params=params,
            extras={
                "rows": head.rows,
                "median_s": head.first.median,
                "runs": head.first.count,
                "gram_s": head.phases[0],
                "perturb_s": head.phases[1],
                "evaluate_s": head.phases[2],
                "mse_decrypted": head.mse_first,
                "abs_err_vs_numpy": abs(head.mse_first - head.mse_numpy),
                **check,
                **buyer,
                **scaling("first"),
            },
        ),
        Result(
            name="he.model_eval.cached",
            value=head.cached.best,
            unit="s",
            baseline_name="he.model_eval.numpy",
            baseline_value=head.numpy.best,
            ratio=head.cached_ratio,
            goal=f"≤ {CACHED_GOAL:g}× numpy {where} (evaluate_model on the cached "
            "perturbed Gram), decrypted MSE within tolerance",
            met=cached_met,
            params=params,
            extras={
                "rows": head.rows,
                "median_s": head.cached.median,
                "runs": head.cached.count,
                "mse_decrypted": head.mse_cached,
                "abs_err_vs_numpy": abs(head.mse_cached - head.mse_numpy),
                **check,
                "buyer_encrypt_ms": buyer["buyer_encrypt_ms"],
                "buyer_decrypt_ms": buyer["buyer_decrypt_ms"],
                **scaling("cached"),
            },
        ),
        Result(
            name="he.model_eval.numpy",
            value=head.numpy.best,
            unit="s",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline for he.model_eval: np.mean((X @ w - y) ** 2), one core",
            met=True,
            params={k: params[k] for k in ("rows", "features", "data", *common)},
            extras={
                "rows": head.rows,
                "median_s": head.numpy.median,
                "runs": head.numpy.count,
                "mse": head.mse_numpy,
                **{f"s_{size_label(s.rows)}": s.numpy.best for s in run.sizes},
            },
        ),
    ]


def _n_noise() -> int:
    rows, _ = Gram.noise_indices(EVAL_FEATURES + 2)
    return int(rows.size)


def _infer_results(
    settings: Settings, sizes: Sequence[InferSize], common: dict[str, Any]
) -> list[Result]:
    head = sizes[-1]
    ok = all(s.ok for s in sizes)
    params = {
        "rows": [s.rows for s in sizes],
        "headline_rows": head.rows,
        "features": INFER_FEATURES,
        "ckks": "CKKSParams.inference(): N=8192, primes (60, 40, 40, 60), Δ=2^40; "
        "4096 rows per batch, column-packed",
        "data": "rows ~ N(0, 1), w ~ N(0, 0.5), b = 0.3",
        "node": "score_linear on columns loaded with EncryptedColumns.from_bytes "
        "(incl. masking, re-randomisation, flooding)",
        "end_to_end": "one pass: encrypt_columns + to_bytes + from_bytes (node) + "
        "score_linear + to_bytes + from_bytes (buyer) + decrypt_scores",
        "check": f"max |decrypted − numpy| ≤ {INFER_SIGMAS:g}σ_flood",
        **common,
    }
    scaling: dict[str, float] = {}
    for s in sizes:
        label = size_label(s.rows)
        scaling[f"node_rows_per_s_{label}"] = s.node_rows_per_s
        scaling[f"e2e_rows_per_s_{label}"] = s.e2e_rows_per_s
    return [
        Result(
            name="he.inference",
            value=head.node_rows_per_s,
            unit="rows/s",
            baseline_name="he.inference.numpy",
            baseline_value=head.numpy_rows_per_s,
            ratio=head.node_rows_per_s / head.numpy_rows_per_s,
            goal=f"≥ {INFER_GOAL:,.0f} rows/s on one core (node-side score_linear "
            "incl. re-randomisation), scores within tolerance",
            met=ok and head.node_rows_per_s >= INFER_GOAL,
            params=params,
            extras={
                "rows": head.rows,
                "batches": head.batches,
                "node_median_rows_per_s": head.rows / head.node.median,
                "e2e_rows_per_s": head.e2e_rows_per_s,
                "encrypt_rows_per_s": head.rows / head.encrypt_s,
                "node_load_rows_per_s": head.rows / head.node_load_s,
                "decrypt_rows_per_s": head.rows / (head.download_s + head.decrypt_s),
                "encrypt_s": head.encrypt_s,
                "upload_s": head.upload_s,
                "node_load_s": head.node_load_s,
                "score_s": head.score_s,
                "download_s": head.download_s,
                "decrypt_s": head.decrypt_s,
                "upload_bytes_per_row": head.upload_bytes / head.rows,
                "download_bytes_per_row": head.download_bytes / head.rows,
                "max_abs_err": head.max_abs_err,
                "tolerance": head.tol,
                "flood_sigma": head.noise_std,
                "checks_passed": ok,
                **scaling,
            },
        ),
        Result(
            name="he.inference.numpy",
            value=head.numpy_rows_per_s,
            unit="rows/s",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline for he.inference: X @ w + b, one core",
            met=True,
            params={k: params[k] for k in ("rows", "features", "data", *common)},
            extras={
                "rows": head.rows,
                "median_rows_per_s": head.rows / head.numpy.median,
                **{
                    f"rows_per_s_{size_label(s.rows)}": s.numpy_rows_per_s
                    for s in sizes
                },
            },
        ),
    ]


def _encrypt_results(
    settings: Settings, runs: Sequence[EncryptRun], aes: EncryptRun, common: Any
) -> list[Result]:
    presets = {
        "model_eval": "CKKSParams.model_eval(): N=8192, primes (55, 47, 47, 60)",
        "inference": "CKKSParams.inference(): N=8192, primes (60, 40, 40, 60)",
    }
    out = [
        Result(
            name=f"he.encrypt.{r.name}",
            value=r.values_per_s,
            unit="values/s",
            baseline_name="he.encrypt.aes_gcm",
            baseline_value=aes.values_per_s,
            ratio=r.values_per_s / aes.values_per_s,
            goal=f"≥ {ENCRYPT_GOAL / 1e6:g} M values/s on one core, decryption "
            f"within {ENCRYPT_TOL:g}",
            met=r.ok and r.values_per_s >= ENCRYPT_GOAL,
            params={
                "ckks": presets[r.name],
                "operation": "SecretContext.encrypt of full N/2-slot float64 vectors "
                "(public-key encryption, numpy → TenSEAL)",
                "vectors_per_batch": r.vectors,
                **common,
            },
            extras={
                "ms_per_ciphertext": r.timing.best / r.vectors * 1e3,
                "median_values_per_s": r.values_per_vector
                * r.vectors
                / r.timing.median,
                "values_per_ciphertext": r.values_per_vector,
                "ciphertext_bytes": r.ciphertext_bytes,
                "bytes_per_value": r.ciphertext_bytes / r.values_per_vector,
                "max_abs_err": r.max_abs_err,
            },
        )
        for r in runs
    ]
    out.append(
        Result(
            name="he.encrypt.aes_gcm",
            value=aes.values_per_s,
            unit="values/s",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline for he.encrypt: AES-256-GCM of the same float64 vectors",
            met=aes.ok,
            params={
                "operation": "AESGCM.encrypt (cryptography), fresh 96-bit nonce per "
                "vector, float64 bytes",
                "vectors_per_batch": aes.vectors,
                **common,
            },
            extras={
                "ms_per_vector": aes.timing.best / aes.vectors * 1e3,
                "bytes_per_value": aes.ciphertext_bytes / aes.values_per_vector,
            },
        )
    )
    return out


def run(settings: Settings | None = None) -> list[Result]:
    """Measure everything on one core; return the ``he.*`` results."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    load = os.getloadavg()[0]
    with one_core(settings.cpu) as pin:
        console.print(
            f"pinned to CPU {pin.cpu}, OpenBLAS threads {pin.blas_threads}, "
            f"load average {load:.2f}"
        )
        eval_buyer = SecretContext.generate(
            CKKSParams.model_eval(), galois=True, n_threads=1
        )
        infer_buyer = SecretContext.generate(CKKSParams.inference(), n_threads=1)
        console.print("encryption throughput")
        enc_runs = [
            _encrypt(settings, eval_buyer, "model_eval"),
            _encrypt(settings, infer_buyer, "inference"),
        ]
        aes = _aes(settings, eval_buyer.slot_count)
        console.print("encrypted_inference")
        infers = _inference(settings, infer_buyer, console)
        console.print("encrypted_model_eval")
        evals = _model_eval(settings, eval_buyer, console)
        common = _params(settings, pin, load)
    _print_scaling(console, evals.sizes, infers)
    results = [
        *_eval_results(settings, evals, common),
        *_infer_results(settings, infers, common),
        *_encrypt_results(settings, enc_runs, aes, common),
    ]
    failed = [r.name for r in results if r.extras.get("checks_passed") is False]
    if failed:
        console.print(f"[red]correctness checks failed: {', '.join(failed)}[/]")
    return results

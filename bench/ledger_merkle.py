"""``ledger.merkle``: building receipt Merkle trees, proofs and verification, one core.

Measured: :meth:`ledger.MerkleTree.build` over ``n`` random 32-byte leaf hashes
(``n − 1`` Keccak-256 pair hashes in OpenZeppelin's sorted-pair, complete-binary-
tree layout) at each size of ``VEILX_BENCH_MERKLE_LEAVES`` (10⁵ and 10⁶); at the
largest size, ``tree.proof(i)`` and ``verify_proof(leaf, proof, root)`` for
``proofs`` leaves spread over the tree, and ``leaf_hash`` (the two Keccak calls
that turn a receipt digest into a leaf, not part of the build).

Baseline (``ledger.merkle.build.sha256``): the level-by-level build code (one
Python comprehension per depth, ``_merkle._build_nodes``) over the same leaves
with SHA-256 (``hashlib``, OpenSSL) as the pair hash — what the tree costs when
the hash is the cheapest C hash Python has. Since ADR 0013 the Keccak build is
one call into ``ledger._keccak`` (whole tree in C, several nodes per SIMD
instruction), so a ratio above 1 means it beats the Python loop with SHA-256.
At the largest size the details also give the extension with one node at a time
(``scalar_leaves_per_s``) and the level-by-level build with ``safe-pysha3``
(``pysha3_leaves_per_s``, the backend before ADR 0013).

Goal: build ≥ 1,000,000 leaves/s on one core at the largest size. Check: every
sampled proof verifies and a flipped leaf does not; at the smallest size the
root equals the one built with the other Keccak backend (eth-hash).

Times are the best of at least ``repeats`` runs and ``min_seconds`` of runs, on
one CPU (``bench._onecore``).

Environment: ``VEILX_BENCH_MERKLE_LEAVES`` (``1e5,1e6``),
``VEILX_BENCH_MERKLE_PROOFS`` (20,000), ``VEILX_BENCH_REPEATS`` (5),
``VEILX_BENCH_MIN_SECONDS`` (1.0), ``VEILX_BENCH_CPU`` (default: the last CPU
this process may use).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from rich.console import Console

from bench._onecore import Timing, measure, one_core
from bench.harness import Result
from ledger import KECCAK_BACKEND, MerkleTree, _merkle, leaf_hash, verify_proof

__all__ = ["BUILD_GOAL", "Settings", "make_leaves", "run", "sha256_pairs"]

BUILD_GOAL: Final = 1_000_000.0  # leaves/s


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    proofs: int = 20_000
    repeats: int = 5
    min_seconds: float = 1.0
    cpu: int | None = None
    seed: int = 20_262

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_*``."""
        env = os.environ
        raw = env.get("VEILX_BENCH_MERKLE_LEAVES", "1e5,1e6")
        try:
            sizes = tuple(sorted({int(float(s)) for s in raw.split(",") if s.strip()}))
        except ValueError as exc:
            raise ValueError(f"VEILX_BENCH_MERKLE_LEAVES: {raw!r}") from exc
        if not sizes or sizes[0] < 1:
            raise ValueError(f"VEILX_BENCH_MERKLE_LEAVES: {raw!r}")
        cpu = env.get("VEILX_BENCH_CPU")
        return cls(
            sizes=sizes,
            proofs=int(float(env.get("VEILX_BENCH_MERKLE_PROOFS", "2e4"))),
            repeats=int(env.get("VEILX_BENCH_REPEATS", "5")),
            min_seconds=float(env.get("VEILX_BENCH_MIN_SECONDS", "1.0")),
            cpu=int(cpu) if cpu else None,
        )


def make_leaves(n: int, rng: np.random.Generator) -> list[bytes]:
    """``n`` random 32-byte leaf hashes."""
    raw = rng.bytes(32 * n)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def sha256_pairs(children: list[bytes]) -> list[bytes]:
    """The baseline pair hash: SHA-256 of the sorted pair."""
    sha = hashlib.sha256
    return [
        sha(a + b).digest() if a < b else sha(b + a).digest()
        for a, b in zip(children[0::2], children[1::2], strict=True)
    ]


def size_label(n: int) -> str:
    """``1e6`` for powers of ten, else the number."""
    k = len(str(n)) - 1
    return f"1e{k}" if n >= 10 and n == 10**k else str(n)


def _time_builds(
    leaves: list[bytes], settings: Settings
) -> tuple[Timing, Timing, MerkleTree]:
    """The SHA-256 baseline build, then the Keccak build, of the same leaves."""
    base = measure(
        lambda: _merkle._build_nodes(leaves, sha256_pairs),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
        warmup=1,
    )
    built: list[MerkleTree] = []
    timing = measure(
        lambda: built.append(MerkleTree.build(leaves)),
        repeats=settings.repeats,
        min_seconds=settings.min_seconds,
    )
    return base, timing, built[-1]


def _time_alternatives(leaves: list[bytes], settings: Settings) -> dict[str, float]:
    """Leaves/s of the scalar extension and of the level-by-level pysha3 build."""
    rates: dict[str, float] = {}
    native = _merkle._NATIVE
    if native is not None:
        joined = b"".join(leaves)
        scalar = measure(
            lambda: native.tree(joined, 1),
            repeats=settings.repeats,
            min_seconds=settings.min_seconds,
        )
        rates["scalar_leaves_per_s"] = len(leaves) / scalar.best
    if _merkle._PYSHA3 is not None:
        pysha3 = measure(
            lambda: tuple(_merkle._build_nodes(leaves, _merkle._pairs_pysha3)),
            repeats=3,
            min_seconds=0.0,
        )
        rates["pysha3_leaves_per_s"] = len(leaves) / pysha3.best
    return rates


def run(settings: Settings | None = None) -> list[Result]:
    """Time the builds, proofs and verification on one core."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    load = os.getloadavg()[0]
    rng = np.random.default_rng(settings.seed)
    keccak_rate: dict[int, float] = {}
    sha_rate: dict[int, float] = {}
    keccak_median: dict[int, float] = {}
    runs: dict[int, int] = {}
    checks: dict[str, bool] = {}
    with one_core(settings.cpu) as pin:
        console.print(
            f"pinned to CPU {pin.cpu}, load average {load:.2f}; Keccak backend "
            f"{KECCAK_BACKEND}; sizes {', '.join(f'{n:,}' for n in settings.sizes)}"
        )
        tree: MerkleTree | None = None
        leaves: list[bytes] = []
        alternatives: dict[str, float] = {}
        for n in settings.sizes:
            leaves = make_leaves(n, rng)
            base, timing, tree = _time_builds(leaves, settings)
            keccak_rate[n], sha_rate[n] = n / timing.best, n / base.best
            keccak_median[n], runs[n] = n / timing.median, timing.count
            if n == settings.sizes[0]:
                other = _merkle._build_nodes(leaves, _merkle._pairs_eth_hash)
                checks["root_matches_eth_hash"] = other[0] == tree.root
        alternatives = _time_alternatives(leaves, settings)
        assert tree is not None
        n = len(tree)
        picks = [int(i) for i in rng.integers(0, n, settings.proofs)]
        proofs: list[list[bytes]] = []
        proof_t = measure(
            lambda: proofs.extend(tree.proof(i) for i in picks),
            repeats=1,
            min_seconds=0.0,
        )
        root = tree.root
        sample = [(tree.leaf(i), p) for i, p in zip(picks, proofs, strict=True)]
        verdicts: list[bool] = []
        verify_t = measure(
            lambda: verdicts.extend(verify_proof(lf, p, root) for lf, p in sample),
            repeats=1,
            min_seconds=0.0,
        )
        checks["sampled_proofs_verify"] = all(verdicts) and len(verdicts) > 0
        flipped = bytes([sample[0][0][0] ^ 1]) + sample[0][0][1:]
        checks["flipped_leaf_fails"] = not verify_proof(flipped, sample[0][1], root)
        digests = leaves[: min(n, 100_000)]
        leaf_t = measure(
            lambda: [leaf_hash(d) for d in digests],
            repeats=settings.repeats,
            min_seconds=settings.min_seconds / 4,
        )
        pinning = pin.describe()
    top = settings.sizes[-1]
    ok = all(checks.values())
    value, baseline = keccak_rate[top], sha_rate[top]
    console.print(
        f"build {value:,.0f} leaves/s (Keccak) vs {baseline:,.0f} (SHA-256) at "
        f"{top:,} leaves; checks {'ok' if ok else 'FAILED'}"
    )
    params: dict[str, Any] = {
        "leaves": list(settings.sizes),
        "keccak_backend": KECCAK_BACKEND,
        "simd_width": _merkle._NATIVE.SIMD_WIDTH if _merkle._NATIVE else None,
        "layout": "OpenZeppelin complete binary tree, sorted-pair keccak256",
        "data": "random 32-byte leaf hashes (numpy PCG64)",
        **pinning,
        "timing": f"best of ≥ {settings.repeats} runs and ≥ "
        f"{settings.min_seconds:g} s of runs",
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(load, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    scaling: dict[str, Any] = {}
    for m in settings.sizes:
        scaling[f"leaves_per_s_{size_label(m)}"] = keccak_rate[m]
        scaling[f"ratio_{size_label(m)}"] = keccak_rate[m] / sha_rate[m]
    build = Result(
        name="ledger.merkle.build",
        value=value,
        unit="leaves/s",
        baseline_name="ledger.merkle.build.sha256",
        baseline_value=baseline,
        ratio=value / baseline,
        goal=f"≥ {BUILD_GOAL:,.0f} leaves/s on one core at {top:,} leaves "
        "(goal stated at 1e6)",
        met=value >= BUILD_GOAL and ok and top >= 1_000_000,
        params=params,
        extras={
            **scaling,
            "median_leaves_per_s": keccak_median[top],
            "runs": runs[top],
            "ns_per_node": 1e9 / value * top / max(top - 1, 1),
            **alternatives,
            **checks,
            "checks_passed": ok,
        },
    )
    sha_result = Result(
        name="ledger.merkle.build.sha256",
        value=baseline,
        unit="leaves/s",
        baseline_name=None,
        baseline_value=None,
        ratio=None,
        goal="baseline",
        met=True,
        params=params,
        extras={f"leaves_per_s_{size_label(m)}": sha_rate[m] for m in settings.sizes},
    )
    proof = Result(
        name="ledger.merkle.proof",
        value=len(picks) / proof_t.best,
        unit="proofs/s",
        baseline_name=None,
        baseline_value=None,
        ratio=None,
        goal="none (reported)",
        met=ok,
        params={**params, "tree_leaves": n, "proofs": len(picks)},
        extras={"proof_length": len(proofs[0])},
    )
    verify = Result(
        name="ledger.merkle.verify",
        value=len(sample) / verify_t.best,
        unit="proofs/s",
        baseline_name=None,
        baseline_value=None,
        ratio=None,
        goal="none (reported)",
        met=ok,
        params={**params, "tree_leaves": n, "proofs": len(sample)},
        extras={
            "leaf_hashes_per_s": len(digests) / leaf_t.best,
            "checks_passed": ok,
        },
    )
    return [build, sha_result, proof, verify]

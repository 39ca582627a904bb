"""One core for in-process benchmarks, and a small timer.

:func:`one_core` pins every thread of this process to one CPU and limits numpy's
OpenBLAS to one thread, so a computation and the plaintext baseline it is compared
with each get exactly one core (TenSEAL contexts are made with ``n_threads=1`` by
the benchmarks themselves). Everything is restored on exit.

:func:`measure` runs a callable until it has run at least ``repeats`` times and
for at least ``min_seconds`` in total (garbage collection off while timing, as
``timeit`` does); :class:`Timing` keeps every run, and the benchmarks report the
best run (the least disturbed on a shared machine) with the median beside it.
"""

from __future__ import annotations

import ctypes
import gc
import glob
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Pinning", "Timing", "blas_threads", "measure", "one_core"]


@dataclass(frozen=True)
class Timing:
    """Durations of the runs of one measurement, in seconds."""

    runs: tuple[float, ...]

    @property
    def best(self) -> float:
        """The fastest run."""
        return min(self.runs)

    @property
    def median(self) -> float:
        """The median run."""
        return float(statistics.median(self.runs))

    @property
    def count(self) -> int:
        """How many runs were timed."""
        return len(self.runs)


def measure(
    fn: Callable[[], Any],
    *,
    repeats: int = 3,
    min_seconds: float = 0.0,
    max_repeats: int = 1000,
    warmup: int = 0,
) -> Timing:
    """Time ``fn`` (see the module docstring); ``warmup`` untimed calls first."""
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    total = 0.0
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        while len(runs) < max(repeats, 1) or (
            total < min_seconds and len(runs) < max_repeats
        ):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            runs.append(elapsed)
            total += elapsed
    finally:
        if enabled:
            gc.enable()
    return Timing(tuple(runs))


# -- OpenBLAS threads ------------------------------------------------------------------

_BLAS_FUNCTIONS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _openblas() -> tuple[Any, Any] | None:
    """The ``(get, set)`` thread functions of numpy's OpenBLAS, if found."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "lib*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle
        except OSError:
            continue
        for get_name, set_name in _BLAS_FUNCTIONS:
            get = getattr(lib, get_name, None)
            put = getattr(lib, set_name, None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


@contextmanager
def blas_threads(n: int) -> Iterator[int | None]:
    """Limit numpy's OpenBLAS to ``n`` threads; yields ``n``, or ``None`` if unknown."""
    funcs = _openblas()
    if funcs is None:
        yield None
        return
    get, put = funcs
    before = int(get())
    put(n)
    try:
        yield n
    finally:
        put(before)


# -- pinning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Where the process ran: the CPU (``None`` when pinning is unavailable)."""

    cpu: int | None
    blas_threads: int | None

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a result's ``params``."""
        return {"cpu": self.cpu, "blas_threads": self.blas_threads}


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _set_all(cpus: set[int]) -> None:
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended meanwhile
            continue


@contextmanager
def one_core(cpu: int | None = None) -> Iterator[Pinning]:
    """Pin every thread of this process to one CPU (default: the last allowed).

    Threads started while pinned inherit the pinning; on exit every thread gets
    the process's original CPU set back, and OpenBLAS its thread count.
    """
    with blas_threads(1) as blas:
        if not hasattr(os, "sched_setaffinity"):
            yield Pinning(None, blas)
            return
        original = set(os.sched_getaffinity(0))
        chosen = max(original) if cpu is None else cpu
        if chosen not in original:
            raise ValueError(f"CPU {chosen} is not available to this process")
        _set_all({chosen})
        try:
            yield Pinning(chosen, blas)
        finally:
            _set_all(original)

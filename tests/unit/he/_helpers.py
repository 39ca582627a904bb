"""Assertions and data factories for the HE tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def assert_only_intended(
    slots: npt.NDArray[np.complex128],
    intended: dict[int, float],
    flood_std: float,
    forbidden: npt.ArrayLike = (),
    *,
    tol: float = 0.0,
) -> None:
    """Check a raw decryption of every slot shows only the intended values.

    * each intended slot's real part is its value (within 6σ of flooding plus
      ``tol``), its imaginary part is flooding noise;
    * every other slot component is flooding noise: |·| ≤ 6σ and its empirical std
      is σ within 10 % (so no structure rides on it);
    * no unintended slot component equals a forbidden value (a Gram entry, a
      weight, the bias) that the flooding could not hide (|v| ≥ 8σ).
    """
    sigma = flood_std
    mask = np.ones(slots.size, dtype=bool)
    for i, value in intended.items():
        assert abs(slots[i].real - value) <= 6 * sigma + tol, (i, slots[i], value)
        assert abs(slots[i].imag) <= 6 * sigma, (i, slots[i])
        mask[i] = False
    others = np.concatenate([slots[mask].real, slots[mask].imag])
    assert np.max(np.abs(others)) <= 6 * sigma, np.max(np.abs(others)) / sigma
    assert 0.9 * sigma <= float(np.std(others)) <= 1.1 * sigma
    values = np.asarray(forbidden, dtype=np.float64).ravel()
    visible = values[np.abs(values) >= 8 * sigma]
    if visible.size:
        gaps = np.abs(others[:, None] - visible[None, :])
        assert float(gaps.min()) > 2 * sigma


def uniform_rows(
    rng: np.random.Generator, n: int, lows: npt.ArrayLike, highs: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Rows uniform in the box ``[lows, highs]``."""
    lo = np.asarray(lows, dtype=np.float64)
    hi = np.asarray(highs, dtype=np.float64)
    out: npt.NDArray[np.float64] = rng.uniform(lo, hi, size=(n, lo.size))
    return out

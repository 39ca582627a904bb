"""CKKS parameter sets, their security rule, and the noise-flooding calibration.

Security follows the HomomorphicEncryption.org security standard (Albrecht et al.,
"Homomorphic Encryption Security Standard", 2018, Table 1: uniform ternary secret,
error σ ≈ 3.2, classical 128-bit security): the total coefficient modulus may be at
most 218 bits at N = 8192, 438 bits at N = 16384 and 881 bits at N = 32768. SEAL
enforces the same table (``CoeffModulus::MaxBitCount(N, tc128)``); a test checks the
two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mpc_engine.he.errors import InvalidParameters, WeakParameters

#: Largest total coefficient-modulus bit count for 128-bit classical security,
#: HomomorphicEncryption.org standard, Table 1 (ternary secret).
MAX_COEFF_MODULUS_BITS: dict[int, int] = {8192: 218, 16384: 438, 32768: 881}

#: SEAL's NTT-friendly primes are between 2 and 60 bits; below 20 bits the scale
#: leaves no precision.
_PRIME_BITS = (20, 60)

#: Result headroom: the first prime must exceed the scale by at least this many
#: bits, so results up to 2^(headroom-1) in magnitude decrypt correctly.
_MIN_HEADROOM_BITS = 8

#: Default margin of the flooding noise over the circuit's noise estimate, in bits
#: (see :func:`flooding_std`): 64×, chosen so a normalised MSE of 0.01 keeps a
#: relative precision near 1e-4.
DEFAULT_HIDING_BITS = 6


@dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters, validated against the 128-bit security table.

    Parameters
    ----------
    poly_modulus_degree
        The ring dimension N: 8192, 16384 or 32768. A ciphertext holds N/2 slots.
    coeff_mod_bit_sizes
        Bit sizes of the RNS primes ``(q0, q1, …, P)``. ``q0`` holds the result
        (headroom ``q0 - scale_bits`` bits), each middle prime is divided away by
        one rescale and must equal ``scale_bits``, the last is SEAL's special
        key-switching prime. At least four primes: the circuits here have depth 2
        (a plaintext product, then the 0/1 mask that hides unused slots).
    scale_bits
        The CKKS scale Δ = 2^scale_bits: values are encoded with about
        ``scale_bits`` bits of fractional precision.

    Raises
    ------
    WeakParameters
        The total modulus exceeds the 128-bit bound for N.
    InvalidParameters
        Any other rule is broken; the message states it.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        """Check every rule; the first broken one is raised."""
        n = self.poly_modulus_degree
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidParameters("poly_modulus_degree", "must be an integer")
        if n not in MAX_COEFF_MODULUS_BITS:
            raise InvalidParameters(
                "poly_modulus_degree",
                f"is {n}; must be one of 8192, 16384, 32768 (smaller rings cannot "
                "hold a depth-2 circuit within the 128-bit security bound)",
            )
        bits = self.coeff_mod_bit_sizes
        if not isinstance(bits, tuple) or any(
            isinstance(b, bool) or not isinstance(b, int) for b in bits
        ):
            raise InvalidParameters(
                "coeff_mod_bit_sizes", "must be a tuple of integers"
            )
        if len(bits) < 4:
            raise InvalidParameters(
                "coeff_mod_bit_sizes",
                f"has {len(bits)} primes; at least 4 are needed (result prime, two "
                "rescaling primes for the depth-2 circuit, special prime)",
            )
        lo, hi = _PRIME_BITS
        if any(not lo <= b <= hi for b in bits):
            raise InvalidParameters(
                "coeff_mod_bit_sizes", f"every prime must be {lo} to {hi} bits"
            )
        total, bound = sum(bits), MAX_COEFF_MODULUS_BITS[n]
        if total > bound:
            raise WeakParameters(
                "coeff_mod_bit_sizes",
                f"total {total} bits exceeds {bound}, the most that keeps 128-bit "
                f"security at N={n} (HomomorphicEncryption.org security standard, "
                "Table 1)",
            )
        s = self.scale_bits
        if isinstance(s, bool) or not isinstance(s, int) or not lo <= s < hi:
            raise InvalidParameters(
                "scale_bits", f"must be an integer from {lo} to {hi - 1}"
            )
        if any(b != s for b in bits[1:-1]):
            raise InvalidParameters(
                "coeff_mod_bit_sizes",
                f"the middle primes {list(bits[1:-1])} must all equal scale_bits "
                f"({s}): each rescale divides by one of them and must bring the "
                "scale back to 2^scale_bits",
            )
        if bits[0] < s + _MIN_HEADROOM_BITS:
            raise InvalidParameters(
                "coeff_mod_bit_sizes",
                f"the first prime ({bits[0]} bits) must exceed scale_bits ({s}) by "
                f"at least {_MIN_HEADROOM_BITS} bits: it holds the result's "
                "integer part",
            )
        if bits[-1] < max(bits[:-1]):
            raise InvalidParameters(
                "coeff_mod_bit_sizes",
                "the last (special key-switching) prime must be at least as large "
                "as every other prime, or key switching adds large noise",
            )

    @classmethod
    def model_eval(cls) -> CKKSParams:
        """N=8192, primes (55, 47, 47, 60), Δ=2^47: for ``encrypted_model_eval``.

        Rotations (the slot sums of a dot product) add key-switching noise that grows
        with ``q0 / P``: SEAL decomposes the ciphertext into non-centred RNS digits,
        and the mean of the ``q0`` digit is amplified in the slots near the root 1.
        With ``q0`` 5 bits under the 60-bit special prime and a 47-bit scale, the
        flooding std of a d=16 evaluation is ≈6e-7 in normalised units, against
        ≈1.5e-5 for (50, 40, 40, 60) and ≈2e-3 for the default (60, 40, 40, 60)
        (measured circuit noise ≈7e-6 there). 209 of the 218 bits allowed.
        Results must stay below 2^7 in magnitude, which normalised metrics of a
        sane model do; :func:`encrypt_model` refuses models that could not.
        """
        return cls(8192, (55, 47, 47, 60), 47)

    @classmethod
    def inference(cls) -> CKKSParams:
        """N=8192, primes (60, 40, 40, 60), Δ=2^40: the default; results < 2^19."""
        return cls()

    @classmethod
    def high_precision(cls) -> CKKSParams:
        """N=16384, primes (60, 50, 50, 60), Δ=2^50; 3-5× slower.

        About 10 more bits for computations without rotations (inference,
        aggregates). With rotations ``q0 = P`` makes key-switching noise dominate:
        for ``encrypted_model_eval`` :meth:`model_eval` is more precise.
        """
        return cls(16384, (60, 50, 50, 60), 50)

    @property
    def slot_count(self) -> int:
        """Values per ciphertext: N/2."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The encoding scale Δ = 2^scale_bits."""
        return float(2**self.scale_bits)

    @property
    def max_result_magnitude(self) -> float:
        """Largest |value| a result may have and still decrypt correctly."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1))

    @property
    def security_bound_bits(self) -> int:
        """The 128-bit bound on the total modulus for this N (the standard's)."""
        return MAX_COEFF_MODULUS_BITS[self.poly_modulus_degree]


def noise_bound(params: CKKSParams, *, operand_norm: float, rotations: bool) -> float:
    """Estimate the computation's noise in one output slot, in message units.

    A heuristic bound in the terms of Costache, Curtis, Hales, Murphy, Ogilvie and
    Player ("On the precision loss in approximate homomorphic encryption", 2022),
    with constants fitted to this backend and kept at least 2× above the largest
    noise measured over keys and slots (a test re-checks every preset):

    * fresh encryption noise times the node's plaintext operand, plus the rescale
      and encoding rounding: ``4 (1 + ‖operand‖₂) · N / Δ``;
    * when slots are summed with rotations, key-switching noise:
      ``(16 + 2^(12 + q0 − P)) · N / Δ`` — the second term is SEAL's non-centred
      digit decomposition (see :meth:`CKKSParams.model_eval`).

    Parameters
    ----------
    params
        The context's parameters.
    operand_norm
        The ℓ2 norm of the node's plaintext operand (the Gram vector, the weights).
    rotations
        Whether the circuit sums slots with rotations.

    Returns
    -------
    float
        The estimated noise magnitude per output slot.
    """
    if not (math.isfinite(operand_norm) and operand_norm >= 0):
        raise InvalidParameters("operand_norm", "must be a finite number ≥ 0")
    unit = params.poly_modulus_degree / params.scale
    bound = 4.0 * (1.0 + operand_norm) * unit
    if rotations:
        q0, special = params.coeff_mod_bit_sizes[0], params.coeff_mod_bit_sizes[-1]
        bound += (16.0 + 2.0 ** (12 + q0 - special)) * unit
    return bound


def flooding_std(
    params: CKKSParams,
    *,
    operand_norm: float,
    rotations: bool,
    hiding_bits: int = DEFAULT_HIDING_BITS,
) -> float:
    """Return the flooding noise std: 2^hiding_bits times :func:`noise_bound`.

    The flooding noise is a complex Gaussian added to every slot (equivalently, an
    i.i.d. Gaussian on every coefficient: the canonical embedding is a scaled
    isometry). Two data sets that give the same result differ only in the
    computation's noise, by at most twice the bound B per real dimension; with
    flooding std σ = 2^h·B the decryption is a Gaussian mechanism on that noise with
    ρ = (2B)² / (2σ²) = 2^(1−2h) zCDP per real dimension that carries
    data-dependent noise (Li, Micciancio, Schultz, Sorrell, "Securing approximate
    homomorphic encryption using differential privacy", CRYPTO 2022). The default
    h = 6 gives ρ = 2^-11 ≈ 4.9e-4 per slot component, at a cost of σ in
    precision (≈6e-7 in normalised units for a d=16 model evaluation with
    :meth:`CKKSParams.model_eval`; measured circuit noise sits 10-80× below the
    bound, so σ exceeds it by ≈600-5000×). When the node evaluates on a
    DP-perturbed Gram matrix, the computation's noise is itself post-processing of
    that release; the flooding then keeps decryptions to the intended values.

    Parameters
    ----------
    params
        The context's parameters.
    operand_norm
        The ℓ2 norm of the node's plaintext operand.
    rotations
        Whether the circuit sums slots with rotations.
    hiding_bits
        The margin h, 4 to 20 bits.

    Returns
    -------
    float
        The standard deviation of each real and imaginary slot component.
    """
    if isinstance(hiding_bits, bool) or not isinstance(hiding_bits, int):
        raise InvalidParameters("hiding_bits", "must be an integer")
    if not 4 <= hiding_bits <= 20:
        raise InvalidParameters(
            "hiding_bits",
            f"is {hiding_bits}; must be 4 to 20: below 4 the flooding does not "
            "dominate the circuit noise, above 20 it swamps the result",
        )
    bound = noise_bound(params, operand_norm=operand_norm, rotations=rotations)
    return float(2**hiding_bits * bound)

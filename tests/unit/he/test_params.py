"""CKKS parameters: the 128-bit rule, the shape rules, the noise calibration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_engine.he import CKKSParams, flooding_std, noise_bound
from mpc_engine.he._backend import seal_max_coeff_bits
from mpc_engine.he._params import MAX_COEFF_MODULUS_BITS
from mpc_engine.he.errors import InvalidParameters, WeakParameters


def test_presets_are_valid_and_within_the_security_bound() -> None:
    for params in (
        CKKSParams(),
        CKKSParams.inference(),
        CKKSParams.model_eval(),
        CKKSParams.high_precision(),
    ):
        assert sum(params.coeff_mod_bit_sizes) <= params.security_bound_bits
    assert CKKSParams().slot_count == 4096
    assert CKKSParams().max_result_magnitude == 2.0**19
    assert CKKSParams.model_eval().max_result_magnitude == 2.0**7


@pytest.mark.parametrize("n", sorted(MAX_COEFF_MODULUS_BITS))
def test_security_table_matches_seal(n: int) -> None:
    # HomomorphicEncryption.org Table 1 as SEAL implements it (tc128).
    assert MAX_COEFF_MODULUS_BITS[n] == seal_max_coeff_bits(n)


def test_more_bits_than_the_standard_allows_is_refused_with_the_rule() -> None:
    with pytest.raises(WeakParameters) as err:
        CKKSParams(8192, (60, 50, 50, 60), 50)  # 220 > 218
    assert err.value.field == "coeff_mod_bit_sizes"
    assert "220" in err.value.rule and "218" in err.value.rule
    assert "128-bit" in str(err.value)
    with pytest.raises(WeakParameters, match="438"):
        CKKSParams(16384, (60,) * 8, 60)  # 480 > 438


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"poly_modulus_degree": 4096}, "poly_modulus_degree", "8192, 16384, 32768"),
        ({"poly_modulus_degree": 8191}, "poly_modulus_degree", "must be one of"),
        ({"coeff_mod_bit_sizes": (60, 40, 60)}, "coeff_mod_bit_sizes", "at least 4"),
        ({"coeff_mod_bit_sizes": (60, 40, 40, 61)}, "coeff_mod_bit_sizes", "20 to 60"),
        ({"coeff_mod_bit_sizes": (60, 40, 30, 60)}, "coeff_mod_bit_sizes", "equal"),
        ({"coeff_mod_bit_sizes": (45, 40, 40, 60)}, "coeff_mod_bit_sizes", "first"),
        ({"coeff_mod_bit_sizes": (60, 40, 40, 50)}, "coeff_mod_bit_sizes", "special"),
        ({"coeff_mod_bit_sizes": [60, 40, 40, 60]}, "coeff_mod_bit_sizes", "tuple"),
        ({"scale_bits": 19}, "scale_bits", "20"),
        ({"scale_bits": True}, "scale_bits", "integer"),
    ],
)
def test_each_rule_names_its_field(
    kwargs: dict[str, object], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidParameters) as err:
        CKKSParams(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
    assert fragment in err.value.rule


@settings(max_examples=200, deadline=None)
@given(
    n=st.sampled_from(sorted(MAX_COEFF_MODULUS_BITS)),
    scale=st.integers(20, 52),
    head=st.integers(0, 30),
    middle=st.integers(2, 14),
)
def test_any_parameter_set_over_the_bound_is_weak(
    n: int, scale: int, head: int, middle: int
) -> None:
    first = min(60, scale + 8 + head)  # scale ≤ 52, so the headroom rule holds
    bits = (first, *([scale] * middle), 60)
    if sum(bits) > MAX_COEFF_MODULUS_BITS[n]:
        with pytest.raises(WeakParameters):
            CKKSParams(n, bits, scale)
    else:
        params = CKKSParams(n, bits, scale)
        assert sum(params.coeff_mod_bit_sizes) <= seal_max_coeff_bits(n)


def test_params_are_frozen() -> None:
    params = CKKSParams()
    with pytest.raises(AttributeError):
        params.scale_bits = 30  # type: ignore[misc]


def test_flooding_scales_with_the_noise_estimate() -> None:
    params = CKKSParams.model_eval()
    base = noise_bound(params, operand_norm=1.0, rotations=True)
    assert flooding_std(params, operand_norm=1.0, rotations=True, hiding_bits=6) == (
        64 * base
    )
    # the non-centred key-switching term: q0 = P costs 2^10 more than q0 = P - 10
    same = noise_bound(CKKSParams(), operand_norm=0.0, rotations=True)
    lower = noise_bound(CKKSParams.model_eval(), operand_norm=0.0, rotations=True)
    assert same > 100 * lower
    assert noise_bound(params, operand_norm=0.0, rotations=False) < base


@pytest.mark.parametrize("bits", [3, 21, True])
def test_hiding_bits_out_of_range_is_refused(bits: int) -> None:
    with pytest.raises(InvalidParameters) as err:
        flooding_std(CKKSParams(), operand_norm=1.0, rotations=False, hiding_bits=bits)
    assert err.value.field == "hiding_bits"


def test_negative_operand_norm_is_refused() -> None:
    with pytest.raises(InvalidParameters):
        noise_bound(CKKSParams(), operand_norm=float("nan"), rotations=False)

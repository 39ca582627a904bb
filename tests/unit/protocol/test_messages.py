"""The protocol messages: validation, canonical hashes, signatures, bundles."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import (
    Attestation,
    BadSignature,
    ColumnQuality,
    InvalidKeyFile,
    InvalidMessage,
    JobCreate,
    JobKind,
    JobOutcome,
    JobResult,
    JobState,
    NodeKey,
    ReasonCode,
    Receipt,
    SignedAttestation,
    SignedReceipt,
    canonical_json,
    check_public_key,
    flatten_aggregate,
    inputs_hash,
    iso_utc,
    model_eval_bounds,
    output_hash,
    pack_bundle,
    params_hash,
    unflatten_aggregate,
    unpack_bundle,
    utc_now,
    verify_signature,
)

KEY = NodeKey.generate()


def _receipt(**changes: Any) -> Receipt:
    body: dict[str, Any] = {
        "job_id": uuid.uuid4(),
        "node_id": uuid.uuid4(),
        "dataset_id": uuid.uuid4(),
        "dataset_version_hash": "a" * 64,
        "policy_hash": "b" * 64,
        "kind": "aggregate",
        "params_hash": "c" * 64,
        "inputs_hash": inputs_hash({}, None),
        "privacy_loss": {"epsilon": 0.25, "delta": 0.0},
        "replayed": False,
        "output_hash": output_hash({"groups": []}, {}),
        "issued_at": iso_utc(utc_now()),
    }
    body.update(changes)
    return Receipt.model_validate(body)


def _aggregate_job(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset_id": str(uuid.uuid4()),
        "kind": "aggregate",
        "purpose": "research",
        "params": {"statistics": ["mean", "count"], "columns": ["x"], "mode": "exact"},
    }
    body.update(changes)
    return body


# -- signatures ---------------------------------------------------------------------


def test_a_signed_receipt_verifies_and_any_changed_field_does_not() -> None:
    signed = SignedReceipt.sign(_receipt(), KEY)
    signed.verify(KEY.public_key_hex)
    for field, value in [
        ("privacy_loss", {"epsilon": 0.0, "delta": 0.0}),
        ("output_hash", "f" * 64),
        ("replayed", True),
        ("kind", "encrypted_inference"),
    ]:
        changed = Receipt.model_validate({**signed.receipt.model_dump(), field: value})
        forged = SignedReceipt(receipt=changed, signature=signed.signature)
        with pytest.raises(BadSignature, match="receipt"):
            forged.verify(KEY.public_key_hex)


def test_a_flipped_signature_byte_or_another_key_fails() -> None:
    signed = SignedReceipt.sign(_receipt(), KEY)
    flipped = signed.signature[:10] + ("0" if signed.signature[10] != "0" else "1")
    flipped += signed.signature[11:]
    with pytest.raises(BadSignature):
        SignedReceipt(receipt=signed.receipt, signature=flipped).verify(
            KEY.public_key_hex
        )
    with pytest.raises(BadSignature):
        signed.verify(NodeKey.generate().public_key_hex)


@pytest.mark.parametrize(
    ("key", "sig"),
    [
        ("zz" * 32, "00" * 64),
        ("00" * 31, "00" * 64),
        (None, "00" * 64),
        ("00" * 32, "x"),
    ],
)
def test_malformed_keys_and_signatures_verify_false(key: Any, sig: Any) -> None:
    assert verify_signature(key, b"message", sig) is False


def test_check_public_key_names_the_field() -> None:
    assert check_public_key(KEY.public_key_hex) == KEY.public_key_hex
    with pytest.raises(InvalidMessage, match="public_key"):
        check_public_key("ab" * 10)


def test_signed_attestation_round_trip() -> None:
    att = Attestation(
        dataset_id=uuid.uuid4(),
        node_id=uuid.uuid4(),
        content_hash="d" * 64,
        row_count=10,
        columns=[
            ColumnQuality(name="x", type="float", null_rate=0.1, distinct_count=9)
        ],
        source_modified_at=iso_utc(utc_now()),
        computed_at=iso_utc(utc_now()),
    )
    signed = SignedAttestation.sign(att, KEY)
    signed.verify(KEY.public_key_hex)
    again = SignedAttestation.model_validate_json(signed.model_dump_json())
    again.verify(KEY.public_key_hex)
    bad = SignedAttestation(
        attestation=att.model_copy(update={"row_count": 11}), signature=signed.signature
    )
    with pytest.raises(BadSignature, match="attestation"):
        bad.verify(KEY.public_key_hex)


# -- key files ----------------------------------------------------------------------


def test_key_file_is_created_owner_only_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "node.key"
    key, created = NodeKey.load_or_create(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = NodeKey.load_or_create(path)
    assert not created_again
    assert again.public_key_hex == key.public_key_hex
    assert key.public_key_hex not in path.read_text()


def test_a_readable_or_garbled_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidKeyFile, match="mode is 644"):
        NodeKey.load(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(InvalidKeyFile, match="not a hex-encoded"):
        NodeKey.load(path)


def test_a_node_key_is_never_pickled() -> None:
    import pickle

    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(KEY)
    assert "public" in repr(KEY)


# -- job messages -------------------------------------------------------------------


def test_job_create_normalises_params_so_equal_requests_hash_equally() -> None:
    a = JobCreate.model_validate(_aggregate_job())
    b = JobCreate.model_validate(
        _aggregate_job(
            params={"statistics": ["count", "mean"], "columns": ["x"], "mode": "exact"}
        )
    )
    assert a.params == b.params
    assert params_hash(a.params) == params_hash(b.params)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"params": {"statistics": []}}, "statistics"),
        ({"inputs": {"outer": "a" * 64}}, "unexpected outer"),
        (
            {
                "kind": "encrypted_model_eval",
                "params": {"model_kind": "linear", "features": ["x"], "label": "y"},
            },
            "missing linear, outer",
        ),
        ({"params": {"statistics": ["count"], "encrypt_result": True}}, "context_id"),
        ({"context_id": "a" * 64}, "omit it"),
        ({"purpose": "Bad Purpose"}, "purpose"),
        ({"timeout_seconds": 1}, "timeout_seconds"),
    ],
)
def test_job_create_rejections_name_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        JobCreate.model_validate(_aggregate_job(**changes))


def test_model_eval_params_refuse_a_column_named_twice() -> None:
    with pytest.raises(ValidationError, match="columns named twice: y"):
        JobCreate.model_validate(
            _aggregate_job(
                kind="encrypted_model_eval",
                params={"model_kind": "linear", "features": ["x", "y"], "label": "y"},
                inputs={"outer": "a" * 64, "linear": "b" * 64},
                context_id="c" * 64,
            )
        )


def test_job_result_requires_a_matching_receipt_for_success() -> None:
    output = {"groups": []}
    receipt = SignedReceipt.sign(_receipt(output_hash=output_hash(output, {})), KEY)
    JobResult(outcome=JobOutcome.SUCCEEDED, output=output, receipt=receipt)
    with pytest.raises(ValidationError, match="output_hash does not match"):
        JobResult(outcome=JobOutcome.SUCCEEDED, output={"groups": [1]}, receipt=receipt)
    with pytest.raises(ValidationError, match="needs output and receipt"):
        JobResult(outcome=JobOutcome.SUCCEEDED, output=output)
    with pytest.raises(ValidationError, match="needs reason_code and reason"):
        JobResult(outcome=JobOutcome.REJECTED)
    JobResult(
        outcome=JobOutcome.REJECTED,
        reason_code=ReasonCode.BUDGET_EXHAUSTED,
        reason="ε remaining 0.1",
    )


def test_terminal_states() -> None:
    assert {s for s in JobState if s.terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.REJECTED,
        JobState.EXPIRED,
    }
    assert {k.value for k in JobKind} == {
        "aggregate",
        "encrypted_model_eval",
        "encrypted_inference",
    }


def test_canonical_json_is_key_order_independent_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json({"x": float("nan")})


# -- bundles ------------------------------------------------------------------------


@given(st.lists(st.lists(st.binary(max_size=40), max_size=4), max_size=4))
def test_bundles_round_trip(rows: list[list[bytes]]) -> None:
    assert unpack_bundle(pack_bundle(rows)) == rows


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"NOPE", "bad magic"),
        (pack_bundle([[b"abc"]])[:-1], "truncated"),
        (pack_bundle([[b"abc"]]) + b"x", "trailing bytes"),
        (b"VXB1\x01\x00", "truncated"),
    ],
)
def test_malformed_bundles_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason) as info:
        unpack_bundle(data, "inputs.columns")
    assert info.value.field == "inputs.columns"


# -- encrypted aggregate layout -------------------------------------------------------


def test_flatten_keeps_keys_and_nulls_and_round_trips() -> None:
    out = {
        "group_by": ["region"],
        "groups": [
            {"key": ["north"], "count": 40, "mean": {"x": 2.5, "y": None}},
            {"key": [7], "histogram": {"x": [3, None, 5]}},
        ],
        "dp_applied": False,
        "privacy_loss": {"epsilon": 0.0, "delta": 0.0},
    }
    skeleton, values = flatten_aggregate(out)
    assert values == [40.0, 2.5, 3.0, 5.0]
    assert skeleton["groups"][0]["key"] == ["north"]
    assert skeleton["groups"][1]["key"] == [7]
    assert "2.5" not in canonical_json(skeleton).decode()
    noisy = [v + 0.01 for v in values]
    back = unflatten_aggregate(skeleton, noisy)
    assert back["groups"][0]["count"] == 40
    assert back["groups"][0]["mean"]["x"] == pytest.approx(2.51)
    assert back["groups"][1]["histogram"]["x"] == [3, None, 5]
    with pytest.raises(InvalidMessage, match="out of range"):
        unflatten_aggregate(skeleton, values[:2])


# -- model-eval bounds ----------------------------------------------------------------


def _policy() -> RightsPolicy:
    return RightsPolicy.model_validate(
        {
            "permitted_kinds": ["encrypted_model_eval"],
            "permitted_columns": ["age", "income", "defaulted", "region"],
            "purposes": ["research"],
            "regions": ["DE"],
            "budget_per_buyer": {"epsilon": 1, "delta": 0},
            "budget_per_dataset": {"epsilon": 2, "delta": 0},
            "column_bounds": {
                "age": {"lower": 18, "upper": 100},
                "income": {"lower": 0, "upper": 1e6},
            },
        }
    )


def test_model_eval_bounds_take_policy_bounds_and_booleans_as_unit_range() -> None:
    types = {"age": "integer", "income": "float", "defaulted": "boolean"}
    bounds = model_eval_bounds(_policy(), types, ["age", "income"], "defaulted")
    assert bounds.features == ((18.0, 100.0), (0.0, 1e6))
    assert bounds.label == (0.0, 1.0)


@pytest.mark.parametrize(
    ("features", "label", "message"),
    [
        (["age", "secret"], "defaulted", "'secret' is not permitted"),
        (["region"], "defaulted", "'region' is categorical"),
        (["age"], "income", None),
    ],
)
def test_model_eval_bounds_refusals(
    features: list[str], label: str, message: str | None
) -> None:
    types = {
        "age": "integer",
        "income": "float",
        "defaulted": "boolean",
        "region": "categorical",
    }
    if message is None:
        assert model_eval_bounds(_policy(), types, features, label).label == (0.0, 1e6)
        return
    with pytest.raises(InvalidMessage, match=message) as info:
        model_eval_bounds(_policy(), types, features, label)
    assert info.value.field.startswith("params.")


def test_params_errors_are_located_under_params() -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(_aggregate_job(params={"statistics": ["median"]}))
    assert info.value.errors()[0]["loc"][:2] == ("params", "statistics")

"""Secret and public contexts: no secret key leaves the buyer, key files are 0600."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

from mpc_engine.he import CKKSParams, EncryptedVector, PublicContext, SecretContext
from mpc_engine.he._backend import NativeContext
from mpc_engine.he.errors import (
    ContextMismatch,
    InsecureKeyFile,
    InvalidInput,
    KeyFileError,
    MalformedContext,
    SecretKeyPresent,
)


def test_public_bytes_hold_no_secret_key(infer_keys: SecretContext) -> None:
    public = infer_keys.public_bytes()
    info = NativeContext.load(public, n_threads=1).info()
    assert not info.has_secret_key
    assert info.has_public_key
    assert not info.has_galois_keys
    assert len(public) < 2_000_000  # public key only: ≈0.5 MB at N=8192


def test_galois_keys_only_when_asked(
    eval_keys: SecretContext, eval_node: PublicContext, infer_node: PublicContext
) -> None:
    assert eval_keys.galois and eval_node.has_galois_keys
    assert not infer_node.has_galois_keys
    assert len(eval_keys.public_bytes()) > 10_000_000
    assert (
        not NativeContext.load(eval_keys.public_bytes(), n_threads=1)
        .info()
        .has_secret_key
    )


def test_a_context_with_a_secret_key_is_refused(infer_keys: SecretContext) -> None:
    secret = infer_keys._native.serialize(secret=True, galois=False)
    with pytest.raises(SecretKeyPresent) as err:
        PublicContext.from_bytes(secret)
    assert err.value.where == "the context sent to the node"
    assert "secret key" in str(err.value)


def test_context_id_is_the_sha256_of_the_uploaded_bytes(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    digest = hashlib.sha256(infer_keys.public_bytes()).hexdigest()
    assert infer_keys.context_id == infer_node.context_id == digest


def test_contexts_are_built_only_through_their_constructors(
    infer_node: PublicContext,
) -> None:
    with pytest.raises(TypeError, match="from_bytes"):
        PublicContext(infer_node._native, CKKSParams(), "x", False)
    with pytest.raises(TypeError, match="generate"):
        SecretContext(infer_node._native, CKKSParams(), b"", False)


def test_expected_parameters_are_enforced(infer_keys: SecretContext) -> None:
    with pytest.raises(ContextMismatch):
        PublicContext.from_bytes(
            infer_keys.public_bytes(), expected=CKKSParams.model_eval()
        )


def test_reprs_and_pickling_reveal_no_key_material(infer_keys: SecretContext) -> None:
    text = repr(infer_keys)
    assert len(text) < 200 and infer_keys.context_id[:16] in text
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(infer_keys)


def test_secret_key_file_is_0600_and_round_trips(
    tmp_path: Path, eval_keys: SecretContext
) -> None:
    before = eval_keys.encrypt([1.5, -2.25, 3.0])
    path = tmp_path / "buyer.key"
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        eval_keys.save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buyer.key"]

    loaded = SecretContext.load(path)
    assert loaded.context_id == eval_keys.context_id  # Galois keys kept verbatim
    assert loaded.galois and loaded.params == eval_keys.params
    moved = EncryptedVector.from_bytes(loaded, before.to_bytes())
    np.testing.assert_allclose(loaded.decrypt(moved), [1.5, -2.25, 3.0], atol=1e-6)


def test_saving_never_overwrites_by_accident(
    tmp_path: Path, infer_keys: SecretContext
) -> None:
    path = tmp_path / "k"
    infer_keys.save(path)
    with pytest.raises(KeyFileError, match="exists"):
        infer_keys.save(path)
    infer_keys.save(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_access_is_not_read(
    tmp_path: Path, infer_keys: SecretContext, mode: int
) -> None:
    path = tmp_path / "k"
    infer_keys.save(path)
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile) as err:
        SecretContext.load(path)
    assert err.value.mode == mode
    assert "0600" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b"NOTAKEY!" + b[8:], "magic"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b + b"x", "trailing"),
    ],
)
def test_a_damaged_key_file_is_refused(
    tmp_path: Path, infer_keys: SecretContext, mutate: object, fragment: str
) -> None:
    path = tmp_path / "k"
    infer_keys.save(path)
    path.write_bytes(mutate(path.read_bytes()))  # type: ignore[operator]
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=fragment):
        SecretContext.load(path)


def test_a_key_file_mixing_two_keys_is_refused(tmp_path: Path) -> None:
    one, two = SecretContext.generate(), SecretContext.generate()
    path = tmp_path / "k"
    one.save(path)
    blob = path.read_bytes()
    secret_len = int.from_bytes(blob[8:16], "big")
    head = blob[: 16 + secret_len]
    public = two.public_bytes()
    path.write_bytes(head + len(public).to_bytes(8, "big") + public)
    path.chmod(0o600)
    with pytest.raises(MalformedContext, match="another key"):
        SecretContext.load(path)


def test_missing_key_file_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as err:
        SecretContext.load(tmp_path / "absent")
    assert isinstance(err.value, OSError)


def test_encrypt_and_decrypt_check_their_inputs(
    infer_keys: SecretContext, eval_keys: SecretContext
) -> None:
    with pytest.raises(InvalidInput) as err:
        infer_keys.encrypt(np.zeros(infer_keys.slot_count + 1))
    assert err.value.field == "values"
    with pytest.raises(InvalidInput, match="NaN"):
        infer_keys.encrypt([1.0, float("nan")])
    with pytest.raises(ContextMismatch, match="another key"):
        infer_keys.decrypt(eval_keys.encrypt([1.0]))
    # a result the node computed under its public copy of the key decrypts
    node = infer_keys.public_context()
    moved = EncryptedVector.from_bytes(node, infer_keys.encrypt([2.5]).to_bytes())
    np.testing.assert_allclose(infer_keys.decrypt(moved), [2.5], atol=1e-6)

"""LocalSigner: keys from hex, env, keystore and key files; the key never leaks."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
from eth_account import Account

from ledger._signer import DEFAULT_KEY_ENV, LocalSigner, Signer
from ledger.errors import LedgerError, SignerError

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY_HEX = KEY.hex()
ADDRESS = Account.from_key(KEY).address


def assert_no_key(text: str) -> None:
    assert KEY_HEX not in text.lower()
    assert KEY_HEX[:16] not in text.lower()


@pytest.mark.parametrize("key", [KEY, KEY_HEX, "0x" + KEY_HEX, f"  0X{KEY_HEX}\n"])
def test_from_key_accepts_bytes_and_hex(key: str | bytes) -> None:
    signer = LocalSigner.from_key(key)
    assert signer.address == ADDRESS
    assert isinstance(signer, Signer)


def test_repr_str_and_pickle_never_show_the_key() -> None:
    signer = LocalSigner.from_key(KEY)
    assert repr(signer) == f"LocalSigner(address={ADDRESS})"
    assert str(signer) == repr(signer)
    assert_no_key(repr(signer))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)


def test_sign_transaction_returns_raw_bytes_signed_by_the_key() -> None:
    signer = LocalSigner.from_key(KEY)
    tx = {
        "to": ADDRESS,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 3,
        "chainId": 1337,
        "type": 2,
    }
    raw = signer.sign_transaction(tx)
    assert isinstance(raw, bytes)
    assert raw[0] == 2  # EIP-1559 envelope
    assert Account.recover_transaction(raw) == ADDRESS


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (KEY_HEX[:-2], "64 hex digits"),
        ("zz" + KEY_HEX[2:], "not hexadecimal"),
        (KEY[:31], "32 bytes"),
        ("00" * 32, "not a valid secp256k1 private key"),
        ("ff" * 32, "not a valid secp256k1 private key"),
    ],
)
def test_from_key_rejects_malformed_keys_without_echoing_them(
    key: str | bytes, reason: str
) -> None:
    with pytest.raises(SignerError) as info:
        LocalSigner.from_key(key)
    assert info.value.reason.startswith(reason) or reason in info.value.reason
    assert isinstance(info.value, LedgerError)
    # No chained exception may carry the key into a traceback.
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert_no_key(str(info.value))


def test_from_env_reads_the_default_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_KEY_ENV, "0x" + KEY_HEX)
    assert LocalSigner.from_env().address == ADDRESS


def test_from_env_names_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEILX_TEST_KEY", raising=False)
    with pytest.raises(SignerError) as info:
        LocalSigner.from_env("VEILX_TEST_KEY")
    assert info.value.source == "environment variable VEILX_TEST_KEY"
    assert "VEILX_TEST_KEY" in str(info.value) and "not set" in str(info.value)


def test_from_env_names_a_malformed_variable_but_not_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VEILX_TEST_KEY", KEY_HEX[:-1] + "g")
    with pytest.raises(SignerError) as info:
        LocalSigner.from_env("VEILX_TEST_KEY")
    assert "VEILX_TEST_KEY" in str(info.value)
    assert info.value.reason == "not hexadecimal"
    assert_no_key(str(info.value))


def write_keystore(path: Path, password: str) -> None:
    keystore = Account.encrypt(KEY, password, kdf="scrypt", iterations=2**10)
    path.write_text(json.dumps(keystore), encoding="utf-8")


def test_keystore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    write_keystore(path, "correct horse")
    signer = LocalSigner.from_keystore(path, "correct horse")
    assert signer.address == ADDRESS


def test_keystore_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    write_keystore(path, "correct horse")
    with pytest.raises(SignerError) as info:
        LocalSigner.from_keystore(path, "battery staple")
    assert info.value.reason == "wrong password or corrupt keystore"
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not a JSON keystore"),
        ('{"version": 3}', "not a JSON keystore (no 'crypto' section)"),
        ('{"crypto": {}}', "malformed keystore"),
    ],
)
def test_keystore_malformed(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SignerError) as info:
        LocalSigner.from_keystore(path, "pw")
    assert info.value.reason == reason


def test_keystore_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SignerError) as info:
        LocalSigner.from_keystore(tmp_path / "absent.json", "pw")
    assert info.value.reason == "no such file"


def test_load_or_create_creates_a_private_key_file_and_reloads_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "nested" / "operator.key"
    created = LocalSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text(encoding="ascii")
    assert text.startswith("0x") and len(text.strip()) == 66
    assert Account.from_key(text.strip()).address == created.address
    again = LocalSigner.load_or_create(path)
    assert again.address == created.address


def test_load_or_create_reads_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "operator.key"
    path.write_text(KEY_HEX + "\n", encoding="ascii")
    path.chmod(0o600)
    assert LocalSigner.load_or_create(path).address == ADDRESS


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_load_or_create_refuses_a_key_file_others_can_read(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "operator.key"
    path.write_text(KEY_HEX, encoding="ascii")
    path.chmod(mode)
    with pytest.raises(SignerError) as info:
        LocalSigner.load_or_create(path)
    assert f"permissions 0{mode:o} are too open" in info.value.reason
    assert f"chmod 600 {path}" in info.value.reason
    assert_no_key(str(info.value))


def test_load_or_create_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    real.write_text(KEY_HEX, encoding="ascii")
    real.chmod(0o600)
    link = tmp_path / "operator.key"
    link.symlink_to(real)
    with pytest.raises(SignerError) as info:
        LocalSigner.load_or_create(link)
    assert info.value.reason == "not a regular file"


def test_load_or_create_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "operator.key"
    path.write_text("hello\n", encoding="ascii")
    os.chmod(path, 0o600)
    with pytest.raises(SignerError) as info:
        LocalSigner.load_or_create(path)
    assert info.value.reason == "a private key is 32 bytes, 64 hex digits"

"""Local HE keys: private files, one upload per exchange, no secret ever sent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest

from mpc_engine.he import CKKSParams, PublicContext, SecretContext
from sdk import MODEL_EVAL_KEY, Client, Keys, KeyStoreError, default_key_dir
from sdk._keys import Keys as _Keys
from tests.unit.sdk._fake import API_KEY, FakeExchange


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret_part(path: Path) -> bytes:
    """The serialized secret context inside a key file (see ``_context``)."""
    blob = path.read_bytes()
    length = int.from_bytes(blob[8:16], "big")
    return blob[16 : 16 + length]


def test_generated_key_files_are_private(tmp_path: Path) -> None:
    key_dir = tmp_path / "nested" / "keys"
    keys = Keys(key_dir)
    key = keys.ensure()
    assert _mode(key_dir) == 0o700
    assert _mode(keys.path("default")) == 0o600
    assert _mode(key_dir / "default.json") == 0o600
    assert SecretContext.load(keys.path("default")).context_id == key.context_id
    [info] = keys.list()
    assert (info.name, info.context_id, info.galois) == (
        "default",
        key.context_id,
        False,
    )
    assert info.poly_modulus_degree == 8192 and info.uploaded_to == []


def test_a_loose_key_dir_is_tightened_and_a_loose_key_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o755)
    os.chmod(key_dir, 0o755)  # noqa: S103 - the loose mode under test
    keys = Keys(key_dir)
    keys.ensure()
    assert _mode(key_dir) == 0o700
    os.chmod(keys.path("default"), 0o644)
    with pytest.raises(KeyStoreError) as caught:
        Keys(key_dir).load()
    assert "0644" in caught.value.reason and caught.value.name == "default"


def test_ensure_reuses_and_refuses_other_parameters(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    first = keys.ensure("k1")
    assert Keys(tmp_path).ensure("k1").context_id == first.context_id
    with pytest.raises(KeyStoreError) as caught:
        Keys(tmp_path).ensure("k1", preset="high_precision")
    assert "use another key name" in caught.value.reason
    with pytest.raises(KeyStoreError) as caught:
        Keys(tmp_path).ensure("k1", galois=True)
    assert "Galois" in caught.value.reason
    with pytest.raises(KeyStoreError):
        keys.generate("k1")
    replaced = keys.generate("k1", overwrite=True)
    assert replaced.context_id != first.context_id
    with pytest.raises(KeyStoreError) as caught:
        Keys(tmp_path).load("missing")
    assert "no key" in caught.value.reason


@pytest.mark.parametrize("name", ["../escape", "UPPER", "", "a/b", ".hidden"])
def test_key_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        Keys(tmp_path).ensure(name)
    assert list(tmp_path.iterdir()) == []


def test_default_key_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_key_dir() == tmp_path / ".config" / "veilx" / "keys"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_key_dir() == tmp_path / "xdg" / "veilx" / "keys"
    assert Client(API_KEY).keys.key_dir == tmp_path / "xdg" / "veilx" / "keys"


def test_context_is_uploaded_once_per_exchange(tmp_path: Path) -> None:
    first, second = FakeExchange(), FakeExchange()
    with first.client(tmp_path) as client:
        key = client.keys.ensure()
        assert client.keys.upload_context() == key.context_id
        assert client.keys.upload_context("default") == key.context_id
    uploads = [r for r in first.requests if r.path == "/v1/he-contexts"]
    assert len(uploads) == 1
    assert uploads[0].content == key.public_bytes()
    assert uploads[0].headers["Content-Type"] == "application/octet-stream"
    assert key.context_id in first.contexts
    with first.client(tmp_path) as client:  # a new client reads the record
        client.keys.upload_context()
    assert len([r for r in first.requests if r.path == "/v1/he-contexts"]) == 1
    with second.client(tmp_path) as client:
        client.keys.upload_context()
        client.keys.upload_context(force=True)
    assert len([r for r in second.requests if r.path == "/v1/he-contexts"]) == 2
    [info] = Keys(tmp_path).list()
    assert info.uploaded_to == [first.base_url, second.base_url]


def test_a_keys_store_without_exchange_cannot_upload(tmp_path: Path) -> None:
    keys = _Keys(tmp_path)
    keys.ensure()
    with pytest.raises(KeyStoreError) as caught:
        keys.upload_context()
    assert "not connected" in caught.value.reason


def test_the_exchange_would_refuse_a_secret_key(tmp_path: Path) -> None:
    """The fake's check is real: a context with a secret key is refused."""
    exchange = FakeExchange()
    key = Keys(tmp_path).ensure()
    with httpx.Client(transport=httpx.MockTransport(exchange.handle)) as http:
        response = http.post(
            f"{exchange.base_url}/v1/he-contexts",
            content=_secret_part(Keys(tmp_path).path("default")),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 422
    assert response.json()["code"] == "secret_key_present"
    assert key.context_id not in exchange.contexts


def test_no_request_ever_carries_the_secret_key(
    shared_key_dir: Path, tmp_path: Path
) -> None:
    """Run every flow that uploads, then scan every request body."""
    exchange = FakeExchange()
    with exchange.client(shared_key_dir) as client:
        client.compute.aggregate(
            exchange.dataset_id,
            statistics=["sum"],
            columns=["income"],
            group_by=["region"],
            encrypt_result=True,
            purpose="research",
            poll_interval=0,
        )
        client.compute.inference(
            exchange.dataset_id,
            model="spend-v1",
            rows=np.ones((3, 2)),
            purpose="research",
            poll_interval=0,
        )
        client.compute.model_eval(
            exchange.dataset_id,
            weights=[0.8, 1.5],
            bias=10.0,
            features=["age", "income"],
            label="spend",
            purpose="research",
            poll_interval=0,
        )
    keys = Keys(shared_key_dir)
    bodies = exchange.bodies()
    assert sum(len(b) for b in bodies) > 30_000_000  # the Galois context went up
    for name in ("default", MODEL_EVAL_KEY):
        secret = _secret_part(keys.path(name))
        public = keys.load(name).public_bytes()
        # Windows of the secret serialization that the public bytes do not share.
        windows = [
            w
            for w in (secret[i : i + 48] for i in range(0, len(secret) - 48, 4099))
            if w not in public
        ]
        assert len(windows) >= 20
        for body in bodies:
            assert secret not in body
            assert not any(w in body for w in windows)
    contexts = [r.content for r in exchange.requests if r.path == "/v1/he-contexts"]
    assert len(contexts) == 2
    for body in contexts:
        PublicContext.from_bytes(body, n_threads=1)  # raises if a secret is inside


def test_explicit_parameters(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    key = keys.generate("custom", preset=CKKSParams(8192, (60, 40, 40, 60), 40))
    assert keys.ensure("custom", preset="inference").context_id == key.context_id
    with pytest.raises(ValueError, match="preset"):
        keys.ensure("x", preset="fast")  # type: ignore[arg-type]

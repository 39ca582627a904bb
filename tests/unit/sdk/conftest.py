"""Shared fixtures for the SDK tests: a fake exchange and pre-generated keys.

A key with Galois keys takes ≈0.5 s to generate and its public context is
≈35 MB, so the keys the compute flows use are made once per session in one key
directory; tests that check key files make their own (cheap) keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk import AGGREGATE_KEY, MODEL_EVAL_KEY, Client, Keys
from tests.unit.sdk._fake import FakeExchange


@pytest.fixture(scope="session")
def shared_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key directory holding the ``default`` and ``model-eval`` keys."""
    path = tmp_path_factory.mktemp("veilx-keys") / "keys"
    keys = Keys(path)
    keys.generate(AGGREGATE_KEY, preset="inference")
    keys.generate(MODEL_EVAL_KEY, preset="model_eval", galois=True)
    return path


@pytest.fixture
def exchange() -> FakeExchange:
    """A fresh fake exchange with one node and one dataset."""
    return FakeExchange()


@pytest.fixture
def client(exchange: FakeExchange, shared_key_dir: Path) -> Iterator[Client]:
    """A client of ``exchange`` using the shared keys, polling without pauses."""
    with exchange.client(shared_key_dir) as c:
        yield c

"""Shared fixtures for the node tests: sample data, CKKS keys, node state.

Key generation with Galois keys takes ≈0.5 s and the public context is ≈35 MB, so
each kind of key is made once per session; the sample CSVs are loaded once too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpc_engine.he import CKKSParams, SecretContext
from mpc_engine.node import GramStore, NodeIdentity, NodeState
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.protocol import NodeKey
from tests.unit.node.factories import CREDIT, load_sample, sample


@pytest.fixture(scope="session")
def credit_data(tmp_path_factory: pytest.TempPathFactory) -> LoadedDataset:
    """The credit-card sample (15 000 rows), loaded from its CSV."""
    return load_sample(sample(CREDIT), tmp_path_factory.mktemp("credit"))


@pytest.fixture(scope="session")
def eval_keys() -> SecretContext:
    """A buyer key for encrypted_model_eval (Galois keys, low-noise preset)."""
    return SecretContext.generate(CKKSParams.model_eval(), galois=True)


@pytest.fixture(scope="session")
def infer_keys() -> SecretContext:
    """A buyer key for encrypted_inference and encrypted aggregates (default)."""
    return SecretContext.generate()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[NodeState]:
    """A fresh node state."""
    s = NodeState(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def grams(tmp_path: Path) -> GramStore:
    """A fresh Gram cache."""
    return GramStore(tmp_path / "grams")


@pytest.fixture(scope="session")
def identity() -> NodeIdentity:
    """A node id and signing key."""
    return NodeIdentity(uuid.uuid4(), NodeKey.generate())

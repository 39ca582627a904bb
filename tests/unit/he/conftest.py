"""Shared keys for the HE tests (helpers live in ``_helpers.py``).

Key generation with Galois keys takes ≈0.5 s and the public context is ≈35 MB, so
each kind of key is made once per session.
"""

from __future__ import annotations

import pytest

from mpc_engine.he import CKKSParams, PublicContext, SecretContext


@pytest.fixture(scope="session")
def eval_keys() -> SecretContext:
    """A buyer key for encrypted_model_eval (Galois keys, low-noise preset)."""
    return SecretContext.generate(CKKSParams.model_eval(), galois=True)


@pytest.fixture(scope="session")
def eval_node(eval_keys: SecretContext) -> PublicContext:
    """The node's view of ``eval_keys``: built from the uploaded bytes only."""
    return PublicContext.from_bytes(eval_keys.public_bytes())


@pytest.fixture(scope="session")
def infer_keys() -> SecretContext:
    """A buyer key for encrypted_inference (default preset, no Galois keys)."""
    return SecretContext.generate()


@pytest.fixture(scope="session")
def infer_node(infer_keys: SecretContext) -> PublicContext:
    """The node's view of ``infer_keys``."""
    return PublicContext.from_bytes(infer_keys.public_bytes())

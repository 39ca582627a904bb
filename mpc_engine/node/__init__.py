"""The provider's data node: holds the raw data, runs approved computations.

The node pulls jobs from the exchange (long poll, so it works behind NAT),
enforces each dataset's rights policy and privacy budget itself (DESIGN §5), runs
``aggregate``, ``encrypted_model_eval`` and ``encrypted_inference`` next to the
data, and pushes back results that are aggregates under k / DP noise or
ciphertexts under the buyer's key, each with a receipt signed by its Ed25519 key.
It never imports ``marketplace`` or ``sdk``: it speaks the documented HTTP API
(``docs/protocol.md``) with :mod:`mpc_engine.protocol` messages.

Modules: ``config`` (TOML config), ``sources`` (CSV / Parquet / SQL against the
listing's schema), ``attestation`` (signed quality facts), ``state`` (SQLite
journal, budgets, replay cache; DP Gram cache), ``executor`` (one job:
policy, budget, computation, receipt), ``client`` (exchange HTTP), ``runner``
(start-up, recovery, the poll loop), ``cli`` (``veilx node serve|init|show``).

Typical use::

    service = NodeService(load_config("node.toml"))
    service.start()                      # register, publish, attest, recover
    service.serve(stop_event)            # until stop_event is set
"""

from mpc_engine.node.attestation import build_attestation
from mpc_engine.node.client import ExchangeClient
from mpc_engine.node.config import NodeConfig, load_config
from mpc_engine.node.errors import (
    ConfigError,
    ExchangeError,
    ExchangeUnavailable,
    NodeError,
    SourceError,
    StateError,
)
from mpc_engine.node.executor import (
    ContextCache,
    Execution,
    JobInputs,
    NodeIdentity,
    ServedDataset,
    execute,
)
from mpc_engine.node.runner import NodeService
from mpc_engine.node.sources import LoadedDataset, load_dataset
from mpc_engine.node.state import GramStore, NodeState

__all__ = [
    "ConfigError",
    "ContextCache",
    "ExchangeClient",
    "ExchangeError",
    "ExchangeUnavailable",
    "Execution",
    "GramStore",
    "JobInputs",
    "LoadedDataset",
    "NodeConfig",
    "NodeError",
    "NodeIdentity",
    "NodeService",
    "NodeState",
    "ServedDataset",
    "SourceError",
    "StateError",
    "build_attestation",
    "execute",
    "load_config",
    "load_dataset",
]

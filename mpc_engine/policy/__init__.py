"""Machine-readable rights policies: what may be computed on a dataset, by whom.

The node is the authority that enforces a policy; the exchange stores it, shows it
and records its hash. See DESIGN §5.
"""

from mpc_engine.policy._model import (
    ColumnBounds,
    ColumnInfo,
    ComputationKind,
    PolicyContradictions,
    PrivacyBudget,
    RightsPolicy,
    Sensitivity,
    check_against_schema,
)

__all__ = [
    "ColumnBounds",
    "ColumnInfo",
    "ComputationKind",
    "PolicyContradictions",
    "PrivacyBudget",
    "RightsPolicy",
    "Sensitivity",
    "check_against_schema",
]

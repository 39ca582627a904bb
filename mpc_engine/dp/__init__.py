"""Differential privacy: OpenDP mechanisms over aggregates, accounting, replay.

* ``laplace`` / ``gaussian`` / ``add_noise`` noise a number or vector given its
  sensitivity and return a ``NoisyRelease`` with the ``PrivacyLoss`` OpenDP
  confirmed; ``quantile_index`` (exponential mechanism over a candidate grid) and
  ``threshold_release`` (stable histogram over data-derived keys) do the same for
  selections.
* ``PrivacyAccountant`` keeps each buyer's and the dataset's budget and refuses
  overspend (basic sequential composition, see its module).
* ``ReleaseKey`` / ``ReleaseCache`` / ``replay_or_release`` give an identical
  question its identical stored answer at no cost (DESIGN §5).

OpenDP is imported only in ``mpc_engine.dp._backend``.
"""

from mpc_engine.dp._accountant import PrivacyAccountant, Reservation
from mpc_engine.dp._loss import Mechanism, PrivacyLoss, split_evenly, total_loss
from mpc_engine.dp._mechanisms import (
    NoisyRelease,
    QuantileRelease,
    ThresholdRelease,
    add_noise,
    gaussian,
    laplace,
    quantile_index,
    threshold_release,
)
from mpc_engine.dp._replay import ReleaseCache, ReleaseKey, Replay, replay_or_release

__all__ = [
    "Mechanism",
    "NoisyRelease",
    "PrivacyAccountant",
    "PrivacyLoss",
    "QuantileRelease",
    "ReleaseCache",
    "ReleaseKey",
    "Replay",
    "Reservation",
    "ThresholdRelease",
    "add_noise",
    "gaussian",
    "laplace",
    "quantile_index",
    "replay_or_release",
    "split_evenly",
    "threshold_release",
    "total_loss",
]

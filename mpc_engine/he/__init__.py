"""Homomorphic encryption (CKKS, via TenSEAL) for the encrypted computations.

Who holds what:

* the **buyer** holds a :class:`SecretContext` (its key pair, saved with mode
  0600), encrypts inputs, decrypts results;
* the **node** holds a :class:`PublicContext`, built only from the bytes the buyer
  uploaded and refused if they carry a secret key; the exchange refers to it by
  ``context_id`` (SHA-256 of those bytes), uploaded once per buyer key.

Computations (DESIGN §4; the O(rows) work stays in plaintext at the node):

* ``encrypted_model_eval`` — :func:`gram_matrix` (node, numpy, cacheable per
  dataset version), :func:`encrypt_model` (buyer), :func:`evaluate_model` (node),
  :func:`decrypt_metrics` (buyer). Linear: MSE and mean prediction; logistic: a
  degree-2 log-loss and the mean logit. What a dishonest buyer can learn, and how
  DP covers it (:meth:`Gram.perturbed` with :func:`sensitivity`), is in
  ``mpc_engine/he/_model_eval.py``.
* ``encrypted_inference`` — :func:`encrypt_columns` (buyer), :func:`score_linear`
  (node), :func:`decrypt_scores` (buyer).
* any other CKKS result (e.g. an encrypted aggregate): :func:`add_noise` for DP
  noise on chosen slots, :func:`rerandomize` before it leaves the node; a result
  computed in the clear is encrypted under the buyer's public key with
  :func:`encrypt_values`.

What the key holder can learn (details in the module docstrings): in
``encrypted_model_eval`` the buyer chooses what it encrypts, so a dishonest buyer
can read an arbitrary linear functional of the normalised moments per query (one
entry of the Gram matrix, for instance); the node covers this by clamping rows to
the policy bounds and perturbing the Gram matrix once per dataset version with
noise calibrated to :func:`sensitivity`, which makes every answer post-processing
of one DP release. In ``encrypted_inference`` the scores reveal the linear model
after d + 1 chosen rows, which the policy's row budget bounds.

HE rules: parameters meet 128-bit security (:class:`CKKSParams`, the
HomomorphicEncryption.org standard); results are masked to their intended slots,
re-randomised with a fresh encryption of zero and flooded with Gaussian noise on
every slot's real and imaginary parts (:func:`flooding_std` states the margin), so
a decryption — even a raw SEAL decoding of every slot — shows only the intended
values. Malformed bytes raise the typed errors of :mod:`mpc_engine.he.errors`.
"""

from mpc_engine.he._context import (
    EncryptedVector,
    PublicContext,
    SecretContext,
    add_noise,
    encrypt_values,
    rerandomize,
)
from mpc_engine.he._gram import (
    Gram,
    GramBounds,
    GramSensitivity,
    Sensitivity,
    gram_matrix,
    sensitivity,
)
from mpc_engine.he._inference import (
    EncryptedColumns,
    EncryptedScores,
    decrypt_scores,
    encrypt_columns,
    score_linear,
)
from mpc_engine.he._model_eval import (
    EncryptedMetrics,
    EncryptedModel,
    ModelKind,
    ModelMetrics,
    augmented_weights,
    decrypt_metrics,
    encrypt_model,
    evaluate_model,
)
from mpc_engine.he._params import CKKSParams, flooding_std, noise_bound
from mpc_engine.he.errors import HEError

__all__ = [
    "CKKSParams",
    "EncryptedColumns",
    "EncryptedMetrics",
    "EncryptedModel",
    "EncryptedScores",
    "EncryptedVector",
    "Gram",
    "GramBounds",
    "GramSensitivity",
    "HEError",
    "ModelKind",
    "ModelMetrics",
    "PublicContext",
    "SecretContext",
    "Sensitivity",
    "add_noise",
    "augmented_weights",
    "decrypt_metrics",
    "decrypt_scores",
    "encrypt_columns",
    "encrypt_model",
    "encrypt_values",
    "evaluate_model",
    "flooding_std",
    "gram_matrix",
    "noise_bound",
    "rerandomize",
    "score_linear",
    "sensitivity",
]

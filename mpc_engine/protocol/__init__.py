"""The protocol between the buyer's SDK, the exchange and the data node.

Typed messages (pydantic) for jobs, results, receipts and quality attestations;
the canonical JSON and hashes that signatures cover; the Ed25519 node identity.
The exchange imports only this package from ``mpc_engine`` (DESIGN §3), plus the
HE context check that keeps secret keys out of its database.

HTTP surface (all under ``/v1``; see ``docs/protocol.md``)::

    buyer      POST /blobs, POST /he-contexts, POST /jobs, GET /jobs/{id},
               GET /jobs/{id}/receipt, GET /blobs/{sha}, GET /datasets/{id}/budget
    provider   POST /nodes, POST /jobs/{id}/approve, POST /jobs/{id}/deny
    node       POST /nodes/{id}/attestations, GET /nodes/{id}/jobs/next?wait=,
               GET /nodes/{id}/jobs, POST /jobs/{id}/start, POST /jobs/{id}/result,
               GET /he-contexts/{id}, GET /blobs/{sha}, POST /blobs
"""

from mpc_engine.protocol._messages import (
    INPUTS_BY_KIND,
    PARAMS_BY_KIND,
    AggregateParams,
    Attestation,
    BudgetUsage,
    ColumnQuality,
    InferenceParams,
    JobCreate,
    JobKind,
    JobOutcome,
    JobResult,
    JobSpec,
    JobState,
    Loss,
    ModelEvalParams,
    ModelInfo,
    ReasonCode,
    Receipt,
    SignedAttestation,
    SignedReceipt,
    canonical_json,
    flatten_aggregate,
    inputs_hash,
    iso_utc,
    model_eval_bounds,
    needs_context,
    output_hash,
    pack_bundle,
    params_hash,
    parse_params,
    sha256_hex,
    unflatten_aggregate,
    unpack_bundle,
    utc_now,
)
from mpc_engine.protocol._signing import NodeKey, check_public_key, verify_signature
from mpc_engine.protocol.errors import (
    BadSignature,
    InvalidKeyFile,
    InvalidMessage,
    ProtocolError,
)

__all__ = [
    "INPUTS_BY_KIND",
    "PARAMS_BY_KIND",
    "AggregateParams",
    "Attestation",
    "BadSignature",
    "BudgetUsage",
    "ColumnQuality",
    "InferenceParams",
    "InvalidKeyFile",
    "InvalidMessage",
    "JobCreate",
    "JobKind",
    "JobOutcome",
    "JobResult",
    "JobSpec",
    "JobState",
    "Loss",
    "ModelEvalParams",
    "ModelInfo",
    "NodeKey",
    "ProtocolError",
    "ReasonCode",
    "Receipt",
    "SignedAttestation",
    "SignedReceipt",
    "canonical_json",
    "check_public_key",
    "flatten_aggregate",
    "inputs_hash",
    "iso_utc",
    "model_eval_bounds",
    "needs_context",
    "output_hash",
    "pack_bundle",
    "params_hash",
    "parse_params",
    "sha256_hex",
    "unflatten_aggregate",
    "unpack_bundle",
    "utc_now",
    "verify_signature",
]

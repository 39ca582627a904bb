"""The messages exchanged by the buyer's SDK, the exchange and the data node.

Every signed document (receipt, quality attestation) is signed over its
*canonical JSON*: keys sorted, no whitespace, UTF-8, no NaN/Infinity
(:func:`canonical_json`). Hashes are SHA-256, lower-case hex.

Hashes a receipt binds (DESIGN §2):

* ``params_hash``  = sha256(canonical_json(params)) — the validated, normalised
  parameters (lists whose order carries no meaning are sorted by the models).
* ``inputs_hash``  = sha256(canonical_json({"context_id": …, "inputs": {name: sha}}))
  — the buyer's ciphertext blobs and the context they are under.
* ``output_hash``  = sha256(canonical_json({"blobs": {name: sha}, "output": …}))
  — the released JSON output and the result ciphertext blobs.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mpc_engine.aggregate import AggregateRequest
from mpc_engine.he import GramBounds, ModelKind
from mpc_engine.policy import ComputationKind, RightsPolicy
from mpc_engine.protocol._signing import (
    PUBLIC_KEY_PATTERN,
    SIGNATURE_PATTERN,
    NodeKey,
    verify_signature,
)
from mpc_engine.protocol.errors import BadSignature, InvalidMessage

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, hex.")]
Signature = Annotated[str, Field(pattern=SIGNATURE_PATTERN)]
PublicKey = Annotated[str, Field(pattern=PUBLIC_KEY_PATTERN)]
ColumnName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Token = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,47}$")]
ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,62}$")]
InputName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]

MAX_MODEL_FEATURES = 64
MAX_INFERENCE_ROWS = 10_000_000


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8, finite numbers."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def utc_now() -> datetime:
    """Now, in UTC, whole seconds (the form that is signed)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso_utc(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for an aware datetime."""
    if value.utcoffset() is None:
        raise InvalidMessage("timestamp", "must include a time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- jobs --------------------------------------------------------------------------


class JobKind(StrEnum):
    """The computation kinds a job may run (a subset of :class:`ComputationKind`)."""

    AGGREGATE = ComputationKind.AGGREGATE.value
    ENCRYPTED_MODEL_EVAL = ComputationKind.ENCRYPTED_MODEL_EVAL.value
    ENCRYPTED_INFERENCE = ComputationKind.ENCRYPTED_INFERENCE.value


class JobState(StrEnum):
    """A job's life: (awaiting_approval →) queued → dispatched → running → end."""

    AWAITING_APPROVAL = "awaiting_approval"
    """The policy asks for human approval; the provider must approve or deny."""
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    """Handed to the node (it has the spec; it has not started)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Could not be computed (node error, node restart mid-run, timeout)."""
    REJECTED = "rejected"
    """Refused by the node (policy, budget, malformed input) or denied by the
    provider."""
    EXPIRED = "expired"
    """Not picked up (or not approved) before its deadline."""

    @property
    def terminal(self) -> bool:
        """Whether the job can change state no more."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.REJECTED, JobState.EXPIRED}
)


class ReasonCode(StrEnum):
    """Why a job failed, was rejected or expired (with a human ``reason``)."""

    POLICY_VIOLATION = "policy_violation"
    KIND_NOT_PERMITTED = "kind_not_permitted"
    PURPOSE_NOT_PERMITTED = "purpose_not_permitted"
    REGION_NOT_PERMITTED = "region_not_permitted"
    POLICY_EXPIRED = "policy_expired"
    POLICY_CHANGED = "policy_changed"
    QUERY_LIMIT = "query_limit"
    BUDGET_EXHAUSTED = "budget_exhausted"
    ROW_BUDGET_EXHAUSTED = "row_budget_exhausted"
    INVALID_PARAMS = "invalid_params"
    INVALID_INPUT = "invalid_input"
    INVALID_CONTEXT = "invalid_context"
    DATASET_VERSION_UNAVAILABLE = "dataset_version_unavailable"
    DENIED = "denied"
    NODE_RESTARTED = "node_restarted"
    NODE_ERROR = "node_error"
    TIMEOUT = "timeout"
    NOT_APPROVED_IN_TIME = "not_approved_in_time"
    NOT_PICKED_UP = "not_picked_up"


class AggregateParams(AggregateRequest):
    """``aggregate`` parameters: an :class:`AggregateRequest` plus result encryption.

    With ``encrypt_result`` the released values are returned CKKS-encrypted under
    the buyer's context (blob ``values``), so the exchange sees only the layout.
    """

    encrypt_result: bool = False


class ModelEvalParams(BaseModel):
    """``encrypted_model_eval`` parameters (inputs ``outer`` and ``linear``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_kind: ModelKind
    features: list[ColumnName] = Field(min_length=1, max_length=MAX_MODEL_FEATURES)
    label: ColumnName

    @model_validator(mode="after")
    def _distinct(self) -> ModelEvalParams:
        names = [*self.features, self.label]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns named twice: {', '.join(dupes)}")
        return self


class InferenceParams(BaseModel):
    """``encrypted_inference`` parameters (input ``columns``: a blob bundle)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = Field(description="A model the node registered for the dataset.")
    n_rows: int = Field(ge=1, le=MAX_INFERENCE_ROWS)


PARAMS_BY_KIND: Mapping[JobKind, type[BaseModel]] = {
    JobKind.AGGREGATE: AggregateParams,
    JobKind.ENCRYPTED_MODEL_EVAL: ModelEvalParams,
    JobKind.ENCRYPTED_INFERENCE: InferenceParams,
}
INPUTS_BY_KIND: Mapping[JobKind, tuple[str, ...]] = {
    JobKind.AGGREGATE: (),
    JobKind.ENCRYPTED_MODEL_EVAL: ("linear", "outer"),
    JobKind.ENCRYPTED_INFERENCE: ("columns",),
}


def parse_params(kind: JobKind, params: Mapping[str, Any]) -> BaseModel:
    """Validate ``params`` for ``kind`` (raises pydantic's ``ValidationError``)."""
    return PARAMS_BY_KIND[JobKind(kind)].model_validate(dict(params))


def needs_context(kind: JobKind, params: BaseModel) -> bool:
    """Whether a job of ``kind`` with ``params`` needs the buyer's HE context."""
    if kind is JobKind.AGGREGATE:
        return bool(getattr(params, "encrypt_result", False))
    return True


def params_hash(params: Mapping[str, Any]) -> str:
    """``params_hash`` of normalised params (``model_dump(mode="json")``)."""
    return sha256_hex(canonical_json(dict(params)))


def inputs_hash(inputs: Mapping[str, str], context_id: str | None) -> str:
    """``inputs_hash`` of the input blob hashes and the context id."""
    return sha256_hex(
        canonical_json({"context_id": context_id, "inputs": dict(inputs)})
    )


def output_hash(output: Any, blobs: Mapping[str, str]) -> str:
    """``output_hash`` of a released JSON output and its ciphertext blob hashes."""
    return sha256_hex(canonical_json({"blobs": dict(blobs), "output": output}))


class JobCreate(BaseModel):
    """What a buyer submits (``POST /v1/jobs``).

    ``inputs`` name blobs uploaded first (``POST /v1/blobs``); ``context_id`` names
    an HE context uploaded first (``POST /v1/he-contexts``).
    """

    model_config = ConfigDict(extra="forbid")

    dataset_id: uuid.UUID
    kind: JobKind
    purpose: Token
    params: dict[str, Any]
    inputs: dict[InputName, Sha256] = Field(default_factory=dict)
    context_id: Sha256 | None = None
    timeout_seconds: int = Field(
        default=900, ge=10, le=86_400, description="Deadline, counted from submission."
    )

    @field_validator("params")
    @classmethod
    def _params_by_kind(
        cls, value: dict[str, Any], info: ValidationInfo
    ) -> dict[str, Any]:
        # A field validator, so nested errors are reported as ``params.<field>``.
        kind = info.data.get("kind")
        if kind is None:  # the kind itself is invalid and reported
            return value
        return parse_params(kind, value).model_dump(mode="json")

    @model_validator(mode="after")
    def _by_kind(self) -> JobCreate:
        parsed = parse_params(self.kind, self.params)
        want = set(INPUTS_BY_KIND[self.kind])
        got = set(self.inputs)
        if got != want:
            missing, extra = sorted(want - got), sorted(got - want)
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise ValueError(
                f"inputs: {self.kind.value} takes {sorted(want)}; " + "; ".join(parts)
            )
        if needs_context(self.kind, parsed) and self.context_id is None:
            raise ValueError(f"context_id: required for this {self.kind.value} job")
        if not needs_context(self.kind, parsed) and self.context_id is not None:
            raise ValueError("context_id: this job returns no ciphertext; omit it")
        return self


class JobSpec(BaseModel):
    """What the node receives for a dispatched job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version_id: uuid.UUID
    content_hash: Sha256
    policy_hash: Sha256
    buyer_id: uuid.UUID
    buyer_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    purpose: Token
    kind: JobKind
    params: dict[str, Any]
    inputs: dict[InputName, Sha256]
    context_id: Sha256 | None
    approved_by: str | None = Field(
        default=None, description="Who approved it, when the policy asks for approval."
    )
    created_at: datetime
    deadline: datetime
    state: JobState = JobState.DISPATCHED


class JobOutcome(StrEnum):
    """How the node ended a job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class BudgetUsage(BaseModel):
    """The node's budget ledger for one (dataset, buyer); ``buyer_id`` null: total."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_id: uuid.UUID
    buyer_id: uuid.UUID | None
    epsilon_spent: float = Field(ge=0)
    delta_spent: float = Field(ge=0)
    epsilon_budget: float = Field(gt=0)
    delta_budget: float = Field(ge=0)
    queries: int = Field(ge=0)
    inference_rows: int = Field(ge=0)


# -- receipts ----------------------------------------------------------------------


class Loss(BaseModel):
    """A privacy loss (ε, δ) as recorded on a receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(ge=0)
    delta: float = Field(ge=0, lt=1)

    @field_validator("epsilon", "delta")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class Receipt(BaseModel):
    """The node's signed statement of what it computed (DESIGN §2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    receipt_version: Literal[1] = 1
    job_id: uuid.UUID
    node_id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version_hash: Sha256
    policy_hash: Sha256
    kind: JobKind
    params_hash: Sha256
    inputs_hash: Sha256
    privacy_loss: Loss
    replayed: bool = Field(
        description="The identical question was asked before; the stored answer was "
        "returned at no privacy cost."
    )
    output_hash: Sha256
    issued_at: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.model_dump(mode="json"))


class SignedReceipt(BaseModel):
    """A receipt and the node's Ed25519 signature over ``receipt.signed_bytes()``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    receipt: Receipt
    signature: Signature

    @classmethod
    def sign(cls, receipt: Receipt, key: NodeKey) -> SignedReceipt:
        """Sign ``receipt`` with the node's key."""
        return cls(receipt=receipt, signature=key.sign(receipt.signed_bytes()))

    def verify(self, public_key_hex: str) -> None:
        """Check the signature.

        Raises
        ------
        BadSignature
            The signature does not verify under ``public_key_hex``.
        """
        if not verify_signature(
            public_key_hex, self.receipt.signed_bytes(), self.signature
        ):
            raise BadSignature(
                "receipt", "signature does not verify under the node's public key"
            )


class JobResult(BaseModel):
    """What the node posts when it ends a job (``POST /v1/jobs/{id}/result``)."""

    model_config = ConfigDict(extra="forbid")

    outcome: JobOutcome
    reason_code: ReasonCode | None = None
    reason: str | None = Field(default=None, max_length=2000)
    output: dict[str, Any] | None = None
    output_blobs: dict[InputName, Sha256] = Field(default_factory=dict)
    receipt: SignedReceipt | None = None
    budget: list[BudgetUsage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> JobResult:
        if self.outcome is JobOutcome.SUCCEEDED:
            if self.receipt is None or self.output is None:
                raise ValueError("a succeeded job needs output and receipt")
            if self.receipt.receipt.output_hash != output_hash(
                self.output, self.output_blobs
            ):
                raise ValueError("receipt.output_hash does not match output")
        elif self.reason_code is None or not self.reason:
            raise ValueError(f"a {self.outcome.value} job needs reason_code and reason")
        return self


# -- quality attestations ---------------------------------------------------------


class ColumnQuality(BaseModel):
    """Quality facts about one column (identifier columns: nulls only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ColumnName
    type: str
    null_rate: float = Field(ge=0, le=1)
    distinct_count: int | None = Field(
        default=None, ge=0, description="Absent for identifier columns."
    )
    min: float | str | None = Field(default=None, description="Public columns only.")
    max: float | str | None = Field(default=None, description="Public columns only.")


class ModelInfo(BaseModel):
    """A provider model the node scores with ``encrypted_inference`` (no weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName
    kind: ModelKind
    features: list[ColumnName] = Field(min_length=1, max_length=MAX_MODEL_FEATURES)
    description: str = Field(default="", max_length=500)


class Attestation(BaseModel):
    """A node's signed quality statement about one dataset version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attestation_version: Literal[1] = 1
    dataset_id: uuid.UUID
    node_id: uuid.UUID
    content_hash: Sha256
    row_count: int = Field(ge=0)
    columns: list[ColumnQuality]
    freshness: str | None = Field(
        default=None, description="Latest date/time in the data's temporal columns."
    )
    source_modified_at: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    computed_at: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    models: list[ModelInfo] = Field(default_factory=list)

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(self.model_dump(mode="json"))


class SignedAttestation(BaseModel):
    """An attestation and the node's signature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attestation: Attestation
    signature: Signature

    @classmethod
    def sign(cls, attestation: Attestation, key: NodeKey) -> SignedAttestation:
        """Sign ``attestation`` with the node's key."""
        return cls(
            attestation=attestation, signature=key.sign(attestation.signed_bytes())
        )

    def verify(self, public_key_hex: str) -> None:
        """Check the signature (raises :class:`BadSignature`)."""
        if not verify_signature(
            public_key_hex, self.attestation.signed_bytes(), self.signature
        ):
            raise BadSignature(
                "attestation", "signature does not verify under the node's public key"
            )


# -- blob bundles -----------------------------------------------------------------

_BUNDLE_MAGIC = b"VXB1"
_MAX_BUNDLE_ITEMS = 1 << 20


def pack_bundle(rows: Sequence[Sequence[bytes]]) -> bytes:
    """Pack a rectangular-or-ragged list of byte strings into one blob.

    Layout (little-endian): ``b"VXB1"``, u32 row count, then per row a u32 item
    count and per item a u64 length followed by the bytes.
    """
    out = [_BUNDLE_MAGIC, struct.pack("<I", len(rows))]
    for row in rows:
        out.append(struct.pack("<I", len(row)))
        for item in row:
            out.append(struct.pack("<Q", len(item)))
            out.append(bytes(item))
    return b"".join(out)


def unpack_bundle(data: bytes, field: str = "bundle") -> list[list[bytes]]:
    """Inverse of :func:`pack_bundle`; raises :class:`InvalidMessage` on bad bytes."""
    view = memoryview(data)
    if bytes(view[:4]) != _BUNDLE_MAGIC:
        raise InvalidMessage(field, "is not a veilx blob bundle (bad magic)")
    pos = 4

    def take(fmt: str) -> int:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(view):
            raise InvalidMessage(field, "is truncated")
        (value,) = struct.unpack_from(fmt, view, pos)
        pos += size
        return int(value)

    rows: list[list[bytes]] = []
    total = 0
    for _ in range(take("<I")):
        row: list[bytes] = []
        for _ in range(take("<I")):
            total += 1
            if total > _MAX_BUNDLE_ITEMS:
                raise InvalidMessage(field, "has too many items")
            length = take("<Q")
            if pos + length > len(view):
                raise InvalidMessage(field, "is truncated")
            row.append(bytes(view[pos : pos + length]))
            pos += length
        rows.append(row)
    if pos != len(view):
        raise InvalidMessage(field, "has trailing bytes")
    return rows


# -- shared derivations -------------------------------------------------------------


def model_eval_bounds(
    policy: RightsPolicy,
    column_types: Mapping[str, str],
    features: Sequence[str],
    label: str,
) -> GramBounds:
    """The clamping bounds ``encrypted_model_eval`` uses, as buyer and node agree.

    Numeric columns take their bounds from the policy; boolean columns are 0/1
    with bounds (0, 1). ``column_types`` maps names to the listing's column types
    (``integer``, ``float``, ``boolean``, …).

    Raises
    ------
    InvalidMessage
        A column is not permitted, not numeric or boolean, or has no bounds.
    """
    pairs: list[tuple[float, float]] = []
    for where, name in [*(("features", f) for f in features), ("label", label)]:
        if name not in policy.permitted_columns:
            raise InvalidMessage(f"params.{where}", f"column {name!r} is not permitted")
        kind = column_types.get(name)
        if kind == "boolean":
            pairs.append((0.0, 1.0))
        elif kind in ("integer", "float"):
            b = policy.column_bounds.get(name)
            if b is None:
                raise InvalidMessage(
                    f"params.{where}", f"column {name!r} has no bounds in the policy"
                )
            pairs.append((b.lower, b.upper))
        else:
            raise InvalidMessage(
                f"params.{where}",
                f"column {name!r} is {kind or 'unknown'}; only numeric and boolean "
                "columns can be model features or labels",
            )
    return GramBounds(tuple(pairs[:-1]), pairs[-1])


# -- encrypted aggregate layout -----------------------------------------------------

_SLOT = "$slot"


def flatten_aggregate(output: Mapping[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Split an aggregate output into a skeleton and its released numbers.

    Used when an ``aggregate`` result is returned encrypted: the node encrypts the
    numbers (one CKKS vector, blob ``values``) and sends the skeleton in the clear.
    In the skeleton every number of ``groups[*]`` statistics (``count``, ``sum``,
    ``mean``, ``variance``, ``histogram``, ``quantiles``) becomes ``{"$slot": i}``;
    ``None`` (withheld) and group keys stay as they are. Everything outside
    ``groups`` (edges, levels, privacy loss) is unchanged.
    """
    values: list[float] = []

    def walk(node: Any) -> Any:
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int | float):
            values.append(float(node))
            return {_SLOT: len(values) - 1}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        raise InvalidMessage(
            "output", f"unexpected value of type {type(node).__name__}"
        )

    skeleton = dict(output)
    skeleton["groups"] = [
        {k: (v if k == "key" else walk(v)) for k, v in group.items()}
        for group in output.get("groups", [])
    ]
    return skeleton, values


def unflatten_aggregate(
    skeleton: Mapping[str, Any], values: Sequence[float]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_aggregate`; counts and histogram cells are rounded.

    Raises
    ------
    InvalidMessage
        A slot index is out of range.
    """

    def walk(node: Any, integral: bool) -> Any:
        if isinstance(node, dict) and set(node) == {_SLOT}:
            i = node[_SLOT]
            if not isinstance(i, int) or not 0 <= i < len(values):
                raise InvalidMessage("output", f"slot {i!r} is out of range")
            v = float(values[i])
            return round(v) if integral else v
        if isinstance(node, list):
            return [walk(v, integral) for v in node]
        if isinstance(node, dict):
            return {k: walk(v, integral) for k, v in node.items()}
        return node

    out = dict(skeleton)
    out["groups"] = [
        {
            k: (v if k == "key" else walk(v, k in ("count", "histogram")))
            for k, v in group.items()
        }
        for group in skeleton.get("groups", [])
    ]
    return out

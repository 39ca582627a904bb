"""Jobs, the blobs they name, and the privacy-budget use the nodes report.

A job is a buyer's computation on a dataset, run by the dataset's node.

A job is created from :class:`mpc_engine.protocol.JobCreate`; what the node
receives is a :class:`mpc_engine.protocol.JobSpec` and what it returns a
:class:`mpc_engine.protocol.JobResult`. The dataset version's content hash, the
policy hash and the buyer's region are copied onto the job when it is created:
they are what the job is bound to, and what its receipt must match, whatever
happens to the listing afterwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy import BigInteger, Column, Double, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow
from mpc_engine.policy import PrivacyBudget
from mpc_engine.protocol import (
    INPUTS_BY_KIND,
    BudgetUsage,
    JobCreate,
    JobKind,
    JobState,
    Loss,
    ReasonCode,
    SignedReceipt,
    needs_context,
    parse_params,
)

__all__ = [
    "BudgetReport",
    "DatasetBudgetUsage",
    "Job",
    "JobApproval",
    "JobBlob",
    "JobDenial",
    "JobPage",
    "JobPublic",
    "JobSubmission",
    "ReceiptPublic",
]


class JobSubmission(JobCreate):
    """:class:`JobCreate`, with errors located at the field they are about.

    ``JobCreate`` checks ``params``, ``inputs`` and ``context_id`` in one model
    validator, so its errors would point at the body as a whole, or at a
    ``params`` member without the ``params.`` prefix. The same rules are checked
    here first, with the right location; ``JobCreate`` then normalises ``params``
    as before.
    """

    entitlement_id: uuid.UUID | None = Field(
        default=None,
        description="The entitlement to charge; by default the buyer's active one on "
        "the dataset that expires first. Free datasets need none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _located(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            return data
        try:
            kind = JobKind(str(data.get("kind")))
        except ValueError:
            return data  # the ``kind`` field reports it
        errors: list[InitErrorDetails] = []
        try:
            parsed = parse_params(kind, data["params"])
        except ValidationError as exc:
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"]),
                    loc=("params", *e["loc"]),
                    input=e["input"],
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        inputs = data.get("inputs", {})
        if isinstance(inputs, dict):
            want, got = set(INPUTS_BY_KIND[kind]), set(inputs)
            if want != got:
                parts = [f"{kind.value} takes {sorted(want)}"]
                if want - got:
                    parts.append(f"missing {', '.join(sorted(want - got))}")
                if got - want:
                    parts.append(f"unexpected {', '.join(sorted(got - want))}")
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("inputs_mismatch", "; ".join(parts)),
                        loc=("inputs",),
                        input=inputs,
                    )
                )
        context = data.get("context_id")
        if needs_context(kind, parsed) and context is None:
            message = f"required: this {kind.value} job returns ciphertexts"
        elif not needs_context(kind, parsed) and context is not None:
            message = "this job returns no ciphertext; omit it"
        else:
            message = ""
        if message:
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("context_mismatch", message),
                    loc=("context_id",),
                    input=context,
                )
            )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


class Job(SQLModel, table=True):
    """A buyer's computation on one dataset version."""

    __table_args__ = (
        # A node's poll: its queued jobs, oldest first.
        Index("ix_job_node_state_created", "node_id", "state", "created_at"),
        # The sweep: jobs of a state past their deadline.
        Index("ix_job_state_deadline", "state", "deadline"),
        Index("ix_job_buyer_created", "buyer_id", "created_at"),
        Index("ix_job_dataset_created", "dataset_id", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    dataset_version_id: uuid.UUID = Field(foreign_key="dataset_version.id")
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    node_id: uuid.UUID = Field(foreign_key="node.id")
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    purpose: str = Field(sa_column=Column(String(48), nullable=False))
    params: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    inputs: dict[str, str] = Field(sa_column=Column(JSONType, nullable=False))
    context_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(64), ForeignKey("he_context.context_id"), nullable=True
        ),
    )
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    policy_hash: str = Field(sa_column=Column(String(64), nullable=False))
    buyer_region: str = Field(sa_column=Column(String(2), nullable=False))
    state: str = Field(sa_column=Column(String(20), nullable=False))
    reason_code: str | None = Field(
        default=None, sa_column=Column(String(40), nullable=True)
    )
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    approved_by: str | None = Field(
        default=None, sa_column=Column(String(200), nullable=True)
    )
    approval_note: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    deadline: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    output: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )
    output_blobs: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    privacy_loss: dict[str, float] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )
    receipt: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSONType, nullable=True)
    )
    result_digest: str | None = Field(
        default=None,
        sa_column=Column(String(64), nullable=True),
        description="SHA-256 of the canonical JobResult that ended the job: a "
        "re-post of the same result is recognised.",
    )


class JobBlob(SQLModel, table=True):
    """A blob a job names: an input (by the buyer) or an output (by the node)."""

    __tablename__ = "job_blob"

    job_id: uuid.UUID = Field(foreign_key="job.id", primary_key=True)
    role: str = Field(sa_column=Column(String(8), primary_key=True, nullable=False))
    name: str = Field(sa_column=Column(String(32), primary_key=True, nullable=False))
    sha256: str = Field(
        sa_column=Column(
            String(64), ForeignKey("blob.sha256"), nullable=False, index=True
        )
    )


class JobPublic(SQLModel):
    """A job as the API shows it (docs/protocol.md)."""

    id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version_id: uuid.UUID
    content_hash: str = Field(description="The dataset version's content hash.")
    policy_hash: str = Field(description="The policy hash the job is bound to.")
    buyer_id: uuid.UUID
    node_id: uuid.UUID | None
    kind: JobKind
    purpose: str
    params: dict[str, Any]
    inputs: dict[str, str]
    context_id: str | None
    state: JobState
    reason_code: ReasonCode | None
    reason: str | None
    approved_by: str | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    output: dict[str, Any] | None
    output_blobs: dict[str, str]
    privacy_loss: Loss | None
    receipt: SignedReceipt | None


class JobPage(SQLModel):
    """One page of jobs, newest first."""

    items: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class JobApproval(SQLModel):
    """The provider's approval of a job that awaits it."""

    note: str | None = Field(default=None, max_length=2000)


class JobDenial(SQLModel):
    """The provider's refusal of a job that awaits approval."""

    reason: str = Field(min_length=1, max_length=2000)


class ReceiptPublic(SQLModel):
    """A succeeded job's receipt, with the key that verifies it."""

    receipt: SignedReceipt
    node_id: uuid.UUID
    node_public_key: str
    verified: bool = Field(
        description="The exchange verified the signature under the node's key and "
        "every bound field against the job when the result arrived."
    )


class DatasetBudgetUsage(SQLModel, table=True):
    """The latest budget use a node reported for one dataset and buyer (or total).

    ``scope`` is the buyer's id, or ``total`` for the dataset as a whole.
    """

    __tablename__ = "budget_usage"

    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", primary_key=True)
    scope: str = Field(sa_column=Column(String(36), primary_key=True, nullable=False))
    buyer_id: uuid.UUID | None = Field(default=None, foreign_key="organisation.id")
    epsilon_spent: float = Field(sa_column=Column(Double, nullable=False))
    delta_spent: float = Field(sa_column=Column(Double, nullable=False))
    epsilon_budget: float = Field(sa_column=Column(Double, nullable=False))
    delta_budget: float = Field(sa_column=Column(Double, nullable=False))
    queries: int = Field(sa_column=Column(BigInteger, nullable=False))
    inference_rows: int = Field(sa_column=Column(BigInteger, nullable=False))
    job_id: uuid.UUID = Field(foreign_key="job.id")
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class BudgetReport(SQLModel):
    """A dataset's privacy budget and its use, as last reported by its node."""

    dataset_id: uuid.UUID
    budget_per_buyer: PrivacyBudget
    budget_per_dataset: PrivacyBudget
    total: BudgetUsage | None = Field(
        description="The dataset as a whole; shown to its provider, the operator "
        "and the regulator."
    )
    buyers: list[BudgetUsage] = Field(
        description="Per buyer: all of them for the provider, the operator and the "
        "regulator; the caller's own row for a buyer."
    )

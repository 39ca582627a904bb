"""Factories for the node tests: sample data, served datasets, job specs, inputs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from marketplace.samples import SampleDataset, load_catalog, write_csv
from mpc_engine.he import PublicContext
from mpc_engine.node import ContextCache, ServedDataset, load_dataset
from mpc_engine.node.config import DatasetConfig, ModelConfig
from mpc_engine.node.listing import ListingColumn
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import JobKind, JobSpec, parse_params

CREDIT = "Co-branded credit card"
LOYALTY = "Loyalty members"
BUYER = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
OTHER_BUYER = uuid.UUID("00000000-0000-4000-8000-0000000000b2")


def sample(title_prefix: str) -> SampleDataset:
    """The sample dataset whose title starts with ``title_prefix``."""
    for s in load_catalog().datasets:
        if s.title.startswith(title_prefix):
            return s
    raise KeyError(title_prefix)


def listing_columns(s: SampleDataset) -> list[ListingColumn]:
    """The sample's schema as the node reads it from a listing."""
    return [
        ListingColumn.model_validate(c.model_dump(mode="json")) for c in s.body.columns
    ]


def write_sample(s: SampleDataset, directory: Path) -> tuple[Path, str]:
    """Write the sample's CSV into ``directory``; the path and its content hash."""
    path = directory / "data.csv"
    return path, write_csv(s, path)


def load_sample(
    s: SampleDataset, directory: Path, dataset_id: uuid.UUID | None = None
) -> LoadedDataset:
    """Write and load a sample dataset."""
    path, _ = write_sample(s, directory)
    config = DatasetConfig(
        dataset_id=dataset_id or uuid.uuid4(), source={"kind": "csv", "path": path}
    )
    return load_dataset(config, listing_columns(s))


def credit_policy(**changes: Any) -> RightsPolicy:
    """The credit sample's policy, opened to all three kinds, no approval needed."""
    doc = sample(CREDIT).body.policy.model_dump(mode="json")
    doc.update(
        permitted_kinds=["aggregate", "encrypted_inference", "encrypted_model_eval"],
        human_approval=False,
        max_queries_per_buyer=None,
        inference_row_budget=5000,
        budget_per_buyer={"epsilon": 3.0, "delta": 1e-6},
        budget_per_dataset={"epsilon": 10.0, "delta": 1e-5},
        expires_at=None,
    )
    doc.update(changes)
    return RightsPolicy.model_validate(doc)


SCORE_MODEL = ModelConfig(
    name="default-risk",
    dataset_id=uuid.uuid4(),  # replaced by served() with the dataset's id
    kind="logistic",
    features=["utilisation_ratio", "late_payments_12m", "cash_advance_share"],
    weights=[1.75, 0.42, -0.8],
    bias=-2.5,
    description="probability of default (logit)",
)


def served(
    data: LoadedDataset,
    policy: RightsPolicy,
    *,
    epsilon: float = 0.5,
    delta: float = 0.0,
    models: tuple[ModelConfig, ...] = (SCORE_MODEL,),
) -> ServedDataset:
    """A served dataset with the given policy and model-eval (ε, δ)."""
    config = DatasetConfig(
        dataset_id=data.dataset_id,
        source={"kind": "csv", "path": "unused.csv"},
        model_eval_epsilon=epsilon,
        model_eval_delta=delta,
    )
    bound = {
        m.name: m.model_copy(update={"dataset_id": data.dataset_id}) for m in models
    }
    return ServedDataset(data=data, policy=policy, config=config, models=bound)


def make_spec(
    ds: ServedDataset,
    kind: JobKind,
    params: Mapping[str, Any],
    **changes: Any,
) -> JobSpec:
    """A dispatched job on ``ds`` that passes every policy check unless changed.

    Valid params are normalised as the exchange does (``JobCreate``); invalid ones
    are passed as given, for the node to refuse.
    """
    now = datetime.now(UTC)
    try:
        params = parse_params(kind, params).model_dump(mode="json")
    except ValidationError:
        pass
    doc: dict[str, Any] = {
        "job_id": uuid.uuid4(),
        "dataset_id": ds.dataset_id,
        "dataset_version_id": uuid.uuid4(),
        "content_hash": ds.data.content_hash,
        "policy_hash": ds.policy_hash,
        "buyer_id": BUYER,
        "buyer_region": ds.policy.regions[0],
        "purpose": ds.policy.purposes[0],
        "kind": kind,
        "params": dict(params),
        "inputs": {},
        "context_id": None,
        "created_at": now,
        "deadline": now + timedelta(hours=1),
    }
    doc.update(changes)
    return JobSpec.model_validate(doc)


@dataclass
class FakeInputs:
    """Job inputs from memory: blobs by SHA-256 and contexts by id."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    contexts: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cache = ContextCache(lambda cid: self.contexts[cid])

    def add_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def add_context(self, data: bytes) -> str:
        cid = hashlib.sha256(data).hexdigest()
        self.contexts[cid] = data
        return cid

    def blob(self, sha256: str) -> bytes:
        self.fetched.append(sha256)
        return self.blobs[sha256]

    def context(self, context_id: str) -> PublicContext:
        return self._cache(context_id)

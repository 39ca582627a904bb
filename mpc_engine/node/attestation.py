"""Quality attestations: signed facts about one dataset version, no row values.

Per column: the null rate; the distinct count (not for ``identifier`` columns,
whose distinct count would say how many people are in the data twice); min and
max only for ``public`` numeric and temporal columns. For the version: the row
count, the content hash, the source's modification time, the *freshness* — the
latest day found in any date or datetime column, at day precision (the exact time
of the latest event would describe one row) — and the provider models registered
for the dataset (names, kinds, features; never weights).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mpc_engine.node.config import ModelConfig
from mpc_engine.node.listing import ListingColumn
from mpc_engine.node.sources import LoadedDataset, null_mask
from mpc_engine.policy import Sensitivity
from mpc_engine.protocol import (
    Attestation,
    ColumnQuality,
    ModelInfo,
    NodeKey,
    SignedAttestation,
    iso_utc,
    utc_now,
)

__all__ = ["build_attestation", "column_quality"]


def column_quality(col: ListingColumn, values: NDArray[Any]) -> ColumnQuality:
    """The quality facts of one column (see the module docstring for the rules)."""
    n = int(values.shape[0])
    null = null_mask(values)
    present = values[~null]
    null_rate = float(null.sum()) / n if n else 0.0
    distinct: int | None = None
    if col.sensitivity is not Sensitivity.IDENTIFIER:
        distinct = int(np.unique(present).shape[0]) if present.size else 0
    low: float | str | None = None
    high: float | str | None = None
    if col.sensitivity is Sensitivity.PUBLIC and present.size:
        if col.type.numeric:
            low, high = float(np.min(present)), float(np.max(present))
        elif col.type.temporal:
            texts = [str(v) for v in present.tolist()]
            low, high = min(texts), max(texts)
    return ColumnQuality(
        name=col.name,
        type=col.type.value,
        null_rate=null_rate,
        distinct_count=distinct,
        min=low,
        max=high,
    )


def _freshness(dataset: LoadedDataset) -> str | None:
    latest: str | None = None
    for col in dataset.schema:
        if not col.type.temporal:
            continue
        values = dataset.columns[col.name]
        present = values[~null_mask(values)]
        if not present.size:
            continue
        day = max(str(v) for v in present.tolist())[:10]  # ISO sorts by instant
        if latest is None or day > latest:
            latest = day
    return latest


def build_attestation(
    dataset: LoadedDataset,
    *,
    node_id: uuid.UUID,
    key: NodeKey,
    models: Sequence[ModelConfig] = (),
    source_modified_at: datetime,
    computed_at: datetime | None = None,
) -> SignedAttestation:
    """Compute and sign the attestation of one loaded dataset version.

    Parameters
    ----------
    dataset
        The loaded version.
    node_id
        The node's id at the exchange.
    key
        The node's signing key.
    models
        The provider models registered for this dataset.
    source_modified_at
        When the source last changed (file mtime; for SQL, when the node first
        saw this content).
    computed_at
        Defaults to now.
    """
    columns = [column_quality(c, dataset.columns[c.name]) for c in dataset.schema]
    infos = [
        ModelInfo(
            name=m.name,
            kind=m.kind,
            features=list(m.features),
            description=m.description,
        )
        for m in models
        if m.dataset_id == dataset.dataset_id
    ]
    attestation = Attestation(
        dataset_id=dataset.dataset_id,
        node_id=node_id,
        content_hash=dataset.content_hash,
        row_count=dataset.row_count,
        columns=columns,
        freshness=_freshness(dataset),
        source_modified_at=iso_utc(source_modified_at),
        computed_at=iso_utc(computed_at or utc_now()),
        models=infos,
    )
    return SignedAttestation.sign(attestation, key)

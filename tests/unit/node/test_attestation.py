"""Attestations: signed, no identifier values, min/max only for public columns."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from mpc_engine.node import build_attestation
from mpc_engine.node.config import ModelConfig
from mpc_engine.policy import Sensitivity
from mpc_engine.protocol import BadSignature, NodeKey
from tests.unit.node.factories import LOYALTY, load_sample, sample


def test_attestation_of_the_loyalty_sample(tmp_path: Path) -> None:
    s = sample(LOYALTY)
    data = load_sample(s, tmp_path)
    key = NodeKey.generate()
    node_id = uuid.uuid4()
    model = ModelConfig(
        name="churn",
        dataset_id=data.dataset_id,
        kind="logistic",
        features=["visits_12m", "online_share"],
        weights=[-0.0123456789, 0.987654321],
        bias=0.31415926,
        description="churn risk",
    )
    modified = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    signed = build_attestation(
        data,
        node_id=node_id,
        key=key,
        models=[model],
        source_modified_at=modified,
    )
    signed.verify(key.public_key_hex)
    with pytest.raises(BadSignature):
        signed.verify(NodeKey.generate().public_key_hex)

    att = signed.attestation
    assert att.node_id == node_id and att.dataset_id == data.dataset_id
    assert att.content_hash == data.content_hash
    assert att.row_count == s.rows
    assert att.source_modified_at == "2025-03-01T12:30:00Z"
    by_name = {c.name: c for c in att.columns}
    assert list(by_name) == [c.name for c in s.body.columns]
    for col in s.body.columns:
        quality = by_name[col.name]
        values = data.columns[col.name]
        if col.sensitivity is Sensitivity.IDENTIFIER:
            assert quality.distinct_count is None
        else:
            assert quality.distinct_count == len({v for v in values.tolist()})
        if col.sensitivity is Sensitivity.PUBLIC and col.type.numeric:
            assert quality.min == float(np.min(values))
            assert quality.max == float(np.max(values))
        else:
            assert quality.min is None and quality.max is None
        assert 0.0 <= quality.null_rate <= 1.0
    # The public numeric columns really have their extremes reported.
    assert by_name["total_spend_eur"].max is not None
    # Freshness: the latest day of the temporal column (quasi-identifier dates
    # are reported at day precision and only as the overall latest).
    assert att.freshness == max(data.columns["member_since"].tolist())
    # Models: names, kinds, features; never weights or bias.
    assert [m.name for m in att.models] == ["churn"]
    text = json.dumps(signed.model_dump(mode="json"))
    for secret in ("0.0123456789", "0.987654321", "0.31415926"):
        assert secret not in text
    # No identifier value appears anywhere in the signed document.
    emails = data.columns["customer_email"].tolist()
    assert not any(email in text for email in emails)


def test_null_rates_and_an_empty_column(tmp_path: Path) -> None:
    from mpc_engine.node.attestation import column_quality
    from mpc_engine.node.listing import ListingColumn

    col = ListingColumn(name="x", type="float", sensitivity="public", nullable=True)
    q = column_quality(col, np.array([1.0, np.nan, 3.0, np.nan]))
    assert q.null_rate == 0.5 and q.distinct_count == 2
    assert (q.min, q.max) == (1.0, 3.0)
    empty = column_quality(col, np.array([np.nan, np.nan]))
    assert empty.null_rate == 1.0 and empty.distinct_count == 0
    assert empty.min is None
    when = ListingColumn(name="t", type="datetime", sensitivity="public", nullable=True)
    stamps = np.array(["2024-01-02T03:04:05Z", None, "2023-05-06T07:08:09Z"], object)
    q = column_quality(when, stamps)
    assert (q.min, q.max) == ("2023-05-06T07:08:09Z", "2024-01-02T03:04:05Z")

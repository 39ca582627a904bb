"""The demo's node.toml writer produces configs the node loads unchanged."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import numpy as np
import pytest

from marketplace.demo_compute import write_node_config
from mpc_engine.node import load_config


def test_written_config_round_trips_awkward_values(tmp_path: Path) -> None:
    dataset = uuid.uuid4()
    csv = tmp_path / 'we"ird\\dir' / "data.csv"
    path = write_node_config(
        tmp_path / "node",
        exchange_url="http://127.0.0.1:8000",
        api_key="vx_abcdefghijkl_" + "s" * 40,
        provider="acme",
        datasets=[(dataset, csv, {"region": ["north", 'o"neil', "back\\slash"]})],
        models=[
            {
                "name": "risk-v1",
                "dataset_id": dataset,
                "kind": "logistic",
                "features": ("age", "income"),
                "weights": np.array([0.25, -1e-3]),
                "bias": np.float64(-2.5),
                "description": 'a "quoted" model',
            }
        ],
    )
    config = load_config(path)
    [ds] = config.datasets
    assert ds.dataset_id == dataset
    assert ds.categories == {"region": ["north", 'o"neil', "back\\slash"]}
    [model] = config.models
    assert model.weights == [0.25, -1e-3] and model.bias == -2.5
    assert model.description == 'a "quoted" model'
    key_file = tmp_path / "node" / "api-key.txt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no TOML form"):
        write_node_config(
            tmp_path,
            exchange_url="http://127.0.0.1:8000",
            api_key="vx_abcdefghijkl_" + "s" * 40,
            provider="acme",
            datasets=[],
            models=[{"bias": float("nan")}],
        )

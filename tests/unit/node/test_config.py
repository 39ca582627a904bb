"""The node's TOML config: valid files load, every mistake names its setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpc_engine.node import ConfigError, load_config
from mpc_engine.node.config import API_KEY_ENV, CsvSource, SqlSource

DS = "4f0c7f4e-8b7a-4c2e-9d5e-0a1b2c3d4e5f"
DS2 = "9a31c0de-1111-4222-8333-444455556666"

GOOD = f"""
exchange_url = "https://exchange.example.org/"
name = "hospital-a-node-1"
poll_wait = 5

[[datasets]]
dataset_id = "{DS}"
source = {{ kind = "csv", path = "data/admissions.csv" }}
model_eval_epsilon = 0.25
categories = {{ sex = ["f", "m"] }}

[[datasets]]
dataset_id = "{DS2}"
source = {{ kind = "sql", url = "postgresql://u:s3cret@db/dw", table = "x.visits" }}
model_eval_delta = 1e-7

[[models]]
name = "risk"
dataset_id = "{DS}"
kind = "logistic"
features = ["age", "stay"]
weights = [0.5, -1.0]
bias = 0.25
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.exchange_url == "https://exchange.example.org"
    assert cfg.state_dir == tmp_path.resolve() / "node-state"
    assert cfg.poll_wait == 5
    first, second = cfg.datasets
    assert isinstance(first.source, CsvSource)
    assert first.source.path == tmp_path.resolve() / "data" / "admissions.csv"
    assert first.model_eval_epsilon == 0.25 and first.model_eval_delta == 0.0
    assert first.categories == {"sex": ["f", "m"]}
    assert isinstance(second.source, SqlSource)
    assert second.model_eval_epsilon == 0.5 and second.model_eval_delta == 1e-7
    assert "s3cret" not in second.source.display_url()
    assert "s3cret" not in repr(cfg)  # the URL is a secret
    assert [m.name for m in cfg.models_of(first.dataset_id)] == ["risk"]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ('exchange_url = "ftp://x"', "exchange_url", "http:// or https://"),
        ("poll_wait = 31", "poll_wait", "less than or equal to 30"),
        ("colour = 3", "colour", "unknown setting"),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\nsource = {{ path = "a.csv" }}',
            "datasets[0].source",
            'needs a kind: one of "csv", "parquet", "sql"',
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "xls", path = "a" }',
            "datasets[0].source",
            "kind must be one of",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "a.csv", sep = ";" }',
            "datasets[0].source.sep",
            "unknown setting",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "sql", url = "::nonsense", table = "t" }',
            "datasets[0].source.url",
            "not a SQLAlchemy URL",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "sql", url = "sqlite:///a.db", table = "t; drop" }',
            "datasets[0].source.table",
            "table name",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "a.csv" }\nmodel_eval_epsilon = 0',
            "datasets[0].model_eval_epsilon",
            "greater than 0",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "a.csv" }\n'
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "b.csv" }',
            "datasets",
            "listed twice",
        ),
        (
            f'[[models]]\nname = "m1"\ndataset_id = "{DS}"\nkind = "linear"\n'
            'features = ["a"]\nweights = [1.0]',
            "models[0].dataset_id",
            "not one of the node's datasets",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "a.csv" }\n'
            f'[[models]]\nname = "m1"\ndataset_id = "{DS}"\nkind = "linear"\n'
            'features = ["a", "b"]\nweights = [1.0]',
            "models[0].weights",
            "has 1 values for 2 features",
        ),
        (
            f'[[datasets]]\ndataset_id = "{DS}"\n'
            'source = { kind = "csv", path = "a.csv" }\n'
            f'[[models]]\nname = "m1"\ndataset_id = "{DS}"\nkind = "probit"\n'
            'features = ["a"]\nweights = [1.0]',
            "models[0].kind",
            "'linear' or 'logistic'",
        ),
        ('api_key = "a"\napi_key_file = "k.txt"', "api_key", "not both"),
    ],
)
def test_each_mistake_names_its_setting(
    tmp_path: Path, change: str, field: str, reason: str
) -> None:
    base = 'exchange_url = "http://localhost:8000"\nname = "n"\n'
    if change.startswith(("exchange_url", "poll_wait")):
        base = base.replace(change.split(" = ")[0] + " = ", "# ")
        text = change + "\n" + base
    else:
        text = base + change + "\n"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert err.value.field == field, str(err.value)
    assert reason in err.value.reason
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'node.toml'}: {field}: ")


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "exchange_url = \n"))
    assert err.value.field == "config" and "not valid TOML" in err.value.reason
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, 'exchange_url = "http://x"\n'))
    assert err.value.field == "name" and err.value.reason == "required"


def test_api_key_sources(tmp_path: Path) -> None:
    base = 'exchange_url = "http://localhost:8000"\nname = "n"\n'
    cfg = load_config(_write(tmp_path, base + 'api_key = "vx_abc_def"\n'))
    assert cfg.resolve_api_key({}) == "vx_abc_def"
    assert "vx_abc_def" not in repr(cfg)

    cfg = load_config(_write(tmp_path, base))
    assert cfg.resolve_api_key({API_KEY_ENV: "vx_env_key"}) == "vx_env_key"
    with pytest.raises(ConfigError) as err:
        cfg.resolve_api_key({})
    assert err.value.field == "api_key" and API_KEY_ENV in err.value.reason

    key_file = tmp_path / "api-key.txt"
    key_file.write_text("vx_file_key\n")
    os.chmod(key_file, 0o600)
    cfg = load_config(_write(tmp_path, base + 'api_key_file = "api-key.txt"\n'))
    assert cfg.resolve_api_key({API_KEY_ENV: "ignored"}) == "vx_file_key"
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError) as err:
        cfg.resolve_api_key({})
    assert err.value.field == "api_key_file" and "must be 600" in err.value.reason
    key_file.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.resolve_api_key({})

"""``veilx node init|show|serve``: files written, identity shown, one-line errors."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mpc_engine.node import load_config
from mpc_engine.node.cli import app
from mpc_engine.node.state import NodeState
from mpc_engine.protocol import NodeKey

runner = CliRunner()


def _one_error(result: object, fragment: str) -> None:
    code = result.exit_code  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("veilx: error: "), err
    assert fragment in lines[0]


def test_init_writes_a_valid_skeleton_and_a_private_key(tmp_path: Path) -> None:
    home = tmp_path / "node"
    result = runner.invoke(
        app,
        ["init", "--exchange", "https://exchange.example.org", "--data-dir", str(home),
         "--name", "lab-node"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cfg = load_config(home / "node.toml")
    assert cfg.exchange_url == "https://exchange.example.org"
    assert cfg.name == "lab-node" and cfg.datasets == []
    key_path = home / "node-state" / "node.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    public = NodeKey.load(key_path).public_key_hex
    assert f"public key {public}" in result.stdout
    assert key_path.read_text().strip() not in result.stdout  # never the seed
    again = runner.invoke(
        app, ["init", "--exchange", "https://x.org", "--data-dir", str(home)]
    )
    _one_error(again, "node.toml exists; pass --force")
    forced = runner.invoke(
        app, ["init", "--exchange", "https://x.org", "--data-dir", str(home), "--force"]
    )
    assert forced.exit_code == 0
    assert NodeKey.load(key_path).public_key_hex == public  # the key is kept
    bad = runner.invoke(
        app, ["init", "--exchange", "ftp://x", "--data-dir", str(tmp_path / "b")]
    )
    _one_error(bad, "exchange_url: must be an http:// or https:// URL")


def test_show_prints_identity_and_datasets(tmp_path: Path) -> None:
    dataset = uuid.uuid4()
    config = tmp_path / "node.toml"
    config.write_text(
        'exchange_url = "http://localhost:8000"\nname = "n1"\n'
        f'[[datasets]]\ndataset_id = "{dataset}"\n'
        'source = { kind = "sql", url = "postgresql://u:pw@db/x", table = "t" }\n'
    )
    result = runner.invoke(app, ["show", "--config", str(config)])
    assert result.exit_code == 0, result.stderr
    assert "(not registered yet)" in result.stdout
    assert "(no key yet" in result.stdout
    assert (
        f"dataset     {dataset}  sql postgresql://u:***@db/x table t" in result.stdout
    )
    assert "pw" not in result.stdout.replace("postgresql", "")
    assert not (tmp_path / "node-state").exists()  # show creates nothing
    state_dir = tmp_path / "node-state"
    key, _ = NodeKey.load_or_create(state_dir / "node.key")
    node_id = uuid.uuid4()
    state = NodeState(state_dir / "state.db")
    state.set_node_id(node_id)
    state.close()
    result = runner.invoke(app, ["show", "--config", str(config)])
    assert f"node id     {node_id}" in result.stdout
    assert f"public key  {key.public_key_hex}" in result.stdout


def test_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = runner.invoke(app, ["show", "--config", str(tmp_path / "none.toml")])
    _one_error(missing, "does not exist")
    config = tmp_path / "node.toml"
    config.write_text('exchange_url = "http://localhost:8000"\nname = "n"\nwait = 1\n')
    _one_error(runner.invoke(app, ["show", "--config", str(config)]), "wait: unknown")
    config.write_text('exchange_url = "http://localhost:8000"\nname = "n"\n')
    monkeypatch.delenv("VEILX_NODE_API_KEY", raising=False)
    no_key = runner.invoke(app, ["serve", "--config", str(config)])
    _one_error(no_key, "api_key: not set")
    config.write_text(
        'exchange_url = "http://localhost:8000"\nname = "n"\napi_key = "vx_a"\n'
    )
    no_data = runner.invoke(app, ["serve", "--config", str(config)])
    _one_error(no_data, "datasets: none configured")
    level = runner.invoke(
        app, ["serve", "--config", str(config), "--log-level", "chatty"]
    )
    _one_error(level, "--log-level")


def test_the_node_never_imports_the_exchange_or_the_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mpc_engine.node, mpc_engine.node.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('marketplace', 'sdk')))"
    )
    out = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_pending_approve_and_deny_at_the_node(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from mpc_engine.protocol import JobKind, JobSpec

    config = tmp_path / "node.toml"
    config.write_text(
        'exchange_url = "http://localhost:8000"\nname = "n1"\napprove_locally = true\n'
    )
    _one_error(
        runner.invoke(app, ["pending", "--config", str(config)]), "no node state yet"
    )
    now = datetime.now(UTC)

    def spec() -> JobSpec:
        return JobSpec(
            job_id=uuid.uuid4(),
            dataset_id=uuid.uuid4(),
            dataset_version_id=uuid.uuid4(),
            content_hash="a" * 64,
            policy_hash="b" * 64,
            buyer_id=uuid.uuid4(),
            buyer_region="DE",
            purpose="research",
            kind=JobKind.AGGREGATE,
            params={"statistics": ["count"]},
            inputs={},
            context_id=None,
            created_at=now,
            deadline=now + timedelta(hours=1),
        )

    one, two = spec(), spec()
    state = NodeState(tmp_path / "node-state" / "state.db")
    assert state.hold(one) and state.hold(two) and not state.hold(one)
    state.close()
    listed = runner.invoke(app, ["pending", "--config", str(config)])
    assert listed.exit_code == 0, listed.stderr
    assert str(one.job_id) in listed.stdout and str(two.job_id) in listed.stdout
    assert "purpose research" in listed.stdout

    ok = runner.invoke(app, ["approve", str(one.job_id), "--config", str(config)])
    assert ok.exit_code == 0, ok.stderr
    assert f"job {one.job_id} approved at this node by " in ok.stdout
    no_reason = runner.invoke(
        app, ["deny", str(two.job_id), "--config", str(config), "--reason", " "]
    )
    _one_error(no_reason, "--reason: must not be empty")
    denied = runner.invoke(
        app, ["deny", str(two.job_id), "--config", str(config), "--reason", "no"]
    )
    assert denied.exit_code == 0, denied.stderr
    flip = runner.invoke(app, ["deny", str(one.job_id), "--config", str(config),
                               "--reason", "changed my mind"])  # fmt: skip
    _one_error(flip, "was approved already")
    _one_error(
        runner.invoke(app, ["approve", "nope", "--config", str(config)]),
        "JOB: 'nope' is not a job id",
    )
    _one_error(
        runner.invoke(app, ["approve", str(uuid.uuid4()), "--config", str(config)]),
        "is not held for approval",
    )
    left = runner.invoke(app, ["pending", "--config", str(config)])
    assert "no job awaits approval at this node" in left.stdout

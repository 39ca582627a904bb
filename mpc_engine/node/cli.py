"""``veilx node``: run the provider's data node, write its config, show its identity.

Errors are printed as one line, ``veilx: error: <what and why>``, with exit code 2
(as the rest of the ``veilx`` command line does).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from mpc_engine.node.config import (
    API_KEY_ENV,
    DEFAULT_STATE_DIR,
    NodeConfig,
    SqlSource,
    load_config,
)
from mpc_engine.node.errors import NodeError
from mpc_engine.node.runner import KEY_FILE, STATE_FILE, NodeService, load_key
from mpc_engine.node.state import NodeState
from mpc_engine.protocol import NodeKey
from mpc_engine.protocol.errors import ProtocolError

__all__ = ["app"]

app = typer.Typer(
    name="node",
    help="The provider's data node: serves datasets to the exchange, runs approved "
    "computations next to the data, signs receipts and attestations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_NAME = "node.toml"

_SKELETON = """\
# veilx data node, written by `veilx node init`.
# Add your datasets below, then run: veilx node serve --config {config}

exchange_url = "{exchange}"
name = "{name}"
state_dir = "{state_dir}"   # the node's key, journal and caches (keep it private)
poll_wait = 20                # seconds per long poll (0 to 30)

# The API key of your provider organisation: set {env},
# or keep it in a file only you can read (chmod 600):
# api_key_file = "api-key.txt"

# One block per dataset the node serves; dataset_id is the listing's id at the
# exchange, whose schema and rights policy the node loads and enforces.
#
# [[datasets]]
# dataset_id = "00000000-0000-0000-0000-000000000000"
# source = {{ kind = "csv", path = "data/table.csv" }}
# # or {{ kind = "parquet", path = "data/table.parquet" }}
# # or {{ kind = "sql", url = "postgresql://reader@db-host/warehouse", table = "t" }}
# model_eval_epsilon = 0.5      # ε of the DP Gram release for encrypted_model_eval
# model_eval_delta = 0.0        # δ > 0 switches its noise to Gaussian
# categories = {{ sex = ["f", "m"] }}   # optional public value domains
#
# Provider models scored by encrypted_inference (weights never leave the node):
#
# [[models]]
# name = "risk-score"
# dataset_id = "00000000-0000-0000-0000-000000000000"
# kind = "logistic"             # linear | logistic (scores are logits)
# features = ["age_years", "length_of_stay_days"]
# weights = [0.02, 0.11]
# bias = -3.1
# description = "30-day readmission risk"
"""


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with status 2."""
    typer.echo(f"veilx: error: {message}", err=True)
    raise typer.Exit(2)


def _config(path: Path) -> NodeConfig:
    try:
        return load_config(path)
    except NodeError as exc:
        fail(str(exc))


ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        help="The node's TOML config (see `veilx node init`).",
        dir_okay=False,
    ),
]


@app.command()
def serve(
    config: ConfigOption,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Register, publish the datasets, then run jobs until interrupted."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        fail(f"--log-level: {log_level!r} is not one of debug, info, warning, error")
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = _config(config)
    try:
        service = NodeService(cfg)
    except NodeError as exc:
        fail(str(exc))
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("veilx.node").info("stopping (signal %d)", signum)
        stop.set()

    def _reload(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("veilx.node").info("reloading the sources (SIGHUP)")
        service.request_reload()

    previous = {
        sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _reload)
    try:
        service.start()
        typer.echo(
            f"veilx node {service.node_id} serving {len(service.datasets)} "
            f"dataset(s) to {cfg.exchange_url}",
            err=True,
        )
        service.serve(stop)
    except NodeError as exc:
        fail(str(exc))
    finally:
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def init(
    exchange: Annotated[str, typer.Option("--exchange", help="The exchange's URL.")],
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help=f"The node's directory: the config is written there as "
            f"{CONFIG_NAME} and the state lives in its {DEFAULT_STATE_DIR}/ folder.",
            file_okay=False,
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="The node's name (default: the host name).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing config.")] = False,
) -> None:
    """Write a config skeleton and create the node's signing key."""
    target = data_dir / CONFIG_NAME
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to overwrite it")
    node_name = name or socket.gethostname() or "veilx-node"
    text = _SKELETON.format(
        config=target,
        exchange=exchange.replace('"', ""),
        name=node_name.replace('"', ""),
        state_dir=DEFAULT_STATE_DIR,
        env=API_KEY_ENV,
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"--data-dir: cannot write {target} ({exc.strerror})")
    cfg = _config(target)  # the skeleton must itself be a valid config
    try:
        cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = load_key(cfg.state_dir)
    except (NodeError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {target}")
    typer.echo(f"node key {cfg.state_dir / KEY_FILE}")
    typer.echo(f"public key {key.public_key_hex}")


@app.command()
def show(config: ConfigOption) -> None:
    """Print the node's id, public key and datasets (nothing is created)."""
    cfg = _config(config)
    key_path = cfg.state_dir / KEY_FILE
    public = "(no key yet: created by `init` or on first `serve`)"
    if key_path.exists():
        try:
            public = NodeKey.load(key_path).public_key_hex
        except (ProtocolError, OSError) as exc:
            fail(f"node key: {exc}")
    node_id = "(not registered yet)"
    db = cfg.state_dir / STATE_FILE
    if db.exists():
        try:
            state = NodeState(db)
            known = state.node_id
            state.close()
        except NodeError as exc:
            fail(str(exc))
        if known is not None:
            node_id = str(known)
    typer.echo(f"node        {cfg.name}")
    typer.echo(f"exchange    {cfg.exchange_url}")
    typer.echo(f"node id     {node_id}")
    typer.echo(f"public key  {public}")
    typer.echo(f"state dir   {cfg.state_dir}")
    if not cfg.datasets:
        typer.echo("datasets    (none configured)")
    for entry in cfg.datasets:
        source = entry.source
        where = (
            f"sql {source.display_url()} table {source.table}"
            if isinstance(source, SqlSource)
            else f"{source.kind} {source.path}"
        )
        typer.echo(f"dataset     {entry.dataset_id}  {where}")
    for model in cfg.models:
        typer.echo(
            f"model       {model.name} ({model.kind.value}, "
            f"{len(model.features)} features) on {model.dataset_id}"
        )


def _open_state(cfg: NodeConfig) -> NodeState:
    db = cfg.state_dir / STATE_FILE
    if not db.exists():
        fail(f"{db}: no node state yet; start the node with `veilx node serve` first")
    try:
        return NodeState(db)
    except NodeError as exc:
        fail(str(exc))


@app.command()
def pending(config: ConfigOption) -> None:
    """List the jobs held for this node's own approval (``approve_locally``)."""
    cfg = _config(config)
    state = _open_state(cfg)
    try:
        held = state.held(undecided_only=True)
    finally:
        state.close()
    if not held:
        typer.echo("no job awaits approval at this node")
        return
    for job in held:
        spec = job.spec
        typer.echo(
            f"{spec.job_id}  {spec.kind.value}  dataset {spec.dataset_id}  buyer "
            f"{spec.buyer_id} ({spec.buyer_region})  purpose {spec.purpose}  "
            f"deadline {spec.deadline:%Y-%m-%d %H:%M}Z  params "
            f"{json.dumps(spec.params, sort_keys=True)}"
        )


def _decide(config: Path, job: str, *, approved: bool, note: str | None) -> None:
    cfg = _config(config)
    try:
        job_id = uuid.UUID(job)
    except ValueError:
        fail(f"JOB: {job!r} is not a job id")
    state = _open_state(cfg)
    try:
        decision = state.decide(job_id, approved=approved, by=_who(), note=note or None)
    except NodeError as exc:
        fail(str(exc))
    finally:
        state.close()
    verb = "approved" if decision.approved else "denied"
    typer.echo(
        f"job {job_id} {verb} at this node by {decision.decided_by}; the running "
        "node acts on it within seconds"
    )


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@app.command()
def approve(
    job: Annotated[str, typer.Argument(help="The held job's id.")],
    config: ConfigOption,
    note: Annotated[str | None, typer.Option(help="Why (kept at the node).")] = None,
) -> None:
    """Approve a job held for this node's own approval."""
    _decide(config, job, approved=True, note=note)


@app.command()
def deny(
    job: Annotated[str, typer.Argument(help="The held job's id.")],
    config: ConfigOption,
    reason: Annotated[
        str, typer.Option(help="Why: reported to the buyer with `denied`.")
    ],
) -> None:
    """Deny a job held for this node's own approval (it ends ``rejected``)."""
    if not reason.strip():
        fail("--reason: must not be empty")
    _decide(config, job, approved=False, note=reason.strip())

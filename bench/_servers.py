"""Run an ASGI app under uvicorn in its own process, and the load generator.

Both apps are served the same way: ``python -m uvicorn`` with one worker (so the
server is one process: "one core"), uvloop and httptools as uvicorn picks them,
no access log. When the machine has at least two CPUs the server is pinned to
the first and the load generator to the second, so they never share a core.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Server", "cpu_plan", "free_port", "run_loadgen", "serve"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_plan() -> tuple[list[int] | None, list[int] | None]:
    """CPUs for (server, load generator); ``None`` when there are not two."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return [cpus[0]], [cpus[1]]


def _pin(cpus: list[int] | None) -> Any:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, set(cpus))

    return pin


@dataclass(frozen=True)
class Server:
    """A running server process."""

    pid: int
    port: int
    url: str
    log: Path


def _clean_env(env: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VEILX_")}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return base | dict(env)


@contextmanager
def serve(
    app: str,
    *,
    factory: bool = False,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/health",
    cpus: list[int] | None = None,
    workdir: Path,
    start_timeout: float = 60.0,
) -> Iterator[Server]:
    """Serve ``app`` ("module:attr") with uvicorn; stop it (by pid) on exit."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if factory:
        cmd.append("--factory")
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_clean_env(env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_pin(cpus),  # the bench process runs no threads
        )
    server = Server(proc.pid, port, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(proc, server, ready_path, start_timeout)
        yield server
    finally:
        _stop(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], server: Server, path: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}:\n"
                + server.log.read_text(errors="replace")[-3000:]
            )
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the server did not answer {path} within {timeout} s:\n"
        + server.log.read_text(errors="replace")[-3000:]
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def run_loadgen(
    server: Server,
    plans: Sequence[Mapping[str, Any]],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    headers: Mapping[str, str] | None = None,
    cpus: list[int] | None = None,
    grace_s: float = 30.0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``bench._loadgen`` against ``server`` in a separate process."""
    config = {
        "host": "127.0.0.1",
        "port": server.port,
        "concurrency": concurrency,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "grace_s": grace_s,
        "headers": dict(headers or {}),
        "plans": [dict(p) for p in plans],
        "groups": dict(groups or {}),
        "server_pid": server.pid,
        "cpus": cpus,
    }
    with tempfile.TemporaryDirectory(prefix="veilx-loadgen-") as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg.write_text(json.dumps(config))
        subprocess.run(
            [sys.executable, "-m", "bench._loadgen", str(cfg), str(out)],
            cwd=ROOT,
            env=_clean_env({}),
            check=True,
            timeout=warmup_s + duration_s + grace_s + 60,
        )
        result: dict[str, Any] = json.loads(out.read_text())
    return result

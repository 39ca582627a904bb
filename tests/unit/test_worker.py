"""The deadline sweep on both engines, the sweeper thread, and ``veilx worker``."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.api.main import EMBEDDED_SWEEP_INTERVAL, serve_app
from marketplace.cli import main
from marketplace.config import get_settings
from marketplace.db import Database
from marketplace.models import utcnow
from marketplace.queue import MemoryQueue
from marketplace.worker import Sweeper, SweepReport, sweep
from tests.factories import Party
from tests.job_factories import (
    Served,
    claim,
    create_job,
    create_served_dataset,
    post_result,
    start,
    success,
)


def _state(client: TestClient, party: Party, job_id: str) -> tuple[str, str | None]:
    job = client.get(f"/v1/jobs/{job_id}", headers=party.headers).json()
    return job["state"], job["reason_code"]


def _later(seconds: int = 3600) -> Any:
    return utcnow() + timedelta(seconds=seconds)


def test_queued_jobs_past_their_deadline_expire(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served, timeout_seconds=60)
    queue = MemoryQueue()
    # Before the deadline: untouched, and re-notified.
    report = sweep(db, queue, utcnow())
    assert report == SweepReport(0, 0, 0, 1)
    assert queue.wait(served.node.id, 0) == uuid.UUID(job["id"])
    report = sweep(db, queue, _later(61))
    assert report == SweepReport(0, 1, 0, 0, charges_voided=1)
    assert _state(client, served.buyer, job["id"]) == ("expired", "not_picked_up")
    assert claim(client, served.node).status_code == 204
    # Idempotent.
    assert sweep(db, queue, _later(61)) == SweepReport(0, 0, 0, 0)


def test_unapproved_jobs_expire(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db, human_approval=True)
    job = create_job(client, served, timeout_seconds=30)
    assert sweep(db, MemoryQueue(), _later(31)) == SweepReport(
        1, 0, 0, 0, charges_voided=1
    )
    assert _state(client, served.buyer, job["id"]) == (
        "expired",
        "not_approved_in_time",
    )
    r = client.post(f"/v1/jobs/{job['id']}/approve", headers=served.provider.headers)
    assert r.status_code == 409, r.text


def test_dispatched_and_running_jobs_time_out(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    dispatched = create_job(client, served, timeout_seconds=30)
    assert claim(client, served.node).json()["job_id"] == dispatched["id"]
    running = create_job(client, served, timeout_seconds=30)
    assert claim(client, served.node).json()["job_id"] == running["id"]
    assert start(client, served.node, running["id"]).status_code == 200
    spare = create_job(client, served, timeout_seconds=3600)
    assert sweep(db, MemoryQueue(), _later(31)) == SweepReport(
        0, 0, 2, 1, charges_voided=2
    )
    for job in (dispatched, running):
        assert _state(client, served.buyer, job["id"]) == ("failed", "timeout")
    assert _state(client, served.buyer, spare["id"]) == ("queued", None)
    # The node's late result is refused: the job is over.
    r = post_result(client, served.node, running["id"], success(running, served))
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"


def test_finished_jobs_are_left_alone(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served, timeout_seconds=30)
    claim(client, served.node)
    start(client, served.node, job["id"])
    assert (
        post_result(client, served.node, job["id"], success(job, served)).status_code
        == 200
    )
    assert sweep(db, MemoryQueue(), _later(31)) == SweepReport(0, 0, 0, 0)
    assert _state(client, served.buyer, job["id"]) == ("succeeded", None)


def _many_jobs(client: TestClient, served: Served, n: int) -> list[str]:
    return [create_job(client, served, timeout_seconds=30)["id"] for _ in range(n)]


def test_concurrent_sweeps_end_each_job_once(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    jobs = _many_jobs(client, served, 6)
    at = _later(31)
    reports: list[SweepReport] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        reports.append(sweep(db, MemoryQueue(), at))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.not_picked_up for r in reports) == len(jobs)
    for job_id in jobs:
        assert _state(client, served.buyer, job_id) == ("expired", "not_picked_up")


def test_a_lost_wake_up_is_repaired_by_the_sweep(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    fresh = MemoryQueue()  # knows nothing of the job: its wake-up was "lost"
    assert fresh.wait(served.node.id, 0) is None
    assert sweep(db, fresh).renotified == 1
    assert fresh.wait(served.node.id, 0) == uuid.UUID(job["id"])


def test_the_sweeper_thread_runs_and_stops(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    queue = MemoryQueue()
    sweeper = Sweeper(db, queue, interval=0.05)
    sweeper.start()
    try:
        assert queue.wait(served.node.id, 5) == uuid.UUID(job["id"])
    finally:
        sweeper.stop()
    names = {t.name for t in threading.enumerate()}
    assert "veilx-sweeper" not in names


# -- veilx serve and veilx worker ----------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean VEILX_* environment with a SQLite data dir."""
    for name in list(os.environ):
        if name.startswith("VEILX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VEILX_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_serve_app_sweeps_without_redis(env: Path) -> None:
    app = serve_app()
    with TestClient(app):
        names = {t.name for t in threading.enumerate()}
        assert "veilx-sweeper" in names
    time.sleep(0.05)
    assert "veilx-sweeper" not in {t.name for t in threading.enumerate()}
    assert EMBEDDED_SWEEP_INTERVAL > 0


def test_serve_app_leaves_sweeping_to_the_worker_with_redis(
    env: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("VEILX_REDIS_URL", redis_url)
    monkeypatch.setenv("VEILX_REDIS_NAMESPACE", f"veilx-test-{uuid.uuid4().hex[:8]}")
    app = serve_app()
    with TestClient(app):
        assert "veilx-sweeper" not in {t.name for t in threading.enumerate()}


def _veilx(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["veilx", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_worker_once_prints_what_it_did(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _veilx(monkeypatch, capsys, "worker", "--once")
    assert (code, err) == (0, ""), err
    assert out == (
        "swept: expired 0 unapproved and 0 unclaimed jobs, timed out 0, "
        "re-notified 0 queued; voided 0 charges, ended 0 and finalized 0 "
        "entitlements\n"
    )


def test_worker_errors_are_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _veilx(monkeypatch, capsys, "worker", "--interval", "0")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("veilx: error: ")
    assert "--interval" in err
    monkeypatch.setenv("VEILX_REDIS_URL", "redis://127.0.0.1:1/0")
    code, out, err = _veilx(monkeypatch, capsys, "worker", "--once")
    assert code == 2 and out == ""
    assert (
        err.startswith("veilx: error: VEILX_REDIS_URL: ") and len(err.splitlines()) == 1
    )


def test_worker_loop_stops_on_sigterm(env: Path, tmp_path: Path) -> None:
    import signal
    import subprocess

    veilx = Path(sys.executable).with_name("veilx")
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [str(veilx), "worker", "--interval", "0.2"],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("veilx worker: sweeping every 0.2 s"), first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out

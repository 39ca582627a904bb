"""Killing the relay at any point never loses a ledger event nor records one twice.

A relay process is killed (``os._exit``, no clean-up) at each point of a send —
after it stored the signed transaction but before broadcasting it, after
broadcasting it but before recording the result, and after recording it — then a
fresh relay runs. The chain must then hold each registration, trade batch and
receipt root exactly once, and the regulator's verification must pass. Runs on
the embedded chain (its files must survive the kill) and on a Hardhat node.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marketplace.api import create_app
from marketplace.chain import LazyChain
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.services.relay import make_relay
from marketplace.services.verify import verify_ledger
from tests.conftest import TEST_SECRET, make_settings
from tests.job_factories import (
    claim,
    create_job,
    create_served_dataset,
    post_result,
    start,
    success,
)
from tests.ledger._hardhat import HARDHAT_KEY, deploy_fresh

pytestmark = pytest.mark.integration

JOBS = 4

CHILD = textwrap.dedent(
    """
    import os, sys
    from marketplace.chain import LazyChain
    from marketplace.config import Settings
    from marketplace.db import Database
    from marketplace.services import relay as relay_module
    from ledger import TransactionSender

    point, nth = os.environ["CRASH_AT"], int(os.environ["CRASH_NTH"])
    calls = {"n": 0}

    def crash_here(where):
        if where == point:
            calls["n"] += 1
            if calls["n"] == nth:
                sys.stdout.flush()
                os._exit(9)

    real_broadcast = TransactionSender.broadcast
    def broadcast(self, tx):
        crash_here("before_send")
        answer = real_broadcast(self, tx)
        crash_here("after_send")
        return answer
    TransactionSender.broadcast = broadcast

    real_confirm = relay_module.Relay._confirm
    def confirm(self, event_id, landed):
        real_confirm(self, event_id, landed)
        crash_here("after_record")
    relay_module.Relay._confirm = confirm

    settings = Settings()
    db = Database.from_url(settings.effective_database_url)
    chain = LazyChain(settings)
    print(relay_module.make_relay(db, chain.get().ledger, settings).flush())
    chain.close()
    """
)


def _child_env(settings: Settings, point: str, nth: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CRASH_AT": point,
            "CRASH_NTH": str(nth),
            "VEILX_ENVIRONMENT": "test",
            "VEILX_SECRET_KEY": TEST_SECRET,
            "VEILX_DATA_DIR": str(settings.data_dir),
            "VEILX_DATABASE_URL": settings.effective_database_url,
        }
    )
    if settings.chain_url:
        env["VEILX_CHAIN_URL"] = settings.chain_url
        env["VEILX_CHAIN_NETWORK"] = settings.chain_network
        env["VEILX_CHAIN_KEY"] = HARDHAT_KEY
    return env


def _settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    db_url = f"sqlite:///{tmp_path / 'exchange.db'}"
    if request.param == "embedded":
        return make_settings(tmp_path, database_url=db_url)
    url = request.getfixturevalue("hardhat_url")
    deploy_fresh(url, "crash", tmp_path / "deployments")
    return make_settings(
        tmp_path,
        database_url=db_url,
        chain_url=url,
        chain_network="crash",
        chain_key=HARDHAT_KEY,
    )


@pytest.fixture(params=["embedded", "hardhat"])
def owed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """An exchange (file SQLite) whose outbox owes the chain JOBS released jobs."""
    monkeypatch.setenv("VEILX_DEPLOYMENTS_DIR", str(tmp_path / "deployments"))
    settings = _settings(request, tmp_path)
    db = Database.from_url(settings.effective_database_url)
    db.upgrade()
    app = create_app(settings, db=db, kv=MemoryStore(), migrate=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        served = create_served_dataset(client, db)
        for _ in range(JOBS):
            job = create_job(client, served)
            claim(client, served.node)
            assert start(client, served.node, job["id"]).status_code == 200
            body = success(job, served)
            r = post_result(client, served.node, job["id"], body)
            assert r.status_code == 200, r.text
    db.dispose()
    chain = LazyChain(settings)  # deploy now: the child's broadcasts are the relay's
    chain.get()
    chain.close()
    return settings


def _run_child(
    settings: Settings, point: str, nth: int
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", CHILD],
        env=_child_env(settings, point, nth),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# The sends, in id order: the asset's registration (1), the trade batch (2), the
# receipt batch (3). Every point on the trade batch, and the other sends too.
@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("before_send", 2),
        ("after_send", 2),
        ("after_record", 2),
        ("before_send", 1),
        ("after_send", 3),
    ],
)
def test_killing_the_relay_never_loses_nor_duplicates(
    owed: Settings, point: str, nth: int
) -> None:
    crashed = _run_child(owed, point, nth)
    assert crashed.returncode == 9, crashed.stderr[-3000:]

    # A fresh relay (in this process) finishes the job.
    db = Database.from_url(owed.effective_database_url)
    chain = LazyChain(owed)
    try:
        ledger = chain.get().ledger
        done = make_relay(db, ledger, owed).flush()
        assert done.failed == 0
        with db.session() as s:
            report = verify_ledger(s, ledger)
        assert report.ok, report.mismatches
        assert (report.assets, report.trades, report.receipts) == (1, JOBS, JOBS)
        assert report.pending_events == 0
        start_block = ledger.deployment.block_number
        assert len(ledger.registry.get_registered(start_block)) == 1
        batches = ledger.settlement.get_trade_batches(start_block)
        assert len(batches) == 1 and len(batches[0].trade_hashes) == JOBS
        assert len(set(batches[0].trade_hashes)) == JOBS
        assert len(ledger.anchor.get_anchored(start_block)) == 1
        assets = ledger.registry.get_registered(start_block)
        assert ledger.registry.get_asset(assets[0].token_id) is not None
        # after_send: the crashed send reached the chain and the new relay found
        # it there; after_record: it was recorded; before_send: the stored bytes
        # were broadcast again.
        assert done.sent == (4 - nth if point == "before_send" else 3 - nth)
    finally:
        chain.close()
        db.dispose()
    assert uuid.UUID(str(assets[0].dataset_id))

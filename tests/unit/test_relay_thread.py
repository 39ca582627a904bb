"""The relay thread: passes run, a missing chain is reported once, stop is prompt."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from marketplace.errors import ChainUnavailable
from marketplace.services.relay import RelayReport, RelayThread


class _Relay:
    def __init__(self) -> None:
        self.passes = threading.Semaphore(0)

    def run_once(self) -> RelayReport:
        self.passes.release()
        return RelayReport()


def test_passes_run_until_stopped() -> None:
    relay = _Relay()
    thread = RelayThread(lambda: relay, interval=0.01)  # type: ignore[arg-type, return-value]
    thread.start()
    try:
        for _ in range(3):
            assert relay.passes.acquire(timeout=30)
    finally:
        thread.stop()
    assert not thread._thread.is_alive()


def test_an_unavailable_chain_is_logged_once_not_per_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = threading.Semaphore(0)

    def factory() -> Any:
        tries.release()
        raise ChainUnavailable("the embedded chain is held by process 42")

    caplog.set_level(logging.WARNING, logger="veilx.relay")
    thread = RelayThread(factory, interval=0.01, unavailable_interval=0.01)
    thread.start()
    try:
        for _ in range(3):  # three passes find no chain
            assert tries.acquire(timeout=30)
    finally:
        thread.stop()
    warnings = [r for r in caplog.records if r.name == "veilx.relay"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "held by process 42" in warnings[0].getMessage()
    assert not any(r.exc_info for r in warnings)  # no traceback spam

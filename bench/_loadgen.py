"""A closed-loop HTTP/1.1 load generator, run in its own process.

Usage: ``python -m bench._loadgen CONFIG.json RESULT.json``.

``concurrency`` workers each hold one keep-alive connection and send the next
request as soon as the previous response is complete. Requests that complete in
the first ``warmup_s`` seconds are not recorded; the run then measures for
``duration_s`` seconds and stops by itself (workers send nothing after the
window closes; whatever is still in flight ``grace_s`` later is cancelled and
counted as timed out).

The client is a minimal asyncio protocol on uvloop (no httpx): it needs to be
several times faster than the server it loads, also for a bare endpoint, and it
only ever sees uvicorn's ``content-length`` responses. A plan with
``then_page2`` is a paging session: after its page 1 the worker at once asks for
page 2 with the ``next_cursor`` it got, recorded under kind ``page2``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Plan", "main", "run_load", "summarise"]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Plan:
    """One request: its kind (for the breakdown) and its path with query string."""

    kind: str
    path: str
    then_page2: bool = False


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body_start = -1
        self.end = -1
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        if self.end < 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).lower()
            j = head.find(b"\r\ncontent-length:")
            if j < 0:
                self._fail(ConnectionError("response without content-length"))
                return
            k = head.find(b"\r\n", j + 2)
            length = int(head[j + 17 : k if k >= 0 else len(head)])
            self.status = int(head[9:12])
            self.body_start = i + 4
            self.end = i + 4 + length
        if len(self.buf) >= self.end:
            body = bytes(self.buf[self.body_start : self.end])
            del self.buf[: self.end]
            self.end = -1
            self.waiter.set_result((self.status, body))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed by the server"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.end = -1
        self.transport.write(raw)
        return await self.waiter


@dataclass
class _Record:
    latencies: dict[str, list[int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    issued: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, start: int, done: int, window: tuple[int, int]) -> None:
        self.issued[kind] = self.issued.get(kind, 0) + 1
        if window[0] <= done < window[1]:
            self.latencies.setdefault(kind, []).append(done - start)

    def error(self, kind: str, done: int, window: tuple[int, int], what: str) -> None:
        if window[0] <= done < window[1]:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.samples) < 8:
            self.samples.append(f"{kind}: {what}"[:400])


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    rank = max(1, -(-len(sorted_ns) * q // 100))
    return sorted_ns[int(rank) - 1] / 1e6


def summarise(lat_ns: list[int], errors: int, seconds: float) -> dict[str, Any]:
    """Count, throughput and latency percentiles (ms) of one kind of request."""
    ordered = sorted(lat_ns)
    n = len(ordered)
    return {
        "count": n,
        "errors": errors,
        "throughput": n / seconds if seconds > 0 else 0.0,
        "p50_ms": _percentile(ordered, 50),
        "p90_ms": _percentile(ordered, 90),
        "p99_ms": _percentile(ordered, 99),
        "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
        "mean_ms": sum(ordered) / n / 1e6 if n else float("nan"),
    }


async def run_load(config: dict[str, Any]) -> dict[str, Any]:
    """Run the load described by ``config`` and return the measured summary."""
    host: str = config["host"]
    port: int = config["port"]
    concurrency: int = config["concurrency"]
    warmup_s: float = config["warmup_s"]
    duration_s: float = config["duration_s"]
    grace_s: float = config.get("grace_s", 10.0)
    server_pid: int | None = config.get("server_pid")
    groups: dict[str, str] = config.get("groups", {})
    plans = [Plan(**p) for p in config["plans"]]
    extra = "".join(f"{k}: {v}\r\n" for k, v in config.get("headers", {}).items())
    prefix = f"Host: {host}:{port}\r\nAccept: application/json\r\n{extra}\r\n"

    def raw(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\n{prefix}".encode()

    encoded = [raw(p.path) for p in plans]
    loop = asyncio.get_running_loop()
    record = _Record()
    t0 = time.perf_counter_ns()
    window = (t0 + int(warmup_s * 1e9), t0 + int((warmup_s + duration_s) * 1e9))
    cpu: dict[str, float | None] = {}

    def sample_cpu(key: str) -> None:
        cpu[key] = _cpu_seconds(server_pid)

    loop.call_at(loop.time() + warmup_s, sample_cpu, "start")
    loop.call_at(loop.time() + warmup_s + duration_s, sample_cpu, "end")

    async def connect() -> _Conn:
        _, conn = await loop.create_connection(_Conn, host, port)
        return conn

    async def send(conn: _Conn, kind: str, req: bytes) -> tuple[int, bytes] | None:
        start = time.perf_counter_ns()
        try:
            status, body = await conn.request(req)
        except (ConnectionError, OSError) as exc:
            record.error(kind, time.perf_counter_ns(), window, repr(exc))
            return None
        done = time.perf_counter_ns()
        record.add(kind, start, done, window)
        if status != 200:
            record.error(kind, done, window, f"HTTP {status} {body[:300]!r}")
        return status, body

    async def worker(index: int) -> None:
        conn = await connect()
        i = index * len(plans) // concurrency
        while time.perf_counter_ns() < window[1]:
            plan = plans[i % len(plans)]
            req = encoded[i % len(plans)]
            i += 1
            got = await send(conn, plan.kind, req)
            if got is None:
                conn = await connect()
                continue
            status, body = got
            if not plan.then_page2 or status != 200:
                continue
            cursor = orjson.loads(body).get("next_cursor")
            if cursor and time.perf_counter_ns() < window[1]:
                sep = "&" if "?" in plan.path else "?"
                page2 = f"{plan.path}{sep}cursor={urllib.parse.quote(cursor)}"
                if await send(conn, "page2", raw(page2)) is None:
                    conn = await connect()
        assert conn.transport is not None
        conn.transport.close()

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    deadline = warmup_s + duration_s + grace_s
    finished, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    crashed = [t.exception() for t in finished if t.exception() is not None]
    seconds = duration_s
    kinds = sorted(set(record.latencies) | set(record.errors))
    every = [x for k in kinds for x in record.latencies.get(k, [])]
    total = summarise(every, sum(record.errors.values()), seconds)
    total["errors"] += len(pending) + len(crashed)
    start_cpu, end_cpu = cpu.get("start"), cpu.get("end")
    return {
        "window_s": seconds,
        "concurrency": concurrency,
        "total": total,
        "by_kind": {
            k: summarise(record.latencies.get(k, []), record.errors.get(k, 0), seconds)
            for k in kinds
        },
        "by_group": {
            g: summarise(
                [
                    x
                    for k in kinds
                    if groups.get(k) == g
                    for x in record.latencies.get(k, [])
                ],
                sum(record.errors.get(k, 0) for k in kinds if groups.get(k) == g),
                seconds,
            )
            for g in sorted({groups[k] for k in kinds if k in groups})
        },
        "issued": record.issued,
        "timed_out": len(pending),
        "crashed": [repr(e) for e in crashed][:4],
        "error_samples": record.samples,
        "server_cpu_util": (
            (end_cpu - start_cpu) / seconds
            if start_cpu is not None and end_cpu is not None
            else None
        ),
    }


def main(argv: list[str]) -> int:
    """Entry point: read the config, pin to a CPU if asked, run, write the result."""
    config = json.loads(Path(argv[0]).read_text())
    cpus = config.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    started = time.process_time()
    result = runner(run_load(config))
    result["loadgen_cpu_s"] = time.process_time() - started
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

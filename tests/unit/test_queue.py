"""Both job wake-up queues: same semantics in-process and on Redis."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from marketplace.queue import JobQueue, MemoryQueue, RedisQueue, open_queue


@pytest.fixture(params=["memory", "redis"])
def queue(request: pytest.FixtureRequest) -> Iterator[JobQueue]:
    """Each queue in turn (Redis in a namespace of its own)."""
    if request.param == "memory":
        q: JobQueue = MemoryQueue(max_pending=5)
    else:
        url = request.getfixturevalue("redis_url")
        q = RedisQueue(
            url, namespace=f"veilx-test-{uuid.uuid4().hex[:10]}", max_pending=5
        )
    yield q
    if isinstance(q, RedisQueue):
        keys = list(q.client.scan_iter(f"{q.namespace}:*"))
        if keys:
            q.client.delete(*keys)
    q.close()


def test_a_pending_wake_up_is_taken_at_once(queue: JobQueue) -> None:
    node, job = uuid.uuid4(), uuid.uuid4()
    queue.notify(node, job)
    started = time.monotonic()
    assert queue.wait(node, 30) == job
    # Woken, not timed out (a generous margin: the machines are shared).
    assert time.monotonic() - started < 15
    # Taken: the next wait times out.
    assert queue.wait(node, 0.2) is None


def test_wait_times_out(queue: JobQueue) -> None:
    started = time.monotonic()
    assert queue.wait(uuid.uuid4(), 0.3) is None
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2, elapsed
    # A zero wait only looks.
    started = time.monotonic()
    assert queue.wait(uuid.uuid4(), 0) is None
    assert time.monotonic() - started < 5


def test_a_waiter_is_woken_from_another_thread(queue: JobQueue) -> None:
    node, job = uuid.uuid4(), uuid.uuid4()
    got: list[uuid.UUID | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.wait(node, 10)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    queue.notify(node, job)
    waiter.join(10)
    assert got == [job]
    assert time.monotonic() - started < 5


def test_each_wake_up_wakes_one_waiter(queue: JobQueue) -> None:
    node = uuid.uuid4()
    jobs = [uuid.uuid4(), uuid.uuid4()]
    got: list[uuid.UUID | None] = []
    lock = threading.Lock()

    def wait() -> None:
        found = queue.wait(node, 1.5)
        with lock:
            got.append(found)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    for job in jobs:
        queue.notify(node, job)
    for w in waiters:
        w.join(10)
    assert sorted(str(g) for g in got if g is not None) == sorted(map(str, jobs))
    assert got.count(None) == 1


def test_nodes_are_separate(queue: JobQueue) -> None:
    a, b, job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    queue.notify(a, job)
    assert queue.wait(b, 0.2) is None
    assert queue.wait(a, 1) == job


def test_wake_ups_are_fifo_deduplicated_and_capped(queue: JobQueue) -> None:
    node = uuid.uuid4()
    jobs = [uuid.uuid4() for _ in range(7)]
    for job in jobs:
        queue.notify(node, job)
    queue.notify(node, jobs[3])  # again: moves to the back, not twice
    taken = []
    while (job := queue.wait(node, 0)) is not None:
        taken.append(job)
    # Five kept (the cap), oldest dropped; the repeated one once, last.
    assert taken == [jobs[2], jobs[4], jobs[5], jobs[6], jobs[3]]


def test_ping(queue: JobQueue) -> None:
    assert queue.ping() is True


def test_close_wakes_memory_waiters() -> None:
    queue = MemoryQueue()
    got: list[uuid.UUID | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.wait(uuid.uuid4(), 30)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    queue.close()
    waiter.join(5)
    assert got == [None]
    assert time.monotonic() - started < 5


def test_a_redis_wait_longer_than_the_socket_timeout_still_wakes(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A node's long poll (up to 30 s) outlasts the socket read timeout (5 s by
    # default; 0.4 s here): the wait must not end in a read timeout and miss
    # the wake-up.
    sep = "&" if "?" in redis_url else "?"
    queue = RedisQueue(
        f"{redis_url}{sep}socket_timeout=0.4",
        namespace=f"veilx-test-{uuid.uuid4().hex[:10]}",
    )
    node, job = uuid.uuid4(), uuid.uuid4()
    got: list[uuid.UUID | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.wait(node, 5)))
    with caplog.at_level(logging.WARNING, logger="veilx.queue"):
        started = time.monotonic()
        waiter.start()
        time.sleep(1.0)  # more than two socket timeouts
        queue.notify(node, job)
        waiter.join(10)
    assert got == [job]
    assert time.monotonic() - started < 3
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    queue.close()


def test_an_unreachable_redis_degrades_to_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = RedisQueue("redis://127.0.0.1:1/0", namespace="veilx-test-down")
    node, job = uuid.uuid4(), uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="veilx.queue"):
        queue.notify(node, job)  # logged, not raised: the row is the truth
        started = time.monotonic()
        assert queue.wait(node, 0.3) is None
        assert time.monotonic() - started >= 0.25
    assert queue.ping() is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("not sent" in m for m in messages), messages
    assert any("failed" in m for m in messages), messages
    queue.close()


def test_open_queue_picks_the_backend(redis_url: str) -> None:
    assert isinstance(open_queue(None), MemoryQueue)
    q = open_queue(redis_url, namespace="veilx-test-open")
    assert isinstance(q, RedisQueue) and q.namespace == "veilx-test-open"
    q.close()

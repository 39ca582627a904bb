"""Per-node wake-up queues for job dispatch: Redis when configured, else in-process.

The queue is only a wake-up: when a job becomes ``queued`` its id is pushed to
its node's queue, and a node waiting in ``GET /v1/nodes/{id}/jobs/next`` is woken
to claim it. The database row is the truth and a job is claimed with a
conditional update, so a lost, duplicated or stale wake-up is harmless: the
worker's sweep re-notifies every queued job, and a poll claims from the database
before and after it waits.

Both queues are synchronous and thread-safe; the API calls :meth:`JobQueue.wait`
in a worker thread, never on the event loop.

* :class:`MemoryQueue` — a ``threading.Condition`` per node (the embedded
  single-process deployment).
* :class:`RedisQueue` — a Redis list per node, ``<namespace>:jobq:<node id>``,
  waited on with ``BLPOP``; shared by every API replica and worker. Pending
  wake-ups are de-duplicated per job and capped, and the list expires when
  nobody polls it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Protocol

import redis

__all__ = ["JobQueue", "MemoryQueue", "RedisQueue", "open_queue"]

log = logging.getLogger("veilx.queue")

MAX_PENDING = 1000
"""Wake-ups kept per node; older ones are dropped (the sweep re-notifies)."""

PENDING_TTL_SECONDS = 24 * 3600
"""A node's Redis list expires after this long without a new wake-up."""

SOCKET_TIMEOUT_SECONDS = 5.0
"""Redis socket read timeout unless the URL sets one (``?socket_timeout=``)."""


class JobQueue(Protocol):
    """The operations job dispatch needs from Redis or its in-process stand-in."""

    def notify(self, node_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Wake one waiter of ``node_id`` (or the next one to wait) for ``job_id``.

        Never raises for an unavailable backend: the wake-up is an optimisation
        and the failure is logged.
        """
        ...

    def wait(self, node_id: uuid.UUID, timeout: float) -> uuid.UUID | None:
        """Wait up to ``timeout`` seconds for a wake-up of ``node_id``.

        Returns the job id of the wake-up taken, or ``None`` on timeout.
        """
        ...

    def ping(self) -> bool:
        """Whether the backend answers."""
        ...

    def close(self) -> None:
        """Release connections and wake every waiter."""
        ...


class MemoryQueue:
    """In-process wake-ups: pending job ids and a condition per node."""

    def __init__(self, *, max_pending: int = MAX_PENDING) -> None:
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, OrderedDict[uuid.UUID, None]] = {}
        self._conditions: dict[uuid.UUID, threading.Condition] = {}
        self._max_pending = max_pending
        self._closed = False

    def _condition(self, node_id: uuid.UUID) -> threading.Condition:
        cond = self._conditions.get(node_id)
        if cond is None:
            cond = self._conditions[node_id] = threading.Condition(self._lock)
        return cond

    def notify(self, node_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Record the wake-up (once per job) and wake one waiter."""
        with self._lock:
            pending = self._pending.setdefault(node_id, OrderedDict())
            pending.pop(job_id, None)
            pending[job_id] = None
            while len(pending) > self._max_pending:
                pending.popitem(last=False)
            self._condition(node_id).notify()

    def wait(self, node_id: uuid.UUID, timeout: float) -> uuid.UUID | None:
        """Take the oldest pending wake-up, waiting up to ``timeout`` for one."""
        with self._lock:
            cond = self._condition(node_id)
            deadline = time.monotonic() + max(0.0, timeout)
            while not self._closed:
                pending = self._pending.get(node_id)
                if pending:
                    job_id, _ = pending.popitem(last=False)
                    if not pending:
                        del self._pending[node_id]
                    return job_id
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                cond.wait(remaining)
            return None

    def ping(self) -> bool:
        """Always true."""
        return True

    def close(self) -> None:
        """Wake every waiter; later waits return at once."""
        with self._lock:
            self._closed = True
            for cond in self._conditions.values():
                cond.notify_all()


class RedisQueue:
    """Redis lists of wake-ups, one per node, shared by every process."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "veilx",
        max_connections: int = 512,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.namespace = namespace
        self._max_pending = max_pending
        # Every waiting poll holds a connection for its BLPOP.
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,  # the URL's own value wins
        )
        self.client: Any = redis.Redis(connection_pool=self._pool)
        # A BLPOP longer than the socket read timeout ends in a TimeoutError
        # (the wake-up is then missed), so a long wait is a series of shorter
        # BLPOPs, each well within it.
        read_timeout = self._pool.connection_kwargs.get("socket_timeout")
        self._blpop_slice = (
            None
            if read_timeout is None
            else max(0.01, float(read_timeout) - min(1.0, float(read_timeout) / 2))
        )

    def _key(self, node_id: uuid.UUID) -> str:
        return f"{self.namespace}:jobq:{node_id}"

    def notify(self, node_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Append the job id (once: an earlier pending copy is removed)."""
        key, member = self._key(node_id), str(job_id)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.lrem(key, 0, member)
                pipe.rpush(key, member)
                pipe.ltrim(key, -self._max_pending, -1)
                pipe.expire(key, PENDING_TTL_SECONDS)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "job %s: wake-up for node %s not sent: %s", job_id, node_id, exc
            )

    def wait(self, node_id: uuid.UUID, timeout: float) -> uuid.UUID | None:
        """``BLPOP`` the node's list; when Redis fails, sleep out the timeout."""
        key = self._key(node_id)
        started = time.monotonic()
        try:
            if timeout <= 0:
                raw = self.client.lpop(key)
            else:
                raw = None
                while raw is None:
                    remaining = timeout - (time.monotonic() - started)
                    if remaining <= 0:
                        break
                    if self._blpop_slice is not None:
                        remaining = min(remaining, self._blpop_slice)
                    # BLPOP's timeout 0 means "forever": keep it strictly positive.
                    popped = self.client.blpop([key], timeout=max(remaining, 0.01))
                    raw = popped[1] if popped else None
        except (redis.RedisError, OSError) as exc:
            log.warning("waiting for jobs of node %s failed: %s", node_id, exc)
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))
            return None
        if raw is None:
            return None
        try:
            return uuid.UUID(raw.decode() if isinstance(raw, bytes) else str(raw))
        except ValueError:
            log.warning("ignored a malformed wake-up %r for node %s", raw, node_id)
            return None

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.disconnect()


def open_queue(redis_url: str | None, *, namespace: str = "veilx") -> JobQueue:
    """Return a Redis queue for ``redis_url``, or the in-process queue."""
    if redis_url:
        return RedisQueue(redis_url, namespace=namespace)
    return MemoryQueue()

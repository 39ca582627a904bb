"""Rate limits and idempotency records: Redis when configured, else in-process.

Both stores implement :class:`KeyValueStore` with the same semantics, and the same
tests run against both.

Rate limiting is a token bucket per key: ``burst`` tokens, refilled at ``rate``
tokens per second. Idempotency records go through three states: absent →
``pending`` (a request holds the key) → ``done`` (the stored response).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis

__all__ = [
    "IdempotencyBegin",
    "KeyValueStore",
    "MemoryStore",
    "RedisStore",
    "StoredResponse",
    "open_store",
]


@dataclass(frozen=True)
class StoredResponse:
    """A response kept for idempotent replay."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def dumps(self) -> str:
        """Serialise for storage."""
        return json.dumps(
            {"s": self.status, "h": self.headers, "b": self.body.decode("latin-1")}
        )

    @classmethod
    def loads(cls, raw: str | bytes) -> StoredResponse:
        """Deserialise from storage."""
        d = json.loads(raw)
        return cls(d["s"], [tuple(h) for h in d["h"]], d["b"].encode("latin-1"))


@dataclass(frozen=True)
class IdempotencyBegin:
    """Outcome of claiming an idempotency key."""

    state: Literal["new", "pending", "done", "mismatch"]
    response: StoredResponse | None = None


class KeyValueStore(Protocol):
    """The operations the API needs from Redis or its in-process stand-in."""

    async def take_token(self, key: str, rate: float, burst: int) -> tuple[bool, float]:
        """Take one token; return ``(allowed, seconds_until_next_token)``."""
        ...

    async def idempotency_begin(
        self, key: str, fingerprint: str, ttl: int
    ) -> IdempotencyBegin:
        """Claim ``key`` for a request with ``fingerprint``, or report its state."""
        ...

    async def idempotency_finish(
        self, key: str, fingerprint: str, response: StoredResponse, ttl: int
    ) -> None:
        """Store the response for ``key``."""
        ...

    async def idempotency_release(self, key: str) -> None:
        """Forget a pending claim (the request failed with a server error)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """In-process store for the embedded single-process deployment."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._idem: dict[str, tuple[float, str, StoredResponse | None]] = {}
        self._lock = asyncio.Lock()

    async def take_token(self, key: str, rate: float, burst: int) -> tuple[bool, float]:
        """Token bucket, see the module docstring."""
        now = time.monotonic()
        async with self._lock:
            tokens, stamp = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - stamp) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 100_000:
                    self._buckets.clear()
                return True, 0.0
            self._buckets[key] = (tokens, now)
            return False, (1.0 - tokens) / rate

    async def idempotency_begin(
        self, key: str, fingerprint: str, ttl: int
    ) -> IdempotencyBegin:
        """Claim or report, see :class:`KeyValueStore`."""
        now = time.monotonic()
        async with self._lock:
            entry = self._idem.get(key)
            if entry is not None and entry[0] < now:
                entry = None
            if entry is None:
                self._idem[key] = (now + ttl, fingerprint, None)
                return IdempotencyBegin("new")
            _, stored_fp, response = entry
            if stored_fp != fingerprint:
                return IdempotencyBegin("mismatch")
            if response is None:
                return IdempotencyBegin("pending")
            return IdempotencyBegin("done", response)

    async def idempotency_finish(
        self, key: str, fingerprint: str, response: StoredResponse, ttl: int
    ) -> None:
        """Store the response."""
        async with self._lock:
            self._idem[key] = (time.monotonic() + ttl, fingerprint, response)

    async def idempotency_release(self, key: str) -> None:
        """Forget a pending claim."""
        async with self._lock:
            entry = self._idem.get(key)
            if entry is not None and entry[2] is None:
                del self._idem[key]

    async def ping(self) -> bool:
        """Always true."""
        return True

    async def close(self) -> None:
        """Nothing to release."""


# KEYS[1] bucket; ARGV rate, burst, now (seconds, float). Returns {allowed, wait_ms}.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
"""  # noqa: S105 - a Lua script, not a secret

# KEYS[1] record; ARGV fingerprint, ttl. Returns {state, response-or-empty}.
_IDEM_BEGIN = """
local cur = redis.call('HMGET', KEYS[1], 'fp', 'resp')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {'new', ''}
end
if cur[1] ~= ARGV[1] then return {'mismatch', ''} end
if not cur[2] then return {'pending', ''} end
return {'done', cur[2]}
"""

_IDEM_RELEASE = """
if redis.call('HEXISTS', KEYS[1], 'resp') == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """Redis-backed store shared by every API replica."""

    def __init__(
        self, url: str, *, namespace: str = "veilx", max_connections: int = 64
    ) -> None:
        self.namespace = namespace
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=5
        )
        self.client: Any = aioredis.Redis(connection_pool=pool)
        self._bucket = self.client.register_script(_TOKEN_BUCKET)
        self._begin = self.client.register_script(_IDEM_BEGIN)
        self._release = self.client.register_script(_IDEM_RELEASE)

    def _k(self, kind: str, key: str) -> str:
        return f"{self.namespace}:{kind}:{key}"

    async def take_token(self, key: str, rate: float, burst: int) -> tuple[bool, float]:
        """Token bucket in one atomic script."""
        allowed, wait_ms = await self._bucket(
            keys=[self._k("rl", key)], args=[rate, burst, time.time()]
        )
        return bool(allowed), int(wait_ms) / 1000.0

    async def idempotency_begin(
        self, key: str, fingerprint: str, ttl: int
    ) -> IdempotencyBegin:
        """Claim or report, atomically."""
        state, raw = await self._begin(
            keys=[self._k("idem", key)], args=[fingerprint, ttl]
        )
        state = state.decode() if isinstance(state, bytes) else state
        if state == "done":
            return IdempotencyBegin("done", StoredResponse.loads(raw))
        if state not in ("new", "pending", "mismatch"):
            raise ValueError(f"unexpected idempotency state {state!r}")
        if state == "new":
            return IdempotencyBegin("new")
        if state == "pending":
            return IdempotencyBegin("pending")
        if state == "mismatch":
            return IdempotencyBegin("mismatch")
        raise ValueError(f"unexpected idempotency state {state!r}")

    async def idempotency_finish(
        self, key: str, fingerprint: str, response: StoredResponse, ttl: int
    ) -> None:
        """Store the response with the record's time to live."""
        k = self._k("idem", key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(k, mapping={"fp": fingerprint, "resp": response.dumps()})
            pipe.expire(k, ttl)
            await pipe.execute()

    async def idempotency_release(self, key: str) -> None:
        """Forget a pending claim."""
        await self._release(keys=[self._k("idem", key)])

    async def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(await self.client.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the pool."""
        # The client does not own a pool passed to it, so close the pool explicitly.
        await self.client.aclose(close_connection_pool=True)


def open_store(redis_url: str | None, *, namespace: str = "veilx") -> KeyValueStore:
    """Return a Redis store for ``redis_url``, or the in-process store."""
    if redis_url:
        return RedisStore(redis_url, namespace=namespace)
    return MemoryStore()

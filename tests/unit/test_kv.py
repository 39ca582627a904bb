"""Both key-value stores: token buckets and idempotency records, same semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from marketplace.kv import KeyValueStore, StoredResponse
from tests.conftest import run

RATE = 20.0  # tokens per second: one token every 50 ms
TTL = 60


def in_store(
    kv: KeyValueStore, body: Callable[[KeyValueStore], Awaitable[None]]
) -> None:
    """Run ``body(kv)`` in a fresh event loop, closing the store's connections."""

    async def main() -> None:
        try:
            await body(kv)
        finally:
            await kv.close()

    run(main())


async def _refill(kv: KeyValueStore, key: str, rate: float, burst: int) -> bool:
    """Wait (generously) for one token to come back; whether it did."""
    for _ in range(50):
        await asyncio.sleep(2 / rate)
        allowed, _ = await kv.take_token(key, rate, burst)
        if allowed:
            return True
    return False


# -- token bucket ------------------------------------------------------------


def test_bucket_allows_burst_then_refuses_with_a_positive_wait(
    kv: KeyValueStore,
) -> None:
    async def body(kv: KeyValueStore) -> None:
        for _ in range(3):
            assert await kv.take_token("k", 0.01, 3) == (True, 0.0)
        allowed, wait = await kv.take_token("k", 0.01, 3)
        assert not allowed
        assert wait > 0
        # Still empty: refusals do not take anything or reset the clock.
        allowed, wait = await kv.take_token("k", 0.01, 3)
        assert not allowed
        assert wait > 0

    in_store(kv, body)


def test_bucket_burst_of_one(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert (await kv.take_token("one", 0.01, 1))[0]
        allowed, wait = await kv.take_token("one", 0.01, 1)
        assert not allowed and wait > 0

    in_store(kv, body)


def test_bucket_refills_over_time(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        for _ in range(2):
            assert (await kv.take_token("r", RATE, 2))[0]
        assert not (await kv.take_token("r", RATE, 2))[0]
        assert await _refill(kv, "r", RATE, 2)

    in_store(kv, body)


def test_bucket_never_holds_more_than_burst(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert (await kv.take_token("cap", RATE, 2))[0]
        # Long enough to refill far more than the burst (6 tokens uncapped).
        await asyncio.sleep(0.3)
        allowed = 0
        for _ in range(10):
            ok, _ = await kv.take_token("cap", RATE, 2)
            if not ok:
                break
            allowed += 1
        # The burst, plus at most a refill tick or two on a slow machine.
        assert 2 <= allowed <= 4

    in_store(kv, body)


def test_separate_keys_have_separate_buckets(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert (await kv.take_token("a", 0.01, 1))[0]
        assert not (await kv.take_token("a", 0.01, 1))[0]
        assert (await kv.take_token("b", 0.01, 1))[0]
        assert not (await kv.take_token("b", 0.01, 1))[0]
        assert (await kv.take_token("c", 0.01, 2))[0]

    in_store(kv, body)


# -- idempotency ---------------------------------------------------------------

RESPONSE = StoredResponse(
    201,
    [("content-type", "application/json"), ("x-note", "caf\xe9 \xff")],
    '{"name":"Zürich €"}'.encode() + b"\x00\x80\xfe\xff",
)


def test_idempotency_new_pending_mismatch(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        first = await kv.idempotency_begin("rec", "fp-1", TTL)
        assert first.state == "new" and first.response is None
        again = await kv.idempotency_begin("rec", "fp-1", TTL)
        assert again.state == "pending" and again.response is None
        other = await kv.idempotency_begin("rec", "fp-2", TTL)
        assert other.state == "mismatch" and other.response is None
        # A different record is independent.
        assert (await kv.idempotency_begin("rec-2", "fp-2", TTL)).state == "new"

    in_store(kv, body)


def test_idempotency_finish_stores_the_response(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert (await kv.idempotency_begin("rec", "fp", TTL)).state == "new"
        await kv.idempotency_finish("rec", "fp", RESPONSE, TTL)
        for _ in range(2):  # replaying does not consume the record
            done = await kv.idempotency_begin("rec", "fp", TTL)
            assert done.state == "done"
            assert done.response is not None
            assert done.response.status == 201
            assert [tuple(h) for h in done.response.headers] == RESPONSE.headers
            assert done.response.body == RESPONSE.body
            assert done.response == RESPONSE
        # After finishing, another request with the same key is still a mismatch.
        assert (await kv.idempotency_begin("rec", "other", TTL)).state == "mismatch"

    in_store(kv, body)


def test_idempotency_empty_body_round_trips(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        empty = StoredResponse(204, [], b"")
        await kv.idempotency_begin("e", "fp", TTL)
        await kv.idempotency_finish("e", "fp", empty, TTL)
        done = await kv.idempotency_begin("e", "fp", TTL)
        assert done.state == "done" and done.response == empty

    in_store(kv, body)


def test_release_of_a_pending_key_lets_it_be_claimed_again(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert (await kv.idempotency_begin("rel", "fp-1", TTL)).state == "new"
        await kv.idempotency_release("rel")
        # Claimable again, even by a different request.
        assert (await kv.idempotency_begin("rel", "fp-2", TTL)).state == "new"
        assert (await kv.idempotency_begin("rel", "fp-2", TTL)).state == "pending"
        # Releasing an unknown key is harmless.
        await kv.idempotency_release("never-claimed")
        assert (await kv.idempotency_begin("never-claimed", "x", TTL)).state == "new"

    in_store(kv, body)


def test_release_after_finish_does_nothing(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        await kv.idempotency_begin("fin", "fp", TTL)
        await kv.idempotency_finish("fin", "fp", RESPONSE, TTL)
        await kv.idempotency_release("fin")
        done = await kv.idempotency_begin("fin", "fp", TTL)
        assert done.state == "done"
        assert done.response == RESPONSE

    in_store(kv, body)


def test_ping(kv: KeyValueStore) -> None:
    async def body(kv: KeyValueStore) -> None:
        assert await kv.ping() is True

    in_store(kv, body)


def test_stored_response_serialisation_round_trips() -> None:
    assert StoredResponse.loads(RESPONSE.dumps()) == RESPONSE
    assert StoredResponse.loads(RESPONSE.dumps().encode()) == RESPONSE

"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from marketplace import __version__
from marketplace.api.middleware import (
    IdempotencyMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
)
from marketplace.api.problems import install_problem_handlers
from marketplace.api.routes import (
    auth,
    blobs,
    catalog,
    datasets,
    health,
    jobs,
    ledger,
    nodes,
    organisations,
    trading,
)
from marketplace.chain import LazyChain
from marketplace.config import Settings, get_settings
from marketplace.db import Database
from marketplace.kv import KeyValueStore, open_store
from marketplace.payments import PaymentProvider, make_providers
from marketplace.queue import JobQueue, open_queue
from marketplace.services.facets import FacetIndex
from marketplace.services.identity import _CallerCache
from marketplace.services.relay import RelayThread, make_relay
from marketplace.services.search import SearchCache
from marketplace.worker import Sweeper

__all__ = ["EMBEDDED_SWEEP_INTERVAL", "create_app", "serve_app"]

log = logging.getLogger("veilx.api")

EMBEDDED_SWEEP_INTERVAL = 5.0
"""Seconds between deadline sweeps in ``veilx serve`` without a separate worker."""

CONTENT_ADDRESSED_UPLOADS = frozenset({"/v1/blobs", "/v1/he-contexts"})
"""POSTs that are idempotent by construction (the bytes name the result) and may
be far larger than the idempotency middleware buffers: they pass it untouched."""


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    kv: KeyValueStore | None = None,
    queue: JobQueue | None = None,
    migrate: bool = True,
    sweep_interval: float | None = None,
    chain: LazyChain | None = None,
    relay_interval: float | None = None,
    payments: Mapping[str, PaymentProvider] | None = None,
) -> FastAPI:
    """Build the exchange API.

    Parameters
    ----------
    settings
        Configuration; read from the environment when omitted.
    db
        A database to use instead of one built from the settings.
    kv
        A key-value store instead of the one the settings select.
    queue
        A job wake-up queue instead of the one the settings select.
    migrate
        Apply pending migrations at start-up.
    sweep_interval
        Run the job deadline sweep in a daemon thread every this many seconds
        (the embedded worker); ``None`` leaves it to ``veilx worker``.
    chain
        The ledger chain, opened on first use; built from the settings if omitted.
    relay_interval
        Run the ledger outbox relay in a daemon thread every this many seconds;
        ``None`` leaves it to ``veilx worker``.
    payments
        The payment providers by name; built from the settings if omitted.
    """
    settings = settings or get_settings()
    db = db or Database.from_url(settings.effective_database_url)
    kv = kv or open_store(settings.redis_url, namespace=settings.redis_namespace)
    queue = queue or open_queue(settings.redis_url, namespace=settings.redis_namespace)
    chain = chain or LazyChain(settings)
    payments = payments if payments is not None else make_providers(settings, chain)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            db.upgrade()
        sweeper = (
            Sweeper(db, queue, sweep_interval, payments=payments)
            if sweep_interval
            else None
        )
        if sweeper is not None:
            sweeper.start()
        relay = (
            RelayThread(
                lambda: make_relay(db, chain.get().ledger, settings), relay_interval
            )
            if relay_interval
            else None
        )
        if relay is not None:
            relay.start()
        try:
            yield
        finally:
            if relay is not None:
                relay.stop()
            if sweeper is not None:
                sweeper.stop()
            chain.close()
            queue.close()
            await kv.close()

    app = FastAPI(
        title="veilx exchange",
        version=__version__,
        summary="A privacy-preserving data exchange: usable but invisible.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.kv = kv
    app.state.queue = queue
    app.state.chain = chain
    app.state.payments = payments
    app.state.caller_cache = _CallerCache()
    app.state.search_cache = SearchCache()
    app.state.facet_index = FacetIndex()
    install_problem_handlers(app)
    for module in (
        health,
        auth,
        organisations,
        datasets,
        catalog,
        nodes,
        jobs,
        blobs,
        ledger,
        trading,
    ):
        app.include_router(module.router)
    # Outermost last: request id → rate limit → idempotency → routes.
    app.add_middleware(
        IdempotencyMiddleware,
        store=kv,
        ttl=settings.idempotency_ttl_seconds,
        exempt=CONTENT_ADDRESSED_UPLOADS,
    )
    app.add_middleware(
        RateLimitMiddleware,
        store=kv,
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def serve_app() -> FastAPI:
    """The app ``veilx serve`` runs (a uvicorn factory).

    Without Redis (the embedded defaults) there is no separate ``veilx worker``,
    so each API process sweeps job deadlines itself; the sweep is idempotent, so
    several processes sweeping is harmless.
    """
    settings = get_settings()
    return create_app(
        settings,
        sweep_interval=None if settings.redis_url else EMBEDDED_SWEEP_INTERVAL,
        relay_interval=None
        if settings.redis_url
        else settings.ledger_relay_interval_seconds,
    )

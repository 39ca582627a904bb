"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from marketplace import __version__
from marketplace.api.middleware import (
    IdempotencyMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
)
from marketplace.api.problems import install_problem_handlers
from marketplace.api.routes import auth, catalog, datasets, health, organisations
from marketplace.config import Settings, get_settings
from marketplace.db import Database
from marketplace.kv import KeyValueStore, open_store
from marketplace.services.facets import FacetIndex
from marketplace.services.identity import _CallerCache
from marketplace.services.search import SearchCache

__all__ = ["create_app"]

log = logging.getLogger("veilx.api")


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    kv: KeyValueStore | None = None,
    migrate: bool = True,
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
    migrate
        Apply pending migrations at start-up.
    """
    settings = settings or get_settings()
    db = db or Database.from_url(settings.effective_database_url)
    kv = kv or open_store(settings.redis_url, namespace=settings.redis_namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            db.upgrade()
        yield
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
    app.state.caller_cache = _CallerCache()
    app.state.search_cache = SearchCache()
    app.state.facet_index = FacetIndex()
    install_problem_handlers(app)
    for module in (health, auth, organisations, datasets, catalog):
        app.include_router(module.router)
    # Outermost last: request id → rate limit → idempotency → routes.
    app.add_middleware(
        IdempotencyMiddleware, store=kv, ttl=settings.idempotency_ttl_seconds
    )
    app.add_middleware(
        RateLimitMiddleware,
        store=kv,
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
    )
    app.add_middleware(RequestIdMiddleware)
    return app

"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Component status."""

    status: str
    database: str
    kv: str


@router.get("/health", operation_id="health")
async def health(request: Request) -> Health:
    """Report whether the database and the key-value store answer."""
    state = request.app.state
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = state.db.dialect
    except Exception:  # noqa: BLE001 - reported, not raised
        db = "unavailable"
    kv = (
        ("redis" if state.settings.redis_url else "memory")
        if await state.kv.ping()
        else "unavailable"
    )
    ok = "unavailable" not in (db, kv)
    return Health(status="ok" if ok else "degraded", database=db, kv=kv)

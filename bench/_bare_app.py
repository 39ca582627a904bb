"""The baseline: a bare FastAPI app with one small JSON endpoint, no middleware.

Served by ``bench._servers`` exactly as the exchange is (uvicorn, one worker), it
measures what the framework and server cost by themselves on this machine.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["app"]

app = FastAPI(title="bare")


@app.get("/ping")
async def ping() -> dict[str, object]:
    """Return a small JSON object."""
    return {"status": "ok", "service": "bare", "items": [1, 2, 3]}

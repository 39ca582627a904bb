"""The exchange's HTTP API (FastAPI)."""

from marketplace.api.main import create_app

__all__ = ["create_app"]

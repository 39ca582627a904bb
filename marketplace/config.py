"""Settings for the exchange, read from ``VEILX_*`` environment variables.

Settings fail fast: a malformed value or a placeholder secret outside development
stops the process at start-up with a message naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

_PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev-secret"})


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "veilx"


class Settings(BaseSettings):
    """Runtime configuration of the exchange.

    Every field maps to an environment variable with the ``VEILX_`` prefix, e.g.
    ``database_url`` to ``VEILX_DATABASE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="VEILX_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    redis_url: str | None = None
    redis_namespace: str = Field(default="veilx", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    secret_key: str = "dev-secret"  # noqa: S105 - rejected outside development
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_burst: int = Field(default=120, ge=1)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    session_ttl_seconds: int = Field(default=12 * 3600, ge=60)
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    exchange_fee_bps: int = Field(
        default=1_000,
        ge=0,
        le=10_000,
        description="The exchange's fee in basis points of each trade (rounded down).",
    )
    chain_url: str | None = Field(
        default=None,
        description="A JSON-RPC node; unset = the embedded chain in the data dir.",
    )
    chain_network: str = Field(
        default="local",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Names contracts/deployments/<network>.json (JSON-RPC only).",
    )
    chain_key: SecretStr | None = Field(
        default=None, description="The operator's hex private key (JSON-RPC only)."
    )
    chain_keystore: Path | None = Field(
        default=None, description="An encrypted JSON keystore for the operator key."
    )
    chain_keystore_password: SecretStr | None = None
    chain_confirmations: int = Field(default=0, ge=0, le=64)
    ledger_trades_per_batch: int = Field(default=500, ge=1, le=2_000)
    ledger_receipts_per_batch: int = Field(default=1_000, ge=1, le=100_000)
    ledger_batch_max_age_seconds: float = Field(
        default=5.0,
        ge=0,
        description="A batch smaller than the maximum is sent once its oldest "
        "record has waited this long.",
    )
    ledger_relay_interval_seconds: float = Field(default=1.0, gt=0)
    quote_ttl_seconds: int = Field(
        default=900, ge=10, le=7 * 86400, description="How long a quote holds."
    )
    entitlement_ttl_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="How long an entitlement lasts (card holds: at most 7 days).",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None, description="Stripe secret key (sk_…); unset = no card payments."
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="The webhook endpoint's signing secret (whsec_…)."
    )
    stripe_api_base: str | None = Field(
        default=None, description="Another Stripe API base URL (a test server)."
    )
    card_surcharge_bps: int = Field(
        default=150, ge=0, le=2_000, description="Card surcharge, basis points."
    )
    card_surcharge_fixed_minor: int = Field(
        default=25, ge=0, le=10_000, description="Card surcharge per payment."
    )
    onchain_payments: bool = Field(
        default=True,
        description="Offer the onchain way of paying (the chain's payment escrow).",
    )
    onchain_currency: str = Field(
        default="EUR",
        pattern=r"^[A-Z]{3}$",
        description="The currency the escrow's token counts in minor units.",
    )
    onchain_hold_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description=(
            "Longest onchain entitlement (subscriptions are captured when bought);"
            " its hold expires 2 days later."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("chain_url")
    @classmethod
    def _check_chain_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// JSON-RPC URL")
        return value

    @model_validator(mode="after")
    def _check_chain_signer(self) -> Settings:
        if self.chain_keystore is not None and self.chain_keystore_password is None:
            raise ValueError(
                "VEILX_CHAIN_KEYSTORE_PASSWORD is required with VEILX_CHAIN_KEYSTORE"
            )
        return self

    @model_validator(mode="after")
    def _reject_placeholder_secrets(self) -> Settings:
        if self.environment != "development" and (
            self.secret_key.strip().lower() in _PLACEHOLDER_SECRETS
            or len(self.secret_key) < 32
        ):
            raise ValueError(
                "VEILX_SECRET_KEY must be a random value of at least 32 characters "
                f"outside development (environment={self.environment}); generate "
                "one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL: ``VEILX_DATABASE_URL`` or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'veilx.db'}"

    @property
    def is_sqlite(self) -> bool:
        """Whether the configured database is SQLite."""
        return self.effective_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()

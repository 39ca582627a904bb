"""The node's TOML config: where the exchange is, which data it serves, which models.

Example (``node.toml``; relative paths are relative to this file)::

    exchange_url = "https://exchange.example.org"
    api_key_file = "api-key.txt"        # or api_key = "vx_…", or $VEILX_NODE_API_KEY
    name = "hospital-a-node-1"
    state_dir = "node-state"            # default: "node-state" next to this file
    poll_wait = 20                      # long-poll seconds, 0 to 30
    approve_locally = false             # true: jobs whose policy asks for human
                                        # approval also wait for `veilx node approve`

    [[datasets]]
    dataset_id = "4f0c…"                # the listing's id at the exchange
    source = { kind = "csv", path = "data/admissions.csv" }
    model_eval_epsilon = 0.5            # ε of the DP Gram release (default 0.5)
    model_eval_delta = 0.0              # δ > 0 switches to Gaussian noise
    categories = { sex = ["f", "m"] }   # optional public domains (DP group-by)
    policy_sha256 = "9c1e…"             # optional: the only rights policy the node
                                        # will enforce (the listing's policy_hash)

    [[datasets]]
    dataset_id = "9a31…"
    source = { kind = "sql", url = "postgresql://reader@db/dw", table = "visits" }

    [[models]]                          # provider models for encrypted_inference
    name = "readmission-risk"
    dataset_id = "4f0c…"
    kind = "logistic"                   # scores are logits (apply σ after decrypting)
    features = ["age_years", "length_of_stay_days"]
    weights = [0.02, 0.11]
    bias = -3.1
    description = "30-day readmission risk"

Errors name the setting in one line (``node.toml: datasets[0].source.path: …``).
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mpc_engine.he import ModelKind
from mpc_engine.node.errors import ConfigError

__all__ = [
    "API_KEY_ENV",
    "CsvSource",
    "DatasetConfig",
    "ModelConfig",
    "NodeConfig",
    "ParquetSource",
    "SqlSource",
    "load_config",
]

API_KEY_ENV = "VEILX_NODE_API_KEY"
"""The environment variable holding the API key when the config names none."""

DEFAULT_STATE_DIR = "node-state"

ColumnName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,62}$")]
_SQL_TABLE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
)
_SOURCE_KINDS = ("csv", "parquet", "sql")


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    if isinstance(base, Path) and not value.is_absolute():
        return base / value
    return value


class CsvSource(BaseModel):
    """A CSV file with a header row (``true``/``false`` booleans, empty = null)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["csv"]
    path: Path

    @field_validator("path")
    @classmethod
    def _relative(cls, value: Path, info: ValidationInfo) -> Path:
        return _relative_to_config(value, info)


class ParquetSource(BaseModel):
    """A Parquet file (read with pyarrow)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["parquet"]
    path: Path

    @field_validator("path")
    @classmethod
    def _relative(cls, value: Path, info: ValidationInfo) -> Path:
        return _relative_to_config(value, info)


class SqlSource(BaseModel):
    """A table in any database SQLAlchemy can reach (read-only use)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sql"]
    url: SecretStr = Field(description="A SQLAlchemy URL (may hold a password).")
    table: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        try:
            make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL (e.g. sqlite:///data.db, "
                "postgresql://user@host/db)"
            ) from None
        return value

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _SQL_TABLE.match(value):
            raise ValueError("must be a table name, optionally schema.table")
        return value

    def display_url(self) -> str:
        """The URL with any password masked (for logs and ``show``)."""
        return make_url(self.url.get_secret_value()).render_as_string(
            hide_password=True
        )


Source = Annotated[CsvSource | ParquetSource | SqlSource, Field(discriminator="kind")]


class DatasetConfig(BaseModel):
    """One dataset the node serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset_id: uuid.UUID
    source: Source
    model_eval_epsilon: float = Field(default=0.5, gt=0, le=100)
    model_eval_delta: float = Field(default=0.0, ge=0, lt=1e-3)
    categories: dict[ColumnName, list[str | float | bool]] = Field(
        default_factory=dict,
        description="Declared public value domains per column (for DP group-by).",
    )
    policy_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Pin the rights policy: the node serves the dataset only under "
        "the policy with this hash (the listing's policy_hash) and ignores any "
        "other the exchange lists, so a policy change needs the provider's consent "
        "here too.",
    )

    @field_validator("model_eval_epsilon", "model_eval_delta")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class ModelConfig(BaseModel):
    """A provider model scored by ``encrypted_inference``: score = bias + w · x."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName
    dataset_id: uuid.UUID
    kind: ModelKind
    features: list[ColumnName] = Field(min_length=1, max_length=64)
    weights: list[float] = Field(min_length=1, max_length=64)
    bias: float = 0.0
    description: str = Field(default="", max_length=500)

    @field_validator("weights")
    @classmethod
    def _finite_weights(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(w) for w in value):
            raise ValueError("must all be finite numbers")
        return value

    @field_validator("bias")
    @classmethod
    def _finite_bias(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _aligned(self) -> ModelConfig:
        if len(self.weights) != len(self.features):
            raise ValueError(
                f"weights: has {len(self.weights)} values for "
                f"{len(self.features)} features"
            )
        dupes = sorted({f for f in self.features if self.features.count(f) > 1})
        if dupes:
            raise ValueError(f"features: named twice: {', '.join(dupes)}")
        return self


class NodeConfig(BaseModel):
    """The validated node config (see the module docstring for the format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exchange_url: str
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    state_dir: Path = Field(default=Path(DEFAULT_STATE_DIR), validate_default=True)
    name: str = Field(
        min_length=1, max_length=100, pattern=r"^[\x21-\x7e][\x20-\x7e]*$"
    )
    poll_wait: float = Field(default=20.0, ge=0, le=30)
    approve_locally: bool = Field(
        default=False,
        description="Jobs whose policy asks for human approval also need a "
        "decision made at the node (`veilx node approve` / `deny`), whatever the "
        "exchange recorded.",
    )
    datasets: list[DatasetConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)

    @field_validator("api_key_file", "state_dir")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _relative_to_config(value, info)

    @field_validator("exchange_url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.query or url.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _plausible_key(value.get_secret_value()):
            raise ValueError("must be a non-empty token without spaces")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NodeConfig:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("api_key: give api_key or api_key_file, not both")
        ids = [str(d.dataset_id) for d in self.datasets]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"datasets: dataset_id listed twice: {', '.join(dupes)}")
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models: name used twice: {', '.join(dupes)}")
        for i, model in enumerate(self.models):
            if str(model.dataset_id) not in ids:
                raise ValueError(
                    f"models[{i}].dataset_id: {model.dataset_id} is not one of the "
                    "node's datasets"
                )
        return self

    def dataset(self, dataset_id: uuid.UUID) -> DatasetConfig | None:
        """The config of ``dataset_id``, if the node serves it."""
        for entry in self.datasets:
            if entry.dataset_id == dataset_id:
                return entry
        return None

    def models_of(self, dataset_id: uuid.UUID) -> list[ModelConfig]:
        """The provider models registered for ``dataset_id``."""
        return [m for m in self.models if m.dataset_id == dataset_id]

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The API key: from ``api_key``, ``api_key_file`` or ``$VEILX_NODE_API_KEY``.

        Raises
        ------
        ConfigError
            No key is configured, or the key file is unreadable, readable by other
            users, or empty.
        """
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return _read_key_file(self.api_key_file)
        env = os.environ if environ is None else environ
        value = env.get(API_KEY_ENV, "").strip()
        if not value:
            raise ConfigError(
                "api_key",
                f"not set: give api_key or api_key_file in the config, or set "
                f"{API_KEY_ENV}",
            )
        if not _plausible_key(value):
            raise ConfigError(API_KEY_ENV, "must be a token without spaces")
        return value


def _plausible_key(value: str) -> bool:
    return bool(value) and not any(c.isspace() for c in value) and value.isprintable()


def _read_key_file(path: Path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError("api_key_file", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("api_key_file", f"{path} cannot be read ({exc})") from None
    if mode & 0o077:
        raise ConfigError(
            "api_key_file",
            f"{path} has mode {mode:o}; an API key file must be 600 (owner only)",
        )
    if not _plausible_key(text):
        raise ConfigError("api_key_file", f"{path} holds no API key on one line")
    return text


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif previous == "source" and part in _SOURCE_KINDS:
            pass  # the discriminated-union tag pydantic inserts
        elif part.startswith("function-"):
            pass
        else:
            out += f".{part}" if out else part
        previous = part
    return out or "(config)"


def _reason(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "union_tag_not_found":
        return "needs a kind: one of " + ", ".join(f'"{k}"' for k in _SOURCE_KINDS)
    if kind == "union_tag_invalid":
        return "kind must be one of " + ", ".join(f'"{k}"' for k in _SOURCE_KINDS)
    if kind == "extra_forbidden":
        return "unknown setting"
    if kind == "missing":
        return "required"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def _split_model_error(field: str, reason: str) -> tuple[str, str]:
    """Model-level validators say ``field: reason``; attach the field to the path."""
    match = re.match(r"^([a-z_][a-z0-9_.\[\]]*): (.*)$", reason)
    if match is None:
        return field, reason
    inner, rest = match.groups()
    if field == "(config)":
        return inner, rest
    return f"{field}.{inner}", rest


def parse_config(data: Mapping[str, Any], *, base: Path | None = None) -> NodeConfig:
    """Validate config data (already parsed from TOML).

    Parameters
    ----------
    data
        The config as a mapping.
    base
        The directory relative paths are relative to (the config file's).

    Raises
    ------
    ConfigError
        Naming the first setting that breaks its rule.
    """
    try:
        return NodeConfig.model_validate(dict(data), context={"base": base})
    except ValidationError as exc:
        first = exc.errors()[0]
        field, reason = _split_model_error(
            _location(tuple(first["loc"])), _reason(first)
        )
        raise ConfigError(field, reason) from None


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node config file.

    Relative paths in the file are relative to its directory; ``state_dir``
    defaults to ``node-state`` next to it.

    Raises
    ------
    ConfigError
        The file is missing, not TOML, or a setting breaks its rule.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config", f"{p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{p} cannot be read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"not valid TOML ({exc})", path=str(p)) from None
    try:
        return parse_config(data, base=p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.reason, path=str(p)) from None

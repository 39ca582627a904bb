"""Errors raised by the data node.

Every error carries structured attributes and a one-line message that never
contains row values, ciphertext bytes or keys.

Tree::

    NodeError
    ├── ConfigError           the node's TOML config is unusable; ``field``, ``reason``
    ├── SourceError           a dataset's source cannot be loaded or does not match
    │                         the listing's schema; ``dataset``, ``field``, ``reason``
    ├── StateError            the node's local state (SQLite, Gram cache) is
    │                         unusable; ``reason``
    └── ExchangeError         the exchange refused a request; ``status``, ``code``,
        │                     ``detail``, ``method``, ``path``
        └── ExchangeUnavailable  the exchange could not be reached, or kept failing
                                 (5xx, 429) through every retry
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExchangeError",
    "ExchangeUnavailable",
    "NodeError",
    "SourceError",
    "StateError",
]


class NodeError(Exception):
    """Base of every error raised by ``mpc_engine.node``."""


class ConfigError(NodeError):
    """The node's config is unusable; ``field`` names the setting."""

    def __init__(self, field: str, reason: str, *, path: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{field}: {reason}")


class SourceError(NodeError):
    """A dataset's source cannot be loaded, or does not match the listing."""

    def __init__(self, dataset: str, field: str, reason: str) -> None:
        self.dataset = dataset
        self.field = field
        self.reason = reason
        super().__init__(f"dataset {dataset}: {field}: {reason}")


class StateError(NodeError):
    """The node's local state cannot be used."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ExchangeError(NodeError):
    """The exchange answered a request with an error."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int | None,
        code: str | None,
        detail: str,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.detail = detail
        status_text = f" {status}" if status is not None else ""
        code_text = f" ({code})" if code else ""
        super().__init__(f"{method} {path}:{status_text}{code_text} {detail}")


class ExchangeUnavailable(ExchangeError):
    """The exchange was unreachable or kept failing through every retry."""

"""The ledger's errors: one base class, one subclass per way a chain call fails.

::

    LedgerError
    ├── ChainConnectionError       the node is unreachable, or transient retries ran out
    ├── ChainIdMismatchError       the node serves another chain than the deployment's
    ├── DeploymentError            deployment file missing or malformed, or no code
    ├── SignerError                key missing, malformed, unreadable or too exposed
    ├── TransactionRevertedError   a call or transaction reverted (decoded error)
    └── TransactionTimeoutError    a transaction was not mined (and confirmed) in time

Every error carries its parts as attributes and renders as one line. None ever
contains key material.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChainConnectionError",
    "ChainIdMismatchError",
    "DeploymentError",
    "LedgerError",
    "SignerError",
    "TransactionRevertedError",
    "TransactionTimeoutError",
]


class LedgerError(Exception):
    """Base class of every error raised by :mod:`ledger`."""


class ChainConnectionError(LedgerError):
    """The node at ``url`` could not be reached, or transient errors outlasted retries.

    Attributes
    ----------
    url
        The node's address (or the provider's description when it has none).
    reason
        The last transport error, in words.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the chain node at {url}: {reason}")
        self.url = url
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.reason))


class ChainIdMismatchError(LedgerError):
    """The node reports chain id ``actual``, not the one deployment ``network`` expects.

    Attributes
    ----------
    network
        The deployment's network name.
    expected
        The chain id recorded in the deployment.
    actual
        The chain id the node reports.
    """

    def __init__(self, network: str, expected: int, actual: int) -> None:
        super().__init__(
            f"deployment {network!r} is on chain id {expected}, "
            f"but the node reports chain id {actual}"
        )
        self.network = network
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.network, self.expected, self.actual))


class DeploymentError(LedgerError):
    """The deployment of ``network`` is unusable: file missing, malformed, or no code.

    Attributes
    ----------
    network
        The deployment's network name.
    path
        Where the deployment was read from (a path or another label), if known.
    reason
        What is wrong, naming the field or address concerned.
    """

    def __init__(self, network: str, path: str | None, reason: str) -> None:
        where = f" ({path})" if path else ""
        super().__init__(f"deployment {network!r}{where}: {reason}")
        self.network = network
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.network, self.path, self.reason))


class SignerError(LedgerError):
    """A signing key could not be loaded from ``source``.

    Attributes
    ----------
    source
        Where the key was looked for: an environment variable's name or a file path.
    reason
        What is wrong. Never contains the key itself.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"signing key from {source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.reason))


class TransactionRevertedError(LedgerError):
    """A call to ``contract`` reverted with ``error(**args)``.

    Attributes
    ----------
    contract
        The called contract's name (its address when unknown).
    error
        The custom error's name; ``"Error"`` for a reason string (``args["reason"]``),
        ``"Panic"`` for a compiler panic (``args["code"]``), or ``"unknown"`` when the
        revert data matches no known error (or there was none).
    args
        The error's arguments by name, as decoded from the revert data.
    tx_hash
        The reverted transaction's hash, or ``None`` when a simulation reverted.
    data
        The raw revert data.
    """

    def __init__(
        self,
        contract: str,
        error: str,
        args: dict[str, object],
        tx_hash: str | None,
        data: bytes,
    ) -> None:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in args.items())
        if error == "unknown":
            what = f"an unknown error (data 0x{data.hex()})" if data else "no reason"
        else:
            what = f"{error}({shown})"
        in_tx = f" in transaction {tx_hash}" if tx_hash else ""
        super().__init__(f"{contract} reverted with {what}{in_tx}")
        self.contract = contract
        self.error = error
        self._error_args = dict(args)
        self.tx_hash = tx_hash
        self.data = data

    # ``BaseException.args`` is the tuple of constructor arguments (here: the
    # message); on this error ``args`` is the decoded error arguments by name.
    @property  # type: ignore[override]
    def args(self) -> dict[str, object]:
        """The error's decoded arguments by name."""
        return self._error_args

    @args.setter
    def args(self, value: Any) -> None:
        if isinstance(value, dict):
            self._error_args = dict(value)
        else:
            BaseException.args.__set__(self, value)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.contract, self.error, self.args, self.tx_hash, self.data),
        )


class TransactionTimeoutError(LedgerError):
    """Transaction ``tx_hash`` was not mined and confirmed within ``waited_s`` seconds.

    Attributes
    ----------
    tx_hash
        The transaction's hash; it may still be mined later.
    waited_s
        How long the wait lasted, in seconds.
    """

    def __init__(self, tx_hash: str, waited_s: float) -> None:
        super().__init__(
            f"transaction {tx_hash} not mined and confirmed after {waited_s:.1f} s"
        )
        self.tx_hash = tx_hash
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.tx_hash, self.waited_s))


def _show(value: object) -> str:
    """One argument as it appears in a message: hex for bytes, plain for numbers."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x"):
        return value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)

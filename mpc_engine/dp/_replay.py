"""Deterministic replay: an identical question gets the identical stored answer.

Averaging many noisy answers to one question would cancel the noise, so the node
answers a repeated question from storage, at no privacy cost (DESIGN §5). A
question is identified by a ``ReleaseKey``: the SHA-256 of the canonical JSON of
the dataset version hash, the buyer and the computation's parameters. A *different*
question (any parameter differs) gets fresh noise and is charged.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from mpc_engine.dp._accountant import PrivacyAccountant
from mpc_engine.dp._loss import PrivacyLoss
from mpc_engine.dp.errors import InvalidParameter, ReleaseConflict, ReservationError

T = TypeVar("T")

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_DEPTH = 32


def _canonical(value: object, where: str, depth: int = 0) -> JSONValue:
    """Normalise ``value`` so equal questions serialise to equal bytes.

    Integral floats become integers (``1.0`` and ``1`` ask the same thing) and
    ``-0.0`` becomes ``0``; NaN, infinities and non-JSON types are refused.
    """
    if depth > _MAX_DEPTH:
        raise InvalidParameter(where, f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParameter(where, "must be finite (no NaN or infinity)")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidParameter(where, f"keys must be strings, not {k!r}")
            out[k] = _canonical(v, f"{where}.{k}", depth + 1)
        return out
    raise InvalidParameter(
        where,
        f"must be JSON data (null, bool, number, string, list, object), "
        f"not {type(value).__name__}",
    )


@dataclass(frozen=True)
class ReleaseKey:
    """The identity of a question: a SHA-256 digest, lower-case hex."""

    digest: str

    def __post_init__(self) -> None:
        if not isinstance(self.digest, str) or not _HEX64.match(self.digest):
            raise InvalidParameter("digest", "must be 64 lower-case hex characters")

    @classmethod
    def for_question(
        cls,
        *,
        dataset_version: str,
        buyer: str,
        params: Mapping[str, object],
    ) -> ReleaseKey:
        """The key of ``buyer`` asking ``params`` of one version of a dataset.

        Parameters
        ----------
        dataset_version
            The dataset version hash (a new version is a new question).
        buyer
            The buyer's stable identifier.
        params
            The computation's validated parameters as JSON data, including its
            kind (e.g. ``{"kind": "aggregate", **request.release_params()}``).

        Returns
        -------
        ReleaseKey
            ``sha256(canonical JSON of {"buyer", "dataset_version", "params"})``,
            the JSON with sorted keys, no whitespace, UTF-8.
        """
        for name, text in (("dataset_version", dataset_version), ("buyer", buyer)):
            if not isinstance(text, str) or not text:
                raise InvalidParameter(name, "must be a non-empty string")
        if not isinstance(params, Mapping):
            raise InvalidParameter("params", "must be a mapping")
        document = {
            "buyer": buyer,
            "dataset_version": dataset_version,
            "params": _canonical(params, "params"),
        }
        encoded = json.dumps(
            document,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode()
        return cls(hashlib.sha256(encoded).hexdigest())

    def __str__(self) -> str:
        return self.digest


class ReleaseCache(Generic[T]):
    """Stored answers by ``ReleaseKey``; thread-safe, one computation per key.

    Parameters
    ----------
    entries
        Answers restored from the node's storage (digest → answer).
    """

    def __init__(self, entries: Mapping[str, T] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, T] = {}
        self._key_locks: dict[str, tuple[threading.Lock, int]] = {}
        for digest, value in (entries or {}).items():
            self._entries[ReleaseKey(digest).digest] = value

    def get(self, key: ReleaseKey) -> T | None:
        """The stored answer for ``key``, or ``None``."""
        with self._lock:
            return self._entries.get(key.digest)

    def put(self, key: ReleaseKey, value: T) -> None:
        """Store ``value`` for ``key``; storing the same value again is a no-op.

        Raises
        ------
        ReleaseConflict
            If a different answer is stored for ``key``.
        """
        with self._lock:
            if key.digest in self._entries and self._entries[key.digest] != value:
                raise ReleaseConflict(key.digest)
            self._entries[key.digest] = value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return isinstance(key, ReleaseKey) and key.digest in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def snapshot(self) -> dict[str, T]:
        """A copy of all stored answers (digest → answer) for persistence."""
        with self._lock:
            return dict(self._entries)

    @contextmanager
    def key_lock(self, key: ReleaseKey) -> Iterator[None]:
        """Hold the lock of one key: concurrent identical questions run once."""
        with self._lock:
            lock, users = self._key_locks.get(key.digest, (threading.Lock(), 0))
            self._key_locks[key.digest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._key_locks[key.digest]
                if users == 1:
                    del self._key_locks[key.digest]
                else:
                    self._key_locks[key.digest] = (lock, users - 1)


@dataclass(frozen=True)
class Replay(Generic[T]):
    """An answer, what it cost now, and whether it was replayed from storage."""

    value: T
    charged: PrivacyLoss
    replayed: bool


def replay_or_release(
    *,
    cache: ReleaseCache[T],
    key: ReleaseKey,
    accountant: PrivacyAccountant,
    buyer: str,
    planned: PrivacyLoss,
    produce: Callable[[], tuple[T, PrivacyLoss]],
) -> Replay[T]:
    """Answer from storage, or reserve, compute, commit and store a fresh answer.

    Parameters
    ----------
    cache
        The stored answers.
    key
        The question's key (it already names the buyer).
    accountant
        The dataset's accountant.
    buyer
        The buyer to charge.
    planned
        The most the computation may spend (reserved before it runs).
    produce
        Runs the computation; returns the answer and its actual loss (at most
        ``planned``).

    Returns
    -------
    Replay
        The answer; ``charged`` is zero and ``replayed`` true for a stored one.

    Raises
    ------
    BudgetExhausted
        If ``planned`` does not fit; nothing runs then.
    ReservationError
        If ``produce`` reports more than ``planned``; nothing is stored or spent.
    """
    with cache.key_lock(key):
        stored = cache.get(key)
        if stored is not None:
            return Replay(stored, PrivacyLoss.zero(), True)
        reservation = accountant.reserve(buyer, planned)
        try:
            value, actual = produce()
            if not actual.within(planned):
                raise ReservationError(
                    reservation.id,
                    f"the computation spent ε={actual.epsilon:g}, δ={actual.delta:g}, "
                    f"more than planned ε={planned.epsilon:g}, δ={planned.delta:g}",
                )
        except BaseException:
            reservation.release()
            raise
        reservation.commit(actual)
        cache.put(key, value)
        return Replay(value, actual, False)

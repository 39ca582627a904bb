"""The node's local state: SQLite (journal, budgets, replay cache) and the Gram cache.

One SQLite file, ``state.db`` in the state directory, WAL mode. Every change that
spans several rows — a job's result with the budget it spent, the answer stored
for replay, the query and row counts — is one transaction, so after a crash the
state is either before the job or after it, never half-way.

Tables::

    meta          key → value (node_id)
    jobs          job_id, dataset_id, buyer_id, kind, state, spec, result, times
                  state: started → finished → reported
    job_blobs     (job_id, name) → sha256, bytes; kept until the exchange has
                  acknowledged the result, then deleted
    accountants   dataset_id → PrivacyAccountant.to_json()
    releases      ReleaseKey digest → the released answer (replay at no cost)
    usage         (dataset_id, buyer_id) → queries, inference_rows
    gram_charges  (dataset_id, buyer_id, release_id): the buyer (``*``: the
                  dataset's total, once) paid for that DP
                  Gram release; later evaluations on it are post-processing
    policies      dataset_id → the pinned policy (hash, canonical JSON)
    versions      (dataset_id, content_hash) → when the node first saw it

The Gram cache (:class:`GramStore`) is a directory of ``.npz`` files, one per DP
release of a Gram matrix: (content hash, sorted features, label, ε, δ) → the
*perturbed* moments, never the exact ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from mpc_engine.dp import PrivacyAccountant, PrivacyLoss
from mpc_engine.dp.errors import AccountantStateError
from mpc_engine.he import Gram, GramBounds
from mpc_engine.node.errors import StateError
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import JobResult, JobSpec, canonical_json, sha256_hex

__all__ = [
    "Effects",
    "GramRelease",
    "GramStore",
    "HeldJob",
    "JournalEntry",
    "JournalState",
    "LocalDecision",
    "NodeState",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('started', 'finished', 'reported')),
    spec TEXT NOT NULL,
    result TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reported_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS job_blobs (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS accountants (
    dataset_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    digest TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    dataset_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    queries INTEGER NOT NULL DEFAULT 0,
    inference_rows INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset_id, buyer_id)
);
CREATE TABLE IF NOT EXISTS gram_charges (
    dataset_id TEXT NOT NULL,
    buyer_id TEXT NOT NULL,
    release_id TEXT NOT NULL,
    charged_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, buyer_id, release_id)
);
CREATE TABLE IF NOT EXISTS policies (
    dataset_id TEXT PRIMARY KEY,
    policy_hash TEXT NOT NULL,
    policy TEXT NOT NULL,
    pinned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    job_id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    deadline TEXT NOT NULL,
    held_at TEXT NOT NULL,
    decision TEXT CHECK (decision IN ('approved', 'denied')),
    decided_by TEXT,
    note TEXT,
    decided_at TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    dataset_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, content_hash)
);
"""


_DATASET_SCOPE = "*"
"""The ``gram_charges.buyer_id`` of a release the dataset's total has counted."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JournalState(StrEnum):
    """Where a job is in the node's journal."""

    STARTED = "started"
    """The node began executing it (it will never execute it again)."""
    FINISHED = "finished"
    """The result (and its blobs) are stored; not yet acknowledged."""
    REPORTED = "reported"
    """The exchange acknowledged the result; blobs were dropped."""


@dataclass(frozen=True)
class JournalEntry:
    """One job in the journal."""

    job_id: uuid.UUID
    state: JournalState
    spec: JobSpec
    result: JobResult | None


@dataclass
class Effects:
    """What a successful job changes besides its journal row (one transaction).

    Attributes
    ----------
    dataset_id, buyer_id
        Whose counters change.
    queries, inference_rows
        Increments of the buyer's counters.
    accountant
        The dataset accountant's new state (``to_json``), if it changed.
    release
        ``(digest, answer)`` to store for replay.
    gram_charge
        A Gram release id the buyer has now paid for.
    gram_dataset_charge
        A Gram release id the dataset's total now counts (once, whoever paid).
    """

    dataset_id: str
    buyer_id: str
    queries: int = 0
    inference_rows: int = 0
    accountant: str | None = None
    release: tuple[str, dict[str, Any]] | None = None
    gram_charge: str | None = None
    gram_dataset_charge: str | None = None


@dataclass(frozen=True)
class Usage:
    """A buyer's (or a dataset's total) counters."""

    queries: int = 0
    inference_rows: int = 0


@dataclass(frozen=True)
class LocalDecision:
    """A human's decision at the node on a job held for local approval."""

    approved: bool
    decided_by: str
    note: str | None
    decided_at: str


@dataclass(frozen=True)
class HeldJob:
    """A job held at the node for local approval."""

    spec: JobSpec
    held_at: str
    decision: LocalDecision | None


class NodeState:
    """The node's SQLite state; thread-safe (one connection behind a lock).

    Parameters
    ----------
    path
        The database file (created with its tables if absent).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(
                f"{self.path}: cannot open the node state ({exc})"
            ) from None
        self._lock = threading.RLock()
        self._accountants: dict[str, tuple[str, PrivacyAccountant]] = {}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[object] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._conn.execute(sql, tuple(args)).fetchone()
        return None if row is None else tuple(row)

    # -- meta --------------------------------------------------------------------

    @property
    def node_id(self) -> uuid.UUID | None:
        """The node's id at the exchange, once registered."""
        row = self._one("SELECT value FROM meta WHERE key = 'node_id'")
        return None if row is None else uuid.UUID(row[0])

    def set_node_id(self, node_id: uuid.UUID) -> None:
        """Record the node's id (refused if a different one is recorded)."""
        with self._transaction() as tx:
            row = tx.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()
            if row is not None and row[0] != str(node_id):
                raise StateError(
                    f"the state records node {row[0]}; refusing to replace it with "
                    f"{node_id}"
                )
            tx.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('node_id', ?)",
                (str(node_id),),
            )

    # -- journal -----------------------------------------------------------------

    def _entry(self, row: tuple[Any, ...]) -> JournalEntry:
        job_id, state, spec, result = row
        return JournalEntry(
            job_id=uuid.UUID(job_id),
            state=JournalState(state),
            spec=JobSpec.model_validate_json(spec),
            result=None if result is None else JobResult.model_validate_json(result),
        )

    def job(self, job_id: uuid.UUID) -> JournalEntry | None:
        """The journal entry of ``job_id``, if any."""
        row = self._one(
            "SELECT job_id, state, spec, result FROM jobs WHERE job_id = ?",
            (str(job_id),),
        )
        return None if row is None else self._entry(row)

    def jobs_in(self, state: JournalState) -> list[JournalEntry]:
        """Entries in ``state``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id, state, spec, result FROM jobs WHERE state = ? "
                "ORDER BY started_at",
                (state.value,),
            ).fetchall()
        return [self._entry(tuple(r)) for r in rows]

    def start_job(self, spec: JobSpec) -> bool:
        """Journal ``spec`` as started; ``False`` if the journal already has it."""
        with self._transaction() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO jobs (job_id, dataset_id, buyer_id, kind, "
                "state, spec, started_at) VALUES (?, ?, ?, ?, 'started', ?, ?)",
                (
                    str(spec.job_id),
                    str(spec.dataset_id),
                    str(spec.buyer_id),
                    spec.kind.value,
                    spec.model_dump_json(),
                    _now(),
                ),
            )
            return cur.rowcount == 1

    def finish_job(
        self,
        job_id: uuid.UUID,
        result: JobResult,
        blobs: Mapping[str, bytes],
        effects: Effects | None = None,
    ) -> None:
        """Store a job's result, its blobs and its effects in one transaction.

        Raises
        ------
        StateError
            The job is not journaled as started.
        """
        with self._transaction() as tx:
            cur = tx.execute(
                "UPDATE jobs SET state = 'finished', result = ?, finished_at = ? "
                "WHERE job_id = ? AND state = 'started'",
                (result.model_dump_json(), _now(), str(job_id)),
            )
            if cur.rowcount != 1:
                raise StateError(f"job {job_id} is not journaled as started")
            for name, data in blobs.items():
                tx.execute(
                    "INSERT INTO job_blobs (job_id, name, sha256, data) "
                    "VALUES (?, ?, ?, ?)",
                    (str(job_id), name, sha256_hex(data), sqlite3.Binary(data)),
                )
            if effects is not None:
                self._apply(tx, effects)

    def _apply(self, tx: sqlite3.Connection, fx: Effects) -> None:
        now = _now()
        if fx.queries or fx.inference_rows:
            tx.execute(
                "INSERT INTO usage (dataset_id, buyer_id, queries, inference_rows) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (dataset_id, buyer_id) DO UPDATE SET "
                "queries = queries + excluded.queries, "
                "inference_rows = inference_rows + excluded.inference_rows",
                (fx.dataset_id, fx.buyer_id, fx.queries, fx.inference_rows),
            )
        if fx.accountant is not None:
            tx.execute(
                "INSERT INTO accountants (dataset_id, state, updated_at) VALUES "
                "(?, ?, ?) ON CONFLICT (dataset_id) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at",
                (fx.dataset_id, fx.accountant, now),
            )
        if fx.release is not None:
            digest, value = fx.release
            tx.execute(
                "INSERT OR IGNORE INTO releases (digest, dataset_id, value, "
                "created_at) VALUES (?, ?, ?, ?)",
                (digest, fx.dataset_id, canonical_json(value).decode(), now),
            )
        for buyer, release_id in (
            (fx.buyer_id, fx.gram_charge),
            (_DATASET_SCOPE, fx.gram_dataset_charge),
        ):
            if release_id is not None:
                tx.execute(
                    "INSERT OR IGNORE INTO gram_charges (dataset_id, buyer_id, "
                    "release_id, charged_at) VALUES (?, ?, ?, ?)",
                    (fx.dataset_id, buyer, release_id, now),
                )

    def blobs(self, job_id: uuid.UUID) -> dict[str, bytes]:
        """The result blobs stored for ``job_id`` (empty once reported)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, data FROM job_blobs WHERE job_id = ? ORDER BY name",
                (str(job_id),),
            ).fetchall()
        return {name: bytes(data) for name, data in rows}

    def mark_reported(self, job_id: uuid.UUID) -> None:
        """The exchange acknowledged the result: drop the blobs, mark reported."""
        with self._transaction() as tx:
            cur = tx.execute(
                "UPDATE jobs SET state = 'reported', reported_at = ? "
                "WHERE job_id = ? AND state IN ('finished', 'reported')",
                (_now(), str(job_id)),
            )
            if cur.rowcount != 1:
                raise StateError(f"job {job_id} has no stored result to mark reported")
            tx.execute("DELETE FROM job_blobs WHERE job_id = ?", (str(job_id),))

    # -- budgets and counters ---------------------------------------------------------

    def accountant(
        self, dataset_id: uuid.UUID, policy: RightsPolicy
    ) -> PrivacyAccountant:
        """The dataset's accountant, with the budgets of ``policy``.

        Loaded from the database the first time (spending carries over a policy
        change); the same object is returned while the policy stays the same.
        """
        key = str(dataset_id)
        policy_hash = policy.policy_hash()
        with self._lock:
            cached = self._accountants.get(key)
            if cached is not None and cached[0] == policy_hash:
                return cached[1]
            if cached is not None:
                text: str | None = cached[1].to_json()
            else:
                row = self._conn.execute(
                    "SELECT state FROM accountants WHERE dataset_id = ?", (key,)
                ).fetchone()
                text = None if row is None else row[0]
            try:
                accountant = (
                    PrivacyAccountant.from_policy(policy)
                    if text is None
                    else PrivacyAccountant.from_json(text, policy=policy)
                )
            except AccountantStateError as exc:
                raise StateError(
                    f"the stored privacy ledger of dataset {key} is invalid ({exc})"
                ) from None
            self._accountants[key] = (policy_hash, accountant)
            return accountant

    def usage(self, dataset_id: uuid.UUID, buyer_id: uuid.UUID | None) -> Usage:
        """A buyer's counters on a dataset, or (``buyer_id`` ``None``) the totals."""
        if buyer_id is None:
            row = self._one(
                "SELECT COALESCE(SUM(queries), 0), COALESCE(SUM(inference_rows), 0) "
                "FROM usage WHERE dataset_id = ?",
                (str(dataset_id),),
            )
        else:
            row = self._one(
                "SELECT queries, inference_rows FROM usage "
                "WHERE dataset_id = ? AND buyer_id = ?",
                (str(dataset_id), str(buyer_id)),
            )
        return Usage() if row is None else Usage(int(row[0]), int(row[1]))

    def release(self, digest: str) -> dict[str, Any] | None:
        """The answer stored for a release key, if any."""
        row = self._one("SELECT value FROM releases WHERE digest = ?", (digest,))
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def gram_charged(
        self, dataset_id: uuid.UUID, buyer_id: uuid.UUID | None, release_id: str
    ) -> bool:
        """Whether the buyer (``None``: the dataset's total) paid for that release."""
        who = _DATASET_SCOPE if buyer_id is None else str(buyer_id)
        return (
            self._one(
                "SELECT 1 FROM gram_charges WHERE dataset_id = ? AND buyer_id = ? "
                "AND release_id = ?",
                (str(dataset_id), who, release_id),
            )
            is not None
        )

    # -- policies and versions ---------------------------------------------------------

    # -- local approval ----------------------------------------------------------

    def hold(self, spec: JobSpec) -> bool:
        """Hold ``spec`` for a local decision; ``False`` if it was held before."""
        with self._transaction() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO approvals (job_id, dataset_id, spec, deadline, "
                "held_at) VALUES (?, ?, ?, ?, ?)",
                (
                    str(spec.job_id),
                    str(spec.dataset_id),
                    spec.model_dump_json(),
                    spec.deadline.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    _now(),
                ),
            )
            return cur.rowcount == 1

    def decide(
        self, job_id: uuid.UUID, *, approved: bool, by: str, note: str | None
    ) -> LocalDecision:
        """Record the decision on a held job (the same decision again is a no-op).

        Raises
        ------
        StateError
            The job is not held here, or was decided the other way already.
        """
        wanted = "approved" if approved else "denied"
        with self._transaction() as tx:
            row = tx.execute(
                "SELECT decision FROM approvals WHERE job_id = ?", (str(job_id),)
            ).fetchone()
            if row is None:
                raise StateError(f"job {job_id} is not held for approval at this node")
            if row[0] is not None and row[0] != wanted:
                raise StateError(f"job {job_id} was {row[0]} already")
            if row[0] is None:
                tx.execute(
                    "UPDATE approvals SET decision = ?, decided_by = ?, note = ?, "
                    "decided_at = ? WHERE job_id = ?",
                    (wanted, by, note, _now(), str(job_id)),
                )
        decision = self.decision(job_id)
        assert decision is not None  # noqa: S101 - just written
        return decision

    def decision(self, job_id: uuid.UUID) -> LocalDecision | None:
        """The local decision on ``job_id``, if one was made."""
        row = self._one(
            "SELECT decision, decided_by, note, decided_at FROM approvals "
            "WHERE job_id = ? AND decision IS NOT NULL",
            (str(job_id),),
        )
        if row is None:
            return None
        return LocalDecision(row[0] == "approved", row[1], row[2], row[3])

    def held(self, *, undecided_only: bool = False) -> list[HeldJob]:
        """Held jobs not yet in the journal, oldest first."""
        sql = (
            "SELECT a.spec, a.held_at, a.decision, a.decided_by, a.note, "
            "a.decided_at FROM approvals a LEFT JOIN jobs j ON j.job_id = a.job_id "
            "WHERE j.job_id IS NULL"
        )
        if undecided_only:
            sql += " AND a.decision IS NULL"
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY a.held_at").fetchall()
        return [
            HeldJob(
                spec=JobSpec.model_validate_json(r[0]),
                held_at=r[1],
                decision=None
                if r[2] is None
                else LocalDecision(r[2] == "approved", r[3], r[4], r[5]),
            )
            for r in rows
        ]

    def pin_policy(self, dataset_id: uuid.UUID, policy: RightsPolicy) -> bool:
        """Pin ``policy`` as the one the node enforces; ``True`` if it changed."""
        policy_hash = policy.policy_hash()
        with self._transaction() as tx:
            row = tx.execute(
                "SELECT policy_hash FROM policies WHERE dataset_id = ?",
                (str(dataset_id),),
            ).fetchone()
            if row is not None and row[0] == policy_hash:
                return False
            tx.execute(
                "INSERT INTO policies (dataset_id, policy_hash, policy, pinned_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (dataset_id) DO UPDATE SET "
                "policy_hash = excluded.policy_hash, policy = excluded.policy, "
                "pinned_at = excluded.pinned_at",
                (str(dataset_id), policy_hash, policy.canonical_json(), _now()),
            )
            return True

    def pinned_policy(self, dataset_id: uuid.UUID) -> RightsPolicy | None:
        """The policy last pinned for the dataset."""
        row = self._one(
            "SELECT policy FROM policies WHERE dataset_id = ?", (str(dataset_id),)
        )
        return None if row is None else RightsPolicy.model_validate_json(row[0])

    def first_seen(
        self, dataset_id: uuid.UUID, content_hash: str, now: datetime
    ) -> datetime:
        """When the node first saw this version (recorded now if never)."""
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO versions (dataset_id, content_hash, "
                "first_seen_at) VALUES (?, ?, ?)",
                (str(dataset_id), content_hash, stamp),
            )
            row = tx.execute(
                "SELECT first_seen_at FROM versions WHERE dataset_id = ? AND "
                "content_hash = ?",
                (str(dataset_id), content_hash),
            ).fetchone()
        return datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# -- the Gram cache ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GramRelease:
    """One DP release of a Gram matrix (columns in sorted feature order).

    ``release_id`` is the perturbed Gram's digest: a regenerated release (say, the
    cache file was removed) is a new release and is charged again.
    """

    gram: Gram
    features: tuple[str, ...]
    label: str
    loss: PrivacyLoss
    mechanism: str
    release_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "release_id", self.gram.digest())


class GramStore:
    """DP Gram releases on disk, one ``.npz`` per (version, features, label, ε, δ).

    Parameters
    ----------
    directory
        Where the files live (created if absent).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._memo: dict[str, GramRelease] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(
        content_hash: str,
        features: Sequence[str],
        label: str,
        epsilon: float,
        delta: float,
    ) -> str:
        """The cache key: SHA-256 of the canonical JSON of the five parts."""
        return hashlib.sha256(
            canonical_json(
                {
                    "content_hash": content_hash,
                    "features": sorted(features),
                    "label": label,
                    "epsilon": repr(float(epsilon)),
                    "delta": repr(float(delta)),
                }
            )
        ).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def get(
        self,
        content_hash: str,
        features: Sequence[str],
        label: str,
        epsilon: float,
        delta: float,
    ) -> GramRelease | None:
        """The stored release, if any (from memory, else from disk)."""
        key = self.key(content_hash, features, label, epsilon, delta)
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                return hit
            path = self._path(key)
            if not path.exists():
                return None
            release = _read_release(path)
            self._memo[key] = release
            return release

    def put(
        self, content_hash: str, epsilon: float, delta: float, release: GramRelease
    ) -> None:
        """Store a release (atomically: a temporary file renamed into place)."""
        if list(release.features) != sorted(release.features):
            raise StateError("a Gram release is stored with its features sorted")
        key = self.key(content_hash, release.features, release.label, epsilon, delta)
        gram = release.gram
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(
                        fh,
                        moments=np.asarray(gram.moments),
                        n_rows=np.asarray(gram.n_rows, dtype=np.int64),
                        feature_bounds=np.asarray(gram.bounds.features),
                        label_bounds=np.asarray(gram.bounds.label),
                        features=np.asarray(release.features, dtype=str),
                        label=np.asarray(release.label, dtype=str),
                        loss=np.asarray([release.loss.epsilon, release.loss.delta]),
                        mechanism=np.asarray(release.mechanism, dtype=str),
                    )
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._path(key))
            finally:
                Path(tmp).unlink(missing_ok=True)
            self._memo[key] = release


def _read_release(path: Path) -> GramRelease:
    try:
        with np.load(path, allow_pickle=False) as data:
            moments = np.array(data["moments"], dtype=np.float64)
            n_rows = int(data["n_rows"])
            feature_bounds = tuple(
                (float(lo), float(hi)) for lo, hi in data["feature_bounds"].tolist()
            )
            lo, hi = (float(v) for v in data["label_bounds"].tolist())
            features = tuple(str(f) for f in data["features"].tolist())
            label = str(data["label"])
            eps, dlt = (float(v) for v in data["loss"].tolist())
            mechanism = str(data["mechanism"])
    except (OSError, KeyError, ValueError) as exc:
        raise StateError(f"{path}: not a Gram release ({exc})") from None
    moments.setflags(write=False)
    gram = Gram(
        moments, n_rows, GramBounds(feature_bounds, (lo, hi)), is_perturbed=True
    )
    return GramRelease(gram, features, label, PrivacyLoss(eps, dlt), mechanism)

"""The node service: start-up, restart recovery, the poll loop, graceful stop.

Start-up (:meth:`NodeService.start`):

1. the Ed25519 identity ``node.key`` in the state directory (created, mode 0600,
   on first start) and the SQLite state;
2. registration (``POST /nodes``) if the state has no node id — recovering the
   id by public key if an earlier registration's answer was lost — else a check
   that the exchange still knows this node under this key;
3. per dataset: the listing (schema, policy, whose hash is checked), the source
   loaded against the schema, the version with its content hash created (or made
   live) at the exchange, the policy pinned, the signed quality attestation
   posted;
4. recovery from the journal, so that **no job is ever executed twice**:

   ==================================  ============================================
   journal / exchange                  action
   ==================================  ============================================
   journal *finished*, not reported    upload its stored blobs, re-post the stored
                                       result
   journal *started*, not finished     post ``failed`` ``node_restarted`` (the job
                                       is never re-run)
   exchange lists it dispatched, no    start it and run it
   journal entry
   exchange lists it running, no       the node crashed between ``start`` and the
   journal entry                       journal: it never ran; run it
   journal *reported*, exchange still  re-post the stored result (idempotent)
   lists it
   ==================================  ============================================

The loop (:meth:`NodeService.serve`) re-reads the listings' policies every
minute (and whenever a job names another policy), every 10 seconds checks the
CSV/Parquet files for changes and publishes a changed one as the new live version
with its attestation (:meth:`NodeService.reload_sources`; ``SIGHUP`` re-reads
every source, SQL tables included), every 30 seconds runs the jobs
the exchange lists as dispatched to this node that the journal does not know
(:meth:`NodeService.resume_orphans`: a claim whose answer never arrived), long-polls
for the next job, starts it,
executes it (:func:`~mpc_engine.node.executor.execute`: journaled before anything
is computed), uploads the result blobs, posts the result and marks it reported. A
result the exchange could not take (unreachable) stays *finished* and is re-sent
on the next pass; one it refused outright (a 4xx: the job ended otherwise, or the
result does not fit it) is logged and marked reported, since re-sending the same
bytes cannot change the answer. Stop with the event passed to ``serve``; the current job
finishes first.

Logs name jobs, datasets, kinds and reason codes — never row values, ciphertext
bytes or keys.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from mpc_engine.he import PublicContext
from mpc_engine.node.attestation import build_attestation
from mpc_engine.node.client import ExchangeClient
from mpc_engine.node.config import DatasetConfig, NodeConfig, SqlSource
from mpc_engine.node.errors import (
    ExchangeError,
    ExchangeUnavailable,
    NodeError,
    StateError,
)
from mpc_engine.node.executor import (
    ContextCache,
    Execution,
    LocalApproval,
    NodeIdentity,
    ServedDataset,
    execute,
)
from mpc_engine.node.listing import DatasetListing
from mpc_engine.node.sources import LoadedDataset, load_dataset
from mpc_engine.node.state import GramStore, JournalState, NodeState
from mpc_engine.protocol import JobSpec, JobState, NodeKey, utc_now
from mpc_engine.protocol.errors import InvalidKeyFile

__all__ = ["NodeService"]

logger = logging.getLogger("veilx.node")

KEY_FILE = "node.key"
STATE_FILE = "state.db"
GRAM_DIR = "grams"
POLICY_REFRESH_SECONDS = 60.0
"""How often the loop re-reads the listings' policies (a job under another
policy also triggers a re-read)."""
SOURCE_CHECK_SECONDS = 10.0
"""How often the loop looks for changed CSV/Parquet files (a ``stat``; SQL sources
are re-read on :meth:`NodeService.request_reload`, e.g. ``SIGHUP``)."""
ORPHAN_CHECK_SECONDS = 30.0
"""How often the loop looks for jobs dispatched to the node that it never received."""


class _ExchangeInputs:
    """Job inputs read from the exchange (contexts cached by id)."""

    def __init__(self, client: ExchangeClient, contexts: ContextCache) -> None:
        self._client = client
        self._contexts = contexts

    def blob(self, sha256: str) -> bytes:
        return self._client.get_blob(sha256)

    def context(self, context_id: str) -> PublicContext:
        return self._contexts(context_id)


class NodeService:
    """The provider's data node.

    Parameters
    ----------
    config
        The validated node config.
    client
        An exchange client (default: one built from the config).
    transport
        An httpx transport for the default client (tests: ``httpx.MockTransport``).
    clock
        The current time (UTC).
    sleep
        How the client waits between retries.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        client: ExchangeClient | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._client = client or ExchangeClient(
            config.exchange_url,
            config.resolve_api_key(),
            transport=transport,
            sleep=sleep,
        )
        self._clock = clock
        self._state: NodeState | None = None
        self._grams: GramStore | None = None
        self._identity: NodeIdentity | None = None
        self.datasets: dict[uuid.UUID, ServedDataset] = {}
        self._refreshed = time.monotonic()
        self._sources_checked = time.monotonic()
        self._reload_all = threading.Event()
        self._source_stats: dict[uuid.UUID, tuple[int, int] | None] = {}
        self._orphans_checked = time.monotonic()
        self._inputs = _ExchangeInputs(
            self._client, ContextCache(self._client.get_context)
        )

    # -- accessors ---------------------------------------------------------------------

    @property
    def state(self) -> NodeState:
        """The node's state (after :meth:`start`)."""
        if self._state is None:
            raise StateError("the node has not started")
        return self._state

    @property
    def identity(self) -> NodeIdentity:
        """The node's id and key (after :meth:`start`)."""
        if self._identity is None:
            raise StateError("the node has not started")
        return self._identity

    @property
    def node_id(self) -> uuid.UUID:
        """The node's id at the exchange (after :meth:`start`)."""
        return self.identity.node_id

    # -- start-up ----------------------------------------------------------------------

    def start(self) -> None:
        """Identity, registration, datasets, attestations, recovery (see module)."""
        if not self.config.datasets:
            raise NodeError("datasets: none configured; add a [[datasets]] block")
        state_dir = self.config.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = load_key(state_dir)
        self._state = NodeState(state_dir / STATE_FILE)
        self._grams = GramStore(state_dir / GRAM_DIR)
        node_id = self._register(key)
        self._identity = NodeIdentity(node_id, key)
        logger.info("node %s (%s) starting", node_id, self.config.name)
        for entry in self.config.datasets:
            self.datasets[entry.dataset_id] = self._publish(entry)
        self.recover()

    def _register(self, key: NodeKey) -> uuid.UUID:
        state = self.state
        known = state.node_id
        if known is not None:
            info = self._client.get_node(known)
            if info.public_key != key.public_key_hex:
                raise StateError(
                    f"the exchange has node {known} under another public key; the "
                    "state directory does not belong to this node"
                )
            return known
        try:
            info = self._client.register_node(self.config.name, key.public_key_hex)
        except ExchangeError as exc:
            if exc.status != 409:
                raise
            # Registered before, but the answer was lost: find it by its key.
            matches = [
                n
                for n in self._client.list_nodes()
                if n.public_key == key.public_key_hex
            ]
            if not matches:
                raise
            info = matches[0]
        state.set_node_id(info.id)
        logger.info("registered as node %s", info.id)
        return info.id

    def _listing(self, dataset_id: uuid.UUID) -> DatasetListing:
        listing = self._client.get_dataset(dataset_id)
        if listing.policy.policy_hash() != listing.policy_hash:
            raise NodeError(
                f"dataset {dataset_id}: the listing's policy_hash does not match its "
                "policy; refusing to enforce it"
            )
        return listing

    def _publish(
        self, entry: DatasetConfig, current: ServedDataset | None = None
    ) -> ServedDataset:
        """Load one dataset, make its version live, pin its policy, attest it.

        With ``current`` (a reload), the same content returns ``current`` as is.
        """
        stat_before = _source_stat(entry)
        listing = self._listing(entry.dataset_id)
        pinned = entry.policy_sha256
        if pinned is not None and listing.policy_hash != pinned:
            raise NodeError(
                f"dataset {entry.dataset_id}: the exchange lists policy "
                f"{listing.policy_hash[:12]}… but the node config pins "
                f"{pinned[:12]}… (policy_sha256); refusing to serve it until they "
                "match"
            )
        loaded = load_dataset(entry, listing.columns)
        # The stat taken before reading: a write during the read shows as a change
        # next time, so the newer content is loaded then.
        self._source_stats[entry.dataset_id] = stat_before
        if current is not None and loaded.content_hash == current.data.content_hash:
            return current
        self._ensure_version(loaded)
        self.state.pin_policy(entry.dataset_id, listing.policy)
        served = ServedDataset(
            data=loaded,
            policy=listing.policy,
            config=entry,
            models={m.name: m for m in self.config.models_of(entry.dataset_id)},
        )
        modified = loaded.modified_at or self.state.first_seen(
            entry.dataset_id, loaded.content_hash, self._clock()
        )
        signed = build_attestation(
            loaded,
            node_id=self.node_id,
            key=self.identity.key,
            models=list(served.models.values()),
            source_modified_at=modified,
            computed_at=self._clock(),
        )
        self._client.post_attestation(self.node_id, signed)
        logger.info(
            "dataset %s: serving version %s… (%d rows), attested",
            entry.dataset_id,
            loaded.content_hash[:12],
            loaded.row_count,
        )
        return served

    def _ensure_version(self, loaded: LoadedDataset) -> None:
        versions = self._client.list_versions(loaded.dataset_id)
        for version in versions:
            if version.content_hash == loaded.content_hash:
                if not version.is_live:
                    self._client.set_live_version(loaded.dataset_id, version.id)
                    logger.info(
                        "dataset %s: version %s made live",
                        loaded.dataset_id,
                        version.id,
                    )
                return
        created = self._client.create_version(
            loaded.dataset_id,
            content_hash=loaded.content_hash,
            row_count=loaded.row_count,
            byte_size=loaded.byte_size,
            note=f"published by node {self.config.name}",
            make_live=True,
        )
        logger.info("dataset %s: version %s created", loaded.dataset_id, created.id)

    # -- recovery ----------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a previous run left (see the module docstring's table)."""
        state = self.state
        for entry in state.jobs_in(JournalState.STARTED):
            logger.warning("job %s was interrupted by a restart", entry.job_id)
            self._report(entry.spec.job_id, self._execute(entry.spec))
        self.flush()
        listed = self._client.list_jobs(
            self.node_id, [JobState.DISPATCHED.value, JobState.RUNNING.value]
        )
        for spec in listed:
            known = state.job(spec.job_id)
            if known is None:
                self._run(spec, started=spec.state is JobState.RUNNING)
            elif known.state is JournalState.REPORTED and known.result is not None:
                logger.info("job %s: re-posting its stored result", spec.job_id)
                self._report(
                    spec.job_id, Execution(known.result, state.blobs(spec.job_id))
                )
        self._orphans_checked = time.monotonic()

    def resume_orphans(self) -> None:
        """Run the jobs the exchange lists as this node's that the journal lacks.

        A claim can be made without its answer reaching this process: the long
        poll of a crashed predecessor, still waiting at the exchange, takes the
        next job for the node; a dropped connection loses one. The job then sits
        ``dispatched`` to this node, which otherwise learns of it only at its next
        restart (:meth:`recover`). The journal decides as always: a job it holds
        is never run again.
        """
        listed = self._client.list_jobs(
            self.node_id, [JobState.DISPATCHED.value, JobState.RUNNING.value]
        )
        for spec in listed:
            if self.state.job(spec.job_id) is None:
                logger.info(
                    "job %s was dispatched here but never received", spec.job_id
                )
                self._run(spec, started=spec.state is JobState.RUNNING)
        self._orphans_checked = time.monotonic()

    def flush(self) -> None:
        """Re-send every stored result the exchange has not acknowledged."""
        state = self.state
        for entry in state.jobs_in(JournalState.FINISHED):
            if entry.result is None:  # pragma: no cover - finished rows have one
                continue
            self._report(
                entry.job_id, Execution(entry.result, state.blobs(entry.job_id))
            )

    # -- one job -----------------------------------------------------------------------

    def refresh_policy(self, dataset_id: uuid.UUID) -> ServedDataset | None:
        """Re-read a dataset's listing and enforce its current policy from now on.

        Spending carries over a policy change (the accountant takes the new
        budgets). On an exchange error the pinned policy stays in force.
        """
        served = self.datasets.get(dataset_id)
        if served is None:
            return None
        try:
            listing = self._listing(dataset_id)
        except (ExchangeError, NodeError) as exc:
            logger.warning(
                "dataset %s: cannot refresh the policy (%s)", dataset_id, exc
            )
            return served
        pinned = served.config.policy_sha256
        if listing.policy_hash != served.policy_hash and pinned is not None:
            # The provider pinned the policy: the exchange cannot loosen (or
            # change) it alone. Jobs under the other policy are refused with
            # ``policy_changed``.
            logger.warning(
                "dataset %s: the exchange lists policy %s…, not the pinned %s…; "
                "still enforcing the pinned one",
                dataset_id,
                listing.policy_hash[:12],
                pinned[:12],
            )
        elif listing.policy_hash != served.policy_hash:
            self.state.pin_policy(dataset_id, listing.policy)
            served = ServedDataset(
                data=served.data,
                policy=listing.policy,
                config=served.config,
                models=served.models,
            )
            self.datasets[dataset_id] = served
            logger.info(
                "dataset %s: now enforcing policy %s…",
                dataset_id,
                served.policy_hash[:12],
            )
        return served

    def request_reload(self) -> None:
        """Re-read every source on the loop's next pass (``SIGHUP``; SQL sources)."""
        self._reload_all.set()

    def reload_sources(self, *, force: bool = False) -> list[uuid.UUID]:
        """Re-read changed sources and publish their new versions; their ids.

        A CSV or Parquet file counts as changed when its size or modification
        time differs from when it was read; ``force`` re-reads every source (SQL
        tables have no cheap change signal). A re-read whose content hash is the
        same changes nothing. A new content becomes a new live version at the
        exchange, with its signed attestation; jobs admitted on the old version
        are then refused ``dataset_version_unavailable``. A source that fails to
        load (a half-written file, a dropped column) leaves the current version
        served, and is tried again next time.
        """
        changed: list[uuid.UUID] = []
        for dataset_id, served in list(self.datasets.items()):
            entry = served.config
            if not force and _source_stat(entry) == self._source_stats.get(dataset_id):
                continue
            try:
                fresh = self._publish(entry, current=served)
            except (NodeError, ExchangeError) as exc:
                logger.warning(
                    "dataset %s: cannot reload the source (%s); still serving "
                    "version %s…",
                    dataset_id,
                    exc,
                    served.data.content_hash[:12],
                )
                continue
            if fresh is not served:
                self.datasets[dataset_id] = fresh
                changed.append(dataset_id)
        self._sources_checked = time.monotonic()
        return changed

    def refresh_policies(self) -> None:
        """:meth:`refresh_policy` for every dataset (the loop does it periodically)."""
        for dataset_id in list(self.datasets):
            self.refresh_policy(dataset_id)
        self._refreshed = time.monotonic()

    def _served_for(self, spec: JobSpec) -> ServedDataset | None:
        """The dataset as served; re-read the listing if the job's policy differs."""
        served = self.datasets.get(spec.dataset_id)
        if served is None or spec.policy_hash == served.policy_hash:
            return served
        return self.refresh_policy(spec.dataset_id)

    def _execute(self, spec: JobSpec) -> Execution:
        if self._grams is None:
            raise StateError("the node has not started")
        return execute(
            spec,
            dataset=self._served_for(spec),
            state=self.state,
            grams=self._grams,
            identity=self.identity,
            inputs=self._inputs,
            now=self._clock(),
            local_approval=LocalApproval(self.state.decision(spec.job_id))
            if self._approves_locally(spec)
            else None,
        )

    def _approves_locally(self, spec: JobSpec) -> bool:
        """Whether the node itself must approve ``spec`` (``approve_locally``)."""
        if not self.config.approve_locally:
            return False
        served = self.datasets.get(spec.dataset_id)
        return served is not None and served.policy.human_approval

    def _held(self, spec: JobSpec) -> bool:
        """Hold a job awaiting the node's own decision; whether it is held."""
        if not self._approves_locally(spec) or self.state.decision(spec.job_id):
            return False
        if self._clock() >= spec.deadline:
            return False  # run it: the executor ends it as timed out
        if self.state.hold(spec):
            logger.info(
                "job %s (%s on dataset %s) awaits approval at this node: "
                "veilx node approve %s",
                spec.job_id,
                spec.kind.value,
                spec.dataset_id,
                spec.job_id,
            )
        return True

    def run_decided(self) -> int:
        """Run the held jobs that were decided (or whose deadline passed)."""
        done = 0
        for held in self.state.held():
            if held.decision is None and self._clock() < held.spec.deadline:
                continue
            self._run(held.spec, started=held.spec.state is JobState.RUNNING)
            done += 1
        return done

    def _run(self, spec: JobSpec, *, started: bool = False) -> None:
        """Start (unless the exchange has it running), execute, report."""
        if self.state.job(spec.job_id) is not None:
            logger.info("job %s is already in the journal; not run again", spec.job_id)
            return
        if self._held(spec):
            return
        if not started:
            try:
                self._client.start_job(spec.job_id)
            except ExchangeError as exc:
                if exc.status == 409:
                    logger.info(
                        "job %s can no longer start (%s)", spec.job_id, exc.code
                    )
                    return
                raise
        logger.info(
            "job %s: %s on dataset %s", spec.job_id, spec.kind.value, spec.dataset_id
        )
        self._report(spec.job_id, self._execute(spec))

    def _report(self, job_id: uuid.UUID, execution: Execution) -> None:
        """Upload the blobs, post the result, mark it reported."""
        result = execution.result
        try:
            for name, data in sorted(execution.blobs.items()):
                if result.output_blobs.get(name) is None:
                    continue
                self._client.upload_blob(data)
            self._client.post_result(job_id, result)
        except ExchangeUnavailable as exc:
            logger.warning(
                "job %s: result kept for a later attempt (%s)", job_id, exc.detail
            )
            return
        except ExchangeError as exc:
            # A definitive refusal (the job ended otherwise, or the exchange
            # rejects the result): re-sending the same bytes cannot change it.
            logger.error("job %s: the exchange refused the result: %s", job_id, exc)
        self.state.mark_reported(job_id)
        logger.info("job %s: reported %s", job_id, result.outcome.value)

    # -- the loop ----------------------------------------------------------------------

    def poll_once(self, wait: float | None = None) -> bool:
        """Long-poll once and handle the job, if one came; ``True`` if one did."""
        spec = self._client.next_job(
            self.node_id, self.config.poll_wait if wait is None else wait
        )
        if spec is None:
            return False
        self._run(spec, started=spec.state is JobState.RUNNING)
        return True

    def serve(self, stop: threading.Event) -> None:
        """Poll and run jobs until ``stop`` is set (:meth:`start` first)."""
        backoff = 1.0
        # A long poll waits at the exchange; without one, pause between polls.
        idle = 0.0 if self.config.poll_wait >= 1 else 0.5
        while not stop.is_set():
            try:
                if time.monotonic() - self._refreshed >= POLICY_REFRESH_SECONDS:
                    self.refresh_policies()
                if self._reload_all.is_set():
                    self._reload_all.clear()
                    self.reload_sources(force=True)
                elif time.monotonic() - self._sources_checked >= SOURCE_CHECK_SECONDS:
                    self.reload_sources()
                if time.monotonic() - self._orphans_checked >= ORPHAN_CHECK_SECONDS:
                    self.resume_orphans()
                self.flush()
                self.run_decided()
                if not self.poll_once():
                    stop.wait(idle)
                backoff = 1.0
            except ExchangeError as exc:
                logger.warning("exchange: %s; retrying in %.0f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(60.0, backoff * 2)
        logger.info("node %s stopped", self.node_id)

    def close(self) -> None:
        """Close the HTTP client and the state."""
        self._client.close()
        if self._state is not None:
            self._state.close()


def load_key(state_dir: Path) -> NodeKey:
    """Load (or create, mode 0600) the node's Ed25519 key in ``state_dir``."""
    try:
        key, created = NodeKey.load_or_create(state_dir / KEY_FILE)
    except (InvalidKeyFile, OSError) as exc:
        raise StateError(f"node key: {exc}") from None
    if created:
        logger.info("created the node key %s", state_dir / KEY_FILE)
    return key


def _source_stat(entry: DatasetConfig) -> tuple[int, int] | None:
    """A file source's (size, mtime in ns); ``None`` for SQL or a missing file."""
    source = entry.source
    if isinstance(source, SqlSource):
        return None
    try:
        info = source.path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns

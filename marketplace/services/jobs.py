"""Jobs: submission, approval, dispatch, results, receipts and budget reports.

A job is routed to the node that serves its dataset; the node reports the
privacy-budget use with each result.

Life of a job (``TRANSITIONS`` is the whole state machine)::

    awaiting_approval ──approve──▶ queued ──claim──▶ dispatched ──start──▶ running
      │ deny ▶ rejected              │                 │ result (failed,      │ result
      │ sweep ▶ expired              │ sweep ▶ expired │   rejected)          ▼
                                                       │ sweep ▶ failed    succeeded
                                                                           failed
                                                                           rejected

Every move is one conditional ``UPDATE … WHERE id = ? AND state IN (…)``, so two
requests (or a request and the sweep, or two API processes) can never both move
the same job: the loser sees no row changed and is told the state it found. A
queued job is claimed by its node the same way, so no job is handed out twice.

Who may do what (beyond the endpoint's role rule):

* a job is visible to its buyer, the dataset's provider, the operator and the
  regulator; to anyone else it does not exist;
* only the dataset's provider approves or denies;
* only the organisation of the node a job is routed to starts it and posts its
  result.

A succeeded result must carry a receipt whose signature verifies under the
node's key and whose every bound field matches the job (:meth:`_check_receipt`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from marketplace.errors import (
    BadReceipt,
    InvalidTransition,
    KindNotPermitted,
    NoNode,
    NotFound,
    PermissionDenied,
    ResultConflict,
    UnknownBlob,
    UnknownContext,
    ValidationFailed,
)
from marketplace.models import (
    BudgetReport,
    Dataset,
    DatasetBudgetUsage,
    Job,
    JobApproval,
    JobBlob,
    JobDenial,
    JobPage,
    JobPublic,
    Node,
    NodeDataset,
    Organisation,
    ReceiptPublic,
    Role,
    utcnow,
)
from marketplace.queue import JobQueue
from marketplace.services.blobs import BlobService
from marketplace.services.catalog import CatalogService
from marketplace.services.identity import Caller
from marketplace.services.ledger import LedgerRecorder
from marketplace.services.nodes import NodeService
from marketplace.services.trading import Billing, TradingConfig
from mpc_engine import protocol
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import (
    BudgetUsage,
    JobCreate,
    JobKind,
    JobOutcome,
    JobResult,
    JobSpec,
    JobState,
    Loss,
    ReasonCode,
    SignedReceipt,
)

__all__ = ["NODE_LISTABLE_STATES", "TRANSITIONS", "JobService", "can_move"]

S = JobState

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.REJECTED, S.EXPIRED}),
    S.QUEUED: frozenset({S.DISPATCHED, S.EXPIRED}),
    S.DISPATCHED: frozenset({S.RUNNING, S.FAILED, S.REJECTED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.REJECTED}),
}
"""The allowed moves; terminal states have none."""

NODE_LISTABLE_STATES = (S.DISPATCHED, S.RUNNING)
"""What ``GET /v1/nodes/{id}/jobs`` lists: the jobs a restarted node must settle."""

_TOTAL = "total"
_CLAIM_BATCH = 8


def can_move(current: JobState, to: JobState) -> bool:
    """Whether the state machine allows ``current`` → ``to``."""
    return to in TRANSITIONS.get(current, frozenset())


def _digest(result: JobResult) -> str:
    return protocol.sha256_hex(protocol.canonical_json(result.model_dump(mode="json")))


DEFAULT_FEE_BPS = 1_000
"""The exchange's fee when none is configured (``VEILX_EXCHANGE_FEE_BPS``)."""


class JobService:
    """Buyer, provider and node operations on jobs."""

    def __init__(
        self, session: Session, queue: JobQueue, *, fee_bps: int = DEFAULT_FEE_BPS
    ) -> None:
        self.session = session
        self.queue = queue
        self.fee_bps = fee_bps
        self.nodes = NodeService(session, queue)
        self.blobs = BlobService(session)

    # -- buyer ---------------------------------------------------------------------

    def create(self, caller: Caller, data: JobCreate) -> JobPublic:
        """Submit a job on a listed dataset; it is routed to the dataset's node.

        Raises
        ------
        NotFound
            The dataset is not visible to the caller.
        Conflict
            The dataset is not listed (``dataset_not_listed``) or no node serves
            it (``no_node``).
        KindNotPermitted
            The rights policy does not permit ``kind``.
        UnknownBlob, UnknownContext
            An input blob or the context was not uploaded by the caller.
        PaymentRequired
            The job needs an entitlement with room for it (``entitlement_required``,
            ``entitlement_exhausted``); its most possible charge is reserved.
        """
        ds, version = CatalogService(self.session).load_listed(
            caller, data.dataset_id, doing="jobs run on"
        )
        binding = self.session.get(NodeDataset, ds.id)
        if binding is None:
            raise NoNode(
                "dataset_id",
                f"no data node serves dataset {ds.id} yet; its provider's node must "
                "attest a version of it first",
            )
        policy = RightsPolicy.model_validate(ds.policy)
        permitted = sorted(k.value for k in policy.permitted_kinds)
        if data.kind.value not in permitted:
            raise KindNotPermitted(
                "kind",
                f"the rights policy of dataset {ds.id} permits {', '.join(permitted)}",
            )
        org = caller.organisation_id
        for name, sha in sorted(data.inputs.items()):
            if not self.blobs.owns_blob(org, sha):
                raise UnknownBlob(
                    f"inputs.{name}",
                    f"blob {sha} was not uploaded by your organisation "
                    "(POST /v1/blobs)",
                )
        if data.context_id is not None and not self.blobs.owns_context(
            org, data.context_id
        ):
            raise UnknownContext(
                "context_id",
                f"HE context {data.context_id} was not uploaded by your organisation "
                "(POST /v1/he-contexts)",
            )
        buyer = self.session.get(Organisation, org)
        if buyer is None:  # a foreign key makes this impossible
            raise NotFound(f"organisation {org} not found")
        now = utcnow()
        state = S.AWAITING_APPROVAL if policy.human_approval else S.QUEUED
        job = Job(
            dataset_id=ds.id,
            dataset_version_id=version.id,
            buyer_id=org,
            node_id=binding.node_id,
            kind=data.kind.value,
            purpose=data.purpose,
            params=data.params,
            inputs=dict(data.inputs),
            context_id=data.context_id,
            content_hash=version.content_hash,
            policy_hash=ds.policy_hash,
            buyer_region=buyer.country,
            state=state.value,
            created_at=now,
            updated_at=now,
            deadline=now + timedelta(seconds=data.timeout_seconds),
        )
        self.session.add(job)
        self.session.flush()
        for name, sha in sorted(data.inputs.items()):
            self.session.add(
                JobBlob(job_id=job.id, role="input", name=name, sha256=sha)
            )
        try:
            self._billing().reserve(
                job, ds, version, getattr(data, "entitlement_id", None)
            )
        except Exception:
            self.session.rollback()
            raise
        self.session.commit()
        if state is S.QUEUED:
            self.queue.notify(job.node_id, job.id)
        return self._public(job)

    def list_visible(
        self,
        caller: Caller,
        *,
        states: Sequence[JobState] = (),
        dataset_id: uuid.UUID | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        """The jobs visible to the caller, newest first, one keyset page."""
        stmt = select(Job)
        visible = self._visible(caller)
        if visible is not None:
            stmt = stmt.where(visible)
        if states:
            stmt = stmt.where(col(Job.state).in_([s.value for s in states]))
        if dataset_id is not None:
            stmt = stmt.where(col(Job.dataset_id) == dataset_id)
        if cursor:
            at, last = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    col(Job.created_at) < at,
                    and_(col(Job.created_at) == at, col(Job.id) < last),
                )
            )
        stmt = stmt.order_by(col(Job.created_at).desc(), col(Job.id).desc())
        rows = list(self.session.exec(stmt.limit(limit + 1)))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id)
        return JobPage(items=[self._public(j) for j in rows], next_cursor=next_cursor)

    def get(self, caller: Caller, job_id: uuid.UUID) -> JobPublic:
        """A job visible to the caller."""
        return self._public(self._load(caller, job_id))

    def receipt(self, caller: Caller, job_id: uuid.UUID) -> ReceiptPublic:
        """A succeeded job's verified receipt and the key that verifies it."""
        job = self._load(caller, job_id)
        if job.receipt is None:
            raise NotFound(
                f"job {job_id} has no receipt (it is {job.state}); receipts exist "
                "for succeeded jobs",
                code="no_receipt",
            )
        node = self.session.get(Node, job.node_id)
        if node is None:  # the foreign key makes this impossible
            raise NotFound(f"node {job.node_id} not found")
        return ReceiptPublic(
            receipt=SignedReceipt.model_validate(job.receipt),
            node_id=node.id,
            node_public_key=node.public_key,
            verified=True,
        )

    # -- provider ------------------------------------------------------------------

    def approve(
        self, caller: Caller, job_id: uuid.UUID, body: JobApproval
    ) -> JobPublic:
        """Approve a job awaiting approval; it is queued for the node."""
        job = self._for_provider(caller, job_id)
        if JobState(job.state) is S.AWAITING_APPROVAL and job.deadline <= utcnow():
            raise InvalidTransition(
                f"job {job_id} passed its deadline ({job.deadline:%Y-%m-%dT%H:%M:%SZ}) "
                "unapproved; it expires"
            )
        who = (
            f"user:{caller.user_id}"
            if caller.user_id is not None
            else f"api_key:{caller.api_key_id}"
        )
        self._move(
            job,
            S.QUEUED,
            expect=(S.AWAITING_APPROVAL,),
            approved_by=who,
            approval_note=body.note,
        )
        self.session.commit()
        self.queue.notify(job.node_id, job.id)
        return self._public(self._reload(job))

    def deny(self, caller: Caller, job_id: uuid.UUID, body: JobDenial) -> JobPublic:
        """Refuse a job awaiting approval (``rejected``, code ``denied``)."""
        job = self._for_provider(caller, job_id)
        self._move(
            job,
            S.REJECTED,
            expect=(S.AWAITING_APPROVAL,),
            reason_code=ReasonCode.DENIED.value,
            reason=body.reason,
        )
        self.session.commit()
        return self._public(self._reload(job))

    # -- node --------------------------------------------------------------------

    def next_for_node(
        self, caller: Caller, node_id: uuid.UUID, wait: float
    ) -> JobSpec | None:
        """Claim the node's oldest queued job, waiting up to ``wait`` seconds.

        Blocks (call it from a worker thread). The database is asked first; then
        the node's queue is waited on and the database asked again after each
        wake-up, until a job is claimed or the time is up. No database connection
        is held while waiting.
        """
        node = self.nodes.owned(caller, node_id)
        self.nodes.touch(node.id)
        deadline = time.monotonic() + wait
        while True:
            spec = self._claim(node.id)
            if spec is not None:
                return spec
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.queue.wait(node.id, remaining)

    def _claim(self, node_id: uuid.UUID) -> JobSpec | None:
        """Move one of the node's queued jobs to ``dispatched``; commit."""
        while True:
            now = utcnow()
            candidates = self.session.exec(
                select(Job.id)
                .where(
                    col(Job.node_id) == node_id,
                    col(Job.state) == S.QUEUED.value,
                    col(Job.deadline) > now,
                )
                .order_by(col(Job.created_at), col(Job.id))
                .limit(_CLAIM_BATCH)
            ).all()
            self.session.commit()  # no transaction (or connection) held between
            if not candidates:
                return None
            for job_id in candidates:
                result = self.session.execute(
                    update(Job)
                    .where(
                        col(Job.id) == job_id,
                        col(Job.state) == S.QUEUED.value,
                        col(Job.node_id) == node_id,
                    )
                    .values(state=S.DISPATCHED.value, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                self.session.commit()
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    job = self.session.get(Job, job_id, populate_existing=True)
                    if job is None:  # claimed rows are never deleted
                        raise NotFound(f"job {job_id} not found")
                    return self._spec(job)
            # Every candidate was claimed by a concurrent poll: look again.

    def node_jobs(
        self,
        caller: Caller,
        node_id: uuid.UUID,
        states: Sequence[JobState] = NODE_LISTABLE_STATES,
    ) -> list[JobSpec]:
        """The node's dispatched and running jobs, to resume or fail after a restart."""
        refused = sorted(s.value for s in states if s not in NODE_LISTABLE_STATES)
        if refused:
            raise ValidationFailed.for_field(
                "query.state",
                f"{', '.join(refused)}: only dispatched and running jobs are listed "
                "here; see GET /v1/jobs for others",
            )
        node = self.nodes.owned(caller, node_id)
        self.nodes.touch(node.id)
        wanted = [s.value for s in (states or NODE_LISTABLE_STATES)]
        rows = self.session.exec(
            select(Job)
            .where(col(Job.node_id) == node.id, col(Job.state).in_(wanted))
            .order_by(col(Job.created_at), col(Job.id))
        )
        return [self._spec(j) for j in rows]

    def start(self, caller: Caller, job_id: uuid.UUID) -> JobPublic:
        """The node starts a job dispatched to it (``dispatched`` → ``running``)."""
        job, node = self._for_node(caller, job_id)
        self.nodes.touch(node.id)
        self._move(job, S.RUNNING, expect=(S.DISPATCHED,))
        self.session.commit()
        return self._public(self._reload(job))

    def submit_result(
        self, caller: Caller, job_id: uuid.UUID, result: JobResult
    ) -> JobPublic:
        """End a job with the node's result.

        A succeeded result needs a running job and a receipt that verifies and
        matches the job; failures and refusals may also end a dispatched job. The
        identical result posted again to the job it ended is answered as the
        first time; any other result for a finished job is refused.

        Raises
        ------
        BadReceipt
            The receipt's signature does not verify, or a bound field differs from
            the job's (the job stays as it was).
        UnknownBlob
            An output blob was not uploaded by the node's organisation.
        InvalidTransition, ResultConflict
            The job cannot take this result in its state.
        """
        job, node = self._for_node(caller, job_id)
        self.nodes.touch(node.id)
        digest = _digest(result)
        current = JobState(job.state)
        if current.terminal:
            return self._repeat(job, digest)
        target = JobState(result.outcome.value)
        expect = (S.RUNNING,) if target is S.SUCCEEDED else (S.DISPATCHED, S.RUNNING)
        if current not in expect:
            raise InvalidTransition(
                f"job {job_id} is {current.value}; a succeeded result needs a running "
                "job (POST /v1/jobs/{id}/start first)"
            )
        values: dict[str, Any] = {"result_digest": digest}
        if result.outcome is JobOutcome.SUCCEEDED:
            receipt = result.receipt
            if receipt is None:  # JobResult's validator requires it
                raise BadReceipt("receipt", "a succeeded result needs a receipt")
            if result.reason_code is not None or result.reason is not None:
                field = "reason_code" if result.reason_code is not None else "reason"
                raise ValidationFailed.for_field(
                    field, "only failed or rejected results carry a reason"
                )
            self._check_receipt(job, node, receipt)
            for name, sha in sorted(result.output_blobs.items()):
                if not self.blobs.owns_blob(node.organisation_id, sha):
                    raise UnknownBlob(
                        f"output_blobs.{name}",
                        f"blob {sha} was not uploaded by the node's organisation "
                        "(POST /v1/blobs)",
                    )
            values |= {
                "output": result.output,
                "output_blobs": dict(result.output_blobs),
                "receipt": receipt.model_dump(mode="json"),
                "privacy_loss": receipt.receipt.privacy_loss.model_dump(mode="json"),
            }
        else:
            for field, given in (
                ("output", result.output is not None),
                ("output_blobs", bool(result.output_blobs)),
                ("receipt", result.receipt is not None),
            ):
                if given:
                    raise ValidationFailed.for_field(
                        field,
                        f"a {result.outcome.value} result releases nothing; omit it",
                    )
            values |= {
                "reason_code": result.reason_code.value if result.reason_code else None,
                "reason": result.reason,
            }
        self._check_budget(job, result.budget)
        try:
            self._move(job, target, expect=expect, **values)
        except InvalidTransition:
            # Lost a race: the same result posted twice at once is still one result.
            return self._repeat(self._reload(job), digest)
        for name, sha in sorted(result.output_blobs.items()):
            self.session.add(
                JobBlob(job_id=job.id, role="output", name=name, sha256=sha)
            )
        now = utcnow()
        for usage in result.budget:
            self._upsert_budget(job.id, usage, now)
        if target is S.SUCCEEDED and result.receipt is not None:
            ds = self.session.get(Dataset, job.dataset_id)
            if ds is None:  # a job's dataset is a foreign key
                raise NotFound(f"dataset {job.dataset_id} not found")
            amount, fee = self._billing().capture(job, ds, result.receipt)
            LedgerRecorder(self.session).record_release(
                job, ds, result.receipt, amount_minor=amount, fee_minor=fee
            )
        else:
            self._billing().void(job.id, f"job {target.value}")
        self.session.commit()
        return self._public(self._reload(job))

    def _billing(self) -> Billing:
        return Billing(self.session, TradingConfig(fee_bps=self.fee_bps), {})

    def _repeat(self, job: Job, digest: str) -> JobPublic:
        """Answer a result posted to a finished job."""
        if job.result_digest == digest:
            return self._public(job)
        if job.result_digest is not None:
            raise ResultConflict(
                "outcome",
                f"job {job.id} already ended ({job.state}) with a different result",
            )
        raise InvalidTransition(
            f"job {job.id} is {job.state}"
            + (f" ({job.reason_code})" if job.reason_code else "")
            + "; it takes no result"
        )

    def _check_receipt(self, job: Job, node: Node, signed: SignedReceipt) -> None:
        """The receipt verifies under the node's key and binds exactly this job."""
        try:
            signed.verify(node.public_key)
        except protocol.BadSignature as exc:
            raise BadReceipt(
                "receipt.signature",
                f"does not verify under the public key of node {node.id}",
            ) from exc
        r = signed.receipt
        expected: dict[str, Any] = {
            "job_id": job.id,
            "node_id": job.node_id,
            "dataset_id": job.dataset_id,
            "dataset_version_hash": job.content_hash,
            "policy_hash": job.policy_hash,
            "kind": JobKind(job.kind),
            "params_hash": protocol.params_hash(job.params),
            "inputs_hash": protocol.inputs_hash(job.inputs, job.context_id),
        }
        for name, want in expected.items():
            got = getattr(r, name)
            if got != want:
                raise BadReceipt(
                    f"receipt.receipt.{name}",
                    f"is {_plain(got)}; the job's is {_plain(want)}",
                )

    def _check_budget(self, job: Job, budget: Sequence[BudgetUsage]) -> None:
        seen: set[str] = set()
        for i, usage in enumerate(budget):
            if usage.dataset_id != job.dataset_id:
                raise ValidationFailed.for_field(
                    f"budget.{i}.dataset_id", "is not the job's dataset"
                )
            if usage.buyer_id not in (None, job.buyer_id):
                raise ValidationFailed.for_field(
                    f"budget.{i}.buyer_id",
                    "must be the job's buyer, or null for the dataset total",
                )
            scope = _TOTAL if usage.buyer_id is None else str(usage.buyer_id)
            if scope in seen:
                raise ValidationFailed.for_field(
                    f"budget.{i}", "reports the same buyer (or total) twice"
                )
            seen.add(scope)

    def _upsert_budget(
        self, job_id: uuid.UUID, usage: BudgetUsage, now: datetime
    ) -> None:
        """Keep the newest snapshot: one with fewer queries than stored is older."""
        values: dict[str, Any] = {
            "dataset_id": usage.dataset_id,
            "scope": _TOTAL if usage.buyer_id is None else str(usage.buyer_id),
            "buyer_id": usage.buyer_id,
            "epsilon_spent": usage.epsilon_spent,
            "delta_spent": usage.delta_spent,
            "epsilon_budget": usage.epsilon_budget,
            "delta_budget": usage.delta_budget,
            "queries": usage.queries,
            "inference_rows": usage.inference_rows,
            "job_id": job_id,
            "updated_at": now,
        }
        # The same upsert, in each engine's dialect (ADR 0002).
        insert = (
            pg_insert
            if self.session.get_bind().dialect.name == "postgresql"
            else sqlite_insert
        )
        table = DatasetBudgetUsage.__table__  # type: ignore[attr-defined]
        stmt = insert(table).values(**values)
        keep = ("dataset_id", "scope")
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keep),
            set_={k: stmt.excluded[k] for k in values if k not in keep},
            where=stmt.excluded.queries >= table.c.queries,
        )
        self.session.execute(stmt)

    # -- budgets -------------------------------------------------------------------

    def budget(self, caller: Caller, dataset_id: uuid.UUID) -> BudgetReport:
        """A dataset's budget use as its node last reported it.

        The provider, the operator and the regulator see every buyer and the
        total; anyone else only its own row.
        """
        ds = CatalogService(self.session).load_visible(caller, dataset_id)
        policy = RightsPolicy.model_validate(ds.policy)
        everything = ds.organisation_id == caller.organisation_id or caller.has_any(
            (Role.OPERATOR, Role.REGULATOR)
        )
        stmt = select(DatasetBudgetUsage).where(
            col(DatasetBudgetUsage.dataset_id) == ds.id
        )
        if not everything:
            stmt = stmt.where(
                col(DatasetBudgetUsage.buyer_id) == caller.organisation_id
            )
        total: BudgetUsage | None = None
        buyers: list[BudgetUsage] = []
        for row in self.session.exec(stmt.order_by(col(DatasetBudgetUsage.scope))):
            usage = BudgetUsage(
                dataset_id=row.dataset_id,
                buyer_id=row.buyer_id,
                epsilon_spent=row.epsilon_spent,
                delta_spent=row.delta_spent,
                epsilon_budget=row.epsilon_budget,
                delta_budget=row.delta_budget,
                queries=row.queries,
                inference_rows=row.inference_rows,
            )
            if row.buyer_id is None:
                total = usage
            else:
                buyers.append(usage)
        return BudgetReport(
            dataset_id=ds.id,
            budget_per_buyer=policy.budget_per_buyer,
            budget_per_dataset=policy.budget_per_dataset,
            total=total,
            buyers=buyers,
        )

    # -- guards and moves ----------------------------------------------------------

    def _visible(self, caller: Caller) -> Any:
        """SQL condition for the jobs ``caller`` may see (``None``: all)."""
        if caller.has_any((Role.OPERATOR, Role.REGULATOR)):
            return None
        org = caller.organisation_id
        own_datasets = select(Dataset.id).where(col(Dataset.organisation_id) == org)
        return or_(
            col(Job.buyer_id) == org,
            col(Job.dataset_id).in_(own_datasets),
            false(),
        )

    def _is_visible(self, caller: Caller, job: Job) -> bool:
        if job.buyer_id == caller.organisation_id or caller.has_any(
            (Role.OPERATOR, Role.REGULATOR)
        ):
            return True
        ds = self.session.get(Dataset, job.dataset_id)
        return ds is not None and ds.organisation_id == caller.organisation_id

    def _load(self, caller: Caller, job_id: uuid.UUID) -> Job:
        job = self.session.get(Job, job_id)
        if job is None or not self._is_visible(caller, job):
            raise NotFound(f"job {job_id} not found")
        return job

    def _for_provider(self, caller: Caller, job_id: uuid.UUID) -> Job:
        job = self._load(caller, job_id)
        ds = self.session.get(Dataset, job.dataset_id)
        if ds is None or ds.organisation_id != caller.organisation_id:
            raise PermissionDenied(
                "only the dataset's provider may approve or deny its jobs",
                code="not_dataset_provider",
            )
        return job

    def _for_node(self, caller: Caller, job_id: uuid.UUID) -> tuple[Job, Node]:
        job = self.session.get(Job, job_id)
        node = self.session.get(Node, job.node_id) if job is not None else None
        if job is None or node is None:
            raise NotFound(f"job {job_id} not found")
        if node.organisation_id != caller.organisation_id:
            if not self._is_visible(caller, job):
                raise NotFound(f"job {job_id} not found")
            raise PermissionDenied(
                f"job {job_id} is routed to node {node.id} of another organisation",
                code="not_assigned_node",
            )
        return job, node

    def _move(
        self, job: Job, to: JobState, *, expect: Sequence[JobState], **values: Any
    ) -> None:
        """Move ``job`` to ``to`` if it is in one of ``expect`` (not committed).

        Raises
        ------
        InvalidTransition
            The job is in another state (possibly just moved by someone else).
        """
        current = JobState(job.state)
        if current not in expect or not can_move(current, to):
            raise InvalidTransition(
                f"job {job.id} is {current.value}; it cannot become {to.value}"
            )
        result = self.session.execute(
            update(Job)
            .where(
                col(Job.id) == job.id,
                col(Job.state).in_([s.value for s in expect]),
            )
            .values(state=to.value, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            self.session.rollback()
            found = self._reload(job).state
            raise InvalidTransition(
                f"job {job.id} is {found} now; it cannot become {to.value}"
            )

    def _reload(self, job: Job) -> Job:
        fresh = self.session.get(Job, job.id, populate_existing=True)
        if fresh is None:  # jobs are never deleted
            raise NotFound(f"job {job.id} not found")
        return fresh

    # -- views -----------------------------------------------------------------------

    @staticmethod
    def _public(job: Job) -> JobPublic:
        return JobPublic(
            id=job.id,
            dataset_id=job.dataset_id,
            dataset_version_id=job.dataset_version_id,
            content_hash=job.content_hash,
            policy_hash=job.policy_hash,
            buyer_id=job.buyer_id,
            node_id=job.node_id,
            kind=JobKind(job.kind),
            purpose=job.purpose,
            params=job.params,
            inputs=job.inputs,
            context_id=job.context_id,
            state=JobState(job.state),
            reason_code=ReasonCode(job.reason_code) if job.reason_code else None,
            reason=job.reason,
            approved_by=job.approved_by,
            created_at=job.created_at,
            updated_at=job.updated_at,
            deadline=job.deadline,
            output=job.output,
            output_blobs=job.output_blobs,
            privacy_loss=(
                Loss.model_validate(job.privacy_loss) if job.privacy_loss else None
            ),
            receipt=SignedReceipt.model_validate(job.receipt) if job.receipt else None,
        )

    @staticmethod
    def _spec(job: Job) -> JobSpec:
        return JobSpec(
            job_id=job.id,
            dataset_id=job.dataset_id,
            dataset_version_id=job.dataset_version_id,
            content_hash=job.content_hash,
            policy_hash=job.policy_hash,
            buyer_id=job.buyer_id,
            buyer_region=job.buyer_region,
            purpose=job.purpose,
            kind=JobKind(job.kind),
            params=job.params,
            inputs=job.inputs,
            context_id=job.context_id,
            approved_by=job.approved_by,
            created_at=job.created_at,
            deadline=job.deadline,
            state=JobState(job.state),
        )


def _plain(value: Any) -> str:
    return str(value.value if isinstance(value, JobKind) else value)


def _encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "i": str(job_id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor; a tampered one is refused with 422, never reaches SQL."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        at = datetime.fromisoformat(data["t"])
        last = uuid.UUID(data["i"])
        if at.utcoffset() is None:
            raise ValueError("naive timestamp")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed.for_field(
            "cursor", "is not a cursor returned by GET /v1/jobs"
        ) from exc
    return at, last

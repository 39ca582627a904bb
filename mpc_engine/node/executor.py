"""Run one job: enforce the rights policy, spend budget, compute, sign a receipt.

:func:`execute` is pure with respect to HTTP: the runner hands it the loaded
dataset, the listing's policy, the state, the node's key and a way to read the
job's inputs (:class:`JobInputs`), and gets back the result and its blobs. The
node is the authority (DESIGN §5), so every rule is checked here, in this order,
and the first broken one ends the job with its reason code:

==========================================  =========  ============================
check                                       outcome    code
==========================================  =========  ============================
the journal already has the job             —          (its stored result; a job
                                                       caught mid-run by a restart:
                                                       ``failed node_restarted``)
deadline passed                             failed     ``timeout``
dataset served, content hash is the         rejected   ``dataset_version_``
loaded version                                         ``unavailable``
policy hash is the one enforced             rejected   ``policy_changed``
kind permitted                              rejected   ``kind_not_permitted``
purpose permitted and not prohibited        rejected   ``purpose_not_permitted``
buyer region permitted                      rejected   ``region_not_permitted``
policy not expired                          rejected   ``policy_expired``
human approval present when required        rejected   ``policy_violation``
(``approve_locally``) approved at the node     rejected   ``policy_violation`` /
                                                       ``denied``
``max_queries_per_buyer`` not reached       rejected   ``query_limit``
params valid (``parse_params``), inputs     rejected   ``invalid_params`` /
and context as the kind needs                          ``invalid_input`` /
                                                       ``invalid_context``
columns and bounds allowed by the policy    rejected   ``policy_violation``
privacy budget (ε, δ) / inference rows      rejected   ``budget_exhausted`` /
                                                       ``row_budget_exhausted``
ciphertexts and context well formed         rejected   ``invalid_input`` /
                                                       ``invalid_context``
anything unexpected                         failed     ``node_error``
==========================================  =========  ============================

Every succeeded job counts as one query of its buyer (``max_queries_per_buyer``),
a replayed one included; refused and failed jobs do not.

Budgets: a job *reserves* its planned loss with the dataset's
:class:`~mpc_engine.dp.PrivacyAccountant` before computing and *commits* the
actual loss only when the result is complete; the journal row, the accountant
state, the replay answer and the counters are then stored in one transaction.
A job that ends any other way releases its reservation.

Kinds (result layouts as in ``docs/protocol.md``):

* ``aggregate`` — :func:`~mpc_engine.aggregate.run_aggregate`. A DP answer is
  stored under its :class:`~mpc_engine.dp.ReleaseKey` (dataset version, buyer,
  the request's canonical parameters *without* ``encrypt_result``: asking the
  same question encrypted and in the clear is the same question) and replayed
  identically at no cost. With ``encrypt_result`` the released numbers are
  encrypted under the buyer's public context (:func:`~mpc_engine.he.encrypt_values`,
  blob ``values``) and the output is the skeleton of ``flatten_aggregate``.
* ``encrypted_model_eval`` — the Gram matrix of the clamped feature and label
  columns over the rows where all of them are present, perturbed *once* per
  dataset version, feature set, label and (ε, δ) (the dataset's
  ``model_eval_epsilon`` / ``model_eval_delta``: Laplace noise for the ℓ1
  sensitivity when δ = 0, Gaussian for the ℓ2 sensitivity otherwise, both from
  :func:`~mpc_engine.he.sensitivity` at n − 1 rows, which also covers adding or
  removing a row). The release is cached (:class:`~mpc_engine.node.state.GramStore`)
  and charged to a buyer the first time that buyer uses it — to the dataset's
  total only the first time anyone pays for it; every evaluation is
  post-processing of it. Needs at least ``min_group_size`` complete rows.
* ``encrypted_inference`` — the provider's registered model
  (:func:`~mpc_engine.he.score_linear`; a logistic model's scores are logits),
  within the policy's ``inference_row_budget`` per buyer.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from mpc_engine.aggregate import AggregateRequest, Mode, run_aggregate
from mpc_engine.aggregate.errors import (
    FilterError,
    PolicyViolation,
    RequestMismatch,
    SchemaError,
)
from mpc_engine.dp import (
    Mechanism,
    PrivacyAccountant,
    PrivacyLoss,
    ReleaseKey,
    Reservation,
    add_noise,
)
from mpc_engine.dp.errors import BudgetExhausted, InvalidParameter
from mpc_engine.he import (
    EncryptedColumns,
    EncryptedModel,
    EncryptedVector,
    Gram,
    GramBounds,
    ModelKind,
    PublicContext,
    encrypt_values,
    evaluate_model,
    gram_matrix,
    score_linear,
    sensitivity,
)
from mpc_engine.he.errors import (
    ContextMismatch,
    HEError,
    InvalidInput,
    MalformedBytes,
    MalformedContext,
    MissingGaloisKeys,
    ValueOutOfRange,
)
from mpc_engine.node.config import DatasetConfig, ModelConfig
from mpc_engine.node.errors import ExchangeError, ExchangeUnavailable, StateError
from mpc_engine.node.sources import LoadedDataset
from mpc_engine.node.state import (
    Effects,
    GramRelease,
    GramStore,
    JournalState,
    LocalDecision,
    NodeState,
)
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import (
    INPUTS_BY_KIND,
    AggregateParams,
    BudgetUsage,
    InferenceParams,
    JobKind,
    JobOutcome,
    JobResult,
    JobSpec,
    Loss,
    ModelEvalParams,
    NodeKey,
    ReasonCode,
    Receipt,
    SignedReceipt,
    flatten_aggregate,
    inputs_hash,
    iso_utc,
    model_eval_bounds,
    needs_context,
    output_hash,
    pack_bundle,
    params_hash,
    parse_params,
    sha256_hex,
    unpack_bundle,
    utc_now,
)
from mpc_engine.protocol.errors import InvalidMessage

__all__ = [
    "ContextCache",
    "Execution",
    "JobInputs",
    "LocalApproval",
    "NodeIdentity",
    "ServedDataset",
    "execute",
]

logger = logging.getLogger("veilx.node.executor")

_MAX_REASON = 2000


# -- what execute needs ----------------------------------------------------------------


@dataclass(frozen=True)
class LocalApproval:
    """The node decides approvals itself; ``decision`` is its decision, if any."""

    decision: LocalDecision | None


@dataclass(frozen=True)
class NodeIdentity:
    """The node's id at the exchange and its signing key."""

    node_id: uuid.UUID
    key: NodeKey


@dataclass(frozen=True, eq=False)
class ServedDataset:
    """A dataset the node serves: the loaded version and the policy it enforces.

    Parameters
    ----------
    data
        The loaded version.
    policy
        The listing's rights policy (pinned by the node).
    config
        The dataset's node config (model-eval ε/δ).
    models
        The provider models registered for the dataset, by name.
    """

    data: LoadedDataset
    policy: RightsPolicy
    config: DatasetConfig
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    policy_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_hash", self.policy.policy_hash())

    @property
    def dataset_id(self) -> uuid.UUID:
        """The listing's id."""
        return self.data.dataset_id


class JobInputs(Protocol):
    """Where the job's input blobs and the buyer's context come from."""

    def blob(self, sha256: str) -> bytes:
        """The bytes of an input blob."""

    def context(self, context_id: str) -> PublicContext:
        """The buyer's public context (raises ``HEError`` if it is malformed)."""


class ContextCache:
    """Public contexts by id, loaded through ``fetch`` and kept (LRU, ``size``).

    The bytes must hash to the context id (the id *is* their SHA-256), so a
    wrong or corrupted download is refused rather than used.
    """

    def __init__(self, fetch: Callable[[str], bytes], *, size: int = 2) -> None:
        self._fetch = fetch
        self._size = max(1, size)
        self._items: collections.OrderedDict[str, PublicContext] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def __call__(self, context_id: str) -> PublicContext:
        """Return the context ``context_id`` (``HEError`` if malformed)."""
        with self._lock:
            hit = self._items.get(context_id)
            if hit is not None:
                self._items.move_to_end(context_id)
                return hit
        data = self._fetch(context_id)
        if hashlib.sha256(data).hexdigest() != context_id:
            raise MalformedContext("the bytes served do not hash to the context id")
        context = PublicContext.from_bytes(data)
        with self._lock:
            self._items[context_id] = context
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return context


@dataclass(frozen=True)
class Execution:
    """What :func:`execute` returns: the result and the blobs it names."""

    result: JobResult
    blobs: Mapping[str, bytes]
    replayed_from_journal: bool = False


# -- refusals --------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a job with a non-success outcome (never leaves this module)."""

    def __init__(self, outcome: JobOutcome, code: ReasonCode, reason: str) -> None:
        self.outcome = outcome
        self.code = code
        self.reason = reason
        super().__init__(reason)


def _reject(code: ReasonCode, reason: str) -> _Stop:
    return _Stop(JobOutcome.REJECTED, code, reason)


def _fail(code: ReasonCode, reason: str) -> _Stop:
    return _Stop(JobOutcome.FAILED, code, reason)


@dataclass
class _Success:
    output: dict[str, Any]
    blobs: dict[str, bytes]
    replayed: bool = False


class _Job:
    """One job's context: reservations to settle and effects to store."""

    def __init__(
        self,
        spec: JobSpec,
        served: ServedDataset,
        state: NodeState,
        grams: GramStore,
        inputs: JobInputs,
        params: BaseModel,
    ) -> None:
        self.spec = spec
        self.served = served
        self.state = state
        self.grams = grams
        self.inputs = inputs
        self.params = params
        self.buyer = str(spec.buyer_id)
        self.accountant: PrivacyAccountant = state.accountant(
            served.dataset_id, served.policy
        )
        self.effects = Effects(dataset_id=str(served.dataset_id), buyer_id=self.buyer)
        self._reservations: list[tuple[Reservation, PrivacyLoss | None]] = []
        self._context: PublicContext | None = None

    # budget -----------------------------------------------------------------------

    def reserve(self, planned: PrivacyLoss, *, dataset: bool = True) -> Reservation:
        try:
            reservation = self.accountant.reserve(self.buyer, planned, dataset=dataset)
        except BudgetExhausted as exc:
            raise _reject(ReasonCode.BUDGET_EXHAUSTED, str(exc)) from None
        self._reservations.append((reservation, None))
        return reservation

    def spend(self, reservation: Reservation, actual: PrivacyLoss) -> None:
        """Record the actual loss; committed only when the job succeeds."""
        if not actual.within(reservation.loss):
            raise _fail(
                ReasonCode.NODE_ERROR,
                "the computation reported a larger privacy loss than it reserved",
            )
        self._reservations = [
            (r, actual if r is reservation else a) for r, a in self._reservations
        ]

    def commit(self) -> PrivacyLoss:
        total = PrivacyLoss.zero()
        for reservation, actual in self._reservations:
            spent = reservation.loss if actual is None else actual
            reservation.commit(spent)
            total = total + spent
        self._reservations = []
        if total != PrivacyLoss.zero():
            self.effects.accountant = self.accountant.to_json()
        return total

    def release_all(self) -> None:
        for reservation, _ in self._reservations:
            if reservation.open:
                reservation.release()
        self._reservations = []

    # inputs -----------------------------------------------------------------------

    def context(self, *, galois: bool) -> PublicContext:
        if self._context is None:
            context_id = self.spec.context_id
            if context_id is None:  # checked before; kept for the type checker
                raise _reject(ReasonCode.INVALID_CONTEXT, "context_id: required")
            try:
                self._context = self.inputs.context(context_id)
            except ExchangeUnavailable as exc:
                raise _fail(
                    ReasonCode.NODE_ERROR,
                    f"could not fetch the HE context from the exchange ({exc})",
                ) from None
            except ExchangeError as exc:  # the exchange will not serve it
                raise _reject(
                    ReasonCode.INVALID_CONTEXT,
                    f"context_id: the exchange does not serve it ({exc.detail})",
                ) from None
            except HEError as exc:
                raise _reject(
                    ReasonCode.INVALID_CONTEXT, f"context_id: {exc}"
                ) from None
            if self._context.context_id != context_id:
                raise _reject(
                    ReasonCode.INVALID_CONTEXT,
                    "context_id: the context served is not the one the job names",
                )
        if galois and not self._context.has_galois_keys:
            raise _reject(
                ReasonCode.INVALID_CONTEXT,
                f"context_id: {MissingGaloisKeys(self.spec.kind.value)}",
            )
        return self._context

    def blob(self, name: str) -> bytes:
        sha = self.spec.inputs[name]
        try:
            data = self.inputs.blob(sha)
        except ExchangeUnavailable as exc:
            raise _fail(
                ReasonCode.NODE_ERROR,
                f"could not fetch input {name!r} from the exchange ({exc})",
            ) from None
        except ExchangeError as exc:  # the exchange will not serve it
            raise _reject(
                ReasonCode.INVALID_INPUT,
                f"inputs.{name}: the exchange does not serve it ({exc.detail})",
            ) from None
        if sha256_hex(data) != sha:
            raise _reject(
                ReasonCode.INVALID_INPUT,
                f"inputs.{name}: the bytes served do not match their SHA-256",
            )
        return data


# -- entry point -----------------------------------------------------------------------


def execute(
    spec: JobSpec,
    *,
    dataset: ServedDataset | None,
    state: NodeState,
    grams: GramStore,
    identity: NodeIdentity,
    inputs: JobInputs,
    now: datetime | None = None,
    local_approval: LocalApproval | None = None,
) -> Execution:
    """Run ``spec`` at most once and return its result (see the module docstring).

    The job is journaled as started before anything is computed and its result
    stored before this returns; a job already in the journal is never run again:
    a finished one returns its stored result, one caught mid-run by a crash ends
    as ``failed`` with ``node_restarted``.

    Parameters
    ----------
    spec
        The dispatched job.
    dataset
        The dataset the job names, as the node serves it (``None``: not served
        here).
    state
        The node's state (journal, budgets, replay cache).
    grams
        The DP Gram cache.
    identity
        The node's id and signing key (receipts).
    inputs
        Where input blobs and the buyer's context come from.
    now
        The current time (default: now, UTC).
    local_approval
        Set when the node decides approvals itself (``approve_locally``): a job
        whose policy asks for human approval then needs ``decision`` to be an
        approval made at the node, whatever the exchange recorded.

    Returns
    -------
    Execution
        The :class:`~mpc_engine.protocol.JobResult` and its output blobs.
    """
    known = state.job(spec.job_id)
    if known is not None:
        if known.state is JournalState.STARTED:
            logger.warning(
                "job %s was interrupted by a restart; reporting it failed", spec.job_id
            )
            restarted = _fail(
                ReasonCode.NODE_RESTARTED,
                "the node restarted while the job was running; it was not re-run",
            )
            result = _stopped(restarted, spec, dataset, state)
            state.finish_job(spec.job_id, result, {})
            return Execution(result, {}, replayed_from_journal=True)
        assert known.result is not None  # noqa: S101 - finished rows have a result
        return Execution(known.result, state.blobs(spec.job_id), True)
    if not state.start_job(spec):  # pragma: no cover - raced with another caller
        raise StateError(f"job {spec.job_id} was journaled concurrently")
    moment = now or utc_now()
    job: _Job | None = None
    try:
        served = _admit(spec, dataset, state, moment, local_approval)
        params = _parse(spec)
        job = _Job(spec, served, state, grams, inputs, params)
        success = _RUNNERS[spec.kind](job)
        charged = job.commit()
    except _Stop as stop:
        if job is not None:
            job.release_all()
        logger.info("job %s %s: %s", spec.job_id, stop.outcome.value, stop.code.value)
        result = _stopped(stop, spec, dataset, state)
        state.finish_job(spec.job_id, result, {})
        return Execution(result, {})
    except Exception as exc:  # noqa: BLE001 - any failure ends the job, named
        if job is not None:
            job.release_all()
        logger.error(
            "job %s failed at the node: %s: %s", spec.job_id, type(exc).__name__, exc
        )
        crashed = _fail(
            ReasonCode.NODE_ERROR,
            f"internal error at the node ({type(exc).__name__}); the provider can "
            "find the details in the node's log",
        )
        result = _stopped(crashed, spec, dataset, state)
        state.finish_job(spec.job_id, result, {})
        return Execution(result, {})
    except BaseException:  # interrupted: the journal keeps it "started"
        if job is not None:
            job.release_all()
        raise
    job.effects.queries += 1
    served = job.served
    blob_hashes = {name: sha256_hex(data) for name, data in success.blobs.items()}
    receipt = Receipt(
        job_id=spec.job_id,
        node_id=identity.node_id,
        dataset_id=spec.dataset_id,
        dataset_version_hash=served.data.content_hash,
        policy_hash=served.policy_hash,
        kind=spec.kind,
        params_hash=params_hash(job.params.model_dump(mode="json")),
        inputs_hash=inputs_hash(spec.inputs, spec.context_id),
        privacy_loss=Loss(epsilon=charged.epsilon, delta=charged.delta),
        replayed=success.replayed,
        output_hash=output_hash(success.output, blob_hashes),
        issued_at=iso_utc(utc_now()),
    )
    result = JobResult(
        outcome=JobOutcome.SUCCEEDED,
        output=success.output,
        output_blobs=blob_hashes,
        receipt=SignedReceipt.sign(receipt, identity.key),
        budget=_budget(served, state, spec, job.accountant, job.effects),
    )
    state.finish_job(spec.job_id, result, success.blobs, job.effects)
    logger.info(
        "job %s succeeded (%s, ε=%g, δ=%g%s)",
        spec.job_id,
        spec.kind.value,
        charged.epsilon,
        charged.delta,
        ", replayed" if success.replayed else "",
    )
    return Execution(result, dict(success.blobs))


def _stopped(
    stop: _Stop, spec: JobSpec, dataset: ServedDataset | None, state: NodeState
) -> JobResult:
    budget: list[BudgetUsage] = []
    if dataset is not None and dataset.dataset_id == spec.dataset_id:
        accountant = state.accountant(dataset.dataset_id, dataset.policy)
        budget = _budget(dataset, state, spec, accountant, None)
    reason = (
        stop.reason
        if len(stop.reason) <= _MAX_REASON
        else (stop.reason[: _MAX_REASON - 1] + "…")
    )
    return JobResult(
        outcome=stop.outcome, reason_code=stop.code, reason=reason, budget=budget
    )


def _budget(
    served: ServedDataset,
    state: NodeState,
    spec: JobSpec,
    accountant: PrivacyAccountant,
    effects: Effects | None,
) -> list[BudgetUsage]:
    """Snapshots after this job: the buyer's row and the dataset's total."""
    policy = served.policy
    add_q = effects.queries if effects else 0
    add_r = effects.inference_rows if effects else 0
    mine = state.usage(served.dataset_id, spec.buyer_id)
    total = state.usage(served.dataset_id, None)
    spent_mine = accountant.spent(str(spec.buyer_id))
    spent_all = accountant.spent()
    return [
        BudgetUsage(
            dataset_id=served.dataset_id,
            buyer_id=spec.buyer_id,
            epsilon_spent=spent_mine.epsilon,
            delta_spent=spent_mine.delta,
            epsilon_budget=policy.budget_per_buyer.epsilon,
            delta_budget=policy.budget_per_buyer.delta,
            queries=mine.queries + add_q,
            inference_rows=mine.inference_rows + add_r,
        ),
        BudgetUsage(
            dataset_id=served.dataset_id,
            buyer_id=None,
            epsilon_spent=spent_all.epsilon,
            delta_spent=spent_all.delta,
            epsilon_budget=policy.budget_per_dataset.epsilon,
            delta_budget=policy.budget_per_dataset.delta,
            queries=total.queries + add_q,
            inference_rows=total.inference_rows + add_r,
        ),
    ]


# -- admission -------------------------------------------------------------------------


def _short(digest: str) -> str:
    return digest[:12] + "…"


def _admit(
    spec: JobSpec,
    dataset: ServedDataset | None,
    state: NodeState,
    now: datetime,
    local: LocalApproval | None = None,
) -> ServedDataset:
    if now >= spec.deadline:
        raise _fail(
            ReasonCode.TIMEOUT,
            "the job's deadline passed before the node could run it",
        )
    if dataset is None or dataset.dataset_id != spec.dataset_id:
        raise _reject(
            ReasonCode.DATASET_VERSION_UNAVAILABLE,
            f"dataset {spec.dataset_id} is not served by this node",
        )
    if spec.content_hash != dataset.data.content_hash:
        raise _reject(
            ReasonCode.DATASET_VERSION_UNAVAILABLE,
            f"the job is for version {_short(spec.content_hash)}; this node serves "
            f"version {_short(dataset.data.content_hash)} of the dataset",
        )
    if spec.policy_hash != dataset.policy_hash:
        raise _reject(
            ReasonCode.POLICY_CHANGED,
            f"the job was admitted under policy {_short(spec.policy_hash)}; the node "
            f"enforces policy {_short(dataset.policy_hash)}",
        )
    policy = dataset.policy
    if spec.kind.value not in {k.value for k in policy.permitted_kinds}:
        raise _reject(
            ReasonCode.KIND_NOT_PERMITTED,
            f"kind: {spec.kind.value!r} is not permitted by the policy (permitted: "
            f"{', '.join(k.value for k in policy.permitted_kinds)})",
        )
    if spec.purpose in policy.prohibitions:
        raise _reject(
            ReasonCode.PURPOSE_NOT_PERMITTED,
            f"purpose: {spec.purpose!r} is prohibited by the policy",
        )
    if spec.purpose not in policy.purposes:
        raise _reject(
            ReasonCode.PURPOSE_NOT_PERMITTED,
            f"purpose: {spec.purpose!r} is not a permitted purpose (permitted: "
            f"{', '.join(policy.purposes)})",
        )
    if spec.buyer_region not in policy.regions:
        raise _reject(
            ReasonCode.REGION_NOT_PERMITTED,
            f"buyer_region: {spec.buyer_region} is not a permitted region "
            f"(permitted: {', '.join(policy.regions)})",
        )
    if policy.expires_at is not None and now >= policy.expires_at:
        raise _reject(
            ReasonCode.POLICY_EXPIRED,
            f"the policy expired at {iso_utc(policy.expires_at)}",
        )
    if policy.human_approval and not spec.approved_by:
        raise _reject(
            ReasonCode.POLICY_VIOLATION,
            "approved_by: the policy requires human approval and the job carries none",
        )
    if policy.human_approval and local is not None:
        decision = local.decision
        if decision is None:
            raise _reject(
                ReasonCode.POLICY_VIOLATION,
                "the node requires its own approval (veilx node approve) and has none",
            )
        if not decision.approved:
            why = f": {decision.note}" if decision.note else ""
            raise _reject(
                ReasonCode.DENIED, f"denied at the node by {decision.decided_by}{why}"
            )
    limit = policy.max_queries_per_buyer
    if limit is not None:
        used = state.usage(dataset.dataset_id, spec.buyer_id).queries
        if used >= limit:
            raise _reject(
                ReasonCode.QUERY_LIMIT,
                f"the buyer has used {used} of its {limit} queries on this dataset",
            )
    return dataset


def _parse(spec: JobSpec) -> BaseModel:
    try:
        params = parse_params(spec.kind, spec.params)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"params.{loc}" if loc else "params"
        message = str(first["msg"]).removeprefix("Value error, ")
        named = re.match(r"^([a-z_][a-z0-9_]*): (.+)$", message, re.DOTALL)
        if not loc and named:  # a model rule that names its field
            where, message = f"params.{named.group(1)}", named.group(2)
        raise _reject(ReasonCode.INVALID_PARAMS, f"{where}: {message}") from None
    want = set(INPUTS_BY_KIND[spec.kind])
    got = set(spec.inputs)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(extra)}"] if extra else []
        raise _reject(
            ReasonCode.INVALID_INPUT,
            f"inputs: {spec.kind.value} takes {sorted(want)}; " + "; ".join(parts),
        )
    wanted = needs_context(spec.kind, params)
    if wanted and spec.context_id is None:
        raise _reject(
            ReasonCode.INVALID_CONTEXT,
            f"context_id: required for this {spec.kind.value} job",
        )
    if not wanted and spec.context_id is not None:
        raise _reject(
            ReasonCode.INVALID_CONTEXT,
            "context_id: this job returns no ciphertext; it takes no context",
        )
    return params


# -- aggregate -----------------------------------------------------------------------


def _run_aggregate(job: _Job) -> _Success:
    assert isinstance(job.params, AggregateParams)  # noqa: S101 - _parse made it
    request = AggregateRequest.model_validate(
        job.params.model_dump(exclude={"encrypt_result"})
    )
    served = job.served
    replayed = False
    key: ReleaseKey | None = None
    stored = None
    if request.mode is Mode.DP:
        key = ReleaseKey.for_question(
            dataset_version=served.data.content_hash,
            buyer=job.buyer,
            params=request.release_params(),
        )
        stored = job.state.release(key.digest)
    if stored is not None:
        output = stored
        replayed = True
    else:
        reservation = (
            job.reserve(request.planned_loss()) if request.mode is Mode.DP else None
        )
        try:
            result = run_aggregate(request, served.data.table, served.policy)
        except PolicyViolation as exc:
            raise _reject(ReasonCode.POLICY_VIOLATION, str(exc)) from None
        except (RequestMismatch, FilterError) as exc:
            raise _reject(ReasonCode.INVALID_PARAMS, str(exc)) from None
        except InvalidParameter as exc:
            raise _reject(ReasonCode.INVALID_PARAMS, str(exc)) from None
        except SchemaError as exc:  # the provider's data, never shown to a buyer
            logger.error("dataset %s: schema error: %s", served.dataset_id, exc)
            raise _fail(
                ReasonCode.NODE_ERROR,
                "the dataset does not match its declared schema at the node",
            ) from None
        output = result.as_dict()
        if reservation is not None and key is not None:
            job.spend(reservation, result.privacy_loss)
            job.effects.release = (key.digest, output)
    blobs: dict[str, bytes] = {}
    if job.params.encrypt_result:
        skeleton, values = flatten_aggregate(output)
        context = job.context(galois=False)
        if len(values) > context.slot_count:
            raise _reject(
                ReasonCode.INVALID_PARAMS,
                f"encrypt_result: the result has {len(values)} numbers; one "
                f"ciphertext of this context holds {context.slot_count} (ask for "
                "fewer groups, columns or bins)",
            )
        try:
            vector = encrypt_values(context, values or [0.0])
        except ValueOutOfRange as exc:
            raise _reject(
                ReasonCode.INVALID_CONTEXT,
                f"context_id: the result does not fit this context's parameters "
                f"({exc.reason})",
            ) from None
        blobs["values"] = vector.to_bytes()
        output = {**skeleton, "encrypted": True}
    return _Success(output, blobs, replayed)


# -- encrypted model evaluation --------------------------------------------------------


def _eval_bounds(job: _Job, params: ModelEvalParams) -> GramBounds:
    policy = job.served.policy
    types = job.served.data.column_types
    for where, name in [
        *(("features", f) for f in params.features),
        ("label", params.label),
    ]:
        kind = types.get(name)
        if kind is None:
            raise _reject(
                ReasonCode.INVALID_PARAMS,
                f"params.{where}: the dataset has no column {name!r}",
            )
        if name not in policy.permitted_columns:
            raise _reject(
                ReasonCode.POLICY_VIOLATION,
                f"params.{where}: column {name!r} is not permitted by the policy",
            )
        if kind not in ("integer", "float", "boolean"):
            raise _reject(
                ReasonCode.INVALID_PARAMS,
                f"params.{where}: column {name!r} is {kind}; only numeric and "
                "boolean columns can be model features or labels",
            )
        if kind != "boolean" and name not in policy.column_bounds:
            raise _reject(
                ReasonCode.POLICY_VIOLATION,
                f"params.{where}: column {name!r} has no bounds in the policy; "
                "encrypted_model_eval clamps every column to its bounds",
            )
    try:
        bounds = model_eval_bounds(policy, types, params.features, params.label)
    except InvalidMessage as exc:
        raise _reject(ReasonCode.INVALID_PARAMS, str(exc)) from None
    lo, hi = bounds.label
    if params.model_kind is ModelKind.LOGISTIC and not (0.0 <= lo and hi <= 1.0):
        raise _reject(
            ReasonCode.INVALID_PARAMS,
            f"params.label: a logistic model needs labels within [0, 1]; column "
            f"{params.label!r} is bounded by ({lo:g}, {hi:g})",
        )
    return bounds


def _as_float(values: NDArray[Any]) -> NDArray[np.float64]:
    if values.dtype.kind == "f":
        return values
    out = np.full(values.shape[0], np.nan)
    out[values == True] = 1.0  # noqa: E712 - object array of bool/None
    out[values == False] = 0.0  # noqa: E712
    return out


def _make_release(
    job: _Job, features: list[str], label: str, bounds: GramBounds
) -> GramRelease:
    """Reduce the rows to a Gram matrix and perturb it (one DP release)."""
    data = job.served.data
    config = job.served.config
    x = np.column_stack([_as_float(data.columns[f]) for f in features])
    y = _as_float(data.columns[label])
    complete = np.isfinite(x).all(axis=1) & np.isfinite(y)
    n = int(complete.sum())
    k = job.served.policy.min_group_size
    if n < max(k, 2):
        raise _reject(
            ReasonCode.POLICY_VIOLATION,
            f"fewer than the policy's minimum group size ({k}) of rows have every "
            "requested column present",
        )
    gram = gram_matrix(x[complete], y[complete], bounds)
    sens = sensitivity(bounds, n - 1).moments  # n − 1 covers add/remove as well
    rows, _ = Gram.noise_indices(gram.dim)
    zeros = np.zeros(rows.shape[0])
    epsilon, delta = config.model_eval_epsilon, config.model_eval_delta
    if delta == 0:
        noisy = add_noise(
            zeros, mechanism=Mechanism.LAPLACE, sensitivity=sens.l1, epsilon=epsilon
        )
    else:
        noisy = add_noise(
            zeros,
            mechanism=Mechanism.GAUSSIAN,
            sensitivity=sens.l2,
            epsilon=epsilon,
            delta=delta,
        )
    perturbed = gram.perturbed(noisy.value)
    release = GramRelease(
        perturbed, tuple(features), label, noisy.loss, noisy.mechanism.value
    )
    job.grams.put(data.content_hash, epsilon, delta, release)
    logger.info(
        "dataset %s: new DP Gram release %s (d=%d, %s)",
        data.dataset_id,
        release.release_id[:12],
        len(features),
        noisy.mechanism.value,
    )
    return release


def _in_order(release: GramRelease, features: list[str]) -> Gram:
    """The release's Gram with its feature columns in the buyer's order."""
    position = {name: i for i, name in enumerate(release.features)}
    d = len(features)
    perm = [0, *(1 + position[f] for f in features), d + 1]
    moments = np.array(release.gram.moments[np.ix_(perm, perm)])
    moments.setflags(write=False)
    bounds = GramBounds(
        tuple(release.gram.bounds.features[position[f]] for f in features),
        release.gram.bounds.label,
    )
    return Gram(moments, release.gram.n_rows, bounds, is_perturbed=True)


def _load_vector(job: _Job, name: str, context: PublicContext) -> bytes:
    data = job.blob(name)
    try:
        EncryptedVector.from_bytes(context, data, fresh=True)
    except (MalformedBytes, ContextMismatch, InvalidInput) as exc:
        raise _reject(ReasonCode.INVALID_INPUT, f"inputs.{name}: {exc}") from None
    return data


def _run_model_eval(job: _Job) -> _Success:
    params = job.params
    assert isinstance(params, ModelEvalParams)  # noqa: S101 - _parse made it
    bounds = _eval_bounds(job, params)
    config = job.served.config
    canonical = sorted(params.features)
    sorted_bounds = GramBounds(
        tuple(bounds.features[params.features.index(f)] for f in canonical),
        bounds.label,
    )
    content_hash = job.served.data.content_hash
    eps, dlt = config.model_eval_epsilon, config.model_eval_delta
    release = job.grams.get(content_hash, canonical, params.label, eps, dlt)
    dataset_id = job.served.dataset_id
    charge = release is None or not job.state.gram_charged(
        dataset_id, job.spec.buyer_id, release.release_id
    )
    # One release costs the data subjects once: a buyer re-using a release the
    # dataset's total already counts is charged to its own budget only.
    counted = release is not None and job.state.gram_charged(
        dataset_id, None, release.release_id
    )
    reservation = None
    if charge:
        planned = PrivacyLoss(eps, dlt) if release is None else release.loss
        reservation = job.reserve(planned, dataset=not counted)
    context = job.context(galois=True)
    outer = _load_vector(job, "outer", context)
    linear = _load_vector(job, "linear", context)
    try:
        model = EncryptedModel.from_bytes(
            context,
            kind=params.model_kind,
            n_features=len(params.features),
            outer=outer,
            linear=linear,
        )
    except (MalformedBytes, ContextMismatch, InvalidInput) as exc:
        raise _reject(ReasonCode.INVALID_INPUT, f"inputs: {exc}") from None
    if release is None:
        release = _make_release(job, canonical, params.label, sorted_bounds)
    try:
        metrics = evaluate_model(context, _in_order(release, params.features), model)
    except (ContextMismatch, InvalidInput) as exc:
        raise _reject(ReasonCode.INVALID_INPUT, f"inputs: {exc}") from None
    if reservation is not None:
        job.spend(reservation, release.loss)
        job.effects.gram_charge = release.release_id
        if reservation.dataset:
            job.effects.gram_dataset_charge = release.release_id
    output = {
        "model_kind": params.model_kind.value,
        "n_features": len(params.features),
        "label_bounds": list(metrics.label_bounds),
        "noise_std": list(metrics.noise_std),
        "gram_privacy_loss": release.loss.as_dict(),
    }
    blobs = {
        "loss": metrics.loss.to_bytes(),
        "mean_score": metrics.mean_score.to_bytes(),
    }
    return _Success(output, blobs)


# -- encrypted inference -------------------------------------------------------------


def _run_inference(job: _Job) -> _Success:
    params = job.params
    assert isinstance(params, InferenceParams)  # noqa: S101 - _parse made it
    model = job.served.models.get(params.model)
    if model is None:
        known = ", ".join(sorted(job.served.models)) or "none"
        raise _reject(
            ReasonCode.INVALID_PARAMS,
            f"params.model: {params.model!r} is not a model of this dataset "
            f"(registered: {known})",
        )
    budget = job.served.policy.inference_row_budget
    if budget is None:  # the policy requires it when the kind is permitted
        raise _reject(
            ReasonCode.POLICY_VIOLATION,
            "the policy sets no inference_row_budget",
        )
    used = job.state.usage(job.served.dataset_id, job.spec.buyer_id).inference_rows
    if used + params.n_rows > budget:
        raise _reject(
            ReasonCode.ROW_BUDGET_EXHAUSTED,
            f"the buyer has scored {used} of its {budget} rows on this dataset; "
            f"this job needs {params.n_rows}",
        )
    context = job.context(galois=False)
    data = job.blob("columns")
    try:
        rows = unpack_bundle(data, field="inputs.columns")
        columns = EncryptedColumns.from_bytes(context, rows)
    except InvalidMessage as exc:
        raise _reject(ReasonCode.INVALID_INPUT, str(exc)) from None
    except (MalformedBytes, ContextMismatch, InvalidInput) as exc:
        raise _reject(ReasonCode.INVALID_INPUT, f"inputs.columns: {exc}") from None
    if columns.n_rows != params.n_rows:
        raise _reject(
            ReasonCode.INVALID_INPUT,
            f"inputs.columns: holds {columns.n_rows} rows; params.n_rows says "
            f"{params.n_rows}",
        )
    if columns.n_features != len(model.features):
        raise _reject(
            ReasonCode.INVALID_INPUT,
            f"inputs.columns: has {columns.n_features} feature columns; model "
            f"{model.name!r} takes {len(model.features)} ({', '.join(model.features)})",
        )
    scores = score_linear(context, columns, model.weights, model.bias)
    job.effects.inference_rows += params.n_rows
    output = {
        "model": model.name,
        "n_rows": params.n_rows,
        "noise_std": scores.noise_std,
    }
    bundle = pack_bundle([[vec.to_bytes() for vec in scores.batches]])
    return _Success(output, {"scores": bundle})


_RUNNERS: Mapping[JobKind, Callable[[_Job], _Success]] = {
    JobKind.AGGREGATE: _run_aggregate,
    JobKind.ENCRYPTED_MODEL_EVAL: _run_model_eval,
    JobKind.ENCRYPTED_INFERENCE: _run_inference,
}

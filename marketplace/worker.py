"""The exchange worker: the job deadline sweep.

:func:`sweep` ends the jobs whose deadline passed — ``queued`` ones expire
(``not_picked_up``), ``awaiting_approval`` ones expire (``not_approved_in_time``),
``dispatched`` and ``running`` ones fail (``timeout``) — and re-sends a wake-up
for every job still queued, so a wake-up lost on the way (a process restart, a
Redis hiccup) only delays a job by one interval.

Every change is one conditional ``UPDATE … WHERE state = ? AND deadline <= ?``:
running the sweep twice, or in several workers at once, ends each job once. It
runs in ``veilx worker`` (production, with Redis) or in a daemon thread of
``veilx serve`` on the embedded defaults (:class:`Sweeper`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select

from marketplace.db import Database
from marketplace.models import Job, utcnow
from marketplace.payments import CreditsProvider, PaymentProvider
from marketplace.queue import JobQueue
from marketplace.services.jobs import can_move
from marketplace.services.trading import Billing, TradingConfig
from mpc_engine.protocol import JobState, ReasonCode

__all__ = ["SweepReport", "Sweeper", "run_worker", "sweep"]

log = logging.getLogger("veilx.worker")

S = JobState

_DEADLINE_RULES: tuple[tuple[JobState, JobState, ReasonCode, str], ...] = (
    (
        S.AWAITING_APPROVAL,
        S.EXPIRED,
        ReasonCode.NOT_APPROVED_IN_TIME,
        "the provider did not approve the job before its deadline",
    ),
    (
        S.QUEUED,
        S.EXPIRED,
        ReasonCode.NOT_PICKED_UP,
        "no data node picked the job up before its deadline",
    ),
    (
        S.DISPATCHED,
        S.FAILED,
        ReasonCode.TIMEOUT,
        "the data node did not finish the job before its deadline",
    ),
    (
        S.RUNNING,
        S.FAILED,
        ReasonCode.TIMEOUT,
        "the data node did not finish the job before its deadline",
    ),
)
"""(from, to, code, reason) for jobs past their deadline."""


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    not_approved: int
    not_picked_up: int
    timed_out: int
    renotified: int
    charges_voided: int = 0
    entitlements_ended: int = 0
    entitlements_finalized: int = 0

    def __str__(self) -> str:
        return (
            f"expired {self.not_approved} unapproved and {self.not_picked_up} "
            f"unclaimed jobs, timed out {self.timed_out}, re-notified "
            f"{self.renotified} queued; voided {self.charges_voided} charges, "
            f"ended {self.entitlements_ended} and finalized "
            f"{self.entitlements_finalized} entitlements"
        )


def sweep(
    db: Database,
    queue: JobQueue,
    now: datetime | None = None,
    *,
    payments: Mapping[str, PaymentProvider] | None = None,
    trading: TradingConfig | None = None,
) -> SweepReport:
    """End jobs past their deadline and re-notify queued ones (idempotent).

    Then the money side: void the reservations of jobs that ended without a
    release, end expired or used-up entitlements, and finalise ended ones with
    their payment provider (which also reconciles one a crash left half done).
    """
    now = now or utcnow()
    counts: dict[ReasonCode, int] = dict.fromkeys(ReasonCode, 0)
    with db.session() as session:
        for current, to, code, reason in _DEADLINE_RULES:
            if not can_move(current, to):  # the table in services.jobs decides
                raise RuntimeError(f"sweep rule {current} → {to} is not a transition")
            result = session.execute(
                update(Job)
                .where(col(Job.state) == current.value, col(Job.deadline) <= now)
                .values(
                    state=to.value,
                    reason_code=code.value,
                    reason=reason,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            counts[code] += result.rowcount  # type: ignore[attr-defined]
            session.commit()
        queued = session.exec(
            select(Job.node_id, Job.id)
            .where(col(Job.state) == S.QUEUED.value, col(Job.deadline) > now)
            .order_by(col(Job.created_at))
        ).all()
        session.commit()
    for node_id, job_id in queued:
        queue.notify(node_id, job_id)
    with db.session() as session:
        billing = Billing(
            session,
            trading or TradingConfig(),
            payments if payments is not None else {"credits": CreditsProvider()},
        )
        voided = billing.void_ended_jobs()
        ended = billing.expire(now)
        finalized = billing.finalize_due()
    report = SweepReport(
        not_approved=counts[ReasonCode.NOT_APPROVED_IN_TIME],
        not_picked_up=counts[ReasonCode.NOT_PICKED_UP],
        timed_out=counts[ReasonCode.TIMEOUT],
        renotified=len(queued),
        charges_voided=voided,
        entitlements_ended=ended,
        entitlements_finalized=finalized,
    )
    if (
        report.not_approved
        or report.not_picked_up
        or report.timed_out
        or voided
        or ended
        or finalized
    ):
        log.info("sweep: %s", report)
    return report


def run_worker(
    db: Database,
    queue: JobQueue,
    interval: float,
    stop: threading.Event,
    *,
    payments: Mapping[str, PaymentProvider] | None = None,
    trading: TradingConfig | None = None,
) -> None:
    """Sweep every ``interval`` seconds until ``stop`` is set.

    A failed sweep (the database restarting, say) is logged and retried at the
    next interval; it never ends the loop.
    """
    while not stop.is_set():
        try:
            sweep(db, queue, payments=payments, trading=trading)
        except Exception:  # logged; the next sweep retries
            log.exception("job sweep failed; retrying in %.1f s", interval)
        stop.wait(interval)


class Sweeper:
    """:func:`run_worker` in a daemon thread (the embedded ``veilx serve``)."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        interval: float,
        *,
        payments: Mapping[str, PaymentProvider] | None = None,
        trading: TradingConfig | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=run_worker,
            args=(db, queue, interval, self._stop),
            kwargs={"payments": payments, "trading": trading},
            name="veilx-sweeper",
            daemon=True,
        )

    def start(self) -> None:
        """Start sweeping."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current sweep."""
        self._stop.set()
        self._thread.join(timeout)

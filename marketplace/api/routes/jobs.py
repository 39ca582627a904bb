"""Jobs: buyers submit and read, providers approve or deny, nodes run them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from marketplace.api.deps import JobsDep, allow
from marketplace.models import (
    JobApproval,
    JobDenial,
    JobPage,
    JobPublic,
    JobSubmission,
    ReceiptPublic,
    Role,
)
from marketplace.services.identity import Caller
from mpc_engine.protocol import JobResult, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Buyer = Annotated[Caller, allow(Role.BUYER)]
Provider = Annotated[Caller, allow(Role.PROVIDER)]
Member = Annotated[Caller, allow()]


@router.post("", status_code=201, operation_id="create_job")
def create_job(body: JobSubmission, caller: Buyer, jobs: JobsDep) -> JobPublic:
    """Submit a computation on a listed dataset; it is routed to the dataset's node.

    The job awaits the provider's approval when the policy asks for it, else it
    is queued at once.
    """
    return jobs.create(caller, body)


@router.get("", operation_id="list_jobs")
def list_jobs(
    caller: Member,
    jobs: JobsDep,
    state: Annotated[list[JobState], Query(max_length=9)] = [],  # noqa: B006
    dataset_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    """List jobs, newest first, one page at a time.

    A buyer's own, those on a provider's datasets, all for the operator and the
    regulator.
    """
    return jobs.list_visible(
        caller, states=state, dataset_id=dataset_id, limit=limit, cursor=cursor
    )


@router.get("/{job_id}", operation_id="get_job")
def get_job(job_id: uuid.UUID, caller: Member, jobs: JobsDep) -> JobPublic:
    """A job: to its buyer, the dataset's provider, the operator, the regulator."""
    return jobs.get(caller, job_id)


@router.post("/{job_id}/approve", operation_id="approve_job")
def approve_job(
    job_id: uuid.UUID,
    caller: Provider,
    jobs: JobsDep,
    body: JobApproval | None = None,
) -> JobPublic:
    """Approve a job awaiting approval (the dataset's provider); it is queued."""
    return jobs.approve(caller, job_id, body or JobApproval())


@router.post("/{job_id}/deny", operation_id="deny_job")
def deny_job(
    job_id: uuid.UUID, body: JobDenial, caller: Provider, jobs: JobsDep
) -> JobPublic:
    """Refuse a job awaiting approval (the dataset's provider), with a reason."""
    return jobs.deny(caller, job_id, body)


@router.post("/{job_id}/start", operation_id="start_job")
def start_job(job_id: uuid.UUID, caller: Provider, jobs: JobsDep) -> JobPublic:
    """The node marks a job dispatched to it as running."""
    return jobs.start(caller, job_id)


@router.post("/{job_id}/result", operation_id="submit_job_result")
def submit_job_result(
    job_id: uuid.UUID, body: JobResult, caller: Provider, jobs: JobsDep
) -> JobPublic:
    """The node ends a job: output and signed receipt, or a failure or refusal."""
    return jobs.submit_result(caller, job_id, body)


@router.get("/{job_id}/receipt", operation_id="get_job_receipt")
def get_job_receipt(job_id: uuid.UUID, caller: Member, jobs: JobsDep) -> ReceiptPublic:
    """A succeeded job's receipt, verified, with the node's public key."""
    return jobs.receipt(caller, job_id)

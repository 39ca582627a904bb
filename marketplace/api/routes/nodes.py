"""Data nodes: registration, attestations, and the node's side of job dispatch.

A node calls these with an API key of its provider organisation; the service
checks that the node (``{node_id}``) belongs to that organisation.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, FastAPI, Query, Request, Response

from marketplace.api.deps import JobsDep, NodesDep, allow
from marketplace.models import AttestationPublic, NodeCreate, NodePublic, Role
from marketplace.services.identity import Caller
from marketplace.services.jobs import NODE_LISTABLE_STATES
from mpc_engine.protocol import JobSpec, JobState, SignedAttestation

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])

Provider = Annotated[Caller, allow(Role.PROVIDER)]
Overseer = Annotated[Caller, allow(Role.PROVIDER, Role.OPERATOR, Role.REGULATOR)]
Member = Annotated[Caller, allow()]

MAX_WAITING_POLLS = 256
"""Long polls waiting at once per process, in threads of their own: waiting never
takes a thread from the pool that runs the other (synchronous) endpoints."""

MAX_WAIT_SECONDS = 30


def _poll_limiter(app: FastAPI) -> anyio.CapacityLimiter:
    limiter = getattr(app.state, "poll_limiter", None)
    if limiter is None:
        limiter = app.state.poll_limiter = anyio.CapacityLimiter(MAX_WAITING_POLLS)
    return limiter


@router.post("", status_code=201, operation_id="register_node")
def register_node(body: NodeCreate, caller: Provider, nodes: NodesDep) -> NodePublic:
    """Register a data node of the caller's organisation by its Ed25519 key."""
    return nodes.register(caller, body)


@router.get("", operation_id="list_nodes")
def list_nodes(caller: Overseer, nodes: NodesDep) -> list[NodePublic]:
    """A provider's own nodes; every node for the operator and the regulator."""
    return nodes.list_visible(caller)


@router.get("/{node_id}", operation_id="get_node")
def get_node(node_id: uuid.UUID, caller: Member, nodes: NodesDep) -> NodePublic:
    """A node's record; its public key verifies its receipts and attestations."""
    return nodes.get(caller, node_id)


@router.post(
    "/{node_id}/attestations", status_code=201, operation_id="submit_attestation"
)
def submit_attestation(
    node_id: uuid.UUID, body: SignedAttestation, caller: Provider, nodes: NodesDep
) -> AttestationPublic:
    """Post a signed quality attestation of a dataset version.

    The signature must verify under the node's key and the content hash must be a
    version of one of the organisation's datasets; the node then serves it.
    """
    return nodes.attest(caller, node_id, body)


@router.get(
    "/{node_id}/jobs/next",
    operation_id="next_job",
    response_model=JobSpec,
    responses={204: {"description": "No job arrived within `wait` seconds."}},
)
async def next_job(
    node_id: uuid.UUID,
    caller: Provider,
    jobs: JobsDep,
    request: Request,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for a job (long poll).",
        ),
    ] = 0,
) -> JobSpec | Response:
    """Claim the node's next queued job (it becomes ``dispatched``), or 204."""
    spec = await anyio.to_thread.run_sync(
        partial(jobs.next_for_node, caller, node_id, wait),
        limiter=_poll_limiter(request.app),
    )
    if spec is None:
        return Response(status_code=204)
    return spec


@router.get("/{node_id}/jobs", operation_id="list_node_jobs")
def list_node_jobs(
    node_id: uuid.UUID,
    caller: Provider,
    jobs: JobsDep,
    state: Annotated[
        list[JobState],
        Query(max_length=2, description="dispatched and/or running (the default)."),
    ] = list(NODE_LISTABLE_STATES),  # noqa: B006 - never mutated
) -> list[JobSpec]:
    """The node's dispatched and running jobs, to resume or fail after a restart."""
    return jobs.node_jobs(caller, node_id, state)

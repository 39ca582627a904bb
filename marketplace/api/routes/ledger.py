"""The ledger: receipt inclusion proofs, the regulator's verification, chain reads."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body

from marketplace.api.deps import JobsDep, LedgerDep, allow
from marketplace.models import LedgerStatus, ReceiptProof, Role, VerifyReport
from marketplace.services.identity import Caller

router = APIRouter(tags=["ledger"])

Member = Annotated[Caller, allow()]
Overseer = Annotated[Caller, allow(Role.REGULATOR, Role.OPERATOR)]


@router.get("/v1/receipts/{job_id}/proof", operation_id="get_receipt_proof")
def get_receipt_proof(
    job_id: uuid.UUID, caller: Member, jobs: JobsDep, ledger: LedgerDep
) -> ReceiptProof:
    """The inclusion proof of a job's receipt in its anchored Merkle batch.

    To whoever may see the job. Check it against the chain:
    ``ReceiptAnchor.rootOf(anchor.batch_id)`` must equal ``root``, and folding
    ``leaf`` with ``proof`` (sorted-pair keccak-256) must give ``root``. 409
    ``receipt_not_anchored`` until the relay has anchored the batch.
    """
    jobs.get(caller, job_id)  # visibility: 404 when hidden
    return ledger.proof(job_id)


@router.get("/v1/ledger", operation_id="get_ledger_status")
def get_ledger_status(caller: Overseer, ledger: LedgerDep) -> LedgerStatus:
    """The contracts' addresses, the chain head and the outbox backlog."""
    return ledger.status()


@router.get("/v1/ledger/verify", operation_id="verify_ledger")
def verify_ledger(caller: Overseer, ledger: LedgerDep) -> VerifyReport:
    """Recompute every asset, trade and receipt and match it against the chain.

    ``ok`` is true when nothing differs; otherwise ``mismatches`` names each record
    that does not match, the field, and both values.
    """
    return ledger.verify()


@router.post("/v1/ledger/rpc", operation_id="ledger_rpc")
def ledger_rpc(
    caller: Member,
    ledger: LedgerDep,
    body: Annotated[dict[str, Any], Body(description="A JSON-RPC 2.0 request.")],
) -> dict[str, Any]:
    """Read-only JSON-RPC to the exchange's chain (calls, logs, receipts, blocks).

    For clients of the embedded chain, which has no node of its own; with a
    JSON-RPC deployment, query your own node instead.
    """
    return ledger.rpc(body)

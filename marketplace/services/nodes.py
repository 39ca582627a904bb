"""Data nodes: registration, ownership, quality attestations and dataset routing.

A node belongs to a provider organisation and is identified by its Ed25519
public key, which verifies everything it signs. Node endpoints act on behalf of
the node's organisation: any admitted organisation may read a node's record (to
verify receipts), only its own organisation may act as it (403 otherwise).

An attestation binds the dataset to the node that sent it (``node_dataset``);
jobs on the dataset are routed there. When a dataset moves to another node, its
jobs that were not dispatched yet move with it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from marketplace.errors import (
    BadSignature,
    NotFound,
    PermissionDenied,
    PublicKeyTaken,
    UnknownVersion,
    ValidationFailed,
)
from marketplace.models import (
    AttestationPublic,
    Dataset,
    DatasetStatus,
    DatasetVersion,
    Job,
    Node,
    NodeAttestation,
    NodeCreate,
    NodeDataset,
    NodePublic,
    Role,
    VersionAttestationPublic,
    utcnow,
)
from marketplace.queue import JobQueue
from marketplace.services.identity import Caller
from mpc_engine import protocol
from mpc_engine.protocol import Attestation, JobState, SignedAttestation

__all__ = ["NodeService", "latest_attestations"]

LAST_SEEN_RESOLUTION = timedelta(seconds=5)
"""``node.last_seen_at`` is written at most this often per node."""


def latest_attestations(
    session: Session, version_ids: list[uuid.UUID]
) -> dict[uuid.UUID, VersionAttestationPublic]:
    """The latest verified attestation of each of ``version_ids`` that has one."""
    out: dict[uuid.UUID, VersionAttestationPublic] = {}
    for version_id in version_ids:
        row = session.exec(
            select(NodeAttestation)
            .where(
                col(NodeAttestation.dataset_version_id) == version_id,
                col(NodeAttestation.verified).is_(True),
            )
            .order_by(col(NodeAttestation.received_at).desc(), col(NodeAttestation.id))
            .limit(1)
        ).first()
        if row is not None:
            out[version_id] = _version_attestation(row)
    return out


def _version_attestation(row: NodeAttestation) -> VersionAttestationPublic:
    return VersionAttestationPublic(
        node_id=row.node_id,
        signature=row.signature,
        attestation=Attestation.model_validate(row.payload),
        verified=row.verified,
        received_at=row.received_at,
    )


class NodeService:
    """Nodes, their attestations and which datasets they serve."""

    def __init__(self, session: Session, queue: JobQueue) -> None:
        self.session = session
        self.queue = queue

    # -- registration and reads ----------------------------------------------------

    def register(self, caller: Caller, data: NodeCreate) -> NodePublic:
        """Register a node of the caller's organisation under its public key."""
        try:
            protocol.check_public_key(data.public_key)
        except protocol.InvalidMessage as exc:
            raise ValidationFailed.for_field("public_key", exc.reason) from exc
        taken = PublicKeyTaken(
            "public_key", "a node with this public key is registered already"
        )
        existing = self.session.exec(
            select(Node.id).where(col(Node.public_key) == data.public_key)
        ).first()
        if existing is not None:
            raise taken
        node = Node(
            organisation_id=caller.organisation_id,
            name=data.name,
            public_key=data.public_key,
        )
        self.session.add(node)
        try:
            self.session.commit()
        except IntegrityError as exc:  # registered concurrently
            self.session.rollback()
            raise taken from exc
        return self._public(node, caller)

    def list_visible(self, caller: Caller) -> list[NodePublic]:
        """The caller's nodes; every node for the operator and the regulator."""
        stmt = select(Node).order_by(col(Node.created_at), col(Node.id))
        if not caller.has_any((Role.OPERATOR, Role.REGULATOR)):
            stmt = stmt.where(col(Node.organisation_id) == caller.organisation_id)
        return [self._public(n, caller) for n in self.session.exec(stmt)]

    def get(self, caller: Caller, node_id: uuid.UUID) -> NodePublic:
        """Any node (its public key verifies its receipts)."""
        return self._public(self._load(node_id), caller)

    def owned(self, caller: Caller, node_id: uuid.UUID) -> Node:
        """The node, if the caller's organisation runs it: 404 unknown, 403 foreign."""
        node = self._load(node_id)
        if node.organisation_id != caller.organisation_id:
            raise PermissionDenied(
                f"node {node_id} belongs to another organisation; only its own "
                "organisation may act as it",
                code="not_node_owner",
            )
        return node

    def touch(self, node_id: uuid.UUID) -> None:
        """Record that the node was heard from now (at most every few seconds)."""
        now = utcnow()
        self.session.execute(
            update(Node)
            .where(
                col(Node.id) == node_id,
                col(Node.last_seen_at).is_(None)
                | (col(Node.last_seen_at) < now - LAST_SEEN_RESOLUTION),
            )
            .values(last_seen_at=now)
        )
        self.session.commit()

    def _load(self, node_id: uuid.UUID) -> Node:
        node = self.session.get(Node, node_id)
        if node is None:
            raise NotFound(f"node {node_id} not found")
        return node

    def _public(self, node: Node, caller: Caller) -> NodePublic:
        stmt = (
            select(NodeDataset.dataset_id)
            .join(Dataset, col(Dataset.id) == col(NodeDataset.dataset_id))
            .where(col(NodeDataset.node_id) == node.id)
            .order_by(col(NodeDataset.bound_at), col(NodeDataset.dataset_id))
        )
        # Drafts are nobody else's business (ADR 0004): others see listed ones.
        if node.organisation_id != caller.organisation_id and not caller.has_any(
            (Role.OPERATOR, Role.REGULATOR)
        ):
            stmt = stmt.where(col(Dataset.status) == DatasetStatus.LISTED.value)
        return NodePublic(
            id=node.id,
            organisation_id=node.organisation_id,
            name=node.name,
            public_key=node.public_key,
            created_at=node.created_at,
            last_seen_at=node.last_seen_at,
            datasets=list(self.session.exec(stmt)),
        )

    # -- attestations --------------------------------------------------------------

    def attest(
        self, caller: Caller, node_id: uuid.UUID, signed: SignedAttestation
    ) -> AttestationPublic:
        """Verify and store a quality attestation; the node now serves the dataset.

        Raises
        ------
        ValidationFailed
            ``attestation.node_id`` is another node.
        BadSignature
            The signature does not verify under the node's public key.
        NotFound
            The dataset is unknown or belongs to another organisation.
        UnknownVersion
            ``attestation.content_hash`` is not a version of the dataset.
        """
        node = self.owned(caller, node_id)
        self.touch(node.id)
        att = signed.attestation
        if att.node_id != node.id:
            raise ValidationFailed.for_field(
                "attestation.node_id",
                f"is {att.node_id}; it was posted for node {node.id}",
                code="node_mismatch",
            )
        try:
            signed.verify(node.public_key)
        except protocol.BadSignature as exc:
            raise BadSignature(
                "signature",
                f"does not verify under the public key of node {node.id}",
            ) from exc
        dataset = self.session.get(Dataset, att.dataset_id)
        if dataset is None or dataset.organisation_id != node.organisation_id:
            raise NotFound(f"dataset {att.dataset_id} not found")
        version = self.session.exec(
            select(DatasetVersion).where(
                col(DatasetVersion.dataset_id) == dataset.id,
                col(DatasetVersion.content_hash) == att.content_hash,
            )
        ).first()
        if version is None:
            raise UnknownVersion(
                "attestation.content_hash",
                f"is not a version of dataset {dataset.id}; record the version "
                f"first (POST /v1/datasets/{dataset.id}/versions)",
            )
        for attempt in range(2):
            row = NodeAttestation(
                dataset_id=dataset.id,
                dataset_version_id=version.id,
                node_id=node.id,
                payload=att.model_dump(mode="json"),
                signature=signed.signature,
                verified=True,
            )
            self.session.add(row)
            moved = self._bind(dataset.id, node.id)
            try:
                self.session.commit()
            except IntegrityError:  # bound concurrently by another attestation
                self.session.rollback()
                if attempt:
                    raise
                continue
            break
        if moved:
            self._renotify(dataset.id, node.id)
        return AttestationPublic(
            dataset_id=row.dataset_id,
            dataset_version_id=row.dataset_version_id,
            **_version_attestation(row).model_dump(),
        )

    def _bind(self, dataset_id: uuid.UUID, node_id: uuid.UUID) -> bool:
        """Route the dataset to ``node_id``; whether it moved from another node."""
        now = utcnow()
        binding = self.session.get(NodeDataset, dataset_id)
        if binding is None:
            self.session.add(NodeDataset(dataset_id=dataset_id, node_id=node_id))
            return False
        if binding.node_id == node_id:
            return False
        binding.node_id = node_id
        binding.bound_at = now
        self.session.add(binding)
        self.session.execute(
            update(Job)
            .where(
                col(Job.dataset_id) == dataset_id,
                col(Job.state).in_(
                    [JobState.QUEUED.value, JobState.AWAITING_APPROVAL.value]
                ),
            )
            .values(node_id=node_id, updated_at=now)
        )
        return True

    def _renotify(self, dataset_id: uuid.UUID, node_id: uuid.UUID) -> None:
        queued = self.session.exec(
            select(Job.id).where(
                col(Job.dataset_id) == dataset_id,
                col(Job.node_id) == node_id,
                col(Job.state) == JobState.QUEUED.value,
            )
        ).all()
        self.session.commit()
        for job_id in queued:
            self.queue.notify(node_id, job_id)

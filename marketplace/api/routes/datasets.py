"""Providers' datasets: create, update, versions, lifecycle; reads for all."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from marketplace.api.deps import CatalogDep, JobsDep, allow
from marketplace.models import (
    BudgetReport,
    DatasetCreate,
    DatasetPublic,
    DatasetStatus,
    DatasetTransition,
    DatasetUpdate,
    DatasetVersionCreate,
    DatasetVersionPublic,
    Role,
    VersionAttestationPublic,
)
from marketplace.services.identity import Caller

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Provider = Annotated[Caller, allow(Role.PROVIDER, org="not_suspended")]
Reader = Annotated[Caller, allow(org="not_suspended")]
Mover = Annotated[Caller, allow(Role.PROVIDER, Role.OPERATOR, org="not_suspended")]
Member = Annotated[Caller, allow()]


class LiveVersion(BaseModel):
    """Which version to make live."""

    version_id: uuid.UUID


@router.post("", status_code=201, operation_id="create_dataset")
def create_dataset(
    body: DatasetCreate, caller: Provider, catalog: CatalogDep
) -> DatasetPublic:
    """Create a draft dataset with its metadata, schema, policy and pricing plan."""
    return catalog.create(caller, body)


@router.get("", operation_id="list_my_datasets")
def list_my_datasets(
    caller: Provider,
    catalog: CatalogDep,
    status: Annotated[DatasetStatus | None, Query()] = None,
) -> list[DatasetPublic]:
    """List the provider's own datasets in every state."""
    return catalog.list_for_provider(caller, status)


@router.get("/{dataset_id}", operation_id="get_dataset")
def get_dataset(
    dataset_id: uuid.UUID, caller: Reader, catalog: CatalogDep
) -> DatasetPublic:
    """Return a dataset.

    Listed datasets are visible to any caller that is not suspended; drafts and
    suspended or delisted ones only to their owner, the operator and the
    regulator (to anyone else they are not found).
    """
    return catalog.get(caller, dataset_id)


@router.patch("/{dataset_id}", operation_id="update_dataset")
def update_dataset(
    dataset_id: uuid.UUID, body: DatasetUpdate, caller: Provider, catalog: CatalogDep
) -> DatasetPublic:
    """Change metadata, policy or pricing (the schema only while a draft)."""
    return catalog.update(caller, dataset_id, body)


@router.get("/{dataset_id}/versions", operation_id="list_dataset_versions")
def list_dataset_versions(
    dataset_id: uuid.UUID, caller: Reader, catalog: CatalogDep
) -> list[DatasetVersionPublic]:
    """List a dataset's content versions."""
    return catalog.list_versions(caller, dataset_id)


@router.post(
    "/{dataset_id}/versions", status_code=201, operation_id="create_dataset_version"
)
def create_dataset_version(
    dataset_id: uuid.UUID,
    body: DatasetVersionCreate,
    caller: Provider,
    catalog: CatalogDep,
) -> DatasetVersionPublic:
    """Record a new content version (by content hash)."""
    return catalog.add_version(caller, dataset_id, body)


@router.get(
    "/{dataset_id}/versions/{version_id}/attestation",
    operation_id="get_version_attestation",
)
def get_version_attestation(
    dataset_id: uuid.UUID, version_id: uuid.UUID, caller: Reader, catalog: CatalogDep
) -> VersionAttestationPublic:
    """The latest verified quality attestation of a version, signed by its node."""
    return catalog.version_attestation(caller, dataset_id, version_id)


@router.get("/{dataset_id}/budget", operation_id="get_dataset_budget")
def get_dataset_budget(
    dataset_id: uuid.UUID, caller: Member, jobs: JobsDep
) -> BudgetReport:
    """The privacy budget and its use as the node last reported it.

    The provider, the operator and the regulator see every buyer and the total; a
    buyer sees its own row.
    """
    return jobs.budget(caller, dataset_id)


@router.put("/{dataset_id}/live-version", operation_id="set_live_version")
def set_live_version(
    dataset_id: uuid.UUID, body: LiveVersion, caller: Provider, catalog: CatalogDep
) -> DatasetPublic:
    """Make an existing version the live one."""
    return catalog.set_live_version(caller, dataset_id, body.version_id)


@router.post("/{dataset_id}/transitions", operation_id="transition_dataset")
def transition_dataset(
    dataset_id: uuid.UUID, body: DatasetTransition, caller: Mover, catalog: CatalogDep
) -> DatasetPublic:
    """Move a dataset: list, suspend (operator), re-list (operator) or delist."""
    return catalog.transition(caller, dataset_id, body.to, body.reason)

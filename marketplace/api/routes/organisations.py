"""Organisations and their admission; API keys of the caller's organisation."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from marketplace.api.deps import IdentityDep, allow
from marketplace.errors import PermissionDenied
from marketplace.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    OrganisationCreate,
    OrganisationPublic,
    OrganisationStatus,
    OrganisationStatusChange,
    Role,
)
from marketplace.services.identity import Caller

router = APIRouter(prefix="/v1", tags=["organisations"])

Operator = Annotated[Caller, allow(Role.OPERATOR)]
Overseer = Annotated[Caller, allow(Role.OPERATOR, Role.REGULATOR)]
Member = Annotated[Caller, allow(org="not_suspended")]
Anyone = Annotated[Caller, allow(org="any")]


@router.get("/organisations", operation_id="list_organisations")
def list_organisations(
    caller: Overseer,
    identity: IdentityDep,
    status: Annotated[OrganisationStatus | None, Query()] = None,
) -> list[OrganisationPublic]:
    """List organisations (operator and regulator)."""
    return identity.list_organisations(status=status)


@router.post("/organisations", status_code=201, operation_id="create_organisation")
def create_organisation(
    body: OrganisationCreate, caller: Operator, identity: IdentityDep
) -> OrganisationPublic:
    """Create an organisation (pending) on someone's behalf."""
    return identity.create_organisation(body)


@router.get("/organisations/{org_id}", operation_id="get_organisation")
def get_organisation(
    org_id: uuid.UUID, caller: Anyone, identity: IdentityDep
) -> OrganisationPublic:
    """Return an organisation: one's own, or any for the operator and regulator."""
    if org_id != caller.organisation_id and not caller.has_any(
        (Role.OPERATOR, Role.REGULATOR)
    ):
        raise PermissionDenied(
            "only the organisation itself, the operator and the regulator may read "
            "an organisation's record",
            code="not_your_organisation",
        )
    return identity.get_organisation(org_id)


@router.post("/organisations/{org_id}/admit", operation_id="admit_organisation")
def admit_organisation(
    org_id: uuid.UUID,
    caller: Operator,
    identity: IdentityDep,
    body: OrganisationStatusChange | None = None,
) -> OrganisationPublic:
    """Admit a pending organisation, or re-admit a suspended one."""
    reason = body.reason if body else None
    return identity.set_status(org_id, OrganisationStatus.ADMITTED, reason)


@router.post("/organisations/{org_id}/suspend", operation_id="suspend_organisation")
def suspend_organisation(
    org_id: uuid.UUID,
    body: OrganisationStatusChange,
    caller: Operator,
    identity: IdentityDep,
) -> OrganisationPublic:
    """Suspend an admitted organisation (a reason is required)."""
    if org_id == caller.organisation_id:
        raise PermissionDenied(
            "the operator cannot suspend its own organisation", code="self_suspension"
        )
    return identity.set_status(org_id, OrganisationStatus.SUSPENDED, body.reason)


@router.get("/api-keys", operation_id="list_api_keys")
def list_api_keys(caller: Member, identity: IdentityDep) -> list[ApiKeyPublic]:
    """List the organisation's API keys (never their secrets)."""
    return identity.list_api_keys(caller.organisation_id)


@router.post("/api-keys", status_code=201, operation_id="create_api_key")
def create_api_key(
    body: ApiKeyCreate, caller: Member, identity: IdentityDep
) -> ApiKeyCreated:
    """Issue an API key; its secret is in this response only."""
    return identity.create_api_key(
        caller.organisation_id, body.name, user_id=caller.user_id
    )


@router.delete("/api-keys/{key_id}", operation_id="revoke_api_key")
def revoke_api_key(
    key_id: uuid.UUID, caller: Member, identity: IdentityDep
) -> ApiKeyPublic:
    """Revoke one of the organisation's API keys."""
    return identity.revoke_api_key(caller.organisation_id, key_id)

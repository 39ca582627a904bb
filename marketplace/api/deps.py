"""Typed dependencies: database session, services, and the caller.

Access control is declared per endpoint with :func:`allow` and enforced here, in
:func:`authorize`, and nowhere else::

    ProviderCaller = Annotated[Caller, allow(Role.PROVIDER)]

The declaration is recorded as OAuth-style security scopes (``role:provider``,
``org:admitted``), so it is also visible in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    SecurityScopes,
)
from sqlmodel import Session

from marketplace.errors import (
    AuthenticationRequired,
    OrganisationNotAdmitted,
    PermissionDenied,
)
from marketplace.models import OrganisationStatus, Role
from marketplace.services.blobs import BlobService
from marketplace.services.catalog import CatalogService
from marketplace.services.identity import Caller, IdentityService
from marketplace.services.jobs import JobService
from marketplace.services.ledger import LedgerQueries
from marketplace.services.nodes import NodeService
from marketplace.services.search import SearchService
from marketplace.services.settlement import SettlementService
from marketplace.services.trading import TradingConfig, TradingService

__all__ = [
    "AccessRule",
    "AnyCaller",
    "BlobsDep",
    "CatalogDep",
    "IdentityDep",
    "JobsDep",
    "NodesDep",
    "SearchDep",
    "SessionDep",
    "SettlementDep",
    "TradingDep",
    "access_rule",
    "allow",
    "authorize",
]

OrgRequirement = Literal["admitted", "not_suspended", "any"]
SESSION_COOKIE = "veilx_session"

_bearer = HTTPBearer(
    auto_error=False, description="An API key (vx_…) or a session token."
)
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="Console session."
)


def get_session(request: Request) -> Iterator[Session]:
    """Yield a database session for one request."""
    with request.app.state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_identity(request: Request, session: SessionDep) -> IdentityService:
    """The identity service bound to this request's session."""
    return IdentityService(session, request.app.state.caller_cache)


IdentityDep = Annotated[IdentityService, Depends(get_identity)]


async def get_catalog(session: SessionDep) -> CatalogService:
    """The catalog service bound to this request's session."""
    return CatalogService(session)


CatalogDep = Annotated[CatalogService, Depends(get_catalog)]


async def get_search(request: Request, session: SessionDep) -> SearchService:
    """The search service bound to this request's session."""
    state = request.app.state
    return SearchService(session, state.search_cache, state.facet_index)


SearchDep = Annotated[SearchService, Depends(get_search)]


async def get_blobs(session: SessionDep) -> BlobService:
    """The blob and HE-context service bound to this request's session."""
    return BlobService(session)


BlobsDep = Annotated[BlobService, Depends(get_blobs)]


async def get_nodes(request: Request, session: SessionDep) -> NodeService:
    """The node service bound to this request's session."""
    return NodeService(session, request.app.state.queue)


NodesDep = Annotated[NodeService, Depends(get_nodes)]


async def get_jobs(request: Request, session: SessionDep) -> JobService:
    """The job service bound to this request's session."""
    return JobService(
        session,
        request.app.state.queue,
        fee_bps=request.app.state.settings.exchange_fee_bps,
    )


JobsDep = Annotated[JobService, Depends(get_jobs)]


async def get_ledger(request: Request, session: SessionDep) -> LedgerQueries:
    """The ledger's read side over the app's (lazily opened) chain."""
    return LedgerQueries(session, request.app.state.chain)


LedgerDep = Annotated[LedgerQueries, Depends(get_ledger)]


async def get_trading(request: Request, session: SessionDep) -> TradingService:
    """The trading service bound to this request's session."""
    state = request.app.state
    return TradingService(
        session, TradingConfig.from_settings(state.settings), state.payments
    )


TradingDep = Annotated[TradingService, Depends(get_trading)]


async def get_settlement(request: Request, session: SessionDep) -> SettlementService:
    """The settlement service bound to this request's session."""
    state = request.app.state
    return SettlementService(
        session, TradingConfig.from_settings(state.settings), state.payments
    )


SettlementDep = Annotated[SettlementService, Depends(get_settlement)]


def authorize(
    security_scopes: SecurityScopes,
    identity: IdentityDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """Authenticate the request and check the endpoint's declared access rule."""
    token = bearer.credentials if bearer is not None else cookie
    if not token:
        raise AuthenticationRequired(
            "send an API key as 'Authorization: Bearer vx_…' or log in",
            code="authentication_required",
        )
    caller = identity.authenticate(token)
    rule = AccessRule.from_scopes(security_scopes.scopes)
    if rule.roles and not caller.has_any(rule.roles):
        needed = ", ".join(sorted(r.value for r in rule.roles))
        raise PermissionDenied(
            f"this operation needs the role {needed}; the organisation holds "
            f"{', '.join(sorted(r.value for r in caller.roles)) or 'none'}",
            code="role_required",
        )
    if rule.org == "admitted" and caller.status is not OrganisationStatus.ADMITTED:
        raise OrganisationNotAdmitted(
            f"the organisation is {caller.status.value}; this operation needs an "
            "admitted organisation"
        )
    if rule.org == "not_suspended" and caller.status is OrganisationStatus.SUSPENDED:
        raise OrganisationNotAdmitted("the organisation is suspended")
    return caller


@dataclass(frozen=True)
class AccessRule:
    """Who may call an endpoint: any of ``roles`` (empty: any role) and org state."""

    roles: frozenset[Role]
    org: OrgRequirement

    def scopes(self) -> list[str]:
        """The rule as security scopes."""
        return [*(f"role:{r.value}" for r in sorted(self.roles)), f"org:{self.org}"]

    @classmethod
    def from_scopes(cls, scopes: list[str]) -> AccessRule:
        """Parse scopes written by :meth:`scopes`."""
        roles = frozenset(Role(s[5:]) for s in scopes if s.startswith("role:"))
        orgs = [s[4:] for s in scopes if s.startswith("org:")]
        org: OrgRequirement = "admitted"
        if orgs and orgs[-1] in ("admitted", "not_suspended", "any"):
            org = orgs[-1]  # type: ignore[assignment]
        return cls(roles, org)


def allow(*roles: Role, org: OrgRequirement = "admitted") -> Any:
    """Declare who may call an endpoint (no roles: any authenticated caller)."""
    return Security(authorize, scopes=AccessRule(frozenset(roles), org).scopes())


def access_rule(route: APIRoute) -> AccessRule | None:
    """Return the rule a route declares, or ``None`` for a public route."""
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if dep.call is authorize:
            return AccessRule.from_scopes(
                [*(dep.parent_oauth_scopes or []), *(dep.own_oauth_scopes or [])]
            )
        stack.extend(dep.dependencies)
    return None


AnyCaller = Annotated[Caller, allow(org="any")]
"""Any authenticated caller, whatever its organisation's state."""

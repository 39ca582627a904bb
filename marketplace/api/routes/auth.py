"""Sign-up, login, logout and the caller's identity."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, EmailStr, Field

from marketplace.api.deps import SESSION_COOKIE, AnyCaller, IdentityDep
from marketplace.models import OrganisationPublic, UserPublic
from marketplace.models.identity import SignUp

router = APIRouter(prefix="/v1", tags=["auth"])


class SignUpResult(BaseModel):
    """The pending organisation and its first user."""

    organisation: OrganisationPublic
    user: UserPublic


class LoginRequest(BaseModel):
    """E-mail and password."""

    email: EmailStr
    password: str = Field(min_length=1, max_length=256)


class LoginResult(BaseModel):
    """A session token (also set as an HttpOnly cookie)."""

    token: str
    expires_at: datetime


class Me(BaseModel):
    """Who is calling."""

    organisation: OrganisationPublic
    user_id: str | None
    api_key_id: str | None
    credential: str


@router.post("/auth/signup", status_code=201, operation_id="sign_up")
def sign_up(body: SignUp, identity: IdentityDep) -> SignUpResult:
    """Register an organisation (pending until the operator admits it) and a user."""
    org, user = identity.sign_up(body)
    return SignUpResult(organisation=org, user=user)


@router.post("/auth/login", operation_id="log_in")
def log_in(
    body: LoginRequest, identity: IdentityDep, request: Request, response: Response
) -> LoginResult:
    """Open a console session."""
    settings = request.app.state.settings
    token, record = identity.login(
        body.email, body.password, timedelta(seconds=settings.session_ttl_seconds)
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        httponly=True,
        samesite="strict",
        secure=settings.environment == "production",
    )
    return LoginResult(token=token, expires_at=record.expires_at)


@router.post("/auth/logout", status_code=204, operation_id="log_out")
def log_out(caller: AnyCaller, identity: IdentityDep, request: Request) -> Response:
    """Close the current session (API keys are revoked through /v1/api-keys)."""
    auth = request.headers.get("authorization", "")
    token = HTTPAuthorizationCredentials(
        scheme="Bearer", credentials=auth[7:]
    ).credentials
    if caller.credential == "session":
        identity.logout(
            token
            if auth.lower().startswith("bearer ")
            else request.cookies.get(SESSION_COOKIE, "")
        )
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/me", operation_id="get_me")
def get_me(caller: AnyCaller, identity: IdentityDep) -> Me:
    """Return the calling organisation and credential."""
    return Me(
        organisation=identity.get_organisation(caller.organisation_id),
        user_id=str(caller.user_id) if caller.user_id else None,
        api_key_id=str(caller.api_key_id) if caller.api_key_id else None,
        credential=caller.credential,
    )

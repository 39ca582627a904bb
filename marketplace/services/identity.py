"""Organisations, users, API keys, sessions, and authentication of callers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from marketplace import security
from marketplace.errors import (
    AuthenticationRequired,
    Conflict,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from marketplace.models import (
    ApiKey,
    ApiKeyCreated,
    ApiKeyPublic,
    Organisation,
    OrganisationCreate,
    OrganisationPublic,
    OrganisationStatus,
    Role,
    SignUp,
    User,
    UserPublic,
    UserSession,
    utcnow,
)

__all__ = [
    "Caller",
    "IdentityService",
]

LAST_USED_RESOLUTION = timedelta(seconds=60)
"""``api_key.last_used_at`` is written at most this often per key."""

_CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Caller:
    """The authenticated party of a request."""

    organisation_id: uuid.UUID
    organisation_name: str
    roles: frozenset[Role]
    status: OrganisationStatus
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    credential: str = field(default="api_key")

    def has_any(self, roles: Iterable[Role]) -> bool:
        """Whether the caller's organisation holds at least one of ``roles``."""
        return not self.roles.isdisjoint(roles)


def _org_public(org: Organisation) -> OrganisationPublic:
    return OrganisationPublic.model_validate(org, from_attributes=True)


def _key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(key, from_attributes=True)


class _CallerCache:
    """A tiny time-bounded cache of authenticated API keys.

    It spares a database round trip per request. Entries live two seconds and are
    dropped at once when this process revokes a key or changes an organisation's
    status; other processes see such changes within two seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Caller, ApiKey]] = {}

    def get(self, token_hash: str) -> tuple[Caller, ApiKey] | None:
        with self._lock:
            hit = self._entries.get(token_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1], hit[2]

    def put(self, token_hash: str, caller: Caller, key: ApiKey) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[token_hash] = (time.monotonic() + _CACHE_SECONDS, caller, key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class IdentityService:
    """Admission of organisations, credentials and authentication."""

    def __init__(self, session: Session, cache: _CallerCache | None = None) -> None:
        self.session = session
        self.cache = cache if cache is not None else _CallerCache()

    # -- organisations -------------------------------------------------------

    def create_organisation(
        self, data: OrganisationCreate, *, status: OrganisationStatus | None = None
    ) -> OrganisationPublic:
        """Create an organisation (pending unless ``status`` says otherwise)."""
        org = self._new_org(data.name, data.country, data.roles, data.website, status)
        self._commit_unique("name", f"an organisation named {data.name!r} exists")
        return _org_public(org)

    def _new_org(
        self,
        name: str,
        country: str,
        roles: list[Role],
        website: str | None,
        status: OrganisationStatus | None,
    ) -> Organisation:
        if len(set(roles)) != len(roles):
            raise ValidationFailed.for_field("roles", "duplicate roles")
        org = Organisation(
            name=name,
            country=country,
            website=website,
            roles=sorted(r.value for r in roles),
            status=status or OrganisationStatus.PENDING,
        )
        self.session.add(org)
        return org

    def sign_up(self, data: SignUp) -> tuple[OrganisationPublic, UserPublic]:
        """Create a pending organisation and its first user."""
        if Role.OPERATOR in data.roles:
            raise ValidationFailed.for_field(
                "roles", "the operator role cannot be requested at sign-up"
            )
        org = self._new_org(
            data.organisation_name, data.country, data.roles, None, None
        )
        try:
            self.session.flush()
        except IntegrityError as exc:  # the name is taken: 409, not 500
            self.session.rollback()
            raise Conflict(
                f"an organisation named {data.organisation_name!r} exists",
                code="duplicate_name",
            ) from exc
        user = self._new_user(org.id, data.email, data.display_name, data.password)
        self._commit_unique(
            "email", "that e-mail address or organisation name is taken"
        )
        return _org_public(org), UserPublic.model_validate(user, from_attributes=True)

    def _commit_unique(self, field_name: str, message: str) -> None:
        try:
            self.session.commit()
        except IntegrityError as exc:
            self.session.rollback()
            raise Conflict(message, code=f"duplicate_{field_name}") from exc

    def get_organisation(self, org_id: uuid.UUID) -> OrganisationPublic:
        """Return one organisation."""
        org = self.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        return _org_public(org)

    def find_organisation(self, name_or_id: str) -> OrganisationPublic:
        """Find an organisation by exact name or id."""
        try:
            return self.get_organisation(uuid.UUID(name_or_id))
        except ValueError:
            pass
        org = self.session.exec(
            select(Organisation).where(Organisation.name == name_or_id)
        ).first()
        if org is None:
            raise NotFound(f"no organisation named {name_or_id!r}")
        return _org_public(org)

    def list_organisations(
        self, *, status: OrganisationStatus | None = None
    ) -> list[OrganisationPublic]:
        """Return all organisations, optionally of one status, oldest first."""
        stmt = select(Organisation).order_by(
            col(Organisation.created_at), col(Organisation.id)
        )
        if status is not None:
            stmt = stmt.where(Organisation.status == status)
        return [_org_public(o) for o in self.session.exec(stmt)]

    _MOVES: ClassVar[dict[OrganisationStatus, frozenset[OrganisationStatus]]] = {
        OrganisationStatus.PENDING: frozenset({OrganisationStatus.ADMITTED}),
        OrganisationStatus.ADMITTED: frozenset({OrganisationStatus.SUSPENDED}),
        OrganisationStatus.SUSPENDED: frozenset({OrganisationStatus.ADMITTED}),
    }

    def set_status(
        self, org_id: uuid.UUID, to: OrganisationStatus, reason: str | None
    ) -> OrganisationPublic:
        """Admit, suspend or re-admit an organisation."""
        org = self.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        current = OrganisationStatus(org.status)
        if to not in self._MOVES[current]:
            raise InvalidTransition(
                f"an organisation that is {current.value} cannot become {to.value}"
            )
        if to is OrganisationStatus.SUSPENDED and not reason:
            raise ValidationFailed.for_field("reason", "required when suspending")
        org.status = to
        org.status_reason = reason
        org.status_changed_at = utcnow()
        self.session.add(org)
        self.session.commit()
        self.cache.clear()
        return _org_public(org)

    # -- users and sessions --------------------------------------------------

    def _new_user(
        self, org_id: uuid.UUID, email: str, display_name: str, password: str
    ) -> User:
        user = User(
            organisation_id=org_id,
            email=email.strip().lower(),
            display_name=display_name,
            password_hash=security.hash_password(password),
        )
        self.session.add(user)
        return user

    def create_user(
        self, org_id: uuid.UUID, email: str, display_name: str, password: str
    ) -> UserPublic:
        """Add a user to an organisation."""
        if len(password) < 12:
            raise ValidationFailed.for_field(
                "password", "must be at least 12 characters"
            )
        self.get_organisation(org_id)
        user = self._new_user(org_id, email, display_name, password)
        self._commit_unique("email", f"a user with e-mail {email!r} exists")
        return UserPublic.model_validate(user, from_attributes=True)

    def login(
        self, email: str, password: str, ttl: timedelta
    ) -> tuple[str, UserSession]:
        """Check a password and open a session; returns the token, shown once."""
        user = self.session.exec(
            select(User).where(User.email == email.strip().lower())
        ).first()
        if user is None or not security.verify_password(password, user.password_hash):
            raise AuthenticationRequired(
                "e-mail or password is wrong", code="invalid_credentials"
            )
        token = security.new_session_token()
        now = utcnow()
        record = UserSession(
            user_id=user.id, token_hash=security.hash_token(token), expires_at=now + ttl
        )
        user.last_login_at = now
        self.session.add(record)
        self.session.add(user)
        self.session.commit()
        return token, record

    def logout(self, token: str) -> None:
        """Revoke a session token."""
        self.session.execute(
            update(UserSession)
            .where(col(UserSession.token_hash) == security.hash_token(token))
            .values(revoked_at=utcnow())
        )
        self.session.commit()

    # -- API keys --------------------------------------------------------------

    def create_api_key(
        self, org_id: uuid.UUID, name: str, *, user_id: uuid.UUID | None = None
    ) -> ApiKeyCreated:
        """Issue a named API key; the returned secret is never stored or shown again."""
        self.get_organisation(org_id)
        active = self.session.exec(
            select(func.count())
            .select_from(ApiKey)
            .where(
                ApiKey.organisation_id == org_id,
                ApiKey.name == name,
                col(ApiKey.revoked_at).is_(None),
            )
        ).one()
        if active:
            raise Conflict(
                f"an active API key named {name!r} exists", code="duplicate_name"
            )
        prefix, full = security.new_api_key()
        key = ApiKey(
            organisation_id=org_id,
            created_by_user_id=user_id,
            name=name,
            prefix=prefix,
            key_hash=security.hash_token(full),
        )
        self.session.add(key)
        self.session.commit()
        return ApiKeyCreated(**_key_public(key).model_dump(), secret=full)

    def list_api_keys(self, org_id: uuid.UUID) -> list[ApiKeyPublic]:
        """Return an organisation's keys, newest first (revoked ones included)."""
        stmt = (
            select(ApiKey)
            .where(ApiKey.organisation_id == org_id)
            .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
        )
        return [_key_public(k) for k in self.session.exec(stmt)]

    def revoke_api_key(self, org_id: uuid.UUID, key_id: uuid.UUID) -> ApiKeyPublic:
        """Revoke a key of ``org_id``; another organisation's key is 'not found'."""
        key = self.session.get(ApiKey, key_id)
        if key is None or key.organisation_id != org_id:
            raise NotFound(f"API key {key_id} not found")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            self.session.add(key)
            self.session.commit()
        self.cache.clear()
        return _key_public(key)

    def find_api_key(self, prefix_or_id: str) -> ApiKeyPublic:
        """Find a key by prefix or id (for the admin CLI)."""
        stmt = select(ApiKey).where(ApiKey.prefix == prefix_or_id)
        try:
            stmt = select(ApiKey).where(ApiKey.id == uuid.UUID(prefix_or_id))
        except ValueError:
            pass
        key = self.session.exec(stmt).first()
        if key is None:
            raise NotFound(f"no API key {prefix_or_id!r}")
        return _key_public(key)

    # -- authentication --------------------------------------------------------

    def authenticate(self, token: str) -> Caller:
        """Resolve an API key or session token to a caller, or raise 401."""
        if token.startswith(security.SESSION_PREFIX):
            return self._authenticate_session(token)
        prefix = security.parse_api_key(token)
        if prefix is None:
            raise AuthenticationRequired(
                "the credential is not a veilx API key or session token",
                code="invalid_credentials",
            )
        token_hash = security.hash_token(token)
        hit = self.cache.get(token_hash)
        if hit is not None:
            return hit[0]
        row = self.session.exec(
            select(ApiKey, Organisation)
            .join(Organisation, col(ApiKey.organisation_id) == Organisation.id)
            .where(ApiKey.prefix == prefix)
        ).first()
        if row is None or not security.matches(token, row[0].key_hash):
            raise AuthenticationRequired("unknown API key", code="invalid_credentials")
        key, org = row
        if key.revoked_at is not None:
            raise AuthenticationRequired(
                "this API key was revoked", code="credential_revoked"
            )
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            self.session.execute(
                update(ApiKey).where(col(ApiKey.id) == key.id).values(last_used_at=now)
            )
            self.session.commit()
        caller = Caller(
            organisation_id=org.id,
            organisation_name=org.name,
            roles=frozenset(Role(r) for r in org.roles),
            status=OrganisationStatus(org.status),
            api_key_id=key.id,
            credential="api_key",
        )
        self.cache.put(token_hash, caller, key)
        return caller

    def _authenticate_session(self, token: str) -> Caller:
        row = self.session.exec(
            select(UserSession, User, Organisation)
            .join(User, col(UserSession.user_id) == User.id)
            .join(Organisation, col(User.organisation_id) == Organisation.id)
            .where(UserSession.token_hash == security.hash_token(token))
        ).first()
        if row is None:
            raise AuthenticationRequired("unknown session", code="invalid_credentials")
        sess, user, org = row
        if sess.revoked_at is not None:
            raise AuthenticationRequired(
                "this session was closed", code="credential_revoked"
            )
        if sess.expires_at <= utcnow():
            raise AuthenticationRequired(
                "this session expired", code="credential_expired"
            )
        return Caller(
            organisation_id=org.id,
            organisation_name=org.name,
            roles=frozenset(Role(r) for r in org.roles),
            status=OrganisationStatus(org.status),
            user_id=user.id,
            credential="session",
        )

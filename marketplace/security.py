"""Secrets: API-key and session-token generation and hashing, password hashing.

API keys look like ``vx_<prefix>_<secret>``: the prefix (12 base32 characters) is
stored in clear to find the key, the whole key only as its SHA-256. Session tokens
are random and likewise stored hashed. Passwords are hashed with Argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "hash_password",
    "hash_token",
    "new_api_key",
    "new_session_token",
    "parse_api_key",
    "verify_password",
]

API_KEY_PREFIX = "vx_"
SESSION_PREFIX = "vxs_"
_hasher = PasswordHasher()


def hash_token(token: str) -> str:
    """Return the SHA-256 of a high-entropy token, hex-encoded."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """Return ``(prefix, full_key)`` for a new API key."""
    prefix = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12]
    return prefix, f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def parse_api_key(token: str) -> str | None:
    """Return the prefix of a well-formed API key, or ``None``."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, secret = token[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or len(secret) < 32:
        return None
    return prefix


def matches(token: str, stored_hash: str) -> bool:
    """Compare a token with a stored hash in constant time."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def new_session_token() -> str:
    """Return a new session token."""
    return f"{SESSION_PREFIX}{secrets.token_urlsafe(32)}"


def hash_password(password: str) -> str:
    """Hash a password with Argon2id."""
    return _hasher.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Check a password against its Argon2 hash."""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False

"""Ed25519 node identity: key files, signatures, verification.

Byte layout of a key file: the 32-byte raw Ed25519 seed, hex-encoded (64 ASCII
characters and a newline), mode 0600. Public keys and signatures travel as
lower-case hex (64 and 128 characters).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mpc_engine.protocol.errors import InvalidKeyFile, InvalidMessage

PUBLIC_KEY_PATTERN = r"^[0-9a-f]{64}$"
SIGNATURE_PATTERN = r"^[0-9a-f]{128}$"
_PUBLIC = re.compile(PUBLIC_KEY_PATTERN)
_SIGNATURE = re.compile(SIGNATURE_PATTERN)


class NodeKey:
    """A node's Ed25519 signing key. Never serialised except to its own key file."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key_hex = raw.hex()

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> tuple[NodeKey, bool]:
        """Load the key at ``path``, creating it (mode 0600) if absent.

        Returns
        -------
        tuple[NodeKey, bool]
            The key and whether it was created now.

        Raises
        ------
        InvalidKeyFile
            The file exists but is not a key, or other users can read it.
        """
        p = Path(path)
        if p.exists():
            return cls.load(p), False
        key = cls.generate()
        seed = key._private.private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(seed.hex() + "\n")
        return key, True

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeKey:
        """Load an existing key file (refused if group or others may read it)."""
        p = Path(path)
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise InvalidKeyFile(
                str(p), f"mode is {mode:o}; a node key must be 600 (owner only)"
            )
        text = p.read_text().strip()
        if not re.fullmatch(r"[0-9a-f]{64}", text):
            raise InvalidKeyFile(str(p), "is not a hex-encoded 32-byte Ed25519 seed")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text)))

    def sign(self, message: bytes) -> str:
        """Sign ``message``; the signature as hex."""
        return self._private.sign(message).hex()

    def __repr__(self) -> str:
        return f"NodeKey(public={self.public_key_hex[:16]}…)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a NodeKey is never pickled")


def verify_signature(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is a valid Ed25519 signature of ``message``.

    Malformed keys or signatures verify as ``False`` (never raise).
    """
    if not isinstance(public_key_hex, str) or not _PUBLIC.match(public_key_hex):
        return False
    if not isinstance(signature_hex, str) or not _SIGNATURE.match(signature_hex):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_public_key(value: str) -> str:
    """Return ``value`` if it is a well-formed Ed25519 public key in hex.

    Raises
    ------
    InvalidMessage
        Naming ``public_key``.
    """
    if not isinstance(value, str) or not _PUBLIC.match(value):
        raise InvalidMessage("public_key", "must be 64 lower-case hex characters")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError as exc:
        raise InvalidMessage("public_key", "is not an Ed25519 public key") from exc
    return value

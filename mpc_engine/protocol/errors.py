"""Errors of the node ↔ exchange ↔ SDK protocol.

::

    ProtocolError
    ├── InvalidMessage      a message field is malformed (``field``, ``reason``)
    ├── InvalidKeyFile      a key file is unreadable or too widely readable
    └── BadSignature        a receipt or attestation does not verify
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of the protocol errors."""


class InvalidMessage(ProtocolError):
    """A field of a protocol message is malformed."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InvalidKeyFile(ProtocolError):
    """A key file cannot be used."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class BadSignature(ProtocolError):
    """A signed document does not verify under the expected key."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")

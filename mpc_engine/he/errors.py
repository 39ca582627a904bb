"""Errors raised by ``mpc_engine.he``.

Every error carries structured attributes so the node and the SDK can report the
field and the reason without parsing messages. No message ever contains key
material, ciphertext bytes or plaintext rows.

Tree::

    HEError
    ├── InvalidParameters      (also ValueError) a CKKS parameter breaks its rule;
    │   │                      ``field``, ``rule``
    │   └── WeakParameters     the coefficient modulus is too large for 128-bit
    │                          security at this ring size (HomomorphicEncryption.org
    │                          standard); ``field``, ``rule``
    ├── InvalidInput           (also ValueError) a plaintext input (rows, bounds,
    │   │                      weights, slots, noise) breaks its rule; ``field``,
    │   │                      ``reason``
    │   └── ValueOutOfRange    a value would not fit the ciphertext's range;
    │                          ``field``, ``value``, ``limit``
    ├── MalformedBytes         (also ValueError) serialized bytes do not decode to
    │   │                      what was expected; ``what``, ``reason``
    │   ├── MalformedContext   a serialized TenSEAL context
    │   └── MalformedCiphertext  a serialized CKKS vector
    ├── SecretKeyPresent       a secret key where only public material is allowed
    │                          (a context sent to a node); ``where``
    ├── ContextMismatch        an object made under another context, or of the
    │                          wrong shape for the computation; ``field``, ``reason``
    ├── MissingGaloisKeys      the computation needs slot rotations and the public
    │                          context was uploaded without Galois keys;
    │                          ``computation``
    └── KeyFileError           (also OSError) a secret-key file cannot be used;
        │                      ``path``, ``reason``
        └── InsecureKeyFile    the key file is readable or writable by others;
                               ``path``, ``mode``
"""

from __future__ import annotations

__all__ = [
    "ContextMismatch",
    "HEError",
    "InsecureKeyFile",
    "InvalidInput",
    "InvalidParameters",
    "KeyFileError",
    "MalformedBytes",
    "MalformedCiphertext",
    "MalformedContext",
    "MissingGaloisKeys",
    "SecretKeyPresent",
    "ValueOutOfRange",
    "WeakParameters",
]


class HEError(Exception):
    """Base of every error raised by ``mpc_engine.he``."""


class InvalidParameters(HEError, ValueError):
    """A CKKS parameter breaks its rule; the message states the rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class WeakParameters(InvalidParameters):
    """The parameters give less than 128-bit security; refused, never downgraded."""


class InvalidInput(HEError, ValueError):
    """A plaintext input (rows, bounds, weights, slots, noise) breaks its rule."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ValueOutOfRange(InvalidInput):
    """A value would overflow the ciphertext's modulus and decrypt to garbage."""

    def __init__(self, field: str, value: float, limit: float, reason: str) -> None:
        self.value = value
        self.limit = limit
        super().__init__(field, f"{reason} (bound {value:.6g}, limit {limit:.6g})")


class MalformedBytes(HEError, ValueError):
    """Serialized bytes do not decode to what was expected."""

    what = "bytes"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed {self.what}: {reason}")


class MalformedContext(MalformedBytes):
    """Bytes that are not a usable serialized TenSEAL CKKS context."""

    what = "context"


class MalformedCiphertext(MalformedBytes):
    """Bytes that are not a usable serialized CKKS vector for this context."""

    what = "ciphertext"


class SecretKeyPresent(HEError):
    """A secret key where only public material is allowed."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"{where} contains a secret key; only public contexts (public key and, "
            "when rotations are needed, Galois keys) may leave the key holder"
        )


class ContextMismatch(HEError):
    """An object made under another context, or shaped for another computation."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class MissingGaloisKeys(HEError):
    """The computation rotates slots and the context has no Galois keys."""

    def __init__(self, computation: str) -> None:
        self.computation = computation
        super().__init__(
            f"{computation} sums slots with rotations, which need Galois keys; "
            "generate the buyer's context with galois=True and upload its public "
            "part (≈35 MB at N=8192, once per key)"
        )


class KeyFileError(HEError, OSError):
    """A secret-key file cannot be written or read."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InsecureKeyFile(KeyFileError):
    """The secret-key file is accessible to other users; it is not read."""

    def __init__(self, path: str, mode: int) -> None:
        self.mode = mode
        super().__init__(
            path,
            f"permissions {mode:04o} let other users read or change the secret "
            "key; it must be 0600 (chmod 600)",
        )

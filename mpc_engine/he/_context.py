"""Key holders and ciphertexts: secret and public contexts, encrypted vectors.

The buyer holds a :class:`SecretContext`; the node only ever sees a
:class:`PublicContext`, which can be built from serialized bytes alone and refuses
bytes that carry a secret key. A public context is referred to by its
``context_id``, the SHA-256 of the exact bytes uploaded, so the exchange stores it
once per buyer key (≈0.5 MB, or ≈35 MB with Galois keys at N=8192).

Secret-key file layout (all integers big-endian)::

    offset  size  field
    0       8     magic b"VEILXHE1"
    8       8     length S of the secret part
    16      S     TenSEAL context with the secret key (no Galois keys)
    16+S    8     length P of the public part
    24+S    P     the public context bytes exactly as uploaded: context_id is
                  their SHA-256, and it survives a save/load round trip

The public part is kept verbatim because TenSEAL regenerates (different) Galois
keys when it loads a secret context, which would change the context id.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Final, NoReturn, cast

import numpy as np
import numpy.typing as npt

from mpc_engine.he._backend import (
    ComplexArray,
    FloatArray,
    NativeContext,
    NativeVector,
    add_plain_exact,
    decrypt_slots,
    encrypt_last_level,
    finalize,
    is_finite_scale,
    read_context_parameters,
    result_prime_bits,
)
from mpc_engine.he._params import CKKSParams
from mpc_engine.he.errors import (
    ContextMismatch,
    InsecureKeyFile,
    InvalidInput,
    InvalidParameters,
    KeyFileError,
    MalformedCiphertext,
    MalformedContext,
    SecretKeyPresent,
    ValueOutOfRange,
)

_MAGIC: Final = b"VEILXHE1"
_PRIVATE: Final = object()  # constructor guard: contexts come from the classmethods
MAX_CIPHERTEXT_BYTES: Final = 64 * 1024 * 1024
#: Smallest encoding scale :func:`encrypt_values` accepts: below 2^20 the fresh
#: encryption noise (≈2^14 in coefficient units) would cost more than 1e-2.
MIN_VALUE_SCALE_BITS: Final = 20


def _params_from_bytes(data: bytes) -> CKKSParams:
    """Validate the parameters a serialized context claims, before loading it.

    Weak or malformed parameters raise here with the rule, before TenSEAL allocates
    anything. The scale is not in SEAL's parameters: it is checked after loading.
    """
    raw = read_context_parameters(data)
    if not raw.is_ckks:
        raise MalformedContext("the context is not CKKS")
    bits = raw.coeff_mod_bit_sizes
    return CKKSParams(raw.poly_modulus_degree, bits, bits[1] if len(bits) > 1 else 40)


def _check_scale(params: CKKSParams, scale: float) -> None:
    if scale != params.scale:
        raise InvalidParameters(
            "global_scale",
            f"is {scale:g}; must be 2^{params.scale_bits}, the size of the "
            "rescaling primes",
        )


class _Context(ABC):
    """What both kinds of context share: parameters and the native handle."""

    __slots__ = ("_native", "params")

    def __init__(self, native: NativeContext, params: CKKSParams) -> None:
        self._native = native
        self.params = params

    @property
    def slot_count(self) -> int:
        """Values per ciphertext: N/2."""
        return self.params.slot_count

    def _adopt(
        self, vec: EncryptedVector, field: str, *, fresh: bool
    ) -> EncryptedVector:
        """Return ``vec`` as a vector of this context.

        A vector of another context object under the same key (same context id) is
        moved through its bytes, which also validates it; any other is refused.
        """
        if vec.context is self:
            return vec
        if vec.context.context_id != self.context_id:
            raise ContextMismatch(field, "was encrypted under another key")
        owner = cast("PublicContext | SecretContext", self)
        return EncryptedVector.from_bytes(owner, vec.to_bytes(), fresh=fresh)

    @property
    @abstractmethod
    def context_id(self) -> str:
        """SHA-256 (hex) of the public context bytes."""


class PublicContext(_Context):
    """A buyer's public context as a node holds it: never a secret key.

    Build it with :meth:`from_bytes`; there is no other way to make one.
    """

    __slots__ = ("_context_id", "has_galois_keys")

    def __init__(
        self,
        native: NativeContext,
        params: CKKSParams,
        context_id: str,
        has_galois_keys: bool,
        *,
        _guard: object = None,
    ) -> None:
        if _guard is not _PRIVATE:
            raise TypeError("build a PublicContext with PublicContext.from_bytes")
        super().__init__(native, params)
        self._context_id = context_id
        self.has_galois_keys = has_galois_keys

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        expected: CKKSParams | None = None,
        n_threads: int | None = None,
    ) -> PublicContext:
        """Load a public context uploaded by a buyer.

        Parameters
        ----------
        data
            ``SecretContext.public_bytes()`` output.
        expected
            When given, the context's parameters must equal these.
        n_threads
            Threads TenSEAL may use (default: one per core).

        Raises
        ------
        MalformedContext
            The bytes do not decode to a CKKS context with a public key.
        WeakParameters, InvalidParameters
            Its parameters break the security or shape rules.
        SecretKeyPresent
            The bytes carry a secret key.
        ContextMismatch
            The parameters differ from ``expected``.
        """
        if not isinstance(data, bytes | bytearray) or not data:
            raise MalformedContext("expected non-empty bytes")
        data = bytes(data)
        params = _params_from_bytes(data)
        native = NativeContext.load(data, n_threads=n_threads)
        info = native.info()
        if info.has_secret_key:
            raise SecretKeyPresent("the context sent to the node")
        if not info.has_public_key:
            raise MalformedContext(
                "no public key: the node needs it to re-randomise results"
            )
        _check_scale(params, info.global_scale)
        if expected is not None and params != expected:
            raise ContextMismatch(
                "context", f"has parameters {params}, expected {expected}"
            )
        native.harden(params.scale)
        context_id = hashlib.sha256(data).hexdigest()
        return cls(native, params, context_id, info.has_galois_keys, _guard=_PRIVATE)

    @property
    def context_id(self) -> str:
        """SHA-256 (hex) of the serialized bytes this context was loaded from."""
        return self._context_id

    def __repr__(self) -> str:
        return (
            f"PublicContext(context_id={self._context_id[:16]}…, "
            f"params={self.params}, galois={self.has_galois_keys})"
        )


class SecretContext(_Context):
    """The buyer's key pair: encrypts inputs, decrypts results, never leaves.

    Build it with :meth:`generate` or :meth:`load`.
    """

    __slots__ = ("_context_id", "_public", "_public_bytes", "galois")

    def __init__(
        self,
        native: NativeContext,
        params: CKKSParams,
        public_bytes: bytes,
        galois: bool,
        *,
        _guard: object = None,
    ) -> None:
        if _guard is not _PRIVATE:
            raise TypeError("build a SecretContext with generate() or load()")
        super().__init__(native, params)
        self._public_bytes = public_bytes
        self._context_id = hashlib.sha256(public_bytes).hexdigest()
        self._public: PublicContext | None = None
        self.galois = galois

    @classmethod
    def generate(
        cls,
        params: CKKSParams | None = None,
        *,
        galois: bool = False,
        n_threads: int | None = None,
    ) -> SecretContext:
        """Generate a fresh key pair.

        Parameters
        ----------
        params
            Defaults to :class:`CKKSParams` () (N=8192). Use
            :meth:`CKKSParams.model_eval` for ``encrypted_model_eval``.
        galois
            Generate Galois (rotation) keys: needed by ``encrypted_model_eval``,
            not by ``encrypted_inference``; they make the public context ≈35 MB.
        n_threads
            Threads TenSEAL may use (default: one per core).
        """
        params = params if params is not None else CKKSParams()
        native = NativeContext.generate(
            params.poly_modulus_degree,
            params.coeff_mod_bit_sizes,
            params.scale_bits,
            galois=galois,
            n_threads=n_threads,
        )
        public = native.serialize(secret=False, galois=galois)
        return cls(native, params, public, galois, _guard=_PRIVATE)

    def public_bytes(self) -> bytes:
        """The public context to upload: public key (+ Galois keys), no secret."""
        return self._public_bytes

    @property
    def context_id(self) -> str:
        """SHA-256 (hex) of :meth:`public_bytes`: how the exchange refers to it."""
        return self._context_id

    def public_context(self) -> PublicContext:
        """The :class:`PublicContext` a node would build from :meth:`public_bytes`."""
        if self._public is None:
            self._public = PublicContext.from_bytes(self._public_bytes)
        return self._public

    def encrypt(self, values: npt.ArrayLike) -> EncryptedVector:
        """Encrypt up to N/2 real values."""
        arr = real_vector(values, "values", self.slot_count)
        return EncryptedVector(self, self._native.encrypt(arr), _guard=_PRIVATE)

    def decrypt(self, vec: EncryptedVector) -> FloatArray:
        """Decrypt the vector's logical slots (real parts)."""
        return self._adopt(vec, "vec", fresh=False)._native.decrypt()

    def decrypt_slots(self, vec: EncryptedVector) -> ComplexArray:
        """Decrypt all N/2 slots, real and imaginary: what a key holder can see."""
        return decrypt_slots(self._adopt(vec, "vec", fresh=False)._native)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the secret key to ``path`` with mode 0600, atomically.

        The file is written under a temporary name in the same directory, synced,
        then renamed, so no partial key file is ever visible.

        Raises
        ------
        KeyFileError
            The file exists (and ``overwrite`` is false) or cannot be written.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise KeyFileError(str(target), "exists; pass overwrite=True to replace")
        secret = self._native.serialize(secret=True, galois=False)
        blob = b"".join(
            [
                _MAGIC,
                len(secret).to_bytes(8, "big"),
                secret,
                len(self._public_bytes).to_bytes(8, "big"),
                self._public_bytes,
            ]
        )
        try:  # mkstemp creates the file with mode 0600, exclusively
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".veilx-key-")
        except OSError as exc:
            raise KeyFileError(str(target), f"cannot create ({exc.strerror})") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(blob)
                out.flush()
                os.fsync(out.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)  # atomic, and fails if the target appeared
        except FileExistsError:
            raise KeyFileError(
                str(target), "exists; pass overwrite=True to replace"
            ) from None
        except OSError as exc:
            raise KeyFileError(str(target), f"cannot write ({exc.strerror})") from None
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, n_threads: int | None = None
    ) -> SecretContext:
        """Read a key file written by :meth:`save`.

        Raises
        ------
        InsecureKeyFile
            Group or others have any permission on the file.
        KeyFileError
            The file cannot be read or is not a key file.
        MalformedContext
            The embedded contexts do not decode or do not match.
        """
        target = Path(path)
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError as exc:
            raise KeyFileError(str(target), f"cannot open ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise InsecureKeyFile(str(target), mode)
            blob = f.read()
        secret, public = _split_key_file(blob, str(target))
        params = _params_from_bytes(secret)
        native = NativeContext.load(secret, n_threads=n_threads)
        info = native.info()
        if not info.has_secret_key:
            raise MalformedContext("the key file holds no secret key")
        _check_scale(params, info.global_scale)
        native.harden(params.scale)
        loaded_public = PublicContext.from_bytes(public, expected=params)
        if loaded_public._native.public_key_bytes() != native.public_key_bytes():
            raise MalformedContext("the public part belongs to another key")
        ctx = cls(
            native, params, public, loaded_public.has_galois_keys, _guard=_PRIVATE
        )
        ctx._public = loaded_public
        return ctx

    def __repr__(self) -> str:
        return (
            f"SecretContext(context_id={self.context_id[:16]}…, "
            f"params={self.params}, galois={self.galois})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretContext is not picklable; use save() and load()")


def _split_key_file(blob: bytes, path: str) -> tuple[bytes, bytes]:
    if not blob.startswith(_MAGIC) or len(blob) < 24:
        raise KeyFileError(path, "not a veilx HE key file (bad magic)")
    pos = len(_MAGIC)
    parts: list[bytes] = []
    for _ in range(2):
        if pos + 8 > len(blob):
            raise KeyFileError(path, "truncated key file")
        length = int.from_bytes(blob[pos : pos + 8], "big")
        pos += 8
        if pos + length > len(blob):
            raise KeyFileError(path, "truncated key file")
        parts.append(blob[pos : pos + length])
        pos += length
    if pos != len(blob):
        raise KeyFileError(path, "trailing bytes after the key file")
    return parts[0], parts[1]


class EncryptedVector:
    """A CKKS-encrypted vector bound to the context it was made or loaded under."""

    __slots__ = ("_native", "context")

    def __init__(
        self,
        context: PublicContext | SecretContext,
        native: NativeVector,
        *,
        _guard: object = None,
    ) -> None:
        if _guard is not _PRIVATE:
            raise TypeError("EncryptedVector comes from encrypt() or from_bytes()")
        self.context = context
        self._native = native

    @classmethod
    def from_bytes(
        cls,
        context: PublicContext | SecretContext,
        data: bytes,
        *,
        fresh: bool = True,
    ) -> EncryptedVector:
        """Load a serialized vector and check its shape.

        Parameters
        ----------
        context
            The context it was encrypted under.
        data
            :meth:`to_bytes` output.
        fresh
            Require a freshly encrypted vector (top level, nominal scale): what a
            node accepts as input. Results returned to the buyer are not fresh.

        Raises
        ------
        MalformedCiphertext
            The bytes do not decode under ``context``, or the vector is chunked,
            not a two-polynomial ciphertext, or not fresh when required.
        """
        if not isinstance(data, bytes | bytearray) or not data:
            raise MalformedCiphertext("expected non-empty bytes")
        if len(data) > MAX_CIPHERTEXT_BYTES:
            raise MalformedCiphertext(
                f"{len(data)} bytes; at most {MAX_CIPHERTEXT_BYTES} are accepted"
            )
        native = context._native.load_vector(bytes(data))
        info = native.info()
        if info.chunks != 1:
            raise MalformedCiphertext(
                f"{info.chunks} ciphertexts; a vector must fit in one (N/2 slots)"
            )
        if info.polys != 2 or not info.ntt_form:
            raise MalformedCiphertext(
                "not a relinearised two-polynomial CKKS ciphertext in NTT form"
            )
        if not 1 <= info.size <= context.slot_count:
            raise MalformedCiphertext(
                f"logical size {info.size} outside 1..{context.slot_count}"
            )
        if not is_finite_scale(info.scale):
            raise MalformedCiphertext("scale is not a finite number above 1")
        if fresh:
            if info.primes != context._native.top_level_primes:
                raise MalformedCiphertext(
                    "not a fresh ciphertext: it has been multiplied or mod-switched"
                )
            if info.scale != context.params.scale:
                raise MalformedCiphertext(
                    f"scale {info.scale:g} is not the context's 2^"
                    f"{context.params.scale_bits}"
                )
        return cls(context, native, _guard=_PRIVATE)

    def to_bytes(self) -> bytes:
        """Serialize (TenSEAL ``CKKSVectorProto``; see ``_backend`` for the layout)."""
        return self._native.serialize()

    @property
    def size(self) -> int:
        """The number of logical slots (``decrypt`` returns this many values)."""
        return self._native.size

    def __repr__(self) -> str:
        return f"EncryptedVector(size={self.size})"


def wrap_vector(
    context: PublicContext | SecretContext, native: NativeVector
) -> EncryptedVector:
    """Wrap a native result of a computation in this package (internal)."""
    return EncryptedVector(context, native, _guard=_PRIVATE)


def real_vector(values: npt.ArrayLike, field: str, max_len: int) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(field, "must be a vector of real numbers") from None
    if arr.ndim != 1 or not 1 <= arr.size <= max_len:
        raise InvalidInput(field, f"must be a vector of 1 to {max_len} numbers")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(field, "contains NaN or infinite values")
    return arr


def add_noise(
    vec: EncryptedVector, slots: npt.ArrayLike, values: npt.ArrayLike
) -> EncryptedVector:
    """Add plaintext noise (e.g. DP noise drawn by the caller) to chosen slots.

    Use it for results whose sensitivity the node knows (an encrypted aggregate).
    For ``encrypted_model_eval`` the buyer chooses the functional, so DP noise
    belongs on the Gram matrix instead (:meth:`Gram.perturbed`).

    Parameters
    ----------
    vec
        A vector under a context with a public key (any level).
    slots
        Distinct slot indices in ``0 .. N/2 - 1``.
    values
        One finite value per slot index.

    Returns
    -------
    EncryptedVector
        A new vector; ``vec`` is unchanged.
    """
    slot_count = vec.context.slot_count
    idx = np.asarray(slots)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise InvalidInput("slots", "must be a non-empty vector of slot indices")
    if idx.min() < 0 or idx.max() >= slot_count:
        raise InvalidInput("slots", f"indices must be in 0..{slot_count - 1}")
    if np.unique(idx).size != idx.size:
        raise InvalidInput("slots", "indices must be distinct")
    noise = real_vector(values, "values", slot_count)
    if noise.size != idx.size:
        raise InvalidInput("values", "needs exactly one value per slot")
    dense = np.zeros(slot_count)
    dense[idx] = noise
    native = add_plain_exact(vec._native, dense)
    return EncryptedVector(vec.context, native, _guard=_PRIVATE)


def rerandomize(
    vec: EncryptedVector, *, keep: npt.ArrayLike | None, flood_std: float
) -> EncryptedVector:
    """Mask, re-randomise and flood a result before it leaves the node.

    Multiplies by a 0/1 plaintext so only the ``keep`` slots carry values (uses one
    level), switches to the last level, adds a fresh encryption of zero and complex
    Gaussian flooding noise of std ``flood_std`` on every slot.

    Parameters
    ----------
    vec
        A result computed under a context with a public key.
    keep
        Slot indices that carry the intended values, or ``None`` to keep all.
    flood_std
        The flooding std, normally from ``flooding_std`` for the circuit.
    """
    if not (isinstance(flood_std, int | float) and math.isfinite(flood_std)):
        raise InvalidInput("flood_std", "must be a finite number")
    if flood_std <= 0:
        raise InvalidInput(
            "flood_std", "must be positive: flooding hides the computation's noise"
        )
    slot_count = vec.context.slot_count
    mask: FloatArray | None = None
    if keep is not None:
        idx = np.asarray(keep)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise InvalidInput("keep", "must be a non-empty vector of slot indices")
        if idx.min() < 0 or idx.max() >= slot_count:
            raise InvalidInput("keep", f"indices must be in 0..{slot_count - 1}")
        mask = np.zeros(slot_count)
        mask[idx] = 1.0
    native = finalize(
        vec._native, keep=mask, offset=None, flood_std=float(flood_std), size=vec.size
    )
    return EncryptedVector(vec.context, native, _guard=_PRIVATE)


def encrypt_values(context: PublicContext, values: npt.ArrayLike) -> EncryptedVector:
    """Encrypt a node's plaintext result under the buyer's public key.

    For results the node computes in the clear and returns encrypted so that the
    exchange sees only their layout (an ``aggregate`` with ``encrypt_result``).
    The vector is a *fresh* public-key encryption: ``c1`` is uniformly random and
    the noise depends only on the encryptor's randomness, so — unlike a computed
    ciphertext — there is no data-dependent noise to flood. Unused slots encode
    exactly zero (no replicated copies), so a raw decoding of every slot shows the
    values, then encryption noise only.

    The scale adapts to the values: the ciphertext is at the last level, where the
    one prime q0 must hold ``|value| · scale`` with a factor-2 margin, so the scale
    is ``2^(bits(q0) − 2 − ⌈log₂ max|value|⌉)`` (at most ``2^(bits(q0) − 2)``).
    Counts and sums far beyond the context's own result range (2^19 for the
    default parameters) therefore fit; the absolute decoding error is below
    ``2^16 / scale`` (≈1e-2 at the smallest scale accepted, 2^20).

    Parameters
    ----------
    context
        The buyer's public context.
    values
        1 to N/2 finite real numbers.

    Returns
    -------
    EncryptedVector
        Logical size ``len(values)``; decrypts (with the secret key) to the values.

    Raises
    ------
    InvalidInput
        Not 1 to N/2 finite numbers.
    ValueOutOfRange
        The largest magnitude needs a scale below 2^20.
    """
    arr = real_vector(values, "values", context.slot_count)
    q0_bits = result_prime_bits(context._native)
    peak = float(np.max(np.abs(arr)))
    magnitude_bits = math.ceil(math.log2(peak)) if peak > 1.0 else 0
    scale_bits = q0_bits - 2 - magnitude_bits
    if scale_bits < MIN_VALUE_SCALE_BITS:
        raise ValueOutOfRange(
            "values",
            peak,
            float(2 ** (q0_bits - 2 - MIN_VALUE_SCALE_BITS)),
            f"the result prime of this context ({q0_bits} bits) cannot hold such a "
            "value with 20 bits of precision",
        )
    native = encrypt_last_level(context._native, arr, scale_bits=scale_bits)
    return EncryptedVector(context, native, _guard=_PRIVATE)

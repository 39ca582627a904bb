"""The one module that imports TenSEAL (and the SEAL bindings it ships).

Everything native is wrapped here in two small typed handles, :class:`NativeContext`
and :class:`NativeVector`; the rest of the package never sees a TenSEAL object.

Two things TenSEAL's Python API cannot do are done with SEAL itself
(``tenseal.sealapi``, the same SEAL build):

* **Re-randomising a result** (:func:`finalize`): multiply by a 0/1 mask, add a
  fresh public-key encryption of zero (so the ciphertext's ``c1`` no longer depends
  on the node's plaintext operands) and add complex Gaussian flooding noise to every
  slot's real *and imaginary* part. TenSEAL encodes real vectors only, so its own
  additions would leave the imaginary parts — which a key holder can decode with
  SEAL — carrying the computation's data-dependent noise.
* **Exact scales**: after a rescale TenSEAL overwrites a ciphertext's scale with the
  nominal Δ, although the true scale is Δ²/q for the dropped prime q (a relative
  error of ≈1e-7 to 1e-5). :func:`finalize` restores the true scale so a result
  decrypts without that bias.

SEAL's Python bindings read and write objects only through file paths, so objects
cross between the two libraries through an anonymous in-memory file
(``memfd_create``; a private temporary directory where that does not exist).

Serialized CKKS vectors are TenSEAL ``CKKSVectorProto`` messages
(``tenseal/proto/tensors.proto``), which this module reads and writes itself (no
protobuf dependency). Byte layout, protobuf wire format::

    field 1  sizes        LEN  packed varints: logical slots used per ciphertext
    field 2  ciphertexts  LEN  one per chunk: SEAL ``Ciphertext::save`` output
                               (SEAL header, magic 0xA15E, then compressed data)
    field 3  scale        I64  little-endian double: TenSEAL's nominal scale

A serialized context is a ``TenSEALContextProto`` whose field 1 is SEAL's
``EncryptionParameters::save`` output; it is read first, so weak parameters are
refused with the rule before TenSEAL builds anything.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as seal

from mpc_engine.he.errors import InvalidInput, MalformedCiphertext, MalformedContext

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

# What TenSEAL and SEAL raise on bad input (C++ exceptions map to these).
_NATIVE_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError)

# ---------------------------------------------------------------------------
# protobuf wire format, just enough for TenSEAL's two messages
# ---------------------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield a protobuf message's ``(field, wire type, value)`` triples in order."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _I64:
            if pos + 8 > len(buf):
                raise ValueError("truncated 64-bit field")
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == _I32:
            if pos + 4 > len(buf):
                raise ValueError("truncated 32-bit field")
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if field == 0:
            raise ValueError("field number 0")
        yield field, wire, value


def _proto_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split a whole protobuf message into ``(field, wire type, value)`` triples."""
    return list(_iter_fields(buf))


@dataclass(frozen=True)
class _VectorProto:
    sizes: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    scale: float


def _parse_vector(buf: bytes) -> _VectorProto:
    sizes: list[int] = []
    cts: list[bytes] = []
    scale = 0.0
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == _LEN and isinstance(value, bytes):
            pos = 0
            while pos < len(value):
                size, pos = _read_varint(value, pos)
                sizes.append(size)
        elif field == 1 and wire == _VARINT and isinstance(value, int):
            sizes.append(value)
        elif field == 2 and wire == _LEN and isinstance(value, bytes):
            cts.append(value)
        elif field == 3 and wire == _I64 and isinstance(value, int):
            scale = struct.unpack("<d", value.to_bytes(8, "little"))[0]
        else:
            raise ValueError(f"unexpected field {field} (wire type {wire})")
    return _VectorProto(tuple(sizes), tuple(cts), scale)


def _build_vector(proto: _VectorProto) -> bytes:
    packed = b"".join(_write_varint(s) for s in proto.sizes)
    out = [b"\x0a", _write_varint(len(packed)), packed]
    for ct in proto.ciphertexts:
        out += [b"\x12", _write_varint(len(ct)), ct]
    out += [b"\x19", struct.pack("<d", proto.scale)]
    return b"".join(out)


# ---------------------------------------------------------------------------
# moving SEAL objects between the two bindings
# ---------------------------------------------------------------------------


class _Scratch:
    """A path both C++ bindings can open, backed by one file descriptor."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def write(self, data: bytes) -> None:
        os.ftruncate(self.fd, 0)
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(self.fd, view[offset:], offset)

    def read(self) -> bytes:
        size = os.fstat(self.fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(self.fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def clear(self) -> None:
        os.ftruncate(self.fd, 0)


@contextmanager
def _scratch() -> Iterator[_Scratch]:
    """Yield an in-memory file (Linux ``memfd``) or a 0600 file in a 0700 dir."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("veilx-he", os.MFD_CLOEXEC)
        try:
            yield _Scratch(fd, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="veilx-he-") as tmp:
        path = os.path.join(tmp, "blob")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        scratch = _Scratch(fd, path)
        try:
            yield scratch
        finally:
            scratch.clear()  # never leave key bytes on disk
            os.close(fd)


def csprng_complex_normal(count: int) -> ComplexArray:
    """Return ``count`` complex normals (real and imaginary parts each N(0, 1)).

    Box–Muller on 53-bit uniforms from ``os.urandom``: flooding noise must be
    unpredictable to the key holder, which a seeded PRNG such as PCG64 is not.
    """
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    radius = np.sqrt(-2.0 * np.log(u1))
    out: ComplexArray = radius * np.exp(2j * np.pi * u2)
    return out


# ---------------------------------------------------------------------------
# contexts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RawParameters:
    """What a serialized context says about its encryption parameters."""

    is_ckks: bool
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]


def read_context_parameters(data: bytes) -> RawParameters:
    """Read the encryption parameters of a serialized context without loading it.

    Raises
    ------
    MalformedContext
        The bytes are not a TenSEAL context with SEAL encryption parameters.
    """
    found: bytes | None = None
    try:
        for field, wire, value in _iter_fields(data):
            if field == 1 and wire == _LEN and isinstance(value, bytes):
                found = value  # serialized first: the rest (keys) is not copied
                break
    except ValueError as exc:
        raise MalformedContext(f"not a TenSEAL context message ({exc})") from None
    if found is None:
        raise MalformedContext("no encryption parameters (field 1) in the message")
    with _scratch() as f:
        f.write(found)
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        try:
            parms.load(f.path)
        except _NATIVE_ERRORS as exc:
            raise MalformedContext(
                f"SEAL could not read the encryption parameters ({exc})"
            ) from None
    return RawParameters(
        is_ckks=parms.scheme() == seal.SCHEME_TYPE.CKKS,
        poly_modulus_degree=int(parms.poly_modulus_degree()),
        coeff_mod_bit_sizes=tuple(int(m.bit_count()) for m in parms.coeff_modulus()),
    )


@dataclass(frozen=True)
class ContextInfo:
    """Facts about a loaded context, read from TenSEAL."""

    has_secret_key: bool
    has_public_key: bool
    has_galois_keys: bool
    global_scale: float


class _SealState:
    """SEAL objects mirroring one TenSEAL context (same parameters, same keys)."""

    def __init__(self, ctx: Any) -> None:
        with _scratch() as f:
            ctx.seal_context().data.key_context_data().parms().save(f.path)
            parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
            parms.load(f.path)
            self.context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
            if not self.context.parameters_set():
                raise MalformedContext(
                    "SEAL refused the parameters: "
                    + str(self.context.parameters_error_message())
                )
            public_key = seal.PublicKey()
            ctx.public_key().data.save(f.path)
            public_key.load(self.context, f.path)
            f.clear()
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self.encryptor = seal.Encryptor(self.context, public_key)
        first = self.context.first_context_data()
        self.data_primes = tuple(int(m.value()) for m in first.parms().coeff_modulus())
        self.last_parms_id = self.context.last_parms_id()
        self.global_scale = float(ctx.global_scale)
        self.slot_count = int(self.encoder.slot_count())
        self._decryptor: Any = None
        self._ctx = ctx

    def decryptor(self) -> Any:
        if self._decryptor is None:
            secret = seal.SecretKey()
            with _scratch() as f:
                self._ctx.secret_key().data.save(f.path)
                secret.load(self.context, f.path)
                f.clear()
            self._decryptor = seal.Decryptor(self.context, secret)
        return self._decryptor

    def load_ciphertext(self, data: bytes) -> Any:
        ct = seal.Ciphertext()
        with _scratch() as f:
            f.write(data)
            ct.load(self.context, f.path)
        return ct

    def save_ciphertext(self, ct: Any) -> bytes:
        with _scratch() as f:
            ct.save(f.path)
            return f.read()

    def true_scale(self, ct: Any) -> float:
        """Undo TenSEAL's nominal scale after rescaling (see the module docstring).

        TenSEAL sets the scale to exactly Δ after every rescale; each dropped prime q
        followed a product with a plaintext encoded at Δ, so the true scale is
        Δ · Π(Δ / q). A scale that is not exactly Δ was set by this module and is
        already true.
        """
        scale = float(ct.scale)
        dropped = self.data_primes[int(ct.coeff_modulus_size()) :]
        if dropped and scale == self.global_scale:
            for q in dropped:
                scale *= self.global_scale / q
        return scale


class NativeContext:
    """A TenSEAL CKKS context; the SEAL mirror is built on first use."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._seal: _SealState | None = None
        self._lock = threading.Lock()

    @classmethod
    def generate(
        cls,
        poly_modulus_degree: int,
        coeff_mod_bit_sizes: tuple[int, ...],
        scale_bits: int,
        *,
        galois: bool,
        n_threads: int | None,
    ) -> NativeContext:
        """Generate fresh keys (secret, public, relinearisation, maybe Galois)."""
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
            n_threads=n_threads,
        )
        ctx.global_scale = float(2**scale_bits)
        if galois:
            ctx.generate_galois_keys()
        return cls(ctx)

    @classmethod
    def load(cls, data: bytes, *, n_threads: int | None) -> NativeContext:
        """Deserialize a context; anything TenSEAL rejects is ``MalformedContext``."""
        try:
            ctx = ts.context_from(data, n_threads=n_threads)
        except _NATIVE_ERRORS as exc:
            raise MalformedContext(f"TenSEAL could not load it ({exc})") from None
        try:
            scheme = ctx.seal_context().data.key_context_data().parms().scheme()
        except _NATIVE_ERRORS as exc:  # pragma: no cover - defensive
            raise MalformedContext(f"no SEAL context ({exc})") from None
        if scheme != ts.SCHEME_TYPE.CKKS.value:
            raise MalformedContext("the context is not CKKS")
        return cls(ctx)

    def info(self) -> ContextInfo:
        """Read which keys the context holds and its scale."""
        ctx = self._ctx
        try:
            has_public = bool(ctx.has_public_key())
        except ValueError:  # symmetric-encryption contexts have no public key
            has_public = False
        return ContextInfo(
            has_secret_key=bool(ctx.has_secret_key()) or bool(ctx.is_private()),
            has_public_key=has_public,
            has_galois_keys=bool(ctx.has_galois_keys()),
            global_scale=float(ctx.global_scale),
        )

    def harden(self, scale: float) -> None:
        """Reset the flags a crafted context could have turned off."""
        self._ctx.auto_relin = True
        self._ctx.auto_rescale = True
        self._ctx.auto_mod_switch = True
        self._ctx.global_scale = scale

    def serialize(self, *, secret: bool, galois: bool) -> bytes:
        """Serialize the public key, optionally the secret key and Galois keys."""
        return bytes(
            self._ctx.serialize(
                save_public_key=True,
                save_secret_key=secret,
                save_galois_keys=galois,
                save_relin_keys=False,
            )
        )

    def public_key_bytes(self) -> bytes:
        """The serialized public key alone (to check two contexts share keys)."""
        with _scratch() as f:
            self._ctx.public_key().data.save(f.path)
            return f.read()

    @property
    def top_level_primes(self) -> int:
        """How many primes a fresh ciphertext has (all but the special prime)."""
        first = self._ctx.seal_context().data.first_context_data()
        return int(first.chain_index()) + 1

    def seal_state(self) -> _SealState:
        """The SEAL mirror of this context (built once, thread-safe)."""
        with self._lock:
            if self._seal is None:
                self._seal = _SealState(self._ctx)
            return self._seal

    def encrypt(self, values: FloatArray) -> NativeVector:
        """Encrypt a real vector (at most N/2 values) with the public key."""
        return NativeVector(self, ts.ckks_vector(self._ctx, values.tolist()))

    def load_vector(self, data: bytes) -> NativeVector:
        """Deserialize a CKKS vector under this context.

        Raises
        ------
        MalformedCiphertext
            TenSEAL or SEAL rejected the bytes (bad framing, parameters of another
            context, coefficients out of range).
        """
        try:
            vec = ts.ckks_vector_from(self._ctx, data)
        except _NATIVE_ERRORS as exc:
            raise MalformedCiphertext(f"TenSEAL could not load it ({exc})") from None
        return NativeVector(self, vec)


# ---------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorInfo:
    """Shape facts about a CKKS vector, for validation."""

    size: int
    chunks: int
    polys: int
    primes: int
    scale: float
    ntt_form: bool


class NativeVector:
    """A TenSEAL ``CKKSVector`` and the context it lives in."""

    __slots__ = ("_vec", "context")

    def __init__(self, context: NativeContext, vec: Any) -> None:
        self.context = context
        self._vec = vec

    @property
    def size(self) -> int:
        """The number of logical slots."""
        return int(self._vec.size())

    def info(self) -> VectorInfo:
        """Read the vector's shape: chunks, polynomials, level, scale."""
        cts = self._vec.ciphertext()
        first = cts[0]
        return VectorInfo(
            size=int(self._vec.size()),
            chunks=len(cts),
            polys=max(int(c.size()) for c in cts),
            primes=int(first.coeff_modulus_size()),
            scale=float(first.scale),
            ntt_form=all(bool(c.is_ntt_form()) for c in cts),
        )

    def serialize(self) -> bytes:
        """TenSEAL's serialized form (see the module docstring for the layout)."""
        return bytes(self._vec.serialize())

    def mul_scalar(self, value: float) -> NativeVector:
        """Multiply every slot by a plaintext scalar (then rescale)."""
        return NativeVector(self.context, self._vec.mul(float(value)))

    def mul_plain(self, values: FloatArray) -> NativeVector:
        """Multiply slot-wise by a plaintext vector of the same length (rescale)."""
        return NativeVector(self.context, self._vec.mul(values.tolist()))

    def add(self, other: NativeVector) -> NativeVector:
        """Add another ciphertext vector of the same length and context."""
        return NativeVector(self.context, self._vec.add(other._vec))

    def add_(self, other: NativeVector) -> None:
        """Add another ciphertext vector in place."""
        self._vec.add_(other._vec)

    def sum(self) -> NativeVector:
        """Sum the slots with rotations (needs Galois keys); the total is slot 0."""
        return NativeVector(self.context, self._vec.sum())

    def decrypt(self) -> FloatArray:
        """Decrypt the real parts of the vector's logical slots (needs the key)."""
        out: FloatArray = np.asarray(self._vec.decrypt(), dtype=np.float64)
        return out


# ---------------------------------------------------------------------------
# SEAL-level operations
# ---------------------------------------------------------------------------


def _single_ciphertext(vec: NativeVector) -> tuple[_VectorProto, _SealState, Any]:
    try:
        proto = _parse_vector(vec.serialize())
    except ValueError as exc:  # pragma: no cover - TenSEAL wrote these bytes
        raise MalformedCiphertext(f"unexpected TenSEAL layout ({exc})") from None
    if len(proto.ciphertexts) != 1:
        raise MalformedCiphertext("expected a vector held in one ciphertext")
    state = vec.context.seal_state()
    ct = state.load_ciphertext(proto.ciphertexts[0])
    ct.scale = state.true_scale(ct)
    return proto, state, ct


def _add_complex(state: _SealState, ct: Any, values: ComplexArray) -> None:
    plain = seal.Plaintext()
    state.encoder.encode(values.tolist(), ct.parms_id(), ct.scale, plain)
    state.evaluator.add_plain_inplace(ct, plain)


def finalize(
    vec: NativeVector,
    *,
    keep: FloatArray | None,
    offset: FloatArray | None,
    flood_std: float,
    size: int,
) -> NativeVector:
    """Mask, re-randomise and flood a result before it leaves the node.

    1. restore the true scale (TenSEAL's is nominal after rescales);
    2. if ``keep`` is given, multiply by that 0/1 plaintext, encoded at the scale of
       the prime the following rescale drops, so the scale is unchanged exactly;
    3. switch down to the last level (the smallest ciphertext to send);
    4. add a fresh public-key encryption of zero: ``c1`` becomes uniformly random,
       independent of the node's operands (re-randomisation, with step 5 the
       noise flooding of Gentry, "Fully homomorphic encryption using ideal
       lattices", STOC 2009, §20 circuit privacy);
    5. add ``offset`` (plaintext values such as a bias or DP noise) and complex
       Gaussian flooding noise of std ``flood_std`` on every slot, drawn from the OS
       CSPRNG, encoded at the ciphertext's true scale;
    6. re-frame as a TenSEAL vector of logical length ``size``.
    """
    proto, state, ct = _single_ciphertext(vec)
    slots = state.slot_count
    if keep is not None:
        moduli = state.context.get_context_data(ct.parms_id()).parms().coeff_modulus()
        if len(moduli) < 2:
            raise InvalidInput(
                "keep", "no level left for the mask: the circuit used every prime"
            )
        prime = float(moduli[-1].value())
        mask = seal.Plaintext()
        state.encoder.encode(keep.tolist(), ct.parms_id(), prime, mask)
        state.evaluator.multiply_plain_inplace(ct, mask)
        state.evaluator.rescale_to_next_inplace(ct)
    if ct.parms_id() != state.last_parms_id:
        state.evaluator.mod_switch_to_inplace(ct, state.last_parms_id)
    zero = seal.Ciphertext()
    state.encryptor.encrypt_zero(ct.parms_id(), zero)
    zero.scale = ct.scale
    state.evaluator.add_inplace(ct, zero)
    noise = csprng_complex_normal(slots) * flood_std
    if offset is not None:
        noise = noise + offset
    _add_complex(state, ct, noise)
    out = _VectorProto((size,), (state.save_ciphertext(ct),), proto.scale)
    return vec.context.load_vector(_build_vector(out))


def encrypt_last_level(
    context: NativeContext, values: FloatArray, *, scale_bits: int
) -> NativeVector:
    """Encrypt real values with the public key at the last level, at scale 2^scale_bits.

    The plaintext holds ``values`` in the first slots and zeros in every other slot
    (no TenSEAL replication); the ciphertext is a fresh public-key encryption, so
    its ``c1`` is uniformly random and its noise independent of anything but the
    encryptor's randomness. Being at the last level (one prime) it is the smallest
    ciphertext there is, and ``scale_bits`` may differ from the context's scale so
    large values fit the result prime (see ``encrypt_values``).
    """
    state = context.seal_state()
    dense = np.zeros(state.slot_count, dtype=np.complex128)
    dense[: values.size] = values
    plain = seal.Plaintext()
    state.encoder.encode(
        dense.tolist(), state.last_parms_id, float(2**scale_bits), plain
    )
    ct = seal.Ciphertext()
    state.encryptor.encrypt(plain, ct)
    proto = _VectorProto(
        (values.size,), (state.save_ciphertext(ct),), state.global_scale
    )
    return context.load_vector(_build_vector(proto))


def result_prime_bits(context: NativeContext) -> int:
    """Bit size of q0, the one prime a last-level ciphertext keeps."""
    state = context.seal_state()
    last = state.context.get_context_data(state.last_parms_id)
    return int(last.parms().coeff_modulus()[0].bit_count())


def add_plain_exact(vec: NativeVector, values: FloatArray) -> NativeVector:
    """Add a plaintext vector (one value per slot) at the ciphertext's true scale."""
    proto, state, ct = _single_ciphertext(vec)
    _add_complex(state, ct, values.astype(np.complex128))
    out = _VectorProto(proto.sizes, (state.save_ciphertext(ct),), proto.scale)
    return vec.context.load_vector(_build_vector(out))


def decrypt_slots(vec: NativeVector) -> ComplexArray:
    """Decrypt every slot, real and imaginary parts, at the true scale.

    This is what a dishonest key holder sees when it decodes with SEAL directly.
    """
    _, state, ct = _single_ciphertext(vec)
    plain = seal.Plaintext()
    state.decryptor().decrypt(ct, plain)
    out: ComplexArray = np.asarray(
        state.encoder.decode_complex(plain), dtype=np.complex128
    )
    return out


def seal_max_coeff_bits(poly_modulus_degree: int) -> int:
    """SEAL's own 128-bit bound on the total modulus (cross-check of the table)."""
    return int(
        seal.CoeffModulus.MaxBitCount(poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128)
    )


def is_finite_scale(scale: float) -> bool:
    """Whether a scale read from a ciphertext is a usable positive number."""
    return math.isfinite(scale) and scale > 1.0

"""Local HE key management: the buyer's CKKS secret keys never leave this machine.

Layout of the key directory (default ``$XDG_CONFIG_HOME/veilx/keys``, i.e.
``~/.config/veilx/keys``; mode 0700)::

    <name>.key    the secret key file, written by ``SecretContext.save`` (0600):
                  secret context + the exact public bytes whose SHA-256 is the
                  context id
    <name>.json   metadata (0600): context id, parameters, Galois keys, creation
                  time, and the exchanges the *public* context was uploaded to

Only ``SecretContext.public_bytes()`` is ever sent, and only by
:meth:`Keys.upload_context`; the exchange refuses a context carrying a secret key
as well (``secret_key_present``).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import ValidationError

from mpc_engine.he import CKKSParams, SecretContext
from mpc_engine.he.errors import HEError
from sdk._http import HTTP
from sdk._resources import _parse
from sdk.errors import InputError, KeyStoreError, ResultError
from sdk.types import ContextInfo, KeyInfo

__all__ = ["PRESETS", "Keys", "Preset", "default_key_dir"]

Preset = Literal["inference", "model_eval", "high_precision"]
PRESETS: Mapping[str, CKKSParams] = MappingProxyType(
    {
        "inference": CKKSParams.inference(),
        "model_eval": CKKSParams.model_eval(),
        "high_precision": CKKSParams.high_precision(),
    }
)
"""The named CKKS parameter sets a key can be generated with."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def default_key_dir() -> Path:
    """``$XDG_CONFIG_HOME/veilx/keys``, or ``~/.config/veilx/keys``."""
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base else Path.home() / ".config"
    return root / "veilx" / "keys"


def _params(preset: Preset | CKKSParams) -> CKKSParams:
    if isinstance(preset, CKKSParams):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise InputError(
            "preset", f"{preset!r} is not one of {', '.join(sorted(PRESETS))}"
        ) from None


def _describe(params: CKKSParams) -> str:
    for name, p in PRESETS.items():
        if p == params:
            return name
    return f"N={params.poly_modulus_degree}, primes {list(params.coeff_mod_bit_sizes)}"


class Keys:
    """The buyer's HE keys on this machine, and their public contexts' uploads.

    Usable on its own (``Keys(key_dir)``) to generate and list keys offline;
    :meth:`upload_context` needs the exchange connection a :class:`sdk.Client`
    gives its ``keys``.

    Parameters
    ----------
    key_dir
        The key directory (created with mode 0700); default
        :func:`default_key_dir`.
    http
        The exchange connection public contexts are uploaded through.
    """

    def __init__(
        self, key_dir: str | os.PathLike[str] | None = None, *, http: HTTP | None = None
    ) -> None:
        self._http = http
        self.key_dir = Path(key_dir) if key_dir is not None else default_key_dir()
        self._loaded: dict[str, SecretContext] = {}

    # -- files --------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The secret key file of ``name``."""
        return self.key_dir / f"{self._checked(name)}.key"

    def _meta_path(self, name: str) -> Path:
        return self.key_dir / f"{self._checked(name)}.json"

    @staticmethod
    def _checked(name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(
                "name",
                f"{name!r} must be 1-64 of a-z 0-9 _ . - starting with a letter or "
                "digit",
            )
        return name

    def _ensure_dir(self) -> None:
        """Create the key directory 0700, or tighten it if it is ours and looser."""
        try:
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.key_dir.stat()
            if stat.S_IMODE(info.st_mode) & 0o077:
                if info.st_uid != os.getuid():
                    raise KeyStoreError(
                        str(self.key_dir),
                        "the key directory is accessible to others and not owned "
                        "by you; choose another key_dir",
                    )
                os.chmod(self.key_dir, 0o700)
        except OSError as exc:
            if isinstance(exc, KeyStoreError):
                raise
            raise KeyStoreError(
                str(self.key_dir), f"cannot create the key directory ({exc.strerror})"
            ) from None

    def _read_meta(self, name: str) -> dict[str, Any]:
        path = self._meta_path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KeyStoreError(name, f"cannot read {path} ({exc})") from None
        return data if isinstance(data, dict) else {}

    def _write_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Write the metadata atomically with mode 0600."""
        self._ensure_dir()
        target = self._meta_path(name)
        fd, tmp = tempfile.mkstemp(dir=self.key_dir, prefix=".veilx-meta-")
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o600)
                json.dump(meta, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise KeyStoreError(
                name, f"cannot write {target} ({exc.strerror})"
            ) from None

    @staticmethod
    def _meta_for(name: str, key: SecretContext) -> dict[str, Any]:
        return {
            "name": name,
            "context_id": key.context_id,
            "poly_modulus_degree": key.params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(key.params.coeff_mod_bit_sizes),
            "scale_bits": key.params.scale_bits,
            "galois": key.galois,
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "uploaded_to": [],
        }

    # -- keys ---------------------------------------------------------------------

    def generate(
        self,
        name: str = "default",
        *,
        preset: Preset | CKKSParams = "inference",
        galois: bool = False,
        overwrite: bool = False,
    ) -> SecretContext:
        """Generate a key pair and save it under the key directory (mode 0600).

        Parameters
        ----------
        name
            The key's name.
        preset
            ``inference`` (the default N=8192 parameters: inference and encrypted
            aggregates), ``model_eval`` (low-noise rotations) or
            ``high_precision``; or explicit :class:`CKKSParams`.
        galois
            Also generate Galois keys (needed by ``encrypted_model_eval``; they
            make the public context ≈35 MB).
        overwrite
            Replace an existing key of that name (its uploads are forgotten).

        Returns
        -------
        SecretContext
            The new key pair.

        Raises
        ------
        KeyStoreError
            The key exists and ``overwrite`` is false, or it cannot be written.
        """
        name = self._checked(name)
        params = _params(preset)
        path = self.path(name)
        if path.exists() and not overwrite:
            raise KeyStoreError(
                name, f"exists at {path}; pass overwrite=True to replace it"
            )
        self._ensure_dir()
        key = SecretContext.generate(params, galois=galois)
        try:
            key.save(path, overwrite=overwrite)
        except HEError as exc:
            raise KeyStoreError(name, str(exc)) from None
        self._write_meta(name, self._meta_for(name, key))
        self._loaded[name] = key
        return key

    def load(self, name: str = "default") -> SecretContext:
        """Load a saved key (refused if its file is readable by others).

        Raises
        ------
        KeyStoreError
            No such key, or its file is insecure or unreadable.
        """
        name = self._checked(name)
        if name in self._loaded:
            return self._loaded[name]
        path = self.path(name)
        if not path.exists():
            raise KeyStoreError(
                name, f"no key at {path}; generate it with keys.generate({name!r})"
            )
        try:
            key = SecretContext.load(path)
        except HEError as exc:
            raise KeyStoreError(name, str(exc)) from None
        meta = self._read_meta(name)
        if meta.get("context_id") != key.context_id:
            # Missing or stale metadata: rebuild it from the key itself.
            self._write_meta(name, self._meta_for(name, key))
        self._loaded[name] = key
        return key

    def ensure(
        self,
        name: str = "default",
        *,
        preset: Preset | CKKSParams = "inference",
        galois: bool = False,
    ) -> SecretContext:
        """Load the key ``name``, generating and saving it first if it is absent.

        Parameters
        ----------
        name
            The key's name.
        preset
            The parameters the key must have (see :meth:`generate`).
        galois
            Whether the key must have Galois keys.

        Raises
        ------
        KeyStoreError
            A key of that name exists with other parameters, or without Galois
            keys when they are needed.
        """
        name = self._checked(name)
        params = _params(preset)
        if not self.path(name).exists():
            return self.generate(name, preset=params, galois=galois)
        key = self.load(name)
        if key.params != params:
            raise KeyStoreError(
                name,
                f"has parameters {_describe(key.params)}, not {_describe(params)}; "
                "use another key name",
            )
        if galois and not key.galois:
            raise KeyStoreError(
                name, "has no Galois keys, which this computation needs"
            )
        return key

    def find(self, context_id: str) -> SecretContext:
        """The local key whose public context has id ``context_id``.

        Raises
        ------
        KeyStoreError
            No key in the key directory has that context id (the job was
            submitted from another machine or key directory).
        """
        for key in self._loaded.values():
            if key.context_id == context_id:
                return key
        for info in self.list():
            if info.context_id == context_id:
                return self.load(info.name)
        raise KeyStoreError(
            context_id[:16] + "…",
            f"no key in {self.key_dir} has this context id; decrypt on the machine "
            "(and key directory) that submitted the job",
        )

    def list(self) -> builtins.list[KeyInfo]:
        """The keys in the key directory, by name (from their metadata)."""
        if not self.key_dir.is_dir():
            return []
        out: builtins.list[KeyInfo] = []
        for path in sorted(self.key_dir.glob("*.key")):
            name = path.stem
            if not _NAME.match(name):
                continue
            meta = self._read_meta(name)
            if not meta:
                self.load(name)
                meta = self._read_meta(name)
            try:
                out.append(KeyInfo.model_validate({**meta, "name": name, "path": path}))
            except ValidationError as exc:
                raise KeyStoreError(
                    name, f"unreadable metadata: {exc.errors()[0]['msg']}"
                ) from None
        return out

    # -- public contexts ------------------------------------------------------------

    def upload_context(
        self, key: SecretContext | str = "default", *, force: bool = False
    ) -> str:
        """Upload a key's public context to the exchange once; return its id.

        Only ``key.public_bytes()`` is sent (public key and, if generated, Galois
        keys): never the secret key. The upload is remembered per exchange in the
        key's metadata, so later calls send nothing.

        Parameters
        ----------
        key
            A key pair, or the name of a saved key.
        force
            Upload even if this exchange is recorded as having it.

        Returns
        -------
        str
            The context id (SHA-256 of the public bytes).
        """
        name: str | None = None
        if isinstance(key, str):
            name = key
            ctx = self.load(key)
        else:
            ctx = key
            name = next((n for n, k in self._loaded.items() if k is ctx), None)
        if self._http is None:
            raise KeyStoreError(
                name or ctx.context_id[:16],
                "this key store is not connected to an exchange; use Client.keys",
            )
        meta = self._read_meta(name) if name is not None else {}
        exchange = self._http.base_url
        recorded = meta.get("context_id") == ctx.context_id and exchange in meta.get(
            "uploaded_to", []
        )
        if recorded and not force:
            return ctx.context_id
        data = self._http.json("POST", "/he-contexts", content=ctx.public_bytes())
        info = _parse(ContextInfo, data, "HE context")
        if info.context_id != ctx.context_id:
            raise ResultError(
                "context_id",
                f"the exchange stored the context as {info.context_id[:16]}…; its "
                f"SHA-256 is {ctx.context_id[:16]}…",
            )
        if name is not None and meta.get("context_id") == ctx.context_id:
            uploads = [u for u in meta.get("uploaded_to", []) if u != exchange]
            meta["uploaded_to"] = [*uploads, exchange]
            self._write_meta(name, meta)
        return ctx.context_id

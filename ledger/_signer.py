"""Who signs the ledger's transactions: the :class:`Signer` protocol and a local key.

:class:`~ledger._sender.TransactionSender` only needs an address and a way to turn
a transaction dict into raw signed bytes, so a hardware wallet or a KMS can stand
in for :class:`LocalSigner` by implementing :class:`Signer`.

:class:`LocalSigner` holds a secp256k1 key in memory, loaded from a hex string, an
environment variable, a standard encrypted JSON keystore, or a raw key file that
is treated like an ssh private key: created ``0600`` in a ``0700`` directory, and
refused when group or others may read it. The key never appears in a ``repr``,
a ``str`` or an error message.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from ledger.errors import SignerError

__all__ = ["DEFAULT_KEY_ENV", "LocalSigner", "Signer"]

DEFAULT_KEY_ENV = "VEILX_CHAIN_KEY"
"""The environment variable :meth:`LocalSigner.from_env` reads by default."""

_KEY_FILE_MODE = 0o600
_KEY_DIR_MODE = 0o700


@runtime_checkable
class Signer(Protocol):
    """Signs transactions for one account."""

    @property
    def address(self) -> ChecksumAddress:
        """The account's address."""
        ...

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """Sign ``tx`` (web3 field names, ``chainId`` and ``nonce`` set).

        Returns
        -------
        bytes
            The raw signed transaction, ready for ``eth_sendRawTransaction``.
        """
        ...


class LocalSigner:
    """A :class:`Signer` holding its private key in process memory.

    Build one with :meth:`from_key`, :meth:`from_env`, :meth:`from_keystore` or
    :meth:`load_or_create`.
    """

    __slots__ = ("_account",)

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @classmethod
    def from_key(cls, key: str | bytes) -> LocalSigner:
        """A signer for the 32-byte private ``key`` (bytes, or hex with or without 0x).

        Raises
        ------
        SignerError
            When ``key`` is not a valid secp256k1 private key.
        """
        return cls(_account_from_key(key, source="the given key"))

    @classmethod
    def from_env(cls, var: str = DEFAULT_KEY_ENV) -> LocalSigner:
        """A signer for the hex private key in the environment variable ``var``.

        Raises
        ------
        SignerError
            When ``var`` is unset, empty or not a valid private key.
        """
        source = f"environment variable {var}"
        value = os.environ.get(var, "").strip()
        if not value:
            raise SignerError(source, "not set; export the hex private key in it")
        return cls(_account_from_key(value, source=source))

    @classmethod
    def from_keystore(cls, path: Path, password: str) -> LocalSigner:
        """A signer for the key in the encrypted JSON keystore at ``path`` (v3).

        Raises
        ------
        SignerError
            When the file is missing or unreadable, is not a keystore, or
            ``password`` does not decrypt it.
        """
        source = f"keystore {path}"
        try:
            keystore = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SignerError(source, "no such file") from None
        except OSError as exc:
            raise SignerError(source, f"cannot read it ({exc.strerror})") from None
        except ValueError:
            raise SignerError(source, "not a JSON keystore") from None
        if not isinstance(keystore, dict) or "crypto" not in {
            k.lower() for k in keystore
        }:
            raise SignerError(source, "not a JSON keystore (no 'crypto' section)")
        try:
            key = Account.decrypt(keystore, password)
        except ValueError:
            raise SignerError(source, "wrong password or corrupt keystore") from None
        except (KeyError, TypeError):
            raise SignerError(source, "malformed keystore") from None
        return cls(_account_from_key(bytes(key), source=source))

    @classmethod
    def load_or_create(cls, path: Path) -> LocalSigner:
        """The key in the raw hex key file ``path``; a new random one if it is missing.

        A new file is created with mode ``0600``, in a directory created with mode
        ``0700`` when missing. Like ssh with a private key, an existing file that
        group or others may read or write is refused rather than used.

        Raises
        ------
        SignerError
            When the file is group/other-accessible, not a regular file, owned by
            another user, or does not hold a valid key.
        """
        path = Path(path)
        source = f"key file {path}"
        if not path.exists():
            path.parent.mkdir(mode=_KEY_DIR_MODE, parents=True, exist_ok=True)
            account: LocalAccount = Account.create()
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(path, flags, _KEY_FILE_MODE)
            except FileExistsError:
                pass  # created concurrently: read and check that one below
            else:
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write("0x" + bytes(account.key).hex() + "\n")
                return cls(account)
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise SignerError(source, "not a regular file")
        if info.st_uid != os.getuid():
            raise SignerError(source, "owned by another user")
        if info.st_mode & 0o077:
            raise SignerError(
                source,
                f"permissions 0{stat.S_IMODE(info.st_mode):o} are too open: "
                f"group or others can access it; run `chmod 600 {path}`",
            )
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise SignerError(source, "cannot read it as hex text") from None
        return cls(_account_from_key(text, source=source))

    @property
    def address(self) -> ChecksumAddress:
        """The account's checksummed address."""
        return self._account.address

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """Sign ``tx``; return the raw signed transaction bytes."""
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction)

    def __repr__(self) -> str:
        return f"LocalSigner(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("LocalSigner holds a private key and cannot be pickled")


def _account_from_key(key: str | bytes, *, source: str) -> LocalAccount:
    """The account of ``key``; errors name ``source`` and never echo the key."""
    if isinstance(key, str):
        text = key.strip()
        text = text[2:] if text[:2].lower() == "0x" else text
        if len(text) != 64:
            raise SignerError(source, "a private key is 32 bytes, 64 hex digits")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise SignerError(source, "not hexadecimal") from None
    else:
        raw = bytes(key)
        if len(raw) != 32:
            raise SignerError(source, "a private key is 32 bytes")
    try:
        account: LocalAccount = Account.from_key(raw)
    except Exception:  # noqa: BLE001 — eth-keys' message could echo the key
        raise SignerError(source, "not a valid secp256k1 private key") from None
    return account

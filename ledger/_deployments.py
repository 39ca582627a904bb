"""Where the contracts live: deployment files, deploying, and connecting to them.

A deployment is one JSON file per network, ``contracts/deployments/<network>.json``
(or under ``$VEILX_DEPLOYMENTS_DIR``), written by :func:`deploy_contracts` through
``veilx chain deploy``. :meth:`Ledger.connect` binds the three contract wrappers to
a deployment after checking that the node serves the deployment's chain id and that
code exists at every address.

File format (``"format": "veilx-deployment/1"``)::

    {
      "format": "veilx-deployment/1",
      "network": "local",
      "chain_id": 31337,
      "registry": "0x…", "settlement": "0x…", "anchor": "0x…",
      "settlement_token": null,
      "deployer": "0x…",
      "block_number": 1,
      "bytecode_sha256": {"DataAssetRegistry": "…", "ReceiptAnchor": "…",
                          "Settlement": "…"}
    }

``bytecode_sha256`` is the sha256 of each artifact's runtime bytecode as compiled;
the code on chain differs where the contract has immutables, so it records which
build was deployed rather than being compared with ``eth_getCode``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3

from ledger._artifacts import contracts_dir, load_artifact
from ledger._contracts import (
    DataAssetRegistry,
    PaymentEscrow,
    ReceiptAnchor,
    Settlement,
    SettlementToken,
)
from ledger._sender import TransactionSender, _Rpc
from ledger._signer import Signer
from ledger.errors import ChainIdMismatchError, DeploymentError

__all__ = [
    "DEPLOYMENT_FORMAT",
    "Deployment",
    "Ledger",
    "deploy_contracts",
    "deployment_path",
    "deployments_dir",
    "load_deployment",
]

DEPLOYMENT_FORMAT = "veilx-deployment/1"
"""The ``format`` field of every deployment file this module writes."""

_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ZERO_ADDRESS = "0x" + "00" * 20
_CONTRACTS = ("DataAssetRegistry", "Settlement", "ReceiptAnchor")
_UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class Deployment:
    """The addresses of one network's contracts and how they were deployed.

    Attributes
    ----------
    network
        The network's name (the file's stem): ``local``, ``sepolia``, …
    chain_id
        The chain id the contracts live on.
    registry, settlement, anchor
        The contracts' addresses.
    settlement_token
        The settlement's ERC-20, or ``None`` when it only records.
    deployer
        The account that deployed them (their admin).
    block_number
        The block of the first deployment transaction; event queries start there.
    bytecode_sha256
        Contract name → sha256 hex of the artifact's runtime bytecode deployed.
    escrow, payment_token
        The buyers' payment escrow and its ERC-20 (the ``onchain`` way of paying),
        or ``None`` when the deployment has none.
    """

    network: str
    chain_id: int
    registry: ChecksumAddress
    settlement: ChecksumAddress
    anchor: ChecksumAddress
    settlement_token: ChecksumAddress | None
    deployer: ChecksumAddress
    block_number: int
    bytecode_sha256: dict[str, str] = field(default_factory=dict)
    escrow: ChecksumAddress | None = None
    payment_token: ChecksumAddress | None = None

    def to_json(self) -> str:
        """The deployment file's text (stable key order, newline-terminated)."""
        body = {
            "format": DEPLOYMENT_FORMAT,
            "network": self.network,
            "chain_id": self.chain_id,
            "registry": self.registry,
            "settlement": self.settlement,
            "anchor": self.anchor,
            "settlement_token": self.settlement_token,
            "deployer": self.deployer,
            "block_number": self.block_number,
            "bytecode_sha256": dict(sorted(self.bytecode_sha256.items())),
        }
        if self.escrow is not None:
            body["escrow"] = self.escrow
            body["payment_token"] = self.payment_token
        return json.dumps(body, indent=2) + "\n"

    def outdated_contracts(self) -> list[str]:
        """The contracts deployed from another build than this package's artifacts.

        Compares each recorded ``bytecode_sha256`` with the artifact's now. A
        contract whose code changed may have another ABI: the wrappers cannot
        read it (a new view, a new field in a returned struct).
        """
        return sorted(
            name
            for name, digest in self.bytecode_sha256.items()
            if _runtime_sha256(name) != digest
        )

    @classmethod
    def from_json(cls, text: str, *, source: str) -> Deployment:
        """Parse a deployment file's ``text``; ``source`` names it in errors.

        Raises
        ------
        DeploymentError
            When the text is not JSON or a field is missing or malformed; the
            message names the field.
        """
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise DeploymentError(_UNKNOWN, source, f"not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise DeploymentError(_UNKNOWN, source, "not a JSON object")
        network = raw.get("network")
        name = network if isinstance(network, str) and network else _UNKNOWN
        reader = _Fields(raw, name, source)
        fmt = reader.text("format")
        if fmt != DEPLOYMENT_FORMAT:
            raise DeploymentError(
                name, source, f"field 'format': {fmt!r} is not {DEPLOYMENT_FORMAT!r}"
            )
        network = reader.text("network")
        if not _NETWORK_NAME.fullmatch(network):
            raise DeploymentError(name, source, "field 'network': not a network name")
        token = raw.get("settlement_token")
        return cls(
            network=network,
            chain_id=reader.integer("chain_id", minimum=1),
            registry=reader.address("registry"),
            settlement=reader.address("settlement"),
            anchor=reader.address("anchor"),
            settlement_token=None
            if token is None
            else reader.address("settlement_token"),
            deployer=reader.address("deployer"),
            block_number=reader.integer("block_number", minimum=0),
            bytecode_sha256=reader.digests("bytecode_sha256"),
            escrow=None if raw.get("escrow") is None else reader.address("escrow"),
            payment_token=None
            if raw.get("escrow") is None
            else reader.address("payment_token"),
        )

    def save(self, path: Path) -> None:
        """Write the deployment to ``path`` atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # addresses are public; mkstemp makes it 0600
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def addresses(self) -> dict[str, ChecksumAddress]:
        """Contract name → address, for the three contracts (and the escrow)."""
        found = {
            "DataAssetRegistry": self.registry,
            "Settlement": self.settlement,
            "ReceiptAnchor": self.anchor,
        }
        if self.escrow is not None and self.payment_token is not None:
            found["PaymentEscrow"] = self.escrow
            found["SettlementToken"] = self.payment_token
        return found


class _Fields:
    """Typed field reads from a parsed deployment file; errors name the field."""

    def __init__(self, raw: dict[str, Any], network: str, source: str) -> None:
        self._raw = raw
        self._network = network
        self._source = source

    def _fail(self, name: str, reason: str) -> DeploymentError:
        return DeploymentError(self._network, self._source, f"field {name!r}: {reason}")

    def _get(self, name: str) -> Any:
        if name not in self._raw:
            raise self._fail(name, "missing")
        return self._raw[name]

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not value:
            raise self._fail(name, "not a non-empty string")
        return value

    def integer(self, name: str, *, minimum: int) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(name, f"not an integer >= {minimum}")
        return value

    def address(self, name: str) -> ChecksumAddress:
        value = self._get(name)
        if not isinstance(value, str) or not Web3.is_address(value):
            raise self._fail(name, "not an address")
        if value != value.lower() and not Web3.is_checksum_address(value):
            raise self._fail(name, "bad address checksum")
        return Web3.to_checksum_address(value)

    def digests(self, name: str) -> dict[str, str]:
        value = self._get(name)
        if not isinstance(value, dict) or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in value.items()
        ):
            raise self._fail(name, "not a map of contract name to sha256 hex")
        return dict(value)


def deployments_dir() -> Path:
    """The deployments directory: ``$VEILX_DEPLOYMENTS_DIR`` or the repository's."""
    override = os.environ.get("VEILX_DEPLOYMENTS_DIR")
    if override:
        return Path(override)
    return contracts_dir() / "deployments"


def deployment_path(network: str, directory: Path | None = None) -> Path:
    """The file of ``network``'s deployment in ``directory`` (default: ours).

    Raises
    ------
    DeploymentError
        When ``network`` is not a plain name (letters, digits, ``_ . -``).
    """
    if not _NETWORK_NAME.fullmatch(network):
        raise DeploymentError(
            network, None, "a network name is letters, digits, '_', '.' and '-'"
        )
    return (directory if directory is not None else deployments_dir()) / (
        f"{network}.json"
    )


def load_deployment(network: str, directory: Path | None = None) -> Deployment:
    """Read ``<directory>/<network>.json`` (default directory: :func:`deployments_dir`).

    Raises
    ------
    DeploymentError
        When the file is missing, unreadable or malformed, or names another network.
    """
    path = deployment_path(network, directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeploymentError(
            network,
            str(path),
            f"no deployment file; run `veilx chain deploy --network {network}`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentError(network, str(path), f"cannot read it ({exc})") from None
    deployment = Deployment.from_json(text, source=str(path))
    if deployment.network != network:
        raise DeploymentError(
            network,
            str(path),
            f"field 'network': the file is for {deployment.network!r}",
        )
    return deployment


def _runtime_sha256(name: str) -> str:
    code = load_artifact(name).deployed_bytecode
    return hashlib.sha256(bytes.fromhex(code.removeprefix("0x"))).hexdigest()


def deploy_contracts(
    w3: Web3,
    sender: TransactionSender,
    *,
    network: str,
    operator: str | None = None,
    settlement_token: str | None = None,
    escrow: bool = False,
    payment_token: str | None = None,
) -> Deployment:
    """Deploy the registry, settlement and anchor, and grant the operator its roles.

    ``escrow`` also deploys the buyers' :class:`~ledger.PaymentEscrow` (operator:
    ``OPERATOR_ROLE``) over ``payment_token``, or over a new
    :class:`~ledger.SettlementToken` (“vEUR”, two decimals, the sender its minter)
    when ``payment_token`` is ``None``.

    The sender's account becomes the admin of all three. ``operator`` (default:
    the sender's account) gets ``REGISTRAR_ROLE`` on the registry, ``OPERATOR_ROLE``
    and ``PAUSER_ROLE`` on the settlement and ``OPERATOR_ROLE`` on the anchor.
    ``settlement_token`` of ``None`` deploys a record-only settlement.

    Returns
    -------
    Deployment
        Ready to :meth:`~Deployment.save`.

    Raises
    ------
    TransactionRevertedError, TransactionTimeoutError, ChainConnectionError
        As :meth:`TransactionSender.send` does.
    """
    deployment_path(network)  # validates the name before spending gas
    admin = sender.address
    grantee = Web3.to_checksum_address(operator) if operator else admin
    token = Web3.to_checksum_address(settlement_token) if settlement_token else None
    chain_id = int(sender._rpc.retry(lambda: w3.eth.chain_id))

    def create(name: str, *args: Any) -> ChecksumAddress:
        art = load_artifact(name)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = sender.send(factory.constructor(*args))
        if receipt.contract_address is None:  # pragma: no cover - status 1 creates
            raise DeploymentError(network, None, f"{name} deployment created nothing")
        blocks.append(receipt.block_number)
        return Web3.to_checksum_address(receipt.contract_address)

    blocks: list[int] = []
    registry = create("DataAssetRegistry", admin)
    settlement = create("Settlement", registry, token or _ZERO_ADDRESS, admin)
    anchor = create("ReceiptAnchor", admin)

    DataAssetRegistry(w3, registry, sender).submit_grant_registrar(grantee)
    bound = Settlement(w3, settlement, sender)
    bound.submit_grant_operator(grantee)
    bound.submit_grant_pauser(grantee)
    ReceiptAnchor(w3, anchor, sender).submit_grant_operator(grantee)

    names = list(_CONTRACTS)
    escrow_at: ChecksumAddress | None = None
    paid_in: ChecksumAddress | None = None
    if escrow:
        if payment_token:
            paid_in = Web3.to_checksum_address(payment_token)
        else:
            paid_in = create("SettlementToken", "Veilx Euro", "vEUR", 2, admin)
            names.append("SettlementToken")
        escrow_at = create("PaymentEscrow", paid_in, admin)
        names.append("PaymentEscrow")
        PaymentEscrow(w3, escrow_at, sender).submit_grant_operator(grantee)

    return Deployment(
        network=network,
        chain_id=chain_id,
        registry=registry,
        settlement=settlement,
        anchor=anchor,
        settlement_token=token,
        deployer=admin,
        block_number=min(blocks),
        bytecode_sha256={name: _runtime_sha256(name) for name in names},
        escrow=escrow_at,
        payment_token=paid_in,
    )


class Ledger:
    """The three contract wrappers bound to one deployment.

    Attributes
    ----------
    registry, settlement, anchor
        The wrappers; read-only when :attr:`sender` is ``None``.
    deployment
        Where they live.
    sender
        Sends their ``submit_*`` transactions, or ``None``.
    escrow, payment_token
        The payment escrow and its token, or ``None`` when not deployed.
    """

    def __init__(
        self,
        registry: DataAssetRegistry,
        settlement: Settlement,
        anchor: ReceiptAnchor,
        deployment: Deployment,
        sender: TransactionSender | None,
        escrow: PaymentEscrow | None = None,
        payment_token: SettlementToken | None = None,
    ) -> None:
        self.registry = registry
        self.settlement = settlement
        self.anchor = anchor
        self.deployment = deployment
        self.sender = sender
        self.escrow = escrow
        self.payment_token = payment_token

    def __repr__(self) -> str:
        who = "read-only" if self.sender is None else f"as {self.sender.address}"
        return f"Ledger(network={self.deployment.network!r}, {who})"

    @classmethod
    def connect(
        cls,
        w3: Web3,
        deployment: Deployment,
        signer: Signer | None,
        *,
        confirmations: int = 0,
    ) -> Ledger:
        """Bind the wrappers to ``deployment`` on ``w3``, signing with ``signer``.

        ``signer`` of ``None`` connects read-only.

        Raises
        ------
        ChainIdMismatchError
            When the node's chain id is not the deployment's.
        DeploymentError
            When an address of the deployment has no code.
        ChainConnectionError
            When the node stays unreachable.
        """
        sender = (
            TransactionSender(w3, signer, confirmations=confirmations)
            if signer is not None
            else None
        )
        rpc = sender._rpc if sender is not None else _Rpc(w3)
        actual = int(rpc.retry(lambda: w3.eth.chain_id))
        if actual != deployment.chain_id:
            raise ChainIdMismatchError(deployment.network, deployment.chain_id, actual)
        for name, address in deployment.addresses().items():
            code = rpc.retry(partial(w3.eth.get_code, address))
            if not bytes(code):
                raise DeploymentError(
                    deployment.network,
                    None,
                    f"no contract code at the {name} address {address}",
                )
        start = deployment.block_number
        return cls(
            registry=DataAssetRegistry(
                w3, deployment.registry, sender, start_block=start
            ),
            settlement=Settlement(w3, deployment.settlement, sender, start_block=start),
            anchor=ReceiptAnchor(w3, deployment.anchor, sender, start_block=start),
            deployment=deployment,
            sender=sender,
            escrow=None
            if deployment.escrow is None
            else PaymentEscrow(w3, deployment.escrow, sender, start_block=start),
            payment_token=None
            if deployment.payment_token is None
            else SettlementToken(
                w3, deployment.payment_token, sender, start_block=start
            ),
        )

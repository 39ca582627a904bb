"""Compiled contract artifacts: load them, and check them against their sources.

``make contracts`` compiles ``contracts/src`` (and the test mocks in ``contracts/test``)
with solc-js and writes ``contracts/artifacts/<Name>.json`` (mocks under
``contracts/artifacts/test/``). The artifacts are committed, so the runtime never needs
Node. Each records the sha256 of every source it was built from, the OpenZeppelin
version and the sha256 of the compile script; :func:`check_sources` recomputes what it
can without Node and lists every disagreement.

Artifacts are read from the repository (``<repo>/contracts/artifacts``), which is where
an editable install (``pip install -e .``, what the Makefile uses) finds them. Set
``VEILX_CONTRACTS_DIR`` to a ``contracts`` directory to read them from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "Artifact",
    "ArtifactNotFoundError",
    "SourceMismatch",
    "artifact_names",
    "check_sources",
    "contracts_dir",
    "load_artifact",
]

_OZ_PREFIX = "@openzeppelin/contracts/"
_SOURCE_DIRS = ("src", "test")


class ArtifactNotFoundError(LookupError):
    """No artifact named ``name`` exists under ``directory``."""

    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(
            f"no artifact {name!r} in {directory}; run `make contracts` to build it"
        )
        self.name = name
        self.directory = directory


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract.

    Attributes
    ----------
    name
        The contract name (``Settlement``), or ``test/<Name>`` for a test mock.
    abi
        The ABI, as solc emits it.
    bytecode, deployed_bytecode
        Creation and runtime code, ``0x``-prefixed hex.
    compiler_version
        The full solc version string.
    openzeppelin_version
        The ``@openzeppelin/contracts`` version compiled against.
    source_hashes
        Source unit name → sha256 hex of its content.
    """

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    openzeppelin_version: str
    source_hashes: dict[str, str]


@dataclass(frozen=True, slots=True)
class SourceMismatch:
    """One disagreement between an artifact and the sources on disk.

    Attributes
    ----------
    artifact
        The artifact's name, or ``"*"`` when no artifact covers ``source``.
    source
        The source unit (or pinned package / script) that disagrees.
    reason
        What disagrees, in words.
    """

    artifact: str
    source: str
    reason: str


def contracts_dir() -> Path:
    """The ``contracts`` directory: ``$VEILX_CONTRACTS_DIR`` or the repository's."""
    override = os.environ.get("VEILX_CONTRACTS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "contracts"


def artifact_names() -> list[str]:
    """Every artifact's name, sorted; test mocks are named ``test/<Name>``."""
    root = contracts_dir() / "artifacts"
    return sorted(
        p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.json")
    )


def load_artifact(name: str) -> Artifact:
    """Load the artifact ``name`` (``"Settlement"``, or ``"test/HostileToken"``).

    Raises
    ------
    ArtifactNotFoundError
        When no such artifact was built.
    """
    return _load(contracts_dir(), name)


def _read(root: Path, name: str) -> Artifact:
    directory = root / "artifacts"
    path = directory / f"{name}.json"
    if not path.is_file():
        raise ArtifactNotFoundError(name, directory)
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Artifact(
        name=name,
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        compiler_version=raw["compiler"]["version"],
        openzeppelin_version=raw["openzeppelin"],
        source_hashes={k: v["sha256"] for k, v in raw["sources"].items()},
    )


_load = cache(_read)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sources() -> list[SourceMismatch]:
    """Recompute what the artifacts were built from; return every disagreement.

    Checked without Node: the sha256 of each of our sources (``contracts/src``,
    ``contracts/test``) and of ``compile.mjs``; that every source file is covered by
    some artifact; that the OpenZeppelin and solc versions match the
    ``package-lock.json`` pins. OpenZeppelin's own files are hashed too when
    ``contracts/node_modules`` is installed. An empty list means all agree.
    """
    root = contracts_dir()
    lock = json.loads((root / "package-lock.json").read_text(encoding="utf-8"))
    packages = lock["packages"]
    oz_pin = packages["node_modules/@openzeppelin/contracts"]["version"]
    solc_pin = packages["node_modules/solc"]["version"]
    script = _sha256(root / "compile.mjs")
    mismatches: list[SourceMismatch] = []
    covered: set[str] = set()

    for name in artifact_names():
        raw = json.loads((root / "artifacts" / f"{name}.json").read_text("utf-8"))
        art = _read(root, name)
        if art.openzeppelin_version != oz_pin:
            mismatches.append(
                SourceMismatch(
                    name,
                    "@openzeppelin/contracts",
                    f"built with {art.openzeppelin_version}, pinned {oz_pin}",
                )
            )
        if not art.compiler_version.startswith(solc_pin + "+"):
            mismatches.append(
                SourceMismatch(
                    name,
                    "solc",
                    f"built with {art.compiler_version}, pinned {solc_pin}",
                )
            )
        if raw.get("compileScriptSha256") != script:
            mismatches.append(
                SourceMismatch(name, "compile.mjs", "compile script changed")
            )
        for unit, digest in art.source_hashes.items():
            if unit.startswith(_OZ_PREFIX):
                path = root / "node_modules" / unit
                if not path.is_file():
                    continue  # OpenZeppelin not installed: its version pin was checked
            else:
                covered.add(unit)
                path = root / unit
                if not path.is_file():
                    mismatches.append(SourceMismatch(name, unit, "source file missing"))
                    continue
            if _sha256(path) != digest:
                mismatches.append(SourceMismatch(name, unit, "sha256 differs"))

    for directory in _SOURCE_DIRS:
        for path in sorted((root / directory).rglob("*.sol")):
            unit = path.relative_to(root).as_posix()
            if unit not in covered:
                mismatches.append(
                    SourceMismatch("*", unit, "no artifact was built from this source")
                )
    return mismatches

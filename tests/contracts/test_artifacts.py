"""The committed artifacts agree with the Solidity sources (no Node needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ledger import _artifacts
from ledger._artifacts import ArtifactNotFoundError, check_sources, load_artifact


def test_artifacts_match_sources() -> None:
    mismatches = check_sources()
    assert mismatches == [], (
        "sources changed: run `make contracts` and commit artifacts"
    )


def test_artifacts_are_built_for_prague_with_pinned_versions() -> None:
    for name in ("DataAssetRegistry", "Settlement", "ReceiptAnchor"):
        art = load_artifact(name)
        assert art.compiler_version.startswith("0.8.37+")
        assert art.openzeppelin_version == "5.7.0"
        assert art.deployed_bytecode.endswith("64736f6c63430008250033")  # solc 0.8.37
        assert any(k.startswith("src/") for k in art.source_hashes)


def test_edited_source_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "contracts"
    src = _artifacts.contracts_dir()
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("node_modules"))
    with (copy / "src" / "ReceiptAnchor.sol").open("a") as f:
        f.write("\n// edited\n")
    (copy / "src" / "Extra.sol").write_text("pragma solidity 0.8.37;\n")
    monkeypatch.setenv("VEILX_CONTRACTS_DIR", str(copy))
    found = {(m.artifact, m.source, m.reason) for m in check_sources()}
    assert found == {
        ("ReceiptAnchor", "src/ReceiptAnchor.sol", "sha256 differs"),
        ("*", "src/Extra.sol", "no artifact was built from this source"),
    }


def test_missing_artifact_names_the_fix() -> None:
    with pytest.raises(ArtifactNotFoundError, match="make contracts"):
        load_artifact("NoSuchContract")

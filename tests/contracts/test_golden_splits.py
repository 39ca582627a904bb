"""Python and Solidity agree to the unit: the shared golden split vectors on the EVM.

Each vector of ``pricing/golden/splits.json`` is recorded as a trade on a fresh
asset with its shares; every payee's credit must equal the vector's (and so
``pricing.split_bps``, which tests/unit/test_pricing_money.py checks against the
same file).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from pricing import fee_bps, split_bps
from tests.contracts.conftest import deploy, new_chain, role, send

GOLDEN = Path(__file__).parents[2] / "pricing" / "golden" / "splits.json"
VECTORS: list[dict[str, Any]] = json.loads(GOLDEN.read_text())["vectors"]
ZERO = "0x" + "00" * 20


def test_the_file_matches_pricing() -> None:
    assert len(VECTORS) >= 8
    for v in VECTORS:
        assert fee_bps(v["amount"], v["fee_bps"]) == v["fee"]
        assert split_bps(v["amount"] - v["fee"], v["shares_bps"]) == v["credits"]


@pytest.mark.parametrize(
    "vector", VECTORS, ids=lambda v: f"{v['amount']}-{v['fee_bps']}"
)
def test_settlement_credits_equal_the_golden_vector(vector: dict[str, Any]) -> None:
    w3 = new_chain()
    admin, op = w3.eth.accounts[:2]
    reg = deploy(w3, "DataAssetRegistry", admin)
    send(reg.functions.grantRole(role(reg, "REGISTRAR_ROLE"), op), admin)
    payees = [Account.create().address for _ in vector["shares_bps"]]
    dataset = uuid.uuid4()
    shares = list(zip(payees, vector["shares_bps"], strict=True))
    send(
        reg.functions.register(
            dataset.bytes, payees[0], b"\x01" * 32, b"\x02" * 32, shares
        ),
        op,
    )
    st = deploy(w3, "Settlement", reg.address, ZERO, admin)
    send(st.functions.grantRole(role(st, "OPERATOR_ROLE"), op), admin)
    send(
        st.functions.recordTrade(
            os.urandom(32), dataset.int, admin, vector["amount"], vector["fee"]
        ),
        op,
    )
    credits = [st.functions.creditOf(p).call() for p in payees]
    assert credits == vector["credits"]
    assert st.functions.accruedFees().call() == vector["fee"]

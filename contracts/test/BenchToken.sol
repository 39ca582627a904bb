// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Benchmark ERC-20 (test only)
/// @notice A plain OpenZeppelin ERC-20 whose whole supply is minted to the deployer;
/// its `transfer` to an existing holder is the gas baseline of `bench/ledger_gas.py`.
contract BenchToken is ERC20 {
    /// @param supply Amount minted to the deployer.
    constructor(uint256 supply) ERC20("Bench", "BENCH") {
        _mint(msg.sender, supply);
    }
}

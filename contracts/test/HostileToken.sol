// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Hostile ERC-20 (test only)
/// @notice A token that, once armed, calls `target` with `payload` from inside every
/// transfer and bubbles up any revert, to prove the guarded contract refuses re-entry.
contract HostileToken is ERC20 {
    address private _target;
    bytes private _payload;

    constructor() ERC20("Hostile", "HOST") {}

    /// @notice Mints `amount` to `to`.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Re-enters `target` with `payload` on the next transfers; zero target disarms.
    function arm(address target, bytes calldata payload) external {
        _target = target;
        _payload = payload;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        address target = _target;
        if (target != address(0) && from != address(0)) {
            (bool ok, bytes memory data) = target.call(_payload);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(data, 0x20), mload(data))
                }
            }
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Receipt anchor
/// @notice Anchors the Merkle root of each batch of access receipts, once per batch id, so any
/// receipt's inclusion can be proved against the chain.
/// @dev Only the root is stored (one slot per batch); the receipt count travels in the event.
contract ReceiptAnchor is AccessControl {
    /// @notice The role allowed to anchor batches.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    mapping(uint64 batchId => bytes32 root) private _roots;

    /// @notice Batch `batchId` is already anchored with `root`.
    error BatchAlreadyAnchored(uint64 batchId, bytes32 root);
    /// @notice A zero root was given for `batchId`.
    error EmptyRoot(uint64 batchId);
    /// @notice A receipt count of zero was given for `batchId`.
    error EmptyBatch(uint64 batchId);

    /// @notice Batch `batchId` of `count` receipts was anchored with Merkle root `root`.
    event BatchAnchored(uint64 indexed batchId, bytes32 root, uint32 count);

    /// @param admin Holds `DEFAULT_ADMIN_ROLE` and so grants and revokes the operator role.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Anchors the Merkle root of batch `batchId`.
    /// @param root The batch's Merkle root; must not be zero.
    /// @param batchId The batch id; each is anchored at most once.
    /// @param count The number of receipts in the batch; must not be zero.
    function anchor(bytes32 root, uint64 batchId, uint32 count) external onlyRole(OPERATOR_ROLE) {
        bytes32 existing = _roots[batchId];
        if (existing != bytes32(0)) revert BatchAlreadyAnchored(batchId, existing);
        if (root == bytes32(0)) revert EmptyRoot(batchId);
        if (count == 0) revert EmptyBatch(batchId);

        _roots[batchId] = root;

        emit BatchAnchored(batchId, root, count);
    }

    /// @notice The Merkle root anchored for `batchId`, or zero when none is.
    /// @param batchId The batch id.
    /// @return The root.
    function rootOf(uint64 batchId) external view returns (bytes32) {
        return _roots[batchId];
    }
}

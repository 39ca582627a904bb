// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Data-asset registry interface
/// @notice What the settlement contract needs from the registry: who shares a dataset's revenue.
interface IDataAssetRegistry {
    /// @notice One co-owner's part of an asset's revenue, in basis points (1/10,000).
    struct Share {
        address payee;
        uint16 bps;
    }

    /// @notice The revenue shares of `tokenId`; their `bps` sum to 10,000.
    /// @dev Reverts with `ERC721NonexistentToken(tokenId)` when the asset is not registered.
    function sharesOf(uint256 tokenId) external view returns (Share[] memory);
}

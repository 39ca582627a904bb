// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IDataAssetRegistry} from "./interfaces/IDataAssetRegistry.sol";

/// @title Data-asset registry
/// @notice One ERC-721 token per dataset. The token id is the dataset's UUID read as a
/// 128-bit integer (`tokenIdOf`), so the database and the chain agree on ids without a lookup.
/// Each asset carries the hash of its metadata and of its access policy, a version bumped on
/// every update, and co-owner revenue shares in basis points summing to 10,000.
/// @dev Only the registrar (the marketplace operator) mints and updates. Minting uses `_mint`,
/// not `_safeMint`: registration makes no external call, so there is nothing to re-enter.
contract DataAssetRegistry is IDataAssetRegistry, ERC721, AccessControl {
    /// @notice The role allowed to register assets and change their hashes and shares.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    /// @notice Basis points in a whole.
    uint16 public constant TOTAL_BPS = 10_000;

    /// @notice Most co-owners an asset may have; bounds the settlement loop.
    uint256 public constant MAX_PAYEES = 16;

    /// @notice An asset's hashes and version; the owner is the token's owner.
    struct Asset {
        bytes32 metadataHash;
        bytes32 policyHash;
        uint64 version;
    }

    mapping(uint256 tokenId => Asset) private _assets;
    mapping(uint256 tokenId => Share[]) private _shares;

    /// @notice `datasetId` is already registered as `tokenId`.
    error AssetAlreadyRegistered(bytes16 datasetId, uint256 tokenId);
    /// @notice A metadata hash of zero was given for `tokenId`.
    error EmptyMetadataHash(uint256 tokenId);
    /// @notice The shares are empty or have more than `max` payees.
    error InvalidPayeeCount(uint256 count, uint256 max);
    /// @notice The share at `index` has the zero address or a zero part.
    error InvalidShare(uint256 index, address payee, uint16 bps);
    /// @notice `payee` appears more than once in the shares.
    error DuplicatePayee(address payee);
    /// @notice The shares sum to `total` basis points instead of 10,000.
    error SharesTotalMismatch(uint256 total);
    /// @notice An update of `tokenId` expected version `expected`, but it is at `current`.
    error StaleVersion(uint256 tokenId, uint64 expected, uint64 current);

    /// @notice `datasetId` was registered as `tokenId`, owned by `owner`.
    event AssetRegistered(
        uint256 indexed tokenId,
        bytes16 indexed datasetId,
        address indexed owner,
        bytes32 metadataHash,
        bytes32 policyHash
    );
    /// @notice The hashes of `tokenId` were updated; `version` is the new version.
    event AssetUpdated(uint256 indexed tokenId, bytes32 metadataHash, bytes32 policyHash, uint64 version);
    /// @notice The revenue shares of `tokenId` were set.
    event SharesChanged(uint256 indexed tokenId, Share[] shares);

    /// @param admin Holds `DEFAULT_ADMIN_ROLE` and so grants and revokes the registrar role.
    constructor(address admin) ERC721("veilx Data Asset", "VXDA") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice The token id of a dataset: its 16 UUID bytes as an unsigned integer.
    /// @param datasetId The dataset's UUID bytes.
    /// @return The token id.
    function tokenIdOf(bytes16 datasetId) public pure returns (uint256) {
        return uint256(uint128(datasetId));
    }

    /// @notice Mints the token of `datasetId` to `owner` with its hashes and shares (version 1).
    /// @param datasetId The dataset's UUID bytes.
    /// @param owner The dataset owner; receives the token.
    /// @param metadataHash Hash of the dataset's metadata; must not be zero.
    /// @param policyHash Hash of the dataset's access policy.
    /// @param shares Co-owner revenue shares; distinct non-zero payees, parts summing to 10,000.
    /// @return tokenId The minted token id.
    function register(
        bytes16 datasetId,
        address owner,
        bytes32 metadataHash,
        bytes32 policyHash,
        Share[] calldata shares
    ) external onlyRole(REGISTRAR_ROLE) returns (uint256 tokenId) {
        tokenId = tokenIdOf(datasetId);
        if (_ownerOf(tokenId) != address(0)) revert AssetAlreadyRegistered(datasetId, tokenId);
        if (metadataHash == bytes32(0)) revert EmptyMetadataHash(tokenId);
        _checkShares(shares);

        _assets[tokenId] = Asset({metadataHash: metadataHash, policyHash: policyHash, version: 1});
        _storeShares(tokenId, shares);
        _mint(owner, tokenId);

        emit AssetRegistered(tokenId, datasetId, owner, metadataHash, policyHash);
        emit SharesChanged(tokenId, shares);
    }

    /// @notice Replaces the hashes of `tokenId` and bumps its version, if it is still at
    /// `expectedVersion` (compare-and-set).
    /// @dev The version check makes a re-sent update (a relay retrying after a crash) revert
    /// with `StaleVersion` instead of bumping the version a second time.
    /// @param tokenId The asset.
    /// @param metadataHash New metadata hash; must not be zero.
    /// @param policyHash New access-policy hash.
    /// @param expectedVersion The asset's current version, as the caller last read it.
    /// @return version The new version, `expectedVersion + 1`.
    function updateAsset(uint256 tokenId, bytes32 metadataHash, bytes32 policyHash, uint64 expectedVersion)
        external
        onlyRole(REGISTRAR_ROLE)
        returns (uint64 version)
    {
        _requireOwned(tokenId);
        if (metadataHash == bytes32(0)) revert EmptyMetadataHash(tokenId);
        Asset storage asset = _assets[tokenId];
        uint64 current = asset.version;
        if (expectedVersion != current) revert StaleVersion(tokenId, expectedVersion, current);

        version = current + 1;
        asset.metadataHash = metadataHash;
        asset.policyHash = policyHash;
        asset.version = version;

        emit AssetUpdated(tokenId, metadataHash, policyHash, version);
    }

    /// @notice Replaces the revenue shares of `tokenId`.
    /// @param tokenId The asset.
    /// @param shares Distinct non-zero payees, parts summing to 10,000.
    function setShares(uint256 tokenId, Share[] calldata shares) external onlyRole(REGISTRAR_ROLE) {
        _requireOwned(tokenId);
        _checkShares(shares);

        delete _shares[tokenId];
        _storeShares(tokenId, shares);

        emit SharesChanged(tokenId, shares);
    }

    /// @notice The hashes and version of `tokenId`.
    /// @param tokenId The asset.
    /// @return The asset record.
    function assetOf(uint256 tokenId) external view returns (Asset memory) {
        _requireOwned(tokenId);
        return _assets[tokenId];
    }

    /// @inheritdoc IDataAssetRegistry
    function sharesOf(uint256 tokenId) external view returns (Share[] memory) {
        _requireOwned(tokenId);
        return _shares[tokenId];
    }

    /// @inheritdoc ERC721
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, AccessControl) returns (bool) {
        return interfaceId == type(IDataAssetRegistry).interfaceId || super.supportsInterface(interfaceId);
    }

    function _checkShares(Share[] calldata shares) private pure {
        uint256 count = shares.length;
        if (count == 0 || count > MAX_PAYEES) revert InvalidPayeeCount(count, MAX_PAYEES);
        uint256 total;
        for (uint256 i; i < count; ++i) {
            Share calldata share = shares[i];
            if (share.payee == address(0) || share.bps == 0) revert InvalidShare(i, share.payee, share.bps);
            for (uint256 j; j < i; ++j) {
                if (shares[j].payee == share.payee) revert DuplicatePayee(share.payee);
            }
            total += share.bps;
        }
        if (total != TOTAL_BPS) revert SharesTotalMismatch(total);
    }

    function _storeShares(uint256 tokenId, Share[] calldata shares) private {
        Share[] storage stored = _shares[tokenId];
        for (uint256 i; i < shares.length; ++i) {
            stored.push(shares[i]);
        }
    }
}

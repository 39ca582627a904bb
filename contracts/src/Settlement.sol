// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDataAssetRegistry} from "./interfaces/IDataAssetRegistry.sol";

/// @title Settlement
/// @notice Records the marketplace's trades and credits each dataset's co-owners their part of
/// the revenue (amount minus fee), split by the registry's basis-point shares.
///
/// Rounding: each payee's part is `net * bps / 10_000` rounded down; the remainder (less than
/// one unit per payee) goes to the first payee, so the parts always sum to `net`.
///
/// Two ways to record: `recordTrade` stores one trade id (refused twice) and credits it;
/// `recordTrades` records a batch in one event of trade hashes plus per-asset totals, stores
/// only the batch id (refused twice) and credits the totals — about 1.3k gas per trade.
///
/// Settlement token: when set, recording pulls `amount` from the operator into escrow and
/// payees withdraw their credits (pull payments); fees accrue for the admin to withdraw.
/// When it is the zero address, the contract is a record: credits are paid off-chain.
contract Settlement is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The role allowed to record trades.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice The role allowed to pause and unpause.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice One asset's summed amount and fee within a batch.
    struct AssetTotal {
        uint256 tokenId;
        uint256 amount;
        uint256 fee;
    }

    IDataAssetRegistry private immutable _registry;
    IERC20 private immutable _token;

    mapping(bytes32 tradeId => bool) private _trades;
    mapping(uint64 batchId => bool) private _batches;
    mapping(address payee => uint256) private _credits;
    uint256 private _totalCredited;
    uint256 private _accruedFees;

    /// @notice Trade `tradeId` is already recorded.
    error TradeAlreadyRecorded(bytes32 tradeId);
    /// @notice Batch `batchId` is already recorded.
    error BatchAlreadyRecorded(uint64 batchId);
    /// @notice Batch `batchId` has no trade hashes.
    error EmptyBatch(uint64 batchId);
    /// @notice `fee` exceeds `amount`.
    error FeeExceedsAmount(uint256 amount, uint256 fee);
    /// @notice A trade with the zero address as buyer.
    error InvalidBuyer(bytes32 tradeId);
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);
    /// @notice The contract has no settlement token, so nothing can be withdrawn on-chain.
    error SettlementTokenNotSet();
    /// @notice Fees may not be sent to the zero address.
    error InvalidRecipient(address recipient);

    /// @notice Trade `tradeId` on asset `tokenId` by `buyer` was recorded.
    event TradeRecorded(bytes32 indexed tradeId, uint256 indexed tokenId, address indexed buyer, uint256 amount, uint256 fee);
    /// @notice Batch `batchId` of trades was recorded; `tradeHashes` are the hashes of its trades.
    event TradesRecorded(uint64 indexed batchId, bytes32[] tradeHashes, uint256 amount, uint256 fee);
    /// @notice `payee` withdrew `amount` of its credits.
    event CreditsWithdrawn(address indexed payee, uint256 amount);
    /// @notice `amount` of accrued fees was sent to `recipient`.
    event FeesWithdrawn(address indexed recipient, uint256 amount);

    /// @param registry_ The data-asset registry whose shares split the revenue.
    /// @param token_ The settlement token, or the zero address to record only.
    /// @param admin Holds `DEFAULT_ADMIN_ROLE`: grants roles and withdraws fees.
    constructor(IDataAssetRegistry registry_, IERC20 token_, address admin) {
        _registry = registry_;
        _token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Records one trade and credits its net amount to the asset's co-owners.
    /// @param tradeId The trade's id; each is recorded at most once.
    /// @param tokenId The traded asset.
    /// @param buyer The buyer's address (a record; the operator pays the escrow).
    /// @param amount The gross amount in minor units.
    /// @param fee The marketplace fee within `amount`.
    function recordTrade(bytes32 tradeId, uint256 tokenId, address buyer, uint256 amount, uint256 fee)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        nonReentrant
    {
        if (_trades[tradeId]) revert TradeAlreadyRecorded(tradeId);
        if (buyer == address(0)) revert InvalidBuyer(tradeId);
        if (fee > amount) revert FeeExceedsAmount(amount, fee);

        _trades[tradeId] = true;
        _credit(tokenId, amount, fee);
        _accruedFees += fee;

        emit TradeRecorded(tradeId, tokenId, buyer, amount, fee);
        _escrow(amount);
    }

    /// @notice Records a batch of trades in one event and credits the per-asset totals.
    /// @param batchId The batch id; each is recorded at most once.
    /// @param tradeHashes The hashes of the batch's trades (computed off-chain, verifiable).
    /// @param totals Each traded asset's summed amount and fee; may be empty (record only).
    function recordTrades(uint64 batchId, bytes32[] calldata tradeHashes, AssetTotal[] calldata totals)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        nonReentrant
    {
        if (_batches[batchId]) revert BatchAlreadyRecorded(batchId);
        if (tradeHashes.length == 0) revert EmptyBatch(batchId);

        _batches[batchId] = true;
        uint256 amount;
        uint256 fee;
        for (uint256 i; i < totals.length; ++i) {
            AssetTotal calldata total = totals[i];
            if (total.fee > total.amount) revert FeeExceedsAmount(total.amount, total.fee);
            _credit(total.tokenId, total.amount, total.fee);
            amount += total.amount;
            fee += total.fee;
        }
        _accruedFees += fee;

        emit TradesRecorded(batchId, tradeHashes, amount, fee);
        _escrow(amount);
    }

    /// @notice Sends the caller all its credits in the settlement token.
    function withdraw() external whenNotPaused nonReentrant {
        if (address(_token) == address(0)) revert SettlementTokenNotSet();
        uint256 amount = _credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);

        _credits[msg.sender] = 0;

        emit CreditsWithdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice Sends all accrued fees to `recipient`.
    /// @param recipient Where the fees go.
    function withdrawFees(address recipient) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (address(_token) == address(0)) revert SettlementTokenNotSet();
        if (recipient == address(0)) revert InvalidRecipient(recipient);
        uint256 amount = _accruedFees;
        if (amount == 0) revert NothingToWithdraw(recipient);

        _accruedFees = 0;

        emit FeesWithdrawn(recipient, amount);
        _token.safeTransfer(recipient, amount);
    }

    /// @notice Stops recording and withdrawals.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resumes recording and withdrawals.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    /// @notice The credits `payee` may withdraw (or is owed off-chain).
    /// @param payee The payee.
    /// @return The credited amount.
    function creditOf(address payee) external view returns (uint256) {
        return _credits[payee];
    }

    /// @notice Whether `tradeId` was recorded by `recordTrade`.
    /// @param tradeId The trade id.
    /// @return True when recorded.
    function isTradeRecorded(bytes32 tradeId) external view returns (bool) {
        return _trades[tradeId];
    }

    /// @notice Whether `batchId` was recorded by `recordTrades`.
    /// @param batchId The batch id.
    /// @return True when recorded.
    function isBatchRecorded(uint64 batchId) external view returns (bool) {
        return _batches[batchId];
    }

    /// @notice Sum of all credits ever granted (amounts minus fees), withdrawn or not.
    /// @return The total.
    function totalCredited() external view returns (uint256) {
        return _totalCredited;
    }

    /// @notice Fees accrued and not yet withdrawn.
    /// @return The amount.
    function accruedFees() external view returns (uint256) {
        return _accruedFees;
    }

    /// @notice The registry whose shares split the revenue.
    /// @return The registry.
    function registry() external view returns (IDataAssetRegistry) {
        return _registry;
    }

    /// @notice The settlement token, or the zero address when recording only.
    /// @return The token.
    function settlementToken() external view returns (IERC20) {
        return _token;
    }

    /// @dev Credits `amount - fee` of `tokenId` to its payees: each gets `net * bps / 10_000`
    /// rounded down; the remainder goes to the first payee.
    function _credit(uint256 tokenId, uint256 amount, uint256 fee) private {
        uint256 net = amount - fee;
        IDataAssetRegistry.Share[] memory shares = _registry.sharesOf(tokenId);
        uint256 paid;
        for (uint256 i = 1; i < shares.length; ++i) {
            uint256 part = (net * shares[i].bps) / 10_000;
            _credits[shares[i].payee] += part;
            paid += part;
        }
        _credits[shares[0].payee] += net - paid;
        _totalCredited += net;
    }

    /// @dev Pulls `amount` of the settlement token from the operator into escrow, if there is one.
    function _escrow(uint256 amount) private {
        if (address(_token) != address(0) && amount != 0) {
            _token.safeTransferFrom(msg.sender, address(this), amount);
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title PaymentEscrow
/// @notice Buyers' payments in an ERC-20 settlement token, held like a card authorisation:
/// a buyer deposits, the operator holds part of the deposit for an order, captures at most
/// that (the metered amount) when the order ends and releases the rest; at settlement the
/// operator credits each payee's share of the captured money, and every account withdraws
/// its own balance (pull payments). The exchange's fee is what stays captured after the
/// payouts; the admin collects it. A hold captured whole up front (a subscription) can have
/// its unused part refunded to the buyer once, when it ends.
///
/// Safety for buyers: the operator can only take what a hold covers; a hold expires, and
/// after its expiry the buyer may cancel it itself. Every movement is keyed (hold ids,
/// payout ids, one refund per hold) and refused twice, so retries never move money twice.
///
/// Invariant: `token.balanceOf(this) == Σ balances + Σ held + captured` (tokens sent to the
/// contract directly, outside `deposit`, are not accounted and stay locked).
contract PaymentEscrow is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The role allowed to hold, capture, cancel, refund and pay out.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// @notice Where a hold stands.
    enum HoldState {
        None,
        Held,
        Captured,
        Canceled
    }

    /// @notice Money held from `buyer`'s balance for one order.
    struct Hold {
        address buyer;
        uint64 expiresAt;
        HoldState state;
        uint256 amount;
        uint256 captured;
        uint256 refunded;
    }

    IERC20 private immutable _token;

    mapping(address account => uint256) private _balances;
    mapping(bytes32 holdId => Hold) private _holds;
    mapping(bytes32 payoutId => bool) private _payouts;
    uint256 private _held;
    uint256 private _captured;

    /// @notice `holdId` exists already.
    error HoldExists(bytes32 holdId);
    /// @notice `holdId` is not an open hold (unknown, captured or canceled).
    error HoldNotOpen(bytes32 holdId, HoldState state);
    /// @notice `account` has `balance`, less than the `needed` amount.
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// @notice A capture of `amount` exceeds the hold's `held`.
    error CaptureExceedsHold(bytes32 holdId, uint256 held, uint256 amount);
    /// @notice Only the operator, or the buyer after `expiresAt`, may cancel.
    error HoldNotExpired(bytes32 holdId, uint64 expiresAt);
    /// @notice Only a captured hold not refunded yet can be refunded.
    error RefundNotAllowed(bytes32 holdId, HoldState state, uint256 refunded);
    /// @notice A refund of `amount` exceeds what hold `holdId` captured.
    error RefundExceedsCapture(bytes32 holdId, uint256 captured, uint256 amount);
    /// @notice `payoutId` was paid already.
    error PayoutExists(bytes32 payoutId);
    /// @notice `amount` exceeds the captured money not yet paid out (`available`).
    error InsufficientCaptured(uint256 available, uint256 amount);
    /// @notice A zero amount, or the zero address, where one is not allowed.
    error InvalidArgument(string name);
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);

    /// @notice `payer` deposited `amount` for `account`.
    event Deposited(address indexed account, address indexed payer, uint256 amount);
    /// @notice `amount` of `buyer`'s balance is held under `holdId` until `expiresAt`.
    event Held(bytes32 indexed holdId, address indexed buyer, uint256 amount, uint64 expiresAt);
    /// @notice `amount` of hold `holdId` was captured; `released` went back to the buyer.
    event Captured(bytes32 indexed holdId, uint256 amount, uint256 released);
    /// @notice Hold `holdId` was canceled and `released` went back to the buyer.
    event Canceled(bytes32 indexed holdId, uint256 released);
    /// @notice `amount` of what hold `holdId` captured went back to its buyer.
    event Refunded(bytes32 indexed holdId, uint256 amount);
    /// @notice `amount` of captured money was credited to `payee` under `payoutId`.
    event PaidOut(bytes32 indexed payoutId, address indexed payee, uint256 amount);
    /// @notice `account` withdrew `amount`.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice `amount` of captured money (the exchange's fees) went to `recipient`.
    event Collected(address indexed recipient, uint256 amount);

    /// @param token_ The settlement token.
    /// @param admin Holds `DEFAULT_ADMIN_ROLE`: grants roles and collects fees.
    constructor(IERC20 token_, address admin) {
        if (address(token_) == address(0)) revert InvalidArgument("token");
        _token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Pulls `amount` from the caller (who approved it) into `account`'s balance.
    /// @param account Whose balance grows (a buyer's wallet).
    /// @param amount In the token's units.
    function deposit(address account, uint256 amount) external nonReentrant {
        if (account == address(0)) revert InvalidArgument("account");
        if (amount == 0) revert InvalidArgument("amount");
        _balances[account] += amount;
        emit Deposited(account, msg.sender, amount);
        _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Holds `amount` of `buyer`'s balance for an order until `expiresAt`.
    /// @param holdId The order's hold id; each is used once.
    /// @param buyer The buyer's wallet.
    /// @param amount The most the order can cost.
    /// @param expiresAt After this (unix seconds) the buyer may cancel the hold itself.
    function hold(bytes32 holdId, address buyer, uint256 amount, uint64 expiresAt)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (_holds[holdId].state != HoldState.None) revert HoldExists(holdId);
        if (buyer == address(0)) revert InvalidArgument("buyer");
        if (amount == 0) revert InvalidArgument("amount");
        uint256 balance = _balances[buyer];
        if (balance < amount) revert InsufficientBalance(buyer, balance, amount);
        _balances[buyer] = balance - amount;
        _held += amount;
        _holds[holdId] = Hold(buyer, expiresAt, HoldState.Held, amount, 0, 0);
        emit Held(holdId, buyer, amount, expiresAt);
    }

    /// @notice Captures `amount` of hold `holdId` and returns the rest to the buyer.
    /// @param holdId An open hold.
    /// @param amount At most the held amount.
    function capture(bytes32 holdId, uint256 amount) external onlyRole(OPERATOR_ROLE) {
        Hold storage h = _open(holdId);
        if (amount > h.amount) revert CaptureExceedsHold(holdId, h.amount, amount);
        uint256 released = h.amount - amount;
        h.state = HoldState.Captured;
        h.captured = amount;
        _held -= h.amount;
        _captured += amount;
        _balances[h.buyer] += released;
        emit Captured(holdId, amount, released);
    }

    /// @notice Releases hold `holdId` whole: by the operator, or by its buyer once expired.
    /// @param holdId An open hold.
    function cancel(bytes32 holdId) external {
        Hold storage h = _open(holdId);
        if (!hasRole(OPERATOR_ROLE, msg.sender)) {
            if (msg.sender != h.buyer) revert AccessControlUnauthorizedAccount(msg.sender, OPERATOR_ROLE);
            if (block.timestamp < h.expiresAt) revert HoldNotExpired(holdId, h.expiresAt);
        }
        uint256 released = h.amount;
        h.state = HoldState.Canceled;
        _held -= released;
        _balances[h.buyer] += released;
        emit Canceled(holdId, released);
    }

    /// @notice Returns `amount` of what hold `holdId` captured to its buyer's balance, once:
    /// the unused part of a subscription captured up front.
    /// @param holdId A captured hold, not refunded yet.
    /// @param amount At most what it captured (and what is still captured, not paid out).
    function refund(bytes32 holdId, uint256 amount) external onlyRole(OPERATOR_ROLE) {
        Hold storage h = _holds[holdId];
        if (h.state != HoldState.Captured || h.refunded != 0) {
            revert RefundNotAllowed(holdId, h.state, h.refunded);
        }
        if (amount == 0) revert InvalidArgument("amount");
        if (amount > h.captured) revert RefundExceedsCapture(holdId, h.captured, amount);
        if (amount > _captured) revert InsufficientCaptured(_captured, amount);
        h.refunded = amount;
        _captured -= amount;
        _balances[h.buyer] += amount;
        emit Refunded(holdId, amount);
    }

    /// @notice Credits `amount` of the captured money to `payee` (its share of a period).
    /// @param payoutId The payout's id; each is paid once.
    /// @param payee The payee's wallet.
    /// @param amount In the token's units.
    function payout(bytes32 payoutId, address payee, uint256 amount) external onlyRole(OPERATOR_ROLE) {
        if (_payouts[payoutId]) revert PayoutExists(payoutId);
        if (payee == address(0)) revert InvalidArgument("payee");
        if (amount == 0) revert InvalidArgument("amount");
        if (amount > _captured) revert InsufficientCaptured(_captured, amount);
        _payouts[payoutId] = true;
        _captured -= amount;
        _balances[payee] += amount;
        emit PaidOut(payoutId, payee, amount);
    }

    /// @notice Sends the caller its whole balance (deposits not held, releases, payouts).
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @notice Sends `amount` of the captured money not paid out (fees) to `recipient`.
    /// @param recipient Where the fees go.
    /// @param amount At most `captured()`.
    function collect(address recipient, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (recipient == address(0)) revert InvalidArgument("recipient");
        if (amount == 0) revert InvalidArgument("amount");
        if (amount > _captured) revert InsufficientCaptured(_captured, amount);
        _captured -= amount;
        emit Collected(recipient, amount);
        _token.safeTransfer(recipient, amount);
    }

    /// @notice What `account` may withdraw.
    /// @param account The account.
    /// @return The balance.
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @notice A hold (all zero when unknown).
    /// @param holdId The hold id.
    /// @return The hold.
    function holdOf(bytes32 holdId) external view returns (Hold memory) {
        return _holds[holdId];
    }

    /// @notice Whether `payoutId` was paid.
    /// @param payoutId The payout id.
    /// @return True when paid.
    function isPaidOut(bytes32 payoutId) external view returns (bool) {
        return _payouts[payoutId];
    }

    /// @notice The money in open holds.
    /// @return The amount.
    function held() external view returns (uint256) {
        return _held;
    }

    /// @notice Captured money not yet paid out or collected.
    /// @return The amount.
    function captured() external view returns (uint256) {
        return _captured;
    }

    /// @notice The settlement token.
    /// @return The token.
    function token() external view returns (IERC20) {
        return _token;
    }

    function _open(bytes32 holdId) private view returns (Hold storage h) {
        h = _holds[holdId];
        if (h.state != HoldState.Held) revert HoldNotOpen(holdId, h.state);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

import {IERC3009} from "./interfaces/IERC3009.sol";
import {IERC2612Bytes} from "./interfaces/IERC2612Bytes.sol";

/// @title TollgateChannels
/// @author tollgate
/// @notice Unidirectional payment channels for pay-per-call APIs, settled in batches. One contract
///         holds every channel, in ETH (token = address(0)) or any ERC-20.
///
///         A payer deposits once; for each call it signs an EIP-712 `Voucher` carrying a cumulative
///         ceiling. The receiver (or its authorizer) claims the charged totals of many channels in
///         one transaction, then sweeps everything claimed for a token to itself in one transfer.
///         The payer leaves with a timed withdrawal (the receiver may still claim during the delay)
///         or at once with a cooperative refund signed by the receiver side.
///
///         The model and the EIP-712 types follow x402's `batch-settlement` EVM scheme
///         (`ChannelConfig`, `Voucher`, `Refund`, `ClaimBatch`/`ClaimEntry`, channel id = EIP-712
///         hash of the config, withdraw delay 15 min - 30 days, cumulative claims, refund nonce).
///
/// @dev Security notes.
///      - Every signed digest binds chain id and this contract (EIP-712 domain) and the channel id,
///        which itself is the EIP-712 hash of the full channel config.
///      - ECDSA signatures go through OpenZeppelin's `ECDSA.tryRecover` (rejects high-S and v not
///        27/28); ERC-1271 is only consulted when the expected signer has code.
///      - Per channel `balance >= totalClaimed` always holds; claims only increase `totalClaimed`,
///        never above the signed ceiling nor above `balance`. Withdrawals and refunds only take
///        `balance - totalClaimed`.
///      - Token amounts received are checked by balance difference: fee-on-transfer and other
///        short-paying tokens are rejected, so the contract's holdings always cover
///        sum(balance - totalClaimed) + sum(unswept).
///      - State is written before any transfer and every mutating entry point is `nonReentrant`.
///      - Permit and EIP-3009 deposits are bound to the channel by a payer signature (permit) or
///        by the EIP-3009 nonce (`keccak256(abi.encode(channelId, salt))`), so a relayer cannot
///        redirect a payer's authorization to a channel of its own making.
contract TollgateChannels is EIP712, ReentrancyGuardTransient, Multicall {
    using SafeERC20 for IERC20;

    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice Immutable parameters of a channel; its id is the EIP-712 hash of this struct.
    /// @param payer              Owner of the deposit; receives withdrawals and refunds.
    /// @param payerAuthorizer    Voucher signer; address(0) means the payer signs (ECDSA or ERC-1271).
    /// @param receiver           Payee; claimed funds are swept to it.
    /// @param receiverAuthorizer May claim and refund for the receiver, and sign `ClaimBatch` and
    ///                           `Refund`; address(0) means the receiver only.
    /// @param token              ERC-20 token, or address(0) for ETH.
    /// @param withdrawDelay      Seconds between `initiateWithdraw` and `finalizeWithdraw`.
    /// @param salt               Distinguishes channels with otherwise identical parameters.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// @notice The receiver side shared by every item of a claim batch.
    struct ClaimGroup {
        address receiver;
        address receiverAuthorizer;
        address token;
    }

    /// @notice One channel in a claim batch: the payer side of its config, the voucher and the
    ///         cumulative total the receiver claims (at most the voucher's ceiling).
    struct ClaimItem {
        address payer;
        address payerAuthorizer;
        uint40 withdrawDelay;
        bytes32 salt;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
        bytes signature;
    }

    /// @dev One decoded claim item, from either encoding; one instance is reused for every item
    ///      of a batch. Its first eight words are exactly `abi.encode(CHANNEL_CONFIG_TYPEHASH,
    ///      payer, payerAuthorizer, receiver, receiverAuthorizer, token, withdrawDelay, salt)`, so
    ///      the channel's struct hash is keccak256 over them with no copying; the typehash and the
    ///      receiver side are written once per batch. The signature stays in calldata.
    struct ClaimFields {
        bytes32 typehash;
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
        uint256 sigOffset;
        uint256 sigLength;
        // Working words of {_applyItem}: the channel's storage slot, its packed value, and the
        // claimed total capped at the balance.
        uint256 slot;
        uint256 packed;
        uint256 cappedTotal;
    }

    /// @dev Per-batch state: domain separator, running sum, and the applied channels as packed
    ///      `channelId(32) || 16 (1) || totalClaimed(16)` records for the `Claimed` event; `cursor` is the
    ///      memory address where the next record goes.
    struct Batch {
        bytes32 ds;
        uint256 amount;
        uint256 cursor;
        bytes claims;
    }

    /// @notice Stored per channel, packed in one slot.
    /// @param balance      Deposits minus withdrawals and refunds (claimed funds included).
    /// @param totalClaimed Cumulative amount claimed by the receiver; never decreases.
    struct Channel {
        uint128 balance;
        uint128 totalClaimed;
    }

    /// @notice Cumulative claims and sweeps of a receiver in one token, packed in one slot. Both
    ///         only grow, so the slot never returns to zero and a claim batch pays a 5,000-gas
    ///         update instead of a 22,100-gas zero-to-non-zero write. Unswept = claimed - swept.
    struct ReceiverTotals {
        uint128 claimed;
        uint128 swept;
    }

    /// @notice A timed withdrawal in progress.
    struct PendingWithdrawal {
        uint128 amount;
        uint40 initiatedAt;
    }

    /// @notice Everything the gateway needs about a channel, in one call.
    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
        uint128 withdrawAmount;
        uint40 withdrawInitiatedAt;
        uint256 refundNonce;
    }

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice First deposit into a channel whose balance and claims were zero. May repeat for the
    ///         same id after the channel was fully refunded or withdrawn with nothing claimed;
    ///         indexers treat it as an upsert of the config.
    event ChannelOpened(
        bytes32 indexed channelId, address indexed payer, address indexed receiver, ChannelConfig config
    );

    /// @notice `amount` was added to the channel by `from`; `balance` is the new balance.
    event Deposited(bytes32 indexed channelId, address indexed from, uint128 amount, uint128 balance);

    /// @notice A claim batch raised the claimed totals of channels and credited their sum,
    ///         `amount`, to the receiver's unswept balance in `token`. `claims` lists the applied
    ///         channels, in batch order, as packed records `channelId (32) || W (1) ||
    ///         totalClaimed (W bytes, big-endian)`, W in 1..16 (the claim's amount width; 16 from
    ///         {claim} and {claimWithSignature}); skipped items are not listed (see
    ///         `ClaimSkipped`). One event per batch, with packed records, costs 8 gas per byte
    ///         (288 per channel for 3-byte totals) instead of ~1,600 for a LOG2 per channel.
    event Claimed(
        address indexed receiver, address indexed token, address indexed caller, uint256 amount, bytes claims
    );

    /// @notice A claim item was not applied; see the `SKIP_*` constants for `reason`.
    event ClaimSkipped(bytes32 indexed channelId, uint8 reason, uint128 requestedTotal, uint128 currentTotal);

    /// @notice `amount` of `token` claimed for `receiver` was transferred to `to`.
    event Swept(address indexed receiver, address indexed token, address to, uint256 amount);

    /// @notice The payer started a timed withdrawal of `amount`, final from `finalizableAt`.
    event WithdrawInitiated(bytes32 indexed channelId, address indexed payer, uint128 amount, uint40 finalizableAt);

    /// @notice A timed withdrawal paid `amount` to the payer; `balance` is the new balance.
    event Withdrawn(bytes32 indexed channelId, address indexed payer, uint128 amount, uint128 balance);

    /// @notice A cooperative refund paid `amount` to the payer under refund nonce `nonce`;
    ///         `balance` and `pendingWithdrawal` are the channel's new values.
    event Refunded(
        bytes32 indexed channelId,
        address indexed payer,
        uint128 amount,
        uint256 nonce,
        uint128 balance,
        uint128 pendingWithdrawal
    );

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The config's payer is address(0).
    error TollgateChannels__InvalidPayer();
    /// @notice The config's receiver is address(0).
    error TollgateChannels__InvalidReceiver();
    /// @notice The config's withdraw delay is outside [MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY].
    error TollgateChannels__WithdrawDelayOutOfRange(uint40 withdrawDelay);
    /// @notice An amount that must be positive is zero.
    error TollgateChannels__ZeroAmount();
    /// @notice msg.value does not match (ETH deposits: the amount; token operations: zero).
    error TollgateChannels__WrongMsgValue(uint256 expected, uint256 actual);
    /// @notice The operation needs an ERC-20 channel (EIP-3009 and permit deposits).
    error TollgateChannels__NativeTokenNotSupported();
    /// @notice The deposit would take the channel balance above 2^128 - 1.
    error TollgateChannels__BalanceOverflow(uint256 balance, uint256 amount);
    /// @notice The token moved a different amount than requested (e.g. fee-on-transfer).
    error TollgateChannels__TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice A signature (permit-deposit consent, claim batch, refund) is not valid.
    error TollgateChannels__InvalidSignature();
    /// @notice The caller may not perform this operation on the channel.
    error TollgateChannels__Unauthorized(address caller);
    /// @notice A withdrawal asks for more than the unclaimed balance.
    error TollgateChannels__InsufficientAvailable(uint256 available, uint256 requested);
    /// @notice No timed withdrawal is pending on the channel.
    error TollgateChannels__NoPendingWithdrawal(bytes32 channelId);
    /// @notice The withdraw delay has not elapsed yet.
    error TollgateChannels__WithdrawNotReady(uint256 finalizableAt);
    /// @notice The refund signature is for another nonce.
    error TollgateChannels__InvalidRefundNonce(uint256 expected, uint256 provided);
    /// @notice Nothing is claimed and unswept for this receiver and token.
    error TollgateChannels__NothingToSweep(address receiver, address token);
    /// @notice The receiver's cumulative claimed total in this token would exceed 2^128 - 1.
    error TollgateChannels__ReceiverTotalOverflow(address receiver, address token);
    /// @notice A claim batch has no items.
    error TollgateChannels__EmptyBatch();
    /// @notice The packed claim data is truncated or has unknown flags at byte `offset`.
    error TollgateChannels__MalformedClaimData(uint256 offset);

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    // Type hashes are written as literals (next to their preimage) so that the assembly of the
    // claim loop can use them; a unit test recomputes each one from its type string.

    /// @notice keccak256("ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)")
    bytes32 public constant CHANNEL_CONFIG_TYPEHASH =
        0x1c9a06ceab9b0ebbd3301dc56c9111bb6d9af421356dc9ccb3b7084c755db308;

    /// @notice keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)")
    bytes32 public constant VOUCHER_TYPEHASH = 0x1e1bd6ff84c3e0d9029a292b212e039c0ca97ec497c55191a4a5874294609a69;

    /// @notice keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)")
    bytes32 public constant REFUND_TYPEHASH = 0xbe23ad087435072cd69b49cc5b92de10ee610fce7ae0ab428307972d764bb216;

    /// @notice keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)")
    bytes32 public constant CLAIM_ENTRY_TYPEHASH = 0x30b9a0367528fca13c3e8ec6134c3113f1887ebe7a1ad61de0955aac288b0cf5;

    /// @notice keccak256("ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)")
    bytes32 public constant CLAIM_BATCH_TYPEHASH = 0x42bd57c010b870c2e96203c66341f28a6a19b4d56a74533a8eb5f706b9fd6d57;

    /// @notice keccak256("PermitDeposit(bytes32 channelId,uint128 amount,uint256 permitNonce)")
    bytes32 public constant PERMIT_DEPOSIT_TYPEHASH =
        0x6edf97b878f2c3881a0a87bdc9d3e9e71501efe7209fddd86a82870c1ddf6ffd;

    /// @notice Shortest allowed withdraw delay (as x402 batch-settlement).
    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    /// @notice Longest allowed withdraw delay (as x402 batch-settlement).
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    /// @notice Skip reason: the claimed total is above the voucher's signed ceiling.
    uint8 public constant SKIP_ABOVE_CEILING = 1;
    /// @notice Skip reason: the channel has no balance (unknown channel, wrong group, or drained).
    uint8 public constant SKIP_NO_BALANCE = 2;
    /// @notice Skip reason: the total (capped at the balance) does not exceed what is already claimed.
    uint8 public constant SKIP_NOT_INCREASING = 3;
    /// @notice Skip reason: the voucher signature is not the channel signer's.
    uint8 public constant SKIP_INVALID_SIGNATURE = 4;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    // Channels are not in a mapping: channel `id` lives in storage slot `id` itself (see
    // {_channel}). An id is an EIP-712 hash, as unpredictable as a mapping's keccak256 slot, so it
    // collides with no other slot; the claim loop saves one hash per item.
    mapping(bytes32 channelId => PendingWithdrawal) private _pendingWithdrawals;
    mapping(bytes32 channelId => uint256) private _refundNonces;
    mapping(address receiver => mapping(address token => ReceiverTotals)) private _receivers;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @dev EIP-712 domain: name "Tollgate Channels", version "1", this chain, this contract.
    constructor() EIP712("Tollgate Channels", "1") {}

    /*//////////////////////////////////////////////////////////////
                                DEPOSITS
    //////////////////////////////////////////////////////////////*/

    /// @notice Adds `amount` to a channel, paid by the caller (anyone may fund any payer's
    ///         channel). Opens the channel on first use.
    /// @dev ETH channels: msg.value must equal `amount`. Token channels: the caller must have
    ///      approved this contract; the exact amount must arrive (fee-on-transfer is rejected).
    /// @param config The channel's parameters.
    /// @param amount Amount to add, in the token's units (wei for ETH).
    /// @return channelId The channel's id.
    function deposit(ChannelConfig calldata config, uint128 amount)
        external
        payable
        nonReentrant
        returns (bytes32 channelId)
    {
        channelId = _openOrTopUp(config, amount);
        if (config.token == address(0)) {
            if (msg.value != amount) revert TollgateChannels__WrongMsgValue(amount, msg.value);
        } else {
            if (msg.value != 0) revert TollgateChannels__WrongMsgValue(0, msg.value);
            _pull(config.token, msg.sender, amount);
        }
        emit Deposited(channelId, msg.sender, amount, _channel(channelId).balance);
    }

    /// @notice Deposits on the payer's behalf with an EIP-3009 `ReceiveWithAuthorization` signed by
    ///         the payer (gasless for the payer; any relayer submits it).
    /// @dev The authorization must be `from = payer, to = this contract, value = amount` with
    ///      `nonce = keccak256(abi.encode(channelId, salt))` (see {depositAuthorizationNonce}),
    ///      which binds it to this channel. A 65-byte signature from an account without code uses
    ///      the token's v,r,s overload; anything else uses the `bytes` overload (ERC-1271 payers).
    /// @param config      The channel's parameters (token must be an EIP-3009 token).
    /// @param amount      Authorized value.
    /// @param validAfter  Authorization is valid after this unix time.
    /// @param validBefore Authorization is valid before this unix time.
    /// @param salt        Free value chosen by the payer, hashed into the EIP-3009 nonce.
    /// @param signature   The payer's signature of the authorization.
    /// @return channelId The channel's id.
    function depositWithAuthorization(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 validAfter,
        uint256 validBefore,
        uint256 salt,
        bytes calldata signature
    ) external nonReentrant returns (bytes32 channelId) {
        address token = config.token;
        if (token == address(0)) revert TollgateChannels__NativeTokenNotSupported();
        channelId = _openOrTopUp(config, amount);
        uint256 before = IERC20(token).balanceOf(address(this));
        _receiveWithAuthorization(
            token, config.payer, amount, validAfter, validBefore, depositAuthorizationNonce(channelId, salt), signature
        );
        _checkReceived(token, before, amount);
        emit Deposited(channelId, config.payer, amount, _channel(channelId).balance);
    }

    /// @notice Deposits on the payer's behalf with an EIP-2612 permit signed by the payer (gasless
    ///         for the payer; any relayer submits it).
    /// @dev A permit does not name the channel, so the payer also signs the EIP-712
    ///      `PermitDeposit(bytes32 channelId,uint128 amount,uint256 permitNonce)` with the token's
    ///      current `nonces(payer)`; that binds the permit to this channel and makes the consent
    ///      single-use (the permit consumes the nonce). The permit must be for exactly `amount`.
    ///      A 65-byte permit signature from an account without code uses the standard v,r,s
    ///      `permit`; anything else uses the `bytes` overload (USDC v2.2, ERC-1271 payers).
    /// @param config           The channel's parameters (token must support EIP-2612).
    /// @param amount           Permit value and deposit amount.
    /// @param deadline         Permit deadline.
    /// @param permitSignature  The payer's EIP-2612 signature.
    /// @param depositSignature The payer's `PermitDeposit` signature (ECDSA or ERC-1271).
    /// @return channelId The channel's id.
    function depositWithPermit(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 deadline,
        bytes calldata permitSignature,
        bytes calldata depositSignature
    ) external nonReentrant returns (bytes32 channelId) {
        address token = config.token;
        if (token == address(0)) revert TollgateChannels__NativeTokenNotSupported();
        address payer = config.payer;
        channelId = _openOrTopUp(config, amount);

        uint256 permitNonce = IERC20Permit(token).nonces(payer);
        if (!SignatureChecker.isValidSignatureNow(
                payer, getPermitDepositDigest(channelId, amount, permitNonce), depositSignature
            )) {
            revert TollgateChannels__InvalidSignature();
        }
        _permit(token, payer, amount, deadline, permitSignature);
        _pull(token, payer, amount);
        emit Deposited(channelId, payer, amount, _channel(channelId).balance);
    }

    /*//////////////////////////////////////////////////////////////
                                 CLAIMS
    //////////////////////////////////////////////////////////////*/

    /// @notice Claims, for many channels of one receiver and token, the cumulative totals charged
    ///         under the payers' vouchers. Claimed funds stay in the contract, credited to the
    ///         receiver's unswept balance; {sweep} pays them out. An invalid item is skipped with a
    ///         `ClaimSkipped` event and does not revert the batch.
    /// @dev Caller must be `group.receiver` or a non-zero `group.receiverAuthorizer`. Each item's
    ///      channel id is rebuilt from the group and the item, so an item that does not belong to
    ///      the group lands on an empty channel and is skipped. Per item: total <= ceiling;
    ///      the total is capped at the channel balance and must exceed the current total; the
    ///      voucher `Voucher(channelId, maxClaimableAmount)` must be signed by the channel's
    ///      signer (65-byte r,s,v or 64-byte EIP-2098 ECDSA, or ERC-1271 when the signer has
    ///      code). {claimPacked} does the same with a compact encoding.
    /// @param group The receiver side of every channel in the batch.
    /// @param items The channels and their vouchers.
    /// @return amount Total newly claimed across the batch.
    function claim(ClaimGroup calldata group, ClaimItem[] calldata items)
        external
        nonReentrant
        returns (uint256 amount)
    {
        _checkReceiverSide(group);
        (amount,) = _claimItems(group, items, false);
    }

    /// @notice {claim} with the items packed back to back in `data` instead of ABI-encoded:
    ///         the cheapest way to claim (in a batch of 100: about 10.3k execution and 1.5k
    ///         calldata gas per channel, against 11.8k and 2.7k for {claim}).
    /// @dev Caller must be `group.receiver` or a non-zero `group.receiverAuthorizer`. Record
    ///      layout (big-endian integers, no padding):
    ///      `flags(1) payer(20) [payerAuthorizer(20)] withdrawDelay(3) [salt(32)]
    ///       maxClaimableAmount(W) totalClaimed(W) signature`,
    ///      where flags bit 0 = payerAuthorizer present (else zero), bit 1 = salt present (else
    ///      zero), bit 2 = signature is `length(2) bytes[length]` (any form, e.g. ERC-1271), else
    ///      a 64-byte EIP-2098 `r || vs`; bits 3-6 = W - 1, the width in bytes (1..16) of both
    ///      amounts; bit 7 must be zero. The delay takes 3 bytes because a channel's delay is at
    ///      most MAX_WITHDRAW_DELAY < 2^24. A malformed buffer reverts the whole call.
    /// @param group The receiver side of every channel in the batch.
    /// @param data  The packed items.
    /// @return amount Total newly claimed across the batch.
    function claimPacked(ClaimGroup calldata group, bytes calldata data)
        external
        nonReentrant
        returns (uint256 amount)
    {
        _checkReceiverSide(group);
        if (data.length == 0) revert TollgateChannels__EmptyBatch();
        _newPackedArea(group);
        amount = _claimPackedItems(data);
        _creditReceiver(group.receiver, group.token, amount);
        _emitPackedClaimed(group.receiver, group.token, amount);
    }

    /// @notice Same as {claim}, submitted by anyone with the receiver side's EIP-712 signature of
    ///         `ClaimBatch(ClaimEntry[] claims)`, one entry `(channelId, maxClaimableAmount,
    ///         totalClaimed)` per item in order.
    /// @dev The signer is `group.receiverAuthorizer` or `group.receiver` (ECDSA or ERC-1271).
    ///      Replaying a batch is harmless: already-claimed items are skipped.
    /// @param group                The receiver side of every channel in the batch.
    /// @param items                The channels and their vouchers.
    /// @param authorizerSignature  Signature of the batch by the receiver or its authorizer.
    /// @return amount Total newly claimed across the batch.
    function claimWithSignature(
        ClaimGroup calldata group,
        ClaimItem[] calldata items,
        bytes calldata authorizerSignature
    ) external nonReentrant returns (uint256 amount) {
        bytes32 batchHash;
        (amount, batchHash) = _claimItems(group, items, true);
        if (!_isReceiverSideSignature(
                group.receiver, group.receiverAuthorizer, _hashTypedDataV4(batchHash), authorizerSignature
            )) {
            revert TollgateChannels__InvalidSignature();
        }
    }

    /// @notice Transfers everything claimed and not yet swept for `receiver` in `token` to the
    ///         receiver. Anyone may call it.
    /// @param receiver The receiver whose claims are paid out.
    /// @param token    The token (address(0) for ETH).
    /// @return amount The amount transferred.
    function sweep(address receiver, address token) external nonReentrant returns (uint256 amount) {
        amount = _takeUnswept(receiver, token);
        _send(token, receiver, amount);
        emit Swept(receiver, token, receiver, amount);
    }

    /// @notice Transfers everything claimed and not yet swept for the caller (as receiver) in
    ///         `token` to `to`; for receivers that cannot take the token themselves.
    /// @param token The token (address(0) for ETH).
    /// @param to    Destination of the funds.
    /// @return amount The amount transferred.
    function sweepTo(address token, address to) external nonReentrant returns (uint256 amount) {
        amount = _takeUnswept(msg.sender, token);
        _send(token, to, amount);
        emit Swept(msg.sender, token, to, amount);
    }

    /*//////////////////////////////////////////////////////////////
                          WITHDRAWALS AND REFUNDS
    //////////////////////////////////////////////////////////////*/

    /// @notice Starts a timed withdrawal of `amount` of the unclaimed balance. The receiver can
    ///         still claim during the channel's withdraw delay. Replaces any pending withdrawal
    ///         (and restarts its delay).
    /// @dev Caller must be the payer or a non-zero payer authorizer.
    /// @param config The channel's parameters.
    /// @param amount Amount to withdraw; at most `balance - totalClaimed` now.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        _checkPayerSide(config);
        if (amount == 0) revert TollgateChannels__ZeroAmount();
        bytes32 channelId = getChannelId(config);
        Channel memory ch = _channel(channelId);
        uint128 available = ch.balance - ch.totalClaimed;
        if (amount > available) revert TollgateChannels__InsufficientAvailable(available, amount);
        _pendingWithdrawals[channelId] = PendingWithdrawal({amount: amount, initiatedAt: uint40(block.timestamp)});
        emit WithdrawInitiated(channelId, config.payer, amount, uint40(block.timestamp) + config.withdrawDelay);
    }

    /// @notice Completes a timed withdrawal after the delay: pays the payer the pending amount,
    ///         capped at what is still unclaimed.
    /// @dev Caller must be the payer or a non-zero payer authorizer.
    /// @param config The channel's parameters.
    /// @return amount The amount paid to the payer.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant returns (uint128 amount) {
        _checkPayerSide(config);
        bytes32 channelId = getChannelId(config);
        PendingWithdrawal memory pending = _pendingWithdrawals[channelId];
        if (pending.initiatedAt == 0) revert TollgateChannels__NoPendingWithdrawal(channelId);
        uint256 finalizableAt = uint256(pending.initiatedAt) + config.withdrawDelay;
        if (block.timestamp < finalizableAt) revert TollgateChannels__WithdrawNotReady(finalizableAt);

        Channel storage ch = _channel(channelId);
        uint128 balance = ch.balance;
        uint128 available = balance - ch.totalClaimed;
        amount = pending.amount < available ? pending.amount : available;
        delete _pendingWithdrawals[channelId];
        // amount <= available <= balance, so this cannot underflow.
        unchecked {
            balance -= amount;
        }
        ch.balance = balance;
        emit Withdrawn(channelId, config.payer, amount, balance);
        _send(config.token, config.payer, amount);
    }

    /// @notice Cooperative refund by the receiver side: returns up to `amount` of the unclaimed
    ///         balance to the payer at once. Advances the refund nonce, which invalidates any
    ///         signed refund for the previous nonce.
    /// @dev Caller must be the receiver or a non-zero receiver authorizer. `amount` is capped at
    ///      `balance - totalClaimed` (pass type(uint128).max for everything). A pending withdrawal
    ///      is reduced by the refunded amount (cancelled when covered).
    /// @param config The channel's parameters.
    /// @param amount Amount to refund (capped).
    /// @return refunded The amount paid to the payer.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant returns (uint128 refunded) {
        // msg.sender is never address(0), so an unset authorizer never matches.
        if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) {
            revert TollgateChannels__Unauthorized(msg.sender);
        }
        bytes32 channelId = getChannelId(config);
        refunded = _refund(channelId, config, amount, _refundNonces[channelId]);
    }

    /// @notice Cooperative refund submitted by anyone with the receiver side's EIP-712 signature of
    ///         `Refund(bytes32 channelId,uint256 nonce,uint128 amount)`.
    /// @dev The signer is the receiver authorizer or the receiver (ECDSA or ERC-1271); `nonce`
    ///      must be the channel's current refund nonce. See {refund} for the amount rules.
    /// @param config    The channel's parameters.
    /// @param amount    Signed amount to refund (capped at the unclaimed balance).
    /// @param nonce     The channel's current refund nonce.
    /// @param signature Signature of the refund by the receiver side.
    /// @return refunded The amount paid to the payer.
    function refundWithSignature(ChannelConfig calldata config, uint128 amount, uint256 nonce, bytes calldata signature)
        external
        nonReentrant
        returns (uint128 refunded)
    {
        bytes32 channelId = getChannelId(config);
        uint256 expected = _refundNonces[channelId];
        if (nonce != expected) revert TollgateChannels__InvalidRefundNonce(expected, nonce);
        if (!_isReceiverSideSignature(
                config.receiver, config.receiverAuthorizer, getRefundDigest(channelId, nonce, amount), signature
            )) {
            revert TollgateChannels__InvalidSignature();
        }
        refunded = _refund(channelId, config, amount, nonce);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The channel id of `config`: the EIP-712 typed-data hash
    ///         `keccak256(0x1901 || domainSeparator || keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH,
    ///         payer, payerAuthorizer, receiver, receiverAuthorizer, token, withdrawDelay, salt)))`,
    ///         which binds the config to this chain id and this contract.
    /// @param config The channel's parameters.
    /// @return The channel id.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        return _channelId(
            _domainSeparatorV4(),
            config.payer,
            config.payerAuthorizer,
            config.receiver,
            config.receiverAuthorizer,
            config.token,
            config.withdrawDelay,
            config.salt
        );
    }

    /// @notice The channel's balance (deposits minus withdrawals and refunds) and claimed total.
    /// @param channelId The channel id.
    /// @return balance      Current balance, claimed funds included.
    /// @return totalClaimed Cumulative claimed amount.
    function channels(bytes32 channelId) external view returns (uint128 balance, uint128 totalClaimed) {
        Channel memory ch = _channel(channelId);
        return (ch.balance, ch.totalClaimed);
    }

    /// @notice The channel's pending timed withdrawal (zeroes when none).
    /// @param channelId The channel id.
    /// @return amount      Requested amount.
    /// @return initiatedAt Unix time of `initiateWithdraw`.
    function pendingWithdrawals(bytes32 channelId) external view returns (uint128 amount, uint40 initiatedAt) {
        PendingWithdrawal memory p = _pendingWithdrawals[channelId];
        return (p.amount, p.initiatedAt);
    }

    /// @notice The nonce the next `Refund` signature of the channel must carry.
    /// @param channelId The channel id.
    /// @return The current refund nonce.
    function refundNonce(bytes32 channelId) external view returns (uint256) {
        return _refundNonces[channelId];
    }

    /// @notice Balance, claims, pending withdrawal and refund nonce of a channel in one call.
    /// @param channelId The channel id.
    /// @return state The channel's state.
    function getChannelState(bytes32 channelId) external view returns (ChannelState memory state) {
        Channel memory ch = _channel(channelId);
        PendingWithdrawal memory p = _pendingWithdrawals[channelId];
        state = ChannelState({
            balance: ch.balance,
            totalClaimed: ch.totalClaimed,
            withdrawAmount: p.amount,
            withdrawInitiatedAt: p.initiatedAt,
            refundNonce: _refundNonces[channelId]
        });
    }

    /// @notice Claimed and not yet swept funds of `receiver` in `token`.
    /// @param receiver The receiver.
    /// @param token    The token (address(0) for ETH).
    /// @return The unswept amount.
    function unswept(address receiver, address token) external view returns (uint256) {
        ReceiverTotals memory t = _receivers[receiver][token];
        return t.claimed - t.swept;
    }

    /// @notice Cumulative amounts claimed for and swept to `receiver` in `token` (as x402's
    ///         `receivers(receiver, token)`).
    /// @param receiver The receiver.
    /// @param token    The token (address(0) for ETH).
    /// @return totalClaimed Everything ever claimed.
    /// @return totalSwept   Everything ever swept.
    function receivers(address receiver, address token)
        external
        view
        returns (uint128 totalClaimed, uint128 totalSwept)
    {
        ReceiverTotals memory t = _receivers[receiver][token];
        return (t.claimed, t.swept);
    }

    /// @notice The EIP-712 domain separator (name "Tollgate Channels", version "1").
    /// @return The domain separator for this chain and contract.
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The digest a payer signs for `Voucher(channelId, maxClaimableAmount)`.
    /// @param channelId          The channel id.
    /// @param maxClaimableAmount Cumulative ceiling.
    /// @return The EIP-712 digest.
    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _voucherDigest(_domainSeparatorV4(), channelId, maxClaimableAmount);
    }

    /// @notice The digest the receiver side signs for `Refund(channelId, nonce, amount)`.
    /// @param channelId The channel id.
    /// @param nonce     Refund nonce.
    /// @param amount    Refund amount.
    /// @return The EIP-712 digest.
    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice The digest the payer signs to bind a permit deposit to a channel.
    /// @param channelId   The channel id.
    /// @param amount      Deposit amount (the permit value).
    /// @param permitNonce The token's `nonces(payer)` that the permit uses.
    /// @return The EIP-712 digest.
    function getPermitDepositDigest(bytes32 channelId, uint128 amount, uint256 permitNonce)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(PERMIT_DEPOSIT_TYPEHASH, channelId, amount, permitNonce)));
    }

    /// @notice The digest the receiver side signs for a {claimWithSignature} batch.
    /// @param group The receiver side of the batch.
    /// @param items The batch items.
    /// @return The EIP-712 digest of `ClaimBatch(ClaimEntry[] claims)`.
    function getClaimBatchDigest(ClaimGroup calldata group, ClaimItem[] calldata items)
        external
        view
        returns (bytes32)
    {
        bytes32 ds = _domainSeparatorV4();
        bytes32[] memory entries = new bytes32[](items.length);
        for (uint256 i; i < items.length; ++i) {
            ClaimItem calldata it = items[i];
            bytes32 id = _channelId(
                ds,
                it.payer,
                it.payerAuthorizer,
                group.receiver,
                group.receiverAuthorizer,
                group.token,
                it.withdrawDelay,
                it.salt
            );
            entries[i] = keccak256(abi.encode(CLAIM_ENTRY_TYPEHASH, id, it.maxClaimableAmount, it.totalClaimed));
        }
        return _hashTypedDataV4(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entries)))));
    }

    /// @notice The EIP-3009 nonce a payer signs for {depositWithAuthorization}:
    ///         `keccak256(abi.encode(channelId, salt))`.
    /// @param channelId The channel id.
    /// @param salt      The payer's free value.
    /// @return The nonce.
    function depositAuthorizationNonce(bytes32 channelId, uint256 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(channelId, salt));
    }

    /*//////////////////////////////////////////////////////////////
                           INTERNAL: CHANNELS
    //////////////////////////////////////////////////////////////*/

    /// @dev The stored state of channel `channelId`: storage slot `channelId`.
    function _channel(bytes32 channelId) private pure returns (Channel storage ch) {
        assembly ("memory-safe") {
            ch.slot := channelId
        }
    }

    /// @dev Validates the config, adds `amount` to the balance and emits ChannelOpened on first use.
    function _openOrTopUp(ChannelConfig calldata config, uint128 amount) private returns (bytes32 channelId) {
        if (config.payer == address(0)) revert TollgateChannels__InvalidPayer();
        if (config.receiver == address(0)) revert TollgateChannels__InvalidReceiver();
        uint40 delay = config.withdrawDelay;
        if (delay < MIN_WITHDRAW_DELAY || delay > MAX_WITHDRAW_DELAY) {
            revert TollgateChannels__WithdrawDelayOutOfRange(delay);
        }
        if (amount == 0) revert TollgateChannels__ZeroAmount();
        channelId = getChannelId(config);
        Channel storage ch = _channel(channelId);
        uint128 balance = ch.balance;
        if (balance == 0 && ch.totalClaimed == 0) {
            emit ChannelOpened(channelId, config.payer, config.receiver, config);
        }
        if (amount > type(uint128).max - balance) revert TollgateChannels__BalanceOverflow(balance, amount);
        // Checked just above: balance + amount <= type(uint128).max.
        unchecked {
            ch.balance = balance + amount;
        }
    }

    /// @dev Reverts unless the caller is the group's receiver or its non-zero authorizer.
    function _checkReceiverSide(ClaimGroup calldata group) private view {
        // msg.sender is never address(0), so an unset authorizer never matches.
        if (msg.sender != group.receiver && msg.sender != group.receiverAuthorizer) {
            revert TollgateChannels__Unauthorized(msg.sender);
        }
    }

    /// @dev Claim loop over ABI-encoded items. When `withEntries` is set, also returns the EIP-712
    ///      struct hash of `ClaimBatch` over the items (for {claimWithSignature}).
    function _claimItems(ClaimGroup calldata group, ClaimItem[] calldata items, bool withEntries)
        private
        returns (uint256 amount, bytes32 batchHash)
    {
        uint256 n = items.length;
        if (n == 0) revert TollgateChannels__EmptyBatch();
        Batch memory b = _newBatch(n);
        ClaimFields memory f = _newFields(group);
        bytes32[] memory entries;
        if (withEntries) entries = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            ClaimItem calldata it = items[i];
            f.payer = it.payer;
            f.payerAuthorizer = it.payerAuthorizer;
            f.withdrawDelay = it.withdrawDelay;
            f.salt = it.salt;
            f.maxClaimableAmount = it.maxClaimableAmount;
            f.totalClaimed = it.totalClaimed;
            bytes calldata sig = it.signature;
            f.sigOffset = _offsetOf(sig);
            f.sigLength = sig.length;
            bytes32 channelId = _applyItem(b, f);
            if (withEntries) entries[i] = _claimEntryHash(channelId, f.maxClaimableAmount, f.totalClaimed);
        }
        amount = _finishBatch(b, group);
        if (withEntries) {
            batchHash = keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entries))));
        }
    }

    /// @dev Starts a batch: caches the domain separator and allocates the event buffer for up to
    ///      `capacity` applied items (49 bytes each, plus 15 bytes of slack for the last write).
    function _newBatch(uint256 capacity) private view returns (Batch memory b) {
        b.ds = _domainSeparatorV4();
        bytes memory claims = new bytes(capacity * 49 + 15);
        b.claims = claims;
        uint256 cursor;
        assembly ("memory-safe") {
            cursor := add(claims, 0x20)
        }
        b.cursor = cursor;
    }

    /// @dev The reusable item buffer, with the typehash and the group's fields written once.
    function _newFields(ClaimGroup calldata group) private pure returns (ClaimFields memory f) {
        f.typehash = CHANNEL_CONFIG_TYPEHASH;
        f.receiver = group.receiver;
        f.receiverAuthorizer = group.receiverAuthorizer;
        f.token = group.token;
    }

    /// @dev Adds a batch sum to the receiver's cumulative claimed total (one storage update per
    ///      batch; none when nothing was claimed).
    function _creditReceiver(address receiver, address token, uint256 amount) private {
        if (amount == 0) return;
        ReceiverTotals storage t = _receivers[receiver][token];
        uint256 claimed = t.claimed + amount;
        if (claimed > type(uint128).max) revert TollgateChannels__ReceiverTotalOverflow(receiver, token);
        // Checked just above.
        // forge-lint: disable-next-line(unsafe-typecast)
        t.claimed = uint128(claimed);
    }

    /// @dev Credits the batch sum to the receiver (one storage update per batch) and emits
    ///      `Claimed` with the applied channels.
    function _finishBatch(Batch memory b, ClaimGroup calldata group) private returns (uint256 amount) {
        amount = b.amount;
        address receiver = group.receiver;
        address token = group.token;
        _creditReceiver(receiver, token, amount);
        bytes memory claims = b.claims;
        uint256 cursor = b.cursor;
        // Cut the buffer to the records written; cursor never passes the allocated size.
        assembly ("memory-safe") {
            mstore(claims, sub(cursor, add(claims, 0x20)))
        }
        emit Claimed(receiver, token, msg.sender, amount, claims);
    }

    /// @dev {claimPacked} keeps its per-batch state at fixed memory addresses from 0x80 (nothing
    ///      is allocated before it in that call; {_newPackedArea} checks it and allocates the
    ///      area): constant addresses are cheaper than a pointer plus an offset on every access of
    ///      the item loop. Layout:
    ///        0x080-0x17f  abi.encode(CHANNEL_CONFIG_TYPEHASH, payer, payerAuthorizer, receiver,
    ///                     receiverAuthorizer, token, withdrawDelay, salt): the config's struct
    ///                     encoding; typehash and receiver side written once per batch
    ///        0x19e-0x1df  0x1901 || domainSeparator || structHash: hashed for the channel id,
    ///                     then again with the voucher's struct hash for the voucher digest
    ///        0x1e0-0x23f  abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)
    ///        0x240        requested totalClaimed (for `ClaimSkipped`)
    ///        0x260        the item's amount width W (bytes)
    ///        0x280        the channel's new packed value (balance | capped total << 128)
    ///        0x2a0        the amount the item adds (capped total - claimed total)
    ///        0x2c0/0x2e0  signature offset and length in calldata
    ///        0x300        cursor: where the next `Claimed` record goes
    ///        0x320-0x37f  head of the `Claimed` event data: amount, 0x40, length of `claims`
    ///        0x380-       the records, 33 + W bytes each, then the free memory
    uint256 private constant _PACKED_AREA_END = 0x380;

    /// @dev Sets up the {claimPacked} work area (layout above) for a batch of `group`.
    function _newPackedArea(ClaimGroup calldata group) private view {
        bytes32 ds = _domainSeparatorV4();
        address receiver = group.receiver;
        address receiverAuthorizer = group.receiverAuthorizer;
        address token = group.token;
        assembly ("memory-safe") {
            // Nothing is allocated before this point of claimPacked; the fixed layout relies on it.
            if iszero(eq(mload(0x40), 0x80)) { revert(0, 0) }
            mstore(0x80, CHANNEL_CONFIG_TYPEHASH)
            mstore(0xe0, receiver)
            mstore(0x100, receiverAuthorizer)
            mstore(0x120, token)
            mstore(0x180, 0x1901)
            mstore(0x1a0, ds)
            mstore(0x1e0, VOUCHER_TYPEHASH)
            mstore(0x300, _PACKED_AREA_END)
            // The free memory stays 32 bytes past the last record: the 16 bytes after a record
            // are the next record's or the event's zero padding.
            mstore(0x40, add(_PACKED_AREA_END, 0x20))
        }
    }

    /// @dev The item loop of {claimPacked} over the work area (see {_newPackedArea}): decodes a
    ///      record, rebuilds the channel id, reads the channel's slot, checks the item (same rules
    ///      and order as {_applyItem}: ceiling, balance, increase, then the signature through
    ///      OpenZeppelin's `ECDSA.tryRecover`, ERC-1271 when the signer has code) and applies it:
    ///      one SSTORE and one record appended for the `Claimed` event. Returns the sum of
    ///      the increases.
    function _claimPackedItems(bytes calldata data) private returns (uint256 amount) {
        uint256 p = _offsetOf(data);
        uint256 end = p + data.length;
        // Per-item values, declared once: `reason` and `v` are reset for every item, the others
        // are only read for an item that set them.
        uint256 reason;
        bytes32 digest;
        address signer;
        uint256 v;
        bytes32 r;
        bytes32 s;
        do {
            assembly ("memory-safe") {
                reason := 0
                v := 0
                // Decode one record (layout in {claimPacked}'s NatSpec). Reads past the record
                // only see later calldata or zeros; the record is rejected unless it ends inside
                // the buffer and its reserved flag bit is clear.
                {
                    let flags := byte(0, calldataload(p))
                    mstore(0xa0, shr(96, calldataload(add(p, 1)))) // payer
                    let q := add(p, 21)
                    switch and(flags, 3)
                    case 0 {
                        // The common record: no payer authorizer, no salt.
                        mstore(0xc0, 0)
                        mstore(0x140, shr(232, calldataload(q))) // withdrawDelay (3 bytes)
                        mstore(0x160, 0)
                        q := add(q, 3)
                    }
                    default {
                        let bit := and(flags, 1)
                        mstore(0xc0, mul(bit, shr(96, calldataload(q)))) // payerAuthorizer
                        q := add(q, mul(bit, 20))
                        mstore(0x140, shr(232, calldataload(q))) // withdrawDelay (3 bytes)
                        q := add(q, 3)
                        bit := and(shr(1, flags), 1)
                        mstore(0x160, mul(bit, calldataload(q))) // salt
                        q := add(q, shl(5, bit))
                    }
                    // Both amounts are big-endian in `width` bytes (flags bits 3-6 hold width - 1).
                    let width := add(and(shr(3, flags), 15), 1)
                    mstore(0x260, width)
                    let shift := sub(256, shl(3, width))
                    mstore(0x220, shr(shift, calldataload(q))) // maxClaimableAmount
                    mstore(0x240, shr(shift, calldataload(add(q, width)))) // totalClaimed
                    q := add(q, shl(1, width))
                    // Signature: 64 bytes, or (flag bit 2) a 2-byte length and that many bytes.
                    // 64 bytes are EIP-2098 r || vs, 65 bytes r || s || v; v stays 0 for other
                    // lengths (only ERC-1271 can accept those).
                    switch and(flags, 4)
                    case 0 {
                        mstore(0x2c0, q)
                        mstore(0x2e0, 64)
                        r := calldataload(q)
                        s := calldataload(add(q, 0x20))
                        v := add(27, shr(255, s))
                        s := and(s, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
                        q := add(q, 64)
                    }
                    default {
                        let sigLen := shr(240, calldataload(q))
                        q := add(q, 2)
                        mstore(0x2c0, q)
                        mstore(0x2e0, sigLen)
                        r := calldataload(q)
                        s := calldataload(add(q, 0x20))
                        if eq(sigLen, 64) {
                            v := add(27, shr(255, s))
                            s := and(s, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
                        }
                        if eq(sigLen, 65) { v := byte(0, calldataload(add(q, 0x40))) }
                        q := add(q, sigLen)
                    }
                    switch or(gt(q, end), and(flags, 0x80))
                    case 0 { p := q }
                    default { reason := 0xff }
                }
                if iszero(reason) {
                    let total := mload(0x240)
                    let bal
                    let claimed
                    {
                        // channelId = keccak256(0x1901 || ds || keccak256(config encoding)).
                        mstore(0x1c0, keccak256(0x80, 0x100))
                        let x := keccak256(0x19e, 0x42)
                        mstore(0x200, x)
                        // The channel's slot is its id: balance in the low 128 bits,
                        // totalClaimed high.
                        x := sload(x)
                        bal := and(x, 0xffffffffffffffffffffffffffffffff)
                        claimed := shr(128, x)
                    }
                    // Same checks and reasons as {_applyItem}: the item is applied when the total
                    // is within the ceiling and, capped at the balance, above the claimed total
                    // (a zero balance fails the second). Otherwise the reason by priority: above
                    // the ceiling, then no balance, then no increase.
                    let aboveCeiling := gt(total, mload(0x220))
                    if gt(total, bal) { total := bal }
                    switch and(iszero(aboveCeiling), gt(total, claimed))
                    case 0 {
                        reason := SKIP_NOT_INCREASING
                        if iszero(bal) { reason := SKIP_NO_BALANCE }
                        if aboveCeiling { reason := SKIP_ABOVE_CEILING }
                    }
                    default {
                        mstore(0x280, or(bal, shl(128, total)))
                        mstore(0x2a0, sub(total, claimed))
                        // digest = keccak256(0x1901 || ds || keccak256(abi.encode(
                        //   VOUCHER_TYPEHASH, channelId, maxClaimableAmount))).
                        mstore(0x1c0, keccak256(0x1e0, 0x60))
                        digest := keccak256(0x19e, 0x42)
                        // Voucher signer: the payer authorizer, or the payer when none.
                        signer := mload(0xc0)
                        if iszero(signer) { signer := mload(0xa0) }
                    }
                }
            }
            if (reason == 0) {
                // OpenZeppelin's tryRecover rejects high-S and v outside {27, 28} and returns
                // address(0) with its error; the signer is never address(0) here (a channel with
                // a balance has a non-zero payer), so comparing the address is enough.
                address recovered;
                // v is 27 + a parity bit (64-byte form) or one signature byte (65-byte form).
                // forge-lint: disable-next-line(unsafe-typecast)
                if (v != 0) (recovered,,) = ECDSA.tryRecover(digest, uint8(v), r, s);
                bool mismatch;
                // Both are clean addresses (tryRecover's result; signer read from 20 bytes).
                assembly ("memory-safe") {
                    mismatch := iszero(eq(recovered, signer))
                }
                if (mismatch && !_isContractSignatureAt(signer, digest, 0x2c0)) reason = SKIP_INVALID_SIGNATURE;
            }
            if (reason == 0) {
                assembly ("memory-safe") {
                    // The channel's slot = balance | total << 128; append the record channelId ||
                    // W || total (W bytes) at the cursor; move the free memory to 32 bytes past
                    // the records (memory an ERC-1271 check allocated above is dead by now); add
                    // the item's increase to the sum (each is below 2^128 and there is at most
                    // one per calldata item, so the sum cannot overflow).
                    let packed := mload(0x280)
                    sstore(mload(0x200), packed)
                    let at := mload(0x300)
                    mstore(at, mload(0x200))
                    // W, then the total's low W bytes (total <= the requested total < 2^(8W)).
                    let width := mload(0x260)
                    mstore(add(at, 0x20), or(shl(248, width), shl(sub(248, shl(3, width)), shr(128, packed))))
                    at := add(at, add(33, width))
                    mstore(0x300, at)
                    mstore(0x40, add(at, 0x20))
                    amount := add(amount, mload(0x2a0))
                }
            } else {
                if (reason == 0xff) revert TollgateChannels__MalformedClaimData(p - _offsetOf(data));
                _skipPacked(reason);
            }
        } while (p < end);
    }

    /// @dev Emits `ClaimSkipped` for a {claimPacked} item (channel id and requested total from
    ///      the work area; the current total re-read: the skip path is off the hot path).
    function _skipPacked(uint256 reason) private {
        bytes32 channelId;
        uint256 requested;
        assembly ("memory-safe") {
            channelId := mload(0x200)
            requested := mload(0x240)
        }
        // reason is one of the SKIP_* constants (1..4); requested came from at most 16 calldata
        // bytes.
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ClaimSkipped(channelId, uint8(reason), uint128(requested), _channel(channelId).totalClaimed);
    }

    /// @dev Emits {claimPacked}'s `Claimed` straight from the work area: the records are already
    ///      laid out as the ABI encoding of `(amount, claims)` needs them, so nothing is copied.
    function _emitPackedClaimed(address receiver, address token, uint256 amount) private {
        bytes32 topic = Claimed.selector;
        assembly ("memory-safe") {
            let end := mload(0x300)
            let length := sub(end, _PACKED_AREA_END)
            mstore(0x320, amount)
            mstore(0x340, 0x40)
            mstore(0x360, length)
            // The ABI padding of `claims` (the free memory starts 32 bytes past `end`).
            mstore(end, 0)
            log4(0x320, add(0x60, and(add(length, 31), not(31))), topic, receiver, token, caller())
        }
    }

    /// @dev Applies one claim item and returns its channel id. Skipped items emit `ClaimSkipped`;
    ///      applied ones are appended to the batch. Checks run cheapest first, the signature last.
    ///      Per item: two hashes for the channel id, one SLOAD and one SSTORE of the packed
    ///      channel slot, two hashes for the voucher digest and one ecrecover through
    ///      OpenZeppelin's `ECDSA.tryRecover`. This is the gas-critical path
    ///      (docs/PERFORMANCE-contracts.md), so everything around `tryRecover` is assembly over
    ///      scratch memory past the free memory pointer (never allocated, so memory does not grow
    ///      with the batch). Offsets into `f` follow ClaimFields (0x20 payer, 0x40
    ///      payerAuthorizer, 0x100 maxClaimableAmount, 0x120 totalClaimed, 0x140 sigOffset, 0x160
    ///      sigLength); into `b` Batch (0x00 ds, 0x20 amount, 0x40 cursor, 0x60 claims).
    function _applyItem(Batch memory b, ClaimFields memory f) private returns (bytes32 channelId) {
        uint256 reason;
        bytes32 digest;
        address signer;
        bytes32 r;
        bytes32 s;
        uint256 v;
        assembly ("memory-safe") {
            let m := mload(0x40)
            // channelId = keccak256(0x1901 || ds || structHash(ChannelConfig)); f's first eight
            // words are the ChannelConfig encoding.
            mstore(m, shl(240, 0x1901))
            mstore(add(m, 0x02), mload(b))
            mstore(add(m, 0x22), keccak256(f, 0x100))
            channelId := keccak256(m, 0x42)
            // packed = the channel's slot (slot = channelId): balance in the low 128 bits,
            // totalClaimed high.
            let slot := channelId
            let packed := sload(slot)
            let bal := and(packed, 0xffffffffffffffffffffffffffffffff)
            let ceiling := mload(add(f, 0x100))
            let total := mload(add(f, 0x120))
            switch gt(total, ceiling)
            case 1 { reason := SKIP_ABOVE_CEILING }
            default {
                switch iszero(bal)
                case 1 { reason := SKIP_NO_BALANCE }
                default {
                    // Cap at the balance, then require an increase over the claimed total.
                    if gt(total, bal) { total := bal }
                    if iszero(gt(total, shr(128, packed))) { reason := SKIP_NOT_INCREASING }
                }
            }
            // Keep what the second half needs in f (0x180 slot, 0x1a0 packed, 0x1c0 capped
            // total): scratch memory does not survive the Solidity code in between.
            mstore(add(f, 0x180), slot)
            mstore(add(f, 0x1a0), packed)
            mstore(add(f, 0x1c0), total)
            if iszero(reason) {
                // digest = keccak256(0x1901 || ds || keccak256(abi.encode(VOUCHER_TYPEHASH,
                //   channelId, maxClaimableAmount)))
                mstore(add(m, 0x42), VOUCHER_TYPEHASH)
                mstore(add(m, 0x62), channelId)
                mstore(add(m, 0x82), ceiling)
                mstore(add(m, 0x22), keccak256(add(m, 0x42), 0x60))
                digest := keccak256(m, 0x42)
                // Voucher signer: the payer authorizer, or the payer when none is set.
                signer := mload(add(f, 0x40))
                if iszero(signer) { signer := mload(add(f, 0x20)) }
                // 64-byte EIP-2098 r || vs or 65-byte r || s || v; v stays 0 otherwise.
                let offset := mload(add(f, 0x140))
                r := calldataload(offset)
                s := calldataload(add(offset, 0x20))
                switch mload(add(f, 0x160))
                case 64 {
                    v := add(27, shr(255, s))
                    s := and(s, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
                }
                case 65 { v := byte(0, calldataload(add(offset, 0x40))) }
            }
        }
        if (reason == 0) {
            // OpenZeppelin's tryRecover rejects high-S and v outside {27, 28} and returns
            // address(0) with its error; the signer is never address(0) here (a channel with a
            // balance has a non-zero payer), so comparing the address is enough.
            address recovered;
            // v is 27 + a parity bit (64-byte form) or one signature byte (65-byte form).
            // forge-lint: disable-next-line(unsafe-typecast)
            if (v != 0) (recovered,,) = ECDSA.tryRecover(digest, uint8(v), r, s);
            if (recovered != signer && !_isContractSignature(signer, digest, f)) reason = SKIP_INVALID_SIGNATURE;
        }
        if (reason != 0) {
            _skip(channelId, reason, f);
            return channelId;
        }
        assembly ("memory-safe") {
            let packed := mload(add(f, 0x1a0))
            let total := mload(add(f, 0x1c0))
            // The channel's totalClaimed = total (balance half unchanged).
            sstore(mload(add(f, 0x180)), or(and(packed, 0xffffffffffffffffffffffffffffffff), shl(128, total)))
            // Append the record channelId || 16 || uint128(total) (W = 16 bytes: the ABI path
            // has no width) at the cursor (the 15 bytes written past the record are slack or
            // overwritten by the next record); at most one record per item fits the buffer. Add
            // the delta to the batch sum: total - claimed is in (0, 2^128) and there is at most
            // one per calldata item, so the sum cannot overflow.
            let at := mload(add(b, 0x40))
            mstore(at, channelId)
            mstore(add(at, 0x20), or(shl(248, 16), shl(120, total)))
            mstore(add(b, 0x40), add(at, 49))
            mstore(add(b, 0x20), add(mload(add(b, 0x20)), sub(total, shr(128, packed))))
        }
    }

    /// @dev ERC-1271 fallback for a voucher that ECDSA did not verify: only when the signer has
    ///      code (a contract wallet or an EIP-7702 account).
    function _isContractSignature(address signer, bytes32 digest, ClaimFields memory f) private view returns (bool) {
        uint256 at;
        assembly ("memory-safe") {
            at := add(f, 0x140)
        }
        return _isContractSignatureAt(signer, digest, at);
    }

    /// @dev {_isContractSignature} with the signature's calldata offset and length in the two
    ///      memory words at `at`.
    function _isContractSignatureAt(address signer, bytes32 digest, uint256 at) private view returns (bool) {
        if (signer.code.length == 0) return false;
        bytes calldata sig;
        assembly ("memory-safe") {
            sig.offset := mload(at)
            sig.length := mload(add(at, 0x20))
        }
        return SignatureChecker.isValidERC1271SignatureNow(signer, digest, sig);
    }

    /// @dev Emits `ClaimSkipped` for an item (the current total is re-read: the skip path is
    ///      rare and off the gas-critical path).
    function _skip(bytes32 channelId, uint256 reason, ClaimFields memory f) private {
        // reason is one of the SKIP_* constants (1..4).
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ClaimSkipped(channelId, uint8(reason), f.totalClaimed, _channel(channelId).totalClaimed);
    }

    /// @dev Calldata position of a `bytes calldata` value.
    function _offsetOf(bytes calldata data) private pure returns (uint256 offset) {
        assembly ("memory-safe") {
            offset := data.offset
        }
    }

    /// @dev Shared refund path: advances the nonce first, then pays up to the unclaimed balance.
    function _refund(bytes32 channelId, ChannelConfig calldata config, uint128 amount, uint256 nonce)
        private
        returns (uint128 refunded)
    {
        // The nonce is a counter of refunds on one channel; it cannot reach 2^256.
        unchecked {
            _refundNonces[channelId] = nonce + 1;
        }
        Channel storage ch = _channel(channelId);
        uint128 balance = ch.balance;
        uint128 available = balance - ch.totalClaimed;
        refunded = amount < available ? amount : available;
        // refunded <= available <= balance.
        unchecked {
            balance -= refunded;
        }
        ch.balance = balance;

        PendingWithdrawal storage pending = _pendingWithdrawals[channelId];
        uint128 pendingAmount = pending.amount;
        if (pendingAmount != 0) {
            if (refunded >= pendingAmount) {
                delete _pendingWithdrawals[channelId];
                pendingAmount = 0;
            } else {
                // refunded < pendingAmount.
                unchecked {
                    pendingAmount -= refunded;
                }
                pending.amount = pendingAmount;
            }
        }
        emit Refunded(channelId, config.payer, refunded, nonce, balance, pendingAmount);
        if (refunded != 0) _send(config.token, config.payer, refunded);
    }

    /// @dev Reverts unless the caller is the payer or a non-zero payer authorizer.
    function _checkPayerSide(ChannelConfig calldata config) private view {
        // msg.sender is never address(0), so an unset authorizer never matches.
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) {
            revert TollgateChannels__Unauthorized(msg.sender);
        }
    }

    /// @dev Reads and clears the unswept balance; reverts when there is nothing to sweep.
    function _takeUnswept(address receiver, address token) private returns (uint256 amount) {
        ReceiverTotals storage t = _receivers[receiver][token];
        uint128 claimed = t.claimed;
        uint128 swept = t.swept;
        if (claimed == swept) revert TollgateChannels__NothingToSweep(receiver, token);
        // swept <= claimed always: sweeps only ever take claimed - swept.
        unchecked {
            amount = claimed - swept;
        }
        t.swept = claimed;
    }

    /*//////////////////////////////////////////////////////////////
                        INTERNAL: HASHES, SIGNATURES
    //////////////////////////////////////////////////////////////*/

    /// @dev EIP-712 hash of a ChannelConfig under domain separator `ds`. Uses the memory past the
    ///      free memory pointer as scratch space without allocating, so a claim loop of any length
    ///      does not grow memory.
    function _channelId(
        bytes32 ds,
        address payer,
        address payerAuthorizer,
        address receiver,
        address receiverAuthorizer,
        address token,
        uint40 withdrawDelay,
        bytes32 salt
    ) private pure returns (bytes32 id) {
        bytes32 typehash = CHANNEL_CONFIG_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), payer)
            mstore(add(m, 0x40), payerAuthorizer)
            mstore(add(m, 0x60), receiver)
            mstore(add(m, 0x80), receiverAuthorizer)
            mstore(add(m, 0xa0), token)
            mstore(add(m, 0xc0), withdrawDelay)
            mstore(add(m, 0xe0), salt)
            let structHash := keccak256(m, 0x100)
            mstore(m, hex"1901")
            mstore(add(m, 0x02), ds)
            mstore(add(m, 0x22), structHash)
            id := keccak256(m, 0x42)
        }
    }

    /// @dev EIP-712 digest of Voucher(channelId, maxClaimableAmount); scratch memory as above.
    function _voucherDigest(bytes32 ds, bytes32 channelId, uint128 maxClaimableAmount)
        private
        pure
        returns (bytes32 digest)
    {
        bytes32 typehash = VOUCHER_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), channelId)
            mstore(add(m, 0x40), maxClaimableAmount)
            let structHash := keccak256(m, 0x60)
            mstore(m, hex"1901")
            mstore(add(m, 0x02), ds)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
        }
    }

    /// @dev Struct hash of ClaimEntry(channelId, maxClaimableAmount, totalClaimed).
    function _claimEntryHash(bytes32 channelId, uint128 maxClaimableAmount, uint128 totalClaimed)
        private
        pure
        returns (bytes32 h)
    {
        bytes32 typehash = CLAIM_ENTRY_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), channelId)
            mstore(add(m, 0x40), maxClaimableAmount)
            mstore(add(m, 0x60), totalClaimed)
            h := keccak256(m, 0x80)
        }
    }

    /// @dev ECDSA first, straight from calldata, with OpenZeppelin's `tryRecover` (rejects high-S
    ///      and v outside {27, 28}) for 65-byte r||s||v and 64-byte EIP-2098 r||vs signatures;
    ///      falls back to ERC-1271 only when `signer` has code.
    function _isValidSignatureCalldata(address signer, bytes32 digest, bytes calldata signature)
        private
        view
        returns (bool)
    {
        uint256 length = signature.length;
        if (length == 65 || length == 64) {
            address recovered;
            ECDSA.RecoverError err;
            if (length == 65) {
                (uint8 v, bytes32 r, bytes32 s) = _splitSignature(signature);
                (recovered, err,) = ECDSA.tryRecover(digest, v, r, s);
            } else {
                bytes32 r;
                bytes32 vs;
                assembly ("memory-safe") {
                    r := calldataload(signature.offset)
                    vs := calldataload(add(signature.offset, 0x20))
                }
                (recovered, err,) = ECDSA.tryRecover(digest, r, vs);
            }
            if (err == ECDSA.RecoverError.NoError && recovered == signer) return true;
        }
        if (signer.code.length == 0) return false;
        return SignatureChecker.isValidERC1271SignatureNow(signer, digest, signature);
    }

    /// @dev Whether `signature` over `digest` is from the receiver authorizer (when set) or the
    ///      receiver, each checked with ECDSA or ERC-1271.
    function _isReceiverSideSignature(
        address receiver,
        address receiverAuthorizer,
        bytes32 digest,
        bytes calldata signature
    ) private view returns (bool) {
        if (receiverAuthorizer != address(0) && _isValidSignatureCalldata(receiverAuthorizer, digest, signature)) {
            return true;
        }
        return _isValidSignatureCalldata(receiver, digest, signature);
    }

    /// @dev Calls the token's EIP-2612 `permit` (spender = this contract): the v,r,s overload for a
    ///      65-byte signature from an account without code, else the bytes overload (USDC v2.2).
    function _permit(address token, address owner, uint256 value, uint256 deadline, bytes calldata signature) private {
        if (signature.length == 65 && owner.code.length == 0) {
            (uint8 v, bytes32 r, bytes32 s) = _splitSignature(signature);
            IERC20Permit(token).permit(owner, address(this), value, deadline, v, r, s);
        } else {
            IERC2612Bytes(token).permit(owner, address(this), value, deadline, signature);
        }
    }

    /// @dev Splits a 65-byte r || s || v signature held in calldata.
    function _splitSignature(bytes calldata signature) private pure returns (uint8 v, bytes32 r, bytes32 s) {
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
    }

    /*//////////////////////////////////////////////////////////////
                           INTERNAL: TRANSFERS
    //////////////////////////////////////////////////////////////*/

    /// @dev Pulls exactly `amount` of `token` from `from`, rejecting short-paying tokens.
    function _pull(address token, address from, uint256 amount) private {
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(from, address(this), amount);
        _checkReceived(token, before, amount);
    }

    /// @dev Reverts unless this contract's balance of `token` grew by exactly `amount`.
    function _checkReceived(address token, uint256 before, uint256 amount) private view {
        uint256 balanceAfter = IERC20(token).balanceOf(address(this));
        // A token whose balance shrank on a transfer in counts as having delivered nothing.
        uint256 received = balanceAfter > before ? balanceAfter - before : 0;
        if (received != amount) revert TollgateChannels__TransferAmountMismatch(amount, received);
    }

    /// @dev Calls the token's EIP-3009 `receiveWithAuthorization` (payee = this contract): the v,r,s
    ///      overload for a 65-byte signature from an account without code, else the bytes overload.
    function _receiveWithAuthorization(
        address token,
        address from,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) private {
        if (signature.length == 65 && from.code.length == 0) {
            (uint8 v, bytes32 r, bytes32 s) = _splitSignature(signature);
            IERC3009(token)
                .receiveWithAuthorization(from, address(this), value, validAfter, validBefore, nonce, v, r, s);
        } else {
            IERC3009(token)
                .receiveWithAuthorization(from, address(this), value, validAfter, validBefore, nonce, signature);
        }
    }

    /// @dev Sends ETH (token == address(0)) or an ERC-20.
    function _send(address token, address to, uint256 amount) private {
        if (token == address(0)) {
            Address.sendValue(payable(to), amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }
}

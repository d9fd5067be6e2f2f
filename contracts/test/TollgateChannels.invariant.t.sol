// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "./utils/Test.sol";
import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// @title ChannelsHandler
/// @notice Drives random sequences of deposits, claims (valid, replayed, malleable), withdrawals,
///         refunds, sweeps and time jumps against four channels of one receiver, and keeps a
///         ghost model of what must hold.
contract ChannelsHandler is Test {
    uint256 internal constant N = 4;
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    TollgateChannels public channels;
    TollgateChannels public mirror; // same configs on another contract instance
    TestUSDC public usdc;
    address public receiver;
    uint256 internal receiverKey;

    TollgateChannels.ChannelConfig[N] internal configs;
    bytes32[N] public ids;
    uint256[N] internal signerKeys;

    // Ghost model.
    uint256[N] public deposited;
    uint256[N] public withdrawn;
    uint256[N] public refunded;
    uint128[N] public highestSigned;
    uint128[N] internal lastClaimed;
    uint256 public swept;
    bool public claimedDecreased;
    bool public replayAccepted;
    bool public malleableAccepted;
    bool public exitMismatch;
    uint256 public exits;

    constructor(TollgateChannels channels_, TestUSDC usdc_) {
        channels = channels_;
        usdc = usdc_;
        mirror = new TollgateChannels();
        receiverKey = 0xB0B;
        receiver = vm.addr(receiverKey);
        for (uint256 i; i < N; ++i) {
            uint256 payerKey = 0xC0DE00 + i;
            TollgateChannels.ChannelConfig memory c = TollgateChannels.ChannelConfig({
                payer: vm.addr(payerKey),
                payerAuthorizer: address(0),
                receiver: receiver,
                receiverAuthorizer: address(0),
                token: address(usdc_),
                withdrawDelay: 1 hours,
                salt: bytes32(i)
            });
            signerKeys[i] = payerKey;
            if (i == N - 1) {
                // One channel signs vouchers with a separate authorizer key.
                signerKeys[i] = 0xA07400;
                c.payerAuthorizer = vm.addr(signerKeys[i]);
            }
            configs[i] = c;
            ids[i] = channels_.getChannelId(c);
        }
        usdc_.approve(address(channels_), type(uint256).max);
        usdc_.approve(address(mirror), type(uint256).max);
    }

    // ------------------------------------------------------------------ views for invariants

    function config(uint256 i) external view returns (TollgateChannels.ChannelConfig memory) {
        return configs[i];
    }

    function count() external pure returns (uint256) {
        return N;
    }

    // ------------------------------------------------------------------ helpers

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _voucher(TollgateChannels target, uint256 i, uint128 ceiling) internal returns (bytes memory) {
        if (target == channels && ceiling > highestSigned[i]) highestSigned[i] = ceiling;
        return _sign(signerKeys[i], target.getVoucherDigest(target.getChannelId(configs[i]), ceiling));
    }

    function _items(uint256 i, uint128 ceiling, uint128 total, bytes memory sig)
        internal
        view
        returns (TollgateChannels.ClaimItem[] memory items)
    {
        TollgateChannels.ChannelConfig memory c = configs[i];
        items = new TollgateChannels.ClaimItem[](1);
        items[0] = TollgateChannels.ClaimItem({
            payer: c.payer,
            payerAuthorizer: c.payerAuthorizer,
            withdrawDelay: c.withdrawDelay,
            salt: c.salt,
            maxClaimableAmount: ceiling,
            totalClaimed: total,
            signature: sig
        });
    }

    function _group() internal view returns (TollgateChannels.ClaimGroup memory) {
        return TollgateChannels.ClaimGroup({receiver: receiver, receiverAuthorizer: address(0), token: address(usdc)});
    }

    /// @dev After every action: no channel's claimed total went down.
    function _checkMonotonic() internal {
        for (uint256 i; i < N; ++i) {
            (, uint128 claimed) = channels.channels(ids[i]);
            if (claimed < lastClaimed[i]) claimedDecreased = true;
            lastClaimed[i] = claimed;
        }
    }

    // ------------------------------------------------------------------ actions

    function deposit(uint256 i, uint128 amount) external {
        i = i % N;
        amount = uint128(bound(amount, 1, 1e15));
        usdc.mint(address(this), amount);
        channels.deposit(configs[i], amount);
        deposited[i] += amount;
        usdc.mint(address(this), amount);
        mirror.deposit(configs[i], amount);
        _checkMonotonic();
    }

    function claim(uint256 i, uint128 ceiling, uint128 total) external {
        i = i % N;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        ceiling = uint128(bound(ceiling, claimed, uint256(bal) + 1e12));
        total = uint128(bound(total, 0, uint256(ceiling) + 10));
        bytes memory sig = _voucher(channels, i, ceiling);
        vm.prank(receiver);
        channels.claim(_group(), _items(i, ceiling, total, sig));
        _checkMonotonic();
    }

    function claimPacked(uint256 i, uint128 ceiling, uint128 total) external {
        i = i % N;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        ceiling = uint128(bound(ceiling, claimed, uint256(bal) + 1e12));
        total = uint128(bound(total, 0, ceiling));
        bytes memory sig = _voucher(channels, i, ceiling);
        TollgateChannels.ClaimItem[] memory items = _items(i, ceiling, total, sig);
        // One record, flags = payer authorizer present (bit 0) and salt present (bit 1) as needed,
        // 65-byte signature in the explicit-length form (bit 2).
        TollgateChannels.ClaimItem memory it = items[0];
        // Amounts in the full 16-byte width (flags bits 3-6 = 15), delay in 3 bytes.
        uint8 flags = 4 | (15 << 3);
        bytes memory rec;
        if (it.payerAuthorizer != address(0)) flags |= 1;
        if (it.salt != bytes32(0)) flags |= 2;
        rec = abi.encodePacked(flags, it.payer);
        if (flags & 1 != 0) rec = bytes.concat(rec, abi.encodePacked(it.payerAuthorizer));
        rec = bytes.concat(rec, abi.encodePacked(uint24(it.withdrawDelay)));
        if (flags & 2 != 0) rec = bytes.concat(rec, abi.encodePacked(it.salt));
        rec = bytes.concat(rec, abi.encodePacked(it.maxClaimableAmount, it.totalClaimed, uint16(65), sig));
        vm.prank(receiver);
        channels.claimPacked(_group(), rec);
        _checkMonotonic();
    }

    /// @dev A voucher for channel i (or for the mirror contract) presented for channel j.
    function claimReplay(uint256 i, uint256 j, uint128 ceiling, bool fromMirror) external {
        i = i % N;
        j = j % N;
        ceiling = uint128(bound(ceiling, 1, 1e15));
        bytes memory sig = fromMirror ? _voucher(mirror, i, ceiling) : _voucher(channels, i, ceiling);
        if (!fromMirror && i == j) return;
        vm.prank(receiver);
        uint256 got = channels.claim(_group(), _items(j, ceiling, ceiling, sig));
        if (got != 0) replayAccepted = true;
        _checkMonotonic();
    }

    /// @dev A voucher signed on another chain (same contract address and config there) must
    ///      never claim here.
    function claimOtherChain(uint256 i, uint64 otherChainId, uint128 ceiling) external {
        i = i % N;
        uint256 home = block.chainid;
        otherChainId = uint64(bound(otherChainId, 1, type(uint64).max));
        if (otherChainId == home) return;
        ceiling = uint128(bound(ceiling, 1, 1e15));
        vm.chainId(otherChainId);
        bytes32 foreignId = channels.getChannelId(configs[i]);
        bytes memory sig = _sign(signerKeys[i], channels.getVoucherDigest(foreignId, ceiling));
        vm.chainId(home);
        vm.prank(receiver);
        uint256 got = channels.claim(_group(), _items(i, ceiling, ceiling, sig));
        if (got != 0) replayAccepted = true;
        _checkMonotonic();
    }

    /// @dev The malleable (high-S) twin of a valid voucher must never be accepted.
    function claimMalleable(uint256 i, uint128 ceiling) external {
        i = i % N;
        ceiling = uint128(bound(ceiling, 1, 1e15));
        bytes memory sig = _voucher(channels, i, ceiling);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        bytes memory twin = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.prank(receiver);
        uint256 got = channels.claim(_group(), _items(i, ceiling, ceiling, twin));
        if (got != 0) malleableAccepted = true;
        _checkMonotonic();
    }

    function initiateWithdraw(uint256 i, uint128 amount) external {
        i = i % N;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        uint128 available = bal - claimed;
        if (available == 0) return;
        amount = uint128(bound(amount, 1, available));
        vm.prank(configs[i].payer);
        channels.initiateWithdraw(configs[i], amount);
        _checkMonotonic();
    }

    function finalizeWithdraw(uint256 i) external {
        i = i % N;
        (uint128 pending, uint40 at) = channels.pendingWithdrawals(ids[i]);
        if (at == 0 || block.timestamp < uint256(at) + configs[i].withdrawDelay) return;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        uint128 available = bal - claimed;
        uint128 expected = pending < available ? pending : available;
        address p = configs[i].payer;
        uint256 before = usdc.balanceOf(p);
        vm.prank(p);
        uint128 paid = channels.finalizeWithdraw(configs[i]);
        if (paid != expected || usdc.balanceOf(p) - before != expected) exitMismatch = true;
        withdrawn[i] += paid;
        _checkMonotonic();
    }

    /// @dev The payer's whole exit: withdraw everything unclaimed, wait, finalize; it must get
    ///      exactly deposits - withdrawals - refunds - claims.
    function exit(uint256 i) external {
        i = i % N;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        uint128 available = bal - claimed;
        if (available == 0) return;
        address p = configs[i].payer;
        vm.prank(p);
        channels.initiateWithdraw(configs[i], available);
        vm.warp(block.timestamp + configs[i].withdrawDelay);
        uint256 before = usdc.balanceOf(p);
        vm.prank(p);
        uint128 paid = channels.finalizeWithdraw(configs[i]);
        uint256 expected = deposited[i] - withdrawn[i] - refunded[i] - claimed;
        if (paid != expected || usdc.balanceOf(p) - before != expected) exitMismatch = true;
        withdrawn[i] += paid;
        ++exits;
        _checkMonotonic();
    }

    function refund(uint256 i, uint128 amount, bool signed) external {
        i = i % N;
        (uint128 bal, uint128 claimed) = channels.channels(ids[i]);
        amount = uint128(bound(amount, 0, uint256(bal - claimed) + 10));
        uint128 got;
        if (signed) {
            uint256 nonce = channels.refundNonce(ids[i]);
            bytes memory sig = _sign(receiverKey, channels.getRefundDigest(ids[i], nonce, amount));
            got = channels.refundWithSignature(configs[i], amount, nonce, sig);
        } else {
            vm.prank(receiver);
            got = channels.refund(configs[i], amount);
        }
        refunded[i] += got;
        _checkMonotonic();
    }

    function sweep() external {
        if (channels.unswept(receiver, address(usdc)) == 0) return;
        swept += channels.sweep(receiver, address(usdc));
        _checkMonotonic();
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 1, 2 hours));
    }
}

/// @title TollgateChannelsInvariantTest
/// @notice Properties that must hold after any sequence of handler actions.
contract TollgateChannelsInvariantTest is TollgateTestBase {
    ChannelsHandler internal handler;

    function setUp() public {
        _setUpBase();
        handler = new ChannelsHandler(channels, usdc);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](12);
        selectors[0] = ChannelsHandler.deposit.selector;
        selectors[1] = ChannelsHandler.claim.selector;
        selectors[2] = ChannelsHandler.claimPacked.selector;
        selectors[3] = ChannelsHandler.claimReplay.selector;
        selectors[4] = ChannelsHandler.claimMalleable.selector;
        selectors[5] = ChannelsHandler.initiateWithdraw.selector;
        selectors[6] = ChannelsHandler.finalizeWithdraw.selector;
        selectors[7] = ChannelsHandler.exit.selector;
        selectors[8] = ChannelsHandler.refund.selector;
        selectors[9] = ChannelsHandler.sweep.selector;
        selectors[10] = ChannelsHandler.warp.selector;
        selectors[11] = ChannelsHandler.claimOtherChain.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// @notice Claimed total <= balance <= deposits, and <= the highest ceiling the payer signed.
    function invariant_claimedWithinDepositsAndCeiling() public view {
        for (uint256 i; i < handler.count(); ++i) {
            (uint128 bal, uint128 claimed) = channels.channels(handler.ids(i));
            assertLe(claimed, bal, "claimed <= balance");
            assertLe(bal, handler.deposited(i), "balance <= deposits");
            assertLe(claimed, handler.highestSigned(i), "claimed <= highest signed ceiling");
        }
    }

    /// @notice balance = deposits - withdrawals - refunds, channel by channel.
    function invariant_balanceAccounting() public view {
        for (uint256 i; i < handler.count(); ++i) {
            (uint128 bal,) = channels.channels(handler.ids(i));
            assertEq(bal, handler.deposited(i) - handler.withdrawn(i) - handler.refunded(i), "balance accounting");
        }
    }

    /// @notice Claimed totals never decrease.
    function invariant_claimsNeverDecrease() public view {
        assertFalse(handler.claimedDecreased(), "a claimed total decreased");
    }

    /// @notice After the delay the payer recovers exactly deposits minus claims (and minus what it
    ///         already got back).
    function invariant_exitIsExact() public view {
        assertFalse(handler.exitMismatch(), "exit paid a different amount");
    }

    /// @notice A voucher for another channel, another contract or another chain never claims
    ///         anything.
    function invariant_noCrossChannelOrContractReplay() public view {
        assertFalse(handler.replayAccepted(), "replayed voucher accepted");
    }

    /// @notice High-S twins of valid vouchers are rejected.
    function invariant_noMalleableSignature() public view {
        assertFalse(handler.malleableAccepted(), "high-S voucher accepted");
    }

    /// @notice The contract holds exactly the unclaimed remainder of every channel plus what the
    ///         receiver claimed and did not sweep yet; receiver totals match the channels.
    function invariant_solvency() public view {
        uint256 owedToPayers;
        uint256 claimedSum;
        for (uint256 i; i < handler.count(); ++i) {
            (uint128 bal, uint128 claimed) = channels.channels(handler.ids(i));
            owedToPayers += bal - claimed;
            claimedSum += claimed;
        }
        address r = handler.receiver();
        uint256 unswept = channels.unswept(r, address(usdc));
        assertEq(usdc.balanceOf(address(channels)), owedToPayers + unswept, "holdings == liabilities");
        (uint128 totalClaimed, uint128 totalSwept) = channels.receivers(r, address(usdc));
        assertEq(totalClaimed, claimedSum, "receiver claimed == sum of channel claims");
        assertEq(totalSwept, handler.swept(), "receiver swept == swept transfers");
        assertEq(usdc.balanceOf(r), handler.swept(), "receiver got every sweep");
    }
}

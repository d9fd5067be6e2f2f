// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";

/// @title TollgateChannelsFuzzTest
/// @notice Fuzz tests over every amount and signature input of TollgateChannels.
contract TollgateChannelsFuzzTest is TollgateTestBase {
    TollgateChannels.ChannelConfig internal cfg;

    function setUp() public {
        _setUpBase();
        cfg = _config(address(usdc), bytes32(0));
    }

    function _claim(TollgateChannels.ChannelConfig memory c, uint128 ceiling, uint128 total, bytes memory sig)
        internal
        returns (uint256)
    {
        vm.prank(c.receiver);
        return channels.claim(_group(c), _items1(_item(c, ceiling, total, sig)));
    }

    // ------------------------------------------------------------------ amounts

    function testFuzz_deposit_topUps(uint128 a, uint128 b) public {
        a = uint128(bound(a, 1, type(uint128).max / 2));
        b = uint128(bound(b, 1, type(uint128).max / 2));
        bytes32 id = _depositUsdc(cfg, a);
        _depositUsdc(cfg, b);
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(bal, uint256(a) + b, "balance = sum of deposits");
        assertEq(claimed, 0, "nothing claimed");
        assertEq(usdc.balanceOf(address(channels)), uint256(a) + b, "tokens held");
    }

    function testFuzz_deposit_eth(uint128 a) public {
        a = uint128(bound(a, 1, 1e30));
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        bytes32 id = _depositEth(c, a);
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, a, "balance");
        assertEq(address(channels).balance, a, "ETH held");
    }

    function testFuzz_claim_amounts(uint128 deposit, uint128 ceiling, uint128 total) public {
        deposit = uint128(bound(deposit, 1, type(uint128).max));
        bytes32 id = _depositUsdc(cfg, deposit);
        uint256 got = _claim(cfg, ceiling, total, _signVoucher(PAYER_KEY, id, ceiling));
        (uint128 bal, uint128 claimed) = channels.channels(id);
        uint256 expected = total > ceiling ? 0 : (total < deposit ? total : deposit);
        assertEq(got, expected, "claimed amount");
        assertEq(claimed, expected, "stored total");
        assertLe(claimed, ceiling, "never above the signed ceiling");
        assertLe(claimed, bal, "never above the balance");
        assertEq(channels.unswept(receiver, address(usdc)), expected, "credited to the receiver");
    }

    function testFuzz_claim_sequence_monotonic(uint128 deposit, uint128[6] memory totals) public {
        deposit = uint128(bound(deposit, 1, type(uint128).max));
        bytes32 id = _depositUsdc(cfg, deposit);
        uint128 prev;
        uint256 credited;
        for (uint256 i; i < totals.length; ++i) {
            uint128 t = totals[i];
            credited += _claim(cfg, t, t, _signVoucher(PAYER_KEY, id, t));
            (, uint128 claimed) = channels.channels(id);
            assertGe(claimed, prev, "claimed total never decreases");
            uint128 capped = t < deposit ? t : deposit;
            assertEq(claimed, capped > prev ? capped : prev, "max of previous and new (capped) total");
            prev = claimed;
        }
        assertEq(credited, prev, "credited deltas sum to the final total");
    }

    function testFuzz_withdraw_recoversDepositsMinusClaims(
        uint128 deposit,
        uint128 claimTotal,
        uint128 withdrawAmt,
        uint128 lateClaim
    ) public {
        deposit = uint128(bound(deposit, 1, type(uint128).max));
        claimTotal = uint128(bound(claimTotal, 0, deposit));
        bytes32 id = _depositUsdc(cfg, deposit);
        if (claimTotal != 0) _claim(cfg, claimTotal, claimTotal, _signVoucher(PAYER_KEY, id, claimTotal));
        uint128 available = deposit - claimTotal;
        vm.assume(available != 0);
        withdrawAmt = uint128(bound(withdrawAmt, 1, available));
        vm.prank(payer);
        channels.initiateWithdraw(cfg, withdrawAmt);
        // The receiver may claim more during the delay.
        lateClaim = uint128(bound(lateClaim, claimTotal, deposit));
        if (lateClaim > claimTotal) _claim(cfg, lateClaim, lateClaim, _signVoucher(PAYER_KEY, id, lateClaim));
        vm.warp(block.timestamp + DELAY);
        vm.prank(payer);
        uint128 paid = channels.finalizeWithdraw(cfg);
        uint128 stillAvailable = deposit - lateClaim;
        assertEq(paid, withdrawAmt < stillAvailable ? withdrawAmt : stillAvailable, "min(requested, unclaimed)");
        assertEq(usdc.balanceOf(payer), paid, "payer got it");
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(bal, deposit - paid, "balance");
        assertEq(claimed, lateClaim, "claims preserved");
        // Whatever the split, the contract holds exactly the unclaimed remainder plus unswept claims.
        assertEq(
            usdc.balanceOf(address(channels)),
            uint256(bal - claimed) + channels.unswept(receiver, address(usdc)),
            "solvent"
        );
    }

    function testFuzz_refund_capsAndReducesPending(uint128 deposit, uint128 claimTotal, uint128 pending, uint128 amount)
        public
    {
        deposit = uint128(bound(deposit, 2, type(uint128).max));
        claimTotal = uint128(bound(claimTotal, 0, deposit - 1));
        bytes32 id = _depositUsdc(cfg, deposit);
        if (claimTotal != 0) _claim(cfg, claimTotal, claimTotal, _signVoucher(PAYER_KEY, id, claimTotal));
        uint128 available = deposit - claimTotal;
        pending = uint128(bound(pending, 1, available));
        vm.prank(payer);
        channels.initiateWithdraw(cfg, pending);
        vm.prank(receiver);
        uint128 refunded = channels.refund(cfg, amount);
        assertEq(refunded, amount < available ? amount : available, "capped at unclaimed");
        (uint128 pa,) = channels.pendingWithdrawals(id);
        assertEq(pa, refunded >= pending ? 0 : pending - refunded, "pending reduced");
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, deposit - refunded, "balance");
        assertEq(usdc.balanceOf(payer), refunded, "paid");
        assertEq(channels.refundNonce(id), 1, "nonce advanced");
    }

    function testFuzz_refundWithSignature_nonceAndAmountBound(uint128 amount, uint256 nonce, uint128 otherAmount)
        public
    {
        bytes32 id = _depositUsdc(cfg, 1_000);
        bytes memory sig = _sign(RECEIVER_AUTH_KEY, channels.getRefundDigest(id, 0, amount));
        if (nonce != 0) {
            vm.expectRevert(
                abi.encodeWithSelector(TollgateChannels.TollgateChannels__InvalidRefundNonce.selector, 0, nonce)
            );
            channels.refundWithSignature(cfg, amount, nonce, sig);
        }
        if (otherAmount != amount) {
            vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
            channels.refundWithSignature(cfg, otherAmount, 0, sig);
        }
        uint128 refunded = channels.refundWithSignature(cfg, amount, 0, sig);
        assertEq(refunded, amount < 1_000 ? amount : 1_000, "capped");
    }

    // ------------------------------------------------------------------ signatures

    function testFuzz_claim_onlyChannelSignerKey(uint256 key) public {
        key = bound(key, 1, SECP256K1_N - 1);
        bytes32 id = _depositUsdc(cfg, 1_000);
        uint256 got = _claim(cfg, 500, 500, _signVoucher(key, id, 500));
        assertEq(got, key == PAYER_KEY ? 500 : 0, "only the payer's key");
    }

    function testFuzz_claim_randomSignatureBytes(bytes memory sig) public {
        bytes32 id = _depositUsdc(cfg, 1_000);
        assertEq(_claim(cfg, 500, 500, sig), 0, "random bytes never verify");
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "nothing claimed");
    }

    function testFuzz_claim_bitFlipRejected(uint256 index, uint8 bit) public {
        bytes32 id = _depositUsdc(cfg, 1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 500);
        index = bound(index, 0, 64);
        sig[index] = sig[index] ^ bytes1(uint8(1) << (bit % 8));
        assertEq(_claim(cfg, 500, 500, sig), 0, "a flipped bit never verifies");
    }

    function testFuzz_claim_highSRejected(uint256 key, uint128 ceiling) public {
        key = bound(key, 1, SECP256K1_N - 1);
        ceiling = uint128(bound(ceiling, 1, 1_000));
        TollgateChannels.ChannelConfig memory c = cfg;
        c.payer = vm.addr(key);
        bytes32 id = _depositUsdc(c, 1_000);
        bytes memory sig = _signVoucher(key, id, ceiling);
        assertEq(_claim(c, ceiling, ceiling, _highS(sig)), 0, "malleable twin rejected");
        assertEq(_claim(c, ceiling, ceiling, sig), ceiling, "canonical accepted");
    }

    function testFuzz_claim_crossChannelReplay(bytes32 saltA, bytes32 saltB, uint128 ceiling) public {
        vm.assume(saltA != saltB);
        ceiling = uint128(bound(ceiling, 1, 1_000));
        TollgateChannels.ChannelConfig memory a = _config(address(usdc), saltA);
        TollgateChannels.ChannelConfig memory b = _config(address(usdc), saltB);
        bytes32 idA = _depositUsdc(a, 1_000);
        _depositUsdc(b, 1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, idA, ceiling);
        assertEq(_claim(b, ceiling, ceiling, sig), 0, "voucher of A useless on B");
        assertEq(_claim(a, ceiling, ceiling, sig), ceiling, "valid on A");
    }

    function testFuzz_claim_crossChainReplay(uint64 chainId, uint128 ceiling) public {
        vm.assume(chainId != block.chainid && chainId != 0);
        ceiling = uint128(bound(ceiling, 1, 1_000));
        bytes32 id = _depositUsdc(cfg, 1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, ceiling);
        uint256 home = block.chainid;
        vm.chainId(chainId);
        assertEq(_claim(cfg, ceiling, ceiling, sig), 0, "useless on another chain");
        vm.chainId(home);
        assertEq(_claim(cfg, ceiling, ceiling, sig), ceiling, "valid at home");
    }

    function testFuzz_claimWithSignature_onlyReceiverSide(uint256 key) public {
        key = bound(key, 1, SECP256K1_N - 1);
        bytes32 id = _depositUsdc(cfg, 1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 500, 500, _signVoucher(PAYER_KEY, id, 500)));
        bytes memory auth = _sign(key, channels.getClaimBatchDigest(_group(cfg), items));
        if (key == RECEIVER_KEY || key == RECEIVER_AUTH_KEY) {
            assertEq(channels.claimWithSignature(_group(cfg), items, auth), 500, "receiver side accepted");
        } else {
            vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
            channels.claimWithSignature(_group(cfg), items, auth);
        }
    }

    /// @dev Random bytes as the receiver side's batch signature: the relayed claim reverts and
    ///      nothing is claimed.
    function testFuzz_claimWithSignature_randomSignatureBytes(bytes memory auth) public {
        bytes32 id = _depositUsdc(cfg, 1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 500, 500, _signVoucher(PAYER_KEY, id, 500)));
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.claimWithSignature(_group(cfg), items, auth);
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "nothing claimed");
    }

    /// @dev Random bytes as a refund signature: the refund reverts and the payer gets nothing.
    function testFuzz_refundWithSignature_randomSignatureBytes(bytes memory sig, uint128 amount) public {
        bytes32 id = _depositUsdc(cfg, 1_000);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.refundWithSignature(cfg, amount, 0, sig);
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, 1_000, "balance kept");
        assertEq(channels.refundNonce(id), 0, "nonce kept");
    }

    /// @dev Random bytes as a packed voucher signature (explicit-length form): skipped, nothing
    ///      claimed, the batch does not revert.
    function testFuzz_claimPacked_randomSignatureBytes(bytes memory sig) public {
        vm.assume(sig.length <= 0xffff);
        bytes32 id = _depositUsdc(cfg, 1_000);
        TollgateChannels.ClaimItem memory it = _item(cfg, 500, 500, sig);
        bytes memory rec = abi.encodePacked(uint8(4 | (1 << 3)), it.payer, uint24(it.withdrawDelay));
        rec = bytes.concat(rec, abi.encodePacked(uint16(500), uint16(500), uint16(sig.length), sig));
        vm.prank(receiver);
        assertEq(channels.claimPacked(_group(cfg), rec), 0, "random bytes never verify");
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "nothing claimed");
    }

    /// @dev Random bytes as the payer's PermitDeposit consent: the deposit reverts before the
    ///      permit, and no token moves.
    function testFuzz_depositWithPermit_randomConsentBytes(bytes memory consent) public {
        usdc.mint(payer, 1_000);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory p = _sign(PAYER_KEY, _permitDigest(payer, address(channels), 1_000, 0, deadline));
        vm.prank(relayer);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.depositWithPermit(cfg, 1_000, deadline, p, consent);
        assertEq(usdc.balanceOf(payer), 1_000, "payer keeps its tokens");
        assertEq(usdc.nonces(payer), 0, "permit not used");
    }

    /// @dev Random bytes as the EIP-3009 authorization signature: the token refuses it, the
    ///      deposit reverts, and no token moves.
    function testFuzz_depositWithAuthorization_randomSignatureBytes(bytes memory sig) public {
        usdc.mint(payer, 1_000);
        vm.prank(relayer);
        vm.expectRevert();
        channels.depositWithAuthorization(cfg, 1_000, 0, block.timestamp + 1 hours, 1, sig);
        assertEq(usdc.balanceOf(payer), 1_000, "payer keeps its tokens");
        (uint128 bal,) = channels.channels(channels.getChannelId(cfg));
        assertEq(bal, 0, "no deposit");
    }

    // ------------------------------------------------------------------ encodings

    /// @dev Differential: claimPacked and claim give the same state for the same items.
    function testFuzz_claimPacked_equalsClaim(
        uint128[3] memory deposits,
        uint128[3] memory totals,
        bool[3] memory useAuth,
        bytes32[3] memory salts
    ) public {
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](3);
        bytes32[3] memory ids;
        for (uint256 i; i < 3; ++i) {
            TollgateChannels.ChannelConfig memory c = _config(address(usdc), salts[i]);
            if (useAuth[i]) c.payerAuthorizer = payerAuth;
            deposits[i] = uint128(bound(deposits[i], 1, type(uint64).max));
            ids[i] = _depositUsdc(c, deposits[i]);
            items[i] = _item(
                c, totals[i], totals[i], _signVoucher(useAuth[i] ? PAYER_AUTH_KEY : PAYER_KEY, ids[i], totals[i])
            );
        }
        uint256 snap = _snapshotTotals(ids);
        vm.prank(receiver);
        uint256 viaAbi = channels.claim(_group(cfg), items);
        uint256 afterAbi = _snapshotTotals(ids);
        // Replay the same batch through a second contract instance in packed form.
        TollgateChannels second = new TollgateChannels();
        bytes32[3] memory ids2;
        for (uint256 i; i < 3; ++i) {
            TollgateChannels.ChannelConfig memory c = _config(address(usdc), salts[i]);
            if (useAuth[i]) c.payerAuthorizer = payerAuth;
            usdc.mint(address(this), deposits[i]);
            usdc.approve(address(second), deposits[i]);
            ids2[i] = second.deposit(c, deposits[i]);
            bytes32 d = second.getVoucherDigest(ids2[i], totals[i]);
            items[i].signature = _sign(useAuth[i] ? PAYER_AUTH_KEY : PAYER_KEY, d);
        }
        vm.prank(receiver);
        uint256 viaPacked = second.claimPacked(_group(cfg), _pack(items));
        assertEq(viaPacked, viaAbi, "same amount");
        for (uint256 i; i < 3; ++i) {
            (, uint128 a) = channels.channels(ids[i]);
            (, uint128 b) = second.channels(ids2[i]);
            assertEq(a, b, "same per-channel totals");
        }
        assertTrue(afterAbi >= snap, "totals moved up");
    }

    function _snapshotTotals(bytes32[3] memory ids) internal view returns (uint256 sum) {
        for (uint256 i; i < 3; ++i) {
            (, uint128 c) = channels.channels(ids[i]);
            sum += c;
        }
    }

    function testFuzz_claimPacked_garbageNeverClaims(bytes memory data) public {
        bytes32 id = _depositUsdc(cfg, 1_000);
        vm.prank(receiver);
        try channels.claimPacked(_group(cfg), data) returns (uint256 amount) {
            assertEq(amount, 0, "garbage claims nothing");
        } catch (bytes memory err) {
            bytes4 sel = bytes4(err);
            assertTrue(
                sel == TollgateChannels.TollgateChannels__MalformedClaimData.selector
                    || sel == TollgateChannels.TollgateChannels__EmptyBatch.selector,
                "only decoding errors"
            );
        }
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "channel untouched");
    }

    // ------------------------------------------------------------------ gasless deposits

    function testFuzz_depositWithAuthorization(uint128 amount, uint256 salt, uint256 validFor) public {
        amount = uint128(bound(amount, 1, type(uint128).max));
        validFor = bound(validFor, 1, 365 days);
        usdc.mint(payer, amount);
        bytes32 nonce = channels.depositAuthorizationNonce(channels.getChannelId(cfg), salt);
        uint256 vb = block.timestamp + validFor;
        bytes memory sig = _sign(PAYER_KEY, _receiveAuthDigest(payer, address(channels), amount, 0, vb, nonce));
        vm.prank(relayer);
        bytes32 id = channels.depositWithAuthorization(cfg, amount, 0, vb, salt, sig);
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, amount, "credited exactly");
    }

    function testFuzz_depositWithPermit(uint128 amount, uint256 deadlineIn) public {
        amount = uint128(bound(amount, 1, type(uint128).max));
        uint256 deadline = block.timestamp + bound(deadlineIn, 0, 365 days);
        usdc.mint(payer, amount);
        uint256 n = usdc.nonces(payer);
        bytes memory p = _sign(PAYER_KEY, _permitDigest(payer, address(channels), amount, n, deadline));
        bytes memory c = _sign(PAYER_KEY, channels.getPermitDepositDigest(channels.getChannelId(cfg), amount, n));
        vm.prank(relayer);
        bytes32 id = channels.depositWithPermit(cfg, amount, deadline, p, c);
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, amount, "credited exactly");
    }
}

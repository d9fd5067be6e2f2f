// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {Vm} from "./utils/Vm.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";
import {TestUSDC} from "../src/TestUSDC.sol";
import {TestMultisigWallet} from "../src/test-helpers/TestMultisigWallet.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {
    MockToken,
    ReturnsFalseToken,
    NoReturnToken,
    FeeOnTransferToken,
    RevertingToken,
    LyingToken,
    ReentrantToken
} from "./mocks/MockTokens.sol";

/// @title TollgateChannelsTest
/// @notice Unit tests: every external function and every custom error of TollgateChannels.
contract TollgateChannelsTest is TollgateTestBase {
    TollgateChannels.ChannelConfig internal cfg;
    bytes32 internal id;

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed receiver,
        TollgateChannels.ChannelConfig config
    );
    event Deposited(bytes32 indexed channelId, address indexed from, uint128 amount, uint128 balance);
    event Claimed(
        address indexed receiver, address indexed token, address indexed caller, uint256 amount, bytes claims
    );
    event ClaimSkipped(bytes32 indexed channelId, uint8 reason, uint128 requestedTotal, uint128 currentTotal);
    event Swept(address indexed receiver, address indexed token, address to, uint256 amount);
    event WithdrawInitiated(bytes32 indexed channelId, address indexed payer, uint128 amount, uint40 finalizableAt);
    event Withdrawn(bytes32 indexed channelId, address indexed payer, uint128 amount, uint128 balance);
    event Refunded(
        bytes32 indexed channelId,
        address indexed payer,
        uint128 amount,
        uint256 nonce,
        uint128 balance,
        uint128 pendingWithdrawal
    );

    function setUp() public {
        _setUpBase();
        cfg = _config(address(usdc), bytes32(0));
    }

    // ================================================================== helpers

    function _fundDefault(uint128 amount) internal returns (bytes32) {
        id = _depositUsdc(cfg, amount);
        return id;
    }

    function _claimOne(TollgateChannels.ChannelConfig memory c, uint128 ceiling, uint128 total, bytes memory sig)
        internal
        returns (uint256)
    {
        vm.prank(c.receiver);
        return channels.claim(_group(c), _items1(_item(c, ceiling, total, sig)));
    }

    function _expectSkip(bytes32 channelId, uint8 reason, uint128 requested, uint128 current) internal {
        vm.expectEmit(true, false, false, true, address(channels));
        emit ClaimSkipped(channelId, reason, requested, current);
    }

    function _balanceOf(bytes32 channelId) internal view returns (uint128 b, uint128 c) {
        return channels.channels(channelId);
    }

    // ================================================================== ids, domain, typehashes

    function test_typehashes_matchTypeStrings() public view {
        assertEq(
            channels.CHANNEL_CONFIG_TYPEHASH(),
            keccak256(
                "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
            ),
            "ChannelConfig"
        );
        assertEq(
            channels.VOUCHER_TYPEHASH(), keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)"), "Voucher"
        );
        assertEq(
            channels.REFUND_TYPEHASH(), keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)"), "Refund"
        );
        assertEq(
            channels.CLAIM_ENTRY_TYPEHASH(),
            keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"),
            "ClaimEntry"
        );
        assertEq(
            channels.CLAIM_BATCH_TYPEHASH(),
            keccak256(
                "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
            ),
            "ClaimBatch"
        );
        assertEq(
            channels.PERMIT_DEPOSIT_TYPEHASH(),
            keccak256("PermitDeposit(bytes32 channelId,uint128 amount,uint256 permitNonce)"),
            "PermitDeposit"
        );
    }

    function test_domainSeparator_isEip712OfNameVersionChainContract() public view {
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Tollgate Channels"),
                keccak256("1"),
                block.chainid,
                address(channels)
            )
        );
        assertEq(channels.DOMAIN_SEPARATOR(), expected, "domain separator");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = channels.eip712Domain();
        assertEq(name, "Tollgate Channels", "name");
        assertEq(version, "1", "version");
        assertEq(chainId, block.chainid, "chainId");
        assertEq(verifying, address(channels), "verifyingContract");
    }

    function test_getChannelId_isTypedDataHashOfConfig() public view {
        bytes32 structHash = keccak256(
            abi.encode(
                channels.CHANNEL_CONFIG_TYPEHASH(),
                cfg.payer,
                cfg.payerAuthorizer,
                cfg.receiver,
                cfg.receiverAuthorizer,
                cfg.token,
                cfg.withdrawDelay,
                cfg.salt
            )
        );
        bytes32 expected = keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), structHash));
        assertEq(channels.getChannelId(cfg), expected, "channel id");
    }

    function test_getChannelId_changesWithEveryField() public view {
        bytes32 base = channels.getChannelId(cfg);
        TollgateChannels.ChannelConfig memory c = cfg;
        c.payer = other;
        assertNotEq(channels.getChannelId(c), base, "payer");
        c = cfg;
        c.payerAuthorizer = payerAuth;
        assertNotEq(channels.getChannelId(c), base, "payerAuthorizer");
        c = cfg;
        c.receiver = other;
        assertNotEq(channels.getChannelId(c), base, "receiver");
        c = cfg;
        c.receiverAuthorizer = address(0);
        assertNotEq(channels.getChannelId(c), base, "receiverAuthorizer");
        c = cfg;
        c.token = address(0);
        assertNotEq(channels.getChannelId(c), base, "token");
        c = cfg;
        c.withdrawDelay = DELAY + 1;
        assertNotEq(channels.getChannelId(c), base, "withdrawDelay");
        c = cfg;
        c.salt = bytes32(uint256(1));
        assertNotEq(channels.getChannelId(c), base, "salt");
    }

    function test_digests_matchManualEip712() public view {
        bytes32 ds = channels.DOMAIN_SEPARATOR();
        bytes32 cid = channels.getChannelId(cfg);
        assertEq(
            channels.getVoucherDigest(cid, 42),
            keccak256(
                abi.encodePacked(hex"1901", ds, keccak256(abi.encode(channels.VOUCHER_TYPEHASH(), cid, uint128(42))))
            ),
            "voucher"
        );
        assertEq(
            channels.getRefundDigest(cid, 3, 7),
            keccak256(
                abi.encodePacked(
                    hex"1901", ds, keccak256(abi.encode(channels.REFUND_TYPEHASH(), cid, uint256(3), uint128(7)))
                )
            ),
            "refund"
        );
        assertEq(
            channels.getPermitDepositDigest(cid, 9, 4),
            keccak256(
                abi.encodePacked(
                    hex"1901",
                    ds,
                    keccak256(abi.encode(channels.PERMIT_DEPOSIT_TYPEHASH(), cid, uint128(9), uint256(4)))
                )
            ),
            "permit deposit"
        );
        assertEq(channels.depositAuthorizationNonce(cid, 5), keccak256(abi.encode(cid, uint256(5))), "3009 nonce");
    }

    function test_getClaimBatchDigest_matchesManual() public view {
        TollgateChannels.ChannelConfig memory c2 = cfg;
        c2.salt = bytes32(uint256(2));
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = _item(cfg, 10, 5, "");
        items[1] = _item(c2, 20, 15, "");
        bytes32 e0 =
            keccak256(abi.encode(channels.CLAIM_ENTRY_TYPEHASH(), channels.getChannelId(cfg), uint128(10), uint128(5)));
        bytes32 e1 =
            keccak256(abi.encode(channels.CLAIM_ENTRY_TYPEHASH(), channels.getChannelId(c2), uint128(20), uint128(15)));
        bytes32 structHash = keccak256(abi.encode(channels.CLAIM_BATCH_TYPEHASH(), keccak256(abi.encodePacked(e0, e1))));
        assertEq(
            channels.getClaimBatchDigest(_group(cfg), items),
            keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), structHash)),
            "claim batch digest"
        );
    }

    // ================================================================== deposit

    function test_deposit_token_opensChannelAndPulls() public {
        bytes32 expectedId = channels.getChannelId(cfg);
        usdc.mint(address(this), 1_000);
        usdc.approve(address(channels), 1_000);
        vm.expectEmit(true, true, true, true, address(channels));
        emit ChannelOpened(expectedId, payer, receiver, cfg);
        vm.expectEmit(true, true, false, true, address(channels));
        emit Deposited(expectedId, address(this), 1_000, 1_000);
        bytes32 got = channels.deposit(cfg, 1_000);
        assertEq(got, expectedId, "returned id");
        (uint128 bal, uint128 claimed) = channels.channels(got);
        assertEq(bal, 1_000, "balance");
        assertEq(claimed, 0, "claimed");
        assertEq(usdc.balanceOf(address(channels)), 1_000, "held");
        assertEq(usdc.balanceOf(address(this)), 0, "pulled");
    }

    function test_deposit_topUp_byAnyone_noSecondOpen() public {
        _fundDefault(1_000);
        usdc.mint(other, 500);
        vm.startPrank(other);
        usdc.approve(address(channels), 500);
        vm.recordLogs();
        channels.deposit(cfg, 500);
        vm.stopPrank();
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bytes32 openedSig = keccak256(
            "ChannelOpened(bytes32,address,address,(address,address,address,address,address,uint40,bytes32))"
        );
        for (uint256 i; i < logs.length; ++i) {
            assertTrue(logs[i].topics[0] != openedSig, "no second ChannelOpened");
        }
        (uint128 bal,) = channels.channels(id);
        assertEq(bal, 1_500, "balance after top-up");
    }

    function test_deposit_eth() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        vm.deal(other, 1 ether);
        vm.prank(other);
        bytes32 cid = channels.deposit{value: 1 ether}(c, 1 ether);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1 ether, "balance");
        assertEq(address(channels).balance, 1 ether, "held");
    }

    function test_deposit_revert_invalidPayer() public {
        cfg.payer = address(0);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidPayer.selector);
        channels.deposit(cfg, 1);
    }

    function test_deposit_revert_invalidReceiver() public {
        cfg.receiver = address(0);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidReceiver.selector);
        channels.deposit(cfg, 1);
    }

    function test_deposit_revert_delayOutOfRange() public {
        cfg.withdrawDelay = 15 minutes - 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                TollgateChannels.TollgateChannels__WithdrawDelayOutOfRange.selector, uint40(15 minutes - 1)
            )
        );
        channels.deposit(cfg, 1);
        cfg.withdrawDelay = 30 days + 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                TollgateChannels.TollgateChannels__WithdrawDelayOutOfRange.selector, uint40(30 days + 1)
            )
        );
        channels.deposit(cfg, 1);
        // Both bounds themselves are accepted.
        cfg.withdrawDelay = 15 minutes;
        _depositUsdc(cfg, 1);
        cfg.withdrawDelay = 30 days;
        _depositUsdc(cfg, 1);
    }

    function test_deposit_revert_zeroAmount() public {
        vm.expectRevert(TollgateChannels.TollgateChannels__ZeroAmount.selector);
        channels.deposit(cfg, 0);
    }

    function test_deposit_revert_wrongMsgValue() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        vm.deal(address(this), 10);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__WrongMsgValue.selector, 5, 4));
        channels.deposit{value: 4}(c, 5);
        usdc.mint(address(this), 5);
        usdc.approve(address(channels), 5);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__WrongMsgValue.selector, 0, 1));
        channels.deposit{value: 1}(cfg, 5);
    }

    function test_deposit_revert_balanceOverflow() public {
        MockToken big = new MockToken("BIG");
        TollgateChannels.ChannelConfig memory c = _config(address(big), bytes32(0));
        big.mint(address(this), uint256(type(uint128).max) + 10);
        big.approve(address(channels), type(uint256).max);
        channels.deposit(c, type(uint128).max);
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__BalanceOverflow.selector, type(uint128).max, 1)
        );
        channels.deposit(c, 1);
    }

    function test_deposit_revert_feeOnTransfer() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        TollgateChannels.ChannelConfig memory c = _config(address(fee), bytes32(0));
        fee.mint(address(this), 1_000);
        fee.approve(address(channels), 1_000);
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__TransferAmountMismatch.selector, 1_000, 990)
        );
        channels.deposit(c, 1_000);
    }

    function test_deposit_revert_lyingToken() public {
        LyingToken lie = new LyingToken();
        TollgateChannels.ChannelConfig memory c = _config(address(lie), bytes32(0));
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__TransferAmountMismatch.selector, 1_000, 0)
        );
        channels.deposit(c, 1_000);
    }

    function test_deposit_revert_returnsFalseToken() public {
        ReturnsFalseToken f = new ReturnsFalseToken();
        TollgateChannels.ChannelConfig memory c = _config(address(f), bytes32(0));
        f.mint(address(this), 1_000);
        f.approve(address(channels), 1_000);
        f.setRefuse(true);
        vm.expectRevert(abi.encodeWithSelector(SafeERC20.SafeERC20FailedOperation.selector, address(f)));
        channels.deposit(c, 1_000);
        (uint128 bal,) = channels.channels(channels.getChannelId(c));
        assertEq(bal, 0, "nothing credited");
    }

    function test_deposit_noReturnToken_works() public {
        NoReturnToken t = new NoReturnToken();
        TollgateChannels.ChannelConfig memory c = _config(address(t), bytes32(0));
        t.mint(address(this), 1_000);
        t.approve(address(channels), 1_000);
        bytes32 cid = channels.deposit(c, 1_000);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1_000, "credited");
        assertEq(t.balanceOf(address(channels)), 1_000, "held");
    }

    function test_deposit_revert_revertingTokenBubbles() public {
        RevertingToken t = new RevertingToken();
        TollgateChannels.ChannelConfig memory c = _config(address(t), bytes32(0));
        t.mint(address(this), 1_000);
        t.approve(address(channels), 1_000);
        t.setBroken(true);
        vm.expectRevert(RevertingToken.RevertingToken__Broken.selector);
        channels.deposit(c, 1_000);
    }

    // ================================================================== depositWithAuthorization

    function _authDeposit(TollgateChannels.ChannelConfig memory c, uint256 key, uint128 amount, uint256 salt)
        internal
        view
        returns (bytes memory sig, uint256 validBefore)
    {
        validBefore = block.timestamp + 1 hours;
        bytes32 nonce = channels.depositAuthorizationNonce(channels.getChannelId(c), salt);
        sig = _sign(key, _receiveAuthDigest(c.payer, address(channels), amount, 0, validBefore, nonce));
    }

    function test_depositWithAuthorization_eoa() public {
        usdc.mint(payer, 1_000);
        (bytes memory sig, uint256 vb) = _authDeposit(cfg, PAYER_KEY, 1_000, 7);
        vm.prank(relayer);
        bytes32 cid = channels.depositWithAuthorization(cfg, 1_000, 0, vb, 7, sig);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1_000, "credited");
        assertEq(usdc.balanceOf(payer), 0, "payer debited");
        assertTrue(usdc.authorizationState(payer, channels.depositAuthorizationNonce(cid, 7)), "nonce used");
    }

    function test_depositWithAuthorization_contractWalletPayer() public {
        TestMultisigWallet w = _newWallet();
        TollgateChannels.ChannelConfig memory c = _config(address(usdc), bytes32(0));
        c.payer = address(w);
        usdc.mint(address(w), 1_000);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = channels.depositAuthorizationNonce(channels.getChannelId(c), 1);
        bytes memory sig = _walletSign(_receiveAuthDigest(address(w), address(channels), 1_000, 0, vb, nonce));
        vm.prank(relayer);
        bytes32 cid = channels.depositWithAuthorization(c, 1_000, 0, vb, 1, sig);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1_000, "credited");
    }

    function test_depositWithAuthorization_cannotBeRedirected() public {
        usdc.mint(payer, 1_000);
        (bytes memory sig, uint256 vb) = _authDeposit(cfg, PAYER_KEY, 1_000, 7);
        // A relayer builds its own channel for the same payer (its own key as payer authorizer,
        // itself as receiver) and replays the payer's authorization: the nonce no longer matches.
        TollgateChannels.ChannelConfig memory evil = cfg;
        evil.payerAuthorizer = other;
        evil.receiver = other;
        vm.prank(relayer);
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        channels.depositWithAuthorization(evil, 1_000, 0, vb, 7, sig);
    }

    function test_depositWithAuthorization_revert_replay() public {
        usdc.mint(payer, 2_000);
        (bytes memory sig, uint256 vb) = _authDeposit(cfg, PAYER_KEY, 1_000, 7);
        channels.depositWithAuthorization(cfg, 1_000, 0, vb, 7, sig);
        bytes32 nonce = channels.depositAuthorizationNonce(channels.getChannelId(cfg), 7);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationAlreadyUsed.selector, payer, nonce));
        channels.depositWithAuthorization(cfg, 1_000, 0, vb, 7, sig);
    }

    function test_depositWithAuthorization_revert_native() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        vm.expectRevert(TollgateChannels.TollgateChannels__NativeTokenNotSupported.selector);
        channels.depositWithAuthorization(c, 1, 0, 1, 0, "");
    }

    // ================================================================== depositWithPermit

    function _permitDeposit(TollgateChannels.ChannelConfig memory c, uint128 amount)
        internal
        view
        returns (bytes memory permitSig, bytes memory consent, uint256 deadline)
    {
        deadline = block.timestamp + 1 hours;
        uint256 n = usdc.nonces(c.payer);
        permitSig = _sign(PAYER_KEY, _permitDigest(c.payer, address(channels), amount, n, deadline));
        consent = _sign(PAYER_KEY, channels.getPermitDepositDigest(channels.getChannelId(c), amount, n));
    }

    function test_depositWithPermit_eoa() public {
        usdc.mint(payer, 1_000);
        (bytes memory p, bytes memory c, uint256 dl) = _permitDeposit(cfg, 1_000);
        vm.prank(relayer);
        bytes32 cid = channels.depositWithPermit(cfg, 1_000, dl, p, c);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1_000, "credited");
        assertEq(usdc.balanceOf(payer), 0, "payer debited");
        assertEq(usdc.allowance(payer, address(channels)), 0, "allowance consumed");
    }

    function test_depositWithPermit_contractWalletPayer() public {
        TestMultisigWallet w = _newWallet();
        TollgateChannels.ChannelConfig memory c = _config(address(usdc), bytes32(0));
        c.payer = address(w);
        usdc.mint(address(w), 1_000);
        uint256 dl = block.timestamp + 1 hours;
        uint256 n = usdc.nonces(address(w));
        bytes memory permitSig = _walletSign(_permitDigest(address(w), address(channels), 1_000, n, dl));
        bytes memory consent = _walletSign(channels.getPermitDepositDigest(channels.getChannelId(c), 1_000, n));
        bytes32 cid = channels.depositWithPermit(c, 1_000, dl, permitSig, consent);
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 1_000, "credited");
    }

    function test_depositWithPermit_revert_consentForOtherChannel() public {
        usdc.mint(payer, 1_000);
        (bytes memory p, bytes memory c, uint256 dl) = _permitDeposit(cfg, 1_000);
        TollgateChannels.ChannelConfig memory evil = cfg;
        evil.payerAuthorizer = other;
        vm.prank(relayer);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.depositWithPermit(evil, 1_000, dl, p, c);
    }

    function test_depositWithPermit_revert_consentReplay() public {
        usdc.mint(payer, 2_000);
        (bytes memory p, bytes memory c, uint256 dl) = _permitDeposit(cfg, 1_000);
        channels.depositWithPermit(cfg, 1_000, dl, p, c);
        // Even with a fresh allowance, the old consent is for the consumed permit nonce.
        vm.prank(payer);
        usdc.approve(address(channels), 1_000);
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.depositWithPermit(cfg, 1_000, dl, p, c);
    }

    function test_depositWithPermit_revert_consentByOther() public {
        usdc.mint(payer, 1_000);
        (bytes memory p,, uint256 dl) = _permitDeposit(cfg, 1_000);
        bytes memory c = _sign(OTHER_KEY, channels.getPermitDepositDigest(channels.getChannelId(cfg), 1_000, 0));
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.depositWithPermit(cfg, 1_000, dl, p, c);
    }

    function test_depositWithPermit_revert_permitAmountMismatch() public {
        usdc.mint(payer, 2_000);
        (bytes memory p,, uint256 dl) = _permitDeposit(cfg, 1_000);
        bytes memory c = _sign(PAYER_KEY, channels.getPermitDepositDigest(channels.getChannelId(cfg), 2_000, 0));
        // Consent for 2,000 but the permit was signed for 1,000: the token rejects the permit.
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        channels.depositWithPermit(cfg, 2_000, dl, p, c);
    }

    function test_depositWithPermit_revert_native() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        vm.expectRevert(TollgateChannels.TollgateChannels__NativeTokenNotSupported.selector);
        channels.depositWithPermit(c, 1, 0, "", "");
    }

    // ================================================================== claim

    function test_claim_appliesVoucher() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        vm.expectEmit(true, true, true, true, address(channels));
        // The ABI path writes every total in 16 bytes (W = 16).
        emit Claimed(receiver, address(usdc), receiver, 250, abi.encodePacked(id, uint8(16), uint128(250)));
        uint256 got = _claimOne(cfg, 300, 250, sig);
        assertEq(got, 250, "returned amount");
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(bal, 1_000, "balance unchanged");
        assertEq(claimed, 250, "claimed");
        assertEq(channels.unswept(receiver, address(usdc)), 250, "unswept");
        (uint128 rc, uint128 rs) = channels.receivers(receiver, address(usdc));
        assertEq(rc, 250, "receiver claimed");
        assertEq(rs, 0, "receiver swept");
        assertEq(usdc.balanceOf(address(channels)), 1_000, "no transfer on claim");
    }

    function test_claim_byReceiverAuthorizer() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        vm.prank(receiverAuth);
        channels.claim(_group(cfg), _items1(_item(cfg, 300, 300, sig)));
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 300, "claimed");
    }

    function test_claim_cumulative_onlyIncreases() public {
        _fundDefault(1_000);
        _claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        // A later voucher with a higher ceiling claims only the difference.
        uint256 got = _claimOne(cfg, 700, 650, _signVoucher(PAYER_KEY, id, 700));
        assertEq(got, 350, "delta");
        // An old voucher cannot lower the total; it is skipped.
        _expectSkip(id, 3, 300, 650);
        got = _claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        assertEq(got, 0, "stale voucher claims nothing");
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 650, "unchanged");
    }

    function test_claim_cappedAtBalance() public {
        _fundDefault(100);
        uint256 got = _claimOne(cfg, 500, 500, _signVoucher(PAYER_KEY, id, 500));
        assertEq(got, 100, "capped");
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(claimed, bal, "claimed == balance");
    }

    function test_claim_skip_aboveCeiling() public {
        _fundDefault(1_000);
        _expectSkip(id, 1, 301, 0);
        uint256 got = _claimOne(cfg, 300, 301, _signVoucher(PAYER_KEY, id, 300));
        assertEq(got, 0, "nothing");
    }

    function test_claim_skip_noBalance_unknownChannel() public {
        bytes32 cid = channels.getChannelId(cfg);
        _expectSkip(cid, 2, 10, 0);
        uint256 got = _claimOne(cfg, 10, 10, _signVoucher(PAYER_KEY, cid, 10));
        assertEq(got, 0, "nothing");
    }

    function test_claim_skip_wrongGroup_landsOnEmptyChannel() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        // The other receiver lists the payer's channel under its own group: the rebuilt id is a
        // different (empty) channel.
        TollgateChannels.ChannelConfig memory c = cfg;
        c.receiver = other;
        c.receiverAuthorizer = address(0);
        vm.prank(other);
        uint256 got = channels.claim(_group(c), _items1(_item(c, 300, 300, sig)));
        assertEq(got, 0, "nothing");
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "victim channel untouched");
    }

    function test_claim_skip_notIncreasing_equal() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        _claimOne(cfg, 300, 200, sig);
        _expectSkip(id, 3, 200, 200);
        assertEq(_claimOne(cfg, 300, 200, sig), 0, "replay of same total");
    }

    function test_claim_skip_wrongSigner() public {
        _fundDefault(1_000);
        _expectSkip(id, 4, 300, 0);
        assertEq(_claimOne(cfg, 300, 300, _signVoucher(OTHER_KEY, id, 300)), 0, "other key");
    }

    function test_claim_skip_signatureForOtherCeiling() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 100);
        _expectSkip(id, 4, 300, 0);
        assertEq(_claimOne(cfg, 300, 300, sig), 0, "ceiling bound by signature");
    }

    function test_claim_skip_highS() public {
        _fundDefault(1_000);
        bytes memory sig = _highS(_signVoucher(PAYER_KEY, id, 300));
        // Raw ecrecover accepts the malleable twin; OpenZeppelin's tryRecover does not.
        (uint8 v, bytes32 r, bytes32 s) = _split(sig);
        assertEq(ecrecover(channels.getVoucherDigest(id, 300), v, r, s), payer, "twin recovers raw");
        _expectSkip(id, 4, 300, 0);
        assertEq(_claimOne(cfg, 300, 300, sig), 0, "high-S rejected");
    }

    function test_claim_skip_malformedSignatures() public {
        _fundDefault(1_000);
        bytes memory good = _signVoucher(PAYER_KEY, id, 300);
        bytes[5] memory bad;
        bad[0] = "";
        bad[1] = _slice(good, 63);
        bad[2] = bytes.concat(good, hex"00");
        bad[3] = _withV(good, 29);
        bad[4] = _withV(good, 0);
        for (uint256 i; i < bad.length; ++i) {
            _expectSkip(id, 4, 300, 0);
            assertEq(_claimOne(cfg, 300, 300, bad[i]), 0, "malformed signature rejected");
        }
    }

    function test_claim_compactSignature() public {
        _fundDefault(1_000);
        bytes memory sig = _compact(_signVoucher(PAYER_KEY, id, 300));
        assertEq(_claimOne(cfg, 300, 300, sig), 300, "EIP-2098 accepted");
    }

    function test_claim_payerAuthorizerSigns() public {
        cfg.payerAuthorizer = payerAuth;
        _fundDefault(1_000);
        _expectSkip(id, 4, 300, 0);
        assertEq(_claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)), 0, "payer key not accepted");
        assertEq(_claimOne(cfg, 300, 300, _signVoucher(PAYER_AUTH_KEY, id, 300)), 300, "authorizer key accepted");
    }

    function test_claim_contractWalletPayer_erc1271() public {
        TestMultisigWallet w = _newWallet();
        cfg.payer = address(w);
        _fundDefault(1_000);
        bytes memory sig = _walletSign(channels.getVoucherDigest(id, 300));
        assertEq(_claimOne(cfg, 300, 300, sig), 300, "1271 voucher accepted");
        // One owner's signature is below the 2-of-3 threshold.
        bytes memory one = _sign(OWNER1_KEY, channels.getVoucherDigest(id, 400));
        _expectSkip(id, 4, 400, 300);
        assertEq(_claimOne(cfg, 400, 400, one), 0, "below threshold");
    }

    function test_claim_batch_invalidItemsDoNotBlockOthers() public {
        TollgateChannels.ChannelConfig memory c2 = cfg;
        c2.salt = bytes32(uint256(2));
        TollgateChannels.ChannelConfig memory c3 = cfg;
        c3.salt = bytes32(uint256(3));
        bytes32 id1 = _depositUsdc(cfg, 1_000);
        bytes32 id2 = _depositUsdc(c2, 1_000);
        bytes32 id3 = _depositUsdc(c3, 1_000);
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](3);
        items[0] = _item(cfg, 100, 100, _signVoucher(PAYER_KEY, id1, 100));
        items[1] = _item(c2, 100, 100, _signVoucher(OTHER_KEY, id2, 100)); // bad signer
        items[2] = _item(c3, 200, 150, _signVoucher(PAYER_KEY, id3, 200));
        vm.prank(receiver);
        uint256 got = channels.claim(_group(cfg), items);
        assertEq(got, 250, "two applied");
        (, uint128 a) = channels.channels(id1);
        (, uint128 b) = channels.channels(id2);
        (, uint128 c) = channels.channels(id3);
        assertEq(a, 100, "first");
        assertEq(b, 0, "second skipped");
        assertEq(c, 150, "third");
    }

    function test_claim_sameChannelTwiceInBatch() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = _item(cfg, 100, 100, _signVoucher(PAYER_KEY, id, 100));
        items[1] = _item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        vm.prank(receiver);
        assertEq(channels.claim(_group(cfg), items), 300, "second item adds the difference");
    }

    function test_claim_revert_unauthorized() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)));
        TollgateChannels.ClaimGroup memory g = _group(cfg);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, payer));
        channels.claim(g, items);
        // With no receiver authorizer set, an address(0) group entry authorizes nobody.
        g.receiverAuthorizer = address(0);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, other));
        channels.claim(g, items);
    }

    function test_claim_revert_receiverTotalOverflow() public {
        MockToken big = new MockToken("BIG");
        big.mint(address(this), uint256(type(uint128).max) * 2);
        big.approve(address(channels), type(uint256).max);
        TollgateChannels.ChannelConfig memory a = _config(address(big), bytes32(uint256(1)));
        TollgateChannels.ChannelConfig memory b = _config(address(big), bytes32(uint256(2)));
        bytes32 ida = channels.deposit(a, type(uint128).max);
        bytes32 idb = channels.deposit(b, type(uint128).max);
        _claimOne(a, type(uint128).max, type(uint128).max, _signVoucher(PAYER_KEY, ida, type(uint128).max));
        // The receiver's cumulative total in this token is at 2^128 - 1: one more unit overflows,
        // and the whole batch reverts (nothing is half-applied).
        TollgateChannels.ClaimItem[] memory items = _items1(_item(b, 1, 1, _signVoucher(PAYER_KEY, idb, 1)));
        TollgateChannels.ClaimGroup memory g = _group(b);
        vm.prank(receiver);
        vm.expectRevert(
            abi.encodeWithSelector(
                TollgateChannels.TollgateChannels__ReceiverTotalOverflow.selector, receiver, address(big)
            )
        );
        channels.claim(g, items);
        (, uint128 claimed) = channels.channels(idb);
        assertEq(claimed, 0, "rolled back");
        // Totals are cumulative, so a sweep does not lift the cap: it is 2^128 - 1 units per
        // receiver and token over the contract's lifetime (docs/CONTRACTS.md).
        channels.sweep(receiver, address(big));
        vm.prank(receiver);
        vm.expectRevert(
            abi.encodeWithSelector(
                TollgateChannels.TollgateChannels__ReceiverTotalOverflow.selector, receiver, address(big)
            )
        );
        channels.claim(g, items);
    }

    function test_claim_revert_emptyBatch() public {
        vm.prank(receiver);
        vm.expectRevert(TollgateChannels.TollgateChannels__EmptyBatch.selector);
        channels.claim(_group(cfg), new TollgateChannels.ClaimItem[](0));
    }

    // ================================================================== claimPacked

    function test_claimPacked_matchesClaim() public {
        TollgateChannels.ChannelConfig memory c2 = cfg;
        c2.salt = bytes32(uint256(9));
        c2.payerAuthorizer = payerAuth;
        bytes32 id1 = _depositUsdc(cfg, 1_000);
        bytes32 id2 = _depositUsdc(c2, 1_000);
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = _item(cfg, 400, 300, _signVoucher(PAYER_KEY, id1, 400));
        items[1] = _item(c2, 500, 500, _signVoucher(PAYER_AUTH_KEY, id2, 500));
        vm.expectEmit(true, true, true, true, address(channels));
        // Records carry each item's amount width: 2 bytes for 400/300 and 500/500.
        emit Claimed(
            receiver, address(usdc), receiver, 800, abi.encodePacked(id1, uint8(2), uint16(300), id2, uint8(2), uint16(500))
        );
        vm.prank(receiver);
        uint256 got = channels.claimPacked(_group(cfg), _pack(items));
        assertEq(got, 800, "amount");
        (, uint128 a) = channels.channels(id1);
        (, uint128 b) = channels.channels(id2);
        assertEq(a, 300, "first (flags 0)");
        assertEq(b, 500, "second (authorizer + salt flags)");
    }

    /// @dev Amount widths 1, 13 and 16 bytes (the sum stays under the receiver total's 2^128):
    ///      each total lands exactly, and each `Claimed` record is `channelId || W || total` in
    ///      the item's width, with the ABI padding after an odd length (expectEmit compares the
    ///      exact data).
    function test_claimPacked_recordWidths() public {
        uint128[3] memory amounts = [uint128(7), 1e30 - 1, type(uint128).max - 2e30];
        uint128[3] memory ceilings = [uint128(255), 1e30, type(uint128).max - 2e30];
        bytes32[3] memory ids;
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](3);
        for (uint256 i; i < 3; ++i) {
            TollgateChannels.ChannelConfig memory c = cfg;
            c.salt = bytes32(i);
            ids[i] = _depositUsdc(c, ceilings[i]);
            items[i] = _item(c, ceilings[i], amounts[i], _signVoucher(PAYER_KEY, ids[i], ceilings[i]));
        }
        bytes memory data = _pack(items);
        assertEq(uint8(data[0]) >> 3, 0, "first record: width 1");
        bytes memory records = _widthRecords(ids, amounts);
        uint256 sum = uint256(amounts[0]) + amounts[1] + amounts[2];
        vm.expectEmit(true, true, true, true, address(channels));
        emit Claimed(receiver, address(usdc), receiver, sum, records);
        vm.prank(receiver);
        channels.claimPacked(_group(cfg), data);
        for (uint256 i; i < 3; ++i) {
            (, uint128 claimed) = channels.channels(ids[i]);
            assertEq(claimed, amounts[i], "total in its width");
        }
    }

    function _widthRecords(bytes32[3] memory ids, uint128[3] memory amounts) internal pure returns (bytes memory) {
        bytes memory first = abi.encodePacked(ids[0], uint8(1), uint8(amounts[0]));
        bytes memory second = abi.encodePacked(ids[1], uint8(13), uint104(amounts[1]));
        return bytes.concat(first, second, abi.encodePacked(ids[2], uint8(16), amounts[2]));
    }

    function test_claimPacked_longSignatures() public {
        TestMultisigWallet w = _newWallet();
        TollgateChannels.ChannelConfig memory cw = cfg;
        cw.payer = address(w);
        bytes32 idw = _depositUsdc(cw, 1_000);
        bytes32 id1 = _depositUsdc(cfg, 1_000);
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = _item(cw, 100, 100, _walletSign(channels.getVoucherDigest(idw, 100))); // 130 bytes
        items[1] = _item(cfg, 100, 100, _signVoucher(PAYER_KEY, id1, 100)); // 65 bytes
        // First record: _pack uses the explicit-length form for the 130-byte wallet signature.
        // Second record: a 65-byte signature in the explicit-length form (flag bit 2).
        bytes memory data = bytes.concat(
            _packOne(items[0]),
            abi.encodePacked(uint8(4 | (15 << 3)), payer, uint24(DELAY), uint128(100), uint128(100), uint16(65), items[1].signature)
        );
        vm.prank(receiver);
        assertEq(channels.claimPacked(_group(cfg), data), 200, "1271 and 65-byte long-form signatures");
    }

    function test_claimPacked_revert_malformed() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)));
        bytes memory data = _pack(items);
        vm.startPrank(receiver);
        // Truncated record.
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__MalformedClaimData.selector, 0));
        channels.claimPacked(_group(cfg), _slice(data, data.length - 1));
        // Reserved flag bit 7.
        bytes memory bad = bytes.concat(bytes1(data[0] | 0x80), _sliceFrom(data, 1));
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__MalformedClaimData.selector, 0));
        channels.claimPacked(_group(cfg), bad);
        // A valid first record followed by garbage reports the garbage's offset.
        bytes memory tail = bytes.concat(data, hex"00");
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__MalformedClaimData.selector, data.length)
        );
        channels.claimPacked(_group(cfg), tail);
        // Empty.
        vm.expectRevert(TollgateChannels.TollgateChannels__EmptyBatch.selector);
        channels.claimPacked(_group(cfg), "");
        vm.stopPrank();
    }

    function test_claimPacked_revert_unauthorized() public {
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, other));
        channels.claimPacked(_group(cfg), hex"00");
    }

    // ================================================================== claimWithSignature

    function test_claimWithSignature_relayed() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)));
        bytes memory auth = _sign(RECEIVER_AUTH_KEY, channels.getClaimBatchDigest(_group(cfg), items));
        vm.prank(relayer);
        assertEq(channels.claimWithSignature(_group(cfg), items, auth), 300, "claimed");
        // Replaying the same batch is harmless.
        vm.prank(relayer);
        assertEq(channels.claimWithSignature(_group(cfg), items, auth), 0, "replay claims nothing");
    }

    function test_claimWithSignature_receiverMaySign() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)));
        bytes memory auth = _sign(RECEIVER_KEY, channels.getClaimBatchDigest(_group(cfg), items));
        vm.prank(relayer);
        assertEq(channels.claimWithSignature(_group(cfg), items, auth), 300, "claimed");
    }

    function test_claimWithSignature_revert_badSignature() public {
        _fundDefault(1_000);
        TollgateChannels.ClaimItem[] memory items = _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300)));
        bytes memory auth = _sign(OTHER_KEY, channels.getClaimBatchDigest(_group(cfg), items));
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.claimWithSignature(_group(cfg), items, auth);
        // A signature over different totals does not cover this batch.
        TollgateChannels.ClaimItem[] memory other2 = _items1(_item(cfg, 300, 200, items[0].signature));
        auth = _sign(RECEIVER_AUTH_KEY, channels.getClaimBatchDigest(_group(cfg), other2));
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.claimWithSignature(_group(cfg), items, auth);
        (, uint128 claimed) = channels.channels(id);
        assertEq(claimed, 0, "nothing claimed");
    }

    function test_claimWithSignature_revert_empty() public {
        vm.expectRevert(TollgateChannels.TollgateChannels__EmptyBatch.selector);
        channels.claimWithSignature(_group(cfg), new TollgateChannels.ClaimItem[](0), "");
    }

    // ================================================================== sweep

    function test_sweep_paysReceiverOnceForManyChannels() public {
        TollgateChannels.ChannelConfig memory c2 = cfg;
        c2.salt = bytes32(uint256(2));
        bytes32 id1 = _depositUsdc(cfg, 1_000);
        bytes32 id2 = _depositUsdc(c2, 1_000);
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = _item(cfg, 300, 300, _signVoucher(PAYER_KEY, id1, 300));
        items[1] = _item(c2, 400, 400, _signVoucher(PAYER_KEY, id2, 400));
        vm.prank(receiver);
        channels.claim(_group(cfg), items);
        vm.expectEmit(true, true, false, true, address(channels));
        emit Swept(receiver, address(usdc), receiver, 700);
        vm.prank(other); // anyone may trigger it
        assertEq(channels.sweep(receiver, address(usdc)), 700, "swept");
        assertEq(usdc.balanceOf(receiver), 700, "paid");
        assertEq(channels.unswept(receiver, address(usdc)), 0, "nothing left");
        (uint128 rc, uint128 rs) = channels.receivers(receiver, address(usdc));
        assertEq(rc, 700, "cumulative claimed");
        assertEq(rs, 700, "cumulative swept");
    }

    function test_sweep_eth() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        bytes32 cid = _depositEth(c, 1 ether);
        _claimOne(c, 0.25 ether, 0.25 ether, _signVoucher(PAYER_KEY, cid, 0.25 ether));
        uint256 before = receiver.balance;
        channels.sweep(receiver, address(0));
        assertEq(receiver.balance - before, 0.25 ether, "ETH paid");
    }

    function test_sweep_revert_nothing() public {
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__NothingToSweep.selector, receiver, address(usdc))
        );
        channels.sweep(receiver, address(usdc));
    }

    function test_sweepTo_receiverChoosesDestination() public {
        _fundDefault(1_000);
        _claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        vm.expectEmit(true, true, false, true, address(channels));
        emit Swept(receiver, address(usdc), other, 300);
        vm.prank(receiver);
        channels.sweepTo(address(usdc), other);
        assertEq(usdc.balanceOf(other), 300, "paid to destination");
        vm.prank(receiver);
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__NothingToSweep.selector, receiver, address(usdc))
        );
        channels.sweepTo(address(usdc), other);
    }

    // ================================================================== withdraw

    function test_withdraw_fullFlow_receiverClaimsDuringDelay() public {
        _fundDefault(1_000);
        vm.expectEmit(true, true, false, true, address(channels));
        emit WithdrawInitiated(id, payer, 1_000, uint40(block.timestamp) + DELAY);
        vm.prank(payer);
        channels.initiateWithdraw(cfg, 1_000);
        (uint128 pa, uint40 at) = channels.pendingWithdrawals(id);
        assertEq(pa, 1_000, "pending amount");
        assertEq(at, block.timestamp, "initiated at");
        // The receiver claims during the delay.
        vm.warp(block.timestamp + DELAY - 1);
        _claimOne(cfg, 400, 400, _signVoucher(PAYER_KEY, id, 400));
        vm.prank(payer);
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__WithdrawNotReady.selector, uint256(T0) + DELAY)
        );
        channels.finalizeWithdraw(cfg);
        vm.warp(block.timestamp + 1);
        vm.expectEmit(true, true, false, true, address(channels));
        emit Withdrawn(id, payer, 600, 400);
        vm.prank(payer);
        assertEq(channels.finalizeWithdraw(cfg), 600, "deposits - claims");
        assertEq(usdc.balanceOf(payer), 600, "paid");
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(bal, 400, "balance keeps the claimed part");
        assertEq(claimed, 400, "claimed");
        (pa, at) = channels.pendingWithdrawals(id);
        assertEq(pa, 0, "cleared");
        // After finalization a later voucher can claim nothing more than the remaining balance.
        _expectSkip(id, 3, 900, 400);
        assertEq(_claimOne(cfg, 900, 900, _signVoucher(PAYER_KEY, id, 900)), 0, "window closed");
        // The receiver still sweeps what it claimed.
        channels.sweep(receiver, address(usdc));
        assertEq(usdc.balanceOf(receiver), 400, "receiver paid");
        assertEq(usdc.balanceOf(address(channels)), 0, "contract empty");
    }

    function test_withdraw_byPayerAuthorizer_eth() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        c.payerAuthorizer = payerAuth;
        bytes32 cid = _depositEth(c, 1 ether);
        vm.prank(payerAuth);
        channels.initiateWithdraw(c, 1 ether);
        vm.warp(block.timestamp + DELAY);
        vm.prank(payerAuth);
        channels.finalizeWithdraw(c);
        assertEq(payer.balance, 1 ether, "ETH back to the payer, not the authorizer");
        (uint128 bal,) = channels.channels(cid);
        assertEq(bal, 0, "drained");
    }

    function test_initiateWithdraw_restartReplaces() public {
        _fundDefault(1_000);
        vm.startPrank(payer);
        channels.initiateWithdraw(cfg, 100);
        vm.warp(block.timestamp + 10);
        channels.initiateWithdraw(cfg, 200);
        vm.stopPrank();
        (uint128 pa, uint40 at) = channels.pendingWithdrawals(id);
        assertEq(pa, 200, "new amount");
        assertEq(at, T0 + 10, "timer restarted");
    }

    function test_initiateWithdraw_reverts() public {
        _fundDefault(1_000);
        _claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        vm.prank(receiver);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, receiver));
        channels.initiateWithdraw(cfg, 1);
        vm.startPrank(payer);
        vm.expectRevert(TollgateChannels.TollgateChannels__ZeroAmount.selector);
        channels.initiateWithdraw(cfg, 0);
        vm.expectRevert(
            abi.encodeWithSelector(TollgateChannels.TollgateChannels__InsufficientAvailable.selector, 700, 701)
        );
        channels.initiateWithdraw(cfg, 701);
        vm.stopPrank();
    }

    function test_finalizeWithdraw_reverts() public {
        _fundDefault(1_000);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__NoPendingWithdrawal.selector, id));
        channels.finalizeWithdraw(cfg);
        vm.prank(payer);
        channels.initiateWithdraw(cfg, 10);
        vm.warp(block.timestamp + DELAY);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, other));
        channels.finalizeWithdraw(cfg);
    }

    // ================================================================== refund

    function test_refund_byReceiver_reducesPendingWithdrawal() public {
        _fundDefault(1_000);
        _claimOne(cfg, 200, 200, _signVoucher(PAYER_KEY, id, 200));
        vm.prank(payer);
        channels.initiateWithdraw(cfg, 800);
        vm.expectEmit(true, true, false, true, address(channels));
        emit Refunded(id, payer, 300, 0, 700, 500);
        vm.prank(receiver);
        assertEq(channels.refund(cfg, 300), 300, "refunded");
        assertEq(usdc.balanceOf(payer), 300, "paid at once");
        (uint128 pa,) = channels.pendingWithdrawals(id);
        assertEq(pa, 500, "pending reduced");
        assertEq(channels.refundNonce(id), 1, "nonce advanced");
        // A full refund cancels the pending withdrawal.
        vm.prank(receiverAuth);
        assertEq(channels.refund(cfg, type(uint128).max), 500, "capped at unclaimed");
        (pa,) = channels.pendingWithdrawals(id);
        assertEq(pa, 0, "cancelled");
        (uint128 bal, uint128 claimed) = channels.channels(id);
        assertEq(bal, claimed, "only claimed funds remain");
    }

    function test_refund_nothingAvailable_stillAdvancesNonce() public {
        _fundDefault(100);
        _claimOne(cfg, 100, 100, _signVoucher(PAYER_KEY, id, 100));
        vm.expectEmit(true, true, false, true, address(channels));
        emit Refunded(id, payer, 0, 0, 100, 0);
        vm.prank(receiver);
        assertEq(channels.refund(cfg, 50), 0, "nothing to refund");
        assertEq(channels.refundNonce(id), 1, "nonce advanced anyway");
    }

    function test_refund_revert_unauthorized() public {
        _fundDefault(100);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__Unauthorized.selector, payer));
        channels.refund(cfg, 1);
    }

    function test_refundWithSignature_relayed() public {
        _fundDefault(1_000);
        bytes memory sig = _sign(RECEIVER_AUTH_KEY, channels.getRefundDigest(id, 0, 400));
        vm.prank(relayer);
        assertEq(channels.refundWithSignature(cfg, 400, 0, sig), 400, "refunded");
        assertEq(usdc.balanceOf(payer), 400, "paid");
        // The receiver's own signature works too, for the next nonce.
        sig = _sign(RECEIVER_KEY, channels.getRefundDigest(id, 1, 100));
        assertEq(channels.refundWithSignature(cfg, 100, 1, sig), 100, "receiver-signed");
    }

    function test_refundWithSignature_reverts() public {
        _fundDefault(1_000);
        bytes memory sig = _sign(RECEIVER_AUTH_KEY, channels.getRefundDigest(id, 0, 400));
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__InvalidRefundNonce.selector, 0, 1));
        channels.refundWithSignature(cfg, 400, 1, sig);
        // Signed amount is bound.
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.refundWithSignature(cfg, 401, 0, sig);
        // The payer cannot sign its own refund.
        bytes memory payerSig = _sign(PAYER_KEY, channels.getRefundDigest(id, 0, 400));
        vm.expectRevert(TollgateChannels.TollgateChannels__InvalidSignature.selector);
        channels.refundWithSignature(cfg, 400, 0, payerSig);
        // Used once, the signature is dead: the nonce moved on.
        channels.refundWithSignature(cfg, 400, 0, sig);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__InvalidRefundNonce.selector, 1, 0));
        channels.refundWithSignature(cfg, 400, 0, sig);
        // A direct refund also invalidates a pre-signed one for the current nonce.
        bytes memory presigned = _sign(RECEIVER_AUTH_KEY, channels.getRefundDigest(id, 1, 10));
        vm.prank(receiver);
        channels.refund(cfg, 1);
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__InvalidRefundNonce.selector, 2, 1));
        channels.refundWithSignature(cfg, 10, 1, presigned);
    }

    // ================================================================== views

    function test_getChannelState() public {
        _fundDefault(1_000);
        _claimOne(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300));
        vm.prank(payer);
        channels.initiateWithdraw(cfg, 500);
        vm.prank(receiver);
        channels.refund(cfg, 100);
        TollgateChannels.ChannelState memory st = channels.getChannelState(id);
        assertEq(st.balance, 900, "balance");
        assertEq(st.totalClaimed, 300, "claimed");
        assertEq(st.withdrawAmount, 400, "pending");
        assertEq(st.withdrawInitiatedAt, T0, "initiated");
        assertEq(st.refundNonce, 1, "refund nonce");
    }

    // ================================================================== cross-domain replay

    function test_voucher_uselessOnOtherChannel() public {
        _fundDefault(1_000);
        TollgateChannels.ChannelConfig memory c2 = cfg;
        c2.salt = bytes32(uint256(1));
        bytes32 id2 = _depositUsdc(c2, 1_000);
        bytes memory sigForId = _signVoucher(PAYER_KEY, id, 300);
        _expectSkip(id2, 4, 300, 0);
        assertEq(_claimOne(c2, 300, 300, sigForId), 0, "other channel");
    }

    function test_voucher_uselessOnOtherContract() public {
        _fundDefault(1_000);
        TollgateChannels second = new TollgateChannels();
        usdc.mint(address(this), 1_000);
        usdc.approve(address(second), 1_000);
        bytes32 id2 = second.deposit(cfg, 1_000);
        assertNotEq(id2, id, "same config, different contract, different id");
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        vm.prank(receiver);
        assertEq(second.claim(_group(cfg), _items1(_item(cfg, 300, 300, sig))), 0, "other contract");
    }

    function test_voucher_uselessOnOtherChain() public {
        _fundDefault(1_000);
        bytes memory sig = _signVoucher(PAYER_KEY, id, 300);
        uint256 original = block.chainid;
        vm.chainId(original + 1);
        // Same config on another chain is another channel id (empty here).
        bytes32 forkId = channels.getChannelId(cfg);
        assertNotEq(forkId, id, "chain id in the channel id");
        assertEq(_claimOne(cfg, 300, 300, sig), 0, "other chain");
        vm.chainId(original);
        assertEq(_claimOne(cfg, 300, 300, sig), 300, "home chain still works");
    }

    // ================================================================== multicall, reentrancy

    function test_multicall_claimThenSweep() public {
        _fundDefault(1_000);
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(
            TollgateChannels.claim, (_group(cfg), _items1(_item(cfg, 300, 300, _signVoucher(PAYER_KEY, id, 300))))
        );
        calls[1] = abi.encodeCall(TollgateChannels.sweep, (receiver, address(usdc)));
        vm.prank(receiver);
        channels.multicall(calls);
        assertEq(usdc.balanceOf(receiver), 300, "claimed and swept in one tx");
    }

    function test_multicall_cannotReuseMsgValue() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        bytes[] memory calls = new bytes[](1);
        calls[0] = abi.encodeCall(TollgateChannels.deposit, (c, 1 ether));
        vm.expectRevert(abi.encodeWithSelector(TollgateChannels.TollgateChannels__WrongMsgValue.selector, 1 ether, 0));
        channels.multicall(calls);
    }

    function test_reentrancy_blockedDuringSweep() public {
        ReentrantToken t = new ReentrantToken();
        TollgateChannels.ChannelConfig memory c = _config(address(t), bytes32(0));
        t.mint(address(this), 1_000);
        t.approve(address(channels), 1_000);
        bytes32 cid = channels.deposit(c, 1_000);
        _claimOne(c, 300, 300, _signVoucher(PAYER_KEY, cid, 300));
        // During the sweep transfer the token tries to sweep again.
        t.arm(address(channels), abi.encodeCall(TollgateChannels.sweep, (receiver, address(t))));
        channels.sweep(receiver, address(t));
        assertFalse(t.lastCallSucceeded(), "reentrant sweep failed");
        assertEq(
            keccak256(t.lastRevertData()),
            keccak256(abi.encodeWithSelector(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector)),
            "guard error"
        );
        assertEq(t.balanceOf(receiver), 300, "paid once");
    }

    function test_revertingToken_sweepRevertsAndKeepsAccounting() public {
        RevertingToken t = new RevertingToken();
        TollgateChannels.ChannelConfig memory c = _config(address(t), bytes32(0));
        t.mint(address(this), 1_000);
        t.approve(address(channels), 1_000);
        bytes32 cid = channels.deposit(c, 1_000);
        _claimOne(c, 300, 300, _signVoucher(PAYER_KEY, cid, 300));
        t.setBroken(true);
        vm.expectRevert(RevertingToken.RevertingToken__Broken.selector);
        channels.sweep(receiver, address(t));
        assertEq(channels.unswept(receiver, address(t)), 300, "still owed");
        t.setBroken(false);
        channels.sweep(receiver, address(t));
        assertEq(t.balanceOf(receiver), 300, "paid once the token works again");
    }

    // ================================================================== local helpers

    function _split(bytes memory sig) internal pure returns (uint8 v, bytes32 r, bytes32 s) {
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
    }

    function _withV(bytes memory sig, uint8 v) internal pure returns (bytes memory out) {
        out = bytes.concat(sig);
        out[64] = bytes1(v);
    }

    function _slice(bytes memory b, uint256 len) internal pure returns (bytes memory out) {
        out = new bytes(len);
        for (uint256 i; i < len; ++i) {
            out[i] = b[i];
        }
    }

    function _sliceFrom(bytes memory b, uint256 from) internal pure returns (bytes memory out) {
        out = new bytes(b.length - from);
        for (uint256 i; i < out.length; ++i) {
            out[i] = b[from + i];
        }
    }

    function _packOne(TollgateChannels.ClaimItem memory it) internal pure returns (bytes memory) {
        return _pack(_items1(it));
    }
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {TollgatePasses} from "../src/TollgatePasses.sol";
import {TestUSDC} from "../src/TestUSDC.sol";
import {TestMultisigWallet} from "../src/test-helpers/TestMultisigWallet.sol";
import {FeeOnTransferToken, MockToken} from "./mocks/MockTokens.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC1155} from "@openzeppelin/contracts/token/ERC1155/IERC1155.sol";
import {IERC1155Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @title TollgatePassesTest
/// @notice Unit and fuzz tests: every external function and every custom error of TollgatePasses.
contract TollgatePassesTest is TollgateTestBase {
    TollgatePasses internal passes;
    address internal owner = address(0x0A11);
    address internal alice;
    address internal bob;
    address internal carol = address(0xCA401);
    uint256 internal constant ALICE_KEY = 0xA1;
    uint256 internal constant BOB_KEY = 0xB2;

    uint256 internal ethPlan; // 0.01 ETH / 30 days, transferable, cap 3
    uint256 internal usdcPlan; // 5 USDC / 7 days, transferable, no cap
    uint256 internal lockedPlan; // 1 USDC / 1 day, not transferable

    event PlanCreated(uint256 indexed planId, TollgatePasses.PlanParams params);
    event PlanUpdated(uint256 indexed planId, TollgatePasses.PlanParams params);
    event Purchased(
        uint256 indexed planId,
        address indexed holder,
        address indexed payer,
        address token,
        uint256 cost,
        uint64 expiresAt
    );
    event Renewed(
        uint256 indexed planId,
        address indexed holder,
        address indexed payer,
        address token,
        uint256 cost,
        uint64 previousExpiry,
        uint64 expiresAt
    );
    event Granted(
        uint256 indexed planId, address indexed holder, uint32 periods, uint64 previousExpiry, uint64 expiresAt
    );
    event Delegated(uint256 indexed planId, address indexed holder, address indexed delegatee, uint64 until);
    event DelegationRevoked(uint256 indexed planId, address indexed holder, address indexed delegatee);
    event ProceedsWithdrawn(address indexed token, address indexed to, uint256 amount);
    event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);

    function setUp() public {
        _setUpBase();
        alice = vm.addr(ALICE_KEY);
        bob = vm.addr(BOB_KEY);
        passes = new TollgatePasses("https://passes.example/{id}.json", owner);
        vm.startPrank(owner);
        ethPlan = passes.createPlan(_params(address(0), 0.01 ether, 30 days, 1_000, 3, true, true));
        usdcPlan = passes.createPlan(_params(address(usdc), 5e6, 7 days, 500, 0, true, true));
        lockedPlan = passes.createPlan(_params(address(usdc), 1e6, 1 days, 10, 0, false, true));
        vm.stopPrank();
        vm.deal(alice, 10 ether);
        vm.deal(bob, 10 ether);
        vm.deal(carol, 10 ether);
    }

    function _params(
        address token,
        uint96 price,
        uint40 period,
        uint64 quota,
        uint32 cap,
        bool transferable,
        bool active
    ) internal pure returns (TollgatePasses.PlanParams memory) {
        return TollgatePasses.PlanParams({
            token: token,
            price: price,
            period: period,
            quota: quota,
            maxSupply: cap,
            transferable: transferable,
            active: active
        });
    }

    function _buyEth(address who, address holder, uint32 periods) internal returns (uint64) {
        vm.prank(who);
        return passes.purchase{value: 0.01 ether * uint256(periods)}(ethPlan, holder, periods);
    }

    function _buyUsdc(address who, uint256 planId, address holder, uint32 periods) internal returns (uint64) {
        TollgatePasses.Plan memory p = passes.getPlan(planId);
        uint256 cost = uint256(p.price) * periods;
        usdc.mint(who, cost);
        vm.startPrank(who);
        usdc.approve(address(passes), cost);
        uint64 e = passes.purchase(planId, holder, periods);
        vm.stopPrank();
        return e;
    }

    function _entitled(address user, uint256 planId) internal view returns (bool ok) {
        (ok,,) = passes.entitled(user, planId);
    }

    // ================================================================== plans

    function test_createPlan_storesAndEmits() public {
        TollgatePasses.PlanParams memory p = _params(address(usdc), 7, 3600, 42, 9, false, false);
        vm.expectEmit(true, false, false, true, address(passes));
        emit PlanCreated(4, p);
        vm.prank(owner);
        uint256 planId = passes.createPlan(p);
        assertEq(planId, 4, "sequential id");
        assertEq(passes.planCount(), 4, "count");
        TollgatePasses.Plan memory got = passes.getPlan(planId);
        assertEq(got.token, address(usdc), "token");
        assertEq(got.price, 7, "price");
        assertEq(got.period, 3600, "period");
        assertEq(got.quota, 42, "quota");
        assertEq(got.maxSupply, 9, "cap");
        assertEq(got.supply, 0, "supply");
        assertFalse(got.transferable, "transferable");
        assertFalse(got.active, "active");
    }

    function test_createPlan_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        passes.createPlan(_params(address(0), 1, 1, 0, 0, true, true));
        vm.prank(owner);
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidPeriod.selector);
        passes.createPlan(_params(address(0), 1, 0, 0, 0, true, true));
    }

    function test_updatePlan_keepsSupplyAndEmits() public {
        _buyEth(alice, alice, 1);
        TollgatePasses.PlanParams memory p = _params(address(0), 0.02 ether, 10 days, 7, 5, false, true);
        vm.expectEmit(true, false, false, true, address(passes));
        emit PlanUpdated(ethPlan, p);
        vm.prank(owner);
        passes.updatePlan(ethPlan, p);
        TollgatePasses.Plan memory got = passes.getPlan(ethPlan);
        assertEq(got.price, 0.02 ether, "price");
        assertEq(got.supply, 1, "supply kept");
        assertFalse(got.transferable, "now locked");
    }

    function test_updatePlan_reverts() public {
        _buyEth(alice, alice, 1);
        _buyEth(bob, bob, 1);
        vm.startPrank(owner);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__UnknownPlan.selector, 99));
        passes.updatePlan(99, _params(address(0), 1, 1, 0, 0, true, true));
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidPeriod.selector);
        passes.updatePlan(ethPlan, _params(address(0), 1, 0, 0, 0, true, true));
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__MaxSupplyBelowSupply.selector, 1, 2));
        passes.updatePlan(ethPlan, _params(address(0), 1, 1, 0, 1, true, true));
        vm.stopPrank();
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        passes.updatePlan(ethPlan, _params(address(0), 1, 1, 0, 0, true, true));
    }

    function test_getPlan_revert_unknown() public {
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__UnknownPlan.selector, 0));
        passes.getPlan(0);
    }

    // ================================================================== purchase

    function test_purchase_eth_mintsAndEntitles() public {
        vm.expectEmit(true, true, true, true, address(passes));
        emit Purchased(ethPlan, bob, alice, address(0), 0.02 ether, uint64(T0 + 60 days));
        uint64 e = _buyEth(alice, bob, 2);
        assertEq(e, T0 + 60 days, "two periods");
        assertEq(passes.balanceOf(bob, ethPlan), 1, "one pass");
        assertEq(passes.expiresAt(bob, ethPlan), T0 + 60 days, "expiry");
        (bool ok, uint64 until, address holder) = passes.entitled(bob, ethPlan);
        assertTrue(ok, "entitled");
        assertEq(until, T0 + 60 days, "until");
        assertEq(holder, bob, "holder");
        assertFalse(_entitled(alice, ethPlan), "payer is not the holder");
        assertEq(passes.proceeds(address(0)), 0.02 ether, "proceeds");
        assertEq(passes.getPlan(ethPlan).supply, 1, "supply");
    }

    function test_purchase_token() public {
        uint64 e = _buyUsdc(alice, usdcPlan, alice, 3);
        assertEq(e, T0 + 21 days, "three weeks");
        assertEq(usdc.balanceOf(address(passes)), 15e6, "paid");
        assertEq(passes.proceeds(address(usdc)), 15e6, "proceeds");
    }

    function test_renewal_beforeExpiry_extendsWithoutGap() public {
        _buyEth(alice, alice, 1);
        vm.warp(T0 + 20 days);
        vm.expectEmit(true, true, true, true, address(passes));
        emit Renewed(ethPlan, alice, bob, address(0), 0.01 ether, uint64(T0 + 30 days), uint64(T0 + 60 days));
        uint64 e = _buyEth(bob, alice, 1);
        assertEq(e, T0 + 60 days, "extends from the old expiry, not from now");
        assertEq(passes.balanceOf(alice, ethPlan), 1, "still one pass");
        assertEq(passes.getPlan(ethPlan).supply, 1, "renewal does not mint");
    }

    function test_renewal_afterExpiry_startsNow() public {
        _buyEth(alice, alice, 1);
        vm.warp(T0 + 40 days);
        assertFalse(_entitled(alice, ethPlan), "expired");
        uint64 e = _buyEth(alice, alice, 1);
        assertEq(e, T0 + 70 days, "from now");
        assertTrue(_entitled(alice, ethPlan), "entitled again");
    }

    function test_purchase_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__WrongMsgValue.selector, 0.01 ether, 1));
        passes.purchase{value: 1}(ethPlan, alice, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__WrongMsgValue.selector, 0, 1));
        passes.purchase{value: 1}(usdcPlan, alice, 1);
        vm.prank(alice);
        vm.expectRevert(TollgatePasses.TollgatePasses__ZeroPeriods.selector);
        passes.purchase(ethPlan, alice, 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__UnknownPlan.selector, 77));
        passes.purchase(77, alice, 1);
        vm.prank(alice);
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidHolder.selector);
        passes.purchase{value: 0.01 ether}(ethPlan, address(0), 1);
        vm.prank(owner);
        passes.updatePlan(ethPlan, _params(address(0), 0.01 ether, 30 days, 1_000, 3, true, false));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__PlanNotActive.selector, ethPlan));
        passes.purchase{value: 0.01 ether}(ethPlan, alice, 1);
    }

    function test_purchase_revert_supplyCap() public {
        _buyEth(alice, alice, 1);
        _buyEth(alice, bob, 1);
        _buyEth(alice, carol, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__SupplyCapReached.selector, ethPlan, 3));
        passes.purchase{value: 0.01 ether}(ethPlan, address(0xD0D), 1);
        // Renewals still work at the cap.
        _buyEth(alice, alice, 1);
    }

    function test_purchase_revert_expiryOverflow() public {
        vm.startPrank(owner);
        uint256 planId = passes.createPlan(_params(address(0), 0, type(uint40).max, 0, 0, true, true));
        vm.stopPrank();
        vm.prank(alice);
        vm.expectRevert(TollgatePasses.TollgatePasses__ExpiryOverflow.selector);
        passes.purchase(planId, alice, type(uint32).max);
    }

    function test_purchase_revert_feeOnTransferToken() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        vm.prank(owner);
        uint256 planId = passes.createPlan(_params(address(fee), 1_000, 1 days, 0, 0, true, true));
        fee.mint(alice, 1_000);
        vm.startPrank(alice);
        fee.approve(address(passes), 1_000);
        vm.expectRevert(
            abi.encodeWithSelector(TollgatePasses.TollgatePasses__TransferAmountMismatch.selector, 1_000, 990)
        );
        passes.purchase(planId, alice, 1);
        vm.stopPrank();
    }

    function test_purchase_freePlan() public {
        vm.prank(owner);
        uint256 planId = passes.createPlan(_params(address(0), 0, 1 days, 5, 1, false, true));
        vm.prank(alice);
        passes.purchase(planId, alice, 1);
        assertTrue(_entitled(alice, planId), "free pass");
    }

    // ================================================================== gasless purchases

    function test_purchaseWithAuthorization() public {
        usdc.mint(alice, 10e6);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = passes.purchaseAuthorizationNonce(usdcPlan, bob, 2, 1);
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, address(passes), 10e6, 0, vb, nonce));
        vm.prank(relayer);
        uint64 e = passes.purchaseWithAuthorization(usdcPlan, bob, 2, alice, 0, vb, 1, sig);
        assertEq(e, T0 + 14 days, "two weeks");
        assertTrue(_entitled(bob, usdcPlan), "bob holds");
        assertEq(usdc.balanceOf(alice), 0, "alice paid");
    }

    function test_purchaseWithAuthorization_cannotBeRedirected() public {
        usdc.mint(alice, 10e6);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = passes.purchaseAuthorizationNonce(usdcPlan, bob, 2, 1);
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, address(passes), 10e6, 0, vb, nonce));
        vm.prank(relayer);
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        passes.purchaseWithAuthorization(usdcPlan, relayer, 2, alice, 0, vb, 1, sig);
    }

    function test_purchaseWithAuthorization_contractWallet() public {
        TestMultisigWallet w = _newWallet();
        usdc.mint(address(w), 5e6);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = passes.purchaseAuthorizationNonce(usdcPlan, address(w), 1, 9);
        bytes memory sig = _walletSign(_receiveAuthDigest(address(w), address(passes), 5e6, 0, vb, nonce));
        passes.purchaseWithAuthorization(usdcPlan, address(w), 1, address(w), 0, vb, 9, sig);
        assertTrue(_entitled(address(w), usdcPlan), "wallet holds a pass");
    }

    function test_purchaseWithAuthorization_revert_native() public {
        vm.expectRevert(TollgatePasses.TollgatePasses__NativeTokenNotSupported.selector);
        passes.purchaseWithAuthorization(ethPlan, alice, 1, alice, 0, 1, 0, "");
    }

    function test_purchaseWithPermit() public {
        usdc.mint(alice, 5e6);
        uint256 dl = block.timestamp + 1 hours;
        uint256 n = usdc.nonces(alice);
        bytes memory p = _sign(ALICE_KEY, _permitDigest(alice, address(passes), 5e6, n, dl));
        bytes memory c = _sign(ALICE_KEY, passes.getPermitPurchaseDigest(usdcPlan, alice, 1, n));
        vm.prank(relayer);
        passes.purchaseWithPermit(usdcPlan, alice, 1, alice, dl, p, c);
        assertTrue(_entitled(alice, usdcPlan), "bought");
        assertEq(usdc.allowance(alice, address(passes)), 0, "allowance used up");
    }

    function test_purchaseWithPermit_reverts() public {
        usdc.mint(alice, 5e6);
        uint256 dl = block.timestamp + 1 hours;
        uint256 n = usdc.nonces(alice);
        bytes memory p = _sign(ALICE_KEY, _permitDigest(alice, address(passes), 5e6, n, dl));
        bytes memory c = _sign(ALICE_KEY, passes.getPermitPurchaseDigest(usdcPlan, alice, 1, n));
        // The relayer cannot switch the holder.
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidSignature.selector);
        passes.purchaseWithPermit(usdcPlan, relayer, 1, alice, dl, p, c);
        vm.expectRevert(TollgatePasses.TollgatePasses__NativeTokenNotSupported.selector);
        passes.purchaseWithPermit(ethPlan, alice, 1, alice, dl, p, c);
        // Consent replay after use fails (permit nonce consumed).
        passes.purchaseWithPermit(usdcPlan, alice, 1, alice, dl, p, c);
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidSignature.selector);
        passes.purchaseWithPermit(usdcPlan, alice, 1, alice, dl, p, c);
    }

    // ================================================================== grants

    function test_grant_mintsAndExtends() public {
        vm.prank(owner);
        passes.updatePlan(lockedPlan, _params(address(usdc), 1e6, 1 days, 10, 0, false, false)); // inactive
        vm.expectEmit(true, true, false, true, address(passes));
        emit Granted(lockedPlan, alice, 2, 0, uint64(T0 + 2 days));
        vm.prank(owner);
        passes.grant(lockedPlan, alice, 2);
        vm.expectEmit(true, true, false, true, address(passes));
        emit Granted(lockedPlan, alice, 1, uint64(T0 + 2 days), uint64(T0 + 3 days));
        vm.prank(owner);
        passes.grant(lockedPlan, alice, 1);
        assertTrue(_entitled(alice, lockedPlan), "granted");
    }

    function test_grant_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        passes.grant(ethPlan, alice, 1);
        vm.startPrank(owner);
        vm.expectRevert(TollgatePasses.TollgatePasses__ZeroPeriods.selector);
        passes.grant(ethPlan, alice, 0);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__UnknownPlan.selector, 50));
        passes.grant(50, alice, 1);
        passes.grant(ethPlan, alice, 1);
        passes.grant(ethPlan, bob, 1);
        passes.grant(ethPlan, carol, 1);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__SupplyCapReached.selector, ethPlan, 3));
        passes.grant(ethPlan, address(0xD0D), 1);
        vm.stopPrank();
    }

    // ================================================================== transfers

    function test_transfer_movesPassAndExpiry() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.safeTransferFrom(alice, bob, ethPlan, 1, "");
        assertEq(passes.balanceOf(alice, ethPlan), 0, "alice gave it away");
        assertEq(passes.balanceOf(bob, ethPlan), 1, "bob holds");
        assertEq(passes.expiresAt(bob, ethPlan), T0 + 30 days, "expiry moved");
        assertEq(passes.expiresAt(alice, ethPlan), 0, "alice has no expiry");
        assertFalse(_entitled(alice, ethPlan), "old holder not entitled");
        (bool ok,, address holder) = passes.entitled(bob, ethPlan);
        assertTrue(ok, "new holder entitled");
        assertEq(holder, bob, "holder");
    }

    function test_transfer_toContractWalletAndBack() public {
        TestMultisigWallet w = _newWallet();
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.safeTransferFrom(alice, address(w), ethPlan, 1, "");
        assertTrue(_entitled(address(w), ethPlan), "multisig holds");
        // The multisig moves it on with two owner signatures.
        bytes memory data = abi.encodeCall(IERC1155.safeTransferFrom, (address(w), bob, ethPlan, 1, ""));
        bytes memory sigs = _walletSign(w.executeHash(address(passes), 0, data, w.nonce()));
        w.execute(address(passes), 0, data, sigs);
        assertTrue(_entitled(bob, ethPlan), "bob holds");
        assertFalse(_entitled(address(w), ethPlan), "wallet no longer");
    }

    function test_transfer_revert_nonTransferable() public {
        _buyUsdc(alice, lockedPlan, alice, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__NonTransferable.selector, lockedPlan));
        passes.safeTransferFrom(alice, bob, lockedPlan, 1, "");
    }

    function test_transfer_revert_recipientAlreadyHolds() public {
        _buyEth(alice, alice, 1);
        _buyEth(bob, bob, 1);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(TollgatePasses.TollgatePasses__RecipientAlreadyHolds.selector, bob, ethPlan)
        );
        passes.safeTransferFrom(alice, bob, ethPlan, 1, "");
    }

    function test_transfer_revert_moreThanOne() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(IERC1155Errors.ERC1155InsufficientBalance.selector, alice, 1, 2, ethPlan)
        );
        passes.safeTransferFrom(alice, bob, ethPlan, 2, "");
    }

    function test_transfer_batchAndOperator() public {
        _buyEth(alice, alice, 1);
        _buyUsdc(alice, usdcPlan, alice, 1);
        vm.prank(alice);
        passes.setApprovalForAll(carol, true);
        uint256[] memory planIds = new uint256[](2);
        planIds[0] = ethPlan;
        planIds[1] = usdcPlan;
        uint256[] memory ones = new uint256[](2);
        ones[0] = 1;
        ones[1] = 1;
        vm.prank(carol);
        passes.safeBatchTransferFrom(alice, bob, planIds, ones, "");
        assertTrue(_entitled(bob, ethPlan) && _entitled(bob, usdcPlan), "both moved");
        assertEq(passes.expiresAt(bob, usdcPlan), T0 + 7 days, "expiry moved");
    }

    function test_transfer_selfIsNoop() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.safeTransferFrom(alice, alice, ethPlan, 1, "");
        assertEq(passes.expiresAt(alice, ethPlan), T0 + 30 days, "expiry kept");
        assertTrue(_entitled(alice, ethPlan), "still entitled");
    }

    // ================================================================== delegation

    function test_delegate_entitlesUntilEarlierOfDelegationAndExpiry() public {
        _buyEth(alice, alice, 1);
        vm.expectEmit(true, true, true, true, address(passes));
        emit Delegated(ethPlan, alice, bob, uint64(T0 + 10 days));
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 10 days));
        (bool ok, uint64 until, address holder) = passes.entitled(bob, ethPlan);
        assertTrue(ok, "delegate entitled");
        assertEq(until, T0 + 10 days, "until the delegation ends");
        assertEq(holder, alice, "via alice");
        assertTrue(_entitled(alice, ethPlan), "holder keeps using it");
        (address d, uint64 u) = passes.delegationOf(alice, ethPlan);
        assertEq(d, bob, "delegatee");
        assertEq(u, T0 + 10 days, "until");
        // A delegation past the expiry stops at the expiry.
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 90 days));
        (, until,) = passes.entitled(bob, ethPlan);
        assertEq(until, T0 + 30 days, "capped by expiry");
        vm.warp(T0 + 30 days);
        assertFalse(_entitled(bob, ethPlan), "ends with the pass");
    }

    function test_delegate_expires() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 1 days));
        vm.warp(T0 + 1 days);
        assertFalse(_entitled(bob, ethPlan), "expired delegation");
        assertTrue(_entitled(alice, ethPlan), "holder still");
    }

    function test_delegate_revoke() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 1 days));
        vm.expectEmit(true, true, true, true, address(passes));
        emit DelegationRevoked(ethPlan, alice, bob);
        vm.prank(alice);
        passes.revokeDelegation(ethPlan);
        assertFalse(_entitled(bob, ethPlan), "revoked");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__NoDelegation.selector, alice, ethPlan));
        passes.revokeDelegation(ethPlan);
    }

    function test_delegate_replacedByNewDelegatee() public {
        _buyEth(alice, alice, 1);
        vm.startPrank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 1 days));
        vm.expectEmit(true, true, true, true, address(passes));
        emit DelegationRevoked(ethPlan, alice, bob);
        passes.delegate(ethPlan, carol, uint64(T0 + 1 days));
        vm.stopPrank();
        assertFalse(_entitled(bob, ethPlan), "old delegate out");
        assertTrue(_entitled(carol, ethPlan), "new delegate in");
    }

    function test_delegate_endsOnTransfer() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.delegate(ethPlan, carol, uint64(T0 + 5 days));
        vm.expectEmit(true, true, true, true, address(passes));
        emit DelegationRevoked(ethPlan, alice, carol);
        vm.prank(alice);
        passes.safeTransferFrom(alice, bob, ethPlan, 1, "");
        assertFalse(_entitled(carol, ethPlan), "delegation of the old holder is gone");
        assertFalse(_entitled(alice, ethPlan), "old holder out");
        assertTrue(_entitled(bob, ethPlan), "only the new holder");
    }

    function test_delegate_endsWhenLapsedPassIsRenewed() public {
        _buyEth(alice, alice, 1);
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 60 days));
        vm.warp(T0 + 31 days);
        assertFalse(_entitled(bob, ethPlan), "pass lapsed");
        // Carol may now serve bob; alice's renewal must not bring her old delegation back.
        _buyEth(carol, carol, 1);
        vm.prank(carol);
        passes.delegate(ethPlan, bob, uint64(T0 + 40 days));
        vm.expectEmit(true, true, true, true, address(passes));
        emit DelegationRevoked(ethPlan, alice, bob);
        _buyEth(alice, alice, 1);
        (address d,) = passes.delegationOf(alice, ethPlan);
        assertEq(d, address(0), "old delegation gone");
        vm.prank(carol);
        passes.revokeDelegation(ethPlan);
        assertFalse(_entitled(bob, ethPlan), "no stale delegation left to serve bob");
        // Renewing before expiry keeps a delegation.
        vm.prank(alice);
        passes.delegate(ethPlan, bob, uint64(T0 + 50 days));
        _buyEth(alice, alice, 1);
        (d,) = passes.delegationOf(alice, ethPlan);
        assertEq(d, bob, "kept across an on-time renewal");
    }

    function test_delegate_reverts() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__NotHolder.selector, alice, ethPlan));
        passes.delegate(ethPlan, bob, uint64(T0 + 1));
        _buyEth(alice, alice, 1);
        _buyEth(carol, carol, 1);
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__InvalidDelegatee.selector, address(0)));
        passes.delegate(ethPlan, address(0), uint64(T0 + 1));
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__InvalidDelegatee.selector, alice));
        passes.delegate(ethPlan, alice, uint64(T0 + 1));
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__InvalidUntil.selector, uint64(T0)));
        passes.delegate(ethPlan, bob, uint64(T0));
        passes.delegate(ethPlan, bob, uint64(T0 + 1 days));
        vm.stopPrank();
        // Bob already uses alice's pass; carol cannot hand him a second one.
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(TollgatePasses.TollgatePasses__DelegateeTaken.selector, bob, alice));
        passes.delegate(ethPlan, bob, uint64(T0 + 1 days));
        // Once alice's delegation has lapsed, carol may.
        vm.warp(T0 + 1 days);
        vm.prank(carol);
        passes.delegate(ethPlan, bob, uint64(T0 + 2 days));
        (,, address holder) = passes.entitled(bob, ethPlan);
        assertEq(holder, carol, "via carol now");
    }

    // ================================================================== proceeds, uri, interfaces

    function test_withdrawProceeds() public {
        _buyEth(alice, alice, 2);
        _buyUsdc(alice, usdcPlan, alice, 1);
        vm.expectEmit(true, true, false, true, address(passes));
        emit ProceedsWithdrawn(address(0), carol, 0.015 ether);
        uint256 before = carol.balance;
        vm.prank(owner);
        passes.withdrawProceeds(address(0), carol, 0.015 ether);
        assertEq(carol.balance - before, 0.015 ether, "ETH out");
        assertEq(passes.proceeds(address(0)), 0.005 ether, "rest kept");
        vm.prank(owner);
        passes.withdrawProceeds(address(usdc), carol, 5e6);
        assertEq(usdc.balanceOf(carol), 5e6, "USDC out");
    }

    function test_withdrawProceeds_reverts() public {
        _buyEth(alice, alice, 1);
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(TollgatePasses.TollgatePasses__InsufficientProceeds.selector, 0.01 ether, 0.02 ether)
        );
        passes.withdrawProceeds(address(0), carol, 0.02 ether);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        passes.withdrawProceeds(address(0), alice, 1);
    }

    function test_setURI_and_interfaces() public {
        assertEq(passes.uri(ethPlan), "https://passes.example/{id}.json", "uri");
        vm.prank(owner);
        passes.setURI("ipfs://x/{id}");
        assertEq(passes.uri(ethPlan), "ipfs://x/{id}", "new uri");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, alice));
        passes.setURI("nope");
        assertTrue(passes.supportsInterface(type(IERC1155).interfaceId), "ERC-1155");
    }

    function test_ownership_twoStep() public {
        vm.prank(owner);
        passes.transferOwnership(alice);
        assertEq(passes.owner(), owner, "not yet");
        vm.prank(alice);
        passes.acceptOwnership();
        assertEq(passes.owner(), alice, "accepted");
    }

    function test_digests_matchManualEip712() public view {
        bytes32 ds = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Tollgate Passes"),
                keccak256("1"),
                block.chainid,
                address(passes)
            )
        );
        assertEq(passes.DOMAIN_SEPARATOR(), ds, "domain");
        assertEq(
            passes.PERMIT_PURCHASE_TYPEHASH(),
            keccak256("PermitPurchase(uint256 planId,address holder,uint32 periods,uint256 permitNonce)"),
            "typehash"
        );
        bytes32 sh = keccak256(abi.encode(passes.PERMIT_PURCHASE_TYPEHASH(), uint256(2), alice, uint32(3), uint256(4)));
        assertEq(
            passes.getPermitPurchaseDigest(2, alice, 3, 4), keccak256(abi.encodePacked(hex"1901", ds, sh)), "digest"
        );
        assertEq(
            passes.purchaseAuthorizationNonce(2, alice, 3, 4),
            keccak256(abi.encode(uint256(2), alice, uint32(3), uint256(4))),
            "3009 nonce"
        );
    }

    // ================================================================== fuzz

    function testFuzz_purchase_periodsAndRenewal(uint32 p1, uint32 p2, uint256 elapsed) public {
        p1 = uint32(bound(p1, 1, 1_000));
        p2 = uint32(bound(p2, 1, 1_000));
        elapsed = bound(elapsed, 0, uint256(p1) * 60 days);
        uint64 e1 = _buyUsdc(alice, usdcPlan, alice, p1);
        assertEq(e1, T0 + uint256(p1) * 7 days, "first expiry");
        vm.warp(T0 + elapsed);
        uint64 e2 = _buyUsdc(bob, usdcPlan, alice, p2);
        uint256 start = e1 > block.timestamp ? e1 : block.timestamp;
        assertEq(e2, start + uint256(p2) * 7 days, "no gap before expiry, from now after");
        assertEq(passes.proceeds(address(usdc)), (uint256(p1) + p2) * 5e6, "proceeds = price * periods");
    }

    function testFuzz_purchase_price(uint96 price, uint32 periods) public {
        periods = uint32(bound(periods, 1, 100));
        price = uint96(bound(price, 0, 1e24));
        vm.prank(owner);
        uint256 planId = passes.createPlan(_params(address(0), price, 1 days, 0, 0, true, true));
        uint256 cost = uint256(price) * periods;
        vm.deal(alice, cost);
        vm.prank(alice);
        passes.purchase{value: cost}(planId, alice, periods);
        assertEq(passes.proceeds(address(0)), cost, "paid exactly price * periods");
        if (cost != 0) {
            vm.deal(alice, cost);
            vm.prank(alice);
            vm.expectRevert(
                abi.encodeWithSelector(TollgatePasses.TollgatePasses__WrongMsgValue.selector, cost, cost - 1)
            );
            passes.purchase{value: cost - 1}(planId, alice, periods);
        }
    }

    function testFuzz_delegation_until(uint64 until, uint256 at) public {
        _buyEth(alice, alice, 1);
        until = uint64(bound(until, T0 + 1, T0 + 100 days));
        vm.prank(alice);
        passes.delegate(ethPlan, bob, until);
        at = bound(at, T0, T0 + 120 days);
        vm.warp(at);
        (bool ok, uint64 u, address h) = passes.entitled(bob, ethPlan);
        uint256 end = until < T0 + 30 days ? until : T0 + 30 days;
        assertEq(ok, at < end, "entitled exactly before min(until, expiry)");
        if (ok) {
            assertEq(u, end, "until");
            assertEq(h, alice, "holder");
        }
    }

    function testFuzz_purchaseWithAuthorization_boundToHolder(address otherHolder, uint256 salt) public {
        otherHolder = boundAddr(otherHolder);
        vm.assume(otherHolder != bob);
        usdc.mint(alice, 5e6);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = passes.purchaseAuthorizationNonce(usdcPlan, bob, 1, salt);
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, address(passes), 5e6, 0, vb, nonce));
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        passes.purchaseWithAuthorization(usdcPlan, otherHolder, 1, alice, 0, vb, salt, sig);
        passes.purchaseWithAuthorization(usdcPlan, bob, 1, alice, 0, vb, salt, sig);
        assertTrue(_entitled(bob, usdcPlan), "intended holder");
    }

    function testFuzz_grant_periods(uint32 periods) public {
        periods = uint32(bound(periods, 1, 10_000));
        vm.prank(owner);
        uint64 e = passes.grant(usdcPlan, bob, periods);
        assertEq(e, T0 + uint256(periods) * 7 days, "granted periods * period");
        assertTrue(_entitled(bob, usdcPlan), "entitled");
        assertEq(passes.proceeds(address(usdc)), 0, "a grant is free");
    }

    function testFuzz_withdrawProceeds(uint256 amount) public {
        _buyUsdc(alice, usdcPlan, alice, 3); // 15 USDC of proceeds
        uint256 available = 15e6;
        vm.prank(owner);
        if (amount > available) {
            vm.expectRevert(
                abi.encodeWithSelector(TollgatePasses.TollgatePasses__InsufficientProceeds.selector, available, amount)
            );
            passes.withdrawProceeds(address(usdc), carol, amount);
            assertEq(passes.proceeds(address(usdc)), available, "kept");
        } else {
            passes.withdrawProceeds(address(usdc), carol, amount);
            assertEq(usdc.balanceOf(carol), amount, "paid exactly");
            assertEq(passes.proceeds(address(usdc)), available - amount, "rest kept");
        }
    }

    /// @dev Random bytes as the payer's PermitPurchase consent: reverts before the permit, no
    ///      token moves, no pass.
    function testFuzz_purchaseWithPermit_randomConsentBytes(bytes memory consent) public {
        usdc.mint(alice, 5e6);
        uint256 dl = block.timestamp + 1 hours;
        bytes memory p = _sign(ALICE_KEY, _permitDigest(alice, address(passes), 5e6, 0, dl));
        vm.prank(relayer);
        vm.expectRevert(TollgatePasses.TollgatePasses__InvalidSignature.selector);
        passes.purchaseWithPermit(usdcPlan, alice, 1, alice, dl, p, consent);
        assertEq(usdc.balanceOf(alice), 5e6, "payer keeps its tokens");
        assertFalse(_entitled(alice, usdcPlan), "no pass");
    }

    /// @dev Random bytes as the EIP-3009 authorization: the token refuses it, no token moves.
    function testFuzz_purchaseWithAuthorization_randomSignatureBytes(bytes memory sig) public {
        usdc.mint(alice, 5e6);
        vm.prank(relayer);
        vm.expectRevert();
        passes.purchaseWithAuthorization(usdcPlan, bob, 1, alice, 0, block.timestamp + 1 hours, 1, sig);
        assertEq(usdc.balanceOf(alice), 5e6, "payer keeps its tokens");
        assertFalse(_entitled(bob, usdcPlan), "no pass");
    }
}

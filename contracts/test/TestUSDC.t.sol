// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {TestUSDC} from "../src/TestUSDC.sol";
import {TestMultisigWallet} from "../src/test-helpers/TestMultisigWallet.sol";

/// @title TestUSDCTest
/// @notice Unit and fuzz tests of the EIP-2612 / EIP-3009 test token and the test multisig.
contract TestUSDCTest is TollgateTestBase {
    address internal alice;
    uint256 internal constant ALICE_KEY = 0xA1;

    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function setUp() public {
        _setUpBase();
        alice = vm.addr(ALICE_KEY);
        usdc.mint(alice, 1_000e6);
    }

    function _transferDigest(address from, address to, uint256 value, uint256 va, uint256 vb, bytes32 nonce)
        internal
        view
        returns (bytes32)
    {
        return _usdcDigest(
            keccak256(abi.encode(usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(), from, to, value, va, vb, nonce))
        );
    }

    function _cancelDigest(address authorizer, bytes32 nonce) internal view returns (bytes32) {
        return _usdcDigest(keccak256(abi.encode(usdc.CANCEL_AUTHORIZATION_TYPEHASH(), authorizer, nonce)));
    }

    function _vrs(bytes memory sig) internal pure returns (uint8 v, bytes32 r, bytes32 s) {
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
    }

    // ================================================================== metadata, domain

    function test_metadata() public view {
        assertEq(usdc.name(), "USD Coin", "name");
        assertEq(usdc.symbol(), "USDC", "symbol");
        assertEq(usdc.decimals(), 6, "decimals");
        assertEq(usdc.version(), "2", "version");
        bytes32 ds = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("USD Coin"),
                keccak256("2"),
                block.chainid,
                address(usdc)
            )
        );
        assertEq(usdc.DOMAIN_SEPARATOR(), ds, "domain separator");
        assertEq(
            usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(),
            0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267,
            "EIP-3009 transfer typehash"
        );
        assertEq(
            usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(),
            0xd099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8,
            "EIP-3009 receive typehash"
        );
        assertEq(
            usdc.CANCEL_AUTHORIZATION_TYPEHASH(),
            0x158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429,
            "EIP-3009 cancel typehash"
        );
        assertEq(
            usdc.PERMIT_TYPEHASH(),
            0x6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9,
            "permit typehash"
        );
    }

    function test_otherNameAndVersion() public {
        TestUSDC t = new TestUSDC("USDC", "USDC", "2", address(this));
        (, string memory name, string memory version,,,,) = t.eip712Domain();
        assertEq(name, "USDC", "domain name as on Base Sepolia");
        assertEq(version, "2", "version");
    }

    // ================================================================== faucet

    function test_faucet_openOnAnvilChain() public {
        assertEq(block.chainid, 31337, "forge runs as chain 31337");
        vm.prank(alice);
        usdc.mint(alice, 5);
        assertEq(usdc.balanceOf(alice), 1_000e6 + 5, "minted");
    }

    function test_faucet_ownerOnlyElsewhere() public {
        vm.chainId(8453);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__FaucetClosed.selector, alice));
        usdc.mint(alice, 5);
        usdc.mint(alice, 5); // the owner (this test) still can
        assertEq(usdc.balanceOf(alice), 1_000e6 + 5, "owner minted");
    }

    // ================================================================== transferWithAuthorization

    function test_transferWithAuthorization_vrs() public {
        bytes32 nonce = keccak256("n1");
        uint256 vb = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _vrs(_sign(ALICE_KEY, _transferDigest(alice, other, 10e6, 0, vb, nonce)));
        vm.expectEmit(true, true, false, true, address(usdc));
        emit AuthorizationUsed(alice, nonce);
        vm.prank(relayer);
        usdc.transferWithAuthorization(alice, other, 10e6, 0, vb, nonce, v, r, s);
        assertEq(usdc.balanceOf(other), 10e6, "moved");
        assertTrue(usdc.authorizationState(alice, nonce), "used");
    }

    function test_transferWithAuthorization_bytes() public {
        bytes32 nonce = keccak256("n2");
        uint256 vb = block.timestamp + 60;
        bytes memory sig = _sign(ALICE_KEY, _transferDigest(alice, other, 10e6, 0, vb, nonce));
        usdc.transferWithAuthorization(alice, other, 10e6, 0, vb, nonce, sig);
        assertEq(usdc.balanceOf(other), 10e6, "moved");
    }

    function test_transferWithAuthorization_contractWallet() public {
        TestMultisigWallet w = _newWallet();
        usdc.mint(address(w), 10e6);
        bytes32 nonce = keccak256("w");
        uint256 vb = block.timestamp + 60;
        bytes memory sig = _walletSign(_transferDigest(address(w), other, 10e6, 0, vb, nonce));
        usdc.transferWithAuthorization(address(w), other, 10e6, 0, vb, nonce, sig);
        assertEq(usdc.balanceOf(other), 10e6, "1271 authorization");
    }

    function test_transferWithAuthorization_reverts() public {
        bytes32 nonce = keccak256("n3");
        uint256 va = block.timestamp + 10;
        uint256 vb = block.timestamp + 60;
        bytes memory sig = _sign(ALICE_KEY, _transferDigest(alice, other, 1, va, vb, nonce));
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationNotYetValid.selector, va));
        usdc.transferWithAuthorization(alice, other, 1, va, vb, nonce, sig);
        vm.warp(vb);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationExpired.selector, vb));
        usdc.transferWithAuthorization(alice, other, 1, va, vb, nonce, sig);
        vm.warp(va + 1);
        // Wrong amount: the signature does not match.
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.transferWithAuthorization(alice, other, 2, va, vb, nonce, sig);
        // High-S twin is rejected.
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.transferWithAuthorization(alice, other, 1, va, vb, nonce, _highS(sig));
        usdc.transferWithAuthorization(alice, other, 1, va, vb, nonce, sig);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationAlreadyUsed.selector, alice, nonce));
        usdc.transferWithAuthorization(alice, other, 1, va, vb, nonce, sig);
    }

    // ================================================================== receiveWithAuthorization

    function test_receiveWithAuthorization_bothForms() public {
        uint256 vb = block.timestamp + 60;
        bytes32 n1 = keccak256("r1");
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, other, 3, 0, vb, n1));
        vm.prank(relayer);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__CallerMustBePayee.selector, relayer, other));
        usdc.receiveWithAuthorization(alice, other, 3, 0, vb, n1, sig);
        vm.prank(other);
        usdc.receiveWithAuthorization(alice, other, 3, 0, vb, n1, sig);
        bytes32 n2 = keccak256("r2");
        (uint8 v, bytes32 r, bytes32 s) = _vrs(_sign(ALICE_KEY, _receiveAuthDigest(alice, other, 4, 0, vb, n2)));
        vm.prank(relayer);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__CallerMustBePayee.selector, relayer, other));
        usdc.receiveWithAuthorization(alice, other, 4, 0, vb, n2, v, r, s);
        vm.prank(other);
        usdc.receiveWithAuthorization(alice, other, 4, 0, vb, n2, v, r, s);
        assertEq(usdc.balanceOf(other), 7, "both received");
    }

    function test_receiveAuthorization_notUsableAsTransfer() public {
        uint256 vb = block.timestamp + 60;
        bytes32 n = keccak256("x");
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, other, 3, 0, vb, n));
        // A ReceiveWithAuthorization signature is not a TransferWithAuthorization one.
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.transferWithAuthorization(alice, other, 3, 0, vb, n, sig);
    }

    // ================================================================== cancelAuthorization

    function test_cancelAuthorization_bothForms() public {
        bytes32 n1 = keccak256("c1");
        bytes memory sig = _sign(ALICE_KEY, _cancelDigest(alice, n1));
        vm.expectEmit(true, true, false, true, address(usdc));
        emit AuthorizationCanceled(alice, n1);
        usdc.cancelAuthorization(alice, n1, sig);
        assertTrue(usdc.authorizationState(alice, n1), "cancelled");
        uint256 vb = block.timestamp + 60;
        bytes memory tsig = _sign(ALICE_KEY, _transferDigest(alice, other, 1, 0, vb, n1));
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationAlreadyUsed.selector, alice, n1));
        usdc.transferWithAuthorization(alice, other, 1, 0, vb, n1, tsig);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationAlreadyUsed.selector, alice, n1));
        usdc.cancelAuthorization(alice, n1, sig);

        bytes32 n2 = keccak256("c2");
        (uint8 v, bytes32 r, bytes32 s) = _vrs(_sign(ALICE_KEY, _cancelDigest(alice, n2)));
        usdc.cancelAuthorization(alice, n2, v, r, s);
        assertTrue(usdc.authorizationState(alice, n2), "cancelled (v,r,s)");

        bytes32 n3 = keccak256("c3");
        bytes memory wrong = _sign(OTHER_KEY, _cancelDigest(alice, n3));
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.cancelAuthorization(alice, n3, wrong);
    }

    // ================================================================== permit

    function test_permit_vrsAndBytes() public {
        uint256 dl = block.timestamp + 60;
        (uint8 v, bytes32 r, bytes32 s) = _vrs(_sign(ALICE_KEY, _permitDigest(alice, other, 5, 0, dl)));
        vm.expectEmit(true, true, false, true, address(usdc));
        emit Approval(alice, other, 5);
        usdc.permit(alice, other, 5, dl, v, r, s);
        assertEq(usdc.allowance(alice, other), 5, "approved");
        assertEq(usdc.nonces(alice), 1, "nonce");
        bytes memory sig = _sign(ALICE_KEY, _permitDigest(alice, other, 9, 1, dl));
        usdc.permit(alice, other, 9, dl, sig);
        assertEq(usdc.allowance(alice, other), 9, "approved (bytes)");
        assertEq(usdc.nonces(alice), 2, "nonce 2");
    }

    function test_permit_reverts() public {
        uint256 dl = block.timestamp + 60;
        bytes memory sig = _sign(ALICE_KEY, _permitDigest(alice, other, 5, 0, dl));
        vm.warp(dl + 1);
        vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__PermitExpired.selector, dl));
        usdc.permit(alice, other, 5, dl, sig);
        vm.warp(dl);
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.permit(alice, other, 6, dl, sig);
        usdc.permit(alice, other, 5, dl, sig);
        // Replay: the nonce moved on.
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.permit(alice, other, 5, dl, sig);
    }

    function test_permit_contractWallet() public {
        TestMultisigWallet w = _newWallet();
        uint256 dl = block.timestamp + 60;
        usdc.permit(address(w), other, 5, dl, _walletSign(_permitDigest(address(w), other, 5, 0, dl)));
        assertEq(usdc.allowance(address(w), other), 5, "1271 permit");
    }

    // ================================================================== fuzz

    function testFuzz_transferWithAuthorization(uint256 value, uint256 va, uint256 window, bytes32 nonce, uint256 at)
        public
    {
        value = bound(value, 0, 1_000e6);
        va = bound(va, 0, block.timestamp + 1 days);
        window = bound(window, 1, 1 days);
        uint256 vb = va + window;
        at = bound(at, T0, T0 + 3 days);
        bytes memory sig = _sign(ALICE_KEY, _transferDigest(alice, other, value, va, vb, nonce));
        vm.warp(at);
        if (at <= va) {
            vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationNotYetValid.selector, va));
        } else if (at >= vb) {
            vm.expectRevert(abi.encodeWithSelector(TestUSDC.TestUSDC__AuthorizationExpired.selector, vb));
        }
        usdc.transferWithAuthorization(alice, other, value, va, vb, nonce, sig);
        if (at > va && at < vb) assertEq(usdc.balanceOf(other), value, "moved exactly value");
    }

    function testFuzz_transferWithAuthorization_wrongSigner(uint256 key, bytes32 nonce) public {
        key = bound(key, 1, SECP256K1_N - 1);
        vm.assume(key != ALICE_KEY);
        uint256 vb = block.timestamp + 60;
        bytes memory sig = _sign(key, _transferDigest(alice, other, 1, 0, vb, nonce));
        vm.expectRevert(TestUSDC.TestUSDC__InvalidSignature.selector);
        usdc.transferWithAuthorization(alice, other, 1, 0, vb, nonce, sig);
    }

    function testFuzz_receiveWithAuthorization(uint256 value, bytes32 nonce) public {
        value = bound(value, 0, 1_000e6);
        uint256 vb = block.timestamp + 60;
        bytes memory sig = _sign(ALICE_KEY, _receiveAuthDigest(alice, other, value, 0, vb, nonce));
        uint256 before = usdc.balanceOf(alice);
        vm.prank(other);
        usdc.receiveWithAuthorization(alice, other, value, 0, vb, nonce, sig);
        assertEq(usdc.balanceOf(other), value, "moved exactly value");
        assertEq(usdc.balanceOf(alice), before - value, "from the authorizer");
        assertTrue(usdc.authorizationState(alice, nonce), "nonce used");
    }

    /// @dev Random bytes as any authorization signature: every entry point refuses them and
    ///      nothing moves or is consumed.
    function testFuzz_authorizations_randomSignatureBytes(bytes memory sig, bytes32 nonce) public {
        uint256 vb = block.timestamp + 60;
        uint256 before = usdc.balanceOf(alice);
        vm.expectRevert();
        usdc.transferWithAuthorization(alice, other, 1, 0, vb, nonce, sig);
        vm.prank(other);
        vm.expectRevert();
        usdc.receiveWithAuthorization(alice, other, 1, 0, vb, nonce, sig);
        vm.expectRevert();
        usdc.cancelAuthorization(alice, nonce, sig);
        vm.expectRevert();
        usdc.permit(alice, other, 1, vb, sig);
        assertEq(usdc.balanceOf(alice), before, "nothing moved");
        assertFalse(usdc.authorizationState(alice, nonce), "nonce not consumed");
        assertEq(usdc.allowance(alice, other), 0, "no allowance");
    }

    function testFuzz_faucet(address to, uint256 amount) public {
        vm.assume(to != address(0));
        amount = bound(amount, 0, type(uint128).max);
        uint256 supply = usdc.totalSupply();
        uint256 before = usdc.balanceOf(to);
        vm.prank(other);
        usdc.mint(to, amount);
        assertEq(usdc.balanceOf(to), before + amount, "minted exactly");
        assertEq(usdc.totalSupply(), supply + amount, "supply");
    }

    function testFuzz_permit(uint256 value, uint256 deadline) public {
        deadline = bound(deadline, block.timestamp, type(uint64).max);
        bytes memory sig = _sign(ALICE_KEY, _permitDigest(alice, other, value, 0, deadline));
        usdc.permit(alice, other, value, deadline, sig);
        assertEq(usdc.allowance(alice, other), value, "allowance");
    }
}

/// @title TestMultisigWalletTest
/// @notice The ERC-1271 test wallet: signature rules, execution, deployment from its artifact.
contract TestMultisigWalletTest is TollgateTestBase {
    TestMultisigWallet internal w;

    function setUp() public {
        _setUpBase();
        w = _newWallet();
    }

    function test_isValidSignature_rules() public view {
        bytes32 h = keccak256("hello");
        assertEq(w.isValidSignature(h, _walletSign(h)), bytes4(0x1626ba7e), "2 of 3 valid");
        bytes memory one = _sign(OWNER1_KEY, h);
        assertEq(w.isValidSignature(h, one), bytes4(0xffffffff), "1 of 3 invalid");
        assertEq(w.isValidSignature(h, bytes.concat(one, one)), bytes4(0xffffffff), "duplicate signer invalid");
        bytes memory sorted = _walletSign(h);
        bytes memory reversed = bytes.concat(_sliceFrom(sorted, 65), _slice(sorted, 65));
        assertEq(w.isValidSignature(h, reversed), bytes4(0xffffffff), "unsorted invalid");
        bytes memory outsider = bytes.concat(_sign(OWNER1_KEY, h), _sign(OTHER_KEY, h));
        assertEq(w.isValidSignature(h, outsider), bytes4(0xffffffff), "non-owner invalid");
        assertEq(w.isValidSignature(keccak256("other"), sorted), bytes4(0xffffffff), "other hash invalid");
    }

    function test_execute_andReplayProtection() public {
        vm.deal(address(w), 1 ether);
        bytes memory sigs = _walletSign(w.executeHash(other, 0.5 ether, "", 0));
        w.execute(other, 0.5 ether, "", sigs);
        assertEq(other.balance, 0.5 ether, "sent");
        vm.expectRevert(TestMultisigWallet.TestMultisigWallet__InvalidSignatures.selector);
        w.execute(other, 0.5 ether, "", sigs);
    }

    function test_execute_callFailureBubbles() public {
        bytes memory data = abi.encodeWithSignature("nope()");
        bytes memory sigs = _walletSign(w.executeHash(address(usdc), 0, data, 0));
        vm.expectRevert(abi.encodeWithSelector(TestMultisigWallet.TestMultisigWallet__CallFailed.selector, bytes("")));
        w.execute(address(usdc), 0, data, sigs);
    }

    function test_constructor_rejectsBadOwners() public {
        address[] memory owners = new address[](2);
        owners[0] = address(1);
        owners[1] = address(1);
        vm.expectRevert(TestMultisigWallet.TestMultisigWallet__InvalidOwners.selector);
        new TestMultisigWallet(owners, 1);
        owners[1] = address(2);
        vm.expectRevert(TestMultisigWallet.TestMultisigWallet__InvalidOwners.selector);
        new TestMultisigWallet(owners, 3);
        vm.expectRevert(TestMultisigWallet.TestMultisigWallet__InvalidOwners.selector);
        new TestMultisigWallet(owners, 0);
        owners[0] = address(0);
        vm.expectRevert(TestMultisigWallet.TestMultisigWallet__InvalidOwners.selector);
        new TestMultisigWallet(owners, 1);
    }

    function test_deployFromArtifact() public {
        address[] memory owners = new address[](1);
        owners[0] = vm.addr(OWNER1_KEY);
        bytes memory code =
            bytes.concat(vm.getCode("TestMultisigWallet.sol:TestMultisigWallet"), abi.encode(owners, uint256(1)));
        address deployed;
        assembly {
            deployed := create(0, add(code, 0x20), mload(code))
        }
        assertTrue(deployed != address(0), "deployed from the compiled artifact");
        bytes32 h = keccak256("x");
        assertEq(
            TestMultisigWallet(payable(deployed)).isValidSignature(h, _sign(OWNER1_KEY, h)), bytes4(0x1626ba7e), "works"
        );
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
}

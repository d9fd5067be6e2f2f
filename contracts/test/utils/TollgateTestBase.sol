// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "./Test.sol";
import {TollgateChannels} from "../../src/TollgateChannels.sol";
import {TollgatePasses} from "../../src/TollgatePasses.sol";
import {TestUSDC} from "../../src/TestUSDC.sol";
import {TestMultisigWallet} from "../../src/test-helpers/TestMultisigWallet.sol";

/// @title TollgateTestBase
/// @notice Shared fixtures for the contract tests: deployed contracts, fixed keys, config and
///         signature builders.
abstract contract TollgateTestBase is Test {
    TestUSDC internal usdc;
    TollgateChannels internal channels;

    // Fixed private keys (never use outside tests).
    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant PAYER_AUTH_KEY = 0xA11CE2;
    uint256 internal constant RECEIVER_KEY = 0xB0B;
    uint256 internal constant RECEIVER_AUTH_KEY = 0xB0B2;
    uint256 internal constant OTHER_KEY = 0xE7E;

    address internal payer;
    address internal payerAuth;
    address internal receiver;
    address internal receiverAuth;
    address internal other;
    address internal relayer = address(0x4E1A7E4);

    uint40 internal constant DELAY = 1 hours;
    uint256 internal constant T0 = 1_700_000_000;

    /// @dev secp256k1 group order, for building high-S signatures.
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function _setUpBase() internal {
        vm.warp(T0);
        payer = vm.addr(PAYER_KEY);
        payerAuth = vm.addr(PAYER_AUTH_KEY);
        receiver = vm.addr(RECEIVER_KEY);
        receiverAuth = vm.addr(RECEIVER_AUTH_KEY);
        other = vm.addr(OTHER_KEY);
        vm.label(payer, "payer");
        vm.label(payerAuth, "payerAuth");
        vm.label(receiver, "receiver");
        vm.label(receiverAuth, "receiverAuth");
        vm.label(other, "other");
        vm.label(relayer, "relayer");
        usdc = new TestUSDC("USD Coin", "USDC", "2", address(this));
        channels = new TollgateChannels();
        vm.label(address(usdc), "usdc");
        vm.label(address(channels), "channels");
    }

    // ------------------------------------------------------------------ builders

    function _config(address token, bytes32 salt) internal view returns (TollgateChannels.ChannelConfig memory) {
        return TollgateChannels.ChannelConfig({
            payer: payer,
            payerAuthorizer: address(0),
            receiver: receiver,
            receiverAuthorizer: receiverAuth,
            token: token,
            withdrawDelay: DELAY,
            salt: salt
        });
    }

    function _group(TollgateChannels.ChannelConfig memory c)
        internal
        pure
        returns (TollgateChannels.ClaimGroup memory)
    {
        return TollgateChannels.ClaimGroup({
            receiver: c.receiver, receiverAuthorizer: c.receiverAuthorizer, token: c.token
        });
    }

    function _item(TollgateChannels.ChannelConfig memory c, uint128 ceiling, uint128 total, bytes memory sig)
        internal
        pure
        returns (TollgateChannels.ClaimItem memory)
    {
        return TollgateChannels.ClaimItem({
            payer: c.payer,
            payerAuthorizer: c.payerAuthorizer,
            withdrawDelay: c.withdrawDelay,
            salt: c.salt,
            maxClaimableAmount: ceiling,
            totalClaimed: total,
            signature: sig
        });
    }

    function _items1(TollgateChannels.ClaimItem memory it)
        internal
        pure
        returns (TollgateChannels.ClaimItem[] memory items)
    {
        items = new TollgateChannels.ClaimItem[](1);
        items[0] = it;
    }

    /// @dev Packs items in {TollgateChannels-claimPacked}'s record format. 65-byte signatures
    ///      are turned into 64-byte EIP-2098 ones; other lengths use the explicit-length form.
    function _pack(TollgateChannels.ClaimItem[] memory items) internal pure returns (bytes memory data) {
        // Size first, then one allocation (concatenating record by record is quadratic in memory).
        uint256 size;
        for (uint256 i; i < items.length; ++i) {
            size += _packedSize(items[i]);
        }
        data = new bytes(size);
        uint256 at;
        for (uint256 i; i < items.length; ++i) {
            bytes memory rec = _packRecord(items[i]);
            for (uint256 k; k < rec.length; ++k) {
                data[at + k] = rec[k];
            }
            at += rec.length;
        }
    }

    function _packedSize(TollgateChannels.ClaimItem memory it) internal pure returns (uint256 n) {
        n = 1 + 20 + 3 + 2 * _amountWidth(it);
        if (it.payerAuthorizer != address(0)) n += 20;
        if (it.salt != bytes32(0)) n += 32;
        n += it.signature.length == 65 ? 64 : 2 + it.signature.length;
    }

    function _packRecord(TollgateChannels.ClaimItem memory it) internal pure returns (bytes memory rec) {
        uint256 width = _amountWidth(it);
        uint8 flags = uint8((width - 1) << 3);
        if (it.payerAuthorizer != address(0)) flags |= 1;
        if (it.salt != bytes32(0)) flags |= 2;
        bytes memory sig = it.signature;
        if (sig.length != 65) flags |= 4;
        rec = abi.encodePacked(flags, it.payer);
        if (flags & 1 != 0) rec = bytes.concat(rec, abi.encodePacked(it.payerAuthorizer));
        rec = bytes.concat(rec, abi.encodePacked(uint24(it.withdrawDelay)));
        if (flags & 2 != 0) rec = bytes.concat(rec, abi.encodePacked(it.salt));
        rec = bytes.concat(rec, _amountBytes(it.maxClaimableAmount, width), _amountBytes(it.totalClaimed, width));
        if (flags & 4 != 0) {
            rec = bytes.concat(rec, abi.encodePacked(uint16(sig.length), sig));
        } else {
            rec = bytes.concat(rec, _compact(sig));
        }
    }

    /// @dev Bytes needed for the larger of an item's two amounts (at least 1): the packed
    ///      record's amount width.
    function _amountWidth(TollgateChannels.ClaimItem memory it) internal pure returns (uint256 width) {
        uint256 m = it.maxClaimableAmount > it.totalClaimed ? it.maxClaimableAmount : it.totalClaimed;
        width = 1;
        while (width < 16 && m >> (8 * width) != 0) ++width;
    }

    /// @dev The low `width` bytes of `amount`, big-endian.
    function _amountBytes(uint128 amount, uint256 width) internal pure returns (bytes memory out) {
        out = new bytes(width);
        for (uint256 k; k < width; ++k) {
            out[width - 1 - k] = bytes1(uint8(amount >> (8 * k)));
        }
    }

    /// @dev EIP-2098 compact form r || vs of a 65-byte r || s || v signature.
    function _compact(bytes memory sig) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        uint256 vs = uint256(s);
        if (v == 28) vs |= 1 << 255;
        return abi.encodePacked(r, bytes32(vs));
    }

    // ------------------------------------------------------------------ signatures

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev The same signature with s' = n - s and v flipped: valid for raw ecrecover, but
    ///      malleable, so OpenZeppelin's ECDSA must reject it.
    function _highS(bytes memory sig) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        return abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }

    function _signVoucher(uint256 key, bytes32 channelId, uint128 ceiling) internal view returns (bytes memory) {
        return _sign(key, channels.getVoucherDigest(channelId, ceiling));
    }

    // ------------------------------------------------------------------ token signatures

    function _usdcDigest(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", usdc.DOMAIN_SEPARATOR(), structHash));
    }

    function _receiveAuthDigest(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce
    ) internal view returns (bytes32) {
        return _usdcDigest(
            keccak256(
                abi.encode(usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(), from, to, value, validAfter, validBefore, nonce)
            )
        );
    }

    function _permitDigest(address owner, address spender, uint256 value, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        return _usdcDigest(keccak256(abi.encode(usdc.PERMIT_TYPEHASH(), owner, spender, value, nonce, deadline)));
    }

    // ------------------------------------------------------------------ multisig wallet

    uint256 internal constant OWNER1_KEY = 0x0111;
    uint256 internal constant OWNER2_KEY = 0x0222;
    uint256 internal constant OWNER3_KEY = 0x0333;

    /// @dev A 2-of-3 test multisig.
    function _newWallet() internal returns (TestMultisigWallet w) {
        address[] memory owners = new address[](3);
        owners[0] = vm.addr(OWNER1_KEY);
        owners[1] = vm.addr(OWNER2_KEY);
        owners[2] = vm.addr(OWNER3_KEY);
        w = new TestMultisigWallet(owners, 2);
        vm.label(address(w), "multisig");
    }

    /// @dev Two owner signatures of `digest`, ordered by ascending owner address (what the
    ///      wallet's ERC-1271 check expects).
    function _walletSign(bytes32 digest) internal pure returns (bytes memory) {
        uint256 k1 = OWNER1_KEY;
        uint256 k2 = OWNER2_KEY;
        if (vm.addr(k1) > vm.addr(k2)) (k1, k2) = (k2, k1);
        return bytes.concat(_sign(k1, digest), _sign(k2, digest));
    }

    // ------------------------------------------------------------------ funding

    function _mintAndApprove(address who, uint256 amount, address spender) internal {
        usdc.mint(who, amount);
        vm.prank(who);
        usdc.approve(spender, type(uint256).max);
    }

    function _depositUsdc(TollgateChannels.ChannelConfig memory c, uint128 amount) internal returns (bytes32 id) {
        usdc.mint(address(this), amount);
        usdc.approve(address(channels), amount);
        id = channels.deposit(c, amount);
    }

    function _depositEth(TollgateChannels.ChannelConfig memory c, uint128 amount) internal returns (bytes32 id) {
        vm.deal(address(this), address(this).balance + amount);
        id = channels.deposit{value: amount}(c, amount);
    }

    // ------------------------------------------------------------------ gas

    /// @dev Intrinsic calldata gas of `data` sent to a contract: 4 per zero byte, 16 per other
    ///      byte (EIP-2028), or the EIP-7623 floor (10 per token, a non-zero byte being 4
    ///      tokens) when that is higher. Excludes the 21,000 base.
    function _calldataGas(bytes memory data, uint256 executionGas) internal pure returns (uint256) {
        uint256 zeros;
        for (uint256 i; i < data.length; ++i) {
            if (data[i] == 0) ++zeros;
        }
        uint256 nonZeros = data.length - zeros;
        uint256 standard = zeros * 4 + nonZeros * 16;
        uint256 floor = (zeros + nonZeros * 4) * 10;
        return standard + executionGas > floor ? standard : floor - executionGas;
    }
}

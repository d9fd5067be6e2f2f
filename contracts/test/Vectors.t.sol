// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "./utils/Test.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";
import {TollgatePasses} from "../src/TollgatePasses.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// @title VectorsTest
/// @notice Generates contracts/vectors/eip712.json: EIP-712 domains, type hashes, channel ids,
///         digests and signatures (vouchers, refunds, claim batches, permit-deposit consents,
///         EIP-3009 transfer/receive/cancel authorizations, EIP-2612 permits) for fixed keys, each
///         with the eth_signTypedData_v4 JSON it was computed from, so that the C side
///         recomputes everything from the JSON and cannot drift from the contracts.
///         Every digest written here is first checked against the deployed contracts, and every
///         signature against ecrecover. The file is deterministic (RFC 6979 signatures, fixed
///         keys and addresses); ./check.sh fails when a rebuild changes it.
contract VectorsTest is Test {
    string internal constant PATH = "./vectors/eip712.json";

    // anvil's default account 0 deploys, in this order: TestUSDC, TollgateChannels,
    // TollgatePasses (nonces 0, 1, 2), as on a fresh anvil.
    uint256 internal constant DEPLOYER_KEY = 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80;
    uint256 internal constant PAYER_KEY = 0x1111111111111111111111111111111111111111111111111111111111111111;
    uint256 internal constant PAYER_AUTH_KEY = 0x2222222222222222222222222222222222222222222222222222222222222222;
    uint256 internal constant RECEIVER_KEY = 0x3333333333333333333333333333333333333333333333333333333333333333;
    uint256 internal constant RECEIVER_AUTH_KEY = 0x4444444444444444444444444444444444444444444444444444444444444444;
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    TestUSDC internal usdc;
    TollgateChannels internal channels;
    TollgatePasses internal passes;

    string internal constant DOMAIN_TYPE =
        '[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}]';

    function setUp() public {
        vm.chainId(31337);
        address deployer = vm.addr(DEPLOYER_KEY);
        vm.prank(deployer);
        usdc = new TestUSDC("USD Coin", "USDC", "2", deployer);
        vm.prank(deployer);
        channels = new TollgateChannels();
        vm.prank(deployer);
        passes = new TollgatePasses("", deployer);
    }

    // ================================================================== JSON helpers

    function _q(string memory s) internal pure returns (string memory) {
        return string.concat('"', s, '"');
    }

    function _kv(string memory k, string memory v) internal pure returns (string memory) {
        return string.concat(_q(k), ":", v);
    }

    function _ks(string memory k, string memory v) internal pure returns (string memory) {
        return _kv(k, _q(v));
    }

    function _hex(bytes32 v) internal pure returns (string memory) {
        return _q(vm.toString(v));
    }

    function _addr(address a) internal pure returns (string memory) {
        return _q(vm.toString(a));
    }

    function _dec(uint256 v) internal pure returns (string memory) {
        return _q(vm.toString(v));
    }

    function _join(string[] memory parts) internal pure returns (string memory out) {
        for (uint256 i; i < parts.length; ++i) {
            out = i == 0 ? parts[i] : string.concat(out, ",", parts[i]);
        }
    }

    function _obj(string[] memory parts) internal pure returns (string memory) {
        return string.concat("{", _join(parts), "}");
    }

    function _arr(string[] memory parts) internal pure returns (string memory) {
        return string.concat("[", _join(parts), "]");
    }

    function _domainJson(string memory name, string memory version, address verifying)
        internal
        view
        returns (string memory)
    {
        string[] memory p = new string[](4);
        p[0] = _ks("name", name);
        p[1] = _ks("version", version);
        p[2] = _kv("chainId", vm.toString(block.chainid));
        p[3] = _kv("verifyingContract", _addr(verifying));
        return _obj(p);
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

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

    function _recover(bytes32 digest, bytes memory sig) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        return ecrecover(digest, v, r, s);
    }

    /// @dev One signed vector: typed data, struct hash, digest, expected signer (the address of
    ///      `key`) and signature. Valid vectors are checked to recover to the signer; invalid
    ///      ones (`valid: false`) are a high-S twin or another key's signature, and a verifier
    ///      must reject them for this signer.
    function _signed(
        string memory label,
        string memory typedData,
        bytes32 structHash,
        bytes32 digest,
        uint256 key,
        bool valid,
        bytes memory signature
    ) internal pure returns (string memory) {
        address signer = vm.addr(key);
        if (valid) assertEq(_recover(digest, signature), signer, string.concat(label, ": signature recovers"));
        string[] memory p = new string[](7);
        p[0] = _ks("label", label);
        p[1] = _kv("typedData", typedData);
        p[2] = _kv("structHash", _hex(structHash));
        p[3] = _kv("digest", _hex(digest));
        p[4] = _kv("signer", _addr(signer));
        p[5] = _kv("signature", _q(vm.toString(signature)));
        p[6] = _kv("valid", valid ? "true" : "false");
        return _obj(p);
    }

    // ================================================================== sections

    function _domains() internal view returns (string memory) {
        string[] memory items = new string[](3);
        items[0] =
            _domainEntry("TollgateChannels", "Tollgate Channels", "1", address(channels), channels.DOMAIN_SEPARATOR());
        items[1] = _domainEntry("TollgatePasses", "Tollgate Passes", "1", address(passes), passes.DOMAIN_SEPARATOR());
        items[2] = _domainEntry("TestUSDC", "USD Coin", "2", address(usdc), usdc.DOMAIN_SEPARATOR());
        return _arr(items);
    }

    function _domainEntry(string memory c, string memory name, string memory version, address at, bytes32 onchain)
        internal
        view
        returns (string memory)
    {
        bytes32 sep = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256(bytes(name)),
                keccak256(bytes(version)),
                block.chainid,
                at
            )
        );
        assertEq(sep, onchain, string.concat(c, " domain separator"));
        string[] memory p = new string[](3);
        p[0] = _ks("contract", c);
        p[1] = _kv("domain", _domainJson(name, version, at));
        p[2] = _kv("separator", _hex(sep));
        return _obj(p);
    }

    function _typeEntry(string memory name, string memory encoded, bytes32 onchain)
        internal
        pure
        returns (string memory)
    {
        bytes32 h = keccak256(bytes(encoded));
        assertEq(h, onchain, string.concat(name, " typehash"));
        string[] memory p = new string[](3);
        p[0] = _ks("name", name);
        p[1] = _ks("encodeType", encoded);
        p[2] = _kv("typehash", _hex(h));
        return _obj(p);
    }

    function _types() internal view returns (string memory) {
        string[] memory t = new string[](11);
        t[0] = _typeEntry(
            "EIP712Domain",
            "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
            0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f
        );
        t[1] = _typeEntry(
            "ChannelConfig",
            "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)",
            channels.CHANNEL_CONFIG_TYPEHASH()
        );
        t[2] =
            _typeEntry("Voucher", "Voucher(bytes32 channelId,uint128 maxClaimableAmount)", channels.VOUCHER_TYPEHASH());
        t[3] =
            _typeEntry("Refund", "Refund(bytes32 channelId,uint256 nonce,uint128 amount)", channels.REFUND_TYPEHASH());
        t[4] = _typeEntry(
            "ClaimEntry",
            "ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)",
            channels.CLAIM_ENTRY_TYPEHASH()
        );
        t[5] = _typeEntry(
            "ClaimBatch",
            "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)",
            channels.CLAIM_BATCH_TYPEHASH()
        );
        t[6] = _typeEntry(
            "PermitDeposit",
            "PermitDeposit(bytes32 channelId,uint128 amount,uint256 permitNonce)",
            channels.PERMIT_DEPOSIT_TYPEHASH()
        );
        t[7] = _typeEntry(
            "PermitPurchase",
            "PermitPurchase(uint256 planId,address holder,uint32 periods,uint256 permitNonce)",
            passes.PERMIT_PURCHASE_TYPEHASH()
        );
        t[8] = _typeEntry(
            "TransferWithAuthorization",
            "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)",
            usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH()
        );
        t[9] = _typeEntry(
            "ReceiveWithAuthorization",
            "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)",
            usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH()
        );
        t[10] = _typeEntry(
            "Permit",
            "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)",
            usdc.PERMIT_TYPEHASH()
        );
        return _arr(t);
    }

    function _configs() internal view returns (TollgateChannels.ChannelConfig[4] memory c) {
        address payer = vm.addr(PAYER_KEY);
        address receiver = vm.addr(RECEIVER_KEY);
        address receiverAuth = vm.addr(RECEIVER_AUTH_KEY);
        c[0] = TollgateChannels.ChannelConfig(payer, address(0), receiver, receiverAuth, address(usdc), 900, bytes32(0));
        c[1] = TollgateChannels.ChannelConfig(
            payer, vm.addr(PAYER_AUTH_KEY), receiver, receiverAuth, address(usdc), 3600, keccak256("tollgate salt 1")
        );
        c[2] = TollgateChannels.ChannelConfig(
            payer, address(0), receiver, address(0), address(0), 30 days, bytes32(uint256(7))
        );
        c[3] = TollgateChannels.ChannelConfig(
            payer,
            vm.addr(PAYER_AUTH_KEY),
            receiver,
            receiverAuth,
            address(usdc),
            15 minutes,
            bytes32(type(uint256).max)
        );
    }

    function _configJson(TollgateChannels.ChannelConfig memory c) internal pure returns (string memory) {
        string[] memory p = new string[](7);
        p[0] = _kv("payer", _addr(c.payer));
        p[1] = _kv("payerAuthorizer", _addr(c.payerAuthorizer));
        p[2] = _kv("receiver", _addr(c.receiver));
        p[3] = _kv("receiverAuthorizer", _addr(c.receiverAuthorizer));
        p[4] = _kv("token", _addr(c.token));
        p[5] = _kv("withdrawDelay", vm.toString(c.withdrawDelay));
        p[6] = _kv("salt", _hex(c.salt));
        return _obj(p);
    }

    function _channelIds() internal view returns (string memory) {
        TollgateChannels.ChannelConfig[4] memory cs = _configs();
        string[] memory items = new string[](4);
        for (uint256 i; i < 4; ++i) {
            TollgateChannels.ChannelConfig memory c = cs[i];
            bytes32 sh = keccak256(
                abi.encode(
                    channels.CHANNEL_CONFIG_TYPEHASH(),
                    c.payer,
                    c.payerAuthorizer,
                    c.receiver,
                    c.receiverAuthorizer,
                    c.token,
                    c.withdrawDelay,
                    c.salt
                )
            );
            bytes32 id = keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), sh));
            assertEq(id, channels.getChannelId(c), "channel id");
            string memory td = string.concat(
                '{"types":{"EIP712Domain":',
                DOMAIN_TYPE,
                ',"ChannelConfig":[{"name":"payer","type":"address"},{"name":"payerAuthorizer","type":"address"},{"name":"receiver","type":"address"},{"name":"receiverAuthorizer","type":"address"},{"name":"token","type":"address"},{"name":"withdrawDelay","type":"uint40"},{"name":"salt","type":"bytes32"}]},"primaryType":"ChannelConfig","domain":',
                _domainJson("Tollgate Channels", "1", address(channels)),
                ',"message":',
                _configJson(c),
                "}"
            );
            string[] memory p = new string[](4);
            p[0] = _kv("typedData", td);
            p[1] = _kv("structHash", _hex(sh));
            p[2] = _kv("channelId", _hex(id));
            p[3] = _kv("note", _q("channelId is the EIP-712 digest of the ChannelConfig (never signed)"));
            items[i] = _obj(p);
        }
        return _arr(items);
    }

    function _voucherTd(bytes32 id, uint128 ceiling) internal view returns (string memory) {
        return string.concat(
            '{"types":{"EIP712Domain":',
            DOMAIN_TYPE,
            ',"Voucher":[{"name":"channelId","type":"bytes32"},{"name":"maxClaimableAmount","type":"uint128"}]},"primaryType":"Voucher","domain":',
            _domainJson("Tollgate Channels", "1", address(channels)),
            ',"message":{"channelId":',
            _hex(id),
            ',"maxClaimableAmount":',
            _dec(ceiling),
            "}}"
        );
    }

    function _vouchers() internal view returns (string memory) {
        TollgateChannels.ChannelConfig[4] memory cs = _configs();
        uint128[4] memory ceilings = [uint128(0), uint128(1), uint128(1_234_567), type(uint128).max];
        string[] memory items = new string[](9);
        for (uint256 i; i < 4; ++i) {
            bytes32 id = channels.getChannelId(cs[i]);
            uint256 key = cs[i].payerAuthorizer == address(0) ? PAYER_KEY : PAYER_AUTH_KEY;
            bytes32 sh = keccak256(abi.encode(channels.VOUCHER_TYPEHASH(), id, ceilings[i]));
            bytes32 digest = channels.getVoucherDigest(id, ceilings[i]);
            assertEq(digest, keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), sh)), "voucher digest");
            items[i] = _signed(
                string.concat("voucher channel ", vm.toString(i)),
                _voucherTd(id, ceilings[i]),
                sh,
                digest,
                key,
                true,
                _sign(key, digest)
            );
        }
        // Cumulative ceilings on one channel.
        bytes32 id0 = channels.getChannelId(cs[0]);
        uint128[3] memory steps = [uint128(1_000), uint128(2_500), uint128(1_000_000)];
        for (uint256 k; k < 3; ++k) {
            bytes32 sh = keccak256(abi.encode(channels.VOUCHER_TYPEHASH(), id0, steps[k]));
            bytes32 digest = channels.getVoucherDigest(id0, steps[k]);
            items[4 + k] = _signed(
                string.concat("voucher cumulative ", vm.toString(uint256(steps[k]))),
                _voucherTd(id0, steps[k]),
                sh,
                digest,
                PAYER_KEY,
                true,
                _sign(PAYER_KEY, digest)
            );
        }
        // Rejected forms: the high-S twin, and a signature by a key that is not the channel signer.
        {
            bytes32 sh = keccak256(abi.encode(channels.VOUCHER_TYPEHASH(), id0, uint128(1_000)));
            bytes32 digest = channels.getVoucherDigest(id0, 1_000);
            items[7] = _signed(
                "voucher high-S twin (must be rejected)",
                _voucherTd(id0, 1_000),
                sh,
                digest,
                PAYER_KEY,
                false,
                _highS(_sign(PAYER_KEY, digest))
            );
            // `signer` is the channel's signer (the payer); the signature is the receiver's.
            items[8] = _signed(
                "voucher signed by the receiver instead of the payer (must be rejected)",
                _voucherTd(id0, 1_000),
                sh,
                digest,
                PAYER_KEY,
                false,
                _sign(RECEIVER_KEY, digest)
            );
        }
        return _arr(items);
    }

    function _refunds() internal view returns (string memory) {
        TollgateChannels.ChannelConfig[4] memory cs = _configs();
        string[] memory items = new string[](3);
        uint256[3] memory nonces = [uint256(0), 1, 42];
        uint128[3] memory amounts = [uint128(500), type(uint128).max, 1];
        uint256[3] memory keys = [RECEIVER_AUTH_KEY, RECEIVER_AUTH_KEY, RECEIVER_KEY];
        for (uint256 i; i < 3; ++i) {
            bytes32 id = channels.getChannelId(cs[i]);
            bytes32 sh = keccak256(abi.encode(channels.REFUND_TYPEHASH(), id, nonces[i], amounts[i]));
            bytes32 digest = channels.getRefundDigest(id, nonces[i], amounts[i]);
            assertEq(digest, keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), sh)), "refund digest");
            string memory td = string.concat(
                '{"types":{"EIP712Domain":',
                DOMAIN_TYPE,
                ',"Refund":[{"name":"channelId","type":"bytes32"},{"name":"nonce","type":"uint256"},{"name":"amount","type":"uint128"}]},"primaryType":"Refund","domain":',
                _domainJson("Tollgate Channels", "1", address(channels)),
                ',"message":{"channelId":',
                _hex(id),
                ',"nonce":',
                _dec(nonces[i]),
                ',"amount":',
                _dec(amounts[i]),
                "}}"
            );
            items[i] = _signed(
                string.concat("refund ", vm.toString(i)), td, sh, digest, keys[i], true, _sign(keys[i], digest)
            );
        }
        return _arr(items);
    }

    function _claimBatches() internal view returns (string memory) {
        TollgateChannels.ChannelConfig[4] memory cs = _configs();
        // Both items share the receiver side of config 0 (config 1 has the same group).
        TollgateChannels.ClaimItem[] memory items = new TollgateChannels.ClaimItem[](2);
        items[0] = TollgateChannels.ClaimItem(
            cs[0].payer, cs[0].payerAuthorizer, cs[0].withdrawDelay, cs[0].salt, 2_500, 2_000, ""
        );
        items[1] = TollgateChannels.ClaimItem(
            cs[1].payer, cs[1].payerAuthorizer, cs[1].withdrawDelay, cs[1].salt, 10_000, 10_000, ""
        );
        TollgateChannels.ClaimGroup memory g =
            TollgateChannels.ClaimGroup(cs[0].receiver, cs[0].receiverAuthorizer, cs[0].token);
        bytes32 id0 = channels.getChannelId(cs[0]);
        bytes32 id1 = channels.getChannelId(cs[1]);
        bytes32 e0 = keccak256(abi.encode(channels.CLAIM_ENTRY_TYPEHASH(), id0, uint128(2_500), uint128(2_000)));
        bytes32 e1 = keccak256(abi.encode(channels.CLAIM_ENTRY_TYPEHASH(), id1, uint128(10_000), uint128(10_000)));
        bytes32 sh = keccak256(abi.encode(channels.CLAIM_BATCH_TYPEHASH(), keccak256(abi.encodePacked(e0, e1))));
        bytes32 digest = channels.getClaimBatchDigest(g, items);
        assertEq(digest, keccak256(abi.encodePacked(hex"1901", channels.DOMAIN_SEPARATOR(), sh)), "claim batch digest");
        string memory td = string.concat(
            '{"types":{"EIP712Domain":',
            DOMAIN_TYPE,
            ',"ClaimBatch":[{"name":"claims","type":"ClaimEntry[]"}],"ClaimEntry":[{"name":"channelId","type":"bytes32"},{"name":"maxClaimableAmount","type":"uint128"},{"name":"totalClaimed","type":"uint128"}]},"primaryType":"ClaimBatch","domain":',
            _domainJson("Tollgate Channels", "1", address(channels)),
            ',"message":{"claims":[{"channelId":',
            _hex(id0),
            ',"maxClaimableAmount":"2500","totalClaimed":"2000"},{"channelId":',
            _hex(id1),
            ',"maxClaimableAmount":"10000","totalClaimed":"10000"}]}}'
        );
        string[] memory out = new string[](1);
        out[0] = _signed("claim batch of 2", td, sh, digest, RECEIVER_AUTH_KEY, true, _sign(RECEIVER_AUTH_KEY, digest));
        return _arr(out);
    }

    function _permitDeposits() internal view returns (string memory) {
        TollgateChannels.ChannelConfig[4] memory cs = _configs();
        bytes32 id = channels.getChannelId(cs[0]);
        bytes32 sh = keccak256(abi.encode(channels.PERMIT_DEPOSIT_TYPEHASH(), id, uint128(10e6), uint256(0)));
        bytes32 digest = channels.getPermitDepositDigest(id, 10e6, 0);
        string memory td = string.concat(
            '{"types":{"EIP712Domain":',
            DOMAIN_TYPE,
            ',"PermitDeposit":[{"name":"channelId","type":"bytes32"},{"name":"amount","type":"uint128"},{"name":"permitNonce","type":"uint256"}]},"primaryType":"PermitDeposit","domain":',
            _domainJson("Tollgate Channels", "1", address(channels)),
            ',"message":{"channelId":',
            _hex(id),
            ',"amount":"10000000","permitNonce":"0"}}'
        );
        string[] memory out = new string[](1);
        out[0] = _signed("permit-deposit consent", td, sh, digest, PAYER_KEY, true, _sign(PAYER_KEY, digest));
        return _arr(out);
    }

    function _authTd(
        string memory primary,
        address from,
        address to,
        uint256 value,
        uint256 va,
        uint256 vb,
        bytes32 nonce
    ) internal view returns (string memory) {
        return string.concat(
            '{"types":{"EIP712Domain":',
            DOMAIN_TYPE,
            ',"',
            primary,
            '":[{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]},"primaryType":"',
            primary,
            '","domain":',
            _domainJson("USD Coin", "2", address(usdc)),
            string.concat(
                ',"message":{"from":',
                _addr(from),
                ',"to":',
                _addr(to),
                ',"value":',
                _dec(value),
                ',"validAfter":',
                _dec(va),
                ',"validBefore":',
                _dec(vb),
                ',"nonce":',
                _hex(nonce),
                "}}"
            )
        );
    }

    function _eip3009(bool isReceive) internal view returns (string memory) {
        address payer = vm.addr(PAYER_KEY);
        string memory primary = isReceive ? "ReceiveWithAuthorization" : "TransferWithAuthorization";
        bytes32 typehash =
            isReceive ? usdc.RECEIVE_WITH_AUTHORIZATION_TYPEHASH() : usdc.TRANSFER_WITH_AUTHORIZATION_TYPEHASH();
        string[] memory items = new string[](2);
        // 1: an x402 `exact` payment of 0.01 USDC to the receiver (transfer) / a channel deposit
        //    with the channel-bound nonce (receive).
        address to = isReceive ? address(channels) : vm.addr(RECEIVER_KEY);
        bytes32 nonce = isReceive
            ? channels.depositAuthorizationNonce(channels.getChannelId(_configs()[0]), 1)
            : keccak256("x402 exact payment 1");
        uint256 value = isReceive ? 10e6 : 10_000;
        for (uint256 i; i < 2; ++i) {
            uint256 va = i == 0 ? 0 : 1_700_000_000;
            uint256 vb = i == 0 ? 1_800_000_000 : type(uint256).max;
            bytes32 sh = keccak256(abi.encode(typehash, payer, to, value, va, vb, nonce));
            bytes32 digest = keccak256(abi.encodePacked(hex"1901", usdc.DOMAIN_SEPARATOR(), sh));
            items[i] = _signed(
                string.concat(primary, " ", vm.toString(i)),
                _authTd(primary, payer, to, value, va, vb, nonce),
                sh,
                digest,
                PAYER_KEY,
                true,
                _sign(PAYER_KEY, digest)
            );
            value = type(uint256).max;
            nonce = bytes32(uint256(0xdeadbeef));
        }
        return _arr(items);
    }

    function _permits() internal view returns (string memory) {
        address payer = vm.addr(PAYER_KEY);
        string[] memory items = new string[](2);
        uint256[2] memory values = [uint256(10e6), type(uint256).max];
        uint256[2] memory nonces = [uint256(0), 7];
        for (uint256 i; i < 2; ++i) {
            bytes32 sh = keccak256(
                abi.encode(
                    usdc.PERMIT_TYPEHASH(), payer, address(channels), values[i], nonces[i], uint256(1_800_000_000)
                )
            );
            bytes32 digest = keccak256(abi.encodePacked(hex"1901", usdc.DOMAIN_SEPARATOR(), sh));
            string memory td = string.concat(
                '{"types":{"EIP712Domain":',
                DOMAIN_TYPE,
                ',"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},"primaryType":"Permit","domain":',
                _domainJson("USD Coin", "2", address(usdc)),
                string.concat(
                    ',"message":{"owner":',
                    _addr(payer),
                    ',"spender":',
                    _addr(address(channels)),
                    ',"value":',
                    _dec(values[i]),
                    ',"nonce":',
                    _dec(nonces[i]),
                    ',"deadline":"1800000000"}}'
                )
            );
            items[i] = _signed(
                string.concat("permit ", vm.toString(i)), td, sh, digest, PAYER_KEY, true, _sign(PAYER_KEY, digest)
            );
        }
        return _arr(items);
    }

    function _keys() internal pure returns (string memory) {
        string[] memory p = new string[](5);
        p[0] = _kv("deployer", _keyJson(DEPLOYER_KEY));
        p[1] = _kv("payer", _keyJson(PAYER_KEY));
        p[2] = _kv("payerAuthorizer", _keyJson(PAYER_AUTH_KEY));
        p[3] = _kv("receiver", _keyJson(RECEIVER_KEY));
        p[4] = _kv("receiverAuthorizer", _keyJson(RECEIVER_AUTH_KEY));
        return _obj(p);
    }

    function _keyJson(uint256 key) internal pure returns (string memory) {
        string[] memory p = new string[](2);
        p[0] = _kv("privateKey", _hex(bytes32(key)));
        p[1] = _kv("address", _addr(vm.addr(key)));
        return _obj(p);
    }

    // ================================================================== the generator

    function test_writeVectors() public {
        string[] memory p = new string[](16);
        p[0] = _ks(
            "description",
            "EIP-712 vectors for tollgate's contracts. Generated by contracts/test/Vectors.t.sol; do not edit."
        );
        p[1] = _kv("version", "1");
        p[2] = _kv("chainId", vm.toString(block.chainid));
        p[3] = _kv(
            "contracts",
            string.concat(
                '{"TestUSDC":',
                _addr(address(usdc)),
                ',"TollgateChannels":',
                _addr(address(channels)),
                ',"TollgatePasses":',
                _addr(address(passes)),
                "}"
            )
        );
        p[4] = _kv("keys", _keys());
        p[5] = _kv("domains", _domains());
        p[6] = _kv("types", _types());
        p[7] = _kv("channelIds", _channelIds());
        p[8] = _kv("vouchers", _vouchers());
        p[9] = _kv("refunds", _refunds());
        p[10] = _kv("claimBatches", _claimBatches());
        p[11] = _kv("permitDeposits", _permitDeposits());
        p[12] = _kv("transferWithAuthorization", _eip3009(false));
        p[13] = _kv("receiveWithAuthorization", _eip3009(true));
        p[14] = _kv("permits", _permits());
        p[15] = _kv("depositAuthorizationNonces", _depositNonces());
        vm.writeFile(PATH, string.concat(_obj(p), "\n"));
    }

    function _depositNonces() internal view returns (string memory) {
        bytes32 id = channels.getChannelId(_configs()[0]);
        string[] memory items = new string[](2);
        uint256[2] memory salts = [uint256(1), type(uint256).max];
        for (uint256 i; i < 2; ++i) {
            string[] memory p = new string[](3);
            p[0] = _kv("channelId", _hex(id));
            p[1] = _kv("salt", _dec(salts[i]));
            p[2] = _kv("nonce", _hex(channels.depositAuthorizationNonce(id, salts[i])));
            items[i] = _obj(p);
        }
        return _arr(items);
    }

    /// @notice The deploy order above gives anvil's well-known addresses.
    function test_vectorAddressesAreFreshAnvilDeploy() public view {
        assertEq(address(usdc), 0x5FbDB2315678afecb367f032d93F642f64180aa3, "TestUSDC at nonce 0");
        assertEq(address(channels), 0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512, "TollgateChannels at nonce 1");
        assertEq(address(passes), 0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0, "TollgatePasses at nonce 2");
    }
}

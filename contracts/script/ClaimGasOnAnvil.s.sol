// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "../test/utils/Test.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";
import {TestUSDC} from "../src/TestUSDC.sol";

/// @title ClaimGasOnAnvil
/// @notice Cross-checks the forge gas benchmark on a real node: deploys TestUSDC and
///         TollgateChannels, opens 100 channels, warms the receiver's totals, and sends one
///         claimPacked transaction for the 100 channels; read its receipt's gasUsed.
///         Run: anvil --block-time 1 & forge script script/ClaimGasOnAnvil.s.sol --rpc-url
///         http://127.0.0.1:8545 --broadcast --slow   (see docs/PERFORMANCE-contracts.md).
/// @dev Records: flags (bits 3-6 = amount width - 1: 3 bytes here), payer, 3-byte delay,
///      ceiling and total in 3 bytes each, EIP-2098 signature.
contract ClaimGasOnAnvil is Test {
    // anvil's default accounts 0 (deployer, payer of deposits) and 1 (receiver).
    uint256 internal constant KEY0 = 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80;
    uint256 internal constant KEY1 = 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d;

    function run() external {
        address receiver = vm.addr(KEY1);
        vm.startBroadcast(KEY0);
        TestUSDC usdc = new TestUSDC("USD Coin", "USDC", "2", vm.addr(KEY0));
        TollgateChannels channels = new TollgateChannels();
        usdc.mint(vm.addr(KEY0), 1_000e6 + 1);
        usdc.approve(address(channels), type(uint256).max);
        TollgateChannels.ChannelConfig memory c = TollgateChannels.ChannelConfig({
            payer: address(0),
            payerAuthorizer: address(0),
            receiver: receiver,
            receiverAuthorizer: address(0),
            token: address(usdc),
            withdrawDelay: 3600,
            salt: bytes32(0)
        });
        bytes memory packed;
        for (uint256 i; i < 100; ++i) {
            uint256 key = 0x100000 + i;
            c.payer = vm.addr(key);
            bytes32 id = channels.deposit(c, 10e6);
            uint128 ceiling = uint128(1_234_567 + i);
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, channels.getVoucherDigest(id, ceiling));
            uint256 vs = uint256(s) | (v == 28 ? 1 << 255 : 0);
            packed = bytes.concat(
                packed,
                abi.encodePacked(
                    uint8(2 << 3), c.payer, uint24(3600), uint24(ceiling), uint24(1_200_000 + i), r, bytes32(vs)
                )
            );
        }
        // Warm-up: one earlier claim makes the receiver's totals slot non-zero (steady state).
        c.payer = vm.addr(KEY0);
        c.salt = bytes32(uint256(0xfeed));
        bytes32 wid = channels.deposit(c, 1);
        (uint8 wv, bytes32 wr, bytes32 ws) = vm.sign(KEY0, channels.getVoucherDigest(wid, 1));
        vm.stopBroadcast();

        TollgateChannels.ClaimGroup memory g =
            TollgateChannels.ClaimGroup({receiver: receiver, receiverAuthorizer: address(0), token: address(usdc)});
        // The warm-up record carries a salt (flag bit 1); its amounts fit one byte (width 1).
        bytes memory warm = abi.encodePacked(
            uint8(2),
            vm.addr(KEY0),
            uint24(3600),
            bytes32(uint256(0xfeed)),
            uint8(1),
            uint8(1),
            wr,
            bytes32(uint256(ws) | (wv == 28 ? 1 << 255 : 0))
        );
        vm.startBroadcast(KEY1);
        channels.claimPacked(g, warm);
        channels.claimPacked(g, packed);
        vm.stopBroadcast();
    }
}

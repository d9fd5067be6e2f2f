// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {Vm} from "./utils/Vm.sol";
import {console} from "./utils/Test.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";
import {TollgatePasses} from "../src/TollgatePasses.sol";

/// @title GasBench
/// @notice Shared measuring helper. Every benchmark sends one pre-encoded call and reports, on a
///         `GAS|...` console line that ./gas-table.sh turns into docs/PERFORMANCE-contracts.md:
///         the call's execution gas (`vm.lastCallGas`), its calldata gas (EIP-2028, or the
///         EIP-7623 floor when higher), and the transaction total (21,000 + both - refund).
///         State is prepared in setUp() so that storage is cold, as in a real transaction.
abstract contract GasBench is TollgateTestBase {
    function _measure(
        string memory label,
        address target,
        bytes memory data,
        uint256 units,
        address from,
        uint256 value
    ) internal returns (uint256 execution) {
        vm.prank(from);
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        Vm.Gas memory g = vm.lastCallGas();
        execution = g.gasTotalUsed;
        uint256 refund = g.gasRefunded > 0 ? uint256(uint64(g.gasRefunded)) : 0;
        _report(label, units, execution, _calldataGas(data, execution), refund);
    }

    function _report(string memory label, uint256 units, uint256 execution, uint256 cd, uint256 refund) internal view {
        uint256 gross = 21_000 + cd + execution;
        uint256 cap = gross / 5;
        uint256 total = gross - (refund < cap ? refund : cap);
        string memory line = string.concat("GAS|", label, "|", vm.toString(units), "|", vm.toString(execution), "|");
        line = string.concat(line, vm.toString(cd), "|", vm.toString(total), "|", vm.toString((total - 21_000) / units));
        console.log(line);
    }
}

/// @title GasChannelsTest
/// @notice Deposit, top-up, claims of 1 / 10 / 100 channels, sweep, withdraw, refund.
contract GasChannelsTest is GasBench {
    uint256 internal constant CHANNELS = 100;

    TollgateChannels.ChannelConfig internal cfg;
    TollgateChannels.ClaimGroup internal group;
    TollgateChannels.ClaimItem[] internal items;
    uint256 internal firstKey = 0x100000;

    function setUp() public {
        _setUpBase();
        cfg = _config(address(usdc), bytes32(0));
        group = _group(cfg);
        for (uint256 i; i < CHANNELS; ++i) {
            TollgateChannels.ChannelConfig memory c = cfg;
            c.payer = vm.addr(firstKey + i);
            bytes32 id = _depositUsdc(c, 10e6);
            // Realistic USDC amounts: a ceiling of ~1.23 USDC, 1.2 USDC charged.
            uint128 ceiling = uint128(1_234_567 + i);
            items.push(
                _item(c, ceiling, 1_200_000 + uint128(i), _sign(firstKey + i, channels.getVoucherDigest(id, ceiling)))
            );
        }
        // Steady state: the receiver has claimed before, so its totals slot is already non-zero.
        TollgateChannels.ChannelConfig memory warm = cfg;
        warm.salt = bytes32(uint256(0xfeed));
        bytes32 wid = _depositUsdc(warm, 1);
        TollgateChannels.ClaimItem[] memory w = _items1(_item(warm, 1, 1, _signVoucher(PAYER_KEY, wid, 1)));
        vm.prank(receiver);
        channels.claim(group, w);
        usdc.mint(address(this), 100e6);
        usdc.approve(address(channels), type(uint256).max);
    }

    function _first(uint256 n) internal view returns (TollgateChannels.ClaimItem[] memory its) {
        its = new TollgateChannels.ClaimItem[](n);
        for (uint256 i; i < n; ++i) {
            its[i] = items[i];
        }
    }

    function _claimPacked(uint256 n) internal {
        bytes memory data = abi.encodeCall(TollgateChannels.claimPacked, (group, _pack(_first(n))));
        uint256 got = _measure(string.concat("claimPacked x", vm.toString(n)), address(channels), data, n, receiver, 0);
        got;
        (, uint128 claimed) = channels.channels(channels.getChannelId(_cfgOf(items[n - 1])));
        assertEq(claimed, items[n - 1].totalClaimed, "applied");
    }

    function _claimAbi(uint256 n) internal {
        bytes memory data = abi.encodeCall(TollgateChannels.claim, (group, _first(n)));
        _measure(string.concat("claim (ABI) x", vm.toString(n)), address(channels), data, n, receiver, 0);
        (, uint128 claimed) = channels.channels(channels.getChannelId(_cfgOf(items[n - 1])));
        assertEq(claimed, items[n - 1].totalClaimed, "applied");
    }

    function _cfgOf(TollgateChannels.ClaimItem memory it)
        internal
        view
        returns (TollgateChannels.ChannelConfig memory c)
    {
        c = cfg;
        c.payer = it.payer;
        c.payerAuthorizer = it.payerAuthorizer;
        c.withdrawDelay = it.withdrawDelay;
        c.salt = it.salt;
    }

    function test_gas_claimPacked_1() public {
        _claimPacked(1);
    }

    function test_gas_claimPacked_10() public {
        _claimPacked(10);
    }

    function test_gas_claimPacked_100() public {
        _claimPacked(100);
    }

    function test_gas_claim_1() public {
        _claimAbi(1);
    }

    function test_gas_claim_10() public {
        _claimAbi(10);
    }

    function test_gas_claim_100() public {
        _claimAbi(100);
    }

    function test_gas_deposit_open() public {
        TollgateChannels.ChannelConfig memory c = cfg;
        c.salt = bytes32(uint256(1));
        _measure(
            "deposit (open, USDC)",
            address(channels),
            abi.encodeCall(TollgateChannels.deposit, (c, 10e6)),
            1,
            address(this),
            0
        );
    }

    function test_gas_deposit_topUp() public {
        TollgateChannels.ChannelConfig memory c = _cfgOf(items[0]);
        _measure(
            "deposit (top-up, USDC)",
            address(channels),
            abi.encodeCall(TollgateChannels.deposit, (c, 10e6)),
            1,
            address(this),
            0
        );
    }

    function test_gas_deposit_eth() public {
        TollgateChannels.ChannelConfig memory c = _config(address(0), bytes32(0));
        vm.deal(address(this), 1 ether);
        _measure(
            "deposit (open, ETH)",
            address(channels),
            abi.encodeCall(TollgateChannels.deposit, (c, 1 ether)),
            1,
            address(this),
            1 ether
        );
    }

    function test_gas_depositWithAuthorization() public {
        TollgateChannels.ChannelConfig memory c = cfg;
        c.salt = bytes32(uint256(2));
        usdc.mint(payer, 10e6);
        uint256 vb = block.timestamp + 1 hours;
        bytes32 nonce = channels.depositAuthorizationNonce(channels.getChannelId(c), 1);
        bytes memory sig = _sign(PAYER_KEY, _receiveAuthDigest(payer, address(channels), 10e6, 0, vb, nonce));
        _measure(
            "depositWithAuthorization (EIP-3009, open)",
            address(channels),
            abi.encodeCall(TollgateChannels.depositWithAuthorization, (c, 10e6, 0, vb, 1, sig)),
            1,
            relayer,
            0
        );
    }

    function test_gas_depositWithPermit() public {
        TollgateChannels.ChannelConfig memory c = cfg;
        c.salt = bytes32(uint256(3));
        usdc.mint(payer, 10e6);
        uint256 dl = block.timestamp + 1 hours;
        bytes memory p = _sign(PAYER_KEY, _permitDigest(payer, address(channels), 10e6, 0, dl));
        bytes memory consent = _sign(PAYER_KEY, channels.getPermitDepositDigest(channels.getChannelId(c), 10e6, 0));
        _measure(
            "depositWithPermit (EIP-2612, open)",
            address(channels),
            abi.encodeCall(TollgateChannels.depositWithPermit, (c, 10e6, dl, p, consent)),
            1,
            relayer,
            0
        );
    }

    function test_gas_sweep() public {
        bytes memory all = _pack(_first(100));
        vm.prank(receiver);
        channels.claimPacked(group, all);
        _measure(
            "sweep (100 channels' claims, one transfer)",
            address(channels),
            abi.encodeCall(TollgateChannels.sweep, (receiver, address(usdc))),
            1,
            relayer,
            0
        );
        assertEq(channels.unswept(receiver, address(usdc)), 0, "swept");
    }

    function test_gas_initiateWithdraw() public {
        TollgateChannels.ChannelConfig memory c = _cfgOf(items[0]);
        _measure(
            "initiateWithdraw",
            address(channels),
            abi.encodeCall(TollgateChannels.initiateWithdraw, (c, 5e6)),
            1,
            c.payer,
            0
        );
    }

    function test_gas_finalizeWithdraw() public {
        TollgateChannels.ChannelConfig memory c = _cfgOf(items[0]);
        vm.prank(c.payer);
        channels.initiateWithdraw(c, 10e6);
        vm.warp(block.timestamp + DELAY);
        _measure(
            "finalizeWithdraw", address(channels), abi.encodeCall(TollgateChannels.finalizeWithdraw, (c)), 1, c.payer, 0
        );
    }

    function test_gas_refundWithSignature() public {
        TollgateChannels.ChannelConfig memory c = _cfgOf(items[0]);
        bytes32 id = channels.getChannelId(c);
        bytes memory sig = _sign(RECEIVER_AUTH_KEY, channels.getRefundDigest(id, 0, 4e6));
        _measure(
            "refundWithSignature",
            address(channels),
            abi.encodeCall(TollgateChannels.refundWithSignature, (c, 4e6, 0, sig)),
            1,
            relayer,
            0
        );
    }
}

/// @title GasChannels1000Test
/// @notice A claim of 1,000 channels in one transaction (about 11M gas: fits a 36M-gas block).
contract GasChannels1000Test is GasBench {
    TollgateChannels.ClaimGroup internal group;
    bytes internal packed;

    function setUp() public {
        _setUpBase();
        TollgateChannels.ChannelConfig memory c = _config(address(usdc), bytes32(0));
        group = _group(c);
        usdc.mint(address(this), 1_000 * 10e6 + 1);
        usdc.approve(address(channels), type(uint256).max);
        TollgateChannels.ClaimItem[] memory its = new TollgateChannels.ClaimItem[](1_000);
        for (uint256 i; i < 1_000; ++i) {
            c.payer = vm.addr(0x200000 + i);
            bytes32 id = channels.deposit(c, 10e6);
            uint128 ceiling = uint128(1_234_567 + i);
            its[i] =
                _item(c, ceiling, 1_200_000 + uint128(i), _sign(0x200000 + i, channels.getVoucherDigest(id, ceiling)));
        }
        packed = _pack(its);
        TollgateChannels.ChannelConfig memory warm = _config(address(usdc), bytes32(uint256(0xfeed)));
        bytes32 wid = channels.deposit(warm, 1);
        TollgateChannels.ClaimItem[] memory w = _items1(_item(warm, 1, 1, _signVoucher(PAYER_KEY, wid, 1)));
        vm.prank(receiver);
        channels.claim(group, w);
    }

    function test_gas_claimPacked_1000() public {
        _measure(
            "claimPacked x1000",
            address(channels),
            abi.encodeCall(TollgateChannels.claimPacked, (group, packed)),
            1_000,
            receiver,
            0
        );
        assertEq(channels.unswept(receiver, address(usdc)), 1 + 1_000 * 1_200_000 + 999 * 1_000 / 2, "all applied");
    }
}

/// @title GasPassesTest
/// @notice Pass purchase (mint), renewal, transfer, delegation.
contract GasPassesTest is GasBench {
    TollgatePasses internal passes;
    uint256 internal ethPlan;
    uint256 internal usdcPlan;
    address internal alice = address(0xA11CE0);
    address internal bob = address(0xB0B0);

    function setUp() public {
        _setUpBase();
        passes = new TollgatePasses("", address(this));
        ethPlan = passes.createPlan(
            TollgatePasses.PlanParams({
                token: address(0),
                price: 0.01 ether,
                period: 30 days,
                quota: 1_000,
                maxSupply: 0,
                transferable: true,
                active: true
            })
        );
        usdcPlan = passes.createPlan(
            TollgatePasses.PlanParams({
                token: address(usdc),
                price: 5e6,
                period: 30 days,
                quota: 1_000,
                maxSupply: 1_000,
                transferable: true,
                active: true
            })
        );
        vm.deal(alice, 1 ether);
        _mintAndApprove(alice, 100e6, address(passes));
        // A first pass already sold (supply counter and proceeds slots are non-zero).
        vm.prank(alice);
        passes.purchase{value: 0.01 ether}(ethPlan, address(0xF1257), 1);
        vm.prank(alice);
        passes.purchase(usdcPlan, address(0xF1257), 1);
        vm.prank(alice);
        passes.purchase(usdcPlan, alice, 1);
    }

    function test_gas_purchase_eth() public {
        _measure(
            "pass purchase (ETH, new pass)",
            address(passes),
            abi.encodeCall(TollgatePasses.purchase, (ethPlan, bob, 1)),
            1,
            alice,
            0.01 ether
        );
    }

    function test_gas_purchase_usdc() public {
        _measure(
            "pass purchase (USDC, new pass)",
            address(passes),
            abi.encodeCall(TollgatePasses.purchase, (usdcPlan, bob, 1)),
            1,
            alice,
            0
        );
    }

    function test_gas_renew_usdc() public {
        _measure(
            "pass renewal (USDC)",
            address(passes),
            abi.encodeCall(TollgatePasses.purchase, (usdcPlan, alice, 1)),
            1,
            alice,
            0
        );
    }

    function test_gas_transfer() public {
        _measure(
            "pass transfer (safeTransferFrom)",
            address(passes),
            abi.encodeWithSignature(
                "safeTransferFrom(address,address,uint256,uint256,bytes)", alice, bob, usdcPlan, 1, ""
            ),
            1,
            alice,
            0
        );
    }

    function test_gas_delegate() public {
        _measure(
            "pass delegate",
            address(passes),
            abi.encodeCall(TollgatePasses.delegate, (usdcPlan, bob, uint64(block.timestamp + 1 days))),
            1,
            alice,
            0
        );
    }
}

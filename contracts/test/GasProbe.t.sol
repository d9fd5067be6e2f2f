// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TollgateTestBase} from "./utils/TollgateTestBase.sol";
import {console} from "./utils/Test.sol";
import {TollgateChannels} from "../src/TollgateChannels.sol";

contract GasProbe is TollgateTestBase {
    TollgateChannels.ClaimGroup internal g;
    TollgateChannels.ClaimItem[] internal items;

    function setUp() public {
        _setUpBase();
        for (uint256 i; i < 100; ++i) {
            uint256 key = 0x1000 + i;
            TollgateChannels.ChannelConfig memory c = _config(address(usdc), bytes32(0));
            c.payer = vm.addr(key);
            bytes32 id = _depositUsdc(c, 1_000_000);
            TollgateChannels.ClaimItem memory it = _item(c, 123_456, 120_000, _sign(key, channels.getVoucherDigest(id, 123_456)));
            items.push(it);
            if (i == 0) g = _group(c);
        }
    }

    function test_probe() public {
        TollgateChannels.ClaimItem[] memory its = items;
        TollgateChannels.ClaimGroup memory gg = g;
        bytes memory cd = abi.encodeCall(TollgateChannels.claimPacked, (gg, _pack(its)));
        vm.prank(receiver);
        uint256 g0 = gasleft();
        (bool ok, bytes memory ret) = address(channels).call(cd);
        uint256 used = g0 - gasleft();
        require(ok);
        uint256 amt = abi.decode(ret, (uint256));
        console.log("exec", used);
        console.log("calldata", _calldataGas(cd, used));
        console.log("per item total", (used + _calldataGas(cd, used)) / 100);
        assertEq(amt, 100 * 120_000, "amount");
    }
}

contract GasProbe2 is GasProbe {
    function _run(string memory label, TollgateChannels.ClaimItem[] memory its) internal {
        bytes memory cd = abi.encodeCall(TollgateChannels.claim, (g, its));
        vm.prank(receiver);
        uint256 g0 = gasleft();
        (bool ok,) = address(channels).call(cd);
        uint256 used = g0 - gasleft();
        require(ok);
        console.log(label, used / its.length);
    }

    function test_breakdown() public {
        TollgateChannels.ClaimItem[] memory its = items;
        for (uint256 i; i < its.length; ++i) its[i].totalClaimed = 200_000; // above ceiling
        _run("above-ceiling (hash+event)", its);
    }

    function test_breakdown2() public {
        TollgateChannels.ClaimItem[] memory its = items;
        for (uint256 i; i < its.length; ++i) its[i].totalClaimed = 0; // not increasing: sload + event
        _run("not-increasing (hash+sload+event)", its);
    }

    function test_breakdown3() public {
        TollgateChannels.ClaimItem[] memory its = items;
        for (uint256 i; i < its.length; ++i) its[i].signature[5] = 0x01; // bad sig: + ecrecover
        _run("bad-sig (hash+sload+ecrecover+event)", its);
    }
}

contract GasProbe3 is GasProbe {
    function test_one() public {
        TollgateChannels.ClaimItem[] memory its = new TollgateChannels.ClaimItem[](2);
        its[0] = items[0];
        its[1] = items[1];
        bytes memory cd = abi.encodeCall(TollgateChannels.claimPacked, (g, _pack(its)));
        vm.prank(receiver);
        (bool ok,) = address(channels).call(cd);
        require(ok);
    }
}

contract GasProbe4 is GasProbe {
    function _runN(uint256 n) internal {
        TollgateChannels.ClaimItem[] memory its = new TollgateChannels.ClaimItem[](n);
        for (uint256 i; i < n; ++i) its[i] = items[i];
        bytes memory cd = abi.encodeCall(TollgateChannels.claimPacked, (g, _pack(its)));
        vm.prank(receiver);
        uint256 g0 = gasleft();
        (bool ok,) = address(channels).call(cd);
        uint256 used = g0 - gasleft();
        require(ok);
        console.log("n", n);
        console.log("  exec/item", used / n);
    }
    function test_n1() public { _runN(1); }
    function test_n2() public { _runN(2); }
    function test_n10() public { _runN(10); }
    function test_n50() public { _runN(50); }
    function test_n100() public { _runN(100); }
}

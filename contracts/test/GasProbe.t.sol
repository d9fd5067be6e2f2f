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
        bytes memory cd = abi.encodeCall(TollgateChannels.claim, (gg, its));
        vm.prank(receiver);
        uint256 g0 = gasleft();
        uint256 amt = channels.claim(gg, its);
        uint256 used = g0 - gasleft();
        console.log("exec", used);
        console.log("calldata", _calldataGas(cd, used));
        console.log("per item total", (used + _calldataGas(cd, used)) / 100);
        assertEq(amt, 100 * 120_000, "amount");
    }
}

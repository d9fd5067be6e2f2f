// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "./utils/Test.sol";
import {TollgatePasses} from "../src/TollgatePasses.sol";

/// @title PassesHandler
/// @notice Random purchases, renewals, transfers, delegations, revocations and time jumps among
///         five users, with an independent model of who may use the pass.
contract PassesHandler is Test {
    uint256 internal constant U = 5;

    TollgatePasses public passes;
    uint256 public planId;
    address[U] public users;

    // Model.
    bool[U] internal holds;
    uint64[U] internal expiry;
    uint256[U] internal delegateOf; // index + 1 of the delegatee, 0 = none
    uint64[U] internal delegateUntil;
    bool public modelBroken;

    constructor() {
        passes = new TollgatePasses("", address(this));
        planId = passes.createPlan(
            TollgatePasses.PlanParams({
                token: address(0),
                price: 1 gwei,
                period: 1 days,
                quota: 100,
                maxSupply: 0,
                transferable: true,
                active: true
            })
        );
        for (uint256 i; i < U; ++i) {
            users[i] = address(uint160(0xB0000 + i));
            vm.deal(users[i], 1_000 ether);
        }
    }

    function count() external pure returns (uint256) {
        return U;
    }

    /// @notice Whether the model lets user `u` use the pass through `holder` (itself or a
    ///         delegating holder), and until when.
    function validVia(uint256 u, address holder) external view returns (bool ok, uint64 until) {
        if (holder == users[u]) {
            if (holds[u] && expiry[u] > block.timestamp) return (true, expiry[u]);
            return (false, 0);
        }
        for (uint256 h; h < U; ++h) {
            if (users[h] == holder && _live(h, u)) {
                return (true, delegateUntil[h] < expiry[h] ? delegateUntil[h] : expiry[h]);
            }
        }
        return (false, 0);
    }

    /// @notice Whether the model entitles user `u` at all.
    function anyEntitlement(uint256 u) external view returns (bool) {
        if (holds[u] && expiry[u] > block.timestamp) return true;
        for (uint256 h; h < U; ++h) {
            if (_live(h, u)) return true;
        }
        return false;
    }

    /// @dev Holder h has an unexpired pass and a live delegation to user u.
    function _live(uint256 h, uint256 u) internal view returns (bool) {
        return holds[h] && expiry[h] > block.timestamp && delegateOf[h] == u + 1 && delegateUntil[h] > block.timestamp;
    }

    function holdsInModel(uint256 u) external view returns (bool) {
        return holds[u];
    }

    // ------------------------------------------------------------------ actions

    function buy(uint256 buyer, uint256 holder, uint32 periods) external {
        buyer %= U;
        holder %= U;
        periods = uint32(bound(periods, 1, 30));
        vm.prank(users[buyer]);
        uint64 e = passes.purchase{value: 1 gwei * uint256(periods)}(planId, users[holder], periods);
        bool live = holds[holder] && expiry[holder] > block.timestamp;
        uint256 start = live ? expiry[holder] : block.timestamp;
        if (e != start + uint256(periods) * 1 days) modelBroken = true;
        if (!live) {
            delegateOf[holder] = 0; // a lapsed pass comes back without its delegation
            delegateUntil[holder] = 0;
        }
        holds[holder] = true;
        expiry[holder] = e;
    }

    function transfer(uint256 from, uint256 to) external {
        from %= U;
        to %= U;
        if (!holds[from] || from == to) return;
        vm.prank(users[from]);
        try passes.safeTransferFrom(users[from], users[to], planId, 1, "") {
            if (holds[to]) modelBroken = true; // must have reverted
            holds[to] = true;
            expiry[to] = expiry[from];
            holds[from] = false;
            expiry[from] = 0;
            delegateOf[from] = 0;
            delegateUntil[from] = 0;
        } catch {
            if (!holds[to]) modelBroken = true; // only an occupied recipient may refuse
        }
    }

    function delegate(uint256 holder, uint256 delegatee, uint256 duration) external {
        holder %= U;
        delegatee %= U;
        if (!holds[holder] || holder == delegatee) return;
        uint64 until = uint64(block.timestamp + bound(duration, 1, 10 days));
        // A delegatee already served by another holder's live delegation is refused.
        bool taken;
        for (uint256 h; h < U; ++h) {
            if (h != holder && _live(h, delegatee)) taken = true;
        }
        vm.prank(users[holder]);
        try passes.delegate(planId, users[delegatee], until) {
            if (taken) modelBroken = true;
            delegateOf[holder] = delegatee + 1;
            delegateUntil[holder] = until;
        } catch {
            if (!taken) modelBroken = true;
        }
    }

    function revoke(uint256 holder) external {
        holder %= U;
        if (delegateOf[holder] == 0) return;
        vm.prank(users[holder]);
        passes.revokeDelegation(planId);
        delegateOf[holder] = 0;
        delegateUntil[holder] = 0;
    }

    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 1, 3 days));
    }
}

/// @title TollgatePassesInvariantTest
/// @notice Only holders of unexpired passes and live delegates are entitled; a transferred pass
///         entitles its new holder only; a holder has at most one pass per plan.
contract TollgatePassesInvariantTest is Test {
    PassesHandler internal handler;
    TollgatePasses internal passes;

    function setUp() public {
        vm.warp(1_700_000_000);
        handler = new PassesHandler();
        passes = handler.passes();
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](5);
        selectors[0] = PassesHandler.buy.selector;
        selectors[1] = PassesHandler.transfer.selector;
        selectors[2] = PassesHandler.delegate.selector;
        selectors[3] = PassesHandler.revoke.selector;
        selectors[4] = PassesHandler.warp.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_entitlementMatchesModel() public view {
        uint256 planId = handler.planId();
        for (uint256 u; u < handler.count(); ++u) {
            (bool ok, uint64 until, address holder) = passes.entitled(handler.users(u), planId);
            assertEq(ok, handler.anyEntitlement(u), "entitled iff holder or live delegate");
            if (ok) {
                (bool valid, uint64 expectedUntil) = handler.validVia(u, holder);
                assertTrue(valid, "through a holder that really entitles the user");
                assertEq(until, expectedUntil, "until");
            } else {
                assertEq(holder, address(0), "no holder when not entitled");
            }
        }
    }

    function invariant_onePassPerHolderAndSupply() public view {
        uint256 planId = handler.planId();
        uint256 held;
        for (uint256 u; u < handler.count(); ++u) {
            uint256 b = passes.balanceOf(handler.users(u), planId);
            assertLe(b, 1, "at most one pass");
            assertEq(b == 1, handler.holdsInModel(u), "holder set matches the model");
            held += b;
        }
        assertEq(held, passes.getPlan(planId).supply, "every minted pass is held by one user");
    }

    function invariant_handlerModelConsistent() public view {
        assertFalse(handler.modelBroken(), "contract diverged from the rules");
    }
}

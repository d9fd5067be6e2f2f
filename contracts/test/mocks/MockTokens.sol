// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Misbehaving ERC-20 tokens for tests
/// @notice Each token breaks one assumption a naive integration would make. All mint freely.

/// @notice A plain, well-behaved token (18 decimals), for multi-token tests.
contract MockToken is ERC20 {
    constructor(string memory name_) ERC20(name_, name_) {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @notice Returns false instead of reverting when it refuses a transfer (can be switched on).
contract ReturnsFalseToken is ERC20 {
    bool public refuse;

    constructor() ERC20("False", "FALSE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setRefuse(bool r) external {
        refuse = r;
    }

    function transfer(address to, uint256 amount) public override returns (bool) {
        if (refuse) return false;
        return super.transfer(to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) public override returns (bool) {
        if (refuse) return false;
        return super.transferFrom(from, to, amount);
    }
}

/// @notice Returns nothing from transfer/transferFrom (USDT style).
contract NoReturnToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function approve(address spender, uint256 amount) external {
        allowance[msg.sender][spender] = amount;
    }

    function transfer(address to, uint256 amount) external {
        require(balanceOf[msg.sender] >= amount, "balance");
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
    }

    function transferFrom(address from, address to, uint256 amount) external {
        require(balanceOf[from] >= amount && allowance[from][msg.sender] >= amount, "balance/allowance");
        allowance[from][msg.sender] -= amount;
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
    }
}

/// @notice Takes a 1% fee on every transfer (burnt), so recipients get less than sent.
contract FeeOnTransferToken is ERC20 {
    constructor() ERC20("Fee", "FEE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 amount) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = amount / 100;
            super._update(from, address(0), fee);
            super._update(from, to, amount - fee);
        } else {
            super._update(from, to, amount);
        }
    }
}

/// @notice Reverts on every transfer once switched on.
contract RevertingToken is ERC20 {
    bool public broken;

    error RevertingToken__Broken();

    constructor() ERC20("Revert", "REV") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setBroken(bool b) external {
        broken = b;
    }

    function _update(address from, address to, uint256 amount) internal override {
        if (broken) revert RevertingToken__Broken();
        super._update(from, to, amount);
    }
}

/// @notice Claims to move tokens but moves none (transfer returns true, balances unchanged).
contract LyingToken is ERC20 {
    constructor() ERC20("Lie", "LIE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function transferFrom(address, address, uint256) public pure override returns (bool) {
        return true;
    }
}

/// @notice Calls back into a target during transfers (to probe reentrancy guards).
contract ReentrantToken is ERC20 {
    address public target;
    bytes public payload;
    bool public lastCallSucceeded;
    bytes public lastRevertData;

    constructor() ERC20("Reenter", "RE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
    }

    function _update(address from, address to, uint256 amount) internal override {
        super._update(from, to, amount);
        address t = target;
        if (t != address(0) && from != address(0)) {
            target = address(0);
            (bool ok, bytes memory data) = t.call(payload);
            lastCallSucceeded = ok;
            lastRevertData = data;
        }
    }
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
contract Probe { function f(bytes32 h, uint8 v, bytes32 r, bytes32 s) external pure returns (address a) { (a,,) = ECDSA.tryRecover(h, v, r, s); } }

// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IERC2612Bytes
/// @notice The `bytes signature` overload of EIP-2612 `permit` that USDC v2.2 added next to the
///         standard v,r,s form; it also accepts ERC-1271 signatures from contract wallets.
interface IERC2612Bytes {
    /// @notice Sets `spender`'s allowance over `owner`'s tokens to `value`, signed by `owner`.
    function permit(address owner, address spender, uint256 value, uint256 deadline, bytes calldata signature) external;
}

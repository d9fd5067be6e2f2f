// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ERC1155Holder} from "@openzeppelin/contracts/token/ERC1155/utils/ERC1155Holder.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title TestMultisigWallet
/// @author tollgate
/// @notice A minimal m-of-n multisig contract wallet for tests (contract tests here, and the C
///         gateway's tests against anvil). It signs through ERC-1271: a signature is the
///         concatenation of `threshold` 65-byte ECDSA signatures of the hash by distinct owners,
///         ordered by ascending owner address. It executes calls signed the same way, and holds
///         ETH, ERC-20 and ERC-1155 tokens (so it can hold passes and pay into channels).
/// @dev Security notes: test helper, not audited for production. Owner signatures are checked
///      with OpenZeppelin's ECDSA.tryRecover (low-S); the execute hash binds chain id, this wallet
///      and a sequential nonce.
contract TestMultisigWallet is IERC1271, ERC1155Holder {
    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice The wallet executed a call under nonce `nonce`.
    event Executed(uint256 indexed nonce, address indexed target, uint256 value, bytes data);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice Threshold is 0, above the owner count, or an owner is zero or repeated.
    error TestMultisigWallet__InvalidOwners();
    /// @notice The owner signatures do not meet the threshold.
    error TestMultisigWallet__InvalidSignatures();
    /// @notice The executed call reverted (its revert data is attached).
    error TestMultisigWallet__CallFailed(bytes returnData);

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice keccak256("TollgateTestMultisig.Execute(uint256 chainId,address wallet,uint256 nonce,address target,uint256 value,bytes32 dataHash)")
    bytes32 public constant EXECUTE_TYPEHASH = keccak256(
        "TollgateTestMultisig.Execute(uint256 chainId,address wallet,uint256 nonce,address target,uint256 value,bytes32 dataHash)"
    );

    mapping(address => bool) public isOwner;
    uint256 public immutable threshold;
    uint256 public ownerCount;
    uint256 public nonce;

    /*//////////////////////////////////////////////////////////////
                                 LOGIC
    //////////////////////////////////////////////////////////////*/

    /// @param owners     The signing keys' addresses.
    /// @param threshold_ Signatures required (1..owners.length).
    constructor(address[] memory owners, uint256 threshold_) {
        if (threshold_ == 0 || threshold_ > owners.length) revert TestMultisigWallet__InvalidOwners();
        for (uint256 i; i < owners.length; ++i) {
            address o = owners[i];
            if (o == address(0) || isOwner[o]) revert TestMultisigWallet__InvalidOwners();
            isOwner[o] = true;
        }
        threshold = threshold_;
        ownerCount = owners.length;
    }

    /// @notice Accepts ETH.
    receive() external payable {}

    /// @notice ERC-1271: whether `signature` holds `threshold` owner signatures of `hash`.
    /// @param hash      The signed hash (e.g. an EIP-712 digest).
    /// @param signature Concatenated 65-byte signatures, owners ascending.
    /// @return magicValue 0x1626ba7e when valid, 0xffffffff otherwise.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4 magicValue) {
        return _checkSignatures(hash, signature) ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }

    /// @notice The hash owners sign to let the wallet call `target` with `value` and `data`.
    /// @param target Call target.
    /// @param value  ETH to send.
    /// @param data   Calldata.
    /// @param nonce_ The wallet nonce the call will use.
    /// @return The hash to sign.
    function executeHash(address target, uint256 value, bytes calldata data, uint256 nonce_)
        public
        view
        returns (bytes32)
    {
        return keccak256(
            abi.encode(EXECUTE_TYPEHASH, block.chainid, address(this), nonce_, target, value, keccak256(data))
        );
    }

    /// @notice Calls `target` with `value` and `data` when `threshold` owners signed it.
    /// @param target     Call target.
    /// @param value      ETH to send.
    /// @param data       Calldata.
    /// @param signatures Owner signatures of {executeHash} for the current nonce.
    /// @return result The call's return data.
    function execute(address target, uint256 value, bytes calldata data, bytes calldata signatures)
        external
        returns (bytes memory result)
    {
        uint256 n = nonce;
        if (!_checkSignatures(executeHash(target, value, data, n), signatures)) {
            revert TestMultisigWallet__InvalidSignatures();
        }
        nonce = n + 1;
        emit Executed(n, target, value, data);
        bool ok;
        (ok, result) = target.call{value: value}(data);
        if (!ok) revert TestMultisigWallet__CallFailed(result);
    }

    function _checkSignatures(bytes32 hash, bytes calldata signatures) private view returns (bool) {
        uint256 t = threshold;
        if (signatures.length != t * 65) return false;
        address last;
        for (uint256 i; i < t; ++i) {
            bytes32 r = bytes32(signatures[i * 65:i * 65 + 32]);
            bytes32 s = bytes32(signatures[i * 65 + 32:i * 65 + 64]);
            uint8 v = uint8(signatures[i * 65 + 64]);
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, v, r, s);
            if (err != ECDSA.RecoverError.NoError || !isOwner[signer] || signer <= last) return false;
            last = signer;
        }
        return true;
    }
}

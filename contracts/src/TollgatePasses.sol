// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

import {IERC3009} from "./interfaces/IERC3009.sol";
import {IERC2612Bytes} from "./interfaces/IERC2612Bytes.sol";

/// @title TollgatePasses
/// @author tollgate
/// @notice Access passes as ERC-1155 tokens, one token id per plan. The owner defines plans (price
///         and token, period, included quota, supply cap, transferability). Anyone buys a pass for
///         any holder with ETH or an ERC-20 (also gasless through EIP-3009 or EIP-2612); buying
///         again before expiry extends the pass without a gap. Holders transfer passes (unless the
///         plan forbids it), and delegate the use of a pass to another address until a time.
///         The gateway asks {entitled} in one `eth_call` whether an address may use a plan now.
///
///         Each holder has at most one pass per plan (balance 0 or 1) with an expiry; a transfer
///         moves the pass and its expiry to a recipient who holds none, and ends the sender's
///         delegation. A delegation also ends when its pass lapses and is renewed later.
/// @dev Security notes.
///      - Payments are checked by balance difference: fee-on-transfer tokens are rejected, and
///        the proceeds ledger always equals what the contract received.
///      - Gasless purchases are bound to (plan, holder, periods): through the EIP-3009 nonce
///        `keccak256(abi.encode(planId, holder, periods, salt))`, or for a permit through the
///        payer's `PermitPurchase` signature over the token's permit nonce. A relayer cannot
///        redirect them.
///      - Expiry and delegation state is written before `_mint`, whose ERC-1155 acceptance check
///        calls into contract recipients; every paying entry point is `nonReentrant`.
contract TollgatePasses is ERC1155, Ownable2Step, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;

    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice A plan as set by the owner (two storage slots).
    /// @param token        Payment token, address(0) for ETH.
    /// @param price        Price of one period, in the token's units.
    /// @param period       Seconds of validity bought by one period.
    /// @param quota        Included usage per period, read by the gateway off-chain.
    /// @param maxSupply    Most passes ever minted for the plan (0 = unlimited).
    /// @param supply       Passes minted so far (renewals do not mint).
    /// @param transferable Whether holders may transfer passes of the plan.
    /// @param active       Whether the plan is on sale (grants work either way).
    struct Plan {
        address token;
        uint96 price;
        uint40 period;
        uint64 quota;
        uint32 maxSupply;
        uint32 supply;
        bool transferable;
        bool active;
    }

    /// @notice The owner-set fields of a plan.
    struct PlanParams {
        address token;
        uint96 price;
        uint40 period;
        uint64 quota;
        uint32 maxSupply;
        bool transferable;
        bool active;
    }

    /// @notice A holder's delegation of one plan's pass.
    struct Delegation {
        address delegatee;
        uint64 until;
    }

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice The owner created plan `planId`.
    event PlanCreated(uint256 indexed planId, PlanParams params);

    /// @notice The owner changed plan `planId`.
    event PlanUpdated(uint256 indexed planId, PlanParams params);

    /// @notice `payer` bought a new pass of `planId` for `holder`, valid until `expiresAt`.
    event Purchased(
        uint256 indexed planId,
        address indexed holder,
        address indexed payer,
        address token,
        uint256 cost,
        uint64 expiresAt
    );

    /// @notice `payer` extended `holder`'s pass of `planId` from `previousExpiry` to `expiresAt`.
    event Renewed(
        uint256 indexed planId,
        address indexed holder,
        address indexed payer,
        address token,
        uint256 cost,
        uint64 previousExpiry,
        uint64 expiresAt
    );

    /// @notice The owner granted `periods` of `planId` to `holder` (new pass or extension).
    event Granted(
        uint256 indexed planId, address indexed holder, uint32 periods, uint64 previousExpiry, uint64 expiresAt
    );

    /// @notice `holder` delegated the use of its `planId` pass to `delegatee` until `until`.
    event Delegated(uint256 indexed planId, address indexed holder, address indexed delegatee, uint64 until);

    /// @notice `holder`'s delegation of `planId` to `delegatee` ended (revoked, replaced or transferred).
    event DelegationRevoked(uint256 indexed planId, address indexed holder, address indexed delegatee);

    /// @notice The owner withdrew `amount` of sales proceeds in `token` to `to`.
    event ProceedsWithdrawn(address indexed token, address indexed to, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice No plan has this id.
    error TollgatePasses__UnknownPlan(uint256 planId);
    /// @notice The plan is not on sale.
    error TollgatePasses__PlanNotActive(uint256 planId);
    /// @notice A plan's period must be positive.
    error TollgatePasses__InvalidPeriod();
    /// @notice At least one period must be bought or granted.
    error TollgatePasses__ZeroPeriods();
    /// @notice The plan's supply cap is reached.
    error TollgatePasses__SupplyCapReached(uint256 planId, uint32 maxSupply);
    /// @notice The new supply cap is below the passes already minted.
    error TollgatePasses__MaxSupplyBelowSupply(uint32 maxSupply, uint32 supply);
    /// @notice The new expiry does not fit in 64 bits.
    error TollgatePasses__ExpiryOverflow();
    /// @notice msg.value does not match the cost (ETH plans) or is not zero (token plans).
    error TollgatePasses__WrongMsgValue(uint256 expected, uint256 actual);
    /// @notice The token moved a different amount than requested (e.g. fee-on-transfer).
    error TollgatePasses__TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice Gasless purchase on a plan priced in ETH.
    error TollgatePasses__NativeTokenNotSupported();
    /// @notice The holder is address(0).
    error TollgatePasses__InvalidHolder();
    /// @notice Passes of this plan cannot be transferred.
    error TollgatePasses__NonTransferable(uint256 planId);
    /// @notice The recipient already holds a pass of this plan.
    error TollgatePasses__RecipientAlreadyHolds(address recipient, uint256 planId);
    /// @notice The account holds no pass of this plan.
    error TollgatePasses__NotHolder(address account, uint256 planId);
    /// @notice The delegatee is address(0) or the holder itself.
    error TollgatePasses__InvalidDelegatee(address delegatee);
    /// @notice The delegation end is not in the future.
    error TollgatePasses__InvalidUntil(uint64 until);
    /// @notice The delegatee already uses another holder's live pass of this plan.
    error TollgatePasses__DelegateeTaken(address delegatee, address holder);
    /// @notice The holder has no delegation for this plan.
    error TollgatePasses__NoDelegation(address holder, uint256 planId);
    /// @notice The payer's purchase consent signature is not valid.
    error TollgatePasses__InvalidSignature();
    /// @notice More proceeds requested than collected.
    error TollgatePasses__InsufficientProceeds(uint256 available, uint256 requested);

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice keccak256("PermitPurchase(uint256 planId,address holder,uint32 periods,uint256 permitNonce)")
    bytes32 public constant PERMIT_PURCHASE_TYPEHASH =
        keccak256("PermitPurchase(uint256 planId,address holder,uint32 periods,uint256 permitNonce)");

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    uint256 private _planCount;
    mapping(uint256 planId => Plan) private _plans;
    mapping(uint256 planId => mapping(address holder => uint64)) private _expiries;
    mapping(uint256 planId => mapping(address holder => Delegation)) private _delegations;
    mapping(uint256 planId => mapping(address delegatee => address holder)) private _delegators;
    mapping(address token => uint256) private _proceeds;

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param uri_   ERC-1155 metadata URI template (`{id}` is the plan id).
    /// @param owner_ Owner of the plans and of the proceeds.
    /// @dev EIP-712 domain: name "Tollgate Passes", version "1".
    constructor(string memory uri_, address owner_) ERC1155(uri_) Ownable(owner_) EIP712("Tollgate Passes", "1") {}

    /*//////////////////////////////////////////////////////////////
                               OWNER: PLANS
    //////////////////////////////////////////////////////////////*/

    /// @notice Creates a plan; ids start at 1.
    /// @param params The plan's fields.
    /// @return planId The new plan's id (its ERC-1155 token id).
    function createPlan(PlanParams calldata params) external onlyOwner returns (uint256 planId) {
        if (params.period == 0) revert TollgatePasses__InvalidPeriod();
        planId = ++_planCount;
        _plans[planId] = Plan({
            token: params.token,
            price: params.price,
            period: params.period,
            quota: params.quota,
            maxSupply: params.maxSupply,
            supply: 0,
            transferable: params.transferable,
            active: params.active
        });
        emit PlanCreated(planId, params);
    }

    /// @notice Changes a plan. Passes already sold keep their expiry; a new period length applies
    ///         to later purchases and renewals.
    /// @param planId The plan.
    /// @param params The plan's new fields (`maxSupply` 0 or >= passes minted).
    function updatePlan(uint256 planId, PlanParams calldata params) external onlyOwner {
        Plan storage plan = _planOf(planId);
        if (params.period == 0) revert TollgatePasses__InvalidPeriod();
        uint32 supply = plan.supply;
        if (params.maxSupply != 0 && params.maxSupply < supply) {
            revert TollgatePasses__MaxSupplyBelowSupply(params.maxSupply, supply);
        }
        _plans[planId] = Plan({
            token: params.token,
            price: params.price,
            period: params.period,
            quota: params.quota,
            maxSupply: params.maxSupply,
            supply: supply,
            transferable: params.transferable,
            active: params.active
        });
        emit PlanUpdated(planId, params);
    }

    /// @notice Grants `periods` of a plan to `holder` for free (new pass or extension). Works on
    ///         inactive plans; respects the supply cap for new passes.
    /// @param planId  The plan.
    /// @param holder  Recipient of the pass.
    /// @param periods Number of periods.
    /// @return expiry The pass's new expiry.
    function grant(uint256 planId, address holder, uint32 periods)
        external
        onlyOwner
        nonReentrant
        returns (uint64 expiry)
    {
        Plan storage plan = _planOf(planId);
        uint64 previous;
        (previous, expiry) = _extend(plan, planId, holder, periods);
        emit Granted(planId, holder, periods, previous, expiry);
    }

    /// @notice Withdraws sales proceeds.
    /// @param token  The token (address(0) for ETH).
    /// @param to     Destination.
    /// @param amount Amount to withdraw.
    function withdrawProceeds(address token, address to, uint256 amount) external onlyOwner nonReentrant {
        uint256 available = _proceeds[token];
        if (amount > available) revert TollgatePasses__InsufficientProceeds(available, amount);
        // amount <= available.
        unchecked {
            _proceeds[token] = available - amount;
        }
        emit ProceedsWithdrawn(token, to, amount);
        if (token == address(0)) {
            Address.sendValue(payable(to), amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    /// @notice Sets the ERC-1155 metadata URI template.
    /// @param newUri The new URI (`{id}` is the plan id).
    function setURI(string calldata newUri) external onlyOwner {
        _setURI(newUri);
    }

    /*//////////////////////////////////////////////////////////////
                               PURCHASES
    //////////////////////////////////////////////////////////////*/

    /// @notice Buys `periods` of a plan for `holder`, paid by the caller. Mints the pass if the
    ///         holder has none; otherwise extends it from its expiry (or from now if expired).
    /// @dev ETH plans: msg.value must equal price * periods. Token plans: the caller must have
    ///      approved this contract; the exact amount must arrive.
    /// @param planId  The plan.
    /// @param holder  Who receives or holds the pass.
    /// @param periods Number of periods to buy.
    /// @return expiry The pass's new expiry.
    function purchase(uint256 planId, address holder, uint32 periods)
        external
        payable
        nonReentrant
        returns (uint64 expiry)
    {
        (Plan storage plan, uint256 cost) = _forSale(planId, periods);
        address token = plan.token;
        if (token == address(0)) {
            if (msg.value != cost) revert TollgatePasses__WrongMsgValue(cost, msg.value);
        } else {
            if (msg.value != 0) revert TollgatePasses__WrongMsgValue(0, msg.value);
            uint256 before = IERC20(token).balanceOf(address(this));
            IERC20(token).safeTransferFrom(msg.sender, address(this), cost);
            _checkReceived(token, before, cost);
        }
        expiry = _sell(plan, planId, holder, periods, msg.sender, token, cost);
    }

    /// @notice Buys `periods` of a token-priced plan for `holder` with an EIP-3009
    ///         `ReceiveWithAuthorization` signed by `payer` (gasless for the payer).
    /// @dev The authorization must be `from = payer, to = this contract, value = price * periods`
    ///      with `nonce = keccak256(abi.encode(planId, holder, periods, salt))` (see
    ///      {purchaseAuthorizationNonce}). A 65-byte signature from an account without code uses
    ///      the token's v,r,s overload; anything else the `bytes` overload.
    /// @param planId      The plan.
    /// @param holder      Who receives or holds the pass.
    /// @param periods     Number of periods to buy.
    /// @param payer       Signer of the authorization.
    /// @param validAfter  Authorization is valid after this unix time.
    /// @param validBefore Authorization is valid before this unix time.
    /// @param salt        Free value hashed into the nonce.
    /// @param signature   The payer's signature.
    /// @return expiry The pass's new expiry.
    function purchaseWithAuthorization(
        uint256 planId,
        address holder,
        uint32 periods,
        address payer,
        uint256 validAfter,
        uint256 validBefore,
        uint256 salt,
        bytes calldata signature
    ) external nonReentrant returns (uint64 expiry) {
        bytes32 nonce = purchaseAuthorizationNonce(planId, holder, periods, salt);
        (Plan storage plan, uint256 cost) = _forSale(planId, periods);
        address token = _tokenOf(plan);
        _collectWithAuthorization(token, payer, cost, validAfter, validBefore, nonce, signature);
        expiry = _sell(plan, planId, holder, periods, payer, token, cost);
    }

    /// @notice Buys `periods` of a token-priced plan for `holder` with an EIP-2612 permit signed by
    ///         `payer` (gasless for the payer).
    /// @dev The payer also signs `PermitPurchase(uint256 planId,address holder,uint32 periods,
    ///      uint256 permitNonce)` with the token's current `nonces(payer)`, which binds the permit
    ///      to this purchase and makes it single-use. The permit value must be price * periods.
    /// @param planId            The plan.
    /// @param holder            Who receives or holds the pass.
    /// @param periods           Number of periods to buy.
    /// @param payer             Signer of the permit.
    /// @param deadline          Permit deadline.
    /// @param permitSignature   The payer's EIP-2612 signature.
    /// @param purchaseSignature The payer's `PermitPurchase` signature (ECDSA or ERC-1271).
    /// @return expiry The pass's new expiry.
    function purchaseWithPermit(
        uint256 planId,
        address holder,
        uint32 periods,
        address payer,
        uint256 deadline,
        bytes calldata permitSignature,
        bytes calldata purchaseSignature
    ) external nonReentrant returns (uint64 expiry) {
        (Plan storage plan, uint256 cost) = _forSale(planId, periods);
        address token = _tokenOf(plan);
        _checkPurchaseConsent(token, planId, holder, periods, payer, purchaseSignature);
        _permit(token, payer, cost, deadline, permitSignature);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(payer, address(this), cost);
        _checkReceived(token, before, cost);
        expiry = _sell(plan, planId, holder, periods, payer, token, cost);
    }

    /*//////////////////////////////////////////////////////////////
                               DELEGATION
    //////////////////////////////////////////////////////////////*/

    /// @notice Lets `delegatee` use the caller's pass of `planId` until `until` (and the pass's
    ///         expiry), without giving up ownership. Replaces the caller's previous delegation.
    /// @dev A delegatee can use one holder's pass per plan at a time.
    /// @param planId    The plan.
    /// @param delegatee Who may use the pass.
    /// @param until     Unix time when the delegation ends.
    function delegate(uint256 planId, address delegatee, uint64 until) external {
        if (balanceOf(msg.sender, planId) == 0) revert TollgatePasses__NotHolder(msg.sender, planId);
        if (delegatee == address(0) || delegatee == msg.sender) revert TollgatePasses__InvalidDelegatee(delegatee);
        if (until <= block.timestamp) revert TollgatePasses__InvalidUntil(until);
        address other = _delegators[planId][delegatee];
        if (other != address(0) && other != msg.sender && _isLiveDelegation(planId, other, delegatee)) {
            revert TollgatePasses__DelegateeTaken(delegatee, other);
        }
        _endDelegation(planId, msg.sender);
        _delegations[planId][msg.sender] = Delegation({delegatee: delegatee, until: until});
        _delegators[planId][delegatee] = msg.sender;
        emit Delegated(planId, msg.sender, delegatee, until);
    }

    /// @notice Ends the caller's delegation of `planId`.
    /// @param planId The plan.
    function revokeDelegation(uint256 planId) external {
        if (!_endDelegation(planId, msg.sender)) revert TollgatePasses__NoDelegation(msg.sender, planId);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Whether `user` may use `planId` now, as holder of an unexpired pass or as live
    ///         delegate of one, and until when.
    /// @param user   The address asking (holder or delegate).
    /// @param planId The plan.
    /// @return ok     True when entitled.
    /// @return until  Last second of entitlement + 1 (pass expiry, or delegation end if earlier).
    /// @return holder The pass holder (user itself, or the delegating holder).
    function entitled(address user, uint256 planId) external view returns (bool ok, uint64 until, address holder) {
        uint64 expiry = _expiries[planId][user];
        if (expiry > block.timestamp && balanceOf(user, planId) != 0) return (true, expiry, user);
        address h = _delegators[planId][user];
        if (h != address(0) && _isLiveDelegation(planId, h, user)) {
            Delegation memory d = _delegations[planId][h];
            uint64 holderExpiry = _expiries[planId][h];
            return (true, d.until < holderExpiry ? d.until : holderExpiry, h);
        }
        return (false, 0, address(0));
    }

    /// @notice Expiry of `holder`'s pass of `planId` (0 when it holds none).
    /// @param holder The holder.
    /// @param planId The plan.
    /// @return The expiry (unix time).
    function expiresAt(address holder, uint256 planId) external view returns (uint64) {
        return _expiries[planId][holder];
    }

    /// @notice `holder`'s delegation of `planId` (delegatee 0 when none).
    /// @param holder The holder.
    /// @param planId The plan.
    /// @return delegatee The delegate.
    /// @return until     End of the delegation.
    function delegationOf(address holder, uint256 planId) external view returns (address delegatee, uint64 until) {
        Delegation memory d = _delegations[planId][holder];
        return (d.delegatee, d.until);
    }

    /// @notice A plan's fields.
    /// @param planId The plan.
    /// @return The plan (reverts for an unknown id).
    function getPlan(uint256 planId) external view returns (Plan memory) {
        return _planOf(planId);
    }

    /// @notice Number of plans created (ids are 1..planCount).
    /// @return The count.
    function planCount() external view returns (uint256) {
        return _planCount;
    }

    /// @notice Sales proceeds held for the owner in `token`.
    /// @param token The token (address(0) for ETH).
    /// @return The amount.
    function proceeds(address token) external view returns (uint256) {
        return _proceeds[token];
    }

    /// @notice The EIP-712 domain separator (name "Tollgate Passes", version "1").
    /// @return The domain separator for this chain and contract.
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The digest a payer signs to bind a permit to a purchase.
    /// @param planId      The plan.
    /// @param holder      Who receives or holds the pass.
    /// @param periods     Number of periods.
    /// @param permitNonce The token's `nonces(payer)` that the permit uses.
    /// @return The EIP-712 digest.
    function getPermitPurchaseDigest(uint256 planId, address holder, uint32 periods, uint256 permitNonce)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(PERMIT_PURCHASE_TYPEHASH, planId, holder, periods, permitNonce)));
    }

    /// @notice The EIP-3009 nonce a payer signs for {purchaseWithAuthorization}.
    /// @param planId  The plan.
    /// @param holder  Who receives or holds the pass.
    /// @param periods Number of periods.
    /// @param salt    The payer's free value.
    /// @return `keccak256(abi.encode(planId, holder, periods, salt))`.
    function purchaseAuthorizationNonce(uint256 planId, address holder, uint32 periods, uint256 salt)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(planId, holder, periods, salt));
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    /// @dev ERC-1155 hook: enforces transferability and one pass per holder, and moves the expiry
    ///      with the pass. Mints come from {_extend}, which writes the expiry first.
    function _update(address from, address to, uint256[] memory ids, uint256[] memory values) internal override {
        // A self-transfer changes nothing and keeps the expiry where it is.
        if (from != address(0) && to != address(0) && from != to) {
            for (uint256 i; i < ids.length; ++i) {
                if (values[i] == 0) continue;
                uint256 planId = ids[i];
                if (!_plans[planId].transferable) revert TollgatePasses__NonTransferable(planId);
                if (balanceOf(to, planId) != 0) revert TollgatePasses__RecipientAlreadyHolds(to, planId);
                _expiries[planId][to] = _expiries[planId][from];
                delete _expiries[planId][from];
                _endDelegation(planId, from);
            }
        }
        super._update(from, to, ids, values);
    }

    /// @dev Mints or extends `holder`'s pass by `periods`; returns the previous and new expiry.
    function _extend(Plan storage plan, uint256 planId, address holder, uint32 periods)
        private
        returns (uint64 previous, uint64 expiry)
    {
        if (holder == address(0)) revert TollgatePasses__InvalidHolder();
        if (periods == 0) revert TollgatePasses__ZeroPeriods();
        bool mint = balanceOf(holder, planId) == 0;
        previous = _expiries[planId][holder];
        uint256 start = previous > block.timestamp ? previous : block.timestamp;
        // period < 2^40 and periods < 2^32, so the product is < 2^72; start < 2^64 when stored.
        uint256 end = start + uint256(plan.period) * periods;
        if (end > type(uint64).max) revert TollgatePasses__ExpiryOverflow();
        // Checked just above.
        // forge-lint: disable-next-line(unsafe-typecast)
        expiry = uint64(end);
        _expiries[planId][holder] = expiry;
        // A pass renewed after it lapsed starts without its old delegation, so a delegation never
        // comes back to life next to a newer one (each delegatee serves one live holder).
        if (!mint && previous <= block.timestamp) _endDelegation(planId, holder);
        if (mint) {
            uint32 supply = plan.supply;
            uint32 cap = plan.maxSupply;
            if (cap != 0 && supply >= cap) revert TollgatePasses__SupplyCapReached(planId, cap);
            // supply < cap <= type(uint32).max when capped; uncapped plans check explicitly.
            if (supply == type(uint32).max) revert TollgatePasses__SupplyCapReached(planId, supply);
            unchecked {
                plan.supply = supply + 1;
            }
            _mint(holder, planId, 1, "");
        }
    }

    /// @dev Books a paid purchase: credits proceeds, extends the pass and emits the event.
    function _sell(
        Plan storage plan,
        uint256 planId,
        address holder,
        uint32 periods,
        address payer,
        address token,
        uint256 cost
    ) private returns (uint64 expiry) {
        _proceeds[token] += cost;
        bool renewal = balanceOf(holder, planId) != 0;
        uint64 previous;
        (previous, expiry) = _extend(plan, planId, holder, periods);
        if (renewal) {
            emit Renewed(planId, holder, payer, token, cost, previous, expiry);
        } else {
            emit Purchased(planId, holder, payer, token, cost, expiry);
        }
    }

    /// @dev The plan and the cost of `periods`, reverting unless the plan exists and is on sale.
    function _forSale(uint256 planId, uint32 periods) private view returns (Plan storage plan, uint256 cost) {
        plan = _planOf(planId);
        if (!plan.active) revert TollgatePasses__PlanNotActive(planId);
        if (periods == 0) revert TollgatePasses__ZeroPeriods();
        // price < 2^96 and periods < 2^32: the product fits easily in 256 bits.
        cost = uint256(plan.price) * periods;
    }

    function _planOf(uint256 planId) private view returns (Plan storage plan) {
        plan = _plans[planId];
        if (plan.period == 0) revert TollgatePasses__UnknownPlan(planId);
    }

    /// @dev Whether `holder` currently lets `delegatee` use its unexpired pass of `planId`.
    function _isLiveDelegation(uint256 planId, address holder, address delegatee) private view returns (bool) {
        Delegation memory d = _delegations[planId][holder];
        return d.delegatee == delegatee && d.until > block.timestamp && balanceOf(holder, planId) != 0
            && _expiries[planId][holder] > block.timestamp;
    }

    /// @dev Clears `holder`'s delegation of `planId`; returns whether there was one.
    function _endDelegation(uint256 planId, address holder) private returns (bool existed) {
        address delegatee = _delegations[planId][holder].delegatee;
        if (delegatee == address(0)) return false;
        delete _delegations[planId][holder];
        if (_delegators[planId][delegatee] == holder) delete _delegators[planId][delegatee];
        emit DelegationRevoked(planId, holder, delegatee);
        return true;
    }

    /// @dev Reverts unless this contract's balance of `token` grew by exactly `amount`.
    function _checkReceived(address token, uint256 before, uint256 amount) private view {
        uint256 balanceAfter = IERC20(token).balanceOf(address(this));
        // A token whose balance shrank on a transfer in counts as having delivered nothing.
        uint256 received = balanceAfter > before ? balanceAfter - before : 0;
        if (received != amount) revert TollgatePasses__TransferAmountMismatch(amount, received);
    }

    /// @dev Reverts unless `payer` signed `PermitPurchase` for these parameters and the token's
    ///      current permit nonce of `payer` (the one the permit about to be used consumes).
    function _checkPurchaseConsent(
        address token,
        uint256 planId,
        address holder,
        uint32 periods,
        address payer,
        bytes calldata signature
    ) private view {
        bytes32 digest = getPermitPurchaseDigest(planId, holder, periods, IERC20Permit(token).nonces(payer));
        if (!SignatureChecker.isValidSignatureNow(payer, digest, signature)) revert TollgatePasses__InvalidSignature();
    }

    /// @dev The plan's payment token; reverts for ETH plans (gasless purchases need a token).
    function _tokenOf(Plan storage plan) private view returns (address token) {
        token = plan.token;
        if (token == address(0)) revert TollgatePasses__NativeTokenNotSupported();
    }

    /// @dev Collects `value` through EIP-3009 and checks that exactly `value` arrived.
    function _collectWithAuthorization(
        address token,
        address from,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) private {
        uint256 before = IERC20(token).balanceOf(address(this));
        _receiveWithAuthorization(token, from, value, validAfter, validBefore, nonce, signature);
        _checkReceived(token, before, value);
    }

    /// @dev Calls the token's EIP-3009 `receiveWithAuthorization` (payee = this contract): the v,r,s
    ///      overload for a 65-byte signature from an account without code, else the bytes overload.
    function _receiveWithAuthorization(
        address token,
        address from,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) private {
        if (signature.length == 65 && from.code.length == 0) {
            (uint8 v, bytes32 r, bytes32 s) = _splitSignature(signature);
            IERC3009(token)
                .receiveWithAuthorization(from, address(this), value, validAfter, validBefore, nonce, v, r, s);
        } else {
            IERC3009(token)
                .receiveWithAuthorization(from, address(this), value, validAfter, validBefore, nonce, signature);
        }
    }

    /// @dev Calls the token's EIP-2612 `permit` (spender = this contract): the v,r,s overload for a
    ///      65-byte signature from an account without code, else the bytes overload (USDC v2.2).
    function _permit(address token, address owner, uint256 value, uint256 deadline, bytes calldata signature) private {
        if (signature.length == 65 && owner.code.length == 0) {
            (uint8 v, bytes32 r, bytes32 s) = _splitSignature(signature);
            IERC20Permit(token).permit(owner, address(this), value, deadline, v, r, s);
        } else {
            IERC2612Bytes(token).permit(owner, address(this), value, deadline, signature);
        }
    }

    /// @dev Splits a 65-byte r || s || v signature held in calldata.
    function _splitSignature(bytes calldata signature) private pure returns (uint8 v, bytes32 r, bytes32 s) {
        assembly ("memory-safe") {
            r := calldataload(signature.offset)
            s := calldataload(add(signature.offset, 0x20))
            v := byte(0, calldataload(add(signature.offset, 0x40)))
        }
    }
}

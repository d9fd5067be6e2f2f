/* tollgate error codes: one table gives each code its name, message and HTTP status. */
#ifndef TOLLGATE_ERROR_H
#define TOLLGATE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every fallible tollgate call returns 0 (TG_OK) or a negative tg_err.
 * The table below is the only place codes are defined. Codes are never
 * renumbered or reused: new ones are appended inside their range.
 *
 * Ranges:  -1..-99 general, -100..-199 encodings (hex, u256, rlp, abi, json),
 *          -200..-299 crypto and signatures, -300..-349 keystore,
 *          -350..-399 transactions, -400..-499 JSON-RPC, -500..-599 tx manager,
 *          -600..-699 store, -700..-799 payments (x402, channels, passes),
 *          -800..-899 HTTP and upstream, -900..-999 settlement,
 *          -1000..-1099 payer client, -1100..-1199 contracts and deployment,
 *          -1200..-1299 configuration.
 *
 * XX(NAME, code, http_status, "message")
 */
#define TG_ERRNO_MAP(XX)                                                       \
  XX(OK, 0, 200, "success")                                                    \
  /* general */                                                                \
  XX(INVAL, -1, 400, "invalid argument")                                       \
  XX(NOMEM, -2, 500, "out of memory")                                          \
  XX(RANGE, -3, 400, "value out of range")                                     \
  XX(OVERFLOW, -4, 400, "arithmetic overflow")                                 \
  XX(TOOBIG, -5, 413, "input exceeds its size limit")                          \
  XX(TRUNCATED, -6, 400, "input ends too early")                               \
  XX(TRAILING, -7, 400, "unexpected bytes after the end of input")             \
  XX(IO, -8, 500, "input/output error")                                        \
  XX(NOTFOUND, -9, 404, "not found")                                           \
  XX(EXISTS, -10, 409, "already exists")                                       \
  XX(UNSUPPORTED, -11, 400, "not supported")                                   \
  XX(TIMEOUT, -12, 504, "timed out")                                           \
  XX(PERM, -13, 403, "operation not permitted")                                \
  XX(BUSY, -14, 503, "resource busy, try again")                               \
  XX(INTERNAL, -15, 500, "internal error")                                     \
  XX(CANCELED, -16, 499, "canceled")                                           \
  XX(BUFSIZE, -17, 500, "output buffer too small")                             \
  XX(DIVZERO, -18, 400, "division by zero")                                    \
  XX(UNDERFLOW, -19, 400, "arithmetic underflow")                              \
  /* encodings */                                                              \
  XX(HEX, -100, 400, "malformed hex string")                                   \
  XX(HEX_ODD, -101, 400, "hex string has an odd number of digits")            \
  XX(HEX_PREFIX, -102, 400, "hex string lacks the 0x prefix")                  \
  XX(NUMBER, -103, 400, "malformed number")                                    \
  XX(LEADING_ZERO, -104, 400, "non-canonical leading zero")                    \
  XX(RLP, -110, 400, "malformed RLP")                                          \
  XX(RLP_NONCANONICAL, -111, 400, "non-canonical RLP encoding")                \
  XX(RLP_DEPTH, -112, 400, "RLP nesting too deep")                             \
  XX(RLP_TYPE, -113, 400, "RLP item has the wrong type (list or string)")      \
  XX(ABI_SIG, -120, 400, "malformed ABI type signature")                       \
  XX(ABI_VALUE, -121, 400, "ABI value does not fit its type")                  \
  XX(ABI_DATA, -122, 400, "malformed ABI-encoded data")                        \
  XX(ABI_DEPTH, -123, 400, "ABI type nesting too deep")                        \
  XX(JSON, -130, 400, "malformed JSON")                                        \
  XX(JSON_FIELD, -131, 400, "JSON field missing or of the wrong type")         \
  XX(BASE64, -132, 400, "malformed base64")                                    \
  XX(TYPED_DATA, -140, 400, "malformed EIP-712 typed data")                    \
  XX(TYPED_DATA_TYPE, -141, 400, "EIP-712 type unknown or recursive")          \
  XX(TYPED_DATA_VALUE, -142, 400, "EIP-712 value does not match its type")     \
  XX(TYPED_DATA_MISSING, -143, 400, "EIP-712 value lacks a field of its type") \
  XX(CHECKSUM, -150, 400, "address checksum (EIP-55) does not match")          \
  XX(ADDRESS, -151, 400, "malformed address")                                  \
  /* crypto */                                                                 \
  XX(SECKEY, -200, 400, "invalid private key")                                 \
  XX(PUBKEY, -201, 400, "invalid public key")                                  \
  XX(SIG, -202, 400, "malformed signature")                                    \
  XX(SIG_HIGH_S, -203, 400, "signature has a high S value")                    \
  XX(SIG_RECID, -204, 400, "signature recovery id (v) is invalid")             \
  XX(SIG_RECOVER, -205, 400, "no public key recovers from the signature")      \
  XX(SIG_MISMATCH, -206, 401, "signature is not from the expected signer")     \
  XX(RANDOM, -207, 500, "random number generator failed")                      \
  XX(CRYPTO_INIT, -208, 500, "crypto library initialisation failed")           \
  /* keystore */                                                               \
  XX(KEYSTORE, -300, 400, "malformed keystore file")                           \
  XX(KEYSTORE_KDF, -301, 400, "unsupported or unsafe keystore KDF parameters") \
  XX(KEYSTORE_MAC, -302, 401, "keystore MAC mismatch (wrong password?)")       \
  XX(KEYSTORE_CIPHER, -303, 400, "unsupported keystore cipher")                \
  XX(KEYSTORE_VERSION, -304, 400, "unsupported keystore version")              \
  XX(PASSWORD, -305, 400, "no password given")                                 \
  XX(KEYSTORE_ADDRESS, -306, 400, "keystore address does not match its key")   \
  /* transactions */                                                           \
  XX(TX, -350, 400, "malformed transaction")                                   \
  XX(TX_TYPE, -351, 400, "unsupported transaction type")                       \
  XX(TX_CHAIN, -352, 400, "transaction chain id is invalid")                   \
  XX(TX_FIELD, -353, 400, "transaction field out of range")                    \
  XX(TX_UNSIGNED, -354, 400, "transaction is not signed")                      \
  XX(TX_INTRINSIC_GAS, -355, 400, "gas limit is below the intrinsic gas")      \
  XX(TX_FEE, -356, 400, "max priority fee per gas exceeds max fee per gas")    \
  XX(TX_COST, -357, 400, "gas limit times gas price overflows 256 bits")       \
  XX(TX_INITCODE, -358, 400, "contract creation code exceeds 49152 bytes (EIP-3860)") \
  /* JSON-RPC */                                                               \
  XX(RPC, -400, 502, "the JSON-RPC node answered with an error")               \
  XX(RPC_REPLY, -401, 502, "malformed JSON-RPC reply")                         \
  XX(RPC_TRANSPORT, -402, 502, "JSON-RPC endpoint unreachable or connection lost") \
  XX(RPC_HTTP, -403, 502, "JSON-RPC endpoint answered with an HTTP error status") \
  XX(RPC_CHAIN, -404, 502, "JSON-RPC endpoint is on another chain (chain id mismatch)") \
  XX(RPC_NO_ENDPOINT, -405, 503, "no usable JSON-RPC endpoint")                \
  XX(RPC_REVERTED, -406, 400, "execution reverted")                            \
  XX(RPC_NONCE_LOW, -407, 409, "nonce too low")                                \
  XX(RPC_ALREADY_KNOWN, -408, 409, "transaction already known to the node")    \
  XX(RPC_UNDERPRICED, -409, 409, "transaction underpriced (replacement or pool minimum)") \
  XX(RPC_FUNDS, -410, 503, "insufficient funds for gas * price + value")       \
  XX(RPC_LIMIT, -411, 502, "query exceeds the node's result or range limit")   \
  /* transaction manager */                                                    \
  XX(TXM_FEE_CEILING, -500, 503, "required fee exceeds the configured ceiling") \
  XX(TXM_JOURNAL, -501, 500, "transaction journal unreadable or inconsistent") \
  XX(TXM_CLOSED, -502, 503, "transaction manager is shut down")                \
  XX(TXM_FULL, -503, 503, "too many transactions in flight")                   \
  XX(TXM_FAILED, -504, 500, "transaction could not be sent or was dropped")    \
  /* HTTP and upstream */                                                      \
  XX(HTTP, -800, 400, "malformed HTTP request")                                \
  XX(HEADERS_TOO_BIG, -801, 431, "request headers exceed their size limit")    \
  XX(BODY_TOO_BIG, -802, 413, "request body exceeds its size limit")           \
  XX(UPSTREAM, -803, 502, "upstream could not be reached")                     \
  XX(UPSTREAM_TIMEOUT, -804, 504, "upstream timed out")                        \
  XX(UPSTREAM_STATUS, -805, 502, "upstream answered with a server error")      \
  XX(UPSTREAM_TOO_BIG, -806, 502, "upstream answer exceeds its size limit")    \
  XX(CLIENT_GONE, -807, 499, "client closed the connection")                   \
  XX(NO_ROUTE, -808, 404, "no route matches the request")                      \
  XX(SHUTTING_DOWN, -809, 503, "gateway is shutting down")                     \
  XX(PAY_UNAVAILABLE, -810, 503, "payments not configured")                    \
  XX(LISTEN, -811, 500, "cannot listen on the address")                        \
  /* configuration */                                                          \
  XX(CONFIG, -1200, 500, "invalid configuration")                              \
  XX(CONFIG_KEY, -1201, 500, "unknown configuration directive or key")         \
  XX(CONFIG_VALUE, -1202, 500, "configuration value is invalid")               \
  XX(CONFIG_MISSING, -1203, 500, "required configuration setting is missing")  \
  XX(CONFIG_REF, -1204, 500, "configuration refers to an undefined name")      \
  XX(CONFIG_DUP, -1205, 500, "configuration name defined twice")               \
  /* store */                                                                  \
  XX(STORE, -600, 500, "storage backend error")                                \
  XX(STORE_URI, -601, 500, "malformed or unsupported store URI (want sqlite:/path/to/file.db or postgresql://...)") \
  XX(STORE_SCHEMA, -602, 500, "store schema is newer than this build, or a migration failed") \
  XX(STORE_LIMIT, -603, 402, "charge would exceed the channel's signed ceiling plus credit limit") \
  XX(STORE_CLOSED, -604, 503, "store is closed")                               \
  XX(STORE_CORRUPT, -605, 500, "store row is malformed")                       \
  XX(STORE_LEASE, -606, 409, "lease is held by another holder")                \
  XX(STORE_CHANNEL_CLOSED, -607, 409, "channel is closed")                     \
  XX(STORE_CONSTRAINT, -608, 409, "store constraint violated")                 \
  XX(STORE_SCHEMA_OLD, -609, 503, "store schema is older than this build (run tollgated --migrate)") \
  /* payments: x402, channels, passes */                                       \
  XX(PAY_REQUIRED, -700, 402, "payment required")                             \
  XX(PAY_INVALID, -701, 400, "payment payload is invalid")                    \
  XX(PAY_MISMATCH, -702, 402, "payment does not match the offered terms")     \
  XX(PAY_EXPIRED, -703, 402, "payment authorization is outside its window")   \
  XX(PAY_REPLAYED, -704, 409, "payment was already used")                     \
  XX(PAY_FUNDS, -705, 402, "payer has insufficient funds")                    \
  XX(PAY_CONFLICT, -706, 409, "payment identifier reused with another payload") \
  XX(CHANNEL_UNKNOWN, -710, 402, "unknown channel or channel without balance") \
  XX(CHANNEL_SHORT, -711, 402, "voucher ceiling does not cover the call")     \
  XX(CHANNEL_WITHDRAWING, -712, 402, "channel is being withdrawn")            \
  XX(CHANNEL_ID, -713, 400, "channel configuration does not hash to its id")  \
  XX(PAY_ELSEWHERE, -714, 503, "exact payments are submitted by another gateway instance") \
  XX(SIWE_MALFORMED, -720, 400, "malformed Sign-In with Ethereum (EIP-4361) message") \
  XX(SIWE_DOMAIN, -721, 401, "sign-in message is for another domain")          \
  XX(SIWE_URI, -722, 401, "sign-in message URI is not this gateway's")          \
  XX(SIWE_CHAIN, -723, 401, "sign-in message is for another chain")             \
  XX(SIWE_NONCE, -724, 401, "sign-in nonce unknown, expired or already used")    \
  XX(SIWE_ISSUED_AT, -725, 401, "sign-in message issued in the future or too long ago") \
  XX(SIWE_EXPIRED, -726, 401, "sign-in message has expired")                     \
  XX(SIWE_NOT_YET, -727, 401, "sign-in message is not valid yet (Not Before)")   \
  XX(SIWE_SIGNATURE, -728, 401, "sign-in signature is not from the message's address") \
  XX(SESSION_INVALID, -730, 401, "session token unknown, revoked or expired")    \
  XX(PASS_NOT_ENTITLED, -731, 403, "no live pass of a plan covering this route (not held, transferred, delegation ended or expired)") \
  XX(PASS_QUOTA, -732, 402, "the pass's included quota for this period is spent") \
  XX(PASS_AUTH, -733, 401, "signed request authentication is invalid")         \
  /* settlement */                                                             \
  XX(SETTLE, -900, 500, "settlement run failed")                               \
  XX(SETTLE_GAS_PRICE, -901, 503, "gas price is above the settlement ceiling")  \
  XX(SETTLE_SKIPPED, -902, 409, "the contract skipped a claim item")           \
  XX(SETTLE_MISMATCH, -903, 500, "on-chain claimed total disagrees with the store") \
  XX(SETTLE_BATCH, -904, 500, "a single claim does not fit in a block")        \
  XX(SETTLE_REVERTED, -905, 500, "settlement transaction reverted")            \
  XX(SETTLE_NOT_RECEIVER, -906, 403, "gateway key is neither receiver nor receiver authorizer") \
  XX(SETTLE_RUNNING, -907, 409, "another settlement run holds the lease for this key") \
  /* contracts and deployment */                                               \
  XX(DEPLOY_ARTIFACT, -1100, 500, "contract artifact missing or malformed")     \
  XX(DEPLOY_EXISTS, -1101, 409, "contracts already deployed on this chain (use --force)") \
  XX(DEPLOY_FILE, -1102, 500, "deployment file missing or malformed")          \
  XX(DEPLOY_FAILED, -1103, 500, "contract creation failed")                    \
  XX(DEPLOY_CHAIN, -1104, 500, "deployment belongs to another chain")          \
  XX(DEPLOY_NO_CODE, -1105, 500, "no contract code at the deployed address")   \
  /* payer client */                                                           \
  XX(CLIENT_CAP, -1000, 402, "spending cap would be exceeded")                 \
  XX(CLIENT_OVERCHARGE, -1001, 502, "gateway charged more than the price it offered") \
  XX(CLIENT_NO_SCHEME, -1002, 402, "no payment scheme offered fits the policy") \
  XX(CLIENT_STATE, -1003, 500, "client state file is unreadable or malformed") \
  XX(CLIENT_HTTP, -1004, 502, "HTTP request failed")                          \
  XX(CLIENT_REFUSED, -1005, 402, "gateway refused the payment")               \
  XX(CLIENT_CORRECTION, -1006, 502, "corrective 402 carries no voucher we signed") \
  XX(CONFIG_FILE, -1206, 500, "configuration file cannot be read")

typedef enum {
#define TG__ERR_ENUM(name, code, http, msg) TG_E##name = (code),
  TG_ERRNO_MAP(TG__ERR_ENUM)
#undef TG__ERR_ENUM
} tg_err;

#define TG_OK TG_EOK

/* The symbolic name, e.g. "TG_ERLP"; "TG_EUNKNOWN" for a code not in the table. */
const char *tg_err_name(int err);
/* A one-line human message; never NULL. */
const char *tg_strerror(int err);
/* The HTTP status a gateway answers with for this error (500 when unknown). */
int tg_err_http_status(int err);

#if defined(__GNUC__)
#define TG_WARN_UNUSED_RESULT __attribute__((warn_unused_result))
#define TG_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define TG_WARN_UNUSED_RESULT
#define TG_NONNULL(...)
#endif

#ifdef __cplusplus
}
#endif
#endif

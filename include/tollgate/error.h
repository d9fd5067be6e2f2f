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
  /* transactions */                                                           \
  XX(TX, -350, 400, "malformed transaction")                                   \
  XX(TX_TYPE, -351, 400, "unsupported transaction type")                       \
  XX(TX_CHAIN, -352, 400, "transaction chain id is invalid")                   \
  XX(TX_FIELD, -353, 400, "transaction field out of range")                    \
  XX(TX_UNSIGNED, -354, 400, "transaction is not signed")

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

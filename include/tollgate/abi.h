/* Solidity ABI: type signatures, strict encoding and decoding, selectors, topics and revert data. */
#ifndef TOLLGATE_ABI_H
#define TOLLGATE_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Hard caps. A signature longer than TG_ABI_MAX_SIG characters, nested deeper
 * than TG_ABI_MAX_DEPTH (arrays and tuples both count), with more than
 * TG_ABI_MAX_NODES type nodes, or whose static head exceeds
 * TG_ABI_MAX_STATIC bytes is refused (TG_EABI_SIG / TG_EABI_DEPTH).
 * A decoded or parsed value tree holds at most TG_ABI_MAX_VALUES nodes and a
 * dynamic length (array count or byte length) above TG_ABI_MAX_LEN is
 * refused (TG_EABI_DATA).
 */
#define TG_ABI_MAX_SIG 8192
#define TG_ABI_MAX_DEPTH 32
#define TG_ABI_MAX_NODES 1024
#define TG_ABI_MAX_STATIC ((size_t)1 << 20)
#define TG_ABI_MAX_VALUES ((size_t)1 << 18)
#define TG_ABI_MAX_LEN ((size_t)1 << 26)

typedef enum {
  TG_ABI_UINT,        /* uintN, N = 8..256 step 8 (bits = N) */
  TG_ABI_INT,         /* intN (bits = N), two's complement */
  TG_ABI_ADDRESS,     /* 20 bytes, right-aligned */
  TG_ABI_BOOL,        /* 0 or 1 */
  TG_ABI_FIXED_BYTES, /* bytesN, N = 1..32 (size = N), left-aligned */
  TG_ABI_FUNCTION,    /* 24 bytes (address || selector), left-aligned */
  TG_ABI_BYTES,       /* dynamic bytes */
  TG_ABI_STRING,      /* dynamic UTF-8 string (not validated, as Solidity) */
  TG_ABI_ARRAY,       /* T[] */
  TG_ABI_FIXED_ARRAY, /* T[k] */
  TG_ABI_TUPLE        /* (T1,...,Tn), n >= 0 */
} tg_abi_kind;

/* A node of a parsed type tree. Read-only; owned by the tg_abi_sig that parsed it. */
typedef struct tg_abi_type tg_abi_type;
struct tg_abi_type {
  tg_abi_kind kind;
  uint16_t bits;                       /* uintN/intN: N */
  uint16_t size;                       /* bytesN: N; address 20; function 24 */
  int dynamic;                         /* 1 when the encoding has a tail */
  size_t count;                        /* T[k]: k; tuple: member count */
  size_t head;                         /* bytes it takes in its parent's head: 32 if dynamic */
  const tg_abi_type *elem;             /* T[] and T[k]: T */
  const tg_abi_type *const *members;   /* tuple: its `count` members */
};

/*
 * A parsed signature: `name(inputs)`, `name(inputs)(outputs)` (cast's form for
 * return types), `(inputs)`, or with `function `/`event `/`error ` prefixes and
 * parameter names, `indexed`, `memory`... as in Solidity source (all ignored).
 * `uint`/`int` canonicalize to `uint256`/`int256`, `byte` to `bytes1`,
 * `tuple(...)` to `(...)`. Unlike cast, unknown type names (`uint7`, struct names) are
 * refused rather than hashed verbatim, and `byte` hashes as `bytes1` (cast hashes "byte").
 * Nested empty tuples `()` are refused (Solidity has no empty structs); only the top-level
 * parameter list may be empty.
 */
typedef struct tg_abi_sig tg_abi_sig;
struct tg_abi_sig {
  tg_str name;                /* may be empty; points into canonical */
  const tg_abi_type *inputs;  /* always a tuple */
  const tg_abi_type *outputs; /* a tuple, or NULL when no output list was given */
  const char *canonical;      /* "name(uint256,(address,bytes)[])", NUL-terminated */
  size_t canonical_len;
  uint8_t selector[4];        /* keccak256(canonical)[0..4], computed once at parse time */
  void *priv_;                /* the arena holding all of the above */
};

/* Parses a signature. *out is NULL on failure. Errors: TG_EABI_SIG, TG_EABI_DEPTH. */
TG_WARN_UNUSED_RESULT int tg_abi_sig_parse(tg_abi_sig **out, const char *sig, size_t len);
/* Parses one type such as "(uint256,string)[2]" into a signature whose inputs tuple holds it. */
TG_WARN_UNUSED_RESULT int tg_abi_type_parse(tg_abi_sig **out, const char *type, size_t len);
void tg_abi_sig_free(tg_abi_sig *sig);

/* Canonical text of one type, appended to `out`. */
TG_WARN_UNUSED_RESULT int tg_abi_type_format(tg_buf *out, const tg_abi_type *t);

/* keccak256(canonical)[0..4] (a copy of sig->selector). */
void tg_abi_selector(uint8_t out[4], const tg_abi_sig *sig);
/* Parses, canonicalizes and hashes: the 4-byte function (or error) selector. */
TG_WARN_UNUSED_RESULT int tg_abi_selector_str(uint8_t out[4], const char *sig, size_t len);
/* Parses, canonicalizes and hashes: the event topic 0. */
TG_WARN_UNUSED_RESULT int tg_abi_event_topic(tg_hash *out, const char *sig, size_t len);

/*
 * A value. For static scalars (uintN, intN, address, bool, bytesN, function)
 * `word` holds the exact 32-byte ABI word (intN sign-extended, address and
 * uint right-aligned, bytesN and function left-aligned). For bytes and string,
 * `bytes` points at the content (not owned). For arrays and tuples, `items`
 * points at `count` children (not owned). Build them on the stack with the
 * helpers below; the encoder checks each value against its type.
 */
typedef struct tg_abi_value tg_abi_value;
struct tg_abi_value {
  tg_u256 word;
  tg_bytes bytes;
  const tg_abi_value *items;
  size_t count;
};

tg_abi_value tg_abi_val_word(const tg_u256 *word);
tg_abi_value tg_abi_val_u64(uint64_t v);
tg_abi_value tg_abi_val_i64(int64_t v);
tg_abi_value tg_abi_val_bool(int v);
tg_abi_value tg_abi_val_address(const tg_address *a);
/* bytesN: n <= 32 bytes, left-aligned and zero-padded. */
tg_abi_value tg_abi_val_fixed(const uint8_t *b, size_t n);
/* bytes or string content (not copied). */
tg_abi_value tg_abi_val_bytes(const void *p, size_t len);
/* An array or a tuple of `count` values (not copied). */
tg_abi_value tg_abi_val_list(const tg_abi_value *items, size_t count);

/*
 * The exact encoded size of `v` as type `t` (head and tail), after checking
 * that v fits t: integer range, bool 0/1, address/bytesN padding, array and
 * tuple counts. TG_EABI_VALUE when it does not fit.
 */
TG_WARN_UNUSED_RESULT int tg_abi_encoded_size(size_t *size, const tg_abi_type *t,
                                              const tg_abi_value *v);
/*
 * Encodes `v` as `t` into exactly `outlen` bytes (get it from tg_abi_encoded_size)
 * without allocating. TG_EBUFSIZE if outlen is not the encoded size.
 */
TG_WARN_UNUSED_RESULT int tg_abi_encode_to(uint8_t *out, size_t outlen, const tg_abi_type *t,
                                           const tg_abi_value *v);
/* abi.encode: appends the encoding of `v` (usually a tuple of arguments) to `out`. */
TG_WARN_UNUSED_RESULT int tg_abi_encode(tg_buf *out, const tg_abi_type *t,
                                        const tg_abi_value *v);
/* abi.encodeWithSelector: appends selector || encoding of args (a tuple value) as sig->inputs. */
TG_WARN_UNUSED_RESULT int tg_abi_encode_call(tg_buf *out, const tg_abi_sig *sig,
                                             const tg_abi_value *args);

/*
 * abi.encodePacked (Solidity's non-standard packed mode, `cast abi-encode --packed`):
 * scalars take their natural width (uintN N/8 bytes, address 20, bool 1, bytesN N),
 * bytes and string are raw, array elements are padded to 32 bytes each and no
 * length is written. Tuples are refused (TG_EUNSUPPORTED), as Solidity does.
 */
TG_WARN_UNUSED_RESULT int tg_abi_encode_packed(tg_buf *out, const tg_abi_type *t,
                                               const tg_abi_value *v);

/*
 * The allocation-free fast path for static calldata: write words straight into
 * caller storage, e.g. transferWithAuthorization is selector + 9 words.
 */
void tg_abi_put_u256(uint8_t out[32], const tg_u256 *v);
void tg_abi_put_u64(uint8_t out[32], uint64_t v);
void tg_abi_put_address(uint8_t out[32], const tg_address *a);
void tg_abi_put_bytes32(uint8_t out[32], const uint8_t b[32]);
void tg_abi_put_bool(uint8_t out[32], int v);

/*
 * A value tree owned by an arena: what the decoder and the text-argument
 * parser produce. Free it with tg_abi_tree_free (NULL is a no-op).
 */
typedef struct tg_abi_tree tg_abi_tree;
struct tg_abi_tree {
  const tg_abi_type *type; /* the type the root was decoded/parsed as */
  tg_abi_value root;
  void *priv_;
};
void tg_abi_tree_free(tg_abi_tree *tree);

/* Flags for tg_abi_decode. */
#define TG_ABI_DECODE_STRICT 0u /* every check below */
#define TG_ABI_DECODE_ALLOW_TRAILING 1u /* bytes after the last tail are ignored */
/* Offsets must be exactly the ones the encoder writes (tails in order, back to back):
 * what decodes then re-encodes to the same bytes. */
#define TG_ABI_DECODE_CANONICAL 2u

/*
 * Strict decoding of `data` as type `t` (usually sig->inputs or ->outputs).
 * Stricter than cast/alloy (which accept dirty high bits and non-zero padding, and print
 * e.g. 257 for a uint8): ABI data from a node or a payer is untrusted, so anything a
 * Solidity encoder cannot produce is refused.
 * Rejected (TG_EABI_DATA): reads past the end, offsets that point outside the
 * data or into the head they belong to, lengths above TG_ABI_MAX_LEN or the
 * data, dirty high bits of uintN/intN (not a sign extension)/address/bool
 * (not 0/1)/function, non-zero padding of bytesN, bytes and string.
 * `bytes` of the decoded values point into `data`, which must outlive the tree.
 * Without TG_ABI_DECODE_ALLOW_TRAILING, data must end where the encoding ends
 * (TG_ETRAILING otherwise) -- a dynamic encoding's end is its last tail.
 */
TG_WARN_UNUSED_RESULT int tg_abi_decode(tg_abi_tree **out, const tg_abi_type *t,
                                        const uint8_t *data, size_t len, unsigned flags);

/*
 * Parses cast-style textual arguments (the grammar of alloy's DynSolType::coerce_str, which
 * `cast abi-encode` uses), one string per member of the tuple `t`:
 *   uintN  decimal, 0x/0b/0o literals, a fraction and/or e-exponent with a unit
 *          ("1.5ether", "15e-1 ether", "1 gwei"; units wei, gwei, nano, nanoether, ether);
 *   intN   the same with an optional + or - sign;  bool  true | false;
 *   address/bytesN/function  exactly 2N hex digits, 0x optional; bytes  hex, "0x" for empty;
 *   string raw text (trailing whitespace trimmed) or in "double"/'single' quotes;
 *   T[] / T[k]  "[a, b]" (a trailing comma is allowed);  tuples  "(a, b)".
 * Inside a list an unquoted string runs to the next ',' or closing bracket.
 * One deliberate difference from cast: a mixed-case address must be a valid EIP-55 checksum
 * (TG_ECHECKSUM); cast ignores the case. Strings in the tree are copies.
 * Errors: TG_EABI_VALUE (or TG_ECHECKSUM); tg_abi_parse_arg tells which argument failed.
 */
TG_WARN_UNUSED_RESULT int tg_abi_parse_args(tg_abi_tree **out, const tg_abi_type *t,
                                            const char *const *args, size_t nargs);
/* One argument of type `t`. */
TG_WARN_UNUSED_RESULT int tg_abi_parse_arg(tg_abi_tree **out, const tg_abi_type *t,
                                           const char *arg, size_t len);

/*
 * Formats a value as `cast decode-abi` prints it: numbers in decimal, with cast's
 * " [1.234e5]" note when |v| >= 10000; addresses EIP-55; bytes, bytesN and function as
 * 0x hex; strings quoted and escaped as Rust's Debug does (\" \\ \n \t \r \0 and \u{..}
 * for control, format, unassigned, private-use and combining code points; invalid UTF-8
 * shown as U+FFFD); arrays "[a, b]"; tuples "(a, b)". Appends to `out` (no newline).
 */
TG_WARN_UNUSED_RESULT int tg_abi_format_value(tg_buf *out, const tg_abi_type *t,
                                              const tg_abi_value *v);
/* The members of a tuple value one per line (each followed by "\n"), as cast decode-abi. */
TG_WARN_UNUSED_RESULT int tg_abi_format_lines(tg_buf *out, const tg_abi_type *tuple,
                                              const tg_abi_value *v);

/* Revert data. */
typedef enum {
  TG_ABI_REVERT_EMPTY,  /* no data: a bare revert() or out of gas */
  TG_ABI_REVERT_ERROR,  /* Error(string): message */
  TG_ABI_REVERT_PANIC,  /* Panic(uint256): panic_code, panic_reason */
  TG_ABI_REVERT_CUSTOM, /* one of the given custom errors: custom_index, args */
  TG_ABI_REVERT_UNKNOWN /* anything else (selector unknown or args malformed) */
} tg_abi_revert_kind;

typedef struct {
  tg_abi_revert_kind kind;
  tg_bytes message;         /* ERROR: the string, pointing into the data */
  tg_u256 panic_code;       /* PANIC */
  const char *panic_reason; /* PANIC: e.g. "arithmetic underflow or overflow"; NULL if unknown */
  size_t custom_index;      /* CUSTOM: index into `customs` */
  tg_abi_tree *args;        /* CUSTOM: the decoded arguments (free with tg_abi_revert_cleanup) */
  uint8_t selector[4];      /* first 4 bytes when len >= 4 */
} tg_abi_revert;

/*
 * Classifies and decodes revert data. `customs` are parsed error signatures
 * tried in order (may be NULL with ncustom 0). Decoding is strict but a
 * malformed body yields kind UNKNOWN rather than an error; errors are only
 * TG_EABI_DATA for data of 1..3 bytes.
 */
TG_WARN_UNUSED_RESULT int tg_abi_decode_revert(tg_abi_revert *out, const uint8_t *data,
                                               size_t len, const tg_abi_sig *const *customs,
                                               size_t ncustom);
void tg_abi_revert_cleanup(tg_abi_revert *r);
/* The meaning of a Solidity panic code (0x01 assert, 0x11 overflow, ...), or NULL. */
const char *tg_abi_panic_reason(uint64_t code);

#ifdef __cplusplus
}
#endif
#endif

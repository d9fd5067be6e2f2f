/* libFuzzer driver: strict ABI decoding of arbitrary data against fixed signatures and one taken from the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/abi.h"

static const char *const sigs[] = {
    "f(uint256,address,bytes,(bytes32,uint128)[],string)",
    "f(uint8,int16,bool,bytes3,function)",
    "f(string[],bytes[2],uint256[][])",
    "f((uint256,(string,bytes)[])[],(bool,int256)[2])",
    "claim((bytes32,uint128,bytes)[])",
    "f(uint8[][][][])",
};
#define NSIGS (sizeof sigs / sizeof sigs[0])
static tg_abi_sig *parsed[NSIGS];

/* Decoding checks: what decodes canonically re-encodes to the same bytes; what decodes at all
 * re-encodes to something that decodes canonically to the same text. */
static void check(const tg_abi_type *t, const uint8_t *data, size_t size) {
  tg_abi_tree *tree = NULL;
  if (tg_abi_decode(&tree, t, data, size, TG_ABI_DECODE_CANONICAL) == 0) {
    tg_buf b;
    tg_buf_init(&b, 0);
    if (tg_abi_encode(&b, t, &tree->root) != 0) abort();
    if (b.len != size || (size && memcmp(b.data, data, size) != 0)) abort();
    tg_buf_cleanup(&b);
    tg_abi_tree_free(tree);
  }
  if (tg_abi_decode(&tree, t, data, size, TG_ABI_DECODE_ALLOW_TRAILING) == 0) {
    tg_buf b, f1, f2;
    tg_buf_init(&b, 0);
    tg_buf_init(&f1, 0);
    tg_buf_init(&f2, 0);
    if (tg_abi_encode(&b, t, &tree->root) != 0) abort();
    if (tg_abi_format_value(&f1, t, &tree->root) != 0) abort();
    tg_abi_tree *again = NULL;
    if (tg_abi_decode(&again, t, b.data, b.len, TG_ABI_DECODE_CANONICAL) != 0) abort();
    if (tg_abi_format_value(&f2, t, &again->root) != 0) abort();
    if (f1.len != f2.len || memcmp(f1.data, f2.data, f1.len) != 0) abort();
    tg_abi_tree_free(again);
    tg_buf_cleanup(&b);
    tg_buf_cleanup(&f1);
    tg_buf_cleanup(&f2);
    tg_abi_tree_free(tree);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (parsed[0] == NULL)
    for (size_t i = 0; i < NSIGS; i++)
      if (tg_abi_sig_parse(&parsed[i], sigs[i], strlen(sigs[i])) != 0) abort();
  /* The first byte picks a fixed signature, or (>= NSIGS) says how long a signature prefix is. */
  if (size == 0) return 0;
  size_t pick = data[0];
  data++, size--;
  if (pick < NSIGS) {
    check(parsed[pick]->inputs, data, size);
  } else {
    size_t n = pick - NSIGS;
    if (n > size) n = size;
    tg_abi_sig *s = NULL;
    if (tg_abi_sig_parse(&s, (const char *)data, n) == 0) {
      check(s->inputs, data + n, size - n);
      tg_abi_sig_free(s);
    }
  }
  tg_abi_revert r;
  if (tg_abi_decode_revert(&r, data, size, (const tg_abi_sig *const *)parsed, NSIGS) == 0)
    tg_abi_revert_cleanup(&r);
  return 0;
}

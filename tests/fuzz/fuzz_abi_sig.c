/* libFuzzer driver: the ABI signature parser and the cast-style argument parser on arbitrary text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/abi.h"

static const char *const types[] = {"uint256", "int8", "address", "bool", "bytes4", "bytes",
                                    "string", "uint64[]", "(uint8,string)[2]", "(bytes,int256[])[]",
                                    "string[][]"};
#define NTYPES (sizeof types / sizeof types[0])
static tg_abi_sig *parsed[NTYPES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (parsed[0] == NULL)
    for (size_t i = 0; i < NTYPES; i++)
      if (tg_abi_type_parse(&parsed[i], types[i], strlen(types[i])) != 0) abort();
  const char *s = (const char *)data;
  tg_abi_sig *sig = NULL;
  if (tg_abi_sig_parse(&sig, s, size) == 0) {
    /* the canonical form parses to itself */
    tg_abi_sig *again = NULL;
    if (tg_abi_sig_parse(&again, sig->canonical, sig->canonical_len) != 0) abort();
    if (again->canonical_len != sig->canonical_len ||
        memcmp(again->canonical, sig->canonical, sig->canonical_len) != 0)
      abort();
    tg_abi_sig_free(again);
    tg_abi_sig_free(sig);
  }
  if (tg_abi_type_parse(&sig, s, size) == 0) {
    tg_buf b;
    tg_buf_init(&b, 0);
    if (tg_abi_type_format(&b, sig->inputs->members[0]) != 0) abort();
    tg_buf_cleanup(&b);
    tg_abi_sig_free(sig);
  }
  /* the input as an argument of each type: what parses encodes and decodes back to the same text */
  for (size_t i = 0; i < NTYPES; i++) {
    const tg_abi_type *t = parsed[i]->inputs->members[0];
    tg_abi_tree *tree = NULL;
    if (tg_abi_parse_arg(&tree, t, s, size) != 0) continue;
    tg_buf enc, f1, f2;
    tg_buf_init(&enc, 0);
    tg_buf_init(&f1, 0);
    tg_buf_init(&f2, 0);
    if (tg_abi_encode(&enc, t, &tree->root) != 0) abort();
    tg_abi_tree *back = NULL;
    if (tg_abi_decode(&back, t, enc.data, enc.len, TG_ABI_DECODE_CANONICAL) != 0) abort();
    if (tg_abi_format_value(&f1, t, &tree->root) || tg_abi_format_value(&f2, t, &back->root)) abort();
    if (f1.len != f2.len || memcmp(f1.data, f2.data, f1.len) != 0) abort();
    tg_abi_tree_free(back);
    tg_abi_tree_free(tree);
    tg_buf_cleanup(&enc);
    tg_buf_cleanup(&f1);
    tg_buf_cleanup(&f2);
  }
  return 0;
}

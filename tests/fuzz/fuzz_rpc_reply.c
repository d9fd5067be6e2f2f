/* libFuzzer driver: the JSON-RPC reply parser and the result parsers (receipt, block, log, fee history) on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_int.h"
#include "tollgate/rpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The first byte picks the shape expected: a single call or a batch of 1..4, ids from 1. */
  if (size < 1) return 0;
  size_t n = (size_t)(data[0] & 3) + 1;
  int is_batch = (data[0] & 4) != 0;
  if (!is_batch) n = 1;
  const char *body = (const char *)data + 1;
  size_t len = size - 1;
  tg_rpc_reply r[4];
  memset(r, 0, sizeof r);
  int rc = tg__rpc_parse_reply(r, n, 1, is_batch, body, len);
  for (size_t i = 0; i < n; i++) {
    if (rc != 0 && (r[i].result || r[i].message || r[i].data)) abort();
    if (rc == 0 && r[i].err == 0 && !r[i].result) abort();
    if (rc == 0 && r[i].err != 0 && r[i].result) abort();
    const json_t *v = r[i].result;
    if (v) {
      /* Whatever came back, the typed parsers must cope with it. */
      tg_eth_receipt rcpt;
      if (tg_rpc_parse_receipt(v, &rcpt) == 0) tg_eth_receipt_cleanup(&rcpt);
      tg_eth_block blk;
      if (tg_rpc_parse_block(v, &blk) == 0) tg_eth_block_cleanup(&blk);
      tg_eth_log log;
      if (tg_rpc_parse_log(v, &log) == 0) tg_eth_log_cleanup(&log);
      tg_fee_history fh;
      if (tg_rpc_parse_fee_history(v, &fh) == 0) tg_fee_history_cleanup(&fh);
      uint64_t u;
      tg_u256 w;
      tg_hash h;
      tg_address a;
      int ign = tg_rpc_parse_u64(v, &u);
      ign |= tg_rpc_parse_u256(v, &w);
      ign |= tg_rpc_parse_hash(v, &h);
      ign |= tg_rpc_parse_address(v, &a);
      tg_buf b;
      tg_buf_init(&b, 1 << 16);
      ign |= tg_rpc_parse_data(v, &b);
      if (ign == 0 && b.len > (1 << 16)) abort();
      tg_buf_cleanup(&b);
    }
    tg_rpc_reply_cleanup(&r[i]);
  }
  return 0;
}

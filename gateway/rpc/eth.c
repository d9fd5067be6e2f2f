/* Typed eth_* calls over the JSON-RPC client, and parsers of their results (receipts, logs, blocks, fee history). */
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_int.h"
#include "tollgate/rpc.h"
#include "tollgate/u256.h"

/* Caps on what one reply may make us allocate. */
#define MAX_LOGS_PER_RECEIPT 10000
#define MAX_TXS_PER_BLOCK 100000
#define MAX_LOG_DATA ((size_t)1 << 20)

static json_t *arr(void) {
  json_t *a = json_array();
  if (!a) abort();
  return a;
}

static void push(json_t *a, json_t *v) {
  if (!v || json_array_append_new(a, v) != 0) abort();
}

/* Runs a call and hands back its result (a new reference) or the error. */
static int call_result(tg_rpc *rpc, json_t **result, const char *method, json_t *params) {
  tg_rpc_reply r;
  int rc = tg_rpc_call(rpc, &r, method, params);
  *result = NULL;
  if (rc == 0) {
    *result = r.result;
    r.result = NULL;
  }
  tg_rpc_reply_cleanup(&r);
  return rc;
}

static int call_u64(tg_rpc *rpc, uint64_t *out, const char *method, json_t *params) {
  *out = 0;
  json_t *res;
  int rc = call_result(rpc, &res, method, params);
  if (rc == 0) {
    rc = tg_rpc_parse_u64(res, out) ? TG_ERPC_REPLY : 0;
    json_decref(res);
  }
  return rc;
}

static int call_u256(tg_rpc *rpc, tg_u256 *out, const char *method, json_t *params) {
  tg_u256_zero(out);
  json_t *res;
  int rc = call_result(rpc, &res, method, params);
  if (rc == 0) {
    rc = tg_rpc_parse_u256(res, out) ? TG_ERPC_REPLY : 0;
    json_decref(res);
  }
  return rc;
}

int tg_eth_chain_id(tg_rpc *rpc, uint64_t *out) {
  return call_u64(rpc, out, "eth_chainId", NULL);
}

int tg_eth_block_number(tg_rpc *rpc, uint64_t *out) {
  return call_u64(rpc, out, "eth_blockNumber", NULL);
}

int tg_eth_get_balance(tg_rpc *rpc, tg_u256 *out, const tg_address *who, const char *block) {
  json_t *p = arr();
  push(p, tg_rpc_json_address(who));
  push(p, tg_rpc_json_block(block));
  return call_u256(rpc, out, "eth_getBalance", p);
}

int tg_eth_get_transaction_count(tg_rpc *rpc, uint64_t *out, const tg_address *who,
                                 const char *block) {
  json_t *p = arr();
  push(p, tg_rpc_json_address(who));
  push(p, tg_rpc_json_block(block));
  return call_u64(rpc, out, "eth_getTransactionCount", p);
}

int tg_eth_get_code(tg_rpc *rpc, tg_buf *out, const tg_address *who, const char *block) {
  json_t *p = arr();
  push(p, tg_rpc_json_address(who));
  push(p, tg_rpc_json_block(block));
  json_t *res;
  int rc = call_result(rpc, &res, "eth_getCode", p);
  if (rc) return rc;
  size_t before = out->len;
  rc = tg_rpc_parse_data(res, out);
  if (rc && rc != TG_ETOOBIG) rc = TG_ERPC_REPLY;
  if (rc) out->len = before;
  json_decref(res);
  return rc;
}

int tg_eth_gas_price(tg_rpc *rpc, tg_u256 *out) {
  return call_u256(rpc, out, "eth_gasPrice", NULL);
}

int tg_eth_max_priority_fee(tg_rpc *rpc, tg_u256 *out) {
  return call_u256(rpc, out, "eth_maxPriorityFeePerGas", NULL);
}

json_t *tg_eth_msg_json(const tg_eth_msg *m) {
  json_t *o = json_object();
  if (!o) abort();
  if (m->from) json_object_set_new(o, "from", tg_rpc_json_address(m->from));
  if (m->to) json_object_set_new(o, "to", tg_rpc_json_address(m->to));
  if (m->data_len) json_object_set_new(o, "input", tg_rpc_json_bytes(m->data, m->data_len));
  if (m->value) json_object_set_new(o, "value", tg_rpc_json_u256(m->value));
  if (m->gas) json_object_set_new(o, "gas", tg_rpc_json_u64(m->gas));
  if (m->gas_price) json_object_set_new(o, "gasPrice", tg_rpc_json_u256(m->gas_price));
  if (m->max_fee_per_gas)
    json_object_set_new(o, "maxFeePerGas", tg_rpc_json_u256(m->max_fee_per_gas));
  if (m->max_priority_fee_per_gas)
    json_object_set_new(o, "maxPriorityFeePerGas", tg_rpc_json_u256(m->max_priority_fee_per_gas));
  return o;
}

/* Runs eth_call or eth_estimateGas; on a revert, copies the revert data. */
static int call_with_revert(tg_rpc *rpc, json_t **result, tg_buf *revert, const char *method,
                            json_t *params) {
  tg_rpc_reply r;
  int rc = tg_rpc_call(rpc, &r, method, params);
  *result = NULL;
  if (rc == 0) {
    *result = r.result;
    r.result = NULL;
  } else if (rc == TG_ERPC_REVERTED && revert && json_is_string(r.data)) {
    size_t before = revert->len;
    if (tg_rpc_parse_data(r.data, revert) != 0) revert->len = before;
  }
  tg_rpc_reply_cleanup(&r);
  return rc;
}

int tg_eth_call(tg_rpc *rpc, tg_buf *out, tg_buf *revert, const tg_eth_msg *msg,
                const char *block) {
  json_t *p = arr();
  push(p, tg_eth_msg_json(msg));
  push(p, tg_rpc_json_block(block));
  json_t *res;
  int rc = call_with_revert(rpc, &res, revert, "eth_call", p);
  if (rc) return rc;
  size_t before = out->len;
  rc = tg_rpc_parse_data(res, out);
  if (rc && rc != TG_ETOOBIG) rc = TG_ERPC_REPLY;
  if (rc) out->len = before;
  json_decref(res);
  return rc;
}

int tg_eth_estimate_gas(tg_rpc *rpc, uint64_t *out, tg_buf *revert, const tg_eth_msg *msg) {
  *out = 0;
  json_t *p = arr();
  push(p, tg_eth_msg_json(msg));
  json_t *res;
  int rc = call_with_revert(rpc, &res, revert, "eth_estimateGas", p);
  if (rc) return rc;
  rc = tg_rpc_parse_u64(res, out) ? TG_ERPC_REPLY : 0;
  json_decref(res);
  return rc;
}

void tg_fee_history_cleanup(tg_fee_history *fh) {
  if (!fh) return;
  free(fh->base_fee);
  free(fh->gas_used_ratio);
  free(fh->reward);
  memset(fh, 0, sizeof *fh);
}

int tg_rpc_parse_fee_history(const json_t *v, tg_fee_history *out) {
  memset(out, 0, sizeof *out);
  const json_t *bf = json_object_get(v, "baseFeePerGas");
  const json_t *gr = json_object_get(v, "gasUsedRatio");
  const json_t *rw = json_object_get(v, "reward");
  if (!json_is_object(v) || !json_is_array(bf) || !json_is_array(gr)) return TG_ERPC_REPLY;
  size_t n = json_array_size(gr);
  if (n > TG_FEE_HISTORY_MAX_BLOCKS || json_array_size(bf) != n + 1) return TG_ERPC_REPLY;
  if (tg_rpc_parse_u64(json_object_get(v, "oldestBlock"), &out->oldest_block)) return TG_ERPC_REPLY;
  size_t np = 0;
  if (rw && !json_is_null(rw)) {
    if (!json_is_array(rw) || json_array_size(rw) != n) return TG_ERPC_REPLY;
    if (n) np = json_array_size(json_array_get(rw, 0));
    if (np > TG_FEE_HISTORY_MAX_PCTS) return TG_ERPC_REPLY;
  }
  out->n_blocks = n;
  out->n_pcts = np;
  out->base_fee = calloc(n + 1, sizeof *out->base_fee);
  out->gas_used_ratio = calloc(n ? n : 1, sizeof *out->gas_used_ratio);
  if (!out->base_fee || !out->gas_used_ratio) abort();
  if (np) {
    out->reward = calloc(n * np, sizeof *out->reward);
    if (!out->reward) abort();
  }
  for (size_t i = 0; i <= n; i++)
    if (tg_rpc_parse_u256(json_array_get(bf, i), &out->base_fee[i])) goto bad;
  for (size_t i = 0; i < n; i++) {
    const json_t *x = json_array_get(gr, i);
    if (!json_is_number(x)) goto bad;
    out->gas_used_ratio[i] = json_number_value(x);
    if (np) {
      const json_t *row = json_array_get(rw, i);
      if (!json_is_array(row) || json_array_size(row) != np) goto bad;
      for (size_t k = 0; k < np; k++)
        if (tg_rpc_parse_u256(json_array_get(row, k), &out->reward[i * np + k])) goto bad;
    }
  }
  return 0;
bad:
  tg_fee_history_cleanup(out);
  return TG_ERPC_REPLY;
}

int tg_eth_fee_history(tg_rpc *rpc, tg_fee_history *out, unsigned n_blocks, const char *newest,
                       const double *pcts, size_t n_pcts) {
  memset(out, 0, sizeof *out);
  if (n_blocks == 0 || n_blocks > TG_FEE_HISTORY_MAX_BLOCKS || n_pcts > TG_FEE_HISTORY_MAX_PCTS)
    return TG_EINVAL;
  json_t *p = arr();
  push(p, tg_rpc_json_u64(n_blocks));
  push(p, tg_rpc_json_block(newest));
  json_t *pa = arr();
  for (size_t i = 0; i < n_pcts; i++) push(pa, json_real(pcts[i]));
  push(p, pa);
  json_t *res;
  int rc = call_result(rpc, &res, "eth_feeHistory", p);
  if (rc) return rc;
  rc = tg_rpc_parse_fee_history(res, out);
  if (rc == 0 && out->n_pcts != n_pcts && out->n_blocks) {
    tg_fee_history_cleanup(out);
    rc = TG_ERPC_REPLY;
  }
  json_decref(res);
  return rc;
}

int tg_eth_send_raw_transaction(tg_rpc *rpc, tg_hash *out, const uint8_t *raw, size_t len) {
  memset(out, 0, sizeof *out);
  json_t *p = arr();
  push(p, tg_rpc_json_bytes(raw, len));
  json_t *res;
  int rc = call_result(rpc, &res, "eth_sendRawTransaction", p);
  if (rc) return rc;
  rc = tg_rpc_parse_hash(res, out) ? TG_ERPC_REPLY : 0;
  json_decref(res);
  return rc;
}

/* ------------------------------------------------------------------ logs */

void tg_eth_log_cleanup(tg_eth_log *log) {
  if (!log) return;
  free(log->data);
  memset(log, 0, sizeof *log);
}

static int get_u64(const json_t *o, const char *k, uint64_t *out) {
  return tg_rpc_parse_u64(json_object_get(o, k), out);
}

static int get_hash(const json_t *o, const char *k, tg_hash *out) {
  return tg_rpc_parse_hash(json_object_get(o, k), out);
}

int tg_rpc_parse_log(const json_t *v, tg_eth_log *out) {
  memset(out, 0, sizeof *out);
  if (!json_is_object(v)) return TG_ERPC_REPLY;
  const json_t *topics = json_object_get(v, "topics");
  if (!json_is_array(topics) || json_array_size(topics) > 4) return TG_ERPC_REPLY;
  if (tg_rpc_parse_address(json_object_get(v, "address"), &out->address)) goto bad;
  out->n_topics = json_array_size(topics);
  for (size_t i = 0; i < out->n_topics; i++)
    if (tg_rpc_parse_hash(json_array_get(topics, i), &out->topics[i])) goto bad;
  if (get_u64(v, "blockNumber", &out->block_number) || get_hash(v, "blockHash", &out->block_hash) ||
      get_hash(v, "transactionHash", &out->tx_hash) ||
      get_u64(v, "transactionIndex", &out->tx_index) || get_u64(v, "logIndex", &out->log_index))
    goto bad;
  const json_t *rm = json_object_get(v, "removed");
  if (rm && !json_is_boolean(rm)) goto bad;
  out->removed = json_is_true(rm);
  tg_buf d;
  tg_buf_init(&d, MAX_LOG_DATA);
  if (tg_rpc_parse_data(json_object_get(v, "data"), &d)) {
    tg_buf_cleanup(&d);
    goto bad;
  }
  out->data = tg_buf_steal(&d, &out->data_len);
  return 0;
bad:
  tg_eth_log_cleanup(out);
  return TG_ERPC_REPLY;
}

/* -------------------------------------------------------------- receipts */

void tg_eth_receipt_cleanup(tg_eth_receipt *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_logs; i++) tg_eth_log_cleanup(&r->logs[i]);
  free(r->logs);
  memset(r, 0, sizeof *r);
}

/* An address or JSON null (absent counts as null); 1 when present. */
static int opt_address(const json_t *o, const char *k, tg_address *out, int *present) {
  const json_t *v = json_object_get(o, k);
  *present = 0;
  if (!v || json_is_null(v)) return 0;
  *present = 1;
  return tg_rpc_parse_address(v, out);
}

int tg_rpc_parse_receipt(const json_t *v, tg_eth_receipt *out) {
  memset(out, 0, sizeof *out);
  if (!json_is_object(v)) return TG_ERPC_REPLY;
  uint64_t x;
  if (get_hash(v, "transactionHash", &out->tx_hash) || get_hash(v, "blockHash", &out->block_hash) ||
      get_u64(v, "blockNumber", &out->block_number) ||
      get_u64(v, "transactionIndex", &out->tx_index) ||
      tg_rpc_parse_address(json_object_get(v, "from"), &out->from) ||
      opt_address(v, "to", &out->to, &out->has_to) ||
      opt_address(v, "contractAddress", &out->contract_address, &out->has_contract_address) ||
      get_u64(v, "gasUsed", &out->gas_used) ||
      get_u64(v, "cumulativeGasUsed", &out->cumulative_gas_used) || get_u64(v, "status", &x) ||
      x > 1)
    goto bad;
  out->status = (int)x;
  if (json_object_get(v, "effectiveGasPrice") &&
      tg_rpc_parse_u256(json_object_get(v, "effectiveGasPrice"), &out->effective_gas_price))
    goto bad;
  if (json_object_get(v, "type")) {
    if (get_u64(v, "type", &x) || x > 0xff) goto bad;
    out->type = (unsigned)x;
  }
  const json_t *logs = json_object_get(v, "logs");
  if (!json_is_array(logs) || json_array_size(logs) > MAX_LOGS_PER_RECEIPT) goto bad;
  size_t n = json_array_size(logs);
  if (n) {
    out->logs = calloc(n, sizeof *out->logs);
    if (!out->logs) abort();
  }
  for (size_t i = 0; i < n; i++) {
    if (tg_rpc_parse_log(json_array_get(logs, i), &out->logs[i])) goto bad;
    out->n_logs = i + 1;
  }
  return 0;
bad:
  tg_eth_receipt_cleanup(out);
  return TG_ERPC_REPLY;
}

int tg_eth_get_receipt(tg_rpc *rpc, tg_eth_receipt *out, const tg_hash *tx) {
  memset(out, 0, sizeof *out);
  json_t *p = arr();
  push(p, tg_rpc_json_hash(tx));
  json_t *res;
  int rc = call_result(rpc, &res, "eth_getTransactionReceipt", p);
  if (rc) return rc;
  rc = json_is_null(res) ? TG_ENOTFOUND : tg_rpc_parse_receipt(res, out);
  json_decref(res);
  return rc;
}

/* ---------------------------------------------------------------- blocks */

void tg_eth_block_cleanup(tg_eth_block *b) {
  if (!b) return;
  free(b->tx_hashes);
  memset(b, 0, sizeof *b);
}

int tg_rpc_parse_block(const json_t *v, tg_eth_block *out) {
  memset(out, 0, sizeof *out);
  if (!json_is_object(v)) return TG_ERPC_REPLY;
  if (get_u64(v, "number", &out->number) || get_hash(v, "hash", &out->hash) ||
      get_hash(v, "parentHash", &out->parent_hash) || get_u64(v, "timestamp", &out->timestamp) ||
      get_u64(v, "gasLimit", &out->gas_limit) || get_u64(v, "gasUsed", &out->gas_used) ||
      tg_rpc_parse_address(json_object_get(v, "miner"), &out->miner))
    goto bad;
  const json_t *bf = json_object_get(v, "baseFeePerGas");
  if (bf && !json_is_null(bf)) {
    if (tg_rpc_parse_u256(bf, &out->base_fee)) goto bad;
    out->has_base_fee = 1;
  }
  const json_t *txs = json_object_get(v, "transactions");
  if (!json_is_array(txs) || json_array_size(txs) > MAX_TXS_PER_BLOCK) goto bad;
  size_t n = json_array_size(txs);
  if (n) {
    out->tx_hashes = calloc(n, sizeof *out->tx_hashes);
    if (!out->tx_hashes) abort();
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *t = json_array_get(txs, i);
    if (json_is_object(t)) t = json_object_get(t, "hash");
    if (tg_rpc_parse_hash(t, &out->tx_hashes[i])) goto bad;
  }
  out->n_txs = n;
  return 0;
bad:
  tg_eth_block_cleanup(out);
  return TG_ERPC_REPLY;
}

int tg_eth_get_block(tg_rpc *rpc, tg_eth_block *out, const char *block) {
  memset(out, 0, sizeof *out);
  json_t *p = arr();
  push(p, tg_rpc_json_block(block));
  push(p, json_false());
  json_t *res;
  int rc = call_result(rpc, &res, "eth_getBlockByNumber", p);
  if (rc) return rc;
  rc = json_is_null(res) ? TG_ENOTFOUND : tg_rpc_parse_block(res, out);
  json_decref(res);
  return rc;
}

/* ------------------------------------------------------------------ getLogs */

static json_t *filter_json(const tg_eth_log_filter *f, uint64_t from, uint64_t to) {
  json_t *o = json_object();
  if (!o) abort();
  json_object_set_new(o, "fromBlock", tg_rpc_json_u64(from));
  json_object_set_new(o, "toBlock", tg_rpc_json_u64(to));
  if (f->n_addresses == 1) {
    json_object_set_new(o, "address", tg_rpc_json_address(&f->addresses[0]));
  } else if (f->n_addresses > 1) {
    json_t *a = arr();
    for (size_t i = 0; i < f->n_addresses; i++) push(a, tg_rpc_json_address(&f->addresses[i]));
    json_object_set_new(o, "address", a);
  }
  size_t last = 0;
  for (size_t i = 0; i < 4; i++)
    if (f->topics[i] && f->n_topic_alts[i]) last = i + 1;
  if (last) {
    json_t *t = arr();
    for (size_t i = 0; i < last; i++) {
      if (!f->topics[i] || !f->n_topic_alts[i]) {
        push(t, json_null());
      } else if (f->n_topic_alts[i] == 1) {
        push(t, tg_rpc_json_hash(&f->topics[i][0]));
      } else {
        json_t *alts = arr();
        for (size_t k = 0; k < f->n_topic_alts[i]; k++) push(alts, tg_rpc_json_hash(&f->topics[i][k]));
        push(t, alts);
      }
    }
    json_object_set_new(o, "topics", t);
  }
  return o;
}

int tg_eth_get_logs(tg_rpc *rpc, const tg_eth_log_filter *f, tg_eth_log_cb cb, void *arg) {
  if (!f || !cb || f->from_block > f->to_block) return TG_EINVAL;
  uint64_t page = f->page_blocks ? f->page_blocks : 2000;
  uint64_t from = f->from_block;
  for (;;) {
    uint64_t to = f->to_block - from < page ? f->to_block : from + page - 1;
    json_t *p = arr();
    push(p, filter_json(f, from, to));
    json_t *res;
    int rc = call_result(rpc, &res, "eth_getLogs", p);
    if (rc == TG_ERPC_LIMIT && page > 1) {
      page /= 2;
      continue;
    }
    if (rc) return rc;
    if (!json_is_array(res)) {
      json_decref(res);
      return TG_ERPC_REPLY;
    }
    for (size_t i = 0; i < json_array_size(res); i++) {
      tg_eth_log log;
      rc = tg_rpc_parse_log(json_array_get(res, i), &log);
      if (rc == 0) {
        rc = cb(arg, &log);
        tg_eth_log_cleanup(&log);
      }
      if (rc) {
        json_decref(res);
        return rc;
      }
    }
    json_decref(res);
    if (to == f->to_block) return 0;
    from = to + 1;
  }
}

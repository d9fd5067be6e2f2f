/* JSON-RPC 2.0 reply parsing (single and batch answers, from untrusted bytes) and node error classification. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rpc/rpc_int.h"

void tg_rpc_reply_cleanup(tg_rpc_reply *r) {
  if (!r) return;
  free(r->message);
  json_decref(r->data);
  json_decref(r->result);
  memset(r, 0, sizeof *r);
  r->endpoint = -1;
}

/* Case-insensitive substring test, bounded by the message itself. */
static int has(const char *msg, const char *needle) {
  size_t n = strlen(needle);
  for (const char *p = msg; *p; p++)
    if (strncasecmp(p, needle, n) == 0) return 1;
  return 0;
}

int tg_rpc_classify(long long code, const char *m) {
  if (!m) m = "";
  /* Execution errors: code 3 carries revert data (geth, anvil, erigon). */
  if (code == 3 || has(m, "execution reverted") || has(m, "revert")) return TG_ERPC_REVERTED;
  if (has(m, "nonce too low") || has(m, "nonce is too low") || has(m, "nonce has already been used") ||
      has(m, "old nonce"))
    return TG_ERPC_NONCE_LOW;
  if (has(m, "already known") || has(m, "already imported") || has(m, "known transaction") ||
      has(m, "already exists") || has(m, "alreadyknown"))
    return TG_ERPC_ALREADY_KNOWN;
  if (has(m, "underpriced") || has(m, "fee too low") || has(m, "feetoolow") ||
      has(m, "max fee per gas less than block base fee"))
    return TG_ERPC_UNDERPRICED;
  if (has(m, "insufficient funds") || has(m, "insufficient balance")) return TG_ERPC_FUNDS;
  if (code == -32005 || has(m, "query returned more than") || has(m, "block range") ||
      has(m, "too many results") || has(m, "limit exceeded") || has(m, "range too large") ||
      has(m, "exceed maximum block range"))
    return TG_ERPC_LIMIT;
  return TG_ERPC;
}

void tg__rpc_reply_set_error(tg_rpc_reply *r, long long code, const char *message,
                             const json_t *data) {
  json_decref(r->result);
  r->result = NULL;
  free(r->message);
  r->message = NULL;
  json_decref(r->data);
  r->data = NULL;
  r->code = code;
  if (message) {
    r->message = strdup(message);
    if (!r->message) abort();
  }
  if (data) r->data = json_incref((json_t *)data);
  r->err = message || code ? tg_rpc_classify(code, message) : TG_ERPC;
}

/* The node's message, truncated to a sane length (it ends up in logs and error lines). */
#define MESSAGE_MAX 4096

/* Reads an error object; 0 or TG_ERPC_REPLY. */
static int read_error(tg_rpc_reply *r, const json_t *e) {
  if (!json_is_object(e)) return TG_ERPC_REPLY;
  const json_t *code = json_object_get(e, "code");
  const json_t *msg = json_object_get(e, "message");
  if (!json_is_integer(code)) return TG_ERPC_REPLY;
  if (msg && !json_is_string(msg)) return TG_ERPC_REPLY;
  const char *m = msg ? json_string_value(msg) : "";
  char cut[MESSAGE_MAX + 1];
  if (strlen(m) > MESSAGE_MAX) {
    memcpy(cut, m, MESSAGE_MAX);
    cut[MESSAGE_MAX] = 0;
    m = cut;
  }
  tg__rpc_reply_set_error(r, (long long)json_integer_value(code), m,
                          json_object_get(e, "data"));
  return 0;
}

/*
 * Checks the envelope of one answer object and returns its id kind:
 * 1 with *id set for an integer id, 0 for a null id (only legal with an
 * error), or TG_ERPC_REPLY.
 */
static int read_envelope(const json_t *o, long long *id) {
  if (!json_is_object(o)) return TG_ERPC_REPLY;
  const json_t *v = json_object_get(o, "jsonrpc");
  if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0) return TG_ERPC_REPLY;
  const json_t *res = json_object_get(o, "result");
  const json_t *err = json_object_get(o, "error");
  if ((res != NULL) == (err != NULL)) return TG_ERPC_REPLY;
  const json_t *jid = json_object_get(o, "id");
  if (json_is_integer(jid)) {
    *id = (long long)json_integer_value(jid);
    return 1;
  }
  if (json_is_null(jid) && err) return 0;
  return TG_ERPC_REPLY;
}

static int read_answer(tg_rpc_reply *r, const json_t *o) {
  const json_t *err = json_object_get(o, "error");
  if (err) return read_error(r, err);
  r->err = 0;
  r->result = json_incref(json_object_get(o, "result"));
  return 0;
}

static void clean_all(tg_rpc_reply *replies, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int ep = replies[i].endpoint;
    tg_rpc_reply_cleanup(&replies[i]);
    replies[i].endpoint = ep;
  }
}

static int parse_doc(tg_rpc_reply *replies, size_t n, long long first_id, int is_batch,
                     const json_t *doc) {
  long long id;
  if (!is_batch || json_is_object(doc)) {
    int kind = read_envelope(doc, &id);
    if (kind < 0) return kind;
    if (kind == 1 && (!is_batch ? id != first_id : 1)) return TG_ERPC_REPLY;
    if (!is_batch) return read_answer(&replies[0], doc);
    /* A batch refused as a whole: every item gets the error. */
    for (size_t i = 0; i < n; i++) {
      int rc = read_answer(&replies[i], doc);
      if (rc) return rc;
    }
    return 0;
  }
  if (!json_is_array(doc) || json_array_size(doc) != n) return TG_ERPC_REPLY;
  uint8_t seen_small[64];
  uint8_t *seen = n <= sizeof seen_small ? seen_small : calloc(n, 1);
  if (!seen) abort();
  memset(seen, 0, n <= sizeof seen_small ? sizeof seen_small : 0);
  int rc = 0;
  for (size_t k = 0; k < n && !rc; k++) {
    const json_t *o = json_array_get(doc, k);
    int kind = read_envelope(o, &id);
    if (kind != 1 || id < first_id || (unsigned long long)(id - first_id) >= n) {
      rc = TG_ERPC_REPLY;
      break;
    }
    size_t i = (size_t)(id - first_id);
    if (seen[i]) {
      rc = TG_ERPC_REPLY;
      break;
    }
    seen[i] = 1;
    rc = read_answer(&replies[i], o);
  }
  if (seen != seen_small) free(seen);
  return rc;
}

int tg__rpc_parse_reply(tg_rpc_reply *replies, size_t n, long long first_id, int is_batch,
                        const char *body, size_t len) {
  clean_all(replies, n);
  if (n == 0 || (!is_batch && n != 1)) return TG_EINVAL;
  json_error_t je;
  json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
  if (!doc) return TG_ERPC_REPLY;
  int rc = parse_doc(replies, n, first_id, is_batch, doc);
  json_decref(doc);
  if (rc) {
    clean_all(replies, n);
    rc = TG_ERPC_REPLY;
  }
  return rc;
}

/* Internal to gateway/rpc: the reply parser and helpers shared by the client, the eth_* helpers and the fuzz driver. */
#ifndef TG_RPC_INT_H
#define TG_RPC_INT_H

#include <stddef.h>

#include "tollgate/rpc.h"

/*
 * Parses an HTTP body answering a request of `n` calls whose ids are
 * first_id .. first_id + n - 1, sent as a JSON-RPC batch (is_batch) or as one
 * call. On success every replies[i] holds its result or its node error
 * (classified), and 0 is returned. When the body as a whole is not a valid
 * answer (not JSON, wrong shape, an id missing, repeated or unknown, both or
 * neither of result/error) returns TG_ERPC_REPLY and leaves every reply
 * cleaned. A batch refused as a whole (one error object with a null id) gives
 * every item that error. `replies` are cleaned on entry.
 */
int tg__rpc_parse_reply(tg_rpc_reply *replies, size_t n, long long first_id, int is_batch,
                        const char *body, size_t len);

/* Sets a reply to a node error (copies message and increfs data). */
void tg__rpc_reply_set_error(tg_rpc_reply *r, long long code, const char *message,
                             const json_t *data);

/*
 * The HTTP body of a request of `n` calls (ids first_id ..): one JSON-RPC object (single,
 * n == 1) or a batch array; compact, the same bytes json_dumps(JSON_COMPACT) gives for the
 * objects {"jsonrpc","id","method","params"}. Returns a malloc'd NUL-terminated string and its
 * length in *len; aborts when memory runs out.
 */
char *tg__rpc_body(long long first_id, char *const *methods, json_t *const *params, size_t n,
                   int single, size_t *len);

#endif

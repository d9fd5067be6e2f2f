/* Tests of the JSON-RPC client: reply parsing, typed helpers, batches and async calls against a real anvil, timeouts and failover against fake endpoints. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "rpc/rpc_int.h"
#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

static tgt_anvil *anvil; /* shared automine node, chain id 31337 */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static tg_address addr_of(const char *hex) {
  tg_address a;
  if (tg_address_parse(&a, hex, strlen(hex)) != 0) memset(&a, 0, sizeof a);
  return a;
}

/* anvil mines in the background: waits until the head reaches `target`; returns the head. */
static uint64_t wait_block(tg_rpc *rpc, uint64_t target) {
  uint64_t end = now_ms() + 5000, h = 0;
  while (now_ms() < end && (tg_eth_block_number(rpc, &h) != 0 || h < target)) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
  }
  return h;
}

static tg_rpc *connect_urls(const char *const *urls, size_t n, unsigned timeout_ms) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = urls;
  o.n_urls = n;
  if (timeout_ms) o.timeout_ms = timeout_ms;
  tg_rpc *rpc = NULL;
  char why[256];
  int rc = tg_rpc_new(&rpc, &o, why, sizeof why);
  CHECKF(rc == 0, "tg_rpc_new -> %s (%s)", tg_err_name(rc), why);
  return rpc;
}

static tg_rpc *connect_anvil(void) {
  const char *u = anvil->url;
  return connect_urls(&u, 1, 0);
}

/* -------------------------------------------------------------- fake node */

enum { FAKE_SILENT, FAKE_GARBAGE, FAKE_HTTP500, FAKE_BADBATCH, FAKE_LOGS };

/* A loopback HTTP server that answers eth_chainId with `chain` and everything else per `mode`. */
typedef struct {
  int fd;
  int port;
  int mode;
  unsigned long long chain;
  volatile int stop;
  pthread_t th;
  int held[64];
  int n_held;
  int requests;
  int chain_answers; /* eth_chainId answers left (-1: always) */
} fake_node;

static void send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static void respond(int fd, int status, const char *body) {
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n",
                   status, strlen(body));
  send_all(fd, head, (size_t)n);
  send_all(fd, body, strlen(body));
}

/* Reads one request (headers and Content-Length body); 0 on success. */
static int read_request(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0) return -1;
    ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
    if (r <= 0) return -1;
    n += (size_t)r;
    buf[n] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) continue;
    const char *cl = strstr(buf, "Content-Length:");
    size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    if ((size_t)(buf + n - (end + 4)) >= want) return 0;
    if (n >= cap - 1) return -1;
  }
}

static void *fake_main(void *arg) {
  fake_node *f = arg;
  char buf[65536];
  while (!f->stop) {
    struct pollfd p = {f->fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int c = accept(f->fd, NULL, NULL);
    if (c < 0) continue;
    if (read_request(c, buf, sizeof buf) != 0) {
      close(c);
      continue;
    }
    f->requests++;
    if (strstr(buf, "\"eth_chainId\"") && f->chain_answers != 0) {
      if (f->chain_answers > 0) f->chain_answers--;
      char body[128];
      /* Echo the request's id. */
      const char *idp = strstr(buf, "\"id\":");
      long long id = idp ? strtoll(idp + 5, NULL, 10) : 1;
      snprintf(body, sizeof body, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":\"0x%llx\"}", id,
               f->chain);
      respond(c, 200, body);
      close(c);
      continue;
    }
    switch (f->mode) {
    case FAKE_SILENT:
      if (f->n_held < 64) {
        f->held[f->n_held++] = c; /* never answered, closed at stop */
        continue;
      }
      break;
    case FAKE_GARBAGE:
      respond(c, 200, "<html>not json-rpc</html>");
      break;
    case FAKE_HTTP500:
      respond(c, 500, "internal error");
      break;
    case FAKE_BADBATCH:
      respond(c, 200, "[{\"jsonrpc\":\"2.0\",\"id\":999999,\"result\":\"0x1\"}]");
      break;
    case FAKE_LOGS: {
      /* eth_getLogs refused over more than 3 blocks; else one log per block of the range. */
      const char *idp = strstr(buf, "\"id\":");
      long long id = idp ? strtoll(idp + 5, NULL, 10) : 1;
      const char *fp = strstr(buf, "\"fromBlock\":\"0x"), *tp = strstr(buf, "\"toBlock\":\"0x");
      unsigned long long from = fp ? strtoull(fp + 15, NULL, 16) : 0;
      unsigned long long to = tp ? strtoull(tp + 13, NULL, 16) : 0;
      char body[8192];
      if (to - from + 1 > 3) {
        snprintf(body, sizeof body,
                 "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"error\":{\"code\":-32005,\"message\":"
                 "\"query returned more than 10000 results\"}}", id);
      } else {
        int n = snprintf(body, sizeof body, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":[", id);
        for (unsigned long long b = from; b <= to; b++)
          n += snprintf(body + n, sizeof body - (size_t)n,
                        "%s{\"address\":\"0x1000000000000000000000000000000000000003\",\"topics\":[],"
                        "\"data\":\"0x\",\"blockNumber\":\"0x%llx\",\"blockHash\":\"0x%064llx\","
                        "\"transactionHash\":\"0x%064llx\",\"transactionIndex\":\"0x0\",\"logIndex\":\"0x0\","
                        "\"removed\":false}", b == from ? "" : ",", b, b, b);
        snprintf(body + n, sizeof body - (size_t)n, "]}");
      }
      respond(c, 200, body);
      break;
    }
    }
    close(c);
  }
  for (int i = 0; i < f->n_held; i++) close(f->held[i]);
  return NULL;
}

static fake_node *fake_start(int mode, unsigned long long chain) {
  fake_node *f = calloc(1, sizeof *f);
  f->mode = mode;
  f->chain = chain;
  f->chain_answers = -1;
  f->fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(f->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (bind(f->fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(f->fd, 64) != 0 ||
      getsockname(f->fd, (struct sockaddr *)&sa, &sl) != 0)
    abort();
  f->port = ntohs(sa.sin_port);
  if (pthread_create(&f->th, NULL, fake_main, f) != 0) abort();
  return f;
}

static void fake_url(const fake_node *f, char *out, size_t n) {
  snprintf(out, n, "http://127.0.0.1:%d", f->port);
}

static void fake_stop(fake_node *f) {
  f->stop = 1;
  pthread_join(f->th, NULL);
  close(f->fd);
  free(f);
}

/* -------------------------------------------------------------- parser */

static int parse1(tg_rpc_reply *r, long long id, const char *body) {
  return tg__rpc_parse_reply(r, 1, id, 0, body, strlen(body));
}

static void test_parse_single(void) {
  tg_rpc_reply r;
  memset(&r, 0, sizeof r);
  CHECK_OK(parse1(&r, 7, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":\"0x10\"}"));
  CHECK_INT(r.err, 0);
  CHECK_STR(json_string_value(r.result), "0x10");
  CHECK_OK(parse1(&r, 7, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":null}"));
  CHECK(json_is_null(r.result));
  /* Node errors are answers: kept and classified. */
  CHECK_OK(parse1(&r, 7,
                  "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32003,\"message\":\"nonce too low\"}}"));
  CHECK_INT(r.err, TG_ERPC_NONCE_LOW);
  CHECK_INT(r.code, -32003);
  CHECK_STR(r.message, "nonce too low");
  CHECK_OK(parse1(&r, 7,
                  "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":3,\"message\":\"execution "
                  "reverted: \\u0000x\",\"data\":\"0x2a\"}}"));
  CHECK_INT(r.err, TG_ERPC_REVERTED);
  CHECK_STR(json_string_value(r.data), "0x2a");
  CHECK_OK(parse1(&r, 7, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}"));
  CHECK_INT(r.err, TG_ERPC);
  CHECK_INT(r.code, -32700);
  /* Not JSON-RPC: every one refused, nothing kept. */
  const char *bad[] = {
      "",
      "not json",
      "[]",
      "null",
      "{\"jsonrpc\":\"2.0\",\"id\":8,\"result\":\"0x1\"}",          /* wrong id */
      "{\"jsonrpc\":\"1.0\",\"id\":7,\"result\":\"0x1\"}",          /* wrong version */
      "{\"id\":7,\"result\":\"0x1\"}",                              /* no version */
      "{\"jsonrpc\":\"2.0\",\"id\":7}",                             /* neither */
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":1,\"error\":{\"code\":1,\"message\":\"x\"}}",
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":\"boom\"}",           /* error not an object */
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"message\":\"x\"}}", /* no code */
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":1.5,\"message\":\"x\"}}",
      "{\"jsonrpc\":\"2.0\",\"id\":\"7\",\"result\":\"0x1\"}",      /* string id */
      "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":\"0x1\"}",       /* null id with a result */
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"id\":7,\"result\":\"0x1\"}", /* duplicate key */
      "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":\"0x1\"} trailing",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = parse1(&r, 7, bad[i]);
    CHECKF(rc == TG_ERPC_REPLY, "case %zu (%s) -> %s", i, bad[i], tg_err_name(rc));
    CHECK(r.result == NULL && r.message == NULL && r.data == NULL);
  }
  tg_rpc_reply_cleanup(&r);
}

static void test_parse_batch(void) {
  tg_rpc_reply r[3];
  memset(r, 0, sizeof r);
  /* Any order; one item may be an error. */
  const char *ok = "[{\"jsonrpc\":\"2.0\",\"id\":12,\"result\":\"c\"},"
                   "{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":\"a\"},"
                   "{\"jsonrpc\":\"2.0\",\"id\":11,\"error\":{\"code\":-32601,\"message\":\"Method not found\"}}]";
  CHECK_OK(tg__rpc_parse_reply(r, 3, 10, 1, ok, strlen(ok)));
  CHECK_STR(json_string_value(r[0].result), "a");
  CHECK_INT(r[1].err, TG_ERPC);
  CHECK_INT(r[1].code, -32601);
  CHECK_STR(json_string_value(r[2].result), "c");
  /* Refused as a whole: every item gets the error. */
  const char *whole = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"too big\"}}";
  CHECK_OK(tg__rpc_parse_reply(r, 3, 10, 1, whole, strlen(whole)));
  for (int i = 0; i < 3; i++) CHECK_INT(r[i].code, -32600);
  const char *bad[] = {
      "[{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":1},{\"jsonrpc\":\"2.0\",\"id\":11,\"result\":1}]",
      "[{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":1},{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":1},"
      "{\"jsonrpc\":\"2.0\",\"id\":11,\"result\":1}]",
      "[{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":1},{\"jsonrpc\":\"2.0\",\"id\":11,\"result\":1},"
      "{\"jsonrpc\":\"2.0\",\"id\":13,\"result\":1}]",
      "[1,2,3]",
      "{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = tg__rpc_parse_reply(r, 3, 10, 1, bad[i], strlen(bad[i]));
    CHECKF(rc == TG_ERPC_REPLY, "case %zu -> %s", i, tg_err_name(rc));
    CHECK(r[0].result == NULL && r[1].result == NULL && r[2].result == NULL);
  }
  for (int i = 0; i < 3; i++) tg_rpc_reply_cleanup(&r[i]);
}

static void test_values(void) {
  uint64_t v;
  tg_u256 u;
  json_t *j;
#define PU64(s, want_rc, want)                           \
  j = json_string(s);                                    \
  CHECK_ERR(tg_rpc_parse_u64(j, &v), want_rc);           \
  if ((want_rc) == 0) CHECK_INT(v, want);                \
  json_decref(j)
  PU64("0x0", 0, 0);
  PU64("0x7a69", 0, 31337);
  PU64("0xffffffffffffffff", 0, UINT64_MAX);
  PU64("0x00ff", 0, 255);
  PU64("0x10000000000000000", TG_EOVERFLOW, 0);
  PU64("0x", TG_EHEX, 0);
  PU64("0xg", TG_EHEX, 0);
  PU64("12", TG_EHEX_PREFIX, 0);
#undef PU64
  j = json_integer(5);
  CHECK_ERR(tg_rpc_parse_u64(j, &v), TG_EJSON_FIELD);
  CHECK_ERR(tg_rpc_parse_u256(j, &u), TG_EJSON_FIELD);
  json_decref(j);
  j = json_string("0x21e19e0c9bab2400000");
  CHECK_OK(tg_rpc_parse_u256(j, &u));
  char dec[TG_U256_DEC_MAX];
  tg_u256_to_dec(&u, dec);
  CHECK_STR(dec, "10000000000000000000000");
  json_decref(j);
  j = json_string("0x1ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
  CHECK_ERR(tg_rpc_parse_u256(j, &u), TG_EOVERFLOW);
  json_decref(j);
  tg_hash h;
  j = json_string("0x1234");
  CHECK_FAILS(tg_rpc_parse_hash(j, &h));
  json_decref(j);
  /* Classification of the messages real nodes send. */
  CHECK_INT(tg_rpc_classify(-32003, "transaction already imported"), TG_ERPC_ALREADY_KNOWN);
  CHECK_INT(tg_rpc_classify(-32000, "already known"), TG_ERPC_ALREADY_KNOWN);
  CHECK_INT(tg_rpc_classify(-32000, "replacement transaction underpriced"), TG_ERPC_UNDERPRICED);
  CHECK_INT(tg_rpc_classify(-32003, "Insufficient funds for gas * price + value"), TG_ERPC_FUNDS);
  CHECK_INT(tg_rpc_classify(-32005, "query returned more than 10000 results"), TG_ERPC_LIMIT);
  CHECK_INT(tg_rpc_classify(-32601, "Method not found"), TG_ERPC);
}

/* -------------------------------------------------------------- against anvil */

static void test_harness(void) {
  tgt_anvil_opts o = {.chain_id = 4242};
  tgt_anvil *a = tgt_anvil_start(&o);
  CHECK(a != NULL);
  if (!a) return;
  CHECK_INT(tgt_rpc_u64(a->url, "eth_chainId", NULL), 4242);
  pid_t pid = tgt_proc_pid(a->proc);
  CHECK(kill(pid, 0) == 0);
  int port = a->port;
  CHECK_OK(tgt_anvil_restart(a));
  CHECK_INT(a->port, port);
  CHECK(tgt_proc_pid(a->proc) != pid);
  CHECK_INT(tgt_rpc_u64(a->url, "eth_chainId", NULL), 4242);
  pid = tgt_proc_pid(a->proc);
  tgt_anvil_free(a);
  CHECK(kill(pid, 0) != 0 && errno == ESRCH);
}

static void test_typed_basic(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  CHECK_INT(tg_rpc_chain_id(rpc), 31337);
  uint64_t v;
  CHECK_OK(tg_eth_chain_id(rpc, &v));
  CHECK_INT(v, 31337);
  uint64_t bn0;
  CHECK_OK(tg_eth_block_number(rpc, &bn0));
  CHECK_OK(tgt_anvil_mine(anvil, 3));
  CHECK_INT(wait_block(rpc, bn0 + 3), bn0 + 3);
  tg_address a4 = addr_of(tgt_anvil_address(4));
  tg_u256 bal;
  CHECK_OK(tg_eth_get_balance(rpc, &bal, &a4, NULL));
  char dec[TG_U256_DEC_MAX];
  tg_u256_to_dec(&bal, dec);
  CHECK_STR(dec, "10000000000000000000000");
  CHECK_OK(tgt_anvil_set_balance(anvil, tgt_anvil_address(4), "0x1234"));
  CHECK_OK(tg_eth_get_balance(rpc, &bal, &a4, "latest"));
  tg_u256_to_dec(&bal, dec);
  CHECK_STR(dec, "4660");
  CHECK_OK(tg_eth_get_transaction_count(rpc, &v, &a4, "pending"));
  CHECK_INT(v, 0);
  tg_u256 gp, prio;
  CHECK_OK(tg_eth_gas_price(rpc, &gp));
  CHECK(!tg_u256_is_zero(&gp));
  CHECK_OK(tg_eth_max_priority_fee(rpc, &prio));
  CHECK_OK(tg_u256_to_u64(&prio, &v));
  CHECK(v > 0);
  /* eth_getBlockByNumber: latest matches eth_blockNumber; a future block is not found. */
  tg_eth_block blk;
  CHECK_OK(tg_eth_get_block(rpc, &blk, NULL));
  CHECK_INT(blk.number, bn0 + 3);
  CHECK(blk.has_base_fee);
  CHECK(blk.gas_limit > 0);
  tg_eth_block prev;
  char tag[24];
  CHECK_OK(tg_eth_get_block(rpc, &prev, tg_rpc_block_tag(tag, blk.number - 1)));
  CHECK_MEM(blk.parent_hash.b, prev.hash.b, 32);
  tg_eth_block_cleanup(&prev);
  tg_eth_block_cleanup(&blk);
  CHECK_ERR(tg_eth_get_block(rpc, &blk, tg_rpc_block_tag(tag, bn0 + 1000)), TG_ENOTFOUND);
  /* A JSON-RPC error keeps the node's code and message. */
  tg_rpc_reply r;
  CHECK_ERR(tg_rpc_call(rpc, &r, "no_such_method", NULL), TG_ERPC);
  CHECK_INT(r.code, -32601);
  CHECK(r.message && strstr(r.message, "not found"));
  CHECK(strstr(tg_rpc_last_message(rpc), "not found") != NULL);
  tg_rpc_reply_cleanup(&r);
  tg_rpc_free(rpc);
}

/* Contract code: returns 32 bytes of 0x2a; reverts with 32 bytes of 0x2a; emits LOG1(topic). */
static const char RET_CODE[] = "0x602a60005260206000f3";
static const char REV_CODE[] = "0x602a60005260206000fd";
static const char LOG_TOPIC[] = "0x1111111111111111111111111111111111111111111111111111111111111111";
static const char LOG_CODE[] =
    "0x7f111111111111111111111111111111111111111111111111111111111111111160006000a100";
static const char RET_ADDR[] = "0x1000000000000000000000000000000000000001";
static const char REV_ADDR[] = "0x1000000000000000000000000000000000000002";
static const char LOG_ADDR[] = "0x1000000000000000000000000000000000000003";

static void set_code(const char *addr, const char *code) {
  char p[256];
  snprintf(p, sizeof p, "[\"%s\",\"%s\"]", addr, code);
  json_t *r = tgt_rpc(anvil->url, "anvil_setCode", p);
  CHECKF(r != NULL, "anvil_setCode: %s", tgt_rpc_error());
  json_decref(r);
}

static void test_call_code_estimate(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  set_code(RET_ADDR, RET_CODE);
  set_code(REV_ADDR, REV_CODE);
  tg_address ret = addr_of(RET_ADDR), rev = addr_of(REV_ADDR);
  tg_buf code;
  tg_buf_init(&code, 1 << 20);
  CHECK_OK(tg_eth_get_code(rpc, &code, &ret, NULL));
  CHECK_INT(code.len, 10);
  CHECK(code.len == 10 && code.data[0] == 0x60 && code.data[9] == 0xf3);
  tg_buf_reset(&code);
  tg_address eoa = addr_of(tgt_anvil_address(3));
  CHECK_OK(tg_eth_get_code(rpc, &code, &eoa, NULL));
  CHECK_INT(code.len, 0);
  tg_buf_cleanup(&code);

  uint8_t want[32] = {0};
  want[31] = 0x2a;
  tg_buf out, revert;
  tg_buf_init(&out, 1 << 20);
  tg_buf_init(&revert, 1 << 20);
  tg_eth_msg m = {.to = &ret};
  CHECK_OK(tg_eth_call(rpc, &out, &revert, &m, NULL));
  CHECK_INT(out.len, 32);
  if (out.len == 32) CHECK_MEM(out.data, want, 32);
  CHECK_INT(revert.len, 0);
  tg_buf_reset(&out);
  m.to = &rev;
  CHECK_ERR(tg_eth_call(rpc, &out, &revert, &m, NULL), TG_ERPC_REVERTED);
  CHECK_INT(out.len, 0);
  CHECK_INT(revert.len, 32);
  if (revert.len == 32) CHECK_MEM(revert.data, want, 32);
  /* eth_estimateGas: a plain transfer is 21000; a revert comes back with its data. */
  tg_address from = addr_of(tgt_anvil_address(0)), to = addr_of(tgt_anvil_address(1));
  tg_u256 one;
  tg_u256_from_u64(&one, 1);
  tg_eth_msg t = {.from = &from, .to = &to, .value = &one};
  uint64_t gas;
  CHECK_OK(tg_eth_estimate_gas(rpc, &gas, NULL, &t));
  CHECK_INT(gas, 21000);
  tg_buf_reset(&revert);
  t.to = &rev;
  t.value = NULL;
  CHECK_ERR(tg_eth_estimate_gas(rpc, &gas, &revert, &t), TG_ERPC_REVERTED);
  CHECK_INT(revert.len, 32);
  tg_buf_cleanup(&out);
  tg_buf_cleanup(&revert);
  tg_rpc_free(rpc);
}

/* Signs a 1-wei transfer from dev account `from` to account 1. */
static void sign_transfer(tg_buf *raw, tg_hash *hash, unsigned from, uint64_t nonce,
                          uint64_t max_fee_gwei, uint64_t prio_gwei) {
  tg_seckey *k = tg_seckey_new();
  const char *hex = tgt_anvil_key(from);
  CHECK_OK(tg_seckey_set_hex(k, hex, strlen(hex)));
  tg_tx tx;
  tg_tx_init(&tx, TG_TX_EIP1559);
  tx.chain_id = 31337;
  tx.nonce = nonce;
  CHECK_OK(tg_u256_mul_u64(&tx.max_fee_per_gas, &(tg_u256){.b = {[31] = 1}}, max_fee_gwei * 1000000000ull));
  CHECK_OK(tg_u256_mul_u64(&tx.max_priority_fee_per_gas, &(tg_u256){.b = {[31] = 1}}, prio_gwei * 1000000000ull));
  tx.gas_limit = 21000;
  tx.has_to = 1;
  tx.to = addr_of(tgt_anvil_address(1));
  tg_u256_from_u64(&tx.value, 1);
  CHECK_OK(tg_tx_sign(&tx, k));
  CHECK_OK(tg_tx_encode(raw, &tx));
  CHECK_OK(tg_tx_hash(hash, &tx));
  tg_seckey_free(k);
}

typedef struct {
  int n;
  uint64_t last_block;
  int ordered, right;
} log_seen;

/* Log collector for test_send_receipt_logs (n < 0 means: stop at once). */
static int collect(void *arg, const tg_eth_log *log) {
  log_seen *s = arg;
  if (s->n < 0) return TG_ECANCELED;
  if (log->block_number <= s->last_block) s->ordered = 0;
  s->last_block = log->block_number;
  if (log->n_topics != 1 || log->topics[0].b[0] != 0x11 || log->data_len != 0 || log->removed)
    s->right = 0;
  s->n++;
  return 0;
}

static int wait_receipt(tg_rpc *rpc, tg_eth_receipt *rc, const tg_hash *h) {
  uint64_t end = now_ms() + 10000;
  int r;
  while ((r = tg_eth_get_receipt(rpc, rc, h)) == TG_ENOTFOUND && now_ms() < end) {
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
  }
  return r;
}

/* Counts logs in block order (for the paging test). */
static int count_logs(void *arg, const tg_eth_log *log) {
  log_seen *s = arg;
  if (log->block_number <= s->last_block && s->n) s->ordered = 0;
  s->last_block = log->block_number;
  s->n++;
  return 0;
}

static void test_send_receipt_logs(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  tg_address a2 = addr_of(tgt_anvil_address(2));
  uint64_t nonce;
  CHECK_OK(tg_eth_get_transaction_count(rpc, &nonce, &a2, "pending"));
  tg_buf raw;
  tg_buf_init(&raw, 1 << 16);
  tg_hash want, got;
  sign_transfer(&raw, &want, 2, nonce, 100, 1);
  CHECK_OK(tg_eth_send_raw_transaction(rpc, &got, raw.data, raw.len));
  CHECK_MEM(got.b, want.b, 32);
  /* Automine: mined at once, though anvil answers before its block is written. */
  tg_eth_receipt rc;
  CHECK_OK(wait_receipt(rpc, &rc, &want));
  CHECK_MEM(rc.tx_hash.b, want.b, 32);
  CHECK_INT(rc.status, 1);
  CHECK_INT(rc.gas_used, 21000);
  CHECK_INT(rc.type, 2);
  CHECK(rc.has_to && !rc.has_contract_address);
  CHECK_MEM(rc.from.b, a2.b, 20);
  CHECK(!tg_u256_is_zero(&rc.effective_gas_price));
  tg_eth_block blk;
  char tag[24];
  CHECK_OK(tg_eth_get_block(rpc, &blk, tg_rpc_block_tag(tag, rc.block_number)));
  CHECK_INT(blk.n_txs, 1);
  if (blk.n_txs == 1) CHECK_MEM(blk.tx_hashes[0].b, want.b, 32);
  CHECK_MEM(blk.hash.b, rc.block_hash.b, 32);
  tg_eth_block_cleanup(&blk);
  tg_eth_receipt_cleanup(&rc);
  /* The same raw transaction again: its nonce is used. */
  CHECK_ERR(tg_eth_send_raw_transaction(rpc, &got, raw.data, raw.len), TG_ERPC_NONCE_LOW);
  tg_hash unknown;
  memset(&unknown, 0x77, sizeof unknown);
  CHECK_ERR(tg_eth_get_receipt(rpc, &rc, &unknown), TG_ENOTFOUND);
  tg_buf_cleanup(&raw);

  /* eth_getLogs, paged: 7 logs in 7 blocks read 2 blocks per request, in order. */
  set_code(LOG_ADDR, LOG_CODE);
  uint64_t first;
  CHECK_OK(tg_eth_block_number(rpc, &first));
  char p[256];
  for (int i = 0; i < 7; i++) {
    snprintf(p, sizeof p, "[{\"from\":\"%s\",\"to\":\"%s\",\"gas\":\"0x10000\"}]",
             tgt_anvil_address(3), LOG_ADDR);
    json_t *h = tgt_rpc(anvil->url, "eth_sendTransaction", p);
    CHECKF(h != NULL, "eth_sendTransaction: %s", tgt_rpc_error());
    json_decref(h);
    wait_block(rpc, first + 2 * (uint64_t)i + 1);
    CHECK_OK(tgt_anvil_mine(anvil, 1)); /* an empty block between logs */
    wait_block(rpc, first + 2 * (uint64_t)i + 2);
  }
  uint64_t last;
  CHECK_OK(tg_eth_block_number(rpc, &last));
  CHECK_INT(last, first + 14);
  tg_address la = addr_of(LOG_ADDR);
  tg_hash topic;
  CHECK_OK(tg_hex_decode_exact(topic.b, 32, LOG_TOPIC, strlen(LOG_TOPIC)));
  tg_eth_log_filter f = {.from_block = first + 1, .to_block = last, .addresses = &la,
                         .n_addresses = 1, .page_blocks = 2};
  f.topics[0] = &topic;
  f.n_topic_alts[0] = 1;
  log_seen seen = {0, 0, 1, 1};
  CHECK_OK(tg_eth_get_logs(rpc, &f, collect, &seen));
  CHECK_INT(seen.n, 7);
  CHECK(seen.ordered);
  CHECK(seen.right);
  /* A callback's non-zero return stops the walk and is returned. */
  seen.n = -1000;
  CHECK_ERR(tg_eth_get_logs(rpc, &f, collect, &seen), TG_ECANCELED);
  tg_rpc_free(rpc);
}

static void test_logs_paging_halves(void) {
  fake_node *f = fake_start(FAKE_LOGS, 31337);
  char url[64];
  fake_url(f, url, sizeof url);
  const char *u = url;
  tg_rpc *rpc = connect_urls(&u, 1, 2000);
  if (rpc) {
    tg_eth_log_filter fl = {.from_block = 10, .to_block = 29, .page_blocks = 16};
    log_seen seen = {0, 0, 1, 1};
    int before = f->requests;
    CHECK_OK(tg_eth_get_logs(rpc, &fl, count_logs, &seen));
    CHECK_INT(seen.n, 20);
    CHECK(seen.ordered);
    /* 16, 8 and 4 blocks refused, then ten 2-block pages. */
    CHECK_INT(f->requests - before, 13);
    tg_rpc_free(rpc);
  }
  fake_stop(f);
}

static void test_fee_history(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  uint64_t head;
  CHECK_OK(tg_eth_block_number(rpc, &head));
  CHECK_OK(tgt_anvil_mine(anvil, 5));
  /* anvil mines in the background: wait for the blocks, then ask about fixed ones. */
  head = wait_block(rpc, head + 5);
  double pcts[2] = {25, 75};
  tg_fee_history fh;
  char tag[24];
  int frc = tg_eth_fee_history(rpc, &fh, 4, tg_rpc_block_tag(tag, head), pcts, 2);
  CHECKF(frc == 0, "eth_feeHistory -> %s (%s)", tg_err_name(frc), tg_rpc_last_message(rpc));
  CHECK_INT(fh.n_blocks, 4);
  CHECK_INT(fh.n_pcts, 2);
  CHECK_INT(fh.oldest_block, head - 3);
  CHECK(fh.reward != NULL);
  for (size_t i = 0; i <= fh.n_blocks; i++) CHECK(!tg_u256_is_zero(&fh.base_fee[i]));
  tg_eth_block blk;
  CHECK_OK(tg_eth_get_block(rpc, &blk, tag));
  if (fh.n_blocks == 4) CHECK_MEM(fh.base_fee[3].b, blk.base_fee.b, 32);
  tg_eth_block_cleanup(&blk);
  tg_fee_history_cleanup(&fh);
  CHECK_ERR(tg_eth_fee_history(rpc, &fh, 0, NULL, NULL, 0), TG_EINVAL);
  tg_rpc_free(rpc);
}

static void test_batch(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  tg_rpc_batch *b = tg_rpc_batch_new();
  CHECK_INT(tg_rpc_batch_add(b, "eth_chainId", NULL), 0);
  CHECK_INT(tg_rpc_batch_add(b, "eth_blockNumber", json_array()), 1);
  CHECK_INT(tg_rpc_batch_add(b, "nope_nothing", NULL), 2);
  json_t *p = json_pack("[s,s]", tgt_anvil_address(0), "latest");
  CHECK_INT(tg_rpc_batch_add(b, "eth_getBalance", p), 3);
  CHECK_ERR(tg_rpc_batch_add(b, "x", json_object()), TG_EINVAL); /* params must be an array */
  CHECK_OK(tg_rpc_batch_run(rpc, b));
  CHECK_INT(tg_rpc_batch_size(b), 4);
  uint64_t v;
  CHECK_INT(tg_rpc_batch_reply(b, 0)->err, 0);
  CHECK_OK(tg_rpc_parse_u64(tg_rpc_batch_reply(b, 0)->result, &v));
  CHECK_INT(v, 31337);
  CHECK_INT(tg_rpc_batch_reply(b, 1)->err, 0);
  CHECK_INT(tg_rpc_batch_reply(b, 2)->err, TG_ERPC);
  CHECK_INT(tg_rpc_batch_reply(b, 2)->code, -32601);
  CHECK_INT(tg_rpc_batch_reply(b, 3)->err, 0);
  CHECK(tg_rpc_batch_reply(b, 4) == NULL);
  /* A batch can run again. */
  CHECK_OK(tg_rpc_batch_run(rpc, b));
  CHECK_INT(tg_rpc_batch_reply(b, 0)->err, 0);
  tg_rpc_batch_free(b);
  /* The cap. */
  b = tg_rpc_batch_new();
  for (int i = 0; i < TG_RPC_BATCH_MAX; i++)
    if (tg_rpc_batch_add(b, "eth_chainId", NULL) < 0) CHECK(0);
  CHECK_ERR(tg_rpc_batch_add(b, "eth_chainId", NULL), TG_ETOOBIG);
  CHECK_OK(tg_rpc_batch_run(rpc, b));
  int ok = 0;
  for (size_t i = 0; i < tg_rpc_batch_size(b); i++) ok += tg_rpc_batch_reply(b, i)->err == 0;
  CHECK_INT(ok, TG_RPC_BATCH_MAX);
  tg_rpc_batch_free(b);
  tg_rpc_free(rpc);
}

typedef struct {
  int fired;
  int ok;
  int twice;
  uint64_t max_block;
} async_state;

static void async_cb(void *arg, const tg_rpc_reply *r) {
  async_state *s = arg;
  s->fired++;
  uint64_t v;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &v) == 0) {
    s->ok++;
    if (v > s->max_block) s->max_block = v;
  }
}

typedef struct {
  async_state *s;
  int done;
} one_call;

static void one_cb(void *arg, const tg_rpc_reply *r) {
  one_call *c = arg;
  if (c->done) c->s->twice++;
  c->done = 1;
  async_cb(c->s, r);
}

static void test_async_many(void) {
  /* The caller's loop drives the client; 3000 calls in flight, one thread. */
  struct event_base *base = event_base_new();
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *u = anvil->url;
  o.urls = &u;
  o.n_urls = 1;
  o.base = base;
  o.max_inflight = 32;
  tg_rpc *rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  if (!rpc) {
    event_base_free(base);
    return;
  }
  enum { N = 3000 };
  static one_call calls[N];
  async_state s = {0};
  uint64_t t0 = now_ms();
  for (int i = 0; i < N; i++) {
    calls[i].s = &s;
    calls[i].done = 0;
    CHECK_OK(tg_rpc_call_async(rpc, "eth_blockNumber", NULL, one_cb, &calls[i]));
  }
  CHECK_INT(tg_rpc_pending(rpc), N);
  CHECK_INT(s.fired, 0); /* nothing fires from inside the submitting call */
  while (s.fired < N && now_ms() - t0 < 30000) event_base_loop(base, EVLOOP_ONCE);
  CHECK_INT(s.fired, N);
  CHECK_INT(s.ok, N);
  CHECK_INT(s.twice, 0);
  CHECK_INT(tg_rpc_pending(rpc), 0);
  tg_rpc_endpoint_stats st;
  CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 0, &st));
  CHECK(st.calls_ok >= N);
  printf("    %d async eth_blockNumber in %llu ms\n", N, (unsigned long long)(now_ms() - t0));
  /* Freeing with calls in flight fires each callback once with TG_ECANCELED. */
  async_state s2 = {0};
  static one_call more[100];
  for (int i = 0; i < 100; i++) {
    more[i].s = &s2;
    more[i].done = 0;
    CHECK_OK(tg_rpc_call_async(rpc, "eth_blockNumber", NULL, one_cb, &more[i]));
  }
  tg_rpc_free(rpc);
  CHECK_INT(s2.fired, 100);
  CHECK_INT(s2.ok, 0);
  CHECK_INT(s2.twice, 0);
  event_base_free(base);
}

typedef struct {
  tg_rpc *rpc;
  int rc;
  int done;
} nested_state;

static void nested_cb(void *arg, const tg_rpc_reply *r) {
  (void)r;
  nested_state *st = arg;
  uint64_t v;
  st->rc = tg_eth_block_number(st->rpc, &v);
  st->done = 1;
}

static void test_blocking_inside_callback_refused(void) {
  tg_rpc *rpc = connect_anvil();
  if (!rpc) return;
  nested_state st = {rpc, 0, 0};
  CHECK_OK(tg_rpc_call_async(rpc, "eth_chainId", NULL, nested_cb, &st));
  while (!st.done) event_base_loop(tg_rpc_base(rpc), EVLOOP_ONCE);
  CHECK_INT(st.rc, TG_EBUSY);
  tg_rpc_free(rpc);
}

/* -------------------------------------------------------------- failures */

static void test_timeout(void) {
  fake_node *f = fake_start(FAKE_SILENT, 31337);
  char url[64];
  fake_url(f, url, sizeof url);
  const char *u = url;
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = &u;
  o.n_urls = 1;
  o.timeout_ms = 300;
  o.retries = 1;
  o.backoff_ms = 10;
  tg_rpc *rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  if (rpc) {
    uint64_t v, t0 = now_ms();
    CHECK_ERR(tg_eth_block_number(rpc, &v), TG_ETIMEOUT);
    uint64_t dt = now_ms() - t0;
    CHECKF(dt >= 550 && dt < 3000, "two 300 ms attempts took %llu ms", (unsigned long long)dt);
    tg_rpc_endpoint_stats st;
    CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 0, &st));
    CHECK_INT(st.calls_failed, 2);
    CHECK(st.down);
    tg_rpc_free(rpc);
  }
  /* A call's own timeout wins over the client's (10 s here). */
  o.timeout_ms = 10000;
  o.retries = 0;
  rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  if (rpc) {
    tg_rpc_reply r;
    uint64_t t0 = now_ms();
    CHECK_ERR(tg_rpc_call_ex(rpc, &r, "eth_blockNumber", NULL, 200), TG_ETIMEOUT);
    uint64_t dt = now_ms() - t0;
    CHECKF(dt >= 190 && dt < 1500, "a 200 ms call took %llu ms", (unsigned long long)dt);
    tg_rpc_reply_cleanup(&r);
    tg_rpc_batch *b = tg_rpc_batch_new();
    CHECK_INT(tg_rpc_batch_add(b, "eth_blockNumber", NULL), 0);
    tg_rpc_batch_set_timeout(b, 150);
    t0 = now_ms();
    CHECK_ERR(tg_rpc_batch_run(rpc, b), TG_ETIMEOUT);
    CHECK(now_ms() - t0 < 1500);
    tg_rpc_batch_free(b);
    tg_rpc_free(rpc);
  }
  fake_stop(f);
}

static void test_garbage_and_http_errors(void) {
  int modes[3] = {FAKE_GARBAGE, FAKE_HTTP500, FAKE_BADBATCH};
  int want[3] = {TG_ERPC_REPLY, TG_ERPC_HTTP, TG_ERPC_REPLY};
  for (int i = 0; i < 3; i++) {
    fake_node *f = fake_start(modes[i], 31337);
    char url[64];
    fake_url(f, url, sizeof url);
    const char *u = url;
    tg_rpc *rpc = connect_urls(&u, 1, 1000);
    if (rpc) {
      uint64_t v;
      tg_rpc_batch *b = tg_rpc_batch_new();
      CHECK_INT(tg_rpc_batch_add(b, "eth_blockNumber", NULL), 0);
      CHECK_ERR(tg_eth_block_number(rpc, &v), want[i]);
      CHECK_ERR(tg_rpc_batch_run(rpc, b), want[i]);
      CHECK_INT(tg_rpc_batch_reply(b, 0)->err, want[i]);
      tg_rpc_batch_free(b);
      tg_rpc_free(rpc);
    }
    fake_stop(f);
  }
}

static void test_failover(void) {
  /* First endpoint answers eth_chainId, then garbage: calls move to anvil. */
  fake_node *f = fake_start(FAKE_GARBAGE, 31337);
  char url[64];
  fake_url(f, url, sizeof url);
  const char *urls[2] = {url, anvil->url};
  tg_rpc *rpc = connect_urls(urls, 2, 1000);
  if (rpc) {
    uint64_t v;
    for (int i = 0; i < 20; i++) CHECK_OK(tg_eth_block_number(rpc, &v));
    tg_rpc_endpoint_stats s0, s1;
    CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 0, &s0));
    CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 1, &s1));
    CHECK(s0.down);
    CHECK_INT(s0.calls_failed, 1); /* marked down after one failure, then skipped */
    CHECK(s1.calls_ok >= 20);
    tg_rpc_free(rpc);
  }
  fake_stop(f);
  /* First endpoint dead (nothing listens): kept aside at start, calls go to anvil. */
  char dead[64];
  snprintf(dead, sizeof dead, "http://127.0.0.1:%d", tgt_free_port());
  const char *urls2[2] = {dead, anvil->url};
  rpc = connect_urls(urls2, 2, 1000);
  if (rpc) {
    uint64_t v;
    CHECK_OK(tg_eth_block_number(rpc, &v));
    tg_rpc_endpoint_stats s0;
    CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 0, &s0));
    CHECK(!s0.usable);
    tg_rpc_free(rpc);
  }
  /* Everything dead: refused at start with a reason naming the endpoint. */
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *d1 = dead;
  o.urls = &d1;
  o.n_urls = 1;
  char why[256];
  tg_rpc *none = NULL;
  CHECK_ERR(tg_rpc_new(&none, &o, why, sizeof why), TG_ERPC_NO_ENDPOINT);
  CHECK(none == NULL);
  CHECK(strstr(why, dead) != NULL);
  /* An endpoint that went away mid-life: transport error after retries. */
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  const char *au = a->url;
  o.urls = &au;
  o.backoff_ms = 5;
  rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  tgt_anvil_stop(a);
  uint64_t v;
  CHECK_ERR(tg_eth_block_number(rpc, &v), TG_ERPC_TRANSPORT);
  CHECK(strstr(tg_rpc_last_message(rpc), a->url) != NULL);
  /* It comes back on the same port: calls succeed again. */
  CHECK_OK(tgt_anvil_restart(a));
  uint64_t t0 = now_ms();
  int rc;
  while ((rc = tg_eth_block_number(rpc, &v)) != 0 && now_ms() - t0 < 10000) {
  }
  CHECK_OK(rc);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_recovering_endpoint_probed(void) {
  /* A primary gone silent: after its down period a probe, not a caller, pays its timeout. */
  fake_node *f = fake_start(FAKE_SILENT, 31337);
  f->chain_answers = 1; /* the start check only */
  char url[64];
  fake_url(f, url, sizeof url);
  const char *urls[2] = {url, anvil->url};
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = urls;
  o.n_urls = 2;
  o.timeout_ms = 300;
  o.connect_timeout_ms = 300;
  o.down_ms = 50;
  tg_rpc *rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  if (rpc) {
    uint64_t v, t0 = now_ms();
    CHECK_OK(tg_eth_block_number(rpc, &v)); /* pays one timeout, then anvil */
    CHECK(now_ms() - t0 >= 290);
    uint64_t slow = 0;
    for (int round = 0; round < 5; round++) {
      struct timespec ts = {0, 120000000}; /* past the (doubling) down period */
      nanosleep(&ts, NULL);
      t0 = now_ms();
      CHECK_OK(tg_eth_block_number(rpc, &v));
      uint64_t dt = now_ms() - t0;
      if (dt > slow) slow = dt;
    }
    CHECKF(slow < 200, "a call waited %llu ms for the silent endpoint", (unsigned long long)slow);
    tg_rpc_endpoint_stats s0;
    CHECK_OK(tg_rpc_endpoint_stats_get(rpc, 0, &s0));
    CHECK(s0.consecutive_failures >= 1);
    tg_rpc_free(rpc);
  }
  fake_stop(f);
}

static void test_chain_mismatch(void) {
  fake_node *f = fake_start(FAKE_GARBAGE, 1);
  char url[64];
  fake_url(f, url, sizeof url);
  const char *urls[2] = {anvil->url, url};
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = urls;
  o.n_urls = 2;
  tg_rpc *rpc = NULL;
  char why[256];
  CHECK_ERR(tg_rpc_new(&rpc, &o, why, sizeof why), TG_ERPC_CHAIN);
  CHECK(rpc == NULL);
  CHECKF(strstr(why, url) != NULL, "why: %s", why);
  /* The expected chain id given: anvil alone is refused too. */
  o.n_urls = 1;
  o.chain_id = 1;
  CHECK_ERR(tg_rpc_new(&rpc, &o, why, sizeof why), TG_ERPC_CHAIN);
  o.chain_id = 31337;
  CHECK_OK(tg_rpc_new(&rpc, &o, why, sizeof why));
  tg_rpc_free(rpc);
  fake_stop(f);
  /* Bad options. */
  o.n_urls = 0;
  CHECK_ERR(tg_rpc_new(&rpc, &o, NULL, 0), TG_EINVAL);
}

/* -------------------------------------------------------------- CLI against cast */

/* Runs a command line and returns its stdout (malloc'd) and exit status. */
static char *run_cmd(const char *line, int *status) {
  FILE *f = popen(line, "r");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *out = malloc(cap);
  size_t got;
  while ((got = fread(out + n, 1, cap - 1 - n, f)) > 0) {
    n += got;
    if (n == cap - 1) out = realloc(out, cap *= 2);
  }
  out[n] = 0;
  int st = pclose(f);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

static void cli_same(const char *args) {
  const char *build = getenv("TG_BUILD");
  char line[2048];
  int s1, s2;
  snprintf(line, sizeof line, "env -u ETH_RPC_URL HOME=/tmp %s/node_modules/.bin/cast %s 2>/dev/null",
           tgt_root(), args);
  char *want = run_cmd(line, &s1);
  snprintf(line, sizeof line, "env -u ETH_RPC_URL %s/tollgate %s 2>/dev/null",
           build && *build ? build : "build", args);
  char *got = run_cmd(line, &s2);
  CHECKF(want && got && strcmp(want, got) == 0, "tollgate %s:\n      cast: %s      ours: %s", args,
         want ? want : "?", got ? got : "?");
  CHECKF(s1 == s2, "tollgate %s: exit %d, cast %d", args, s2, s1);
  /* Not vacuous: cast ran, and printed something unless it failed as it should. */
  CHECKF(s1 != 127 && (s1 != 0 || (want && *want)), "cast %s: exit %d, no output", args, s1);
  free(want);
  free(got);
}

static void test_cli_matches_cast(void) {
  char args[1024];
  const char *u = anvil->url;
  const char *a0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
  set_code(RET_ADDR, RET_CODE);
  /* A mined transaction to look at. */
  char p[256];
  snprintf(p, sizeof p, "[{\"from\":\"%s\",\"to\":\"%s\",\"value\":\"0x7\"}]", tgt_anvil_address(3),
           tgt_anvil_address(4));
  json_t *h = tgt_rpc(u, "eth_sendTransaction", p);
  CHECKF(json_is_string(h), "eth_sendTransaction: %s", tgt_rpc_error());
  const char *hash = json_string_value(h);
  if (!hash) return;
  snprintf(args, sizeof args, "receipt --rpc-url %s %s", u, hash);
  cli_same(args); /* waits for it to be mined */
  snprintf(args, sizeof args, "receipt --rpc-url %s %s --json", u, hash);
  cli_same(args);
  snprintf(args, sizeof args, "receipt --rpc-url %s %s status", u, hash);
  cli_same(args);
  snprintf(args, sizeof args, "rpc --rpc-url %s eth_getTransactionByHash %s", u, hash);
  cli_same(args);
  json_decref(h);
  snprintf(args, sizeof args, "rpc --rpc-url %s eth_getBlockByNumber 0x1 true", u);
  cli_same(args);
  snprintf(args, sizeof args, "rpc --rpc-url %s eth_feeHistory 4 latest '[25,75]'", u);
  cli_same(args);
  snprintf(args, sizeof args, "rpc --rpc-url %s --raw eth_getBalance '[\"%s\",\"latest\"]'", u, a0);
  cli_same(args);
  snprintf(args, sizeof args, "rpc --rpc-url %s no_such_method", u);
  cli_same(args);
  snprintf(args, sizeof args, "balance --rpc-url %s %s", u, a0);
  cli_same(args);
  snprintf(args, sizeof args, "balance --rpc-url %s %s --block 0", u, a0);
  cli_same(args);
  snprintf(args, sizeof args, "nonce --rpc-url %s %s", u, tgt_anvil_address(3));
  cli_same(args);
  snprintf(args, sizeof args, "block-number --rpc-url %s", u);
  cli_same(args);
  snprintf(args, sizeof args, "chain-id --rpc-url %s", u);
  cli_same(args);
  snprintf(args, sizeof args, "call --rpc-url %s %s 'f()(uint256)'", u, RET_ADDR);
  cli_same(args);
  snprintf(args, sizeof args, "call --rpc-url %s %s 0x12345678", u, RET_ADDR);
  cli_same(args);
  /* ETH_RPC_URL is honoured; several --rpc-url fail over from a dead one. */
  int st;
  snprintf(args, sizeof args, "ETH_RPC_URL=%s %s/tollgate chain-id", u,
           getenv("TG_BUILD") ? getenv("TG_BUILD") : "build");
  char *out = run_cmd(args, &st);
  CHECK_STR(out, "31337\n");
  free(out);
  snprintf(args, sizeof args, "%s/tollgate block-number --rpc-url http://127.0.0.1:%d --rpc-url %s",
           getenv("TG_BUILD") ? getenv("TG_BUILD") : "build", tgt_free_port(), u);
  out = run_cmd(args, &st);
  CHECK_INT(st, 0);
  CHECK(out && out[0] >= '0' && out[0] <= '9');
  free(out);
}

/* The request body written directly is byte for byte what jansson's json_dumps gives for the
 * packed objects, for every kind of value the params may hold. */
static char *body_by_jansson(long long first_id, char *const *methods, json_t *const *params,
                             size_t n, int single) {
  json_t *doc = single ? NULL : json_array();
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_pack("{s:s, s:I, s:s, s:O}", "jsonrpc", "2.0", "id",
                          (json_int_t)(first_id + (long long)i), "method", methods[i], "params",
                          params[i]);
    if (single) doc = o;
    else json_array_append_new(doc, o);
  }
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  return s;
}

static void test_body_bytes(void) {
  const char *texts[] = {
      "[]",
      "[\"0x02f8b1827a6980843b9aca00\"]",
      "[{\"to\":\"0x5FbDB2315678afecb367f032d93F642f64180aa3\",\"data\":\"0x70a08231\"},\"latest\"]",
      "[{\"fromBlock\":\"0x1\",\"toBlock\":\"latest\",\"topics\":[[\"0x98\",null],null]}]",
      "[\"tab\\tquote\\\" back\\\\ nl\\n cr\\r bs\\b ff\\f ctl\\u0001\\u001f del\\u007f slash/\"]",
      "[\"caf\\u00e9 \\u20ac \\ud83d\\ude00\", 0, -1, 9007199254740993, true, false, null]",
      "[1.5, -0.25, 1e+300, {}, [], {\"a\":{\"b\":[1,{\"c\":\"d\"}]}}]",
      "{\"k\":\"v\",\"z\":1,\"a\":2}",
  };
  size_t n = sizeof texts / sizeof texts[0];
  char *methods[sizeof texts / sizeof texts[0]];
  json_t *params[sizeof texts / sizeof texts[0]];
  for (size_t i = 0; i < n; i++) {
    json_error_t e;
    params[i] = json_loads(texts[i], JSON_DECODE_ANY, &e);
    CHECKF(params[i] != NULL, "params %zu: %s", i, e.text);
    methods[i] = (char *)(i % 2 ? "eth_sendRawTransaction" : "eth_call");
  }
  /* every item alone, and the whole batch */
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    char *got = tg__rpc_body(4503599627370000LL + (long long)i, &methods[i], &params[i], 1, 1, &len);
    char *want = body_by_jansson(4503599627370000LL + (long long)i, &methods[i], &params[i], 1, 1);
    CHECKF(want && strcmp(got, want) == 0, "single %zu:\n got  %s\n want %s", i, got, want);
    CHECK_INT(len, strlen(want));
    free(got);
    free(want);
  }
  size_t len = 0;
  char *got = tg__rpc_body(7, methods, params, n, 0, &len);
  char *want = body_by_jansson(7, methods, params, n, 0);
  CHECKF(want && strcmp(got, want) == 0, "batch:\n got  %s\n want %s", got, want);
  CHECK_INT(len, strlen(want));
  free(got);
  free(want);
  /* a batch of one hundred transactions, as the transaction manager sends them */
  char *m100[100];
  json_t *p100[100];
  char hex[2 * 240 + 3] = "0x";
  for (int i = 0; i < 240; i++) snprintf(hex + 2 + 2 * i, 3, "%02x", (i * 37) & 0xff);
  for (int i = 0; i < 100; i++) {
    m100[i] = (char *)"eth_sendRawTransaction";
    p100[i] = json_pack("[s]", hex);
  }
  got = tg__rpc_body(1, m100, p100, 100, 0, &len);
  want = body_by_jansson(1, m100, p100, 100, 0);
  CHECK(want && strcmp(got, want) == 0);
  CHECK_INT(len, strlen(want));
  free(got);
  free(want);
  for (int i = 0; i < 100; i++) json_decref(p100[i]);
  for (size_t i = 0; i < n; i++) json_decref(params[i]);
}

int main(void) {
  RUN(test_parse_single);
  RUN(test_parse_batch);
  RUN(test_body_bytes);
  RUN(test_values);
  anvil = tgt_anvil_start(NULL);
  if (!anvil) {
    printf("FAIL anvil did not start (%s)\n", tgt_anvil_path());
    return 1;
  }
  RUN(test_harness);
  RUN(test_typed_basic);
  RUN(test_call_code_estimate);
  RUN(test_send_receipt_logs);
  RUN(test_fee_history);
  RUN(test_logs_paging_halves);
  RUN(test_batch);
  RUN(test_async_many);
  RUN(test_blocking_inside_callback_refused);
  RUN(test_timeout);
  RUN(test_garbage_and_http_errors);
  RUN(test_failover);
  RUN(test_recovering_endpoint_probed);
  RUN(test_chain_mismatch);
  RUN(test_cli_matches_cast);
  tgt_anvil_free(anvil);
  return tgt_done();
}

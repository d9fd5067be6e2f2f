/* The process harness behind tg_proc.h: spawning, cleanup on every exit path, and anvil helpers. */
#include "tg_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

struct tgt_proc {
  pid_t pid;
  int exited;
  int status;
  int slot;
};

/* Live children, read by the signal handler: plain pids in a fixed table. */
#define MAX_PROCS 64
static volatile sig_atomic_t live_pids[MAX_PROCS];
static tgt_proc *live_procs[MAX_PROCS];
static int installed;

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_fatal_signal(int sig) {
  for (int i = 0; i < MAX_PROCS; i++)
    if (live_pids[i] > 0) kill((pid_t)live_pids[i], SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void at_exit_cleanup(void) {
  for (int i = 0; i < MAX_PROCS; i++)
    if (live_procs[i]) tgt_proc_stop(live_procs[i], 3000);
}

static void install_handlers(void) {
  if (installed) return;
  installed = 1;
  atexit(at_exit_cleanup);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGQUIT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  /* A test writing to a socket that the node closed must see EPIPE, not die. */
  signal(SIGPIPE, SIG_IGN);
}

int tgt_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  socklen_t sl = sizeof sa;
  int port = 0;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
    port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

const char *tgt_root(void) {
  const char *r = getenv("TG_ROOT");
  return r && *r ? r : ".";
}

tgt_proc *tgt_proc_spawn(const char *const *argv) {
  install_handlers();
  int slot = -1;
  for (int i = 0; i < MAX_PROCS; i++)
    if (!live_procs[i]) {
      slot = i;
      break;
    }
  if (slot < 0) {
    fprintf(stderr, "tgt_proc_spawn: more than %d live processes\n", MAX_PROCS);
    return NULL;
  }
  tgt_proc *p = calloc(1, sizeof *p);
  if (!p) abort();
  int verbose = getenv("TG_PROC_LOG") != NULL;
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "tgt_proc_spawn: fork: %s\n", strerror(errno));
    free(p);
    return NULL;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the parent died before prctl */
    setpgid(0, 0);                       /* not hit by the terminal's SIGINT before us */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < 32; s++) sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
      dup2(nul, 0);
      if (!verbose) {
        dup2(nul, 1);
        dup2(nul, 2);
      }
      if (nul > 2) close(nul);
    }
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  p->pid = pid;
  p->slot = slot;
  live_procs[slot] = p;
  live_pids[slot] = pid;
  return p;
}

pid_t tgt_proc_pid(const tgt_proc *p) {
  return p ? p->pid : -1;
}

static void forget(tgt_proc *p, int status) {
  p->exited = 1;
  p->status = status;
  if (p->slot >= 0) {
    live_pids[p->slot] = 0;
    live_procs[p->slot] = NULL;
    p->slot = -1;
  }
}

int tgt_proc_alive(tgt_proc *p) {
  if (!p || p->exited) return 0;
  int st;
  pid_t r = waitpid(p->pid, &st, WNOHANG);
  if (r == p->pid || (r < 0 && errno == ECHILD)) {
    forget(p, r == p->pid ? st : 0);
    return 0;
  }
  return 1;
}

int tgt_proc_stop(tgt_proc *p, unsigned grace_ms) {
  if (!p) return 0;
  if (!tgt_proc_alive(p)) return p->status;
  kill(p->pid, SIGTERM);
  uint64_t end = now_ms() + grace_ms;
  while (now_ms() < end) {
    if (!tgt_proc_alive(p)) return p->status;
    sleep_ms(10);
  }
  kill(p->pid, SIGKILL);
  int st = 0;
  while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
  }
  forget(p, st);
  return st;
}

void tgt_proc_kill9(tgt_proc *p) {
  if (!p || !tgt_proc_alive(p)) return;
  kill(p->pid, SIGKILL);
  int st = 0;
  while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
  }
  forget(p, st);
}

void tgt_proc_free(tgt_proc *p) {
  if (!p) return;
  tgt_proc_stop(p, 3000);
  free(p);
}

static int tcp_connects(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons((uint16_t)port);
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

int tgt_wait_tcp(tgt_proc *p, int port, unsigned timeout_ms) {
  uint64_t end = now_ms() + timeout_ms;
  while (now_ms() < end) {
    if (p && !tgt_proc_alive(p)) return -1;
    if (tcp_connects(port)) return 0;
    sleep_ms(20);
  }
  return -1;
}

/* ---- raw JSON-RPC ---- */

static _Thread_local char rpc_err[512];

const char *tgt_rpc_error(void) {
  return rpc_err;
}

static void set_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rpc_err, sizeof rpc_err, fmt, ap);
  va_end(ap);
}

typedef struct {
  char *p;
  size_t n;
} body_t;

static size_t on_body(char *data, size_t sz, size_t nm, void *arg) {
  body_t *b = arg;
  size_t n = sz * nm;
  if (b->n + n > ((size_t)64 << 20)) return 0;
  char *q = realloc(b->p, b->n + n + 1);
  if (!q) return 0;
  memcpy(q + b->n, data, n);
  b->p = q;
  b->n += n;
  b->p[b->n] = 0;
  return n;
}

json_t *tgt_rpc(const char *url, const char *method, const char *params_json) {
  static int curl_ready;
  if (!curl_ready) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_ready = 1;
  }
  rpc_err[0] = 0;
  json_error_t je;
  json_t *params = json_loads(params_json ? params_json : "[]", 0, &je);
  if (!params) {
    set_err("bad params JSON: %s", je.text);
    return NULL;
  }
  json_t *req = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1, "method", method,
                          "params", params);
  char *text = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  CURL *c = curl_easy_init();
  body_t body = {NULL, 0};
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode cc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  curl_slist_free_all(hdr);
  free(text);
  json_t *out = NULL;
  if (cc != CURLE_OK) {
    set_err("%s: %s", method, curl_easy_strerror(cc));
  } else {
    json_t *rep = body.p ? json_loadb(body.p, body.n, JSON_ALLOW_NUL, &je) : NULL;
    json_t *err = rep ? json_object_get(rep, "error") : NULL;
    json_t *res = rep ? json_object_get(rep, "result") : NULL;
    if (!rep) {
      set_err("%s: HTTP %ld, not JSON", method, status);
    } else if (err) {
      const char *m = json_string_value(json_object_get(err, "message"));
      set_err("%s: node error %lld: %s", method,
              (long long)json_integer_value(json_object_get(err, "code")), m ? m : "?");
    } else if (!res) {
      set_err("%s: reply without result", method);
    } else {
      out = json_incref(res);
    }
    json_decref(rep);
  }
  free(body.p);
  return out;
}

uint64_t tgt_rpc_u64(const char *url, const char *method, const char *params_json) {
  json_t *r = tgt_rpc(url, method, params_json);
  const char *s = json_string_value(r);
  uint64_t v = UINT64_MAX;
  if (s && s[0] == '0' && s[1] == 'x' && s[2]) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s + 2, &end, 16);
    if (!*end && !errno) v = x;
  }
  if (r && v == UINT64_MAX) set_err("%s: result is not a quantity", method);
  json_decref(r);
  return v;
}

/* ---- anvil ---- */

const char *tgt_anvil_path(void) {
  static char path[4096];
  const char *env = getenv("TG_ANVIL");
  if (env && *env) return env;
  snprintf(path, sizeof path, "%s/node_modules/.bin/anvil", tgt_root());
  return path;
}

static char *dup_or_null(const char *s) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) abort();
  return d;
}

static int anvil_launch(tgt_anvil *a) {
  const char *argv[64];
  char port[16], chain[24], bt[16];
  size_t n = 0;
  argv[n++] = tgt_anvil_path();
  argv[n++] = "--host";
  argv[n++] = "127.0.0.1";
  argv[n++] = "--port";
  snprintf(port, sizeof port, "%d", a->port);
  argv[n++] = port;
  if (a->opts.chain_id) {
    snprintf(chain, sizeof chain, "%llu", (unsigned long long)a->opts.chain_id);
    argv[n++] = "--chain-id";
    argv[n++] = chain;
  }
  if (a->opts.block_time) {
    snprintf(bt, sizeof bt, "%u", a->opts.block_time);
    argv[n++] = "--block-time";
    argv[n++] = bt;
  }
  if (a->opts.no_mining) argv[n++] = "--no-mining";
  if (a->opts.state) argv[n++] = "--state", argv[n++] = a->opts.state;
  if (a->opts.dump_state) argv[n++] = "--dump-state", argv[n++] = a->opts.dump_state;
  if (a->opts.load_state) argv[n++] = "--load-state", argv[n++] = a->opts.load_state;
  for (size_t i = 0; a->extra && a->extra[i] && n < 62; i++) argv[n++] = a->extra[i];
  argv[n] = NULL;
  a->proc = tgt_proc_spawn(argv);
  if (!a->proc) return -1;
  uint64_t end = now_ms() + 30000;
  while (now_ms() < end) {
    if (!tgt_proc_alive(a->proc)) {
      fprintf(stderr, "tgt_anvil: %s exited at start (TG_PROC_LOG=1 shows its output)\n",
              argv[0]);
      free(a->proc);
      a->proc = NULL;
      return -1;
    }
    if (tcp_connects(a->port) && tgt_rpc_u64(a->url, "eth_chainId", NULL) != UINT64_MAX) return 0;
    sleep_ms(25);
  }
  fprintf(stderr, "tgt_anvil: no answer on %s\n", a->url);
  tgt_proc_free(a->proc);
  a->proc = NULL;
  return -1;
}

tgt_anvil *tgt_anvil_start(const tgt_anvil_opts *opts) {
  tgt_anvil *a = calloc(1, sizeof *a);
  if (!a) abort();
  if (opts) a->opts = *opts;
  a->opts.state = a->strs[0] = dup_or_null(a->opts.state);
  a->opts.dump_state = a->strs[1] = dup_or_null(a->opts.dump_state);
  a->opts.load_state = a->strs[2] = dup_or_null(a->opts.load_state);
  size_t ne = 0;
  while (a->opts.extra && a->opts.extra[ne]) ne++;
  a->extra = calloc(ne + 1, sizeof *a->extra);
  if (!a->extra) abort();
  for (size_t i = 0; i < ne; i++) a->extra[i] = dup_or_null(a->opts.extra[i]);
  a->opts.extra = NULL;
  for (int attempt = 0; attempt < 3; attempt++) {
    a->port = tgt_free_port();
    snprintf(a->url, sizeof a->url, "http://127.0.0.1:%d", a->port);
    if (a->port && anvil_launch(a) == 0) return a;
  }
  tgt_anvil_free(a);
  return NULL;
}

void tgt_anvil_stop(tgt_anvil *a) {
  if (!a || !a->proc) return;
  tgt_proc_free(a->proc);
  a->proc = NULL;
}

void tgt_anvil_kill9(tgt_anvil *a) {
  if (!a || !a->proc) return;
  tgt_proc_kill9(a->proc);
  free(a->proc);
  a->proc = NULL;
}

int tgt_anvil_restart(tgt_anvil *a) {
  tgt_anvil_stop(a);
  /* The port may linger briefly; anvil sets SO_REUSEADDR, so retry a few times. */
  for (int attempt = 0; attempt < 5; attempt++) {
    if (anvil_launch(a) == 0) return 0;
    sleep_ms(200);
  }
  return -1;
}

void tgt_anvil_free(tgt_anvil *a) {
  if (!a) return;
  tgt_anvil_stop(a);
  for (int i = 0; i < 4; i++) free(a->strs[i]);
  for (size_t i = 0; a->extra && a->extra[i]; i++) free(a->extra[i]);
  free(a->extra);
  free(a);
}

static int call_ok(tgt_anvil *a, const char *method, const char *params) {
  json_t *r = tgt_rpc(a->url, method, params);
  if (!r) return -1;
  json_decref(r);
  return 0;
}

int tgt_anvil_mine(tgt_anvil *a, unsigned blocks) {
  char p[32];
  snprintf(p, sizeof p, "[\"0x%x\"]", blocks ? blocks : 1);
  return call_ok(a, "anvil_mine", p);
}

int tgt_anvil_set_next_base_fee(tgt_anvil *a, uint64_t wei) {
  char p[48];
  snprintf(p, sizeof p, "[\"0x%llx\"]", (unsigned long long)wei);
  return call_ok(a, "anvil_setNextBlockBaseFeePerGas", p);
}

uint64_t tgt_anvil_snapshot(tgt_anvil *a) {
  return tgt_rpc_u64(a->url, "evm_snapshot", NULL);
}

int tgt_anvil_revert(tgt_anvil *a, uint64_t id) {
  char p[48];
  snprintf(p, sizeof p, "[\"0x%llx\"]", (unsigned long long)id);
  json_t *r = tgt_rpc(a->url, "evm_revert", p);
  int ok = r && json_is_true(r);
  if (r && !ok) set_err("evm_revert: returned false");
  json_decref(r);
  return ok ? 0 : -1;
}

int tgt_anvil_reorg(tgt_anvil *a, unsigned depth) {
  char p[48];
  snprintf(p, sizeof p, "[%u,[]]", depth);
  return call_ok(a, "anvil_reorg", p);
}

int tgt_anvil_drop_tx(tgt_anvil *a, const char *tx_hash_hex) {
  char p[96];
  snprintf(p, sizeof p, "[\"%s\"]", tx_hash_hex);
  return call_ok(a, "anvil_dropTransaction", p);
}

int tgt_anvil_set_automine(tgt_anvil *a, int on) {
  return call_ok(a, "evm_setAutomine", on ? "[true]" : "[false]");
}

int tgt_anvil_set_balance(tgt_anvil *a, const char *addr_hex, const char *wei_hex) {
  char p[160];
  snprintf(p, sizeof p, "[\"%s\",\"%s\"]", addr_hex, wei_hex);
  return call_ok(a, "anvil_setBalance", p);
}

uint64_t tgt_anvil_block_number(tgt_anvil *a) {
  return tgt_rpc_u64(a->url, "eth_blockNumber", NULL);
}

static const char *const dev_addr[] = {
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc", "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
    "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65"};
static const char *const dev_key[] = {
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"};

const char *tgt_anvil_address(unsigned i) {
  return i < 5 ? dev_addr[i] : NULL;
}

const char *tgt_anvil_key(unsigned i) {
  return i < 5 ? dev_key[i] : NULL;
}

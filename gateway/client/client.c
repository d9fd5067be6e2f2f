/* The payer's client: paid HTTP requests over libcurl, policy, vouchers, caps and the state file. */
#include "tollgate/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/client_int.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

#define MAX_CHANNELS 64
#define MAX_PAYIDS 256
#define MAX_PAYEES 64
#define STATE_MAX ((size_t)4 << 20)
#define BODY_MAX ((size_t)64 << 20)

typedef struct {
  tg_client_channel ch;
  tg_x402_sig sig;      /* the voucher signature for signed_max */
  /* A gasless deposit (ch.pending_deposit > 0): the authorization, resent until confirmed. */
  uint64_t dep_after, dep_before;
  tg_hash dep_salt;
  tg_x402_sig dep_sig;
} chan_rec;

typedef struct {
  char id[TG_CLIENT_PAYID_MAX + 1];
  char *header;         /* the PAYMENT-SIGNATURE sent (malloc) */
  tg_u256 price;        /* counted in the caps' counters */
  tg_address payee;
  int done;             /* the charge is known and counted */
  int own_id;           /* the id was generated here: nobody can repeat it once done */
  uint64_t at;
} payid_rec;

typedef struct {
  tg_address payee;
  tg_u256 spent;
} payee_rec;

/* What state.json holds. */
typedef struct {
  chan_rec ch[MAX_CHANNELS];
  size_t n_ch;
  payid_rec pid[MAX_PAYIDS];
  size_t n_pid;
  payee_rec payee[MAX_PAYEES];
  size_t n_payee;
  tg_u256 total;
  uint64_t hour_start, day_start;
  tg_u256 hour, day;
} state;

/* Prices of calls in flight on a channel, in this process. */
typedef struct {
  tg_hash id;
  tg_u256 inflight;
  int carrying_deposit; /* a call in flight carries the pending deposit */
} flight;

struct tg_client {
  tg_seckey *key;
  tg_address payer;
  tg_client_opts o;
  char *dir;
  char *state_path;
  char *tmp_path;
  char *lock_path;
  pthread_mutex_t mu;
  pthread_mutex_t open_mu; /* one channel opening at a time */
  char *rpc_url;
  int lock_fd;
  state st;
  flight fl[MAX_CHANNELS];
  size_t n_fl;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void logf_(tg_client *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void logf_(tg_client *c, const char *fmt, ...) {
  if (!c->o.log) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(c->o.log, fmt, ap);
  va_end(ap);
  fputc('\n', c->o.log);
}

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* ---- state file ------------------------------------------------------------- */

static void state_clear(state *s) {
  for (size_t i = 0; i < s->n_pid; i++) free(s->pid[i].header);
  memset(s, 0, sizeof *s);
}

static json_t *j_hex(const uint8_t *b, size_t n) {
  char *t = malloc(2 * n + 3);
  if (!t) return NULL;
  tg_hex_encode(t, b, n, 1);
  json_t *j = json_string(t);
  free(t);
  return j;
}
static json_t *j_u256(const tg_u256 *v) {
  char d[TG_U256_DEC_MAX];
  tg_u256_to_dec(v, d);
  return json_string(d);
}
static int g_hex(const json_t *o, const char *k, uint8_t *out, size_t n) {
  const char *s = json_string_value(json_object_get(o, k));
  if (!s) return TG_ECLIENT_STATE;
  return tg_hex_decode_exact(out, n, s, strlen(s)) ? TG_ECLIENT_STATE : 0;
}
static int g_u256(const json_t *o, const char *k, tg_u256 *out) {
  const char *s = json_string_value(json_object_get(o, k));
  if (!s) return TG_ECLIENT_STATE;
  return tg_u256_parse_dec(out, s, strlen(s)) ? TG_ECLIENT_STATE : 0;
}
static uint64_t g_u64(const json_t *o, const char *k) {
  json_int_t v = json_integer_value(json_object_get(o, k));
  return v > 0 ? (uint64_t)v : 0;
}

static int state_parse(state *s, const char *text, size_t len) {
  json_error_t e;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
  if (!json_is_object(root)) {
    json_decref(root);
    return TG_ECLIENT_STATE;
  }
  int rc = 0;
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(root, "channels"), i, v) {
    if (s->n_ch == MAX_CHANNELS) break;
    chan_rec *r = &s->ch[s->n_ch];
    tg_client_channel *ch = &r->ch;
    ch->chain_id = g_u64(v, "chainId");
    ch->config.withdraw_delay = g_u64(v, "withdrawDelay");
    const char *sig = json_string_value(json_object_get(v, "signature"));
    size_t sl = 0;
    if (g_hex(v, "contract", ch->contract.b, 20) || g_hex(v, "payer", ch->config.payer.b, 20) ||
        g_hex(v, "payerAuthorizer", ch->config.payer_authorizer.b, 20) ||
        g_hex(v, "receiver", ch->config.receiver.b, 20) ||
        g_hex(v, "receiverAuthorizer", ch->config.receiver_authorizer.b, 20) ||
        g_hex(v, "token", ch->config.token.b, 20) || g_hex(v, "salt", ch->config.salt.b, 32) ||
        g_hex(v, "id", ch->id.b, 32) || g_u256(v, "deposit", &ch->deposit) ||
        g_u256(v, "charged", &ch->charged) || g_u256(v, "signedMax", &ch->signed_max) || !sig ||
        tg_hex_decode(r->sig.b, sizeof r->sig.b, &sl, sig, strlen(sig), TG_HEX_PREFIX_REQUIRED)) {
      rc = TG_ECLIENT_STATE;
      goto out;
    }
    r->sig.len = sl;
    ch->withdraw_at = g_u64(v, "withdrawAt");
    json_t *pd = json_object_get(v, "pendingDeposit");
    if (pd) {
      const char *ds = json_string_value(json_object_get(pd, "signature"));
      size_t dl = 0;
      if (g_u256(pd, "amount", &ch->pending_deposit) || g_hex(pd, "salt", r->dep_salt.b, 32) || !ds ||
          tg_hex_decode(r->dep_sig.b, sizeof r->dep_sig.b, &dl, ds, strlen(ds), TG_HEX_PREFIX_REQUIRED)) {
        rc = TG_ECLIENT_STATE;
        goto out;
      }
      r->dep_sig.len = dl;
      r->dep_after = g_u64(pd, "validAfter");
      r->dep_before = g_u64(pd, "validBefore");
    }
    s->n_ch++;
  }
  json_array_foreach(json_object_get(root, "payments"), i, v) {
    if (s->n_pid == MAX_PAYIDS) break;
    payid_rec *p = &s->pid[s->n_pid];
    const char *id = json_string_value(json_object_get(v, "id"));
    const char *h = json_string_value(json_object_get(v, "header"));
    if (!id || !h || strlen(id) > TG_CLIENT_PAYID_MAX || g_u256(v, "price", &p->price) ||
        g_hex(v, "payee", p->payee.b, 20)) {
      rc = TG_ECLIENT_STATE;
      goto out;
    }
    snprintf(p->id, sizeof p->id, "%s", id);
    p->header = strdup(h);
    if (!p->header) {
      rc = TG_ENOMEM;
      goto out;
    }
    p->done = json_is_true(json_object_get(v, "done"));
    p->own_id = json_is_true(json_object_get(v, "ownId"));
    p->at = g_u64(v, "at");
    s->n_pid++;
  }
  json_t *sp = json_object_get(root, "spent");
  if (sp) {
    if (g_u256(sp, "total", &s->total) || g_u256(sp, "hour", &s->hour) ||
        g_u256(sp, "day", &s->day)) {
      rc = TG_ECLIENT_STATE;
      goto out;
    }
    s->hour_start = g_u64(sp, "hourStart");
    s->day_start = g_u64(sp, "dayStart");
    json_array_foreach(json_object_get(sp, "payees"), i, v) {
      if (s->n_payee == MAX_PAYEES) break;
      payee_rec *p = &s->payee[s->n_payee];
      if (g_hex(v, "payee", p->payee.b, 20) || g_u256(v, "spent", &p->spent)) {
        rc = TG_ECLIENT_STATE;
        goto out;
      }
      s->n_payee++;
    }
  }
out:
  json_decref(root);
  return rc;
}

static json_t *state_json(const state *s) {
  json_t *root = json_object();
  json_t *chs = json_array();
  for (size_t i = 0; i < s->n_ch; i++) {
    const tg_client_channel *ch = &s->ch[i].ch;
    json_t *o = json_object();
    json_object_set_new(o, "chainId", json_integer((json_int_t)ch->chain_id));
    json_object_set_new(o, "contract", j_hex(ch->contract.b, 20));
    json_object_set_new(o, "id", j_hex(ch->id.b, 32));
    json_object_set_new(o, "payer", j_hex(ch->config.payer.b, 20));
    json_object_set_new(o, "payerAuthorizer", j_hex(ch->config.payer_authorizer.b, 20));
    json_object_set_new(o, "receiver", j_hex(ch->config.receiver.b, 20));
    json_object_set_new(o, "receiverAuthorizer", j_hex(ch->config.receiver_authorizer.b, 20));
    json_object_set_new(o, "token", j_hex(ch->config.token.b, 20));
    json_object_set_new(o, "withdrawDelay", json_integer((json_int_t)ch->config.withdraw_delay));
    json_object_set_new(o, "salt", j_hex(ch->config.salt.b, 32));
    json_object_set_new(o, "deposit", j_u256(&ch->deposit));
    json_object_set_new(o, "charged", j_u256(&ch->charged));
    json_object_set_new(o, "signedMax", j_u256(&ch->signed_max));
    json_object_set_new(o, "signature", j_hex(s->ch[i].sig.b, s->ch[i].sig.len));
    if (ch->withdraw_at) json_object_set_new(o, "withdrawAt", json_integer((json_int_t)ch->withdraw_at));
    if (!tg_u256_is_zero(&ch->pending_deposit)) {
      const chan_rec *r = &s->ch[i];
      json_t *pd = json_object();
      json_object_set_new(pd, "amount", j_u256(&ch->pending_deposit));
      json_object_set_new(pd, "salt", j_hex(r->dep_salt.b, 32));
      json_object_set_new(pd, "validAfter", json_integer((json_int_t)r->dep_after));
      json_object_set_new(pd, "validBefore", json_integer((json_int_t)r->dep_before));
      json_object_set_new(pd, "signature", j_hex(r->dep_sig.b, r->dep_sig.len));
      json_object_set_new(o, "pendingDeposit", pd);
    }
    json_array_append_new(chs, o);
  }
  json_object_set_new(root, "channels", chs);
  json_t *ps = json_array();
  for (size_t i = 0; i < s->n_pid; i++) {
    const payid_rec *p = &s->pid[i];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    json_object_set_new(o, "header", json_string(p->header));
    json_object_set_new(o, "price", j_u256(&p->price));
    json_object_set_new(o, "payee", j_hex(p->payee.b, 20));
    json_object_set_new(o, "done", json_boolean(p->done));
    if (p->own_id) json_object_set_new(o, "ownId", json_true());
    json_object_set_new(o, "at", json_integer((json_int_t)p->at));
    json_array_append_new(ps, o);
  }
  json_object_set_new(root, "payments", ps);
  json_t *sp = json_object();
  json_object_set_new(sp, "total", j_u256(&s->total));
  json_object_set_new(sp, "hour", j_u256(&s->hour));
  json_object_set_new(sp, "hourStart", json_integer((json_int_t)s->hour_start));
  json_object_set_new(sp, "day", j_u256(&s->day));
  json_object_set_new(sp, "dayStart", json_integer((json_int_t)s->day_start));
  json_t *pa = json_array();
  for (size_t i = 0; i < s->n_payee; i++) {
    json_t *o = json_object();
    json_object_set_new(o, "payee", j_hex(s->payee[i].payee.b, 20));
    json_object_set_new(o, "spent", j_u256(&s->payee[i].spent));
    json_array_append_new(pa, o);
  }
  json_object_set_new(sp, "payees", pa);
  json_object_set_new(root, "spent", sp);
  return root;
}

/* Takes the process mutex and the file lock, then loads state.json (absent: empty). */
static int state_begin(tg_client *c) {
  pthread_mutex_lock(&c->mu);
  if (flock(c->lock_fd, LOCK_EX) != 0) {
    pthread_mutex_unlock(&c->mu);
    return TG_EIO;
  }
  state_clear(&c->st);
  FILE *f = fopen(c->state_path, "rb");
  if (!f) {
    if (errno == ENOENT) return 0;
    goto fail_io;
  }
  tg_buf b;
  tg_buf_init(&b, STATE_MAX);
  char chunk[8192];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if ((rc = tg_buf_append(&b, chunk, n)) != 0) break;
  int bad = ferror(f);
  fclose(f);
  if (!rc && bad) rc = TG_EIO;
  if (!rc && b.len) rc = state_parse(&c->st, (const char *)b.data, b.len);
  tg_buf_cleanup(&b);
  if (rc) {
    state_clear(&c->st);
    flock(c->lock_fd, LOCK_UN);
    pthread_mutex_unlock(&c->mu);
  }
  return rc;
fail_io:
  flock(c->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&c->mu);
  return TG_EIO;
}

/* Writes the state atomically (temporary file, fsync, rename) when save, then unlocks. */
static int state_end(tg_client *c, int save) {
  int rc = 0;
  if (save) {
    json_t *j = state_json(&c->st);
    char *text = j ? json_dumps(j, JSON_INDENT(1)) : NULL;
    json_decref(j);
    int fd = text ? open(c->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd < 0) {
      rc = text ? TG_EIO : TG_ENOMEM;
    } else {
      size_t len = strlen(text), off = 0;
      while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
      }
      if (off != len || fsync(fd) != 0) rc = TG_EIO;
      if (close(fd) != 0) rc = TG_EIO;
      if (!rc && rename(c->tmp_path, c->state_path) != 0) rc = TG_EIO;
    }
    free(text);
  }
  flock(c->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* ---- open / close ------------------------------------------------------------- */

int tg_client_open(tg_client **out, const tg_client_opts *opts) {
  *out = NULL;
  if (!opts || !opts->key || !opts->state_dir || !opts->state_dir[0]) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  pthread_once(&curl_once, curl_init_once);
  tg_client *c = calloc(1, sizeof *c);
  if (!c) return TG_ENOMEM;
  c->lock_fd = -1;
  c->o = *opts;
  if (!c->o.headroom_calls) c->o.headroom_calls = 50;
  if (c->o.timeout_ms <= 0) c->o.timeout_ms = 30000;
  c->key = tg_seckey_new();
  c->dir = strdup(opts->state_dir);
  c->rpc_url = opts->rpc_url ? strdup(opts->rpc_url) : NULL;
  c->o.rpc_url = c->rpc_url;
  if (!c->key || !c->dir || (opts->rpc_url && !c->rpc_url)) {
    rc = TG_ENOMEM;
    goto fail;
  }
  memcpy(c->key->b, opts->key->b, 32);
  c->o.key = NULL;
  if ((rc = tg_seckey_address(&c->payer, c->key)) != 0) goto fail;
  if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
    rc = TG_EIO;
    goto fail;
  }
  c->state_path = path_join(c->dir, "state.json");
  c->tmp_path = path_join(c->dir, "state.json.tmp");
  c->lock_path = path_join(c->dir, "state.lock");
  if (!c->state_path || !c->tmp_path || !c->lock_path) {
    rc = TG_ENOMEM;
    goto fail;
  }
  c->lock_fd = open(c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (c->lock_fd < 0) {
    rc = TG_EIO;
    goto fail;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->open_mu, NULL);
  /* Check that the state file reads. */
  if ((rc = state_begin(c)) != 0) {
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->open_mu);
    goto fail;
  }
  (void)state_end(c, 0);
  *out = c;
  return 0;
fail:
  if (c->lock_fd >= 0) close(c->lock_fd);
  tg_seckey_free(c->key);
  free(c->dir);
  free(c->rpc_url);
  free(c->state_path);
  free(c->tmp_path);
  free(c->lock_path);
  free(c);
  return rc;
}

void tg_client_close(tg_client *c) {
  if (!c) return;
  state_clear(&c->st);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->open_mu);
  close(c->lock_fd);
  tg_seckey_free(c->key);
  free(c->dir);
  free(c->rpc_url);
  free(c->state_path);
  free(c->tmp_path);
  free(c->lock_path);
  free(c);
}

void tg_client_payer(const tg_client *c, tg_address *out) { *out = c->payer; }

const tg_seckey *tg_client__key(const tg_client *c) { return c->key; }

/* ---- HTTP ------------------------------------------------------------------- */

#define HEAD_MAX ((size_t)64 << 10)

typedef struct {
  long status;
  tg_buf body;
  tg_buf head;     /* header lines of the current response */
  char *required;  /* PAYMENT-REQUIRED (malloc) */
  char *response;  /* PAYMENT-RESPONSE (malloc) */
  const tg_client_sink *sink;
  long cur_status; /* from the status line of the response being read */
  int sse;         /* Content-Type: text/event-stream */
  int streaming;   /* the sink took the head; body bytes go to it */
  int aborted;     /* the sink asked to stop */
  tg_client__sse tr; /* the `: x402-charge` trailer of a stream */
} http_answer;

static void answer_cleanup(http_answer *a) {
  tg_buf_cleanup(&a->body);
  tg_buf_cleanup(&a->head);
  free(a->required);
  free(a->response);
  memset(a, 0, sizeof *a);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  http_answer *a = arg;
  size_t len = size * n;
  if (a->sse) tg_client__sse_feed(&a->tr, p, len);
  if (a->streaming) {
    if (a->sink->on_body && a->sink->on_body(a->sink->arg, p, len) != 0) {
      a->aborted = 1;
      return 0;
    }
    return len;
  }
  return tg_buf_append(&a->body, p, len) == 0 ? len : 0;
}

static char *header_value(const char *line, size_t len, const char *name) {
  size_t nl = strlen(name);
  if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
  const char *v = line + nl + 1, *e = line + len;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t')) e--;
  if ((size_t)(e - v) > TG_X402_HEADER_MAX) return NULL;
  return strndup(v, (size_t)(e - v));
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  http_answer *a = arg;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new response (redirect, 100) */
    free(a->required);
    free(a->response);
    a->required = a->response = NULL;
    tg_buf_reset(&a->head);
    a->sse = 0;
    a->cur_status = 0;
    const char *sp = memchr(p, ' ', len);
    if (sp && (size_t)(sp - p) + 4 <= len) {
      long st = 0;
      for (int k = 1; k <= 3; k++) {
        char d = sp[k];
        if (d < '0' || d > '9') {
          st = 0;
          break;
        }
        st = st * 10 + (d - '0');
      }
      a->cur_status = st;
    }
    return len;
  }
  if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) { /* the end of the head */
    if (a->sink && !a->streaming && a->cur_status >= 200 && a->cur_status < 300) {
      a->streaming = 1;
      if (a->sink->on_head &&
          a->sink->on_head(a->sink->arg, a->cur_status, (const char *)a->head.data, a->head.len)) {
        a->aborted = 1;
        return 0;
      }
    }
    return len;
  }
  if (tg_buf_append(&a->head, p, len) != 0) return 0;
  char *v;
  if ((v = header_value(p, len, "payment-required")) != NULL) {
    free(a->required);
    a->required = v;
  } else if ((v = header_value(p, len, "payment-response")) != NULL) {
    free(a->response);
    a->response = v;
  } else if ((v = header_value(p, len, "content-type")) != NULL) {
    a->sse = strncasecmp(v, "text/event-stream", 17) == 0;
    free(v);
  }
  return len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  (void)dt;
  (void)dn;
  (void)ut;
  (void)un;
  http_answer *a = arg;
  if (a->sink->cancelled(a->sink->arg)) {
    a->aborted = 1;
    return 1;
  }
  return 0;
}

static int http_do(tg_client *c, http_answer *a, const tg_client_request *req, const char *payment) {
  memset(a, 0, sizeof *a);
  tg_buf_init(&a->body, BODY_MAX);
  tg_buf_init(&a->head, HEAD_MAX);
  a->sink = req->sink;
  CURL *h = curl_easy_init();
  if (!h) return TG_ENOMEM;
  struct curl_slist *hl = NULL;
  int rc = 0;
  for (size_t i = 0; i < req->n_headers; i++) {
    struct curl_slist *t = curl_slist_append(hl, req->headers[i]);
    if (!t) goto nomem;
    hl = t;
  }
  char *ph = NULL;
  if (payment) {
    size_t n = strlen(payment) + 32;
    ph = malloc(n);
    if (!ph) goto nomem;
    snprintf(ph, n, "PAYMENT-SIGNATURE: %s", payment);
    struct curl_slist *t = curl_slist_append(hl, ph);
    free(ph);
    if (!t) goto nomem;
    hl = t;
  }
  curl_easy_setopt(h, CURLOPT_URL, req->url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->o.timeout_ms);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
  if (req->body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  }
  if (req->method) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
  if (req->method && strcmp(req->method, "HEAD") == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  if (req->sink && req->sink->cancelled) {
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, a);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  }
  CURLcode cc = curl_easy_perform(h);
  if (cc != CURLE_OK) {
    if (a->aborted) logf_(c, "* the receiver of the answer went away");
    logf_(c, "* HTTP error: %s", curl_easy_strerror(cc));
    rc = TG_ECLIENT_HTTP;
  } else {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
  }
  curl_slist_free_all(hl);
  curl_easy_cleanup(h);
  return rc;
nomem:
  curl_slist_free_all(hl);
  curl_easy_cleanup(h);
  return TG_ENOMEM;
}

/* ---- policy ------------------------------------------------------------------ */

static void window_roll(state *s, uint64_t now) {
  uint64_t hs = now - now % 3600, ds = now - now % 86400;
  if (s->hour_start != hs) {
    s->hour_start = hs;
    tg_u256_zero(&s->hour);
  }
  if (s->day_start != ds) {
    s->day_start = ds;
    tg_u256_zero(&s->day);
  }
}

static payee_rec *payee_get(state *s, const tg_address *a, int create) {
  for (size_t i = 0; i < s->n_payee; i++)
    if (tg_address_eq(&s->payee[i].payee, a)) return &s->payee[i];
  if (!create || s->n_payee == MAX_PAYEES) return NULL;
  payee_rec *p = &s->payee[s->n_payee++];
  memset(p, 0, sizeof *p);
  p->payee = *a;
  return p;
}

/* 0 when `cur + add <= cap` (or no cap). */
static int cap_ok(int has, const tg_u256 *cap, const tg_u256 *cur, const tg_u256 *add) {
  if (!has) return 1;
  tg_u256 t;
  if (tg_u256_add(&t, cur, add)) return 0;
  return tg_u256_cmp(&t, cap) <= 0;
}

/* Checks every cap for a call of `price` to `payee`; names the cap broken. */
static const char *caps_check(tg_client *c, const tg_u256 *price, const tg_address *payee) {
  const tg_client_caps *k = &c->o.caps;
  state *s = &c->st;
  tg_u256 zero;
  tg_u256_zero(&zero);
  if (!cap_ok(k->has_per_call, &k->per_call, &zero, price)) return "per-call";
  if (!cap_ok(k->has_per_hour, &k->per_hour, &s->hour, price)) return "per-hour";
  if (!cap_ok(k->has_per_day, &k->per_day, &s->day, price)) return "per-day";
  if (!cap_ok(k->has_total, &k->total, &s->total, price)) return "total";
  payee_rec *p = payee_get(s, payee, 0);
  if (!cap_ok(k->has_per_payee, &k->per_payee, p ? &p->spent : &zero, price)) return "per-payee";
  return NULL;
}

/* Adds (sign > 0) or removes an amount from every counter. */
static void spend_apply(state *s, const tg_address *payee, const tg_u256 *v, int sign) {
  tg_u256 *ctr[4] = {&s->total, &s->hour, &s->day, NULL};
  payee_rec *p = payee_get(s, payee, 1);
  if (p) ctr[3] = &p->spent;
  for (size_t i = 0; i < 4; i++) {
    if (!ctr[i]) continue;
    tg_u256 t;
    if (sign > 0) {
      if (tg_u256_add(&t, ctr[i], v) == 0) *ctr[i] = t;
    } else if (tg_u256_sub(&t, ctr[i], v) == 0) {
      *ctr[i] = t;
    } else {
      tg_u256_zero(ctr[i]);
    }
  }
}

/* The least remaining room of the lifetime caps (total, per payee); *bounded 0 when none. */
static void caps_room(tg_client *c, const tg_address *payee, tg_u256 *room, int *bounded) {
  const tg_client_caps *k = &c->o.caps;
  *bounded = 0;
  tg_u256_zero(room);
  tg_u256 r;
  if (k->has_total) {
    if (tg_u256_sub(&r, &k->total, &c->st.total)) tg_u256_zero(&r);
    *room = r;
    *bounded = 1;
  }
  if (k->has_per_payee) {
    payee_rec *p = payee_get(&c->st, payee, 0);
    tg_u256 spent;
    tg_u256_zero(&spent);
    if (p) spent = p->spent;
    if (tg_u256_sub(&r, &k->per_payee, &spent)) tg_u256_zero(&r);
    if (!*bounded || tg_u256_cmp(&r, room) < 0) *room = r;
    *bounded = 1;
  }
}

static flight *flight_get(tg_client *c, const tg_hash *id) {
  for (size_t i = 0; i < c->n_fl; i++)
    if (memcmp(c->fl[i].id.b, id->b, 32) == 0) return &c->fl[i];
  if (c->n_fl == MAX_CHANNELS) return NULL;
  flight *f = &c->fl[c->n_fl++];
  memset(f, 0, sizeof *f);
  f->id = *id;
  return f;
}

static chan_rec *chan_find_id(state *s, const tg_hash *id) {
  for (size_t i = 0; i < s->n_ch; i++)
    if (memcmp(s->ch[i].ch.id.b, id->b, 32) == 0) return &s->ch[i];
  return NULL;
}

/* A channel of ours matching the terms. */
static chan_rec *chan_match(tg_client *c, const tg_x402_requirements *t) {
  for (size_t i = 0; i < c->st.n_ch; i++) {
    const tg_client_channel *ch = &c->st.ch[i].ch;
    if (ch->chain_id == t->chain_id && tg_address_eq(&ch->contract, &t->channel_contract) &&
        tg_address_eq(&ch->config.payer, &c->payer) &&
        tg_address_eq(&ch->config.receiver, &t->pay_to) &&
        tg_address_eq(&ch->config.receiver_authorizer, &t->receiver_authorizer) &&
        tg_address_eq(&ch->config.token, &t->asset) &&
        ch->config.withdraw_delay == t->withdraw_delay && !ch->withdraw_at)
      return &c->st.ch[i];
  }
  return NULL;
}

static payid_rec *payid_find(state *s, const char *id) {
  for (size_t i = 0; i < s->n_pid; i++)
    if (strcmp(s->pid[i].id, id) == 0) return &s->pid[i];
  return NULL;
}

/* Adds a record, dropping the oldest finished one when full. */
static payid_rec *payid_add(state *s, const char *id) {
  if (s->n_pid == MAX_PAYIDS) {
    size_t k = 0;
    while (k < s->n_pid && !s->pid[k].done) k++;
    if (k == s->n_pid) k = 0;
    free(s->pid[k].header);
    memmove(&s->pid[k], &s->pid[k + 1], (s->n_pid - k - 1) * sizeof s->pid[0]);
    s->n_pid--;
  }
  payid_rec *p = &s->pid[s->n_pid++];
  memset(p, 0, sizeof *p);
  snprintf(p->id, sizeof p->id, "%s", id);
  return p;
}

static void payid_drop(state *s, const char *id) {
  for (size_t i = 0; i < s->n_pid; i++) {
    if (strcmp(s->pid[i].id, id) != 0) continue;
    free(s->pid[i].header);
    memmove(&s->pid[i], &s->pid[i + 1], (s->n_pid - i - 1) * sizeof s->pid[0]);
    s->n_pid--;
    return;
  }
}

static int channel_domain_of(tg_hash *dom, const tg_client_channel *ch) {
  return tg_channel_domain(dom, ch->chain_id, &ch->contract);
}

/*
 * Signs a voucher covering charged + in flight + price (plus headroom, within
 * the deposit and the lifetime caps) when the signed ceiling is short.
 * TG_ECHANNEL_SHORT when the deposit cannot cover the call.
 */
static int voucher_for(tg_client *c, chan_rec *r, flight *f, const tg_u256 *price,
                       const tg_address *payee) {
  tg_client_channel *ch = &r->ch;
  tg_u256 need, want, head;
  if (tg_u256_add(&need, &ch->charged, &f->inflight) || tg_u256_add(&need, &need, price))
    return TG_ERANGE;
  if (tg_u256_cmp(&need, &ch->deposit) > 0) return TG_ECHANNEL_SHORT;
  if (tg_u256_cmp(&ch->signed_max, &need) >= 0 && r->sig.len) return 0;
  if (tg_u256_mul_u64(&head, price, c->o.headroom_calls) || tg_u256_add(&want, &need, &head))
    want = ch->deposit;
  if (tg_u256_cmp(&want, &ch->deposit) > 0) want = ch->deposit;
  tg_u256 room, lim;
  int bounded;
  caps_room(c, payee, &room, &bounded);
  if (bounded && tg_u256_add(&lim, &ch->charged, &room) == 0 && tg_u256_cmp(&want, &lim) > 0)
    want = tg_u256_cmp(&lim, &need) > 0 ? lim : need;
  tg_hash dom;
  tg_sig sig;
  int rc = channel_domain_of(&dom, ch);
  if (!rc) rc = tg_channel_voucher_sign(&sig, c->key, &dom, &ch->id, &want);
  if (rc) return rc;
  memcpy(r->sig.b, sig.b, 65);
  r->sig.len = 65;
  ch->signed_max = want;
  char d[TG_U256_DEC_MAX];
  tg_u256_to_dec(&want, d);
  logf_(c, "* signed a voucher: ceiling %s", d);
  return 0;
}

static void random_payid(char out[TG_CLIENT_PAYID_MAX + 1]) {
  uint8_t r[16];
  randombytes_buf(r, sizeof r);
  memcpy(out, "pay_", 4);
  tg_hex_encode(out + 4, r, sizeof r, 0);
}

static int valid_payid(const char *s) {
  size_t n = strlen(s);
  if (n < 16 || n > TG_CLIENT_PAYID_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

static int exact_payment(tg_client *c, tg_x402_payment *pm, const tg_x402_requirements *t) {
  tg_x402_exact *x = &pm->u.exact;
  uint64_t now = (uint64_t)time(NULL);
  uint64_t win = t->max_timeout_seconds ? t->max_timeout_seconds : 60;
  x->from = c->payer;
  x->to = t->pay_to;
  x->value = t->amount;
  x->valid_after = now > 600 ? now - 600 : 0;
  x->valid_before = now + win;
  randombytes_buf(x->nonce.b, 32);
  tg_eip712_domain d;
  memset(&d, 0, sizeof d);
  d.fields = TG_EIP712_DOMAIN_STANDARD;
  d.name = (tg_str){t->token_name, strlen(t->token_name)};
  d.version = (tg_str){t->token_version, strlen(t->token_version)};
  tg_u256_from_u64(&d.chain_id, t->chain_id);
  d.verifying_contract = t->asset;
  tg_hash dom;
  int rc = tg_eip712_domain_separator(&dom, &d);
  if (rc) return rc;
  tg_eip3009_authorization a;
  a.from = x->from;
  a.to = x->to;
  a.value = x->value;
  tg_u256_from_u64(&a.valid_after, x->valid_after);
  tg_u256_from_u64(&a.valid_before, x->valid_before);
  a.nonce = x->nonce;
  tg_sig sig;
  rc = tg_eip3009_transfer_sign(&sig, c->key, &dom, &a);
  if (rc) return rc;
  memcpy(x->signature.b, sig.b, 65);
  x->signature.len = 65;
  return 0;
}

/* The token's EIP-712 domain (EIP-3009) from the terms. */
static int token_domain(tg_hash *dom, const tg_x402_requirements *t) {
  tg_eip712_domain d;
  memset(&d, 0, sizeof d);
  d.fields = TG_EIP712_DOMAIN_STANDARD;
  d.name = (tg_str){t->token_name, strlen(t->token_name)};
  d.version = (tg_str){t->token_version, strlen(t->token_version)};
  tg_u256_from_u64(&d.chain_id, t->chain_id);
  d.verifying_contract = t->asset;
  return tg_eip712_domain_separator(dom, &d);
}

#define DEPOSIT_VALIDITY 3600

/*
 * Signs a gasless deposit of `amount` into r's channel: an EIP-3009
 * ReceiveWithAuthorization from the payer to the channel contract whose nonce
 * is keccak256(channelId, salt) (TollgateChannels.depositAuthorizationNonce),
 * valid for an hour. The amount counts in the deposit at once (vouchers may
 * be signed against it) and stays pending until a paid answer confirms it.
 */
static int deposit_sign(tg_client *c, chan_rec *r, const tg_x402_requirements *t,
                        const tg_u256 *amount) {
  tg_client_channel *ch = &r->ch;
  uint64_t now = (uint64_t)time(NULL);
  tg_eip3009_authorization a;
  a.from = c->payer;
  a.to = ch->contract;
  a.value = *amount;
  tg_u256_from_u64(&a.valid_after, now > 600 ? now - 600 : 0);
  tg_u256_from_u64(&a.valid_before, now + DEPOSIT_VALIDITY);
  tg_hash salt;
  randombytes_buf(salt.b, 32);
  uint8_t pre[64];
  memcpy(pre, ch->id.b, 32);
  memcpy(pre + 32, salt.b, 32);
  tg_keccak256(&a.nonce, pre, sizeof pre);
  tg_hash dom;
  tg_sig sig;
  int rc = token_domain(&dom, t);
  if (!rc) rc = tg_eip3009_receive_sign(&sig, c->key, &dom, &a);
  if (rc) return rc;
  tg_u256 dep;
  int topup = tg_u256_is_zero(&ch->pending_deposit);
  if (topup) {
    if (tg_u256_add(&dep, &ch->deposit, amount)) return TG_ERANGE;
    ch->deposit = dep;
    ch->pending_deposit = *amount;
  }
  r->dep_salt = salt;
  r->dep_after = now > 600 ? now - 600 : 0;
  r->dep_before = now + DEPOSIT_VALIDITY;
  memcpy(r->dep_sig.b, sig.b, 65);
  r->dep_sig.len = 65;
  char d[TG_U256_DEC_MAX];
  tg_u256_to_dec(amount, d);
  logf_(c, "* signed a gasless deposit of %s (EIP-3009 ReceiveWithAuthorization)", d);
  return 0;
}

void tg_client_channel_salt(tg_hash *salt) {
  memset(salt->b, 0, 24);
  randombytes_buf(salt->b + 24, 8);
}

/* A new channel record for the terms (random salt, nothing deposited yet), in the state. */
static chan_rec *chan_new(tg_client *c, const tg_x402_requirements *t) {
  if (c->st.n_ch == MAX_CHANNELS) return NULL;
  chan_rec r;
  memset(&r, 0, sizeof r);
  r.ch.chain_id = t->chain_id;
  r.ch.contract = t->channel_contract;
  r.ch.config.payer = c->payer;
  r.ch.config.receiver = t->pay_to;
  r.ch.config.receiver_authorizer = t->receiver_authorizer;
  r.ch.config.token = t->asset;
  r.ch.config.withdraw_delay = t->withdraw_delay;
  tg_client_channel_salt(&r.ch.config.salt);
  tg_hash dom;
  if (channel_domain_of(&dom, &r.ch) || tg_channel_id(&r.ch.id, &dom, &r.ch.config)) return NULL;
  c->st.ch[c->st.n_ch] = r;
  return &c->st.ch[c->st.n_ch++];
}

/* A decoded corrective 402: the gateway's view of our channel. */
typedef struct {
  int ok;
  tg_hash id;
  tg_u256 charged;
  tg_u256 signed_max;
  tg_x402_sig sig;
} correction;

static void correction_parse(correction *out, const char *header) {
  memset(out, 0, sizeof *out);
  tg_buf raw;
  tg_buf_init(&raw, TG_X402_HEADER_MAX);
  if (tg_base64_decode(&raw, header, strlen(header)) != 0) goto done;
  json_t *root = json_loadb((const char *)raw.data, raw.len, 0, NULL);
  size_t i;
  json_t *a;
  json_array_foreach(json_object_get(root, "accepts"), i, a) {
    const char *sch = json_string_value(json_object_get(a, "scheme"));
    if (!sch || strcmp(sch, TG_X402_SCHEME_CHANNEL) != 0) continue;
    json_t *extra = json_object_get(a, "extra");
    json_t *cs = json_object_get(extra, "channelState");
    json_t *vs = json_object_get(extra, "voucherState");
    const char *sig = json_string_value(json_object_get(vs, "signature"));
    size_t sl = 0;
    if (!cs || !vs || !sig || g_hex(cs, "channelId", out->id.b, 32) ||
        g_u256(cs, "chargedCumulativeAmount", &out->charged) ||
        g_u256(vs, "signedMaxClaimable", &out->signed_max) ||
        tg_hex_decode(out->sig.b, sizeof out->sig.b, &sl, sig, strlen(sig), TG_HEX_PREFIX_REQUIRED))
      break;
    out->sig.len = sl;
    out->ok = 1;
    break;
  }
  json_decref(root);
done:
  tg_buf_cleanup(&raw);
}

/*
 * Adopts a corrective 402's charged total when its voucher is one our key
 * signed for that channel and covers the total. Returns 0 when adopted.
 */
static int correction_adopt(tg_client *c, const correction *k) {
  chan_rec *r = chan_find_id(&c->st, &k->id);
  if (!r || !k->ok) return TG_ECLIENT_CORRECTION;
  tg_hash dom;
  int rc = channel_domain_of(&dom, &r->ch);
  if (rc) return rc;
  rc = tg_channel_voucher_check(&dom, &k->id, &k->signed_max, &k->sig, &c->payer);
  if (rc) return TG_ECLIENT_CORRECTION;
  if (tg_u256_cmp(&k->charged, &k->signed_max) > 0) return TG_ECLIENT_CORRECTION;
  if (tg_u256_cmp(&k->charged, &r->ch.charged) > 0) r->ch.charged = k->charged;
  if (tg_u256_cmp(&k->signed_max, &r->ch.signed_max) > 0) {
    r->ch.signed_max = k->signed_max;
    r->sig = k->sig;
  }
  return 0;
}

/* ---- a call --------------------------------------------------------------------- */

void tg_client_response_cleanup(tg_client_response *r) {
  if (!r) return;
  tg_buf_cleanup(&r->body);
  tg_buf_cleanup(&r->head);
  memset(r, 0, sizeof *r);
}

static void take_body(tg_client_response *out, http_answer *a) {
  tg_buf_cleanup(&out->body);
  out->body = a->body;
  tg_buf_init(&a->body, BODY_MAX);
  tg_buf_cleanup(&out->head);
  out->head = a->head;
  tg_buf_init(&a->head, HEAD_MAX);
  out->status = a->status;
  out->streamed = a->streaming;
}

static void log_header(tg_client *c, const char *name, const char *b64) {
  if (!c->o.log || !b64) return;
  tg_buf raw;
  tg_buf_init(&raw, TG_X402_HEADER_MAX);
  if (tg_base64_decode(&raw, b64, strlen(b64)) == 0 && raw.len)
    logf_(c, "* %s: %.*s", name, (int)raw.len, (const char *)raw.data);
  tg_buf_cleanup(&raw);
}

/* What one payment attempt reserved, to settle after the answer. */
typedef struct {
  int reserved;       /* counters hold `price` for this payment */
  tg_x402_scheme scheme;
  tg_u256 price;
  tg_address payee;
  tg_hash channel;
  int in_flight;
  int carrying;       /* the payment carries the channel's pending gasless deposit */
} attempt;

/* Picks and signs; TG_ECLIENT_CAP / TG_ECLIENT_NO_SCHEME before anything is signed. */
static int prepare(tg_client *c, tg_client_response *out, attempt *at, char **header,
                   const tg_x402_required_info *info, const char *payid, int own_id) {
  *header = NULL;
  memset(at, 0, sizeof *at);
  const tg_x402_requirements *ex = NULL, *chn = NULL;
  for (size_t i = 0; i < info->n_accepts; i++) {
    if (info->accepts[i].scheme == TG_X402_EXACT && !ex) ex = &info->accepts[i];
    if (info->accepts[i].scheme == TG_X402_CHANNEL && !chn) chn = &info->accepts[i];
  }
  int rc = state_begin(c);
  if (rc) return rc;
  window_roll(&c->st, (uint64_t)time(NULL));
  tg_x402_payment *pm = calloc(1, sizeof *pm);
  if (!pm) {
    (void)state_end(c, 0);
    return TG_ENOMEM;
  }
  snprintf(pm->payment_id, sizeof pm->payment_id, "%s", payid);
  snprintf(pm->resource_url, sizeof pm->resource_url, "%s", info->resource_url);
  chan_rec *r = (c->o.allow_channel && chn) ? chan_match(c, chn) : NULL;
  /* Gasless policy: a new channel is opened by the deposit its first payment carries. */
  int gas = c->o.gasless && chn && c->o.allow_channel && !tg_u256_is_zero(&c->o.open_deposit) &&
            tg_u256_cmp(&c->o.open_deposit, &chn->min_deposit) >= 0;
  if (!r && gas) {
    const char *broken0 = caps_check(c, &chn->amount, &chn->pay_to);
    if (broken0) {
      snprintf(out->error, sizeof out->error, "the %s cap would be exceeded", broken0);
      rc = TG_ECLIENT_CAP;
      goto out;
    }
    if ((r = chan_new(c, chn)) == NULL) {
      rc = TG_ETOOBIG;
      goto out;
    }
    if ((rc = deposit_sign(c, r, chn, &c->o.open_deposit)) != 0) goto out;
  }
  const tg_x402_requirements *t = r ? chn : (c->o.allow_exact ? ex : NULL);
  if (!t) {
    rc = TG_ECLIENT_NO_SCHEME;
    goto out;
  }
  const char *broken = caps_check(c, &t->amount, &t->pay_to);
  if (broken) {
    snprintf(out->error, sizeof out->error, "the %s cap would be exceeded", broken);
    rc = TG_ECLIENT_CAP;
    goto out;
  }
  pm->accepted = *t;
  if (r) {
    flight *f = flight_get(c, &r->ch.id);
    if (!f) {
      rc = TG_ENOMEM;
      goto out;
    }
    rc = voucher_for(c, r, f, &t->amount, &t->pay_to);
    if (rc == TG_ECHANNEL_SHORT && gas && tg_u256_is_zero(&r->ch.pending_deposit)) {
      /* The deposit is used up: top it up, gasless, with this payment. */
      if ((rc = deposit_sign(c, r, chn, &c->o.open_deposit)) != 0) goto out;
      rc = voucher_for(c, r, f, &t->amount, &t->pay_to);
    }
    int carry = 0;
    if (rc == 0 && !tg_u256_is_zero(&r->ch.pending_deposit)) {
      /* One call at a time carries the pending deposit; others go on when the funds
       * already there cover them, else wait for it (TG_EBUSY). */
      tg_u256 need, old;
      if (tg_u256_add(&need, &r->ch.charged, &f->inflight) || tg_u256_add(&need, &need, &t->amount) ||
          tg_u256_sub(&old, &r->ch.deposit, &r->ch.pending_deposit)) {
        rc = TG_ERANGE;
        goto out;
      }
      if (!f->carrying_deposit) {
        carry = 1;
        if ((uint64_t)time(NULL) + 60 > r->dep_before &&
            (rc = deposit_sign(c, r, chn, &r->ch.pending_deposit)) != 0)
          goto out;
      } else if (tg_u256_cmp(&need, &old) > 0) {
        rc = TG_EBUSY;
        goto out;
      }
    }
    if (rc == TG_ECHANNEL_SHORT && c->o.allow_exact && ex) {
      logf_(c, "* the channel's deposit is used up: paying exact");
      t = ex;
      r = NULL;
      pm->accepted = *t;
      broken = caps_check(c, &t->amount, &t->pay_to);
      if (broken) {
        snprintf(out->error, sizeof out->error, "the %s cap would be exceeded", broken);
        rc = TG_ECLIENT_CAP;
        goto out;
      }
    } else if (rc) {
      goto out;
    } else {
      tg_x402_channel *v = &pm->u.channel;
      v->type = TG_X402_CHANNEL_VOUCHER;
      v->config = r->ch.config;
      v->channel_id = r->ch.id;
      v->max_claimable = r->ch.signed_max;
      v->voucher_signature = r->sig;
      if (carry) {
        v->type = TG_X402_CHANNEL_DEPOSIT;
        v->has_deposit = 1;
        v->deposit_amount = r->ch.pending_deposit;
        v->deposit_valid_after = r->dep_after;
        v->deposit_valid_before = r->dep_before;
        v->deposit_nonce = r->dep_salt;
        v->deposit_signature = r->dep_sig;
        f->carrying_deposit = 1;
        at->carrying = 1;
      }
      if (tg_u256_add(&f->inflight, &f->inflight, &t->amount)) {
        rc = TG_ERANGE;
        goto out;
      }
      at->in_flight = 1;
      at->channel = r->ch.id;
    }
  }
  if (!r && (rc = exact_payment(c, pm, t)) != 0) goto out;
  tg_buf b;
  tg_buf_init(&b, TG_X402_HEADER_MAX);
  rc = tg_x402_payment_encode(&b, pm);
  if (rc) {
    tg_buf_cleanup(&b);
    goto unflight;
  }
  *header = (char *)tg_buf_steal(&b, NULL);
  payid_rec *p = payid_find(&c->st, payid);
  if (!p) p = payid_add(&c->st, payid);
  free(p->header);
  p->header = strdup(*header);
  if (!p->header) {
    payid_drop(&c->st, payid);
    free(*header);
    *header = NULL;
    rc = TG_ENOMEM;
    goto unflight;
  }
  p->price = t->amount;
  p->payee = t->pay_to;
  p->done = 0;
  p->own_id = own_id;
  p->at = (uint64_t)time(NULL);
  spend_apply(&c->st, &t->pay_to, &t->amount, +1);
  at->reserved = 1;
  at->scheme = t->scheme;
  at->price = t->amount;
  at->payee = t->pay_to;
  out->scheme = t->scheme;
  out->price = t->amount;
  goto out;
unflight:
  if (at->in_flight) {
    flight *f = flight_get(c, &at->channel);
    if (f && tg_u256_sub(&f->inflight, &f->inflight, &t->amount)) tg_u256_zero(&f->inflight);
    if (f && at->carrying) f->carrying_deposit = 0;
    at->in_flight = 0;
    at->carrying = 0;
  }
out:
  if ((rc == TG_ECHANNEL_SHORT || rc == TG_ECLIENT_NO_SCHEME) && c->o.gasless && chn && !gas &&
      !tg_u256_is_zero(&c->o.open_deposit) && tg_u256_cmp(&c->o.open_deposit, &chn->min_deposit) < 0) {
    char md[TG_U256_DEC_MAX];
    tg_u256_to_dec(&chn->min_deposit, md);
    snprintf(out->error, sizeof out->error,
             "the gasless deposit (--open-channel) is below the gateway's minDeposit %s", md);
  }
  sodium_memzero(pm, sizeof *pm);
  free(pm);
  {
    int src = state_end(c, rc == 0 || rc == TG_ECHANNEL_SHORT || rc == TG_EBUSY ? 1 : (r != NULL));
    if (!rc && src) {
      rc = src;
      free(*header);
      *header = NULL;
    }
  }
  return rc;
}

/*
 * Settles an attempt after the answer: `charged` (NULL when nothing was
 * charged), the channel's confirmed cumulative, and whether the payment is
 * final (done) or may be retried with the same header (kept).
 */
static int settle(tg_client *c, const attempt *at, const char *payid, const tg_u256 *charged,
                  const tg_x402_settle_response *sr, int keep, const correction *corr,
                  int deposit_refused) {
  int rc = state_begin(c);
  if (rc) return rc;
  if (at->in_flight) {
    flight *f = flight_get(c, &at->channel);
    if (f && tg_u256_sub(&f->inflight, &f->inflight, &at->price)) tg_u256_zero(&f->inflight);
    if (f && at->carrying) f->carrying_deposit = 0;
  }
  if (at->carrying) {
    chan_rec *dr = chan_find_id(&c->st, &at->channel);
    if (dr && charged) {
      tg_u256_zero(&dr->ch.pending_deposit); /* the gateway admitted it: the deposit landed */
    } else if (dr && deposit_refused) {
      /* Refused before any transaction: the authorization was not used; forget it. */
      if (tg_u256_sub(&dr->ch.deposit, &dr->ch.deposit, &dr->ch.pending_deposit))
        tg_u256_zero(&dr->ch.deposit);
      tg_u256_zero(&dr->ch.pending_deposit);
    }
  }
  payid_rec *p = payid_find(&c->st, payid);
  int counted = at->reserved || (p && !p->done);
  tg_u256 held = at->reserved ? at->price : (p ? p->price : at->price);
  tg_address payee = at->reserved ? at->payee : (p ? p->payee : at->payee);
  if (charged) {
    if (counted) {
      spend_apply(&c->st, &payee, &held, -1);
      spend_apply(&c->st, &payee, charged, +1);
    }
    if (p && p->own_id) {
      /* A generated id is only ever resent within this call or, when its outcome was
       * unknown, by a caller told the id: once the charge is known nobody can repeat it,
       * so its record (the whole header) goes, which keeps state.json small. */
      payid_drop(&c->st, payid);
    } else if (p) {
      p->done = 1;
      p->price = *charged;
    }
  } else if (!keep) {
    if (counted) spend_apply(&c->st, &payee, &held, -1);
    payid_drop(&c->st, payid);
  }
  if (sr && sr->has_channel) {
    chan_rec *r = chan_find_id(&c->st, &sr->channel_id);
    if (r && tg_u256_cmp(&sr->channel_charged_cumulative, &r->ch.charged) > 0 &&
        tg_u256_cmp(&sr->channel_charged_cumulative, &r->ch.signed_max) <= 0)
      r->ch.charged = sr->channel_charged_cumulative;
  }
  int adopt = corr ? correction_adopt(c, corr) : 0;
  rc = state_end(c, 1);
  return rc ? rc : adopt;
}

/* The open-a-channel policy: opens one for the offered terms when none fits (errors logged). */
static void maybe_open(tg_client *c, const tg_x402_required_info *info) {
  if (!c->o.allow_channel || !c->rpc_url || tg_u256_is_zero(&c->o.open_deposit) || c->o.gasless)
    return;
  const tg_x402_requirements *t = NULL;
  for (size_t i = 0; i < info->n_accepts && !t; i++)
    if (info->accepts[i].scheme == TG_X402_CHANNEL) t = &info->accepts[i];
  if (!t || tg_u256_cmp(&c->o.open_deposit, &t->min_deposit) < 0) return;
  pthread_mutex_lock(&c->open_mu);
  if (state_begin(c) == 0) {
    chan_rec *r = chan_match(c, t);
    int have = r != NULL, short_ = 0;
    tg_hash id;
    if (r) {
      /* Used up (charged + in flight + price beyond the deposit): top up on-chain first. */
      flight *f = flight_get(c, &r->ch.id);
      tg_u256 need;
      id = r->ch.id;
      short_ = f && tg_u256_add(&need, &r->ch.charged, &f->inflight) == 0 &&
               tg_u256_add(&need, &need, &t->amount) == 0 && tg_u256_cmp(&need, &r->ch.deposit) > 0;
    }
    (void)state_end(c, 0);
    if (short_) {
      logf_(c, "* the channel's deposit is used up: topping it up on-chain");
      int rc = tg_client_channel_topup(c, NULL, c->rpc_url, &id, &c->o.open_deposit);
      if (rc) logf_(c, "* the top-up failed: %s", tg_strerror(rc));
    }
    if (!have) {
      tg_hash salt;
      tg_client_channel_salt(&salt);
      logf_(c, "* opening a channel on-chain");
      int rc = tg_client_channel_open(c, NULL, c->rpc_url, t, &salt, &c->o.open_deposit);
      if (rc) logf_(c, "* opening the channel failed: %s", tg_strerror(rc));
    }
  }
  pthread_mutex_unlock(&c->open_mu);
}

int tg_client_fetch(tg_client *c, tg_client_response *out, const tg_client_request *req) {
  memset(out, 0, sizeof *out);
  tg_buf_init(&out->body, BODY_MAX);
  tg_buf_init(&out->head, HEAD_MAX);
  if (!req || !req->url) return TG_EINVAL;
  if (req->payment_id && !valid_payid(req->payment_id)) return TG_EINVAL;
  if (req->payment_id)
    snprintf(out->payment_id, sizeof out->payment_id, "%s", req->payment_id);
  else
    random_payid(out->payment_id);
  http_answer a;
  char *header = NULL;
  int rc;
  /* A retry of a known payment sends the stored header again. */
  if ((rc = state_begin(c)) != 0) return rc;
  payid_rec *known = payid_find(&c->st, out->payment_id);
  if (known) {
    header = strdup(known->header);
    out->price = known->price;
  }
  (void)state_end(c, 0);
  if (known && !header) return TG_ENOMEM;
  attempt at;
  memset(&at, 0, sizeof at);
  int tries = 0;
  if (header) {
    out->replayed = 1;
    logf_(c, "* resending the payment of %s", out->payment_id);
    goto paid;
  }
  rc = http_do(c, &a, req, NULL);
  if (rc) {
    out->streamed = a.streaming;
    goto done_a;
  }
  logf_(c, "< %ld (unpaid)", a.status);
  if (a.status != 402 || !a.required) {
    take_body(out, &a);
    goto done_a;
  }
  log_header(c, "PAYMENT-REQUIRED", a.required);
again:;
  tg_x402_required_info *info = calloc(1, sizeof *info);
  if (!info) {
    rc = TG_ENOMEM;
    goto done_a;
  }
  rc = tg_x402_required_decode(info, a.required, strlen(a.required));
  if (!rc && tries == 0) maybe_open(c, info);
  if (!rc) {
    /* TG_EBUSY: another call carries this channel's pending deposit; wait for it. */
    for (long waited = 0;; waited += 50) {
      rc = prepare(c, out, &at, &header, info, out->payment_id, req->payment_id == NULL);
      if (rc != TG_EBUSY || waited >= c->o.timeout_ms) break;
      usleep(50 * 1000);
    }
  }
  free(info);
  if (rc) {
    take_body(out, &a);
    goto done_a;
  }
  answer_cleanup(&a);
paid:
  tries++;
  out->paid = 1;
  logf_(c, "> PAYMENT-SIGNATURE (payment-identifier %s)", out->payment_id);
  log_header(c, "PAYMENT-SIGNATURE", header);
  rc = http_do(c, &a, req, header);
  free(header);
  header = NULL;
  if (rc) {
    /* The gateway may have charged: keep the reservation and the header for a retry. */
    out->streamed = a.streaming;
    (void)settle(c, &at, out->payment_id, NULL, NULL, 1, NULL, 0);
    goto done_a;
  }
  logf_(c, "< %ld (paid)", a.status);
  if (a.response || (a.status >= 200 && a.status < 300 && a.tr.found)) {
    tg_x402_settle_response sr;
    char why[128];
    if (a.response) {
      log_header(c, "PAYMENT-RESPONSE", a.response);
      rc = tg_x402_settle_response_decode(&sr, why, sizeof why, a.response, strlen(a.response));
    } else {
      /* A stream: its charge is the `: x402-charge` trailer (docs/PROTOCOL.md 3.6). */
      char d[TG_U256_DEC_MAX];
      tg_u256_to_dec(&a.tr.charged, d);
      logf_(c, "* stream trailer: charged %s", d);
      memset(&sr, 0, sizeof sr);
      sr.success = 1;
      sr.has_charged = 1;
      sr.charged = a.tr.charged;
      if (at.scheme == TG_X402_CHANNEL && at.in_flight && a.tr.has_cum) {
        sr.has_channel = 1;
        sr.channel_id = at.channel;
        sr.channel_charged_cumulative = a.tr.cum;
      }
      out->trailer = 1;
    }
    if (rc || !sr.success || !sr.has_charged) {
      (void)settle(c, &at, out->payment_id, NULL, NULL, 1, NULL, 0);
      take_body(out, &a);
      rc = rc ? rc : TG_ECLIENT_REFUSED;
      goto done_a;
    }
    out->charged = sr.charged;
    out->has_transaction = sr.has_transaction;
    out->transaction = sr.transaction;
    out->has_channel = sr.has_channel;
    out->channel_id = sr.channel_id;
    out->charged_cumulative = sr.channel_charged_cumulative;
    rc = settle(c, &at, out->payment_id, &sr.charged, &sr, 0, NULL, 0);
    take_body(out, &a);
    if (!rc && !tg_u256_is_zero(&out->price) && tg_u256_cmp(&sr.charged, &out->price) > 0)
      rc = TG_ECLIENT_OVERCHARGE;
    goto done_a;
  }
  if (a.status == 402 && a.required && at.scheme == TG_X402_CHANNEL && tries < 2) {
    correction k;
    correction_parse(&k, a.required);
    log_header(c, "PAYMENT-REQUIRED", a.required);
    if (k.ok) {
      rc = settle(c, &at, out->payment_id, NULL, NULL, 0, &k, 0);
      if (rc == 0) {
        out->corrected = 1;
        logf_(c, "* adopted the gateway's charged total (corrective 402)");
        goto again;
      }
      take_body(out, &a);
      goto done_a;
    }
  }
  /* Refused: nothing charged. */
  if (a.status >= 400 && a.status < 500) {
    tg_x402_required_info *info2 = calloc(1, sizeof *info2);
    if (info2 && a.required && tg_x402_required_decode(info2, a.required, strlen(a.required)) == 0)
      snprintf(out->error, sizeof out->error, "%s", info2->error);
    else if (a.body.len)
      snprintf(out->error, sizeof out->error, "%.*s", (int)(a.body.len > 200 ? 200 : a.body.len),
               (const char *)a.body.data);
    free(info2);
    /* A deposit refused before submission (its checks) or whose transaction failed. */
    int dep_refused = strstr(out->error, "_deposit_") != NULL || strstr(out->error, "insufficient_funds") != NULL;
    (void)settle(c, &at, out->payment_id, NULL, NULL, 0, NULL, dep_refused);
    rc = a.status == 402 || a.status == 409 ? TG_ECLIENT_REFUSED : 0;
  } else {
    /* 5xx or 2xx without PAYMENT-RESPONSE: the outcome is unknown; keep it for a retry. */
    (void)settle(c, &at, out->payment_id, NULL, NULL, 1, NULL, 0);
  }
  take_body(out, &a);
done_a:
  answer_cleanup(&a);
  return rc;
}

/* ---- channels ----------------------------------------------------------------- */

int tg_client_terms(tg_client *c, tg_x402_requirements *out, const char *url) {
  memset(out, 0, sizeof *out);
  tg_client_request req;
  memset(&req, 0, sizeof req);
  req.url = url;
  http_answer a;
  int rc = http_do(c, &a, &req, NULL);
  if (rc) goto done;
  rc = TG_ECLIENT_NO_SCHEME;
  if (a.status != 402 || !a.required) goto done;
  tg_x402_required_info *info = calloc(1, sizeof *info);
  if (!info) {
    rc = TG_ENOMEM;
    goto done;
  }
  if (tg_x402_required_decode(info, a.required, strlen(a.required)) == 0) {
    for (size_t i = 0; i < info->n_accepts; i++) {
      if (info->accepts[i].scheme != TG_X402_CHANNEL) continue;
      *out = info->accepts[i];
      rc = 0;
      break;
    }
  }
  free(info);
done:
  answer_cleanup(&a);
  return rc;
}

int tg_client_channel_add(tg_client *c, tg_client_channel *out, const tg_x402_requirements *t,
                          const tg_hash *salt, const tg_u256 *deposit) {
  if (out) memset(out, 0, sizeof *out);
  if (t->scheme != TG_X402_CHANNEL) return TG_EINVAL;
  chan_rec r;
  memset(&r, 0, sizeof r);
  r.ch.chain_id = t->chain_id;
  r.ch.contract = t->channel_contract;
  r.ch.config.payer = c->payer;
  r.ch.config.receiver = t->pay_to;
  r.ch.config.receiver_authorizer = t->receiver_authorizer;
  r.ch.config.token = t->asset;
  r.ch.config.withdraw_delay = t->withdraw_delay;
  r.ch.config.salt = *salt;
  r.ch.deposit = *deposit;
  tg_hash dom;
  int rc = channel_domain_of(&dom, &r.ch);
  if (!rc) rc = tg_channel_id(&r.ch.id, &dom, &r.ch.config);
  if (rc) return rc;
  if ((rc = state_begin(c)) != 0) return rc;
  chan_rec *e = chan_find_id(&c->st, &r.ch.id);
  if (e) {
    if (tg_u256_cmp(deposit, &e->ch.deposit) > 0) e->ch.deposit = *deposit;
    r = *e;
  } else if (c->st.n_ch == MAX_CHANNELS) {
    (void)state_end(c, 0);
    return TG_ETOOBIG;
  } else {
    c->st.ch[c->st.n_ch++] = r;
  }
  rc = state_end(c, 1);
  if (!rc && out) *out = r.ch;
  return rc;
}

int tg_client_channels(tg_client *c, tg_client_channel *out, size_t cap, size_t *n) {
  *n = 0;
  int rc = state_begin(c);
  if (rc) return rc;
  for (size_t i = 0; i < c->st.n_ch && i < cap; i++) out[i] = c->st.ch[i].ch;
  *n = c->st.n_ch;
  (void)state_end(c, 0);
  return 0;
}

int tg_client__channel_get(tg_client *c, const tg_hash *id, tg_client_channel *out) {
  memset(out, 0, sizeof *out);
  int rc = state_begin(c);
  if (rc) return rc;
  chan_rec *r = chan_find_id(&c->st, id);
  if (r) *out = r->ch;
  (void)state_end(c, 0);
  return r ? 0 : TG_ENOTFOUND;
}

int tg_client__channel_update(tg_client *c, const tg_hash *id, const tg_u256 *add,
                              const tg_u256 *set, uint64_t withdraw_at, tg_client_channel *out) {
  int rc = state_begin(c);
  if (rc) return rc;
  chan_rec *r = chan_find_id(&c->st, id);
  if (!r) {
    (void)state_end(c, 0);
    return TG_ENOTFOUND;
  }
  if (add && tg_u256_add(&r->ch.deposit, &r->ch.deposit, add)) {
    (void)state_end(c, 0);
    return TG_ERANGE;
  }
  if (set) r->ch.deposit = *set;
  r->ch.withdraw_at = withdraw_at;
  if (out) *out = r->ch;
  return state_end(c, 1);
}

/* ---- cooperative refund ------------------------------------------------------------ */

int tg_client_channel_refund(tg_client *c, tg_client_channel *out, const char *url,
                             const tg_hash *id, tg_u256 *refunded, tg_hash *tx) {
  if (out) memset(out, 0, sizeof *out);
  tg_u256_zero(refunded);
  memset(tx, 0, sizeof *tx);
  if (!url) return TG_EINVAL;
  /* The gateway's origin: scheme://host[:port] of the URL. */
  const char *hs = strstr(url, "://");
  if (!hs) return TG_EINVAL;
  const char *pe = strchr(hs + 3, '/');
  size_t ol = pe ? (size_t)(pe - url) : strlen(url);
  char endpoint[1024];
  if (ol + 16 >= sizeof endpoint) return TG_EINVAL;
  snprintf(endpoint, sizeof endpoint, "%.*s/channel/refund", (int)ol, url);
  int rc = state_begin(c);
  if (rc) return rc;
  chan_rec *r = chan_find_id(&c->st, id);
  if (!r) {
    (void)state_end(c, 0);
    return TG_ENOTFOUND;
  }
  int save = 0;
  if (!r->sig.len) { /* no voucher yet: sign one for what was charged (it authenticates us) */
    tg_hash dom;
    tg_sig sig;
    if ((rc = channel_domain_of(&dom, &r->ch)) == 0 &&
        (rc = tg_channel_voucher_sign(&sig, c->key, &dom, &r->ch.id, &r->ch.charged)) == 0) {
      memcpy(r->sig.b, sig.b, 65);
      r->sig.len = 65;
      r->ch.signed_max = r->ch.charged;
      save = 1;
    }
  }
  tg_x402_payment *pm = calloc(1, sizeof *pm);
  if (!pm) rc = TG_ENOMEM;
  tg_buf hb;
  tg_buf_init(&hb, TG_X402_HEADER_MAX);
  if (!rc) {
    tg_x402_requirements *t = &pm->accepted;
    t->scheme = TG_X402_CHANNEL;
    t->chain_id = r->ch.chain_id;
    t->asset = r->ch.config.token;
    t->pay_to = r->ch.config.receiver;
    t->receiver_authorizer = r->ch.config.receiver_authorizer;
    t->withdraw_delay = r->ch.config.withdraw_delay;
    t->channel_contract = r->ch.contract;
    tg_x402_channel *v = &pm->u.channel;
    v->type = TG_X402_CHANNEL_REFUND;
    v->config = r->ch.config;
    v->channel_id = r->ch.id;
    v->max_claimable = r->ch.signed_max;
    v->voucher_signature = r->sig;
    rc = tg_x402_payment_encode(&hb, pm);
  }
  free(pm);
  int src = state_end(c, save);
  if (!rc) rc = src;
  if (rc) {
    tg_buf_cleanup(&hb);
    return rc;
  }
  char *header = (char *)tg_buf_steal(&hb, NULL);
  tg_client_request req;
  memset(&req, 0, sizeof req);
  req.method = "POST";
  req.url = endpoint;
  req.body = "{}";
  req.body_len = 2;
  http_answer a;
  logf_(c, "> POST %s (refund payload)", endpoint);
  rc = http_do(c, &a, &req, header);
  free(header);
  if (rc) goto done;
  logf_(c, "< %ld %.*s", a.status, (int)(a.body.len > 300 ? 300 : a.body.len), (const char *)a.body.data);
  json_t *j = json_loadb((const char *)a.body.data, a.body.len, 0, NULL);
  if (a.status == 409 && j && json_string_value(json_object_get(j, "error")) &&
      strcmp(json_string_value(json_object_get(j, "error")), "nothing_to_refund") == 0) {
    rc = TG_ECHANNEL_SHORT;
  } else if (a.status != 200 || !j || g_u256(j, "refunded", refunded) ||
             g_hex(j, "transaction", tx->b, 32)) {
    rc = a.status == 503 ? TG_EUNSUPPORTED : TG_ECLIENT_REFUSED;
  } else {
    tg_u256 bal;
    int has_bal = g_u256(j, "balance", &bal) == 0;
    if ((rc = state_begin(c)) == 0) {
      chan_rec *q = chan_find_id(&c->st, id);
      if (q) {
        if (has_bal) q->ch.deposit = bal;
        else if (tg_u256_sub(&q->ch.deposit, &q->ch.deposit, refunded)) tg_u256_zero(&q->ch.deposit);
        if (out) *out = q->ch;
      }
      rc = state_end(c, 1);
    }
  }
  json_decref(j);
done:
  answer_cleanup(&a);
  return rc;
}

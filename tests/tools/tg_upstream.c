/* tg_upstream: a stand-in OpenAI-compatible upstream for tests and benchmarks (loopback only). */
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

/*
 * usage: tg_upstream PORT [THREADS]
 *
 *   POST /v1/chat/completions   OpenAI-shaped answer; usage.prompt_tokens = words in the
 *                               messages' contents, completion_tokens = max_tokens (default 16).
 *                               "stream": true -> SSE chunks, one word each, then a usage chunk
 *                               when stream_options.include_usage, then "data: [DONE]".
 *   GET  /v1/models             a model list
 *   GET  /fast                  a fixed 128-byte JSON answer (benchmarks)
 *   GET  /bytes?n=N             N bytes of a repeating pattern (max 64 MiB)
 *   *    /echo                  JSON of the request: method, uri, headers, body
 *   *    /status/NNN            an empty answer with that status
 *
 * Control, by request header or by model name:
 *   X-Test-Status: 500 | model "error-500"    answer that status with a JSON error
 *   X-Test-Status: 429 | model "error-429"
 *   X-Test-Delay-Ms: N | model "slow"        wait N ms (slow: 1000) before the first byte
 *   X-Test-Chunk-Delay-Ms: N                  wait N ms between stream chunks
 *   X-Test-Cut-After: K | model "cut"         close the connection after K chunks (cut: 2)
 */

typedef struct {
  struct evhttp_request *req;
  struct event *timer;
  int stream, include_usage;
  long chunk_delay_ms, cut_after;
  long prompt_tokens, completion_tokens;
  long sent;
  int status;
  char model[128];
  char id[40];
  int started;
} job;

static const char fast_body[] =
    "{\"id\":\"fast\",\"object\":\"fast\",\"data\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\"}\n";

static void send_text(struct evhttp_request *req, int status, const char *ctype, const char *text,
                      size_t len) {
  struct evbuffer *b = evbuffer_new();
  evbuffer_add(b, text, len);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
}

static long header_long(struct evhttp_request *req, const char *name, long dflt) {
  const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
  if (v == NULL) return dflt;
  char *end;
  long n = strtol(v, &end, 10);
  return (*end || n < 0) ? dflt : n;
}

static long count_words(const char *s) {
  long n = 0;
  int in = 0;
  for (; *s; s++) {
    int sp = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
    if (!sp && !in) n++;
    in = !sp;
  }
  return n;
}

static void job_free(job *j) {
  if (j->timer) event_free(j->timer);
  free(j);
}

static void send_chunk_text(job *j, const char *text) {
  struct evbuffer *b = evbuffer_new();
  evbuffer_add(b, text, strlen(text));
  evhttp_send_reply_chunk(j->req, b);
  evbuffer_free(b);
}

static void stream_step(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  job *j = arg;
  if (!j->started) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(j->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_send_reply_start(j->req, 200, "OK");
    j->started = 1;
  }
  if (j->cut_after >= 0 && j->sent >= j->cut_after) {
    evhttp_connection_free(evhttp_request_get_connection(j->req));
    job_free(j);
    return;
  }
  char line[1024];
  if (j->sent < j->completion_tokens) {
    snprintf(line, sizeof line,
             "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
             "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%ld \"},"
             "\"finish_reason\":null}]}\n\n",
             j->id, j->model, j->sent);
    send_chunk_text(j, line);
    j->sent++;
  } else {
    snprintf(line, sizeof line,
             "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
             "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
             j->id, j->model);
    send_chunk_text(j, line);
    if (j->include_usage) {
      snprintf(line, sizeof line,
               "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
               "\"model\":\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":%ld,"
               "\"completion_tokens\":%ld,\"total_tokens\":%ld}}\n\n",
               j->id, j->model, j->prompt_tokens, j->completion_tokens,
               j->prompt_tokens + j->completion_tokens);
      send_chunk_text(j, line);
    }
    send_chunk_text(j, "data: [DONE]\n\n");
    evhttp_send_reply_end(j->req);
    job_free(j);
    return;
  }
  struct timeval tv = {j->chunk_delay_ms / 1000, (j->chunk_delay_ms % 1000) * 1000};
  evtimer_add(j->timer, &tv);
}

static void answer_chat(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  job *j = arg;
  if (j->status != 200) {
    char body[256];
    snprintf(body, sizeof body,
             "{\"error\":{\"message\":\"simulated %d\",\"type\":\"test\",\"code\":%d}}\n", j->status,
             j->status);
    send_text(j->req, j->status, "application/json", body, strlen(body));
    job_free(j);
    return;
  }
  if (j->stream) {
    event_free(j->timer);
    j->timer = evtimer_new(evhttp_connection_get_base(evhttp_request_get_connection(j->req)),
                           stream_step, j);
    stream_step(-1, 0, j);
    return;
  }
  size_t cap = 256 + (size_t)j->completion_tokens * 8;
  char *content = malloc(cap);
  size_t n = 0;
  for (long i = 0; i < j->completion_tokens && n + 16 < cap; i++)
    n += (size_t)snprintf(content + n, cap - n, "%sw%ld", i ? " " : "", i);
  content[n] = 0;
  json_t *o = json_pack(
      "{s:s, s:s, s:i, s:s, s:[{s:i, s:{s:s, s:s}, s:s}], s:{s:i, s:i, s:i}}", "id", j->id,
      "object", "chat.completion", "created", 1700000000, "model", j->model, "choices", "index", 0,
      "message", "role", "assistant", "content", content, "finish_reason", "stop", "usage",
      "prompt_tokens", (int)j->prompt_tokens, "completion_tokens", (int)j->completion_tokens,
      "total_tokens", (int)(j->prompt_tokens + j->completion_tokens));
  char *text = json_dumps(o, JSON_COMPACT);
  send_text(j->req, 200, "application/json", text, strlen(text));
  free(text);
  json_decref(o);
  free(content);
  job_free(j);
}

static void chat(struct evhttp_request *req) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  json_t *root = json_loadb((const char *)evbuffer_pullup(in, -1), n, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    send_text(req, 400, "application/json", "{\"error\":{\"message\":\"bad json\"}}\n", 33);
    return;
  }
  job *j = calloc(1, sizeof *j);
  j->req = req;
  j->cut_after = -1;
  static unsigned long counter;
  snprintf(j->id, sizeof j->id, "chatcmpl-%lu", ++counter);
  const char *model = json_string_value(json_object_get(root, "model"));
  snprintf(j->model, sizeof j->model, "%s", model ? model : "test-model");
  j->stream = json_is_true(json_object_get(root, "stream"));
  j->include_usage = json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
  json_t *mt = json_object_get(root, "max_tokens");
  j->completion_tokens = json_is_integer(mt) ? (long)json_integer_value(mt) : 16;
  if (j->completion_tokens < 0 || j->completion_tokens > 100000) j->completion_tokens = 16;
  json_t *msgs = json_object_get(root, "messages");
  size_t i;
  json_t *m;
  json_array_foreach(msgs, i, m) {
    const char *c = json_string_value(json_object_get(m, "content"));
    if (c) j->prompt_tokens += count_words(c);
  }
  json_decref(root);
  j->status = (int)header_long(req, "X-Test-Status", 200);
  long delay = header_long(req, "X-Test-Delay-Ms", 0);
  j->chunk_delay_ms = header_long(req, "X-Test-Chunk-Delay-Ms", 0);
  j->cut_after = header_long(req, "X-Test-Cut-After", -1);
  if (strcmp(j->model, "error-500") == 0) j->status = 500;
  if (strcmp(j->model, "error-429") == 0) j->status = 429;
  if (strcmp(j->model, "slow") == 0 && delay == 0) delay = 1000;
  if (strcmp(j->model, "cut") == 0 && j->cut_after < 0) j->cut_after = 2;
  struct event_base *base = evhttp_connection_get_base(evhttp_request_get_connection(req));
  j->timer = evtimer_new(base, answer_chat, j);
  struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
  evtimer_add(j->timer, &tv);
}

static void echo(struct evhttp_request *req) {
  static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE",
                                      "OPTIONS", "TRACE", "CONNECT", "PATCH"};
  const char *method = "OTHER";
  for (unsigned i = 0; i < 9; i++)
    if (evhttp_request_get_command(req) == (enum evhttp_cmd_type)(1u << i)) method = names[i];
  json_t *h = json_object();
  struct evkeyval *kv;
  TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next) {
    /* Lower-case names; repeated headers joined as HTTP allows. */
    char key[256];
    size_t k = 0;
    for (; kv->key[k] && k + 1 < sizeof key; k++)
      key[k] = (char)((kv->key[k] >= 'A' && kv->key[k] <= 'Z') ? kv->key[k] + 32 : kv->key[k]);
    key[k] = 0;
    json_object_set_new(h, key, json_string(kv->value));
  }
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  json_t *o = json_pack("{s:s, s:s, s:o, s:s%}", "method", method, "uri",
                        evhttp_request_get_uri(req), "headers", h, "body",
                        n ? (const char *)evbuffer_pullup(in, -1) : "", n);
  char *text = json_dumps(o, JSON_COMPACT);
  send_text(req, 200, "application/json", text, strlen(text));
  free(text);
  json_decref(o);
}

static void on_request(struct evhttp_request *req, void *arg) {
  (void)arg;
  const char *uri = evhttp_request_get_uri(req);
  size_t plen = strcspn(uri, "?");
  const char *q = uri[plen] ? uri + plen + 1 : "";
#define IS(p) (plen == strlen(p) && memcmp(uri, p, plen) == 0)
  if (IS("/fast")) {
    send_text(req, 200, "application/json", fast_body, sizeof fast_body - 1);
  } else if (IS("/v1/chat/completions") && evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
    chat(req);
  } else if (IS("/v1/models")) {
    static const char models[] =
        "{\"object\":\"list\",\"data\":[{\"id\":\"test-model\",\"object\":\"model\",\"owned_by\":\"tg\"}]}\n";
    send_text(req, 200, "application/json", models, sizeof models - 1);
  } else if (IS("/bytes")) {
    long n = strncmp(q, "n=", 2) == 0 ? strtol(q + 2, NULL, 10) : 1024;
    if (n < 0 || n > (64l << 20)) n = 1024;
    char *b = malloc((size_t)n + 1);
    for (long i = 0; i < n; i++) b[i] = (char)('a' + (i * 7 + i / 26) % 26);
    send_text(req, 200, "application/octet-stream", b, (size_t)n);
    free(b);
  } else if (plen >= 4 && memcmp(uri, "/echo", 5) == 0) {
    echo(req);
  } else if (plen == 11 && memcmp(uri, "/status/", 8) == 0) {
    int st = (int)strtol(uri + 8, NULL, 10);
    if (st < 200 || st > 599) st = 400;
    char body[64];
    snprintf(body, sizeof body, "{\"status\":%d}\n", st);
    send_text(req, st, "application/json", body, strlen(body));
  } else {
    send_text(req, 404, "application/json", "{\"error\":\"not found\"}\n", 22);
  }
#undef IS
}

static int g_port;

static void *serve(void *arg) {
  (void)arg;
  struct event_base *base = event_base_new();
  struct evhttp *http = evhttp_new(base);
  evhttp_set_gencb(http, on_request, NULL);
  evhttp_set_max_body_size(http, 64 << 20);
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                       EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                       EVHTTP_REQ_OPTIONS);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4096) != 0) {
    perror("tg_upstream: bind");
    exit(1);
  }
  evhttp_accept_socket_with_handle(http, fd);
  event_base_dispatch(base);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: tg_upstream PORT [THREADS]\n");
    return 2;
  }
  g_port = (int)strtol(argv[1], NULL, 10);
  int threads = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 1;
  if (g_port <= 0 || g_port > 65535 || threads < 1 || threads > 64) {
    fprintf(stderr, "tg_upstream: bad port or thread count\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  pthread_t t[64];
  for (int i = 1; i < threads; i++) pthread_create(&t[i], NULL, serve, NULL);
  serve(NULL);
  return 0;
}

/* Watching a client's connection while its answer is prepared by a callback. */
#ifndef TG_HTTP_WATCH_H
#define TG_HTTP_WATCH_H

struct event;
struct evhttp_connection;
struct evhttp_request;
struct tg_worker;

/*
 * A client connection watched while its request is being served and the answer comes from a
 * callback: the paid proxy path (admission, upstream, charge) and the endpoints answered after a
 * store commit or a chain reply (/auth/..., /settle, /channel/refund). libevent frees a request
 * together with its connection; when the connection goes (evhttp's close callback, or EV_CLOSED
 * on the socket, on which the watch frees the connection itself), `req` becomes NULL, the
 * worker stops waiting for the answer to flush, and gone(arg) runs. An answer that arrives later
 * finds NULL and is dropped; the work behind it (store writes, transactions) completes anyway.
 * A request evhttp left behind without a connection is freed by tg_client_watch_release.
 * All on the worker's loop. See docs/ARCHITECTURE.md "Clients that hang up".
 */
typedef struct tg_client_watch {
  struct tg_worker *w;
  struct evhttp_request *req;      /* NULL once the client is gone or the answer was handed over */
  struct evhttp_request *detached; /* a request evhttp left to us to free */
  struct evhttp_connection *evcon;
  struct event *close_ev;
  struct event *lazy_ev;           /* arms close_ev later (tg_client_watch_start's arm_after_ms) */
  int gone;                        /* the client went away before its answer was handed over */
  void (*on_gone)(void *arg);      /* NULL: nothing more to do */
  void *arg;
} tg_client_watch;

/*
 * Starts watching req's connection: the close callback at once (no system call), the EV_CLOSED
 * event at once (arm_after_ms 0) or only once the call lasted that long (a short call is over
 * before a client that hangs up could save anything, and the event costs two epoll_ctl calls).
 */
void tg_client_watch_start(tg_client_watch *cw, struct tg_worker *w, struct evhttp_request *req,
                           unsigned arm_after_ms, void (*on_gone)(void *arg), void *arg);
/* Registers the EV_CLOSED event now, if it is not yet (e.g. when a stream starts). */
void tg_client_watch_arm(tg_client_watch *cw);
/* Stops watching (the request stays in cw->req). Idempotent. */
void tg_client_watch_stop(tg_client_watch *cw);
/*
 * For an answer: stops watching and returns the request to answer, now owned by evhttp again,
 * or NULL when the client is gone (drop the answer). cw->req is NULL afterwards.
 */
struct evhttp_request *tg_client_watch_take(tg_client_watch *cw);
/* Stops watching and frees a request evhttp left to us. Once, when the call is over. */
void tg_client_watch_release(tg_client_watch *cw);

#endif

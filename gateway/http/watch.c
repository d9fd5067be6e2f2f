/* Watching a client's connection while its answer is prepared by a callback (see http/proxy.h). */
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stddef.h>
#include <stdlib.h>

#include "http/proxy.h"

/* The connection is being freed (by evhttp, or by on_rdhup below). */
static void on_close(struct evhttp_connection *evcon, void *arg) {
  (void)evcon;
  tg_client_watch *cw = arg;
  /* evhttp detaches a request it has not answered yet and leaves it to its owner. */
  if (cw->req && evhttp_request_get_connection(cw->req) == NULL) cw->detached = cw->req;
  if (cw->req) tg_worker_request_lost(cw->w); /* its on_complete callback will never run */
  cw->req = NULL;
  cw->evcon = NULL;
  cw->gone = 1;
  if (cw->close_ev) {
    event_free(cw->close_ev);
    cw->close_ev = NULL;
  }
  if (cw->lazy_ev) {
    event_free(cw->lazy_ev);
    cw->lazy_ev = NULL;
  }
  if (cw->on_gone) cw->on_gone(cw->arg);
}

/* EV_CLOSED on the client's socket while its request is being served: evhttp does not read it. */
static void on_rdhup(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_client_watch *cw = arg;
  if (cw->evcon) evhttp_connection_free(cw->evcon); /* runs on_close, frees the request */
}

void tg_client_watch_arm(tg_client_watch *cw) {
  if (cw->lazy_ev) {
    event_free(cw->lazy_ev);
    cw->lazy_ev = NULL;
  }
  if (cw->close_ev || cw->evcon == NULL || cw->req == NULL) return;
  if (!(event_base_get_features(cw->w->base) & EV_FEATURE_EARLY_CLOSE)) return;
  struct bufferevent *bev = evhttp_connection_get_bufferevent(cw->evcon);
  evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
  if (fd < 0) return;
  cw->close_ev = event_new(cw->w->base, fd, EV_CLOSED, on_rdhup, cw);
  if (cw->close_ev) event_add(cw->close_ev, NULL);
}

static void on_lazy(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_client_watch_arm(arg);
}

void tg_client_watch_start(tg_client_watch *cw, tg_worker *w, struct evhttp_request *req,
                           unsigned arm_after_ms, void (*on_gone)(void *arg), void *arg) {
  cw->w = w;
  cw->req = req;
  cw->detached = NULL;
  cw->close_ev = NULL;
  cw->lazy_ev = NULL;
  cw->gone = 0;
  cw->on_gone = on_gone;
  cw->arg = arg;
  cw->evcon = evhttp_request_get_connection(req);
  if (cw->evcon == NULL) return;
  evhttp_connection_set_closecb(cw->evcon, on_close, cw);
  if (arm_after_ms == 0) {
    tg_client_watch_arm(cw);
    return;
  }
  cw->lazy_ev = evtimer_new(w->base, on_lazy, cw);
  if (cw->lazy_ev == NULL) abort();
  struct timeval tv = {arm_after_ms / 1000, (arm_after_ms % 1000) * 1000};
  evtimer_add(cw->lazy_ev, &tv);
}

void tg_client_watch_stop(tg_client_watch *cw) {
  if (cw->lazy_ev) {
    event_free(cw->lazy_ev);
    cw->lazy_ev = NULL;
  }
  if (cw->close_ev) {
    event_free(cw->close_ev);
    cw->close_ev = NULL;
  }
  if (cw->evcon) evhttp_connection_set_closecb(cw->evcon, NULL, NULL);
  cw->evcon = NULL;
}

struct evhttp_request *tg_client_watch_take(tg_client_watch *cw) {
  tg_client_watch_stop(cw);
  struct evhttp_request *req = cw->req;
  cw->req = NULL;
  return req;
}

void tg_client_watch_release(tg_client_watch *cw) {
  tg_client_watch_stop(cw);
  if (cw->detached) evhttp_request_free(cw->detached);
  cw->detached = NULL;
}

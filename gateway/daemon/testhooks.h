/* A payment-layer double for tests: admits on a fixed PAYMENT-SIGNATURE and logs every outcome. */
#ifndef TG_DAEMON_TESTHOOKS_H
#define TG_DAEMON_TESTHOOKS_H

#include "http/server.h"

/*
 * Enabled only by the environment variable TG_TEST_PAYHOOKS=<log file>
 * (the daemon says so loudly at start). admit: PAYMENT-SIGNATURE "ok" is
 * admitted, anything else refused with 402, PAYMENT-REQUIRED "test" and a
 * JSON body. complete: appends one JSON line per outcome to the log file
 * and charges input+output tokens (or 1 per call) with a PAYMENT-RESPONSE
 * header and an SSE comment trailer. Both answer on the next loop turn, as
 * an asynchronous store would.
 */
TG_WARN_UNUSED_RESULT int tg_testhooks_init(tg_http_payhooks *hooks, const char *log_path);
void tg_testhooks_cleanup(tg_http_payhooks *hooks);

#endif

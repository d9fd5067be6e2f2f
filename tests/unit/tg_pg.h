/* Test harness for PostgreSQL: a throwaway cluster (initdb + postgres on a loopback port) created and removed by the test. */
#ifndef TG_PG_H
#define TG_PG_H

#include <stddef.h>

/*
 * tgt_pg_start() finds the server binaries ($TG_PG_BIN, else the newest
 * /usr/lib/postgresql/<N>/bin), creates a cluster in a fresh /tmp/tg-pg-XXXXXX
 * (as the `postgres` system user when the test runs as root, since the server
 * refuses to run as root; as the current user otherwise), and starts it on
 * 127.0.0.1:<free port> with its unix socket in that folder, fsync and
 * synchronous_commit on. The server gets SIGQUIT if the test process dies;
 * tgt_pg_stop() (also run at exit by the process that started it) stops it and
 * removes the folder. When the server cannot be had (binaries missing, no
 * `postgres` user as root, initdb failing) it returns NULL with the reason in
 * `why`, and the test reports SKIP rather than FAIL.
 */
typedef struct tgt_pg tgt_pg;

tgt_pg *tgt_pg_start(char *why, size_t why_cap);
/* A fresh, empty database; its URI (postgresql://postgres@127.0.0.1:PORT/NAME) in `uri`. 0 or -1. */
int tgt_pg_newdb(tgt_pg *pg, char *uri, size_t uri_cap);
int tgt_pg_port(const tgt_pg *pg);
/* Runs SQL (one or more statements) on the database at `uri`. 0, or -1 with the server's
 * message (and SQLSTATE) in err. */
int tgt_pg_exec(const char *uri, const char *sql, char *err, size_t err_cap);
/* Stops the server (fast shutdown: sessions are cut) and starts it again on the same port
 * and data. 0 or -1. */
int tgt_pg_restart(tgt_pg *pg);
/* Stops the server and removes its folder. NULL-safe. */
void tgt_pg_stop(tgt_pg *pg);

#endif

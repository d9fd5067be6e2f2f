/* The PostgreSQL test harness behind tg_pg.h: initdb, start, wait, fresh databases, stop and clean up. */
#include "tg_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "tg_proc.h"

struct tgt_pg {
  char bin[256];
  char dir[64];
  uid_t uid;
  gid_t gid;
  int drop; /* switch to uid/gid in children */
  pid_t pid;
  pid_t owner;
  int port;
  int seq;
};

static tgt_pg *live;

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* In a forked child: become the cluster's user, send output to a log file. */
static void child_setup(const tgt_pg *pg, const char *log) {
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  int nul = open("/dev/null", O_RDONLY);
  if (nul >= 0) {
    dup2(nul, 0);
    close(nul);
  }
  if (pg->drop) {
    if (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0) _exit(126);
  }
  if (chdir(pg->dir) != 0) _exit(126);
}

/* Runs argv as the cluster's user and waits (up to timeout_ms); its exit status, or -1. */
static int run_wait(const tgt_pg *pg, const char *log, char *const argv[], unsigned timeout_ms) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    child_setup(pg, log);
    execv(argv[0], argv);
    _exit(127);
  }
  for (unsigned waited = 0;; waited += 20) {
    int status;
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (w < 0 && errno != EINTR) return -1;
    if (waited >= timeout_ms) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    sleep_ms(20);
  }
}

static int find_bin(char *out, size_t cap) {
  const char *env = getenv("TG_PG_BIN");
  char path[320];
  if (env && *env) {
    snprintf(out, cap, "%s", env);
  } else {
    glob_t g;
    int best = -1;
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; i++) {
        int v = (int)strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
        if (v > best) {
          best = v;
          snprintf(out, cap, "%s", g.gl_pathv[i]);
        }
      }
      globfree(&g);
    }
    if (best < 0) return -1;
  }
  snprintf(path, sizeof(path), "%s/postgres", out);
  if (access(path, X_OK) != 0) return -1;
  snprintf(path, sizeof(path), "%s/initdb", out);
  return access(path, X_OK) == 0 ? 0 : -1;
}

static void remove_dir(const char *dir) {
  if (strncmp(dir, "/tmp/tg-pg-", 11) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    execlp("rm", "rm", "-rf", dir, (char *)NULL);
    _exit(127);
  }
  if (pid > 0) waitpid(pid, NULL, 0);
}

void tgt_pg_stop(tgt_pg *pg) {
  if (pg == NULL) return;
  if (pg->pid > 0 && pg->owner == getpid()) {
    /* Fast shutdown (SIGINT): abort sessions, checkpoint, exit. */
    kill(pg->pid, SIGINT);
    int status;
    int gone = 0;
    for (int i = 0; i < 500 && !gone; i++) {
      if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) gone = 1;
      else sleep_ms(20);
    }
    if (!gone) {
      kill(pg->pid, SIGKILL);
      waitpid(pg->pid, &status, 0);
    }
    pg->pid = 0;
  }
  if (pg->owner == getpid()) remove_dir(pg->dir);
  if (live == pg) live = NULL;
  free(pg);
}

static void at_exit_stop(void) {
  /* Forked test children exit too: only the process that started the server stops it. */
  if (live && live->owner == getpid()) tgt_pg_stop(live);
}

static void log_tail(const tgt_pg *pg, const char *name, char *why, size_t cap, const char *what) {
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", pg->dir, name);
  char buf[512] = "";
  FILE *f = fopen(path, "r");
  if (f) {
    if (fseek(f, -(long)(sizeof(buf) - 1), SEEK_END) != 0) rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    for (char *p = buf; *p; p++)
      if (*p == '\n') *p = ' ';
  }
  snprintf(why, cap, "%s: %s", what, buf);
}

/* Starts the server on pg->port and waits until it answers; 0, or -1 with the reason. */
static int start_server(tgt_pg *pg, char *why, size_t why_cap) {
  char postgres[300], data[96], log[96], port[16], conf_sock[96];
  snprintf(postgres, sizeof(postgres), "%s/postgres", pg->bin);
  snprintf(data, sizeof(data), "%s/data", pg->dir);
  snprintf(port, sizeof(port), "%d", pg->port);
  snprintf(conf_sock, sizeof(conf_sock), "unix_socket_directories=%s", pg->dir);
  snprintf(log, sizeof(log), "%s/postgres.log", pg->dir);
  char *pg_argv[] = {postgres, "-D", data, "-p", port,
                     "-c", "listen_addresses=127.0.0.1",
                     "-c", conf_sock,
                     "-c", "fsync=on",
                     "-c", "synchronous_commit=on",
                     "-c", "max_connections=300",
                     "-c", "shared_buffers=64MB",
                     "-c", "deadlock_timeout=200ms",
                     "-c", "logging_collector=off",
                     NULL};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(why, why_cap, "fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    child_setup(pg, log);
    /* After setuid (which clears it): SIGQUIT, an immediate shutdown, if the test dies. */
    prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (getppid() != parent) _exit(0);
    execv(postgres, pg_argv);
    _exit(127);
  }
  pg->pid = pid;

  char uri[128];
  snprintf(uri, sizeof(uri), "postgresql://postgres@127.0.0.1:%d/postgres?connect_timeout=2",
           pg->port);
  for (int i = 0; i < 1500; i++) {
    if (PQping(uri) == PQPING_OK) return 0;
    int status;
    if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
      pg->pid = 0;
      break;
    }
    sleep_ms(20);
  }
  log_tail(pg, "postgres.log", why, why_cap, "the server did not start");
  return -1;
}


tgt_pg *tgt_pg_start(char *why, size_t why_cap) {
  snprintf(why, why_cap, "?");
  tgt_pg *pg = calloc(1, sizeof(*pg));
  if (pg == NULL) return NULL;
  pg->owner = getpid();
  if (find_bin(pg->bin, sizeof(pg->bin)) != 0) {
    snprintf(why, why_cap,
             "PostgreSQL server binaries not found (set TG_PG_BIN or install Debian's "
             "postgresql package)");
    free(pg);
    return NULL;
  }
  if (geteuid() == 0) {
    struct passwd *pw = getpwnam("postgres");
    if (pw == NULL) {
      snprintf(why, why_cap, "running as root and there is no 'postgres' user to run the server");
      free(pg);
      return NULL;
    }
    pg->uid = pw->pw_uid;
    pg->gid = pw->pw_gid;
    pg->drop = 1;
  } else {
    pg->uid = geteuid();
    pg->gid = getegid();
  }
  snprintf(pg->dir, sizeof(pg->dir), "/tmp/tg-pg-XXXXXX");
  if (mkdtemp(pg->dir) == NULL || chown(pg->dir, pg->uid, pg->gid) != 0) {
    snprintf(why, why_cap, "cannot create the cluster folder: %s", strerror(errno));
    if (pg->dir[0] && strchr(pg->dir, 'X') == NULL) rmdir(pg->dir);
    free(pg);
    return NULL;
  }
  live = pg;
  static int registered;
  if (!registered) {
    registered = 1;
    atexit(at_exit_stop);
  }

  char initdb[300], data[96], log[96];
  snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bin);
  snprintf(data, sizeof(data), "%s/data", pg->dir);
  snprintf(log, sizeof(log), "%s/initdb.log", pg->dir);
  char *init_argv[] = {initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                       "--locale=C", "--no-sync", NULL};
  if (run_wait(pg, log, init_argv, 120000) != 0) {
    log_tail(pg, "initdb.log", why, why_cap, "initdb failed");
    tgt_pg_stop(pg);
    return NULL;
  }

  pg->port = tgt_free_port();
  if (start_server(pg, why, why_cap) == 0) return pg;
  tgt_pg_stop(pg);
  return NULL;
}

int tgt_pg_port(const tgt_pg *pg) { return pg->port; }

int tgt_pg_exec(const char *uri, const char *sql, char *err, size_t err_cap) {
  if (err && err_cap) err[0] = 0;
  PGconn *c = PQconnectdb(uri);
  if (PQstatus(c) != CONNECTION_OK) {
    if (err) snprintf(err, err_cap, "%s", PQerrorMessage(c));
    PQfinish(c);
    return -1;
  }
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  int rc = 0;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (err) snprintf(err, err_cap, "%s %s", state ? state : "-", PQresultErrorMessage(r));
    rc = -1;
  }
  PQclear(r);
  PQfinish(c);
  return rc;
}

int tgt_pg_newdb(tgt_pg *pg, char *uri, size_t uri_cap) {
  char admin[128], sql[64], err[256];
  snprintf(admin, sizeof(admin), "postgresql://postgres@127.0.0.1:%d/postgres", pg->port);
  int n = ++pg->seq;
  snprintf(sql, sizeof(sql), "CREATE DATABASE t%d", n);
  if (tgt_pg_exec(admin, sql, err, sizeof(err)) != 0) {
    fprintf(stderr, "tgt_pg_newdb: %s\n", err);
    return -1;
  }
  snprintf(uri, uri_cap, "postgresql://postgres@127.0.0.1:%d/t%d", pg->port, n);
  return 0;
}

/* Fast shutdown (SIGINT) of the server, waited for; 0 when it exited. The shutdown checkpoint
 * fsyncs: on a shared, busy disk it has been seen to take more than 10 s, so wait up to 60 s. */
static int shutdown_server(tgt_pg *pg) {
  if (pg->pid <= 0) return 0;
  kill(pg->pid, SIGINT);
  int status;
  for (int i = 0; i < 3000; i++) {
    if (waitpid(pg->pid, &status, WNOHANG) == pg->pid) {
      pg->pid = 0;
      return 0;
    }
    sleep_ms(20);
  }
  return -1;
}

int tgt_pg_restart(tgt_pg *pg) {
  char why[512];
  if (shutdown_server(pg) != 0) return -1;
  if (start_server(pg, why, sizeof(why)) != 0) {
    fprintf(stderr, "tgt_pg_restart: %s\n", why);
    return -1;
  }
  return 0;
}

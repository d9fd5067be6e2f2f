/* Test harness for real processes: free loopback ports, spawn/wait/kill, and an anvil node with its cheatcodes. */
#ifndef TG_PROC_H
#define TG_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/*
 * Every process spawned here is killed (SIGTERM, then SIGKILL after a grace
 * period) when the test ends normally (atexit), and SIGKILLed when the test
 * process gets SIGINT, SIGTERM, SIGHUP or SIGABRT. The child also asks the
 * kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so a test that
 * is itself SIGKILLed leaves nothing behind: spawn from the main thread, as
 * the death signal follows the spawning thread. Processes must listen on
 * 127.0.0.1 only. Child output goes to /dev/null unless TG_PROC_LOG is set
 * (then it is inherited, i.e. shows up on the test's stderr).
 */

typedef struct tgt_proc tgt_proc;

/* A port that was free on 127.0.0.1 a moment ago (bind to port 0); 0 on failure. */
int tgt_free_port(void);

/* The repository root: $TG_ROOT, else the current directory. */
const char *tgt_root(void);

/*
 * Starts argv[0] (a path, or a name searched in PATH) with the NULL-terminated
 * argv. NULL on failure (with a message on stderr).
 */
tgt_proc *tgt_proc_spawn(const char *const *argv);
pid_t tgt_proc_pid(const tgt_proc *p);
/* 1 while the process runs (it is reaped when it has exited). */
int tgt_proc_alive(tgt_proc *p);
/* SIGTERM, up to grace_ms for it to exit, then SIGKILL; reaps it. Returns its wait status. */
int tgt_proc_stop(tgt_proc *p, unsigned grace_ms);
/* SIGKILL at once and reap (simulates a crash). */
void tgt_proc_kill9(tgt_proc *p);
/* Stops the process if it still runs, and frees the handle. NULL is a no-op. */
void tgt_proc_free(tgt_proc *p);
/* Waits until 127.0.0.1:port accepts a TCP connection; 0 when it did, -1 on timeout or death. */
int tgt_wait_tcp(tgt_proc *p, int port, unsigned timeout_ms);

/* ---- raw JSON-RPC over HTTP (libcurl, independent of the library's client) ---- */

/*
 * Calls `method` with params given as JSON text ("[]" when NULL) and returns
 * the "result" (a new reference, JSON null included) or NULL on any failure;
 * tgt_rpc_error() then tells why (transport, HTTP, or the node's error message).
 */
json_t *tgt_rpc(const char *url, const char *method, const char *params_json);
/* Same, and the result must be a hex quantity: returned as uint64 (UINT64_MAX on failure). */
uint64_t tgt_rpc_u64(const char *url, const char *method, const char *params_json);
/* The last failure of tgt_rpc in this thread ("" when none). */
const char *tgt_rpc_error(void);

/* ---- anvil ---- */

typedef struct {
  uint64_t chain_id;        /* 0: anvil's default 31337 */
  unsigned block_time;      /* seconds between blocks; 0: automine */
  int no_mining;            /* --no-mining: mine only with evm_mine */
  const char *state;        /* --state PATH: load at start if present, dump at exit */
  const char *dump_state;   /* --dump-state PATH */
  const char *load_state;   /* --load-state PATH */
  const char *const *extra; /* more arguments, NULL-terminated; may be NULL */
} tgt_anvil_opts;

typedef struct {
  tgt_proc *proc;
  int port;
  char url[64]; /* http://127.0.0.1:<port> */
  /* private: the options, kept for restarts */
  tgt_anvil_opts opts;
  char *strs[4];
  char **extra;
} tgt_anvil;

/* The anvil binary: $TG_ROOT/node_modules/.bin/anvil (or ./node_modules/.bin/anvil). */
const char *tgt_anvil_path(void);
/* Starts anvil on a free port and waits until eth_chainId answers. NULL on failure. */
tgt_anvil *tgt_anvil_start(const tgt_anvil_opts *opts);
/* Stops it gracefully (SIGTERM: anvil dumps --state/--dump-state on exit). */
void tgt_anvil_stop(tgt_anvil *a);
/* SIGKILL (no state dump). */
void tgt_anvil_kill9(tgt_anvil *a);
/* Starts it again on the same port with the same options (stopping it first if running). 0 or -1. */
int tgt_anvil_restart(tgt_anvil *a);
/* Stops it and frees everything. NULL is a no-op. */
void tgt_anvil_free(tgt_anvil *a);

/* Cheatcodes; each returns 0 on success, -1 on failure (see tgt_rpc_error). */
int tgt_anvil_mine(tgt_anvil *a, unsigned blocks);
int tgt_anvil_set_next_base_fee(tgt_anvil *a, uint64_t wei);
/* evm_snapshot: the snapshot id (a quantity) or UINT64_MAX. */
uint64_t tgt_anvil_snapshot(tgt_anvil *a);
int tgt_anvil_revert(tgt_anvil *a, uint64_t snapshot_id);
/* anvil_reorg with `depth` blocks and no replacement transactions. */
int tgt_anvil_reorg(tgt_anvil *a, unsigned depth);
/* anvil_dropTransaction of a pending tx ("0x"-hash). */
int tgt_anvil_drop_tx(tgt_anvil *a, const char *tx_hash_hex);
int tgt_anvil_set_automine(tgt_anvil *a, int on);
int tgt_anvil_set_balance(tgt_anvil *a, const char *addr_hex, const char *wei_hex);
uint64_t tgt_anvil_block_number(tgt_anvil *a);

/* anvil's default dev accounts (mnemonic "test test ... junk"), index 0..4 (NULL past that). */
const char *tgt_anvil_address(unsigned i); /* "0x..." lower-case */
const char *tgt_anvil_key(unsigned i);     /* "0x..." private key */

#endif

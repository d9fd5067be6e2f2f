/* Internal to the `tollgate` CLI: the command table and the helpers commands share. */
#ifndef TG_CLI_H
#define TG_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

typedef int (*cli_fn)(int argc, char **argv);

typedef struct {
  const char *name;    /* "keccak", "wallet sign", ... (a space separates a group) */
  cli_fn fn;           /* gets argv[0] = the command name, then its arguments */
  const char *usage;   /* one line of usage, after the name */
  const char *summary; /* one sentence */
} cli_command;

/*
 * Prints "tollgate <cmd>: <message>" on stderr and returns the exit status 1,
 * so commands can write `return cli_fail(...)`.
 */
int cli_fail(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Like cli_fail with a tg_err's message appended. */
int cli_fail_err(const char *cmd, int err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Prints `usage` for the named command on stderr and returns 2. */
int cli_usage(const char *cmd);

/* Prints "0x" + hex of the bytes and a newline on stdout. */
void cli_print_hex(const uint8_t *data, size_t len);

/*
 * Option scanning shared by the commands: returns the value of `--name VALUE`
 * or `--name=VALUE` at argv[*i] (advancing *i past it), or NULL when argv[*i]
 * is not that option. Sets *missing when the option has no value.
 */
const char *cli_opt(int argc, char **argv, int *i, const char *name, int *missing);

/* Reads a whole file or "-" (stdin) into a NUL-terminated buffer (cap 64 MiB). */
int cli_read_file(const char *path, tg_buf *out);

#endif

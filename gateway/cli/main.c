/* `tollgate`: the command-line front end; a table of subcommands and its dispatcher. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"

#define TOLLGATE_VERSION "0.1.0"

static const cli_command commands[] = {
#define CLI_CMD(name, fn, usage, summary) {name, fn, usage, summary},
#include "cli/commands.def"
#undef CLI_CMD
};

static const size_t n_commands = sizeof commands / sizeof commands[0];

int cli_fail(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "tollgate %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

int cli_fail_err(const char *cmd, int err, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "tollgate %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s\n", tg_strerror(err));
  return 1;
}

int cli_usage(const char *cmd) {
  for (size_t i = 0; i < n_commands; i++) {
    if (strcmp(commands[i].name, cmd) == 0) {
      fprintf(stderr, "usage: tollgate %s %s\n", commands[i].name, commands[i].usage);
      return 2;
    }
  }
  fprintf(stderr, "usage: tollgate %s ...\n", cmd);
  return 2;
}

void cli_print_hex(const uint8_t *data, size_t len) {
  static const char digits[] = "0123456789abcdef";
  fputs("0x", stdout);
  for (size_t i = 0; i < len; i++) {
    putchar(digits[data[i] >> 4]);
    putchar(digits[data[i] & 15]);
  }
  putchar('\n');
}

const char *cli_opt(int argc, char **argv, int *i, const char *name, int *missing) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n] != 0) return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return NULL;
  }
  *i += 1;
  return argv[*i];
}

int cli_read_file(const char *path, tg_buf *out) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) return TG_EIO;
  tg_buf_init(out, (size_t)64 << 20);
  char chunk[65536];
  size_t got;
  int rc = TG_OK;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    rc = tg_buf_append(out, chunk, got);
    if (rc) break;
  }
  if (!rc && ferror(f)) rc = TG_EIO;
  if (f != stdin) fclose(f);
  if (!rc && out->len == 0) rc = tg_buf_append(out, "", 0);
  if (rc) tg_buf_cleanup(out);
  return rc;
}

static void print_help(FILE *to) {
  fprintf(to, "tollgate %s: pay-per-call gateway toolkit (Ethereum utilities, payments)\n\n"
              "usage: tollgate <command> [args...]\n\ncommands:\n",
          TOLLGATE_VERSION);
  for (size_t i = 0; i < n_commands; i++)
    fprintf(to, "  %-24s %s\n", commands[i].name, commands[i].summary);
  fprintf(to, "\n`tollgate <command> --help` shows a command's usage; see tollgate(1).\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    print_help(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("tollgate %s\n", TOLLGATE_VERSION);
    return 0;
  }
  /* Two-word commands ("wallet sign") win over one-word ones. */
  if (argc >= 3) {
    char two[128];
    snprintf(two, sizeof two, "%s %s", argv[1], argv[2]);
    for (size_t i = 0; i < n_commands; i++) {
      if (strcmp(commands[i].name, two) == 0) {
        if (argc >= 4 && (strcmp(argv[3], "--help") == 0 || strcmp(argv[3], "-h") == 0)) {
          printf("usage: tollgate %s %s\n%s\n", commands[i].name, commands[i].usage,
                 commands[i].summary);
          return 0;
        }
        argv[2] = (char *)commands[i].name;
        return commands[i].fn(argc - 2, argv + 2);
      }
    }
  }
  for (size_t i = 0; i < n_commands; i++) {
    if (strcmp(commands[i].name, argv[1]) == 0) {
      if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        printf("usage: tollgate %s %s\n%s\n", commands[i].name, commands[i].usage,
               commands[i].summary);
        return 0;
      }
      return commands[i].fn(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "tollgate: unknown command '%s'; `tollgate --help` lists the commands\n",
          argv[1]);
  return 2;
}

/* `tollgate wallet ...`, `to-check-sum-address`, `hash-message`: keys, signatures and keystores, as cast prints them. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "cli/cli.h"
#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keystore.h"
#include "tollgate/secp.h"

#define MAX_POS 4
#define MAX_PASSWORD_FILE 65536

/* Options every wallet command may take; each command says which it accepts. */
enum {
  O_KEY = 1 << 0,      /* --private-key KEY */
  O_KEYSTORE = 1 << 1, /* --keystore FILE (+ password) */
  O_PASSWORD = 1 << 2, /* --password, --unsafe-password, --password-file */
  O_ADDRESS = 1 << 3,  /* --address ADDR */
  O_DATA = 1 << 4,     /* --data, --from-file */
  O_NOHASH = 1 << 5,   /* --no-hash */
  O_KSDIR = 1 << 6,    /* --keystore-dir DIR */
  O_FORCE = 1 << 7,    /* --force */
};

typedef struct {
  char *key;  /* points into argv; wiped once read */
  char *password; /* points into argv; wiped once read */
  const char *keystore, *password_file, *address, *ksdir;
  int data, from_file, no_hash, force;
  const char *pos[MAX_POS];
  int npos;
} opts;

/* Wipes a secret argument in place (it also disappears from /proc/PID/cmdline). */
static void wipe_arg(char *s) {
  if (s) sodium_memzero(s, strlen(s));
}

/* Scans argv; returns 0, or the exit status of a usage error. */
static int parse_opts(opts *o, int argc, char **argv, unsigned allowed) {
  memset(o, 0, sizeof *o);
  int only_pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v;
    int missing = 0;
    if (only_pos || a[0] != '-' || a[1] == 0) {
      if (o->npos >= MAX_POS) return cli_fail(argv[0], "too many arguments ('%s')", a);
      o->pos[o->npos++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = 1;
    } else if ((allowed & O_KEY) && (v = cli_opt(argc, argv, &i, "--private-key", &missing))) {
      o->key = (char *)v;
    } else if ((allowed & O_KEYSTORE) && (v = cli_opt(argc, argv, &i, "--keystore", &missing))) {
      o->keystore = v;
    } else if ((allowed & O_PASSWORD) &&
               ((v = cli_opt(argc, argv, &i, "--password", &missing)) ||
                (!missing && (v = cli_opt(argc, argv, &i, "--unsafe-password", &missing))))) {
      if (o->password) return cli_fail(argv[0], "give the password only once");
      o->password = (char *)v;
    } else if ((allowed & O_PASSWORD) &&
               (v = cli_opt(argc, argv, &i, "--password-file", &missing))) {
      o->password_file = v;
    } else if ((allowed & O_ADDRESS) && (v = cli_opt(argc, argv, &i, "--address", &missing))) {
      o->address = v;
    } else if ((allowed & O_KSDIR) && (v = cli_opt(argc, argv, &i, "--keystore-dir", &missing))) {
      o->ksdir = v;
    } else if ((allowed & O_DATA) && strcmp(a, "--data") == 0) {
      o->data = 1;
    } else if ((allowed & O_DATA) && strcmp(a, "--from-file") == 0) {
      o->from_file = 1;
    } else if ((allowed & O_NOHASH) && strcmp(a, "--no-hash") == 0) {
      o->no_hash = 1;
    } else if ((allowed & O_FORCE) && strcmp(a, "--force") == 0) {
      o->force = 1;
    } else if (missing) {
      return cli_fail(argv[0], "option '%s' needs a value", a);
    } else {
      fprintf(stderr, "tollgate %s: unknown option '%s'\n", argv[0], a);
      return cli_usage(argv[0]);
    }
    if (missing) return cli_fail(argv[0], "option '%s' needs a value", a);
  }
  if (o->from_file && !o->data) return cli_fail(argv[0], "--from-file requires --data");
  return 0;
}

/* A password in guarded memory. */
typedef struct {
  char *p;
  size_t len;
} secret_pw;

static void pw_free(secret_pw *pw) {
  if (pw->p) sodium_free(pw->p); /* wipes */
  pw->p = NULL;
  pw->len = 0;
}

static int pw_set(secret_pw *pw, const char *s, size_t len) {
  int rc = tg_secp_init(); /* sodium_init before sodium_malloc */
  if (rc) return rc;
  pw->p = sodium_malloc(len + 1);
  if (!pw->p) return TG_ENOMEM;
  memcpy(pw->p, s, len);
  pw->p[len] = 0;
  pw->len = len;
  return TG_OK;
}

/*
 * Reads the first line of a password file (without its \n or \r\n) straight
 * into guarded memory, so no ordinary buffer ever holds it. "-" is stdin.
 */
static int read_password_file(secret_pw *pw, const char *path) {
  int rc = tg_secp_init(); /* sodium_init before sodium_malloc */
  if (rc) return rc;
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
  if (f != stdin) setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer copy of the secret */
  char *buf = sodium_malloc(MAX_PASSWORD_FILE + 1);
  if (!buf) {
    if (f != stdin) fclose(f);
    return TG_ENOMEM;
  }
  size_t n = 0;
  int c;
  rc = TG_OK;
  while ((c = getc(f)) != EOF && c != '\n') {
    if (n == MAX_PASSWORD_FILE) {
      rc = TG_ETOOBIG;
      break;
    }
    buf[n++] = (char)c;
  }
  if (!rc && ferror(f)) rc = TG_EIO;
  if (f != stdin) fclose(f);
  if (!rc && n > 0 && buf[n - 1] == '\r') n--;
  if (rc) {
    sodium_free(buf); /* wipes */
    return rc;
  }
  buf[n] = 0;
  pw->p = buf;
  pw->len = n;
  return TG_OK;
}

/*
 * The password from --password/--unsafe-password, else --password-file (its
 * first line, without the line break), else $TOLLGATE_PASSWORD. Returns the
 * exit status on failure (message printed).
 */
static int get_password(const char *cmd, opts *o, secret_pw *pw) {
  pw->p = NULL;
  pw->len = 0;
  if (o->password && o->password_file)
    return cli_fail(cmd, "give --password or --password-file, not both");
  if (o->password) {
    int rc = pw_set(pw, o->password, strlen(o->password));
    wipe_arg(o->password);
    return rc ? cli_fail_err(cmd, rc, "password") : 0;
  }
  if (o->password_file) {
    int rc = read_password_file(pw, o->password_file);
    return rc ? cli_fail_err(cmd, rc, "cannot read password file '%s'", o->password_file) : 0;
  }
  const char *env = getenv("TOLLGATE_PASSWORD");
  if (env) {
    int rc = pw_set(pw, env, strlen(env));
    return rc ? cli_fail_err(cmd, rc, "password") : 0;
  }
  return cli_fail_err(cmd, TG_EPASSWORD,
                      "give --password PW, --password-file FILE or set TOLLGATE_PASSWORD");
}

/*
 * The signing key from --private-key (or a lone positional when allowed) or
 * --keystore FILE with a password. The argv copy of a key is wiped.
 */
static int load_key(const char *cmd, opts *o, const char *positional_key, tg_seckey **out) {
  *out = NULL;
  tg_seckey *k = tg_seckey_new();
  if (!k) return cli_fail_err(cmd, TG_ENOMEM, "key storage");
  char *kh = o->key ? o->key : (char *)positional_key;
  if (kh && o->keystore) {
    wipe_arg(kh);
    tg_seckey_free(k);
    return cli_fail(cmd, "give --private-key or --keystore, not both");
  }
  if (kh) {
    int rc = tg_seckey_set_hex(k, kh, strlen(kh));
    wipe_arg(kh);
    if (rc) {
      tg_seckey_free(k);
      return cli_fail_err(cmd, rc, "--private-key: expected 32 bytes of hex in (0, n)");
    }
    *out = k;
    return 0;
  }
  if (o->keystore) {
    secret_pw pw;
    int st = get_password(cmd, o, &pw);
    if (st) {
      tg_seckey_free(k);
      return st;
    }
    int rc = tg_keystore_decrypt_file(k, o->keystore, pw.p, pw.len, NULL);
    pw_free(&pw);
    if (rc) {
      tg_seckey_free(k);
      return cli_fail_err(cmd, rc, "keystore '%s'", o->keystore);
    }
    *out = k;
    return 0;
  }
  tg_seckey_free(k);
  return cli_fail(cmd, "no key: give --private-key KEY or --keystore FILE");
}

/* cast's message rule: "0x..." (lower-case x) is hex bytes, anything else is the text itself. */
static int message_bytes(const char *cmd, const char *msg, tg_buf *out) {
  size_t len = strlen(msg);
  tg_buf_init(out, TG_BUF_DEFAULT_MAX);
  int rc;
  if (len >= 2 && msg[0] == '0' && msg[1] == 'x') {
    rc = tg_hex_decode_buf(out, msg, len, TG_HEX_PREFIX_REQUIRED);
    if (!rc && out->len == 0) rc = tg_buf_append(out, "", 0);
    if (rc) {
      tg_buf_cleanup(out);
      return cli_fail_err(cmd, rc, "message '%s' starts with 0x but is not hex", msg);
    }
    return 0;
  }
  rc = tg_buf_append(out, msg, len);
  if (!rc && len == 0) rc = tg_buf_append(out, "", 0);
  if (rc) {
    tg_buf_cleanup(out);
    return cli_fail_err(cmd, rc, "message");
  }
  return 0;
}

/*
 * The digest to sign or verify: EIP-712 typed data (--data, from the
 * argument or with --from-file from a file), a raw 32-byte hash (--no-hash),
 * or an EIP-191 personal message.
 */
static int message_digest(const char *cmd, const opts *o, const char *msg, tg_hash *out) {
  int rc;
  if (o->data) {
    if (o->from_file) {
      tg_buf b;
      rc = cli_read_file(msg, &b);
      if (rc) return cli_fail_err(cmd, rc, "cannot read typed-data file '%s'", msg);
      rc = tg_eip712_digest_json(out, (const char *)b.data, b.len);
      tg_buf_cleanup(&b);
      if (rc) return cli_fail_err(cmd, rc, "typed data in '%s'", msg);
      return 0;
    }
    rc = tg_eip712_digest_json(out, msg, strlen(msg));
    if (rc) return cli_fail_err(cmd, rc, "typed data argument");
    return 0;
  }
  if (o->no_hash) {
    rc = tg_hex_decode_exact(out->b, 32, msg, strlen(msg));
    if (rc) return cli_fail_err(cmd, rc, "--no-hash: '%s' is not a 32-byte hex hash", msg);
    return 0;
  }
  tg_buf b;
  int st = message_bytes(cmd, msg, &b);
  if (st) return st;
  tg_eip191_hash(out, b.data, b.len);
  tg_buf_cleanup(&b);
  return 0;
}

int cmd_to_checksum_address(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  tg_address a;
  int rc = tg_address_parse(&a, argv[1], strlen(argv[1]));
  if (rc) return cli_fail_err(argv[0], rc, "'%s'", argv[1]);
  char out[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&a, out);
  puts(out);
  return 0;
}

int cmd_hash_message(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  /* As cast 1.7.1: the argument is always text, even when it starts with 0x. */
  tg_hash h;
  tg_eip191_hash(&h, (const uint8_t *)argv[1], strlen(argv[1]));
  cli_print_hex(h.b, 32);
  return 0;
}

int cmd_wallet_address(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_KEY | O_KEYSTORE | O_PASSWORD);
  if (st) return st;
  if (o.npos > 1 || (o.npos == 1 && (o.key || o.keystore))) {
    wipe_arg(o.key);
    wipe_arg(o.password);
    return cli_usage(argv[0]);
  }
  tg_seckey *k;
  if ((st = load_key(argv[0], &o, o.npos ? o.pos[0] : NULL, &k)) != 0) return st;
  tg_address a;
  int rc = tg_seckey_address(&a, k);
  tg_seckey_free(k);
  if (rc) return cli_fail_err(argv[0], rc, "address");
  char out[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&a, out);
  puts(out);
  return 0;
}

int cmd_wallet_public_key(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_KEY | O_KEYSTORE | O_PASSWORD);
  if (st) return st;
  if (o.npos > 1 || (o.npos == 1 && (o.key || o.keystore))) {
    wipe_arg(o.key);
    wipe_arg(o.password);
    return cli_usage(argv[0]);
  }
  tg_seckey *k;
  if ((st = load_key(argv[0], &o, o.npos ? o.pos[0] : NULL, &k)) != 0) return st;
  uint8_t pub[64];
  int rc = tg_seckey_pubkey(pub, k);
  tg_seckey_free(k);
  if (rc) return cli_fail_err(argv[0], rc, "public key");
  cli_print_hex(pub, 64);
  return 0;
}

int cmd_wallet_sign(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_KEY | O_KEYSTORE | O_PASSWORD | O_DATA | O_NOHASH);
  if (st) return st;
  if (o.npos != 1 || (o.data && o.no_hash)) {
    wipe_arg(o.key);
    wipe_arg(o.password);
    if (o.npos != 1) return cli_usage(argv[0]);
    return cli_fail(argv[0], "give --data or --no-hash, not both");
  }
  tg_seckey *k;
  if ((st = load_key(argv[0], &o, NULL, &k)) != 0) return st;
  tg_hash d;
  if ((st = message_digest(argv[0], &o, o.pos[0], &d)) != 0) {
    tg_seckey_free(k);
    return st;
  }
  tg_sig sig;
  int rc = tg_sign_digest(&sig, k, &d);
  tg_seckey_free(k);
  if (rc) return cli_fail_err(argv[0], rc, "signing");
  cli_print_hex(sig.b, 65);
  return 0;
}

int cmd_wallet_verify(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_ADDRESS | O_DATA | O_NOHASH);
  if (st) return st;
  if (o.npos != 2 || !o.address) return cli_usage(argv[0]);
  tg_address want;
  int rc = tg_address_parse(&want, o.address, strlen(o.address));
  if (rc) return cli_fail_err(argv[0], rc, "--address '%s'", o.address);
  uint8_t raw[65];
  size_t n;
  const char *sh = o.pos[1];
  rc = tg_hex_decode(raw, sizeof raw, &n, sh, strlen(sh), TG_HEX_PREFIX_OPTIONAL);
  tg_sig sig;
  if (!rc) rc = tg_sig_from_bytes(&sig, raw, n);
  if (rc == TG_EBUFSIZE) rc = TG_ESIG;
  if (rc) return cli_fail_err(argv[0], rc, "signature '%s' (expected 65 bytes of hex)", sh);
  tg_hash d;
  if ((st = message_digest(argv[0], &o, o.pos[0], &d)) != 0) return st;
  tg_address got;
  rc = tg_recover_address(&got, &d, &sig);
  char cs[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&want, cs);
  if (rc) return cli_fail_err(argv[0], rc, "signature '%s'", sh);
  if (!tg_address_eq(&got, &want))
    return cli_fail(argv[0], "validation failed: address %s did not sign this message", cs);
  printf("Validation succeeded. Address %s signed this message.\n", cs);
  return 0;
}

/* A keystore file name: no path separators, not "." or "..", printable. */
static int valid_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '/' || (unsigned char)s[i] < 0x20) return 0;
  return 1;
}

/*
 * Encrypts `k` into DIR/NAME (NAME = the keystore id when NULL); writes the
 * full path into `path`. Returns the exit status.
 */
static int save_keystore(const char *cmd, const tg_seckey *k, const char *dir, const char *name,
                         int force, opts *o, char *path, size_t pathcap, char *name_out) {
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return cli_fail(cmd, "'%s' is not a directory", dir);
  if (name && !valid_name(name))
    return cli_fail(cmd, "account name '%s' must be a plain file name", name);
  char abs[PATH_MAX];
  if (!realpath(dir, abs)) return cli_fail(cmd, "cannot resolve '%s': %s", dir, strerror(errno));
  secret_pw pw;
  int s = get_password(cmd, o, &pw);
  if (s) return s;
  tg_buf json;
  tg_buf_init(&json, TG_KEYSTORE_MAX_JSON);
  char id[TG_KEYSTORE_UUID_LEN];
  int rc = tg_keystore_encrypt(&json, id, k, pw.p, pw.len, NULL);
  pw_free(&pw);
  if (rc) {
    tg_buf_cleanup(&json);
    return cli_fail_err(cmd, rc, "encrypting the key");
  }
  const char *fname = name ? name : id;
  int n = snprintf(path, pathcap, "%s/%s", strcmp(abs, "/") == 0 ? "" : abs, fname);
  if (n < 0 || (size_t)n >= pathcap) {
    tg_buf_cleanup(&json);
    return cli_fail(cmd, "path too long");
  }
  rc = tg_keystore_write_file(path, json.data, json.len, force);
  tg_buf_cleanup(&json);
  if (rc == TG_EEXISTS)
    return cli_fail(cmd, "keystore file already exists at %s (use --force to replace it)", path);
  if (rc) return cli_fail_err(cmd, rc, "cannot write %s", path);
  snprintf(name_out, 256, "%s", fname);
  return 0;
}

int cmd_wallet_new(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_PASSWORD | O_FORCE);
  if (st) return st;
  if (o.npos > 2) return cli_usage(argv[0]);
  tg_seckey *k = tg_seckey_new();
  if (!k) return cli_fail_err(argv[0], TG_ENOMEM, "key storage");
  int rc = tg_seckey_generate(k);
  tg_address a;
  if (!rc) rc = tg_seckey_address(&a, k);
  if (rc) {
    tg_seckey_free(k);
    return cli_fail_err(argv[0], rc, "generating a key");
  }
  char cs[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&a, cs);
  if (o.npos == 0) {
    if (o.password) wipe_arg(o.password);
    char *hex = sodium_malloc(67);
    if (!hex) {
      tg_seckey_free(k);
      return cli_fail_err(argv[0], TG_ENOMEM, "key storage");
    }
    tg_hex_encode(hex, k->b, 32, 1);
    printf("Successfully created new keypair.\nAddress:     %s\nPrivate key: %s\n", cs, hex);
    sodium_free(hex);
    tg_seckey_free(k);
    return 0;
  }
  char path[PATH_MAX + 300], name[256];
  st = save_keystore(argv[0], k, o.pos[0], o.npos == 2 ? o.pos[1] : NULL, o.force, &o, path,
                     sizeof path, name);
  tg_seckey_free(k);
  if (st) return st;
  printf("Created new encrypted keystore file: %s\nAddress:    %s\n", path, cs);
  return 0;
}

int cmd_wallet_import(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_KEY | O_PASSWORD | O_KSDIR | O_FORCE);
  if (st) return st;
  /* cast's form: import NAME --keystore-dir DIR; ours also: import DIR [NAME]. */
  const char *dir, *name;
  if (o.ksdir) {
    dir = o.ksdir;
    name = o.npos == 1 ? o.pos[0] : NULL;
    if (o.npos != 1) st = 1;
  } else {
    dir = o.npos >= 1 ? o.pos[0] : NULL;
    name = o.npos == 2 ? o.pos[1] : NULL;
    if (o.npos < 1 || o.npos > 2) st = 1;
  }
  if (st || !o.key) {
    wipe_arg(o.key);
    wipe_arg(o.password);
    return cli_usage(argv[0]);
  }
  tg_seckey *k;
  if ((st = load_key(argv[0], &o, NULL, &k)) != 0) {
    wipe_arg(o.password);
    return st;
  }
  tg_address a;
  int rc = tg_seckey_address(&a, k);
  if (rc) {
    tg_seckey_free(k);
    return cli_fail_err(argv[0], rc, "address");
  }
  char path[PATH_MAX + 300], saved[256];
  st = save_keystore(argv[0], k, dir, name, o.force, &o, path, sizeof path, saved);
  tg_seckey_free(k);
  if (st) return st;
  char lo[TG_ADDRESS_HEX_LEN];
  tg_address_to_hex(&a, lo);
  printf("`%s` keystore was saved successfully. Address: %s\n", saved, lo);
  return 0;
}

int cmd_wallet_decrypt_keystore(int argc, char **argv) {
  opts o;
  int st = parse_opts(&o, argc, argv, O_PASSWORD | O_KSDIR);
  if (st) return st;
  if (o.npos != 1) {
    wipe_arg(o.password);
    return cli_usage(argv[0]);
  }
  char path[PATH_MAX + 300];
  const char *name = o.pos[0];
  if (o.ksdir && name[0] != '/') {
    int n = snprintf(path, sizeof path, "%s/%s", o.ksdir, name);
    if (n < 0 || (size_t)n >= sizeof path) return cli_fail(argv[0], "path too long");
  } else {
    snprintf(path, sizeof path, "%s", name);
  }
  secret_pw pw;
  if ((st = get_password(argv[0], &o, &pw)) != 0) return st;
  tg_seckey *k = tg_seckey_new();
  if (!k) {
    pw_free(&pw);
    return cli_fail_err(argv[0], TG_ENOMEM, "key storage");
  }
  int rc = tg_keystore_decrypt_file(k, path, pw.p, pw.len, NULL);
  pw_free(&pw);
  if (rc) {
    tg_seckey_free(k);
    if (rc == TG_ENOTFOUND) return cli_fail(argv[0], "keystore file does not exist at %s", path);
    return cli_fail_err(argv[0], rc, "keystore %s", path);
  }
  char *hex = sodium_malloc(67);
  if (!hex) {
    tg_seckey_free(k);
    return cli_fail_err(argv[0], TG_ENOMEM, "key storage");
  }
  tg_hex_encode(hex, k->b, 32, 1);
  printf("%s's private key is: %s\n", name, hex);
  sodium_free(hex);
  tg_seckey_free(k);
  return 0;
}

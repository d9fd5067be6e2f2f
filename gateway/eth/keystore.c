/* Ethereum keystore v3: scrypt (libsodium) or PBKDF2 (OpenSSL) key derivation, AES-128-CTR, Keccak MAC. */
#include "tollgate/keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"

#define MAX_SALT 1024
#define MAX_PASSWORD (64 * 1024)

/* Guarded scratch for secrets: the derived key and the plaintext. */
typedef struct {
  uint8_t dk[32];
  uint8_t plain[32];
} secrets;

void tg_keystore_limits_default(tg_keystore_limits *out) {
  out->scrypt_max_mem = (uint64_t)512 << 20;
  out->scrypt_max_work = (uint64_t)1 << 23;
  out->pbkdf2_max_iter = (uint32_t)1 << 24;
  out->scrypt_allow_rfc7914_violation = 0;
}

/* A parsed, validated "crypto" object; every length already checked. */
typedef struct {
  int scrypt; /* else pbkdf2 */
  uint64_t n;
  uint32_t r, p, c;
  uint8_t salt[MAX_SALT];
  size_t salt_len;
  uint8_t iv[16];
  uint8_t ct[32];
  size_t ct_len;
  uint8_t mac[32];
} kdf_job;

/* A positive JSON integer within [lo, hi]. */
static int get_uint(json_t *obj, const char *name, uint64_t lo, uint64_t hi, uint64_t *out) {
  json_t *v = json_object_get(obj, name);
  if (!json_is_integer(v)) return TG_EKEYSTORE;
  json_int_t x = json_integer_value(v);
  if (x < 0 || (uint64_t)x < lo || (uint64_t)x > hi) return TG_EKEYSTORE_KDF;
  *out = (uint64_t)x;
  return TG_OK;
}

/* Hex string field into exactly-or-at-most `cap` bytes. */
static int get_hex(json_t *obj, const char *name, uint8_t *out, size_t cap, size_t *len) {
  json_t *v = json_object_get(obj, name);
  if (!json_is_string(v)) return TG_EKEYSTORE;
  int rc = tg_hex_decode(out, cap, len, json_string_value(v), json_string_length(v),
                         TG_HEX_PREFIX_OPTIONAL);
  return rc ? TG_EKEYSTORE : TG_OK;
}

static int check_scrypt(uint64_t n, uint32_t r, uint32_t p, const tg_keystore_limits *lim) {
  if (n < 2 || (n & (n - 1)) != 0 || r == 0 || p == 0) return TG_EKEYSTORE_KDF;
  /* RFC 7914 section 2: N < 2^(128 * r / 8). */
  if (!lim->scrypt_allow_rfc7914_violation && r < 4 && n >= ((uint64_t)1 << (16 * r)))
    return TG_EKEYSTORE_KDF;
  uint64_t per_n = (uint64_t)128 * r;
  if (n > lim->scrypt_max_mem / per_n) return TG_EKEYSTORE_KDF;
  /* n * r <= 2^29 / 128 here, so n * r * p fits easily in 64 bits. */
  if (n * r > lim->scrypt_max_work / p) return TG_EKEYSTORE_KDF;
  return TG_OK;
}

static int parse_crypto(kdf_job *job, json_t *root, const tg_keystore_limits *lim) {
  json_t *ver = json_object_get(root, "version");
  if (!json_is_integer(ver)) return ver ? TG_EKEYSTORE_VERSION : TG_EKEYSTORE;
  if (json_integer_value(ver) != 3) return TG_EKEYSTORE_VERSION;
  json_t *cr = json_object_get(root, "crypto");
  if (!cr) cr = json_object_get(root, "Crypto"); /* geth's own older spelling */
  if (!json_is_object(cr)) return TG_EKEYSTORE;

  json_t *cipher = json_object_get(cr, "cipher");
  if (!json_is_string(cipher)) return TG_EKEYSTORE;
  if (strcmp(json_string_value(cipher), "aes-128-ctr") != 0) return TG_EKEYSTORE_CIPHER;
  json_t *cp = json_object_get(cr, "cipherparams");
  if (!json_is_object(cp)) return TG_EKEYSTORE;
  size_t n;
  if (get_hex(cp, "iv", job->iv, sizeof job->iv, &n) || n != 16) return TG_EKEYSTORE;
  if (get_hex(cr, "ciphertext", job->ct, sizeof job->ct, &job->ct_len) || job->ct_len == 0)
    return TG_EKEYSTORE;
  if (get_hex(cr, "mac", job->mac, sizeof job->mac, &n) || n != 32) return TG_EKEYSTORE;

  json_t *kdf = json_object_get(cr, "kdf");
  json_t *kp = json_object_get(cr, "kdfparams");
  if (!json_is_string(kdf) || !json_is_object(kp)) return TG_EKEYSTORE;
  uint64_t dklen;
  int rc = get_uint(kp, "dklen", 32, 32, &dklen);
  if (rc) return rc;
  json_t *salt = json_object_get(kp, "salt");
  if (!json_is_string(salt)) return TG_EKEYSTORE;
  if (json_string_length(salt) > 2 * MAX_SALT + 2) return TG_EKEYSTORE_KDF;
  if (get_hex(kp, "salt", job->salt, sizeof job->salt, &job->salt_len)) return TG_EKEYSTORE;

  const char *k = json_string_value(kdf);
  if (strcmp(k, "scrypt") == 0) {
    uint64_t nn, r, p;
    if ((rc = get_uint(kp, "n", 2, (uint64_t)1 << 40, &nn)) != 0) return rc;
    if ((rc = get_uint(kp, "r", 1, 1u << 20, &r)) != 0) return rc;
    if ((rc = get_uint(kp, "p", 1, 1u << 20, &p)) != 0) return rc;
    if ((rc = check_scrypt(nn, (uint32_t)r, (uint32_t)p, lim)) != 0) return rc;
    job->scrypt = 1;
    job->n = nn;
    job->r = (uint32_t)r;
    job->p = (uint32_t)p;
    return TG_OK;
  }
  if (strcmp(k, "pbkdf2") == 0) {
    json_t *prf = json_object_get(kp, "prf");
    if (!json_is_string(prf)) return TG_EKEYSTORE;
    if (strcmp(json_string_value(prf), "hmac-sha256") != 0) return TG_EKEYSTORE_KDF;
    uint64_t c;
    if ((rc = get_uint(kp, "c", 1, lim->pbkdf2_max_iter, &c)) != 0) return rc;
    job->scrypt = 0;
    job->c = (uint32_t)c;
    return TG_OK;
  }
  return TG_EKEYSTORE_KDF;
}

static int derive(uint8_t dk[32], const kdf_job *job, const char *pw, size_t pw_len) {
  if (job->scrypt) {
    if (crypto_pwhash_scryptsalsa208sha256_ll((const uint8_t *)pw, pw_len, job->salt,
                                              job->salt_len, job->n, job->r, job->p, dk, 32) != 0)
      return errno == ENOMEM ? TG_ENOMEM : TG_EKEYSTORE_KDF;
    return TG_OK;
  }
  if (job->c > INT_MAX || pw_len > INT_MAX) return TG_EKEYSTORE_KDF;
  if (PKCS5_PBKDF2_HMAC(pw, (int)pw_len, job->salt, (int)job->salt_len, (int)job->c,
                        EVP_sha256(), 32, dk) != 1)
    return TG_EKEYSTORE_KDF;
  return TG_OK;
}

/* AES-128-CTR in either direction (CTR is its own inverse). */
static int aes128ctr(uint8_t *out, const uint8_t key[16], const uint8_t iv[16], const uint8_t *in,
                     size_t len) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (!c) return TG_ENOMEM;
  int n1 = 0, n2 = 0, rc = TG_EINTERNAL;
  if (EVP_EncryptInit_ex(c, EVP_aes_128_ctr(), NULL, key, iv) == 1 &&
      EVP_EncryptUpdate(c, out, &n1, in, (int)len) == 1 &&
      EVP_EncryptFinal_ex(c, out + n1, &n2) == 1 && (size_t)(n1 + n2) == len)
    rc = TG_OK;
  EVP_CIPHER_CTX_free(c); /* cleanses the key schedule */
  return rc;
}

static void mac_of(tg_hash *out, const uint8_t dk[32], const uint8_t *ct, size_t len) {
  tg_keccak_ctx ctx;
  tg_keccak256_init(&ctx);
  tg_keccak256_update(&ctx, dk + 16, 16);
  tg_keccak256_update(&ctx, ct, len);
  tg_keccak256_final(&ctx, out);
}

int tg_keystore_decrypt(tg_seckey *key, const char *json, size_t json_len, const char *password,
                        size_t password_len, const tg_keystore_limits *limits) {
  if (!key) return TG_EINVAL;
  sodium_memzero(key->b, sizeof key->b);
  if (!json || (!password && password_len)) return TG_EINVAL;
  if (json_len > TG_KEYSTORE_MAX_JSON || password_len > MAX_PASSWORD) return TG_ETOOBIG;
  int rc = tg_secp_init();
  if (rc) return rc;
  tg_keystore_limits lim;
  if (limits) lim = *limits;
  else tg_keystore_limits_default(&lim);

  json_error_t jerr;
  json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) return TG_EJSON;
  if (!json_is_object(root)) {
    json_decref(root);
    return TG_EKEYSTORE;
  }
  kdf_job *job = calloc(1, sizeof *job);
  secrets *sec = sodium_malloc(sizeof *sec);
  if (!job || !sec) {
    rc = TG_ENOMEM;
    goto out;
  }
  if ((rc = parse_crypto(job, root, &lim)) != 0) goto out;

  /* Optional "address": parsed before any work so a malformed one costs nothing. */
  tg_address want;
  int have_addr = 0;
  json_t *addr = json_object_get(root, "address");
  if (addr) {
    if (!json_is_string(addr) ||
        tg_address_parse(&want, json_string_value(addr), json_string_length(addr)) != 0) {
      rc = TG_EKEYSTORE;
      goto out;
    }
    have_addr = 1;
  }

  if ((rc = derive(sec->dk, job, password ? password : "", password_len)) != 0) goto out;
  tg_hash mac;
  mac_of(&mac, sec->dk, job->ct, job->ct_len);
  if (sodium_memcmp(mac.b, job->mac, 32) != 0) {
    rc = TG_EKEYSTORE_MAC;
    goto out;
  }
  /* Short plaintexts are keys with dropped leading zero bytes: left-pad. */
  memset(sec->plain, 0, sizeof sec->plain);
  if ((rc = aes128ctr(sec->plain + 32 - job->ct_len, sec->dk, job->iv, job->ct, job->ct_len)) != 0)
    goto out;
  if ((rc = tg_seckey_set(key, sec->plain)) != 0) goto out;
  if (have_addr) {
    tg_address got;
    if ((rc = tg_seckey_address(&got, key)) != 0) goto out;
    if (!tg_address_eq(&got, &want)) rc = TG_EKEYSTORE_ADDRESS;
  }
out:
  if (rc) sodium_memzero(key->b, sizeof key->b);
  if (sec) sodium_free(sec); /* sodium_free wipes */
  free(job);
  json_decref(root);
  return rc;
}

int tg_keystore_decrypt_file(tg_seckey *key, const char *path, const char *password,
                             size_t password_len, const tg_keystore_limits *limits) {
  if (!key) return TG_EINVAL;
  sodium_memzero(key->b, sizeof key->b);
  if (!path) return TG_EINVAL;
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
  char *buf = malloc(TG_KEYSTORE_MAX_JSON + 1);
  if (!buf) {
    fclose(f);
    return TG_ENOMEM;
  }
  size_t n = fread(buf, 1, TG_KEYSTORE_MAX_JSON + 1, f);
  int err = ferror(f);
  fclose(f);
  int rc;
  if (err) rc = TG_EIO;
  else if (n > TG_KEYSTORE_MAX_JSON) rc = TG_ETOOBIG;
  else rc = tg_keystore_decrypt(key, buf, n, password, password_len, limits);
  free(buf);
  return rc;
}

int tg_uuid_v4(char out[TG_KEYSTORE_UUID_LEN]) {
  if (!out) return TG_EINVAL;
  if (sodium_init() < 0) return TG_ECRYPTO_INIT;
  uint8_t b[16];
  randombytes_buf(b, sizeof b);
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  static const char d[] = "0123456789abcdef";
  size_t o = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = d[b[i] >> 4];
    out[o++] = d[b[i] & 15];
  }
  out[o] = 0;
  return TG_OK;
}

int tg_keystore_encrypt(tg_buf *out, char id[TG_KEYSTORE_UUID_LEN], const tg_seckey *key,
                        const char *password, size_t password_len,
                        const tg_keystore_params *params) {
  if (id) id[0] = 0;
  if (!out || !key || (!password && password_len)) return TG_EINVAL;
  if (password_len > MAX_PASSWORD) return TG_ETOOBIG;
  int rc = tg_secp_init();
  if (rc) return rc;
  tg_keystore_params pr = {TG_KEYSTORE_SCRYPT_N, TG_KEYSTORE_SCRYPT_R, TG_KEYSTORE_SCRYPT_P};
  if (params) pr = *params;
  tg_keystore_limits lim;
  tg_keystore_limits_default(&lim);
  if ((rc = check_scrypt(pr.n, pr.r, pr.p, &lim)) != 0) return rc;

  tg_address addr;
  if ((rc = tg_seckey_address(&addr, key)) != 0) return rc;
  kdf_job *job = calloc(1, sizeof *job);
  secrets *sec = sodium_malloc(sizeof *sec);
  if (!job || !sec) {
    rc = TG_ENOMEM;
    goto out;
  }
  job->scrypt = 1;
  job->n = pr.n;
  job->r = pr.r;
  job->p = pr.p;
  job->salt_len = 32;
  randombytes_buf(job->salt, 32);
  randombytes_buf(job->iv, 16);
  job->ct_len = 32;
  char uuid[TG_KEYSTORE_UUID_LEN];
  if ((rc = tg_uuid_v4(uuid)) != 0) goto out;
  if ((rc = derive(sec->dk, job, password ? password : "", password_len)) != 0) goto out;
  if ((rc = aes128ctr(job->ct, sec->dk, job->iv, key->b, 32)) != 0) goto out;
  tg_hash mac;
  mac_of(&mac, sec->dk, job->ct, 32);

  char iv[33], ct[65], salt[65], mach[65], ah[TG_ADDRESS_HEX_LEN];
  tg_hex_encode(iv, job->iv, 16, 0);
  tg_hex_encode(ct, job->ct, 32, 0);
  tg_hex_encode(salt, job->salt, 32, 0);
  tg_hex_encode(mach, mac.b, 32, 0);
  tg_address_to_hex(&addr, ah);
  size_t before = out->len;
  rc = tg_buf_printf(out,
                     "{\"address\":\"%s\",\"crypto\":{\"cipher\":\"aes-128-ctr\",\"cipherparams\":"
                     "{\"iv\":\"%s\"},\"ciphertext\":\"%s\",\"kdf\":\"scrypt\",\"kdfparams\":"
                     "{\"dklen\":32,\"n\":%llu,\"p\":%u,\"r\":%u,\"salt\":\"%s\"},\"mac\":\"%s\"},"
                     "\"id\":\"%s\",\"version\":3}",
                     ah + 2, iv, ct, (unsigned long long)pr.n, pr.p, pr.r, salt, mach, uuid);
  if (rc) out->len = before;
  else if (id) memcpy(id, uuid, TG_KEYSTORE_UUID_LEN);
out:
  if (sec) sodium_free(sec);
  free(job);
  return rc;
}

static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return TG_EIO;
    }
    p += w;
    len -= (size_t)w;
  }
  return TG_OK;
}

int tg_keystore_write_file(const char *path, const void *data, size_t len, int overwrite) {
  if (!path || (!data && len)) return TG_EINVAL;
  size_t plen = strlen(path);
  if (plen == 0 || plen > 4000) return TG_EINVAL;
  char tmp[4096];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof tmp) return TG_EINVAL;
  if (!overwrite && access(path, F_OK) == 0) return TG_EEXISTS;
  int fd = mkstemp(tmp); /* mode 0600 */
  if (fd < 0) return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
  int rc = TG_OK;
  if (fchmod(fd, S_IRUSR | S_IWUSR) != 0) rc = TG_EIO;
  if (!rc) rc = write_all(fd, data, len);
  if (!rc && fsync(fd) != 0) rc = TG_EIO;
  if (close(fd) != 0 && !rc) rc = TG_EIO;
  if (!rc) {
    if (overwrite) {
      if (rename(tmp, path) != 0) rc = TG_EIO;
    } else if (link(tmp, path) != 0) {
      /* link never replaces an existing file: the no-clobber check without a race. */
      rc = errno == EEXIST ? TG_EEXISTS : TG_EIO;
    }
  }
  if (rc || !overwrite) unlink(tmp);
  return rc;
}

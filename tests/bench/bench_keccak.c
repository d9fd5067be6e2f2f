/* Benchmark: Keccak-256 throughput for 32 B, 1 KiB and 1 MiB inputs beside OpenSSL's SHA3-256. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "tollgate/keccak.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Hashes `len` bytes repeatedly for about `secs` seconds; returns MB/s (10^6 bytes). */
static double run_tollgate(const uint8_t *buf, size_t len, double secs) {
  tg_hash h;
  uint64_t iters = 0;
  double t0 = now(), t;
  do {
    for (int i = 0; i < 64; i++) {
      tg_keccak256(&h, buf, len);
      iters++;
    }
    t = now();
  } while (t - t0 < secs);
  if (h.b[0] == 0x42 && h.b[1] == 0x42) fputc(' ', stderr); /* keep the result live */
  return (double)iters * (double)len / (t - t0) / 1e6;
}

static double run_openssl(const uint8_t *buf, size_t len, double secs) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  const EVP_MD *md = EVP_sha3_256();
  unsigned char out[32];
  unsigned int outlen;
  uint64_t iters = 0;
  double t0 = now(), t;
  do {
    for (int i = 0; i < 64; i++) {
      EVP_DigestInit_ex(ctx, md, NULL);
      EVP_DigestUpdate(ctx, buf, len);
      EVP_DigestFinal_ex(ctx, out, &outlen);
      iters++;
    }
    t = now();
  } while (t - t0 < secs);
  EVP_MD_CTX_free(ctx);
  if (out[0] == 0x42 && out[1] == 0x42) fputc(' ', stderr);
  return (double)iters * (double)len / (t - t0) / 1e6;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? strtod(argv[1], NULL) : 1.0;
  static const size_t sizes[] = {32, 1024, 1 << 20};
  static const char *names[] = {"32 B", "1 KiB", "1 MiB"};
  uint8_t *buf = malloc(1 << 20);
  for (size_t i = 0; i < (1 << 20); i++) buf[i] = (uint8_t)(i * 7 + 3);
  printf("%-8s %14s %18s %8s\n", "input", "keccak256 MB/s", "OpenSSL SHA3 MB/s", "ratio");
  for (int i = 0; i < 3; i++) {
    double a = run_tollgate(buf, sizes[i], secs);
    double b = run_openssl(buf, sizes[i], secs);
    printf("%-8s %14.1f %18.1f %8.2f\n", names[i], a, b, a / b);
  }
  free(buf);
  return 0;
}

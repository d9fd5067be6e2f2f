/* The error table's lookups: names, messages and HTTP statuses of tg_err codes. */
#include "tollgate/error.h"

const char *tg_err_name(int err) {
  switch (err) {
#define XX(name, code, http, msg) \
  case code:                      \
    return "TG_E" #name;
    TG_ERRNO_MAP(XX)
#undef XX
  }
  return "TG_EUNKNOWN";
}

const char *tg_strerror(int err) {
  switch (err) {
#define XX(name, code, http, msg) \
  case code:                      \
    return msg;
    TG_ERRNO_MAP(XX)
#undef XX
  }
  return "unknown error";
}

int tg_err_http_status(int err) {
  switch (err) {
#define XX(name, code, http, msg) \
  case code:                      \
    return http;
    TG_ERRNO_MAP(XX)
#undef XX
  }
  return 500;
}

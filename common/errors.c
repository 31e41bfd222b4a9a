/* Error codes and messages: nd_strerror/nd_errname from the ND_ERRNO_MAP
 * X-macro table, the per-handle error buffer (nd_errmsg) and the private
 * helpers that record errors on it (nd__seterr and friends). */
#include <stdio.h>
#include <string.h>

#include "common/core_int.h"

const char *nd_strerror(int code) {
  switch (code) {
#define ND__ERRSTR(name, value, msg)                                           \
  case ND_##name:                                                              \
    return msg;
    ND_ERRNO_MAP(ND__ERRSTR)
#undef ND__ERRSTR
  default:
    return "unknown error";
  }
}

const char *nd_errname(int code) {
  switch (code) {
#define ND__ERRNAME(name, value, msg)                                          \
  case ND_##name:                                                              \
    return "ND_" #name;
    ND_ERRNO_MAP(ND__ERRNAME)
#undef ND__ERRNAME
  default:
    return "ND_EUNKNOWN";
  }
}

/* Every public handle struct begins with an nd__errbuf, so the handle pointer
 * is also a pointer to its error buffer. */
const char *nd_errmsg(const void *handle) {
  const nd__errbuf *e = handle;
  if (e == NULL || e->code == ND_OK)
    return "";
  return e->msg;
}

int nd__vseterr(nd__errbuf *e, int code, const char *fmt, va_list ap) {
  if (e == NULL)
    return code;
  e->code = code;
  if (fmt == NULL || vsnprintf(e->msg, sizeof e->msg, fmt, ap) < 0)
    snprintf(e->msg, sizeof e->msg, "%s", nd_strerror(code));
  return code;
}

int nd__seterr(nd__errbuf *e, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  nd__vseterr(e, code, fmt, ap);
  va_end(ap);
  return code;
}

void nd__clearerr(nd__errbuf *e) {
  if (e == NULL)
    return;
  e->code = ND_OK;
  e->msg[0] = '\0';
}

/* The models layer's per-thread error message: its functions work on
 * matrices, not on a handle, so the message naming the row, column or fold
 * lives in thread-local storage (nd_models_errmsg). */
#include <stdio.h>

#include "models/models_int.h"

static _Thread_local nd__errbuf nd__models_err;

int nd__merr(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  nd__vseterr(&nd__models_err, code, fmt, ap);
  va_end(ap);
  return code;
}

void nd__merr_clear(void) { nd__clearerr(&nd__models_err); }

/* The message is copied first: nd__merr formats into the buffer it reads. */
int nd__merr_prefix(int code, const char *prefix) {
  char msg[ND__ERRMSG_MAX];
  snprintf(msg, sizeof msg, "%s", nd__models_err.msg);
  return nd__merr(code, "%s: %s", prefix, *msg ? msg : nd_strerror(code));
}

const char *nd_models_errmsg(void) { return nd__models_err.msg; }

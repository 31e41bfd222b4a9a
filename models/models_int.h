/* Internal interface of the models layer (not installed). */
#ifndef NIDAG_MODELS_INT_H
#define NIDAG_MODELS_INT_H

#include <stdarg.h>

#include "common/core_int.h"
#include "nidag/models.h"

/* Record the calling thread's models error message (see nd_models_errmsg)
 * and return code, for `return nd__merr(ND_EINVAL, "...", ...)`. */
int nd__merr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nd__merr_clear(void);

#endif

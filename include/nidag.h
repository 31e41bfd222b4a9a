/* nidag: lazy neuroimaging machine-learning dataflow graphs. Umbrella header:
 * include this, link with -lnidag. One header per module under nidag/. */
#ifndef NIDAG_H
#define NIDAG_H

#include "nidag/core.h"
#include "nidag/runtime.h"
#include "nidag/cache.h"
#include "nidag/graph.h"
#include "nidag/neuro.h"
#include "nidag/models.h"
#include "nidag/dti.h"

#define NIDAG_VERSION_MAJOR 0
#define NIDAG_VERSION_MINOR 1
#define NIDAG_VERSION_PATCH 0
#define NIDAG_VERSION_STRING "0.1.0"

#endif /* NIDAG_H */

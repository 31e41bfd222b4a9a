/* Shared by the files of `nidag demo` (cmd_demo.c, demo_out.c). */
#ifndef NIDAG_TOOLS_DEMO_INT_H
#define NIDAG_TOOLS_DEMO_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "nidag.h"

#define DEMO_MAX_ATLAS 16
#define DEMO_MAX_MODELS (DEMO_MAX_ATLAS + 3) /* the atlases, then vote, grid, stack */
#define DEMO_FOLDS 5

typedef struct demo_atlas {
  const char *name; /* on the command line */
  const char *file; /* in the templates directory */
} demo_atlas;

extern const demo_atlas DEMO_ATLASES[];
extern const size_t DEMO_NATLASES;

/* One target's experiment and its scores: model m is atlas m (m < natlas)
 * or the ensemble m - natlas (nd_ensemble order: vote, grid, stack). */
typedef struct demo_result {
  const char *name;   /* participants.tsv column (owned by the participants table) */
  size_t column;
  bool binary;        /* logistic + ROC AUC, else ridge + R² */
  nd_experiment_nodes nodes;
  double mean[DEMO_MAX_MODELS], sd[DEMO_MAX_MODELS];
  double fold[DEMO_MAX_MODELS][DEMO_FOLDS];
} demo_result;

/* demo_out.c */
void demo_print_table(const demo_result *r, size_t ntargets, const char *const *atlases,
                      size_t natlas);
/* "checksum <hex>" of every score (bits), the same for any thread count. */
void demo_checksum(const demo_result *r, size_t ntargets, size_t natlas);
/* results.csv, results.json and the plot (strategies.svg through gnuplot,
 * when it is installed) in dir. 0, or -1 after printing why. */
int demo_write_outputs(const char *dir, const demo_result *r, size_t ntargets,
                       const char *const *atlases, size_t natlas, size_t participants);

#endif

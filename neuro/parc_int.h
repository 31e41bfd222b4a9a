/* Private helpers shared by grid.c, resample.c, atlas.c and parcellate.c:
 * element access for any dtype, affine formatting, and the atlas scan (runs
 * of labels) that nd_atlas_labels and nd_parcellate both use. */
#ifndef NIDAG_NEURO_PARC_INT_H
#define NIDAG_NEURO_PARC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "neuro/neuro_int.h"

/* "(z, y, x) affine [[..], [..], [..]]" of a's last three axes, into buf. */
void nd__format_grid(const nd_array *a, char *buf, size_t cap);

/* Runs of consecutive voxels (flat index order) sharing a value: a label
 * atlas's non-zero labels (nd__atlas_runs), or parcellation columns once
 * parcellate.c has mapped them. Runs longer than UINT32_MAX voxels are
 * split. The three arrays are nd_malloc'd and grow together (cap). */
typedef struct nd__runs {
  size_t *at;    /* first voxel of each run */
  uint32_t *len; /* its voxel count, >= 1 */
  int64_t *val;  /* its label (> 0) or column (>= 0) */
  size_t n, cap;
} nd__runs;

void nd__runs_free(nd__runs *r); /* frees the arrays, leaves r empty */

/* Append a run (split when len > UINT32_MAX). ND_ENOMEM. */
int nd__runs_push_slow(nd__runs *r, size_t at, size_t len, int64_t val);
static inline int nd__runs_push(nd__runs *r, size_t at, size_t len, int64_t val) {
  if (r->n == r->cap || len > UINT32_MAX) return nd__runs_push_slow(r, at, len, val);
  r->at[r->n] = at;
  r->len[r->n] = (uint32_t)len;
  r->val[r->n++] = val;
  return 0;
}

/* Validate every value of a label atlas (non-negative integers; floats
 * finite and at most 2^53; integers fitting int64) and collect its runs of
 * equal non-zero labels, in one pass (*runs, empty when every voxel is 0;
 * *max gets the largest label, 0 when none). On an invalid value nothing is
 * returned and the message names the first offending voxel. `what` names the
 * array in messages ("atlas"). Errors (recorded with nd__nerr): ND_EINVAL,
 * ND_ENOMEM. */
int nd__atlas_runs(const nd_array *atlas, const char *what, nd__runs *runs, int64_t *max);

/* The sorted unique labels of runs from nd__atlas_runs (largest max) on an
 * atlas of nvox voxels, into a new nd_malloc'd array (*labels, *n; NULL/0
 * when there are none). Errors: ND_ENOMEM (recorded, naming `what`). */
int nd__runs_labels(const nd__runs *runs, int64_t max, size_t nvox, const char *what,
                    int64_t **labels, size_t *n);

#endif /* NIDAG_NEURO_PARC_INT_H */

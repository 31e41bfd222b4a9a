/* Cross-validation fold assignment (nd_cv_assign): scikit-learn 1.2's KFold
 * and StratifiedKFold, exactly when unshuffled, and K-fold over sorted group
 * ids. Shuffles draw from the runtime's counter-based generator (nd_rng,
 * Philox4x32-10) keyed by cv->seed, so they are reproducible across
 * platforms and threads but do not match numpy's.
 *
 * How StratifiedKFold allocates (sklearn's _make_test_folds): classes are
 * numbered by first appearance; the encoded labels are sorted and dealt
 * round-robin to the k folds, so fold f receives from class c as many slots
 * as there are positions p == f (mod k) inside class c's block of the sorted
 * labels; class c's rows, in row order, take its slots fold by fold (fold 0's
 * first). The counts come from arithmetic on the block bounds, so the sorted
 * labels are never materialised. Shuffled, each class's slot list is
 * permuted before the rows take it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/models_int.h"
#include "nidag/runtime.h"

/* The generator of a shuffled split: the stream keyed (seed, 0). */
static void nd__cv_rng(const nd_cv *cv, nd_rng *g) {
  nd_rng_init(g, (nd_hash128){.lo = cv->seed, .hi = 0});
}

/* Fisher-Yates over a[0..n). */
static void nd__shuffle(nd_rng *g, size_t *a, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)nd_rng_below(g, i);
    size_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}

/* KFold's fold of position p among n: the first n % k folds have one more. */
static int32_t nd__kfold_of(size_t p, size_t n, size_t k) {
  size_t small = n / k, extra = n % k, big_span = extra * (small + 1);
  if (p < big_span)
    return (int32_t)(p / (small + 1));
  return (int32_t)(extra + (p - big_span) / small);
}

static int nd__assign_kfold(const nd_cv *cv, size_t n, int32_t *fold) {
  if (!cv->shuffle) {
    for (size_t i = 0; i < n; i++) fold[i] = nd__kfold_of(i, n, cv->k);
    return ND_OK;
  }
  size_t *perm = nd_calloc(n, sizeof *perm);
  if (perm == NULL)
    return nd__merr(ND_ENOMEM, "k-fold: no memory to permute %zu rows", n);
  for (size_t i = 0; i < n; i++) perm[i] = i;
  nd_rng g;
  nd__cv_rng(cv, &g);
  nd__shuffle(&g, perm, n);
  for (size_t p = 0; p < n; p++) fold[perm[p]] = nd__kfold_of(p, n, cv->k);
  nd_free(perm);
  return ND_OK;
}

/* ------------------------------------------------------------ stratified */

typedef struct nd__keyed {
  double y;
  size_t row;
} nd__keyed;

static int nd__keyed_cmp(const void *a, const void *b) {
  const nd__keyed *x = a, *y = b;
  if (x->y != y->y)
    return x->y < y->y ? -1 : 1;
  return (x->row > y->row) - (x->row < y->row);
}

/* Positions p in [0, m) with p == f (mod k). */
static size_t nd__residue_count(size_t m, size_t f, size_t k) {
  return m > f ? (m - f + k - 1) / k : 0;
}

/* Encode labels by first appearance: cls[i] in [0, *ncls). */
static int nd__encode_classes(const double *y, size_t n, size_t *cls, size_t *ncls) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(y[i]))
      return nd__merr(ND_EINVAL, "stratified folds: the label of row %zu is %s", i,
                      isnan(y[i]) ? "NaN" : "infinite");
  nd__keyed *key = nd_calloc(n, sizeof *key);
  size_t *code = nd_calloc(n, sizeof *code); /* sorted-unique index -> class */
  if (key == NULL || code == NULL) {
    nd_free(key);
    nd_free(code);
    return nd__merr(ND_ENOMEM, "stratified folds: no memory for %zu labels", n);
  }
  for (size_t i = 0; i < n; i++) key[i] = (nd__keyed){y[i], i};
  qsort(key, n, sizeof *key, nd__keyed_cmp);
  /* cls[] first holds each row's rank among the distinct values. */
  size_t nuniq = 0;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && key[i].y != key[i - 1].y)
      nuniq++;
    cls[key[i].row] = nuniq;
  }
  nuniq++;
  for (size_t u = 0; u < nuniq; u++) code[u] = SIZE_MAX;
  size_t next = 0;
  for (size_t i = 0; i < n; i++) {
    if (code[cls[i]] == SIZE_MAX)
      code[cls[i]] = next++;
    cls[i] = code[cls[i]];
  }
  *ncls = nuniq;
  nd_free(key);
  nd_free(code);
  return ND_OK;
}

/* Class c's fold slots, ascending: the residues mod k of the positions in
 * its block [start, start + count) of the sorted labels. A block of at least
 * k positions is counted residue by residue; a shorter one is a run of
 * consecutive residues that wraps past k - 1 at most once. */
static void nd__class_slots(size_t start, size_t count, size_t k, size_t *slots) {
  size_t s = 0;
  if (count >= k) {
    for (size_t f = 0; f < k; f++) {
      size_t take = nd__residue_count(start + count, f, k) - nd__residue_count(start, f, k);
      for (size_t t = 0; t < take; t++) slots[s++] = f;
    }
    return;
  }
  size_t r0 = start % k, tail = count < k - r0 ? count : k - r0, wrapped = count - tail;
  for (size_t f = 0; f < wrapped; f++) slots[s++] = f;
  for (size_t f = r0; f < r0 + tail; f++) slots[s++] = f;
}

/* The rows of one class (byrow, in row order) take its slots in order,
 * after a shuffle of the slots when g is set. */
static void nd__deal_class(const size_t *byrow, size_t start, size_t count, size_t k,
                           size_t *slots, nd_rng *g, int32_t *fold) {
  nd__class_slots(start, count, k, slots);
  if (g != NULL)
    nd__shuffle(g, slots, count);
  for (size_t r = 0; r < count; r++) fold[byrow[r]] = (int32_t)slots[r];
}

static int nd__assign_stratified(const nd_cv *cv, size_t n, const double *y, int32_t *fold) {
  if (y == NULL)
    return nd__merr(ND_EINVAL, "stratified folds need the labels (y is NULL)");
  size_t *cls = nd_calloc(n, sizeof *cls);
  size_t *first = NULL, *byrow = NULL, *slots = NULL;
  size_t ncls = 0;
  int rc = cls ? nd__encode_classes(y, n, cls, &ncls)
               : nd__merr(ND_ENOMEM, "stratified folds: no memory for %zu labels", n);
  if (rc != ND_OK)
    goto out;
  /* Counting sort of rows by class, stable: first[c] .. first[c + 1]. */
  first = nd_calloc(ncls + 1, sizeof *first);
  byrow = nd_calloc(n, sizeof *byrow);
  slots = nd_calloc(n, sizeof *slots);
  if (first == NULL || byrow == NULL || slots == NULL) {
    rc = nd__merr(ND_ENOMEM, "stratified folds: no memory for %zu rows", n);
    goto out;
  }
  for (size_t i = 0; i < n; i++) first[cls[i] + 1]++;
  size_t largest = 0;
  for (size_t c = 0; c < ncls; c++) {
    if (first[c + 1] > largest)
      largest = first[c + 1];
    first[c + 1] += first[c];
  }
  if (cv->k > largest) {
    rc = nd__merr(ND_EINVAL, "%u stratified folds but no class has %u rows (the largest has %zu)",
                  (unsigned)cv->k, (unsigned)cv->k, largest);
    goto out;
  }
  /* Place each row at its class's cursor; afterwards first[c] has moved to
   * the end of class c, so shift the bounds back by one class. */
  for (size_t i = 0; i < n; i++) byrow[first[cls[i]]++] = i;
  for (size_t c = ncls; c > 0; c--) first[c] = first[c - 1];
  first[0] = 0;
  nd_rng g;
  nd__cv_rng(cv, &g);
  for (size_t c = 0; c < ncls; c++)
    nd__deal_class(byrow + first[c], first[c], first[c + 1] - first[c], cv->k, slots,
                   cv->shuffle ? &g : NULL, fold);
out:
  nd_free(cls);
  nd_free(first);
  nd_free(byrow);
  nd_free(slots);
  return rc;
}

/* ----------------------------------------------------------------- groups */

static int nd__cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int nd__assign_group(const nd_cv *cv, size_t n, const int64_t *groups,
                            int32_t *fold) {
  if (groups == NULL)
    return nd__merr(ND_EINVAL, "group folds need the group ids (groups is NULL)");
  int64_t *uniq = nd_calloc(n, sizeof *uniq);
  size_t *order = nd_calloc(n, sizeof *order);
  int32_t *gfold = nd_calloc(n, sizeof *gfold);
  int rc = ND_OK;
  if (uniq == NULL || order == NULL || gfold == NULL) {
    rc = nd__merr(ND_ENOMEM, "group folds: no memory for %zu rows", n);
    goto out;
  }
  memcpy(uniq, groups, n * sizeof *uniq);
  qsort(uniq, n, sizeof *uniq, nd__cmp_i64);
  size_t ng = 0;
  for (size_t i = 0; i < n; i++)
    if (ng == 0 || uniq[i] != uniq[ng - 1])
      uniq[ng++] = uniq[i];
  if (ng < cv->k) {
    rc = nd__merr(ND_EINVAL, "%zu groups cannot make %u folds", ng, (unsigned)cv->k);
    goto out;
  }
  /* order[p] is the sorted-group index at position p of the fold list. */
  for (size_t u = 0; u < ng; u++) order[u] = u;
  if (cv->shuffle) {
    nd_rng g;
    nd__cv_rng(cv, &g);
    nd__shuffle(&g, order, ng);
  }
  for (size_t p = 0; p < ng; p++) gfold[order[p]] = nd__kfold_of(p, ng, cv->k);
  for (size_t i = 0; i < n; i++) {
    const int64_t *hit = bsearch(&groups[i], uniq, ng, sizeof *uniq, nd__cmp_i64);
    fold[i] = gfold[hit - uniq];
  }
out:
  nd_free(uniq);
  nd_free(order);
  nd_free(gfold);
  return rc;
}

/* Every fold must hold a row: a check on the result, whatever the kind. */
static int nd__check_nonempty(const int32_t *fold, size_t n, uint32_t k) {
  size_t *count = nd_calloc(k, sizeof *count);
  if (count == NULL)
    return nd__merr(ND_ENOMEM, "cv: no memory for %u fold counts", (unsigned)k);
  for (size_t i = 0; i < n; i++) count[fold[i]]++;
  int rc = ND_OK;
  for (uint32_t f = 0; f < k && rc == ND_OK; f++)
    if (count[f] == 0)
      rc = nd__merr(ND_EINVAL, "fold %u of %u is empty", (unsigned)f, (unsigned)k);
  nd_free(count);
  return rc;
}

int nd_cv_assign(const nd_cv *cv, size_t n, const double *y, const int64_t *groups,
                 int32_t *fold) {
  if (cv == NULL || (fold == NULL && n > 0))
    return nd__merr(ND_EINVAL, "nd_cv_assign: NULL cv or fold array");
  if (cv->k < 2)
    return nd__merr(ND_EINVAL, "k = %u folds: cross-validation needs at least 2",
                    (unsigned)cv->k);
  if (cv->k > INT32_MAX)
    return nd__merr(ND_EINVAL, "k = %u folds: more than int32 fold ids can hold",
                    (unsigned)cv->k);
  if (n < cv->k)
    return nd__merr(ND_EINVAL, "%zu rows cannot make %u folds", n, (unsigned)cv->k);
  int rc;
  switch (cv->kind) {
  case ND_CV_KFOLD:
    rc = nd__assign_kfold(cv, n, fold);
    break;
  case ND_CV_STRATIFIED:
    rc = nd__assign_stratified(cv, n, y, fold);
    break;
  case ND_CV_GROUP:
    rc = nd__assign_group(cv, n, groups, fold);
    break;
  default:
    return nd__merr(ND_EINVAL, "unknown cross-validation kind %d", (int)cv->kind);
  }
  if (rc != ND_OK)
    return rc;
  return nd__check_nonempty(fold, n, cv->k);
}

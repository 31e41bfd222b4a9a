/* A whole experiment as graph nodes (nd_experiment_add): per feature set
 * and outer fold the full fit and the inner fits, per strategy and fold the
 * ensemble, and the score nodes.
 *
 * Sharing is structural: a fit node is (nd.fit, its params, X, y[, groups]),
 * and its params hold only what changes its result (op_params.c), so the
 * same set, fold and pipeline give the same node in any pool, in this graph
 * (nd_graph_add returns the earlier id) or in the next run (the same key).
 * Inputs follow the same rule: the groups input is attached only to nodes
 * whose splits are grouped, and a voting ensemble takes only the members'
 * full fits, so building voting targets alone computes no inner fit. */
#include <stdio.h>
#include <string.h>

#include "models/ops_int.h"

#define ND__LABEL_MAX 256
#define ND__NAME_MAX 160 /* a set name in labels (longer names are cut) */

static const char *const strategy_label[] = {"vote", "grid", "stack"};

typedef struct xb {
  nd_graph *g;
  const nd_experiment_spec *spec;
  int64_t y, groups;
  int64_t *in; /* input scratch */
} xb;

/* Add a node over b->in[0..nin) and free its params. */
static int add(xb *b, const nd_op *op, int rc, void *params, size_t len, size_t nin,
               const char *label, int64_t *out) {
  if (!rc) {
    rc = nd_graph_add(b->g, op, params, len, b->in, nin, label, out);
    if (rc) rc = nd__merr(rc, "%s", nd_errmsg(b->g));
  }
  nd_free(params);
  return rc;
}

/* y, then the groups when the node's splits use them; the input count. */
static size_t head(xb *b, bool grouped) {
  b->in[0] = b->y;
  if (!grouped) return 1;
  b->in[1] = b->groups;
  return 2;
}

static bool is_group(const nd_cv *cv) { return cv->kind == ND_CV_GROUP; }

/* Whether a fit's splits use the groups (given ones only: without groups
 * the encoder refuses a grouped split with a clear message). */
static bool fit_grouped(const xb *b, bool inner) {
  const nd_fit_spec *f = &b->spec->fit;
  bool uses = is_group(&f->outer) || (f->pipeline.ngrid > 1 && is_group(&f->pipeline.inner)) ||
              (inner && is_group(&f->inner));
  return uses && b->groups >= 0;
}

static int add_fits(xb *b, int64_t set, const char *name, uint32_t f, nd_experiment_nodes *o,
                    size_t s) {
  char label[ND__LABEL_MAX];
  void *p;
  size_t len;
  bool grouped = fit_grouped(b, false);
  b->in[0] = set;
  b->in[1] = b->y;
  b->in[2] = b->groups;
  int rc = nd_fit_params(&b->spec->fit, grouped, (int)f, -1, &p, &len);
  snprintf(label, sizeof label, "fit %s f%u", name, f);
  rc = add(b, &nd_op_fit, rc, p, len, grouped ? 3 : 2, label, &o->fit_full[s * o->nouter + f]);
  grouped = fit_grouped(b, true);
  for (uint32_t i = 0; !rc && i < o->ninner; i++) {
    rc = nd_fit_params(&b->spec->fit, grouped, (int)f, (int)i, &p, &len);
    snprintf(label, sizeof label, "fit %s f%u inner%u", name, f, i);
    rc = add(b, &nd_op_fit, rc, p, len, grouped ? 3 : 2, label,
             &o->fit_inner[(s * o->nouter + f) * o->ninner + i]);
  }
  return rc;
}

/* A cv_score node over the k fold nodes in folds[]. */
static int add_score(xb *b, const int64_t *folds, uint32_t k, const char *label,
                     int64_t *out) {
  const nd_cv *outer = &b->spec->fit.outer;
  bool grouped = is_group(outer) && b->groups >= 0;
  size_t nin = head(b, grouped);
  for (uint32_t f = 0; f < k; f++) b->in[nin++] = folds[f];
  void *p;
  size_t len;
  int rc = nd_cv_score_params(b->spec->metric, outer, grouped, &p, &len);
  return add(b, &nd_op_cv_score, rc, p, len, nin, label, out);
}

static int add_ensemble(xb *b, nd_ensemble kind, uint32_t f, nd_experiment_nodes *o) {
  const nd_experiment_spec *x = b->spec;
  nd_ensemble_spec es = {.kind = kind,
                         .task = x->fit.pipeline.model,
                         .metric = x->metric,
                         .meta_grid = x->meta_grid,
                         .nmeta = x->nmeta,
                         .tol = x->fit.pipeline.tol};
  bool with_inner = kind != ND_ENS_VOTE;
  bool grouped =
      (is_group(&x->fit.outer) || (with_inner && is_group(&x->fit.inner))) && b->groups >= 0;
  size_t nin = head(b, grouped);
  for (size_t s = 0; s < o->nsets; s++) {
    size_t at = s * o->nouter + f;
    b->in[nin++] = o->fit_full[at];
    for (uint32_t i = 0; with_inner && i < o->ninner; i++)
      b->in[nin++] = o->fit_inner[at * o->ninner + i];
  }
  void *p;
  size_t len;
  int rc = nd_ensemble_params(&es, &x->fit, grouped, (int)f, &p, &len);
  char label[ND__LABEL_MAX];
  snprintf(label, sizeof label, "%s f%u", strategy_label[kind], f);
  return add(b, &nd_op_ensemble, rc, p, len, nin, label, &o->ens[kind][f]);
}

static int alloc_nodes(nd_experiment_nodes *o, bool ensembles) {
  size_t nfull = o->nsets * o->nouter;
  o->fit_full = nd_malloc(nfull * sizeof *o->fit_full);
  o->set_score = nd_malloc(o->nsets * sizeof *o->set_score);
  if (!o->fit_full || !o->set_score) return ND_ENOMEM;
  if (!ensembles) return 0;
  o->fit_inner = nd_malloc(nfull * o->ninner * sizeof *o->fit_inner);
  if (!o->fit_inner) return ND_ENOMEM;
  for (int k = 0; k < 3; k++)
    if (!(o->ens[k] = nd_malloc(o->nouter * sizeof *o->ens[k]))) return ND_ENOMEM;
  return 0;
}

static int check_experiment(const nd_experiment_spec *spec, size_t nsets) {
  if (nsets == 0) return nd__merr(ND_EINVAL, "experiment: no feature sets");
  /* The encoders check everything else; the node arrays are sized by k. */
  if (spec->fit.outer.k < 2 || spec->fit.outer.k > ND__MAX_FOLDS)
    return nd__merr(ND_EINVAL, "experiment: the outer split needs 2 to %d folds, got %u",
                    ND__MAX_FOLDS, spec->fit.outer.k);
  if (spec->ensembles && (spec->fit.inner.k < 2 || spec->fit.inner.k > ND__MAX_FOLDS))
    return nd__merr(ND_EINVAL, "experiment: the ensembles' inner split needs 2 to %d folds, "
                               "got %u", ND__MAX_FOLDS, spec->fit.inner.k);
  return 0;
}

static int build(xb *b, const int64_t *sets, const char *const *set_names,
                 nd_experiment_nodes *o) {
  char name[ND__NAME_MAX], label[ND__LABEL_MAX];
  int rc = 0;
  for (size_t s = 0; !rc && s < o->nsets; s++) {
    if (set_names && set_names[s]) snprintf(name, sizeof name, "%s", set_names[s]);
    else snprintf(name, sizeof name, "set%zu", s);
    for (uint32_t f = 0; !rc && f < o->nouter; f++) rc = add_fits(b, sets[s], name, f, o, s);
    snprintf(label, sizeof label, "score %s", name);
    if (!rc)
      rc = add_score(b, o->fit_full + s * o->nouter, (uint32_t)o->nouter, label,
                     &o->set_score[s]);
  }
  if (!b->spec->ensembles) return rc;
  for (int k = 0; !rc && k < 3; k++) {
    for (uint32_t f = 0; !rc && f < o->nouter; f++) rc = add_ensemble(b, (nd_ensemble)k, f, o);
    snprintf(label, sizeof label, "score %s", strategy_label[k]);
    if (!rc) rc = add_score(b, o->ens[k], (uint32_t)o->nouter, label, &o->ens_score[k]);
  }
  return rc;
}

int nd_experiment_add(nd_graph *g, const nd_experiment_spec *spec, int64_t y,
                      int64_t groups, const int64_t *sets,
                      const char *const *set_names, size_t nsets, nd_experiment_nodes *out) {
  if (!out) return nd__merr(ND_EINVAL, "experiment: no output");
  memset(out, 0, sizeof *out);
  out->ens_score[0] = out->ens_score[1] = out->ens_score[2] = -1;
  if (!g || !spec || !sets) return nd__merr(ND_EINVAL, "experiment: NULL argument");
  int rc = check_experiment(spec, nsets);
  if (rc) return rc;
  out->nsets = nsets;
  out->nouter = spec->fit.outer.k;
  out->ninner = spec->ensembles ? spec->fit.inner.k : 0;
  /* Inputs of the widest node: an ensemble (y, groups, every member's fits)
   * or a score (y, groups, the folds). */
  size_t per = 1 + out->ninner, width = 2 + (out->nouter > 3 ? out->nouter : 3), members;
  /* nsets * nouter * per ids bound every array below (the fits, the set
   * scores, the ensembles, and the input scratch: nouter >= 2), so once
   * their bytes fit in a size_t no allocation size can wrap. */
  size_t bytes;
  if (!nd__mul_size(nsets, per, &members) || !nd__mul_size(members, out->nouter, &bytes) ||
      !nd__mul_size(bytes, sizeof(int64_t), &bytes))
    return nd__merr(ND_EOVERFLOW, "experiment: too many feature sets (%zu)", nsets);
  if (members + 2 > width) width = members + 2;
  xb b = {.g = g, .spec = spec, .y = y, .groups = groups < 0 ? -1 : groups};
  b.in = nd_malloc(width * sizeof *b.in);
  if (!b.in || alloc_nodes(out, spec->ensembles))
    rc = nd__merr(ND_ENOMEM, "experiment: out of memory");
  if (!rc) rc = build(&b, sets, set_names, out);
  nd_free(b.in);
  if (rc) {
    nd_experiment_nodes_free(out);
    out->ens_score[0] = out->ens_score[1] = out->ens_score[2] = -1;
  }
  return rc;
}

void nd_experiment_nodes_free(nd_experiment_nodes *n) {
  if (!n) return;
  nd_free(n->fit_full);
  nd_free(n->fit_inner);
  nd_free(n->set_score);
  for (int k = 0; k < 3; k++) nd_free(n->ens[k]);
  memset(n, 0, sizeof *n);
  n->ens_score[0] = n->ens_score[1] = n->ens_score[2] = -1;
}

/* What a run left behind: node states, target values, errors and the
 * report (nd_graph_state, nd_graph_get, nd_graph_error, nd_graph_report).
 * A node merged into an equal-key node answers with its rep's outcome. */
#include <stdio.h>

#include "graph/graph_int.h"

/* The node that stands for id in the last run (its rep). */
static const nd__gnode *resolved(const nd_graph *g, int64_t id) {
  const nd__gnode *n = &g->nodes[id];
  return n->keyst == ND__KEY_OK ? &g->nodes[n->rep] : n;
}

nd_graph_node_state nd_graph_state(const nd_graph *g, int64_t node) {
  if (!nd__gvalid(g, node)) return ND_GNODE_UNUSED;
  return (nd_graph_node_state)resolved(g, node)->state;
}

int nd_graph_get(nd_graph *g, int64_t node, nd_array **out) {
  if (out) *out = NULL;
  if (!nd__gvalid(g, node) || !out) return ND_EINVAL;
  const nd__gnode *own = &g->nodes[node];
  const nd__gnode *n = own->kind == ND__GK_CONST ? own : resolved(g, node);
  if (!n->value)
    return nd__seterr(&g->err, ND_ENOTFOUND, "node '%s' has no value (not a target, or %s)",
                      own->label, n->state == ND_GNODE_FAILED    ? "it failed"
                                  : n->state == ND_GNODE_SKIPPED ? "it was skipped"
                                                                 : "not computed");
  *out = nd_array_retain(n->value);
  return 0;
}

int nd_graph_error(const nd_graph *g, int64_t node, const char **msg) {
  if (msg) *msg = "";
  if (!nd__gvalid(g, node)) return ND_EINVAL;
  const nd__gnode *n = resolved(g, node);
  if (msg && n->msg && n->err) *msg = n->msg;
  return n->err;
}

size_t nd_graph_report(const nd_graph *g, FILE *out) {
  if (!g || !out) return 0;
  size_t lines = 0;
  for (size_t i = 0; i < g->n; i++) {
    const nd__gnode *n = &g->nodes[i];
    if (n->rflags & ND__R_CORRUPT) {
      fprintf(out, "corrupt %s: %s; recomputed\n", n->label,
              n->corrupt_msg ? n->corrupt_msg : "cached value failed verification");
      lines++;
    }
    if (n->state == ND_GNODE_FAILED) {
      fprintf(out, "failed  %s: %s: %s\n", n->label, nd_errname(n->err), n->msg ? n->msg : "");
      lines++;
    } else if (n->state == ND_GNODE_SKIPPED) {
      fprintf(out, "skipped %s: %s\n", n->label, n->msg ? n->msg : "upstream node failed");
      lines++;
    } else if (n->state == ND_GNODE_CANCELED) {
      fprintf(out, "canceled %s: not started, the run was canceled\n", n->label);
      lines++;
    }
  }
  return lines;
}

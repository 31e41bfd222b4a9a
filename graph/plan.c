/* Planning one round: top-down from the targets against the cache.
 *
 * The walk starts at the targets' reps and asks the cache about each op node
 * it reaches (nd_cache_has, which reads no payload). A hit is not expanded:
 * its inputs are never visited and nothing below it runs. A miss (or an
 * ND_OP_NO_CACHE op, which is never stored) is expanded into its inputs.
 * Keys were computed before the walk (keys.c), so the walk itself does one
 * cache lookup per visited op node and no other system call.
 *
 * Three passes over the visited nodes in id order (ids are a topological
 * order) then decide what runs:
 *  1. blocked: a source file that could not be digested, or an op that
 *     failed in an earlier round of this run, is failed; a miss with a
 *     blocked input is skipped and remembers the failed node as its cause;
 *  2. need: every input of a miss that will run must have a value, as must
 *     every target; uses counts the consumers that will read each value;
 *  3. roles: a needed hit gets a fetch task, a miss that is not blocked a
 *     compute task. Misses whose consumers are blocked still run: they are
 *     independent work and get cached.
 */
#include <string.h>

#include "graph/graph_int.h"

bool nd__plan_failed(const nd__gnode *n) {
  return (n->kind == ND__GK_FILE && n->keyst == ND__KEY_BAD) || (n->rflags & ND__R_FAILED);
}

static int walk(nd_graph *g, nd_cache *cache, nd__plan *p) {
  uint32_t *st = p->stack;
  size_t sp = 0;
  for (size_t i = 0; i < p->ntargets; i++) {
    nd__gnode *t = &g->nodes[p->targets[i]];
    t->flags |= ND__F_TARGET;
    st[sp++] = p->targets[i];
  }
  while (sp) {
    uint32_t id = st[--sp];
    nd__gnode *n = &g->nodes[id];
    if (n->flags & ND__F_VISITED) continue;
    n->flags |= ND__F_VISITED;
    if (!(n->rflags & ND__R_SEEN)) {
      n->rflags |= ND__R_SEEN;
      p->visited++;
    }
    if (nd__plan_failed(n)) {
      n->flags |= ND__F_BLOCKED;
      continue;
    }
    if (n->kind != ND__GK_OP) continue;
    if (n->value) { /* a target computed or fetched in an earlier round */
      n->flags |= ND__F_AVAIL;
      continue;
    }
    if (n->keyst == ND__KEY_OK && cache && !(n->op->flags & ND_OP_NO_CACHE)) {
      int rc = nd_cache_has(cache, n->key);
      if (rc < 0)
        return nd__seterr(&g->err, ND_EIO, "cache lookup for '%s' failed: %s", n->label,
                          nd_errmsg(cache));
      if (rc == 1) {
        n->flags |= ND__F_HIT;
        continue;
      }
    }
    n->flags |= ND__F_MISS;
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = n->nin; i-- > 0;) {
      uint32_t r = g->nodes[in[i]].rep;
      if (!(g->nodes[r].flags & ND__F_VISITED)) st[sp++] = r;
    }
  }
  return 0;
}

/* Pass 1: failures and skips, bottom-up in id order. */
static void block(nd_graph *g) {
  for (size_t id = 0; id < g->n; id++) {
    nd__gnode *n = &g->nodes[id];
    if ((n->flags & (ND__F_VISITED | ND__F_MISS)) != (ND__F_VISITED | ND__F_MISS)) continue;
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin; i++) {
      uint32_t r = g->nodes[in[i]].rep;
      const nd__gnode *x = &g->nodes[r];
      if (!(x->flags & ND__F_BLOCKED)) continue;
      n->flags |= ND__F_BLOCKED;
      n->cause = nd__plan_failed(x) ? r : x->cause;
      break;
    }
  }
}

/* Passes 2 and 3: values needed, consumer counts and roles. */
static void assign(nd_graph *g, nd__plan *p) {
  for (size_t id = 0; id < g->n; id++) {
    nd__gnode *n = &g->nodes[id];
    if ((n->flags & (ND__F_MISS | ND__F_BLOCKED)) != ND__F_MISS) continue;
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin; i++) {
      nd__gnode *x = &g->nodes[g->nodes[in[i]].rep];
      if (x->kind != ND__GK_OP) continue;
      x->flags |= ND__F_NEED;
      atomic_store_explicit(&x->uses, atomic_load_explicit(&x->uses, memory_order_relaxed) + 1,
                            memory_order_relaxed);
    }
  }
  p->ntasks = p->ncompute = 0;
  for (size_t id = 0; id < g->n; id++) {
    nd__gnode *n = &g->nodes[id];
    if (!(n->flags & ND__F_VISITED)) continue;
    if ((n->flags & ND__F_HIT) && (n->flags & (ND__F_NEED | ND__F_TARGET))) {
      n->role = ND__ROLE_FETCH;
      p->ntasks++;
    } else if ((n->flags & (ND__F_MISS | ND__F_BLOCKED)) == ND__F_MISS) {
      n->role = ND__ROLE_COMPUTE;
      p->ntasks++;
      p->ncompute++;
    }
  }
}

int nd__plan_round(nd_graph *g, nd_cache *cache, nd__plan *p) {
  p->visited = 0;
  int rc = walk(g, cache, p);
  if (rc) return rc;
  block(g);
  assign(g, p);
  return 0;
}

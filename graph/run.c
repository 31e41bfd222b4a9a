/* Running a graph: rounds of plan + execute, publishing each result as it
 * finishes, freeing values once their consumers are done, claims between
 * processes, recovery from corrupt entries and cancellation.
 *
 * A run is a loop of rounds. Each round plans top-down against the cache
 * (plan.c), turns the compute and fetch roles into an executor graph (one
 * task per node, edges from the inputs' tasks, memory costs from the op or
 * nd_graph_set_cost) and runs it. Tasks record what they did in their node's
 * outcome; the loop reads the outcomes after the executor returns, so no
 * state is shared between tasks except each value's consumer count.
 *
 * A compute task claims its key first (unless claims are off): OURS runs the
 * op, DONE reads the value another process just stored, BUSY defers the node
 * to the next round. A fetch that finds a corrupt entry (the cache has
 * deleted it) also defers. Tasks always return 0 to the executor: a task
 * whose op input has no value (it failed, was skipped or was deferred)
 * records ND__OUT_SKIPPED, releases its inputs and returns, so skipped
 * consumers count as done for freeing. After the round, collect() tells
 * real skips (an input failed) from internal ones behind a deferral, which
 * are not reported. Another round then replans: whatever this round computed
 * is now a hit, the corrupt entry is a miss and is recomputed, a busy node is
 * a hit once its owner is done (WAITED) or ours once the owner died. A busy
 * node that nothing of this run needs any more (its consumers are all
 * blocked and it is no target) is left to its owner: no round waits for it.
 * When a round makes no progress the loop sleeps poll_ms before replanning.
 * Failed nodes stay failed for the rest of the run (they are not retried in
 * later rounds).
 *
 * Values: a node's value is published (encoded, handed to nd_cache_put_take
 * with its recipe) as soon as it is computed. Each value carries a count of
 * the consumers that will read it in this round; the last one to finish
 * (computed, failed or skipped) releases it unless the node is a target.
 * Whatever is left at the end of a round (consumers the executor itself
 * skipped, after a cost above the memory budget) is released then.
 *
 * States follow the rounds: planning clears a skip of an earlier round on a
 * node it plans unblocked, a corrupt or vanished hit loses its HIT, and a
 * node that had no value in an earlier round and is a hit now is WAITED.
 * After the last round, settle() forgets skips the outcome no longer depends
 * on (reachable from no target through skipped nodes), and the stats are
 * counted once per node from the final states.
 *
 * Cancellation (o->cancel) is checked between targets while deriving keys,
 * before each round's executor starts and by every task before it does
 * anything: a task that sees the flag records ND__OUT_CANCELED, releases its
 * inputs and returns, so running ops finish (and are published) while no
 * new one starts. The loop then stops: no further round, the cache is
 * flushed as always, and the run returns ND_ECANCELED. Progress calls and
 * the trace are in observe.c; the tasks only test a pointer for each.
 *
 * seconds_saved reads each final hit's recipe (nd_cache_recipe_get). Only
 * visited hits are looked up -- the frontier of the cached part, not the
 * nodes below it -- so it costs one more lookup per hit and nothing per
 * unvisited node.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/graph_int.h"

#define ND__DEFAULT_POLL_MS 20
#define ND__SMALL_INPUTS 16 /* recipes with more inputs allocate the key array */
#define ND__NS_PER_MS 1000000L
#define ND__MS_PER_S 1000u

typedef struct nd__run {
  nd_graph *g;
  nd_cache *cache;
  bool claims;
  uint32_t *tasks;          /* executor node id -> graph node id */
  _Atomic int cache_err;    /* first failed put */
  _Atomic uint32_t cache_err_node;
  const atomic_int *cancel; /* o->cancel (NULL: never) */
  nd__progress *prog;       /* NULL: no progress calls */
  nd__trace *trace;         /* NULL: no trace */
} nd__run;

static bool canceled(const nd__run *r) {
  return r->cancel && atomic_load_explicit(r->cancel, memory_order_acquire) != 0;
}

static double now_s(void) { return (double)nd__now_ns() / ND__NS_PER_S; }

static void sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / ND__MS_PER_S), (long)(ms % ND__MS_PER_S) * ND__NS_PER_MS};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ------------------------------------------------------------ in tasks */

static void drop_value(nd__gnode *n) {
  nd_array_release(n->value);
  n->value = NULL;
}

/* A consumer is done with its inputs: the last one frees each value. */
static void release_inputs(nd_graph *g, const nd__gnode *n) {
  const uint32_t *in = nd__ginputs(g, n);
  for (uint32_t i = 0; i < n->nin; i++) {
    nd__gnode *x = &g->nodes[g->nodes[in[i]].rep];
    if (x->kind != ND__GK_OP) continue;
    if (atomic_fetch_sub_explicit(&x->uses, 1, memory_order_acq_rel) == 1 &&
        !(x->flags & ND__F_TARGET))
      drop_value(x);
  }
}

typedef struct fetch_ud {
  nd_array *arr;
  int decode_rc;
} fetch_ud;

static int fetch_cb(void *ud, const void *data, size_t len) {
  fetch_ud *f = ud;
  f->decode_rc = nd_array_decode(data, len, &f->arr);
  return f->decode_rc;
}

/* Read n's value. Returns ND__OUT_FETCHED, ND__OUT_CORRUPT, ND__OUT_DEFERRED
 * (gone since planning) or ND__OUT_FAILED (n->err and n->msg set). */
static nd__outcome fetch_value(nd__run *r, nd__gnode *n) {
  fetch_ud f = {NULL, 0};
  int rc = nd_cache_read(r->cache, n->key, fetch_cb, &f);
  if (rc == 0 && f.arr) {
    n->value = f.arr;
    return ND__OUT_FETCHED;
  }
  nd_array_release(f.arr);
  char hex[ND_HASH128_HEX_LEN + 1];
  nd_hash128_hex(n->key, hex);
  if (f.decode_rc && f.decode_rc != ND_ENOMEM) { /* out of memory is not corruption */
    nd_cache_delete(r->cache, n->key);
    nd_free(n->corrupt_msg);
    char buf[ND__ERRMSG_MAX];
    snprintf(buf, sizeof buf, "cached value %s does not decode as an array (%s); deleted", hex,
             nd_errname(f.decode_rc));
    n->corrupt_msg = nd_strdup(buf);
    return ND__OUT_CORRUPT;
  }
  if (rc == ND_ECORRUPT) {
    nd_free(n->corrupt_msg);
    char buf[ND__ERRMSG_MAX];
    snprintf(buf, sizeof buf, "cached value %s failed verification and was deleted", hex);
    n->corrupt_msg = nd_strdup(buf);
    return ND__OUT_CORRUPT;
  }
  if (rc == ND_ENOTFOUND) return ND__OUT_DEFERRED;
  n->err = rc ? rc : ND_EIO;
  nd__gset_msg(n, "cannot read cached value %s: %s", hex, nd_strerror(n->err));
  return ND__OUT_FAILED;
}

static void note_cache_error(nd__run *r, uint32_t id, int rc) {
  int none = 0;
  if (atomic_compare_exchange_strong(&r->cache_err, &none, rc))
    atomic_store(&r->cache_err_node, id);
}

/* Encode and hand the value to the cache with its recipe. */
static void publish(nd__run *r, uint32_t id, nd__gnode *n) {
  nd_graph *g = r->g;
  nd_hash128 small[ND__SMALL_INPUTS], *keys = small;
  if (n->nin > ND__SMALL_INPUTS) keys = nd_malloc(n->nin * sizeof *keys);
  void *buf = NULL;
  size_t len = 0;
  int rc = keys ? nd_array_encode(n->value, &buf, &len) : ND_ENOMEM;
  if (rc == 0) {
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin; i++) keys[i] = g->nodes[in[i]].key;
    nd_recipe rec = {n->op->name, n->op->version, n->params, n->params_len,
                     keys, n->nin, n->label, n->seconds};
    rc = nd_cache_put_take(r->cache, n->key, buf, len, &rec);
  }
  if (keys != small) nd_free(keys);
  if (rc) {
    if (r->claims) nd_cache_release(r->cache, n->key);
    note_cache_error(r, id, rc);
  }
}

/* After the op: every file it read must still be what planning digested. */
static int check_files(nd_op_ctx *c) {
  nd_graph *g = c->g;
  const uint32_t *in = nd__ginputs(g, c->node);
  for (uint32_t i = 0; i < c->node->nin; i++) {
    const nd__gnode *x = &g->nodes[in[i]];
    if (x->kind != ND__GK_FILE) continue;
    const nd__fileinfo *was = &g->finfo[x->file_ix];
    nd__fileinfo now = {0};
    if (!nd__file_identity(x->path, &now))
      return nd_op_fail(c, ND_EIO, "input file '%s' disappeared while the node ran: %s", x->path,
                        strerror(errno));
    if (now.dev != was->dev || now.ino != was->ino || now.size != was->size ||
        now.mtime_ns != was->mtime_ns || now.ctime_ns != was->ctime_ns)
      return nd_op_fail(c, ND_EIO,
                        "input file '%s' changed while the node ran (its stat differs from "
                        "the one taken at planning); run again",
                        x->path);
  }
  return 0;
}

/* The op failed (or could not be stored): record it and let the claim go. */
static int fail_node(nd__run *r, nd__gnode *n, nd_op_ctx *c, int rc, bool cacheable) {
  n->err = rc;
  nd_free(n->msg);
  n->msg = c->msg ? c->msg : nd_strdup(nd_strerror(rc));
  c->msg = NULL;
  nd_array_release(c->out);
  c->out = NULL;
  n->outcome = ND__OUT_FAILED;
  if (cacheable) {
    if (r->claims) nd_cache_release(r->cache, n->key);
    nd_cache_record_failure(r->cache, n->key, n->label, rc, n->msg ? n->msg : "");
  }
  return rc;
}

/* Run the op of node id (claims first). */
static int compute(nd__run *r, uint32_t id, nd__gnode *n, nd_pool *pool) {
  bool cacheable = r->cache && !(n->op->flags & ND_OP_NO_CACHE);
  nd_op_ctx c = {r->g, n, pool, NULL, NULL};
  if (cacheable && r->claims) {
    int cl = nd_cache_claim(r->cache, n->key);
    if (cl < 0) {
      n->err = ND_EIO;
      nd__gset_msg(n, "cannot claim the node in the cache: %s", nd_strerror(cl));
      n->outcome = ND__OUT_FAILED;
      return ND_EIO;
    }
    if (cl == ND_CLAIM_BUSY) {
      n->outcome = ND__OUT_DEFERRED;
      return ND_EBUSY;
    }
    if (cl == ND_CLAIM_DONE) {
      nd__outcome o = fetch_value(r, n);
      n->outcome = o == ND__OUT_FETCHED ? ND__OUT_WAITED : o;
      return o == ND__OUT_FETCHED ? 0 : o == ND__OUT_FAILED ? n->err : ND_EBUSY;
    }
  }
  double t0 = now_s();
  int rc = n->op->fn(&c);
  n->seconds = now_s() - t0;
  if (rc == 0 && !c.out)
    rc = nd_op_fail(&c, ND_ESTATE, "op '%s' returned 0 without setting an output", n->op->name);
  if (rc == 0) rc = check_files(&c);
  if (rc) return fail_node(r, n, &c, rc, cacheable);
  nd_free(c.msg);
  n->value = c.out;
  n->outcome = ND__OUT_COMPUTED;
  if (cacheable) publish(r, id, n);
  return 0;
}

/* Whether every op input of n has a value. The inputs' tasks finished
 * before this one started, and no value n reads can be dropped before n
 * releases it (n's own use is still counted). */
static bool inputs_ready(const nd_graph *g, const nd__gnode *n) {
  const uint32_t *in = nd__ginputs(g, n);
  for (uint32_t i = 0; i < n->nin; i++) {
    const nd__gnode *x = &g->nodes[g->nodes[in[i]].rep];
    if (x->kind == ND__GK_OP && !x->value) return false;
  }
  return true;
}

static int task_fn(nd_task_ctx *tc, void *arg) {
  nd__run *r = arg;
  uint32_t id = r->tasks[nd_task_node(tc)];
  nd_graph *g = r->g;
  nd__gnode *n = &g->nodes[id];
  uint64_t start = r->trace ? nd__now_ns() : 0;
  if (canceled(r)) { /* no further node starts; collect() marks it */
    n->outcome = ND__OUT_CANCELED;
    if (n->role == ND__ROLE_COMPUTE) release_inputs(g, n);
  } else if (n->role == ND__ROLE_FETCH) {
    n->outcome = fetch_value(r, n);
  } else if (!inputs_ready(g, n)) {
    n->outcome = ND__OUT_SKIPPED; /* collect() says why */
    release_inputs(g, n);
  } else {
    compute(r, id, n, nd_task_pool(tc));
    release_inputs(g, n);
  }
  /* Nobody in this round reads it (its consumers are blocked) and it is not
   * wanted: it is in the cache now, so let it go. */
  if (n->value && atomic_load_explicit(&n->uses, memory_order_acquire) == 0 &&
      !(n->flags & ND__F_TARGET))
    drop_value(n);
  if (r->trace && n->outcome != ND__OUT_SKIPPED && n->outcome != ND__OUT_CANCELED)
    nd__trace_node(r->trace, nd_task_pool(tc), id, n->role, n->outcome, start, nd__now_ns());
  if (r->prog) /* a fetch settles nothing: its node counted as a hit at planning */
    nd__prog_task(r->prog,
                  n->role == ND__ROLE_COMPUTE ? (nd__outcome)n->outcome : ND__OUT_NONE);
  return 0; /* outcomes, not the executor, decide what the dependents do */
}

/* ------------------------------------------------------------ the loop */

typedef struct run_acc {
  nd_graph_stats st;
  bool more;     /* something was deferred: another round */
  bool progress; /* something was computed or became available */
  bool canceled; /* some task did not start: the run was canceled */
  size_t reads_canceled; /* fetches that did not start (their nodes stay HIT) */
} run_acc;

static void reset_run(nd_graph *g) {
  for (size_t i = 0; i < g->n; i++) {
    nd__gnode *n = &g->nodes[i];
    if (n->kind == ND__GK_OP) drop_value(n);
    nd_free(n->msg);
    nd_free(n->corrupt_msg);
    n->msg = n->corrupt_msg = NULL;
    n->err = 0;
    n->state = ND_GNODE_UNUSED;
    n->rflags = 0;
    n->seconds = 0;
  }
}

static void reset_round(nd_graph *g) {
  for (size_t i = 0; i < g->n; i++) {
    nd__gnode *n = &g->nodes[i];
    n->flags = 0;
    n->role = ND__ROLE_NONE;
    n->outcome = ND__OUT_NONE;
    n->task = -1;
    atomic_store_explicit(&n->uses, 0, memory_order_relaxed);
  }
}

static void set_skipped(nd_graph *g, nd__gnode *n, uint32_t cause) {
  n->state = ND_GNODE_SKIPPED;
  n->rflags |= ND__R_DEFERRED; /* had no value: a later hit is WAITED */
  n->rflags |= ND__R_SKIPPED;
  n->err = ND_ECANCELED;
  n->cause = cause;
  nd__gset_msg(n, "upstream node '%s' failed", g->nodes[cause].label);
}

/* A node that did not start because the run was canceled. */
static void set_canceled(nd__gnode *n) {
  n->state = ND_GNODE_CANCELED;
  n->err = ND_ECANCELED;
  nd__gset_msg(n, "not started, the run was canceled");
}

/* A skip decided in an earlier round no longer holds (the node is planned
 * again unblocked, or nothing of the outcome needs it any more): forget it. */
static void clear_skip(nd__gnode *n) {
  n->state = ND_GNODE_UNUSED;
  n->rflags &= (uint8_t)~ND__R_SKIPPED;
  n->err = 0;
  nd_free(n->msg);
  n->msg = NULL;
}

static double recipe_seconds(nd_cache *cache, nd_hash128 key) {
  nd_cache_recipe *rec = NULL;
  double s = 0;
  if (nd_cache_recipe_get(cache, key, &rec) == 0 && rec) s = rec->compute_seconds;
  nd_cache_recipe_free(rec);
  return s;
}

/* States decided by planning: failures, skips and hits. A node planned
 * unblocked loses a skip of an earlier round (its failed input's consumer
 * became a hit meanwhile), so every state a round's tasks read is this
 * round's. Stats are counted once at the end, from the final states. */
static void apply_plan(nd_graph *g, run_acc *a) {
  for (size_t id = 0; id < g->n; id++) {
    nd__gnode *n = &g->nodes[id];
    if (!(n->flags & ND__F_VISITED)) continue;
    if (n->flags & ND__F_BLOCKED) {
      if (n->kind == ND__GK_FILE && n->keyst == ND__KEY_BAD) {
        n->state = ND_GNODE_FAILED;
        n->rflags |= ND__R_FAILED;
      } else if (!(n->rflags & ND__R_FAILED)) {
        set_skipped(g, n, n->cause);
      }
      continue;
    }
    if (n->state == ND_GNODE_SKIPPED) clear_skip(n);
    if ((n->flags & ND__F_HIT) && n->state == ND_GNODE_UNUSED) {
      /* A node that had no value earlier in this run (deferred, skipped or
       * corrupt) and is stored now was computed by another process. */
      if (n->rflags & (ND__R_DEFERRED | ND__R_CORRUPT)) {
        n->state = ND_GNODE_WAITED;
        a->progress = true;
      } else {
        n->state = ND_GNODE_HIT;
      }
    }
  }
}

#define ND__COST_INPUTS_MAX 64 /* inputs passed to an op's cost_fn */
#define ND__COST_DEPTH_MAX 16  /* how far input costs are derived */

/* A node's memory cost: nd_graph_set_cost, else the op's cost_fn (with its
 * inputs' paths and costs, derived the same way), else op.mem_cost. Files
 * and constants cost nothing. Only called for nodes a run computes; memo
 * (SIZE_MAX: unknown; may be NULL) keeps a load's header from being read
 * once per consumer. */
static size_t node_cost(const nd_graph *g, size_t id, int depth, size_t *memo) {
  uint32_t rep = g->nodes[id].rep;
  if (memo && memo[rep] != SIZE_MAX) return memo[rep];
  const nd__gnode *n = &g->nodes[rep];
  if (n->kind != ND__GK_OP) return 0;
  if (n->cost_set) return n->cost;
  size_t cost = 0;
  if (n->op->cost_fn && n->nin <= ND__COST_INPUTS_MAX && depth < ND__COST_DEPTH_MAX) {
    const char *paths[ND__COST_INPUTS_MAX];
    size_t costs[ND__COST_INPUTS_MAX];
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin; i++) {
      const nd__gnode *m = &g->nodes[in[i]];
      paths[i] = m->kind == ND__GK_FILE ? m->path : NULL;
      costs[i] = node_cost(g, in[i], depth + 1, memo);
    }
    cost = n->op->cost_fn(n->params, n->params_len, paths, costs, n->nin);
  }
  cost = cost ? cost : n->op->mem_cost;
  if (memo) memo[rep] = cost;
  return cost;
}

static int build_tasks(nd_graph *g, nd__run *r, size_t ntasks, nd_taskgraph **out) {
  nd_taskgraph *tg = NULL;
  int rc = nd_taskgraph_new(&tg);
  if (rc) return rc;
  nd_free(r->tasks);
  r->tasks = nd_malloc(ntasks * sizeof *r->tasks);
  size_t *memo = nd_malloc((g->n ? g->n : 1) * sizeof *memo); /* costs; NULL is fine */
  if (!r->tasks) {
    nd_free(memo);
    nd_taskgraph_free(tg);
    return ND_ENOMEM;
  }
  for (size_t id = 0; memo && id < g->n; id++) memo[id] = SIZE_MAX;
  for (size_t id = 0; id < g->n && rc == 0; id++) {
    nd__gnode *n = &g->nodes[id];
    if (n->role == ND__ROLE_NONE) continue;
    int64_t t = nd_taskgraph_add(tg, task_fn, r, n->label);
    if (t < 0) {
      rc = (int)t;
      break;
    }
    n->task = t;
    r->tasks[t] = (uint32_t)id;
    if (n->role != ND__ROLE_COMPUTE) continue;
    size_t cost = node_cost(g, id, 0, memo);
    if (cost) rc = nd_taskgraph_set_cost(tg, t, cost);
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin && rc == 0; i++) {
      int64_t before = g->nodes[g->nodes[in[i]].rep].task;
      if (before >= 0) rc = nd_taskgraph_depend(tg, t, before);
    }
  }
  nd_free(memo);
  if (rc) {
    nd_taskgraph_free(tg);
    return rc;
  }
  *out = tg;
  return 0;
}

/* Whether a deferred node is worth another round: a target, or an input of
 * a consumer that was not blocked at planning. A miss planned only as
 * independent work (all its consumers blocked by a failure) is left to the
 * process that holds it. */
static bool still_wanted(const nd__gnode *n) {
  return (n->flags & (ND__F_TARGET | ND__F_NEED)) != 0;
}

/* A compute task that was skipped: a real skip when an input failed (or
 * was skipped for a real failure), else an internal one behind a deferral. */
static void classify_skip(nd_graph *g, nd__gnode *n, run_acc *a) {
  const uint32_t *in = nd__ginputs(g, n);
  bool behind_cancel = false;
  for (uint32_t i = 0; i < n->nin; i++) {
    uint32_t rid = g->nodes[in[i]].rep;
    const nd__gnode *x = &g->nodes[rid];
    if (x->task < 0) continue;
    if (x->outcome == ND__OUT_FAILED || (x->rflags & ND__R_FAILED)) {
      set_skipped(g, n, rid);
      return;
    }
    if (x->state == ND_GNODE_SKIPPED) {
      set_skipped(g, n, x->cause);
      return;
    }
    behind_cancel |= x->state == ND_GNODE_CANCELED;
  }
  if (behind_cancel) { /* cannot happen (tasks check the flag first); be safe */
    set_canceled(n);
    a->canceled = true;
    return;
  }
  n->rflags |= ND__R_DEFERRED; /* behind a deferral: planned again */
  if (still_wanted(n)) a->more = true;
}

static void collect(nd_graph *g, nd_taskgraph *tg, run_acc *a) {
  for (size_t id = 0; id < g->n; id++) {
    nd__gnode *n = &g->nodes[id];
    if (n->task < 0) continue;
    switch ((nd__outcome)n->outcome) {
    case ND__OUT_COMPUTED:
      n->state = ND_GNODE_COMPUTED;
      a->progress = true;
      break;
    case ND__OUT_FETCHED:
      n->rflags |= ND__R_FETCHED;
      break;
    case ND__OUT_WAITED:
      n->state = ND_GNODE_WAITED;
      n->rflags |= ND__R_FETCHED;
      a->progress = true;
      break;
    case ND__OUT_FAILED:
      n->state = ND_GNODE_FAILED;
      n->rflags |= ND__R_FAILED;
      break;
    case ND__OUT_CORRUPT:
      /* Not a hit after all: the next round recomputes it (or reads what
       * another process stored meanwhile: WAITED). */
      n->state = ND_GNODE_UNUSED;
      n->rflags |= ND__R_CORRUPT;
      a->more = true;
      a->progress = true; /* the recomputation can start at once */
      break;
    case ND__OUT_DEFERRED:
      if (n->state == ND_GNODE_HIT) n->state = ND_GNODE_UNUSED; /* gone since planning */
      n->rflags |= ND__R_DEFERRED;
      if (still_wanted(n)) a->more = true;
      break;
    case ND__OUT_SKIPPED:
      classify_skip(g, n, a);
      break;
    case ND__OUT_CANCELED: /* a fetch keeps its HIT: the value is in the cache */
      if (n->role == ND__ROLE_COMPUTE)
        set_canceled(n);
      else
        a->reads_canceled++;
      a->canceled = true;
      break;
    default: /* the executor did not call the task */
      if (nd_taskgraph_state(tg, n->task) == ND_NODE_SKIPPED) {
        classify_skip(g, n, a);
      } else { /* e.g. a cost above the pool's memory budget */
        const char *msg = "";
        n->err = nd_taskgraph_error(tg, n->task, &msg);
        if (!n->err) n->err = ND_ETASK;
        nd__gset_msg(n, "%s", msg);
        n->state = ND_GNODE_FAILED;
        n->rflags |= ND__R_FAILED;
      }
      break;
    }
    if (n->value && !(n->flags & ND__F_TARGET)) drop_value(n);
  }
}

/* Targets: the given ids' reps, or every sink's. */
static int collect_targets(nd_graph *g, const nd_graph_run_opts *o, nd__plan *p) {
  size_t cnt = 0;
  if (o->targets) {
    cnt = o->ntargets;
  } else {
    for (size_t i = 0; i < g->n; i++) cnt += g->nodes[i].nconsumers == 0;
  }
  p->targets = nd_malloc((cnt ? cnt : 1) * sizeof *p->targets);
  if (!p->targets) return ND_ENOMEM;
  p->ntargets = 0;
  for (size_t i = 0; i < (o->targets ? cnt : g->n); i++) {
    if (o->targets)
      p->targets[p->ntargets++] = (uint32_t)o->targets[i];
    else if (g->nodes[i].nconsumers == 0)
      p->targets[p->ntargets++] = (uint32_t)i;
  }
  return 0;
}

/* "N failed, M skipped: 'a' (ND_EIO): msg; ..." on g's error buffer. */
static void summarise(nd_graph *g, const nd_graph_stats *st) {
  char text[ND__ERRMSG_MAX];
  size_t len = (size_t)snprintf(text, sizeof text, "%zu nodes failed, %zu skipped:", st->failed,
                                st->skipped);
  const char *sep = " ";
  for (size_t i = 0; i < g->n && len < sizeof text; i++) {
    const nd__gnode *n = &g->nodes[i];
    if (n->state != ND_GNODE_FAILED) continue;
    len += (size_t)snprintf(text + len, sizeof text - len, "%s'%s' (%s): %s", sep, n->label,
                            nd_errname(n->err), n->msg ? n->msg : "");
    sep = "; ";
  }
  nd__seterr(&g->err, ND_ETASK, "%s", text);
}

/* Canceled before the round's executor started: every node it would have
 * computed is CANCELED (its planned fetches keep their HIT). */
static int cancel_round(nd_graph *g, run_acc *a) {
  for (size_t id = 0; id < g->n; id++) {
    if (g->nodes[id].role == ND__ROLE_COMPUTE) set_canceled(&g->nodes[id]);
    a->reads_canceled += g->nodes[id].role == ND__ROLE_FETCH;
  }
  return ND_ECANCELED;
}

static int run_rounds(nd_graph *g, const nd_graph_run_opts *o, nd__run *r, nd__plan *p,
                      run_acc *a, double t_plan) {
  unsigned poll = o->poll_ms ? o->poll_ms : ND__DEFAULT_POLL_MS;
  for (;;) {
    a->st.rounds++;
    a->more = a->progress = false;
    reset_round(g);
    uint64_t t_round = r->trace ? nd__now_ns() : 0;
    int rc = nd__plan_round(g, r->cache, p);
    if (rc) return rc;
    a->st.visited += p->visited;
    apply_plan(g, a);
    if (r->trace) nd__trace_span(r->trace, ND__TS_PLAN, (int)a->st.rounds, t_round, nd__now_ns());
    if (a->st.rounds == 1) a->st.plan_seconds = now_s() - t_plan;
    if (r->prog) nd__prog_round(r->prog, g, (int)a->st.rounds, p->ncompute);
    if (p->ntasks == 0) return 0;
    if (canceled(r)) return cancel_round(g, a);
    nd_taskgraph *tg = NULL;
    rc = build_tasks(g, r, p->ntasks, &tg);
    if (rc) return nd__seterr(&g->err, rc, "cannot build the executor graph: %s", nd_strerror(rc));
    if (r->prog) nd__prog_exec(r->prog);
    rc = nd_taskgraph_run(o->pool, tg, NULL);
    if (rc && rc != ND_ETASK) {
      nd__seterr(&g->err, rc, "executor: %s", nd_errmsg(tg));
      nd_taskgraph_free(tg);
      return rc;
    }
    collect(g, tg, a);
    nd_taskgraph_free(tg);
    if (a->canceled) return ND_ECANCELED;
    if (!a->more) return 0;
    if (!a->progress) {
      uint64_t t_poll = r->trace ? nd__now_ns() : 0;
      sleep_ms(poll);
      if (r->trace) nd__trace_span(r->trace, ND__TS_POLL, (int)a->st.rounds, t_poll, nd__now_ns());
    }
  }
}

/* After the last round: a skip stands only while the outcome still depends
 * on it, i.e. it is reachable from a target through skipped nodes. A skip of
 * an early round whose consumers were answered later (another process stored
 * them) is forgotten: the node was simply not needed. Failures stay: they
 * happened (and are in the cache's failures database). */
static void settle(nd_graph *g, const nd__plan *p) {
  uint32_t *st = p->stack;
  size_t sp = 0;
  for (size_t i = 0; i < p->ntargets; i++) st[sp++] = p->targets[i];
  while (sp) {
    nd__gnode *n = &g->nodes[st[--sp]];
    if (n->rflags & ND__R_REACHED) continue;
    n->rflags |= ND__R_REACHED;
    if (n->state != ND_GNODE_SKIPPED) continue;
    const uint32_t *in = nd__ginputs(g, n);
    for (uint32_t i = 0; i < n->nin; i++) {
      uint32_t r = g->nodes[in[i]].rep;
      if (!(g->nodes[r].rflags & ND__R_REACHED)) st[sp++] = r;
    }
  }
  for (size_t i = 0; i < g->n; i++) {
    nd__gnode *n = &g->nodes[i];
    if (n->state == ND_GNODE_SKIPPED && !(n->rflags & ND__R_REACHED)) clear_skip(n);
    n->rflags &= (uint8_t)~ND__R_REACHED;
  }
}

/* Every stat about nodes counts each node once, by its final state. */
static void final_counts(const nd_graph *g, nd_cache *cache, nd_graph_stats *st) {
  for (size_t i = 0; i < g->n; i++) {
    const nd__gnode *n = &g->nodes[i];
    st->failed += n->state == ND_GNODE_FAILED;
    st->skipped += n->state == ND_GNODE_SKIPPED;
    st->computed += n->state == ND_GNODE_COMPUTED;
    st->canceled += n->state == ND_GNODE_CANCELED;
    st->waited += n->state == ND_GNODE_WAITED;
    st->fetched += (n->rflags & ND__R_FETCHED) != 0;
    st->corrupt += (n->rflags & ND__R_CORRUPT) != 0;
    if (n->state == ND_GNODE_HIT) {
      st->hits++;
      if (cache) st->seconds_saved += recipe_seconds(cache, n->key);
    }
    if (n->keyst != ND__KEY_NONE && n->rep == i) st->nodes++;
  }
}

/* Whether some target has no value because it (or something below it)
 * failed. */
static bool target_blocked(const nd_graph *g, const nd__plan *p) {
  for (size_t i = 0; i < p->ntargets; i++) {
    uint8_t s = g->nodes[p->targets[i]].state;
    if (s == ND_GNODE_FAILED || s == ND_GNODE_SKIPPED) return true;
  }
  return false;
}

/* Canceled while deriving keys, before any planning: the op targets (as
 * resolved so far) are CANCELED, nothing else has a state. */
static void cancel_targets(nd_graph *g, const nd__plan *p) {
  for (size_t i = 0; i < p->ntargets; i++) {
    nd__gnode *n = &g->nodes[p->targets[i]];
    if (n->keyst == ND__KEY_OK) n = &g->nodes[n->rep];
    if (n->kind == ND__GK_OP) set_canceled(n);
  }
}

/* The observers a run asked for (progress into *prog). A trace path that is
 * empty means no trace, even with $NIDAG_TRACE set. */
static void observe_start(nd__run *r, const nd_graph_run_opts *o, nd__progress *prog,
                          uint64_t t0_ns) {
  r->cancel = o->cancel;
  if (o->progress) {
    nd__prog_init(prog, o, t0_ns);
    r->prog = prog;
  }
  const char *path = o->trace_path ? o->trace_path : getenv("NIDAG_TRACE");
  if (path && *path) r->trace = nd__trace_open(path, t0_ns, ND_GRAPH_TRACE_MAX_EVENTS);
}

int nd_graph_run(nd_graph *g, const nd_graph_run_opts *o, nd_graph_stats *stats) {
  nd_graph_run_opts defaults = {0};
  if (stats) memset(stats, 0, sizeof *stats);
  if (!g) return ND_EINVAL;
  if (!o) o = &defaults;
  if (o->ntargets && !o->targets) return nd__seterr(&g->err, ND_EINVAL, "ntargets without targets");
  for (size_t i = 0; o->targets && i < o->ntargets; i++)
    if (!nd__gvalid(g, o->targets[i]))
      return nd__seterr(&g->err, ND_EINVAL, "target %zu has a bad node id %lld", i,
                        (long long)o->targets[i]);
  nd__clearerr(&g->err);
  uint64_t t0_ns = nd__now_ns();
  double t0 = (double)t0_ns / ND__NS_PER_S;
  nd__run r = {.g = g, .cache = o->cache, .claims = o->cache && !o->no_claims};
  nd__progress prog;
  observe_start(&r, o, &prog, t0_ns);
  atomic_init(&r.cache_err, 0);
  atomic_init(&r.cache_err_node, ND__GNONE);
  run_acc a;
  memset(&a, 0, sizeof a);
  nd__plan p;
  memset(&p, 0, sizeof p);
  nd__keyctx kc = {.g = g, .cache = o->cache};
  reset_run(g);
  int rc = nd__keys_reset(g);
  if (rc == 0) rc = collect_targets(g, o, &p);
  if (rc == 0) {
    kc.stack = nd_malloc((g->ninputs + 1) * sizeof *kc.stack);
    p.stack = nd_malloc((g->ninputs + p.ntargets + 1) * sizeof *p.stack);
    if (!kc.stack || !p.stack) rc = ND_ENOMEM;
  }
  uint64_t t_keys = r.trace ? nd__now_ns() : 0;
  for (size_t i = 0; rc == 0 && i < p.ntargets; i++)
    rc = canceled(&r) ? ND_ECANCELED : nd__keys_ensure(&kc, p.targets[i]);
  if (rc == 0) rc = nd__keys_remerge(&kc);
  if (r.trace) nd__trace_span(r.trace, ND__TS_KEYS, 0, t_keys, nd__now_ns());
  if (rc == ND_ECANCELED) {
    cancel_targets(g, &p);
  } else if (rc) {
    nd__seterr(&g->err, rc, "cannot plan the run: %s", nd_strerror(rc));
  } else {
    for (size_t i = 0; i < p.ntargets; i++) p.targets[i] = g->nodes[p.targets[i]].rep;
    rc = run_rounds(g, o, &r, &p, &a, t0);
  }
  if (o->cache) {
    uint64_t t_flush = r.trace ? nd__now_ns() : 0;
    int frc = nd_cache_flush(o->cache);
    if (r.trace) nd__trace_span(r.trace, ND__TS_FLUSH, 0, t_flush, nd__now_ns());
    if (rc == 0 && frc) rc = nd__seterr(&g->err, ND_EIO, "cache flush: %s", nd_errmsg(o->cache));
  }
  int cerr = atomic_load(&r.cache_err);
  if (rc == 0 && cerr) {
    uint32_t id = atomic_load(&r.cache_err_node);
    rc = nd__seterr(&g->err, ND_EIO, "cannot store the value of '%s': %s",
                    id < g->n ? g->nodes[id].label : "?", nd_strerror(cerr));
  }
  if (p.stack) settle(g, &p);
  final_counts(g, o->cache, &a.st);
  a.st.merged = kc.merged;
  a.st.files_hashed = kc.files_hashed;
  a.st.files_memo = kc.files_memo;
  if (rc == 0 && p.targets && target_blocked(g, &p)) {
    summarise(g, &a.st);
    rc = ND_ETASK;
  }
  if (rc == ND_ECANCELED)
    nd__seterr(&g->err, ND_ECANCELED,
               "run canceled: %zu nodes not started and %zu cached values not read "
               "(%zu nodes computed and stored before)",
               a.st.canceled, a.reads_canceled, a.st.computed);
  nd_free(kc.stack);
  nd_free(p.stack);
  nd_free(p.targets);
  nd_free(r.tasks);
  a.st.run_seconds = now_s() - t0;
  /* The trace first, so the final progress call means the run is over. */
  nd__trace_close(r.trace, g, o->pool ? nd_pool_threads(o->pool) : 0);
  if (r.prog) nd__prog_final(r.prog, &a.st);
  if (stats) *stats = a.st;
  return rc;
}

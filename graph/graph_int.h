/* Private structures of the lazy graph, shared by the files of graph/:
 * graph.c (building, structural dedup, accessors), keys.c (content keys and
 * merging equal keys), plan.c (top-down planning against the cache), run.c
 * (rounds on the executor, publishing, freeing, cancellation), results.c
 * (states, values and the report after a run), observe.c (progress calls
 * and Chrome traces) and opctx.c (what an op function sees). */
#ifndef NIDAG_GRAPH_INT_H
#define NIDAG_GRAPH_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/core_int.h"
#include "nidag/graph.h"

#define ND__GNONE UINT32_MAX /* "no node" in uint32_t node references */

typedef enum nd__gkind {
  ND__GK_OP = 0,
  ND__GK_FILE = 1,
  ND__GK_CONST = 2,
} nd__gkind;

/* Key state of a node within one run. */
typedef enum nd__keyst {
  ND__KEY_NONE = 0, /* not computed in this run */
  ND__KEY_OK,       /* key (and rep) valid */
  ND__KEY_BAD,      /* a file below could not be digested (see cause) */
} nd__keyst;

/* What a node is in the current round (plan.c decides, run.c executes). */
typedef enum nd__role {
  ND__ROLE_NONE = 0, /* not in this round's executor graph */
  ND__ROLE_COMPUTE,  /* run the op */
  ND__ROLE_FETCH,    /* read the cached value */
} nd__role;

/* What a task of the current round did (written by the task only). */
typedef enum nd__outcome {
  ND__OUT_NONE = 0,  /* did not run (skipped by the executor, or no task) */
  ND__OUT_COMPUTED,  /* the op ran and set a value */
  ND__OUT_FETCHED,   /* read from the cache */
  ND__OUT_WAITED,    /* claim said DONE: another process computed it; read */
  ND__OUT_FAILED,
  ND__OUT_DEFERRED,  /* busy claim, or the entry vanished: next round */
  ND__OUT_CORRUPT,   /* the entry failed verification (deleted): next round */
  ND__OUT_SKIPPED,   /* an input has no value (failed, skipped or deferred) */
  ND__OUT_CANCELED,  /* did not start: the run was canceled */
} nd__outcome;

/* Per-round flags. */
enum {
  ND__F_VISITED = 1u << 0, /* reached by the top-down walk */
  ND__F_HIT = 1u << 1,     /* answered by the cache (not expanded) */
  ND__F_MISS = 1u << 2,    /* an op that must run (expanded) */
  ND__F_NEED = 1u << 3,    /* its value is read by a running consumer */
  ND__F_BLOCKED = 1u << 4, /* failed or skipped: consumers cannot run */
  ND__F_DEFER = 1u << 5,   /* retry next round (busy claim, corrupt entry) */
  ND__F_TARGET = 1u << 6,  /* keep the value after the run */
  ND__F_AVAIL = 1u << 7,   /* value already held (computed in an earlier round) */
};

/* Per-run flags (survive the rounds of one nd_graph_run). */
enum {
  ND__R_FAILED = 1u << 0,  /* failed in this run: never retried in it */
  ND__R_CORRUPT = 1u << 1, /* its cached entry was corrupt; recomputed */
  ND__R_DEFERRED = 1u << 2,/* had no value in some round (a later hit is WAITED) */
  ND__R_SKIPPED = 1u << 3, /* skipped (reported), cause in `cause` */
  ND__R_SEEN = 1u << 4,    /* visited by some round of this run */
  ND__R_FETCHED = 1u << 5, /* its value was read from the cache in this run */
  ND__R_REACHED = 1u << 6, /* settling after the last round: still part of the outcome */
};

/* Stat identity of a source file taken before its digest; an op reading the
 * file compares it again afterwards. */
typedef struct nd__fileinfo {
  uint64_t dev, ino, size;
  int64_t mtime_ns, ctime_ns;
  bool valid;
} nd__fileinfo;

typedef struct nd__gnode {
  const nd_op *op;      /* ops only */
  nd_array *value;      /* const: the constant (owned); op: value held by a run */
  char *msg;            /* last run's error (owned) or corrupt note */
  char *corrupt_msg;    /* the verification failure that was recovered (owned) */
  const void *params;   /* in g->arena; NULL when params_len is 0 */
  size_t params_len;
  const char *label;    /* in g->arena */
  const char *path;     /* files: in g->arena */
  size_t cost;          /* nd_graph_set_cost override */
  double seconds;       /* compute time in this run */
  nd_hash128 key;
  uint32_t in_off, nin; /* inputs: g->inputs[in_off .. in_off+nin) */
  uint32_t nconsumers;  /* structural consumers (sinks have none) */
  uint32_t rep;         /* the node with the same key that stands for it */
  uint32_t cause;       /* skipped: the failed node; key bad: the file */
  uint32_t file_ix;     /* files: index into g->finfo */
  int64_t task;         /* executor node id in this round, -1 */
  _Atomic uint32_t uses;/* consumers in this round that have not finished */
  int err;
  uint16_t flags;       /* ND__F_* (per round) */
  uint8_t rflags;       /* ND__R_* (per run) */
  uint8_t kind;         /* nd__gkind */
  uint8_t keyst;        /* nd__keyst */
  uint8_t state;        /* nd_graph_node_state */
  uint8_t role;         /* nd__role */
  uint8_t outcome;      /* nd__outcome: what this round's task did */
  bool cost_set;
  bool const_keyed;     /* const: key computed once (the value never changes) */
} nd__gnode;

/* Bump allocator in chunks that never move, so labels stay valid while
 * the graph grows. */
typedef struct nd__chunk {
  struct nd__chunk *next;
  size_t used, cap;
  char data[];
} nd__chunk;
typedef struct nd__arena {
  nd__chunk *head;
} nd__arena;

/* Open-addressing table of node ids, looked up by a 64-bit hash. */
typedef struct nd__idmap {
  uint64_t *hashes;
  uint32_t *ids; /* ND__GNONE: empty */
  size_t cap, count;
} nd__idmap;

struct nd_graph {
  nd__errbuf err; /* first member: nd_errmsg() */
  nd__gnode *nodes;
  size_t n, cap;
  uint32_t *inputs; /* all nodes' input ids, concatenated */
  size_t ninputs, inputs_cap;
  nd__arena arena;  /* params, labels and paths (stable addresses) */
  nd__fileinfo *finfo;
  size_t nfiles, finfo_cap;
  nd__idmap structural; /* op nodes by (op, params, inputs) */
  nd__idmap paths;      /* file nodes by path */
  nd__idmap keys;       /* per run: rep nodes by key */
  nd_hasher *hasher;    /* building and planning (caller's thread only) */
};

/* ------------------------------------------------------------ graph.c */
static inline const uint32_t *nd__ginputs(const nd_graph *g, const nd__gnode *n) {
  return g->inputs + n->in_off;
}
bool nd__gvalid(const nd_graph *g, int64_t id);

int nd__idmap_reserve(nd__idmap *m, size_t count);
void nd__idmap_free(nd__idmap *m);
void nd__idmap_clear(nd__idmap *m);
/* First slot for hash h: iterate with nd__idmap_next until ids[slot] is
 * ND__GNONE (the free slot to insert into). */
size_t nd__idmap_slot(const nd__idmap *m, uint64_t h);
static inline size_t nd__idmap_next(const nd__idmap *m, size_t slot) {
  return (slot + 1) & (m->cap - 1);
}
/* Insert (h, id) at a free slot found by probing; the map must have room. */
void nd__idmap_put(nd__idmap *m, size_t slot, uint64_t h, uint32_t id);

/* Record msg (formatted) as the node's error message. */
void nd__gset_msg(nd__gnode *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------- keys.c */
/* A node a probe (nd_graph_key) found without a key; undone afterwards. */
typedef struct nd__keybad {
  uint32_t id;
  char *msg; /* files: why it could not be digested (owned) */
} nd__keybad;

typedef struct nd__keyctx {
  nd_graph *g;
  nd_cache *cache;
  size_t files_hashed, files_memo, merged;
  uint32_t *stack;  /* DFS stack (caller's scratch, g->n entries) */
  /* Probe (nd_graph_key outside a run): keys are memoised, but nothing is
   * merged and no node gets an error; nodes left without a key are listed
   * in bad and reset by the caller. */
  bool probe;
  int probe_rc;     /* ND_ENOMEM when the list could not grow */
  nd__keybad *bad;
  size_t nbad;
} nd__keyctx;

/* Reset the per-run key state (keys, reps, the key map). */
int nd__keys_reset(nd_graph *g);
/* Compute the key of node id and of everything below it that has none yet,
 * resolving merges (rep). ND_ENOMEM only: a file that cannot be digested
 * leaves ND__KEY_BAD on its dependents, not an error. */
int nd__keys_ensure(nd__keyctx *kc, uint32_t id);
/* Redo the merging in id order once every key of the run is computed, so
 * each rep is the lowest id of its key (ids stay a topological order of the
 * reps). ND_ENOMEM only. */
int nd__keys_remerge(nd__keyctx *kc);
/* Stat identity of a path; false (errno set) when stat fails. */
bool nd__file_identity(const char *path, nd__fileinfo *fi);

/* ------------------------------------------------------------- plan.c */
typedef struct nd__plan {
  uint32_t *targets;  /* rep ids of the targets */
  size_t ntargets;
  uint32_t *stack;    /* scratch (g->n entries) */
  size_t visited;     /* nodes first visited in this run by this round */
  size_t ntasks;      /* compute + fetch tasks of this round */
  size_t ncompute;    /* of which compute */
} nd__plan;

/* Plan one round: mark roles and flags top-down from the targets (keys must
 * be computed). ND_EIO when a cache lookup fails (message on g). */
int nd__plan_round(nd_graph *g, nd_cache *cache, nd__plan *p);
/* Whether a blocked node failed itself (rather than being skipped). */
bool nd__plan_failed(const nd__gnode *n);

/* ------------------------------------------------------ run.c, results.c */
/* (nd_graph_run, and what it leaves; no cross-file symbols.) */

/* ----------------------------------------------------------- observe.c */
/* Progress of one run (nd_graph_run_opts.progress). The calling thread sets
 * the base counts between rounds, while no task runs; tasks add to the
 * atomic counts. busy serialises the calls. */
typedef struct nd__progress {
  nd_graph_progress_fn fn;
  void *ud;
  uint64_t interval_ns, t0_ns;
  uint64_t exec_ns;  /* when the first executor round started (0: not yet) */
  size_t exec_done;  /* done at that moment (the ETA's origin) */
  int round;
  /* Settled before this round's tasks, and this round's compute tasks. */
  size_t base_hits, base_computed, base_waited, base_failed, base_skipped;
  size_t base_canceled, round_tasks;
  _Atomic size_t computed, waited, failed, skipped, canceled; /* this round */
  _Atomic uint64_t next_ns; /* no live call before this time */
  atomic_flag busy;
  size_t last_done, last_total; /* what the last call said (under busy) */
} nd__progress;

void nd__prog_init(nd__progress *p, const nd_graph_run_opts *o, uint64_t t0_ns);
/* Calling thread, after planning a round (tasks = its compute tasks): take
 * the settled counts from the node states and report (throttled). */
void nd__prog_round(nd__progress *p, const nd_graph *g, int round, size_t tasks);
/* Calling thread, just before the executor starts. */
void nd__prog_exec(nd__progress *p);
/* A task finished with outcome o (ND__OUT_NONE: counts nothing, e.g. a
 * fetch); reports when progress_ms has passed and no call is running. */
void nd__prog_task(nd__progress *p, nd__outcome o);
/* Calling thread, at the end of the run: the final call. */
void nd__prog_final(nd__progress *p, const nd_graph_stats *st);

/* A Chrome trace of one run (nd_graph_run_opts.trace_path). */
typedef struct nd__trace nd__trace;

/* Spans of the calling thread's own track. */
typedef enum nd__tspan {
  ND__TS_KEYS = 0, /* key derivation (digesting source files) */
  ND__TS_PLAN,     /* planning one round against the cache */
  ND__TS_POLL,     /* sleeping before replanning (another process's node) */
  ND__TS_FLUSH,    /* the final cache flush */
  ND__TS_COUNT,
} nd__tspan;

/* The path is copied. NULL (out of memory, warned about on stderr) means
 * no trace; the run goes on. max_events bounds the recording. */
nd__trace *nd__trace_open(const char *path, uint64_t t0_ns, size_t max_events);
/* A task's span on its worker's track (pool: the task's pool, which sizes
 * the tracks). Lock-free: each worker appends to its own buffer. */
void nd__trace_node(nd__trace *t, nd_pool *pool, uint32_t node, uint8_t role, uint8_t outcome,
                    uint64_t start_ns, uint64_t end_ns);
/* A span of the calling thread (round: its round, 0 if none). */
void nd__trace_span(nd__trace *t, nd__tspan what, int round, uint64_t start_ns,
                    uint64_t end_ns);
/* Write the file (one warning on stderr if that fails) and free t. The
 * graph gives labels, op names and keys; threads names the worker tracks
 * when no task ran. NULL is a no-op. */
void nd__trace_close(nd__trace *t, const nd_graph *g, unsigned threads);

/* ------------------------------------------------------------ opctx.c */
struct nd_op_ctx {
  nd_graph *g;
  nd__gnode *node;
  nd_pool *pool;
  nd_array *out;
  char *msg; /* nd_op_fail's message (owned) */
};

#endif /* NIDAG_GRAPH_INT_H */

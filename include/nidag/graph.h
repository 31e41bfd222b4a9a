/* nidag graph: lazy dataflow graphs whose results live in the cache.
 *
 * An op is a name, an explicit version, a function and cost hints. A node is
 * an op, canonical params bytes and input nodes; building a graph computes
 * nothing. Source files enter as file nodes. Running a graph plans it
 * top-down against the cache (a hit's inputs are never visited), runs the
 * missing subgraph on the executor, publishes each result as it finishes and
 * frees intermediate values once their consumers are done.
 *
 * Keys (the "how it works" block is in graph/keys.c):
 *   key(file)  = XXH3-128 of the file's bytes (memoised by stat, never a path)
 *   key(const) = XXH3-128 of the array's canonical encoding
 *   key(op)    = XXH3-128 of the length-prefixed fields: schema version, op
 *                name, op version, params bytes, input keys in order.
 * Labels are for people and never enter keys. Nodes whose keys are equal are
 * merged: one computation feeds every consumer.
 *
 * Values are nd_array (see core.h). An op produces exactly one array.
 */
#ifndef NIDAG_GRAPH_H
#define NIDAG_GRAPH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nidag/cache.h"
#include "nidag/core.h"
#include "nidag/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only when the key derivation itself changes (invalidates every key). */
#define ND_GRAPH_KEY_SCHEMA 1

typedef struct nd_graph nd_graph;
typedef struct nd_op_ctx nd_op_ctx;

/* The op's body: read inputs and params from ctx, set the output with
 * nd_op_set_output and return 0, or return an error (ideally through
 * nd_op_fail, which records a message). Runs on a pool worker; must be
 * thread-safe with respect to other nodes of the same op. */
typedef int (*nd_op_fn)(nd_op_ctx *ctx);

enum {
  ND_OP_NO_CACHE = 1u << 0, /* cheap op: never stored, recomputed when needed */
};

/* An op. The struct (and its name) must outlive every graph that uses it. */
typedef struct nd_op {
  const char *name;     /* stable identifier, part of every key ("nd.load") */
  uint32_t version;     /* bump when results change; never a hash of code */
  nd_op_fn fn;
  void *ud;             /* for the function (nd_op_userdata); not in keys */
  size_t mem_cost;      /* bytes held while running (memory budget); 0: none */
  double time_hint;     /* expected seconds per node (optional; 0: unknown) */
  uint32_t flags;       /* ND_OP_* */
  /* Optional: the memory cost of one node of this op, asked only for nodes a
   * run computes, after planning (so a cached rerun never calls it).
   * in_paths[i] is input i's path when it is a file node, else NULL;
   * in_costs[i] is input i's own cost (by the same rules; 0 for files and
   * constants). Return 0 to fall back to mem_cost. nd_graph_set_cost wins
   * over both. A load op can read its file's header here. */
  size_t (*cost_fn)(const void *params, size_t params_len, const char *const *in_paths,
                    const size_t *in_costs, size_t ninputs);
} nd_op;

int nd_graph_new(nd_graph **out);
void nd_graph_free(nd_graph *g); /* NULL is a no-op; releases held values */

/* Add a node computing op over inputs (ids returned by earlier adds) with
 * params (copied; canonical bytes, see nd_params in core.h; may be NULL/0).
 * label is copied (NULL: "<op name> #<id>"). Building computes nothing. A
 * node structurally equal to an earlier one (same op, params and inputs)
 * returns the earlier id. Errors: ND_EINVAL (NULL op or fn, bad input id),
 * ND_ENOMEM. The message names the label. */
int nd_graph_add(nd_graph *g, const nd_op *op, const void *params,
                 size_t params_len, const int64_t *inputs, size_t ninputs,
                 const char *label, int64_t *out);

/* A source file (its value, for an op, is the path: nd_op_input_path). Its
 * key is the digest of its content, computed when the graph runs. label NULL:
 * the path's last component. The path is copied and may be relative; it never
 * enters a key. Adding the same path twice returns the same id. */
int nd_graph_file(nd_graph *g, const char *path, const char *label, int64_t *out);

/* A constant value (retained by the graph). Its key is the digest of its
 * canonical encoding. Errors: ND_EINVAL, ND_ENOMEM. */
int nd_graph_const(nd_graph *g, nd_array *value, const char *label, int64_t *out);

/* Override the op's mem_cost for one node. */
int nd_graph_set_cost(nd_graph *g, int64_t node, size_t bytes);

size_t nd_graph_size(const nd_graph *g);
const char *nd_graph_label(const nd_graph *g, int64_t node); /* owned by g; NULL for a bad id */

/* What a progress callback sees (nd_graph_run_opts.progress). Node counts
 * count distinct nodes (after merging), as nd_graph_stats does. Fields are
 * only ever appended. */
typedef struct nd_graph_progress {
  size_t total;     /* nodes this run settles: hits, nodes to compute, and nodes
                       failed or skipped at planning. Known after planning;
                       may grow in a later round (another process's node,
                       a corrupt entry) */
  size_t done;      /* settled so far: hits + computed + waited + failed +
                       skipped. Never decreases from one call to the next
                       (so in a later round, where a node may have to be
                       recomputed after all, it may exceed that sum) */
  size_t hits;      /* answered by the cache at planning (done at once) */
  size_t computed;  /* ops that ran here and produced a value */
  size_t waited;    /* computed by another process, read from the cache */
  size_t failed, skipped;
  size_t canceled;  /* never started because the run was canceled */
  double elapsed_s; /* since nd_graph_run was called */
  double eta_s;     /* estimated seconds left, from the rate of nodes settled
                       since the executor started; < 0: unknown yet */
  int round;        /* plan+run round, from 1 */
  bool final;       /* the last call: counts equal nd_graph_stats, and
                       done + canceled == total */
} nd_graph_progress;

typedef void (*nd_graph_progress_fn)(const nd_graph_progress *p, void *ud);

typedef struct nd_graph_run_opts {
  nd_cache *cache;          /* NULL: compute everything, store nothing */
  nd_pool *pool;            /* NULL: the global pool */
  const int64_t *targets;   /* nodes whose values are wanted; NULL: every node */
  size_t ntargets;          /*   that no other node consumes (the sinks) */
  bool no_claims;           /* do not coordinate with other processes */
  unsigned poll_ms;         /* wait between checks on another process's node; 0: 20 */
  /* Progress: called once after planning, then as nodes finish, at most
   * every progress_ms (0: 100 ms), and exactly once more with final set when
   * the run ends (every return except ND_EINVAL for bad arguments). Calls
   * never overlap: the planning and final calls come from the calling
   * thread, the others from the pool worker that just finished a node
   * (keep it short: that worker waits). A worker finding another call in
   * progress skips its own. Calls come only as nodes finish: none while
   * every worker is inside a long node. NULL: no calls and no cost. */
  nd_graph_progress_fn progress;
  void *progress_ud;
  unsigned progress_ms;
  /* Cancellation: when *cancel becomes non-zero, no further node starts.
   * Nodes already running finish and are stored as usual, the cache is
   * flushed, and nd_graph_run returns ND_ECANCELED; the nodes that did not
   * start are ND_GNODE_CANCELED (and listed by nd_graph_report). A later
   * run computes only what was not stored. An atomic_int (lock-free on every
   * supported platform) may be set from a signal handler with atomic_store.
   * The flag is checked between targets while deriving keys (a flag set
   * then cancels the op targets themselves, before any planning), before
   * each round's executor starts and before each node starts; digesting
   * one source file is not interrupted. NULL: never canceled. */
  const atomic_int *cancel;
  /* Chrome trace (Trace Event Format JSON, viewable in Perfetto or
   * chrome://tracing): one complete ("X") event per node that ran its op
   * (cat: the op name) or read the cache (cat "fetch"), named by its label,
   * with args key (hex) and state ("computed", "failed", "fetched",
   * "waited", ...), on one track per pool worker ("worker <i>", tid i), and
   * events for key derivation, planning and the cache flush (cat "nidag")
   * on the calling thread's track ("caller", tid = the number of workers).
   * ts and dur are microseconds since the run started. NULL: $NIDAG_TRACE
   * when it is set and not empty, else no trace; "": no trace even then.
   * Each nd_graph_run writes (overwrites) the whole file when it ends, so
   * with $NIDAG_TRACE a program doing several runs keeps the last one's;
   * set trace_path per run to keep each.
   * Recording stops after ND_GRAPH_TRACE_MAX_EVENTS events (the file says
   * how many were dropped). A trace that cannot be written prints one
   * warning on stderr; the run's result does not change. */
  const char *trace_path;
} nd_graph_run_opts;

#define ND_GRAPH_TRACE_MAX_EVENTS 1000000u

/* Node counts count each distinct node once, by its final state after the
 * last round (nd_graph_state), however many rounds it took part in. */
typedef struct nd_graph_stats {
  size_t nodes;          /* distinct nodes after merging equal keys */
  size_t merged;         /* nodes merged into an equal-key node at planning */
  size_t visited;        /* nodes planning looked at */
  size_t hits;           /* nodes answered by the cache (ND_GNODE_HIT; an entry
                            that turned out corrupt is not a hit) */
  size_t computed;       /* nodes whose op ran here (ND_GNODE_COMPUTED; an
                            ND_OP_NO_CACHE op run again in a later round
                            counts once) */
  size_t fetched;        /* nodes whose cached value was read (inputs of misses,
                            and targets) */
  size_t failed, skipped;/* ND_GNODE_FAILED, ND_GNODE_SKIPPED */
  size_t corrupt;        /* nodes whose cached entry failed verification, then
                            recomputed (or stored by another process) */
  size_t waited;         /* nodes another live process computed for us */
  size_t files_hashed;   /* source files read to digest them */
  size_t files_memo;     /* source files answered by the stat memo */
  size_t rounds;         /* plan+run rounds (more than 1 after corruption or waiting) */
  double plan_seconds;   /* first round's planning */
  double run_seconds;    /* the whole nd_graph_run */
  double seconds_saved;  /* recorded compute time of the hits (as counted above) */
  size_t canceled;       /* ND_GNODE_CANCELED: not started, the run was canceled */
} nd_graph_stats;

/* Plan against the cache and run what is missing. Every result computed is
 * put in the cache as soon as it finishes (and flushed before returning). A
 * failed node's dependents are skipped; everything independent still runs
 * and is cached; failures are recorded in the cache's failures database. A
 * cached entry that fails verification is deleted, reported and recomputed.
 * A node another live process has claimed is not computed here: this run
 * does other work and later reads the value (or takes the claim over if that
 * process died). May be called again on the same graph (a rerun).
 * States after the run are final outcomes: a node skipped in an early round
 * that was later computed, or read from the cache (WAITED), or no longer
 * needed because its consumers were (another process stored them), is not
 * SKIPPED. A node that failed stays FAILED (and reported) even when another
 * process later supplied what depended on it.
 * Returns 0 when every target is DONE (HIT, COMPUTED or WAITED; file and
 * const targets count as DONE unless a file could not be digested),
 * ND_ETASK when some target failed or was skipped (nd_graph_report lists
 * the failed and skipped nodes), ND_ECANCELED when o->cancel stopped some
 * node from starting (a cancel coming after every node had started changes
 * nothing), ND_EINVAL (bad target id), ND_EIO (cache errors; the message
 * says which), ND_ENOMEM. stats may be NULL. */
int nd_graph_run(nd_graph *g, const nd_graph_run_opts *o, nd_graph_stats *stats);

/* State of a node after the last run. */
typedef enum nd_graph_node_state {
  ND_GNODE_UNUSED = 0,  /* not needed by the last run (or never run) */
  ND_GNODE_HIT,         /* answered by the cache */
  ND_GNODE_COMPUTED,    /* computed by this process */
  ND_GNODE_WAITED,      /* computed by another process; read from the cache */
  ND_GNODE_FAILED,
  ND_GNODE_SKIPPED,     /* an upstream node failed */
  ND_GNODE_CANCELED,    /* not started: the run was canceled (o->cancel) */
} nd_graph_node_state;

nd_graph_node_state nd_graph_state(const nd_graph *g, int64_t node);
/* The node's key (computed by the last run, or now, which stats files).
 * ND_ESTATE when a file input could not be digested (the message says why).
 * Computing a key now changes nothing the last run left: no node's state,
 * error or merging (keys and file digests may be memoised). */
int nd_graph_key(nd_graph *g, int64_t node, nd_hash128 *out);
/* The value of a target after a run: *out gets a new reference (release it).
 * ND_ENOTFOUND when the node has no value (not a target, failed, skipped). */
int nd_graph_get(nd_graph *g, int64_t node, nd_array **out);
/* The node's error code (0 if none) and message (owned by g; "" if none). */
int nd_graph_error(const nd_graph *g, int64_t node, const char **msg);
/* One line per failed node ("failed  <label>: <ERRNAME>: <message>"), per
 * skipped node ("skipped <label>: upstream node '<label>' failed"), per
 * canceled node ("canceled <label>: not started, the run was canceled") and
 * per recovered corrupt entry ("corrupt <label>: <message>; recomputed").
 * Returns the number of lines. */
size_t nd_graph_report(const nd_graph *g, FILE *out);

/* --------------------------------------------------------- inside an op */

size_t nd_op_ninputs(const nd_op_ctx *c);
/* Input i's value (borrowed: valid during the call; retain to keep). NULL for
 * a file input or a bad index. */
nd_array *nd_op_input(const nd_op_ctx *c, size_t i);
/* Input i's path when it is a file node (as given to nd_graph_file), else NULL. */
const char *nd_op_input_path(const nd_op_ctx *c, size_t i);
const void *nd_op_params(const nd_op_ctx *c, size_t *len);
nd_hash128 nd_op_key(const nd_op_ctx *c);  /* derive random streams from this */
const char *nd_op_label(const nd_op_ctx *c);
void *nd_op_userdata(const nd_op_ctx *c);
nd_pool *nd_op_pool(const nd_op_ctx *c);
/* Set the result; takes the caller's reference (also on error). Calling it
 * twice replaces the first value. ND_EINVAL for NULL. */
int nd_op_set_output(nd_op_ctx *c, nd_array *value);
/* Record a message and return code (for `return nd_op_fail(...)`). */
int nd_op_fail(nd_op_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* NIDAG_GRAPH_H */

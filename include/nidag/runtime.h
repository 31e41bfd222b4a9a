/* nidag runtime: the work-stealing executor.
 *
 * One pool of N worker threads, each with a bounded Chase-Lev deque, plus a
 * shared injection queue for work submitted from outside the pool. Idle
 * workers spin briefly and then sleep on a futex, so an idle pool uses no CPU.
 *
 * Three ways to give it work:
 *  - fork-join groups: nd_spawn() tasks into an nd_group, nd_group_wait();
 *  - nd_parallel_for / nd_parallel_reduce over an index range;
 *  - task graphs (nd_taskgraph): nodes with dependencies, labels, memory
 *    costs, and per-node error reporting.
 * All three may be used from inside a running task: a worker that waits
 * helps (runs other tasks) instead of blocking.
 *
 * Determinism: nothing here makes a result depend on the thread count or the
 * schedule, as long as tasks write to their own outputs. parallel_for chunk
 * boundaries depend only on (begin, end, chunking, chunk), and
 * nd_parallel_reduce combines fixed leaves in a fixed order. Random streams
 * (nd_rng) are counter-based and keyed, never per-thread.
 */
#ifndef NIDAG_RUNTIME_H
#define NIDAG_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ pool */

typedef struct nd_pool nd_pool;

/* Zero means "default" for every field. Fields are only ever appended. */
typedef struct nd_runtime_opts {
  /* Worker threads. 0: $NIDAG_THREADS if set, else nd_usable_cpus(). */
  unsigned threads;
  /* Upper bound on the sum of the declared memory costs of running graph
   * nodes, in bytes. 0: unlimited. */
  size_t mem_budget;
  /* How long an idle worker keeps looking for work before it sleeps, in
   * microseconds. 0: the default (ND_DEFAULT_SPIN_US). */
  unsigned spin_us;
} nd_runtime_opts;

#define ND_DEFAULT_SPIN_US 50

/* CPUs this process may use: the affinity mask, capped by a cgroup (v1 or v2)
 * CPU quota, rounded up. At least 1. */
unsigned nd_usable_cpus(void);

/* Start a pool. opts may be NULL (all defaults). Also sets BLAS to one thread
 * (openblas_set_num_threads(1)) so BLAS calls inside tasks do not
 * oversubscribe the cores. Errors: ND_EINVAL, ND_ENOMEM, ND_ESYS. */
int nd_pool_open(nd_pool **out, const nd_runtime_opts *opts);
/* Stop and join the workers. All work submitted to the pool must be finished
 * (every group waited, every run returned). NULL-safe. Must not be called
 * from one of the pool's own workers. */
void nd_pool_close(nd_pool *p);
/* The process-wide pool, started with default options on first use and
 * stopped at exit (ND_ESTATE once exit has begun). Thread-safe. Errors as
 * nd_pool_open. Pools do not survive fork(): a child process must open its
 * own pool and must not use one inherited from its parent. */
int nd_pool_global(nd_pool **out);
unsigned nd_pool_threads(const nd_pool *p);
/* Index of the calling worker in its pool (0..N-1), or -1 when the calling
 * thread is not a pool worker. */
int nd_worker_index(void);

typedef struct nd_pool_stats {
  uint64_t tasks;          /* tasks executed (spawned, graph nodes, claimers) */
  uint64_t steals;         /* successful steals from another worker's deque */
  uint64_t failed_steals;  /* steal attempts that found nothing or lost a race */
  uint64_t sleeps;         /* times a worker went to sleep on the futex */
  uint64_t wakes;          /* futex wake-ups issued to sleeping workers */
  uint64_t injected;       /* tasks submitted from outside the pool */
  uint64_t inlined;        /* spawns run immediately because a deque was full */
  size_t mem_in_use;       /* declared cost of the graph nodes running now */
  size_t mem_peak;         /* highest mem_in_use since open or reset */
} nd_pool_stats;

/* Counters summed over workers. Approximate while work is running. */
void nd_pool_stats_get(const nd_pool *p, nd_pool_stats *out);
void nd_pool_stats_reset(nd_pool *p);

/* ---------------------------------------------------------- fork-join */

typedef int (*nd_task_fn)(void *arg);

/* A set of spawned tasks to wait for. Lives on the caller's stack (or
 * anywhere); initialise with nd_group_init, spawn, then nd_group_wait before
 * it goes out of scope. The fields are private to the runtime. */
typedef struct nd_group {
  nd_pool *pool_;
  void *owner_;               /* token of the thread that initialised it */
  uint32_t spawned_;          /* spawned by the owner (owner only) */
  uint32_t done_local_;       /* of those, completed by the owner (owner only) */
  uint32_t armed_;            /* subtracted from remote_ by a sleeping owner */
  _Atomic uint32_t remote_;   /* completions elsewhere minus spawns elsewhere */
  _Atomic int err_;           /* first non-zero task result */
  int owner_is_worker_;
} nd_group;

/* Bind g to pool p (NULL: the global pool; if it cannot start, nd_spawn runs
 * tasks inline). */
void nd_group_init(nd_group *g, nd_pool *p);
/* Run fn(arg) on the pool. From a worker the task goes to that worker's deque
 * (or, when it is full, runs at once); from another thread it goes to the
 * injection queue. arg must stay valid until nd_group_wait returns. The
 * thread that initialised g, and tasks running inside g, may spawn into it;
 * only the initialising thread may wait on it. If no task record can be
 * allocated, fn runs at once on the calling thread. */
void nd_spawn(nd_group *g, nd_task_fn fn, void *arg);
/* Wait until every task spawned into g has finished. A worker runs other
 * tasks while it waits; another thread sleeps. Returns the first non-zero
 * value a task returned (every task still runs), else 0. */
int nd_group_wait(nd_group *g);

/* Run fn(arg) on a worker of p (NULL: the global pool) and wait for it;
 * returns its result. From a worker of p this just calls fn. Errors:
 * ND_ENOMEM (fn did not run), or the global pool's error. */
int nd_pool_run(nd_pool *p, nd_task_fn fn, void *arg);

/* -------------------------------------------------------- parallel for */

typedef enum nd_chunking {
  ND_STATIC = 0,    /* chunks in contiguous blocks, one block per claimer */
  ND_STATIC_CYCLIC, /* chunk k to claimer k mod P */
  ND_DYNAMIC,       /* claimers take the next chunk as they free up */
  ND_GUIDED,        /* dynamic, with chunks of max(chunk, remaining/8) */
} nd_chunking;

/* Number of chunks used when chunk is 0: chunk = ceil(n / ND_DEFAULT_CHUNKS). */
#define ND_DEFAULT_CHUNKS 256
/* Guided chunks are max(chunk, remaining / ND_GUIDED_DIVISOR). */
#define ND_GUIDED_DIVISOR 8

/* Body over items [lo, hi). A non-zero return stops new chunks from being
 * claimed and is returned by the loop. */
typedef int (*nd_for_fn)(void *ctx, size_t lo, size_t hi);

/* Run fn over [begin, end) in chunks of `chunk` items (0: default), with at
 * most nd_pool_threads(p) claimers. Chunk boundaries depend only on (begin,
 * end, chunking, chunk). Callable from a task: the caller claims chunks too.
 * p NULL: the global pool. Returns 0, the first non-zero body result, or
 * ND_EINVAL (bad chunking). */
int nd_parallel_for(nd_pool *p, size_t begin, size_t end, nd_chunking how,
                    size_t chunk, nd_for_fn fn, void *ctx);

/* Deterministic reduction. [begin, end) is cut into leaves of `grain` items
 * (0: 4096). Each leaf is reduced into its own partial (init, then body), and
 * the partials are combined pairwise in a fixed tree over leaf order. The
 * result depends on grain only: never on threads, chunking or chunk (which is
 * counted in leaves here). */
typedef struct nd_reduce_desc {
  size_t grain;
  nd_chunking chunking;
  size_t chunk;
  size_t partial_size;                                  /* bytes per partial */
  void (*init)(void *ctx, void *partial);               /* the identity */
  int (*body)(void *ctx, size_t lo, size_t hi, void *partial);
  void (*combine)(void *ctx, void *into, const void *from); /* into op= from */
  void *ctx;
} nd_reduce_desc;

/* Writes the total into result (partial_size bytes). An empty range gives the
 * identity. Errors: ND_EINVAL, ND_ENOMEM, or the first body error. */
int nd_parallel_reduce(nd_pool *p, size_t begin, size_t end,
                       const nd_reduce_desc *d, void *result);

/* ---------------------------------------------------------- task graphs */

typedef struct nd_taskgraph nd_taskgraph;
typedef struct nd_task_ctx nd_task_ctx;

/* A graph node's body. Return 0, or an error code (ideally through
 * nd_task_fail, which records a message). */
typedef int (*nd_node_fn)(nd_task_ctx *ctx, void *arg);

typedef enum nd_node_state {
  ND_NODE_PENDING = 0, /* not run (yet) */
  ND_NODE_DONE,
  ND_NODE_FAILED,
  ND_NODE_SKIPPED,     /* an upstream node failed */
} nd_node_state;

int nd_taskgraph_new(nd_taskgraph **out);
void nd_taskgraph_free(nd_taskgraph *g);
/* Add a node; returns its id (>= 0, dense from 0) or a negative error.
 * The label is copied; NULL gives "node <id>". */
int64_t nd_taskgraph_add(nd_taskgraph *g, nd_node_fn fn, void *arg, const char *label);
/* Declare the node's memory cost in bytes for the pool's memory budget.
 * A node holding a cost must not wait for other costed work (a nested graph
 * with costs): if the rest of the budget cannot hold that work, it never
 * starts. Nested graphs without costs, loops and groups are fine. */
int nd_taskgraph_set_cost(nd_taskgraph *g, int64_t node, size_t bytes);
/* `node` runs after `before` has finished. ND_EINVAL for bad ids, self-edges;
 * cycles are reported by nd_taskgraph_run. */
int nd_taskgraph_depend(nd_taskgraph *g, int64_t node, int64_t before);

typedef struct nd_run_stats {
  size_t done, failed, skipped;
} nd_run_stats;

/* Run every node of g on p (NULL: global pool) and wait. A failing node
 * cancels its transitive dependents (they are SKIPPED) but not unrelated
 * branches. A node whose declared cost exceeds the budget fails with
 * ND_EBUDGET. Returns 0 when every node is DONE, ND_ETASK when some failed
 * (nd_errmsg(g) names the failed nodes, as many as fit; nd_taskgraph_report
 * lists every failed and skipped node), ND_EINVAL for a cycle
 * (no node runs), ND_ESTATE if the graph already ran. stats may be NULL. */
int nd_taskgraph_run(nd_pool *p, nd_taskgraph *g, nd_run_stats *stats);

size_t nd_taskgraph_size(const nd_taskgraph *g);
nd_node_state nd_taskgraph_state(const nd_taskgraph *g, int64_t node);
const char *nd_taskgraph_label(const nd_taskgraph *g, int64_t node); /* owned by g */
/* The node's error code (0 if none) and message (owned by g; "" if none).
 * A skipped node has ND_ECANCELED and a message naming the failed node. */
int nd_taskgraph_error(const nd_taskgraph *g, int64_t node, const char **msg);

/* Write one line per failed node ("failed  <label>: <ERRNAME>: <message>")
 * and per skipped node ("skipped <label>: upstream node '<label>' failed"),
 * in id order. Returns the number of lines written. */
size_t nd_taskgraph_report(const nd_taskgraph *g, FILE *out);

/* Inside a node: record a message and return code (for `return nd_task_fail(...)`). */
int nd_task_fail(nd_task_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t nd_task_node(const nd_task_ctx *ctx);
nd_pool *nd_task_pool(const nd_task_ctx *ctx);

/* ------------------------------------------------------ random streams */

/* Counter-based random numbers: Philox4x32-10 over a 128-bit key. Block i of
 * the stream with key k is a pure function of (k, i), so a value never depends
 * on which thread drew it. Derive per-task keys from node keys and indices
 * with nd_rng_subkey. The struct is plain data; copy it freely. */
typedef struct nd_rng {
  nd_hash128 key;
  uint64_t block;  /* next block index */
  uint32_t buf[4]; /* current block */
  unsigned avail;  /* 32-bit words left in buf */
} nd_rng;

void nd_rng_init(nd_rng *r, nd_hash128 key);
/* Key of the index-th sub-stream of key (XXH3-128 of both). */
nd_hash128 nd_rng_subkey(nd_hash128 key, uint64_t index);
/* The raw generator: out = Philox4x32-10(counter (block lo, block hi, key.hi lo,
 * key.hi hi), key (key.lo lo, key.lo hi)). */
void nd_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
uint32_t nd_rng_u32(nd_rng *r);
uint64_t nd_rng_u64(nd_rng *r);
double nd_rng_uniform(nd_rng *r);          /* [0, 1), 53 random bits */
uint64_t nd_rng_below(nd_rng *r, uint64_t n); /* uniform in [0, n), unbiased; 0 if n is 0 */
double nd_rng_normal(nd_rng *r);           /* standard normal */

#ifdef __cplusplus
}
#endif
#endif /* NIDAG_RUNTIME_H */

/* nd_parallel_for and nd_parallel_reduce.
 *
 * A loop is one logical node that fans out to P = min(threads, chunks)
 * claimers: the calling worker is claimer 0 and spawns the other P - 1 into a
 * group, then helps while it waits. How chunks map to claimers is the
 * chunking; where chunks start and end is not:
 *  - static, static-cyclic, dynamic: chunk c is [begin + c*chunk, +chunk);
 *  - guided: each claim takes max(chunk, remaining / ND_GUIDED_DIVISOR)
 *    items from a shared position, so the sequence of boundaries is a pure
 *    function of (begin, end, chunk) whoever claims them.
 * Called from outside the pool, the whole loop is first sent into the pool.
 */
#include <string.h>

#include "runtime/runtime_int.h"

#define ND__REDUCE_DEFAULT_GRAIN 4096
#define ND__STACK_CLAIMERS 64
#define ND__PARTIAL_ALIGN 64

typedef struct pfor {
  nd_for_fn fn;
  void *ctx;
  size_t begin, end, chunk, nchunks;
  nd_chunking how;
  unsigned nclaimers;
  _Atomic size_t next; /* dynamic: next chunk index; guided: next position */
  _Atomic int err;
} pfor;

typedef struct claimer {
  pfor *loop;
  unsigned index;
} claimer;

static inline bool failed(pfor *l) {
  return atomic_load_explicit(&l->err, memory_order_relaxed) != 0;
}

static void record(pfor *l, int r) {
  if (r == 0) return;
  int zero = 0;
  atomic_compare_exchange_strong(&l->err, &zero, r);
}

static void run_chunk(pfor *l, size_t c) {
  size_t lo = l->begin + c * l->chunk;
  size_t hi = l->end - lo > l->chunk ? lo + l->chunk : l->end;
  record(l, l->fn(l->ctx, lo, hi));
}

static void claim_guided(pfor *l) {
  size_t pos = atomic_load_explicit(&l->next, memory_order_relaxed);
  while (pos < l->end && !failed(l)) {
    size_t size = (l->end - pos) / ND_GUIDED_DIVISOR;
    if (size < l->chunk) size = l->chunk;
    if (size > l->end - pos) size = l->end - pos;
    if (atomic_compare_exchange_weak(&l->next, &pos, pos + size)) {
      record(l, l->fn(l->ctx, pos, pos + size));
      pos = atomic_load_explicit(&l->next, memory_order_relaxed);
    }
  }
}

static int claim(void *arg) {
  claimer *c = arg;
  pfor *l = c->loop;
  size_t P = l->nclaimers, j = c->index, n = l->nchunks;
  switch (l->how) {
  case ND_STATIC: {
    /* Block j of P: chunks [j*n/P, (j+1)*n/P), computed without overflow. */
    size_t lo = (size_t)((unsigned __int128)n * j / P);
    size_t hi = (size_t)((unsigned __int128)n * (j + 1) / P);
    for (size_t k = lo; k < hi && !failed(l); k++) run_chunk(l, k);
    break;
  }
  case ND_STATIC_CYCLIC:
    for (size_t k = j; k < n && !failed(l); k += P) run_chunk(l, k);
    break;
  case ND_DYNAMIC:
    for (;;) {
      if (failed(l)) break;
      size_t k = atomic_fetch_add_explicit(&l->next, 1, memory_order_relaxed);
      if (k >= n) break;
      run_chunk(l, k);
    }
    break;
  case ND_GUIDED:
    claim_guided(l);
    break;
  }
  return 0;
}

/* Runs on a worker of the pool. */
static int run_loop(void *arg) {
  pfor *l = arg;
  claimer stack_claimers[ND__STACK_CLAIMERS];
  claimer *cl = stack_claimers;
  if (l->nclaimers > ND__STACK_CLAIMERS) {
    claimer *heap = nd_malloc(l->nclaimers * sizeof *heap);
    if (heap)
      cl = heap;
    else
      l->nclaimers = 1; /* out of memory: one claimer, still correct */
  }
  nd_group g;
  nd_group_init(&g, nd__current_worker()->pool);
  for (unsigned j = 0; j < l->nclaimers; j++) cl[j] = (claimer){l, j};
  for (unsigned j = 1; j < l->nclaimers; j++) nd_spawn(&g, claim, &cl[j]);
  claim(&cl[0]);
  nd_group_wait(&g);
  if (cl != stack_claimers) nd_free(cl);
  return atomic_load(&l->err);
}

int nd_parallel_for(nd_pool *p, size_t begin, size_t end, nd_chunking how, size_t chunk,
                    nd_for_fn fn, void *ctx) {
  if (!fn || how < ND_STATIC || how > ND_GUIDED) return ND_EINVAL;
  if (end <= begin) return 0;
  if (!p) {
    nd__worker *w = nd__current_worker();
    if (w)
      p = w->pool;
    else if (nd_pool_global(&p) != 0)
      return fn(ctx, begin, end); /* no pool: one serial chunk */
  }
  size_t n = end - begin;
  if (chunk == 0) chunk = n / ND_DEFAULT_CHUNKS + (n % ND_DEFAULT_CHUNKS != 0);
  pfor l = {.fn = fn, .ctx = ctx, .begin = begin, .end = end, .chunk = chunk, .how = how};
  l.nchunks = n / chunk + (n % chunk != 0);
  l.nclaimers = p->nworkers;
  if (how != ND_GUIDED && l.nchunks < l.nclaimers) l.nclaimers = (unsigned)l.nchunks;
  atomic_init(&l.next, how == ND_GUIDED ? begin : 0);
  atomic_init(&l.err, 0);
  return nd_pool_run(p, run_loop, &l);
}

/* -------------------------------------------------------- reduction */

typedef struct reduce {
  const nd_reduce_desc *d;
  unsigned char *partials;
  size_t stride, begin, end, grain;
} reduce;

static int reduce_leaves(void *arg, size_t lo, size_t hi) {
  reduce *r = arg;
  for (size_t leaf = lo; leaf < hi; leaf++) {
    void *part = r->partials + leaf * r->stride;
    size_t a = r->begin + leaf * r->grain;
    size_t b = r->end - a > r->grain ? a + r->grain : r->end;
    r->d->init(r->d->ctx, part);
    int rc = r->d->body(r->d->ctx, a, b, part);
    if (rc) return rc;
  }
  return 0;
}

int nd_parallel_reduce(nd_pool *p, size_t begin, size_t end, const nd_reduce_desc *d,
                       void *result) {
  if (!d || !result || !d->init || !d->body || !d->combine || d->partial_size == 0)
    return ND_EINVAL;
  if (end <= begin) {
    d->init(d->ctx, result);
    return 0;
  }
  reduce r = {.d = d, .begin = begin, .end = end};
  r.grain = d->grain ? d->grain : ND__REDUCE_DEFAULT_GRAIN;
  size_t n = end - begin, leaves = n / r.grain + (n % r.grain != 0), bytes;
  /* Partials on their own cache lines so claimers do not share lines. */
  r.stride = (d->partial_size + ND__PARTIAL_ALIGN - 1) / ND__PARTIAL_ALIGN * ND__PARTIAL_ALIGN;
  if (!nd__mul_size(leaves, r.stride, &bytes)) return ND_EOVERFLOW;
  r.partials = nd_malloc(bytes);
  if (!r.partials) return ND_ENOMEM;
  int rc = nd_parallel_for(p, 0, leaves, d->chunking, d->chunk, reduce_leaves, &r);
  if (rc == 0) {
    /* A fixed pairwise tree over leaf order: the rounding never depends on
     * who computed which leaf. */
    for (size_t step = 1; step < leaves; step *= 2)
      for (size_t i = 0; i + step < leaves; i += 2 * step)
        d->combine(d->ctx, r.partials + i * r.stride, r.partials + (i + step) * r.stride);
    memcpy(result, r.partials, d->partial_size);
  }
  nd_free(r.partials);
  return rc;
}

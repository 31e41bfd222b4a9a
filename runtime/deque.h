/* Bounded Chase-Lev work-stealing deque of pointers (private to runtime/).
 *
 * How it works
 * ------------
 * One owner thread pushes and pops at the bottom; any thread steals at the
 * top. `top` only grows (thieves and the owner's last-item pop advance it by
 * CAS); `bottom` is written only by the owner. Items live in a ring of
 * `capacity` slots indexed by position & mask. The orderings follow Lê,
 * Pop, Cohen and Zappa Nardelli, "Correct and Efficient Work-Stealing for
 * Weak Memory Models" (PPoPP 2013), with one deliberate change: every store
 * of `bottom` is a release store and every thief load of it is an acquire
 * load (instead of release/acquire fences), so the task a thief takes is
 * published to it by a synchronises-with edge that ThreadSanitizer can see.
 * On x86 these are plain moves, so the change costs nothing.
 *
 *  - push: the owner reads top (acquire); if bottom - top == capacity the
 *    deque is full and push fails (the caller runs the task itself or sends
 *    it elsewhere: the ring never grows, so no allocation ever happens here).
 *    Otherwise it writes the slot and release-stores bottom + 1.
 *  - pop: the owner reserves the bottom slot by storing bottom - 1, then a
 *    seq_cst fence orders that store before its read of top (the store-load
 *    order a thief relies on). With more than one item left it owns the item
 *    outright; with exactly one it races thieves with a CAS on top.
 *  - steal: read top, fence, read bottom; if non-empty read the slot and CAS
 *    top to claim it. The slot is only read before the CAS and only used if
 *    the CAS succeeds, so a slot the owner recycled is never dereferenced.
 *
 * A full ring cannot overwrite a slot a thief is about to claim: the owner
 * writes slot b only when b - top < capacity for a top it has read, and top
 * never goes backwards.
 */
#ifndef NIDAG_RUNTIME_DEQUE_H
#define NIDAG_RUNTIME_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nidag/core.h"

#define ND__CACHELINE 64

/* A sequentially consistent fence. GCC refuses atomic_thread_fence under
 * ThreadSanitizer (which does not model fences), so TSan builds use a seq_cst
 * read-modify-write of a dummy word: a full barrier on the hardware, and no
 * race report either way, since TSan checks plain accesses, not atomics. */
#if defined(__SANITIZE_THREAD__)
extern _Atomic int nd__fence_word;
#define ND__FENCE_SEQ_CST() ((void)atomic_fetch_add(&nd__fence_word, 0))
#else
#define ND__FENCE_SEQ_CST() atomic_thread_fence(memory_order_seq_cst)
#endif

typedef struct nd__deque {
  _Alignas(ND__CACHELINE) _Atomic int64_t top;
  _Alignas(ND__CACHELINE) _Atomic int64_t bottom;
  _Alignas(ND__CACHELINE) _Atomic(void *) *slots;
  int64_t mask; /* capacity - 1 */
} nd__deque;

typedef enum nd__steal_result {
  ND__STEAL_OK = 0,
  ND__STEAL_EMPTY,
  ND__STEAL_LOST, /* another thread took the item first: retrying may succeed */
} nd__steal_result;

/* capacity must be a power of two >= 2. ND_EINVAL, ND_ENOMEM. */
static inline int nd__deque_init(nd__deque *d, size_t capacity) {
  if (capacity < 2 || (capacity & (capacity - 1)) != 0) return ND_EINVAL;
  d->slots = (_Atomic(void *) *)nd_calloc(capacity, sizeof(*d->slots));
  if (!d->slots) return ND_ENOMEM;
  atomic_init(&d->top, 0);
  atomic_init(&d->bottom, 0);
  d->mask = (int64_t)capacity - 1;
  return 0;
}

static inline void nd__deque_destroy(nd__deque *d) {
  nd_free((void *)d->slots);
  d->slots = NULL;
}

/* Owner only. false when full. */
static inline bool nd__deque_push(nd__deque *d, void *item) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
  if (b - t > d->mask) return false;
  atomic_store_explicit(&d->slots[b & d->mask], item, memory_order_relaxed);
  atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
  return true;
}

/* Owner only. NULL when empty. */
static inline void *nd__deque_pop(nd__deque *d) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
  atomic_store_explicit(&d->bottom, b, memory_order_release);
  ND__FENCE_SEQ_CST();
  int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
  if (t > b) { /* empty: undo the reservation */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return NULL;
  }
  void *item = atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
  if (t == b) { /* last item: race the thieves for it */
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
      item = NULL;
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
  }
  return item;
}

/* Any thread. */
static inline nd__steal_result nd__deque_steal(nd__deque *d, void **out) {
  int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
  ND__FENCE_SEQ_CST();
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
  if (t >= b) return ND__STEAL_EMPTY;
  void *item = atomic_load_explicit(&d->slots[t & d->mask], memory_order_relaxed);
  if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                               memory_order_relaxed))
    return ND__STEAL_LOST;
  *out = item;
  return ND__STEAL_OK;
}

/* Approximate size, for heuristics only. */
static inline int64_t nd__deque_size(nd__deque *d) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
  return b > t ? b - t : 0;
}

#endif /* NIDAG_RUNTIME_DEQUE_H */

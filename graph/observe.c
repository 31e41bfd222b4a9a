/* Watching a run: progress calls and Chrome traces (nd_graph_run_opts).
 *
 * Progress. The calling thread owns the counts of what was settled before
 * a round's tasks start (it takes them from the node states after planning,
 * while no task runs); tasks add their outcomes to atomic counters. A call
 * is due when progress_ms has passed since the last one; the task that
 * notices takes `busy` with a test-and-set and skips the call if another
 * thread holds it, so calls never overlap and no worker ever waits for
 * another's call. busy's acquire/release also orders one call's effects
 * (and the counters it read) before the next call. Counts read while tasks
 * run may lag by the nodes finishing at that instant; `done` and `total`
 * are clamped to never go below what the last call said. With a NULL
 * callback none of this runs: the tasks test one pointer.
 *
 * Traces. How it works: each pool worker appends its tasks' spans to its
 * own buffer (one per worker, cache-line aligned, found by
 * nd_worker_index()), so recording takes no lock and touches no shared
 * line: the only shared write is the reservation of buffer space from the
 * run's event budget, one atomic add per buffer growth (the buffer doubles),
 * not per event. The worker buffers are made by the first task, which knows
 * the pool (and so the number of workers); a compare-and-swap publishes
 * them. The calling thread has its own buffer for key derivation, planning
 * and the flush. When the budget is spent further events are counted, not
 * kept. At the end the calling thread, alone again, writes the JSON:
 * labels, op names and keys come from the graph then, so an event is only
 * 24 bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#include "graph/graph_int.h"

#define ND__PROGRESS_DEFAULT_MS 100u
#define ND__NS_PER_MS_U64 1000000ull
#define ND__TRACE_FIRST_EVENTS 1024u  /* a buffer's first allocation, in events */
#define ND__TRACE_ALIGN 64            /* a cache line: no false sharing between tracks */
#define ND__TRACE_IO_BUF (1u << 20)   /* stdio buffer for writing the file */
#define ND__TRACE_PID 1

/* ------------------------------------------------------------ progress */

void nd__prog_init(nd__progress *p, const nd_graph_run_opts *o, uint64_t t0_ns) {
  memset(p, 0, sizeof *p);
  p->fn = o->progress;
  p->ud = o->progress_ud;
  p->interval_ns = (uint64_t)(o->progress_ms ? o->progress_ms : ND__PROGRESS_DEFAULT_MS) *
                   ND__NS_PER_MS_U64;
  p->t0_ns = t0_ns;
  atomic_init(&p->computed, 0);
  atomic_init(&p->waited, 0);
  atomic_init(&p->failed, 0);
  atomic_init(&p->skipped, 0);
  atomic_init(&p->canceled, 0);
  atomic_init(&p->next_ns, 0);
  atomic_flag_clear(&p->busy);
}

static void prog_lock(nd__progress *p) {
  while (atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire)) {
  }
}

static void prog_unlock(nd__progress *p) {
  atomic_flag_clear_explicit(&p->busy, memory_order_release);
}

static size_t base_done(const nd__progress *p) {
  return p->base_hits + p->base_computed + p->base_waited + p->base_failed + p->base_skipped;
}

static double ns_to_s(uint64_t ns) { return (double)ns / (double)ND__NS_PER_S; }

/* The live counts (busy held). */
static void snapshot(nd__progress *p, uint64_t now, nd_graph_progress *s) {
  memset(s, 0, sizeof *s);
  s->hits = p->base_hits;
  s->computed = p->base_computed + atomic_load_explicit(&p->computed, memory_order_relaxed);
  s->waited = p->base_waited + atomic_load_explicit(&p->waited, memory_order_relaxed);
  s->failed = p->base_failed + atomic_load_explicit(&p->failed, memory_order_relaxed);
  s->skipped = p->base_skipped + atomic_load_explicit(&p->skipped, memory_order_relaxed);
  s->canceled = p->base_canceled + atomic_load_explicit(&p->canceled, memory_order_relaxed);
  s->done = s->hits + s->computed + s->waited + s->failed + s->skipped;
  s->total = base_done(p) + p->base_canceled + p->round_tasks;
  if (s->done < p->last_done) s->done = p->last_done;
  if (s->total < p->last_total) s->total = p->last_total;
  if (s->total < s->done + s->canceled) s->total = s->done + s->canceled;
  s->elapsed_s = ns_to_s(now - p->t0_ns);
  s->round = p->round;
  size_t left = s->total - s->done - s->canceled;
  if (left == 0) {
    s->eta_s = 0;
  } else if (p->exec_ns && s->done > p->exec_done) {
    s->eta_s = ns_to_s(now - p->exec_ns) * (double)left / (double)(s->done - p->exec_done);
  } else {
    s->eta_s = -1;
  }
}

/* busy held: report if progress_ms has passed since the last call. */
static void prog_call(nd__progress *p, uint64_t now) {
  if (now < atomic_load_explicit(&p->next_ns, memory_order_relaxed)) return;
  atomic_store_explicit(&p->next_ns, now + p->interval_ns, memory_order_relaxed);
  nd_graph_progress s;
  snapshot(p, now, &s);
  p->last_done = s.done;
  p->last_total = s.total;
  p->fn(&s, p->ud);
}

void nd__prog_round(nd__progress *p, const nd_graph *g, int round, size_t tasks) {
  prog_lock(p); /* no task runs now: this never waits */
  size_t cnt[ND_GNODE_CANCELED + 1] = {0};
  for (size_t i = 0; i < g->n; i++) cnt[g->nodes[i].state]++;
  p->base_hits = cnt[ND_GNODE_HIT];
  p->base_computed = cnt[ND_GNODE_COMPUTED];
  p->base_waited = cnt[ND_GNODE_WAITED];
  p->base_failed = cnt[ND_GNODE_FAILED];
  p->base_skipped = cnt[ND_GNODE_SKIPPED];
  p->base_canceled = cnt[ND_GNODE_CANCELED];
  p->round_tasks = tasks;
  p->round = round;
  atomic_store_explicit(&p->computed, 0, memory_order_relaxed);
  atomic_store_explicit(&p->waited, 0, memory_order_relaxed);
  atomic_store_explicit(&p->failed, 0, memory_order_relaxed);
  atomic_store_explicit(&p->skipped, 0, memory_order_relaxed);
  atomic_store_explicit(&p->canceled, 0, memory_order_relaxed);
  prog_call(p, nd__now_ns());
  prog_unlock(p);
}

void nd__prog_exec(nd__progress *p) {
  if (p->exec_ns) return;
  p->exec_ns = nd__now_ns();
  p->exec_done = base_done(p);
}

void nd__prog_task(nd__progress *p, nd__outcome o) {
  _Atomic size_t *c = NULL;
  switch (o) {
  case ND__OUT_COMPUTED: c = &p->computed; break;
  case ND__OUT_WAITED: c = &p->waited; break;
  case ND__OUT_FAILED: c = &p->failed; break;
  case ND__OUT_SKIPPED: c = &p->skipped; break;
  case ND__OUT_CANCELED: c = &p->canceled; break;
  default: break; /* not settled (deferred, corrupt) or not counted (fetches) */
  }
  if (c) atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
  uint64_t now = nd__now_ns();
  if (now < atomic_load_explicit(&p->next_ns, memory_order_relaxed)) return;
  if (atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire)) return; /* a call runs */
  prog_call(p, now);
  prog_unlock(p);
}

void nd__prog_final(nd__progress *p, const nd_graph_stats *st) {
  prog_lock(p);
  nd_graph_progress s;
  memset(&s, 0, sizeof s);
  s.hits = st->hits;
  s.computed = st->computed;
  s.waited = st->waited;
  s.failed = st->failed;
  s.skipped = st->skipped;
  s.canceled = st->canceled;
  s.done = s.hits + s.computed + s.waited + s.failed + s.skipped;
  s.total = s.done + s.canceled;
  s.elapsed_s = ns_to_s(nd__now_ns() - p->t0_ns);
  s.eta_s = 0;
  s.round = (int)st->rounds;
  s.final = true;
  p->fn(&s, p->ud);
  prog_unlock(p);
}

/* ------------------------------------------------------------ traces */

enum { ND__TK_COMPUTE = 0, ND__TK_FETCH = 1, ND__TK_SPAN = 2 };

typedef struct tevent {
  uint64_t start, end; /* nd__now_ns */
  uint32_t node;       /* graph node, or the round of a span */
  uint8_t kind;        /* ND__TK_COMPUTE, ND__TK_FETCH, ND__TK_SPAN + nd__tspan */
  uint8_t outcome;     /* nd__outcome */
} tevent;

typedef struct track {
  alignas(ND__TRACE_ALIGN) tevent *ev;
  size_t n, cap;
  size_t dropped; /* events past the budget (or out of memory) */
} track;

typedef struct tracks {
  unsigned n;
  track t[]; /* one per worker */
} tracks;

struct nd__trace {
  char *path;
  uint64_t t0;
  size_t max_events;
  _Atomic size_t reserved;   /* events granted to buffers so far */
  _Atomic(tracks *) workers; /* made by the first task */
  _Atomic size_t lost;       /* events with no track (out of memory) */
  track caller;              /* the calling thread's */
};

nd__trace *nd__trace_open(const char *path, uint64_t t0_ns, size_t max_events) {
  nd__trace *t = nd__aligned_calloc(ND__TRACE_ALIGN, sizeof *t);
  char *p = nd_strdup(path);
  if (!t || !p) {
    nd__aligned_free(t);
    nd_free(p);
    fprintf(stderr, "nidag: warning: no trace for '%s': out of memory\n", path);
    return NULL;
  }
  t->path = p;
  t->t0 = t0_ns;
  t->max_events = max_events;
  atomic_init(&t->reserved, 0);
  atomic_init(&t->workers, NULL);
  atomic_init(&t->lost, 0);
  return t;
}

/* Room for one more event in tr (owned by the calling thread), reserving
 * space from the run's budget as the buffer doubles. */
static bool track_room(nd__trace *t, track *tr) {
  if (tr->n < tr->cap) return true;
  size_t want = tr->cap ? tr->cap : ND__TRACE_FIRST_EVENTS;
  size_t prev = atomic_fetch_add_explicit(&t->reserved, want, memory_order_relaxed);
  if (prev >= t->max_events) return false;
  if (want > t->max_events - prev) want = t->max_events - prev;
  tevent *ev = nd_realloc(tr->ev, (tr->cap + want) * sizeof *ev);
  if (!ev) return false;
  tr->ev = ev;
  tr->cap += want;
  return true;
}

static void track_add(nd__trace *t, track *tr, const tevent *e) {
  if (track_room(t, tr))
    tr->ev[tr->n++] = *e;
  else
    tr->dropped++;
}

/* The worker tracks, made on first use (the first task knows the pool). */
static tracks *worker_tracks(nd__trace *t, nd_pool *pool) {
  tracks *ts = atomic_load_explicit(&t->workers, memory_order_acquire);
  if (ts) return ts;
  unsigned n = pool ? nd_pool_threads(pool) : 0;
  tracks *mine = nd__aligned_calloc(ND__TRACE_ALIGN, sizeof *mine + n * sizeof(track));
  if (!mine) return NULL;
  mine->n = n;
  if (atomic_compare_exchange_strong_explicit(&t->workers, &ts, mine, memory_order_acq_rel,
                                              memory_order_acquire))
    return mine;
  nd__aligned_free(mine); /* another task was first: ts is its */
  return ts;
}

void nd__trace_node(nd__trace *t, nd_pool *pool, uint32_t node, uint8_t role, uint8_t outcome,
                    uint64_t start_ns, uint64_t end_ns) {
  tracks *ts = worker_tracks(t, pool);
  int w = nd_worker_index();
  if (!ts || w < 0 || (unsigned)w >= ts->n) { /* tasks run on their pool's workers */
    atomic_fetch_add_explicit(&t->lost, 1, memory_order_relaxed);
    return;
  }
  bool read = role == ND__ROLE_FETCH || outcome == ND__OUT_WAITED;
  tevent e = {start_ns, end_ns, node, read ? ND__TK_FETCH : ND__TK_COMPUTE, outcome};
  track_add(t, &ts->t[w], &e);
}

void nd__trace_span(nd__trace *t, nd__tspan what, int round, uint64_t start_ns,
                    uint64_t end_ns) {
  tevent e = {start_ns, end_ns, (uint32_t)(round > 0 ? round : 0),
              (uint8_t)(ND__TK_SPAN + what), ND__OUT_NONE};
  track_add(t, &t->caller, &e);
}

/* ------------------------------------------------------------ writing */

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), 0 when it is not one. p is NUL-terminated
 * and NUL is no continuation byte, so nothing is read past the end. */
static size_t utf8_len(const unsigned char *p) {
  unsigned char c = p[0];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t len;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return len;
}

/* s as a JSON string: quotes, backslashes and control characters escaped,
 * bytes that are not UTF-8 replaced by U+FFFD. */
static void json_str(FILE *f, const char *s) {
  putc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      putc('\\', f);
      putc(c, f);
      p++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n': fputs("\\n", f); break;
      case '\r': fputs("\\r", f); break;
      case '\t': fputs("\\t", f); break;
      case '\b': fputs("\\b", f); break;
      case '\f': fputs("\\f", f); break;
      default: fprintf(f, "\\u%04x", c); break;
      }
      p++;
    } else if (c < 0x80) {
      putc(c, f);
      p++;
    } else {
      size_t len = utf8_len(p);
      if (len) {
        fwrite(p, 1, len, f);
        p += len;
      } else {
        fputs("\\ufffd", f);
        p++;
      }
    }
  }
  putc('"', f);
}

static const char *const outcome_names[] = {
    [ND__OUT_NONE] = "none",         [ND__OUT_COMPUTED] = "computed",
    [ND__OUT_FETCHED] = "fetched",   [ND__OUT_WAITED] = "waited",
    [ND__OUT_FAILED] = "failed",     [ND__OUT_DEFERRED] = "deferred",
    [ND__OUT_CORRUPT] = "corrupt",   [ND__OUT_SKIPPED] = "skipped",
    [ND__OUT_CANCELED] = "canceled",
};

static const char *const span_names[ND__TS_COUNT] = {
    [ND__TS_KEYS] = "keys", [ND__TS_PLAN] = "plan", [ND__TS_POLL] = "poll",
    [ND__TS_FLUSH] = "cache flush",
};

/* ns as microseconds with three decimals ("12.345"), in integers: printf's
 * %f made writing a trace several times slower. */
typedef struct usbuf {
  char s[32];
} usbuf;
static const char *us_str(uint64_t ns, usbuf *b) {
  snprintf(b->s, sizeof b->s, "%" PRIu64 ".%03u", (uint64_t)(ns / ND__NS_PER_US),
           (unsigned)(ns % ND__NS_PER_US));
  return b->s;
}

/* Since the run started (events never start before it, but clamp anyway:
 * a negative ts would only confuse a viewer). */
static uint64_t ns_since(uint64_t t0, uint64_t ns) { return ns > t0 ? ns - t0 : 0; }

static void write_event(FILE *f, const nd__trace *t, const nd_graph *g, unsigned tid,
                        const tevent *e) {
  usbuf ts, dur;
  us_str(ns_since(t->t0, e->start), &ts);
  us_str(ns_since(e->start, e->end), &dur);
  fputs(",\n{\"name\":", f);
  if (e->kind >= ND__TK_SPAN) {
    unsigned what = e->kind - ND__TK_SPAN;
    json_str(f, what < ND__TS_COUNT ? span_names[what] : "?");
    fprintf(f, ",\"cat\":\"nidag\",\"ph\":\"X\",\"ts\":%s,\"dur\":%s,\"pid\":%d,\"tid\":%u,",
            ts.s, dur.s, ND__TRACE_PID, tid);
    if (e->node) /* a round */
      fprintf(f, "\"args\":{\"round\":%u}}", e->node);
    else
      fputs("\"args\":{}}", f);
    return;
  }
  const nd__gnode *n = &g->nodes[e->node];
  const char *op = n->op ? n->op->name : "";
  json_str(f, n->label && *n->label ? n->label : op);
  fputs(",\"cat\":", f);
  json_str(f, e->kind == ND__TK_FETCH ? "fetch" : op);
  char hex[ND_HASH128_HEX_LEN + 1];
  nd_hash128_hex(n->key, hex);
  const char *state = e->outcome < sizeof outcome_names / sizeof *outcome_names
                          ? outcome_names[e->outcome]
                          : "?";
  fprintf(f,
          ",\"ph\":\"X\",\"ts\":%s,\"dur\":%s,\"pid\":%d,\"tid\":%u,"
          "\"args\":{\"key\":\"%s\",\"state\":\"%s\"}}",
          ts.s, dur.s, ND__TRACE_PID, tid, hex, state);
}

static void write_thread_name(FILE *f, unsigned tid, const char *name) {
  fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%u,\"args\":{\"name\":",
          ND__TRACE_PID, tid);
  json_str(f, name);
  fputs("}}", f);
}

static void write_json(FILE *f, const nd__trace *t, const tracks *ts, unsigned nw,
                       const nd_graph *g) {
  fprintf(f, "{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,"
             "\"args\":{\"name\":\"nidag\"}}",
          ND__TRACE_PID);
  char name[32];
  for (unsigned w = 0; w < nw; w++) {
    snprintf(name, sizeof name, "worker %u", w);
    write_thread_name(f, w, name);
  }
  write_thread_name(f, nw, "caller");
  size_t kept = 0, dropped = t->caller.dropped + atomic_load(&t->lost);
  uint64_t last = t->t0;
  for (unsigned w = 0; ts && w < ts->n; w++) {
    const track *tr = &ts->t[w];
    for (size_t i = 0; i < tr->n; i++) {
      write_event(f, t, g, w, &tr->ev[i]);
      if (tr->ev[i].end > last) last = tr->ev[i].end;
    }
    kept += tr->n;
    dropped += tr->dropped;
  }
  for (size_t i = 0; i < t->caller.n; i++) {
    write_event(f, t, g, nw, &t->caller.ev[i]);
    if (t->caller.ev[i].end > last) last = t->caller.ev[i].end;
  }
  kept += t->caller.n;
  usbuf at;
  if (dropped)
    fprintf(f,
            ",\n{\"name\":\"trace truncated: %zu events dropped after the first %zu\","
            "\"ph\":\"i\",\"s\":\"g\",\"ts\":%s,\"pid\":%d,\"tid\":%u}",
            dropped, kept, us_str(ns_since(t->t0, last), &at), ND__TRACE_PID, nw);
  fprintf(f, "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"events\":\"%zu\","
             "\"dropped\":\"%zu\"}}\n",
          kept, dropped);
}

static void track_free(track *tr) { nd_free(tr->ev); }

void nd__trace_close(nd__trace *t, const nd_graph *g, unsigned threads) {
  if (!t) return;
  tracks *ts = atomic_load(&t->workers);
  unsigned nw = ts ? ts->n : threads;
  int err = 0;
  FILE *f = fopen(t->path, "w");
  if (!f) {
    err = errno;
  } else {
    setvbuf(f, NULL, _IOFBF, ND__TRACE_IO_BUF);
    errno = 0;
    write_json(f, t, ts, nw, g);
    if (ferror(f)) err = errno ? errno : EIO;
    if (fclose(f) != 0 && !err) err = errno ? errno : EIO;
  }
  if (err)
    fprintf(stderr, "nidag: warning: cannot write the trace '%s': %s (the run goes on)\n",
            t->path, strerror(err));
  for (unsigned w = 0; ts && w < ts->n; w++) track_free(&ts->t[w]);
  nd__aligned_free(ts);
  track_free(&t->caller);
  nd_free(t->path);
  nd__aligned_free(t);
}

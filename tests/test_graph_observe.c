/* graph suite, watching a run: progress calls (counts, monotone done, the
 * single final call, never two calls at once), cancellation (from inside an
 * op, before the run; what was computed stays stored, a rerun computes only
 * the rest, the report names canceled nodes) and Chrome traces (valid JSON
 * with escaped labels, one event per computed node, tids in range, fetch
 * events, $NIDAG_TRACE, an unwritable path, the event limit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "graph/graph_int.h" /* nd__trace_* for the event-limit test */
#include "tests/test_graph_util.h"
#include "tests/testutil.h"

#define THREADS 2
#define FAN 40       /* middle nodes of the fan graph */
#define CANCEL_AT 10 /* the cancel op sets the flag on its CANCEL_AT-th call */

static tg_counter c_load, c_mid, c_sum, c_bits;
static const nd_op op_load = {"obs.load", 1, tg_load_fn, &c_load, 0, 0, 0, NULL};
static const nd_op op_mid = {"obs.mid", 1, tg_add_fn, &c_mid, 0, 0, 0, NULL};
static const nd_op op_sum = {"obs.sum", 1, tg_add_fn, &c_sum, 0, 0, 0, NULL};
static const nd_op op_bits = {"obs.bits", 1, tg_bits_fn, &c_bits, 0, 0, 0, NULL};

/* A middle op that cancels the run on its CANCEL_AT-th call (and still
 * finishes that call, like the one running on the other worker). */
static atomic_int cancel_flag, cancel_calls;
static int cancel_fn(nd_op_ctx *c) {
  if (atomic_fetch_add(&cancel_calls, 1) + 1 == CANCEL_AT) atomic_store(&cancel_flag, 1);
  return tg_add_fn(c);
}
static const nd_op op_cancel = {"obs.mid", 1, cancel_fn, &c_mid, 0, 0, 0, NULL};

static nd_pool *pool2;

typedef struct fixture {
  char dir[TG_PATH_MAX];
  char src[TG_PATH_MAX];
  char cdir[TG_PATH_MAX];
  nd_cache *cache;
} fixture;

static void reset_counters(void) {
  tg_counter_reset(&c_load);
  tg_counter_reset(&c_mid);
  tg_counter_reset(&c_sum);
  tg_counter_reset(&c_bits);
  atomic_store(&cancel_flag, 0);
  atomic_store(&cancel_calls, 0);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!tg_mkdtemp(f->dir)) return -1;
  snprintf(f->src, sizeof f->src, "%s/src.txt", f->dir);
  snprintf(f->cdir, sizeof f->cdir, "%s/cache", f->dir);
  if (tg_write_str(f->src, "observed source")) return -1;
  nd_cache_opts o = {0};
  o.dir = f->cdir;
  o.no_sync = true;
  if (nd_cache_open(&f->cache, &o)) return -1;
  reset_counters();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  nd_cache_close(f->cache);
  tg_rm_rf(f->dir);
  free(f);
  return 0;
}

/* src -> load -> FAN middle nodes (k = i + k0) -> one sum. Returns the sum;
 * mids gets the middle ids. labels (may be NULL) names the middles. */
static int64_t build_fan(nd_graph *g, const fixture *f, const nd_op *mid, int64_t k0,
                         int64_t *mids, const char *const *labels) {
  int64_t file, load;
  assert_int_equal(nd_graph_file(g, f->src, NULL, &file), 0);
  load = tg_add(g, &op_load, 0, &file, 1, "load");
  assert_true(load >= 0);
  for (int i = 0; i < FAN; i++) {
    char label[64];
    snprintf(label, sizeof label, "mid %d", i);
    mids[i] = tg_add(g, mid, k0 + i, &load, 1, labels && labels[i] ? labels[i] : label);
    assert_true(mids[i] >= 0);
  }
  int64_t sum = tg_add(g, &op_sum, 0, mids, FAN, "sum");
  assert_true(sum >= 0);
  return sum;
}

static nd_graph_run_opts opts_for(nd_cache *c) {
  nd_graph_run_opts o = {0};
  o.cache = c;
  o.pool = pool2;
  return o;
}

/* ------------------------------------------------------------ progress */

#define MAX_CALLS 4096

typedef struct prog_log {
  atomic_int inside;  /* calls running now */
  atomic_int overlaps;
  int calls, finals, from_workers;
  nd_graph_progress seen[MAX_CALLS];
  int spin_us;
} prog_log;

static void on_progress(const nd_graph_progress *p, void *ud) {
  prog_log *l = ud;
  if (atomic_fetch_add(&l->inside, 1) != 0) atomic_fetch_add(&l->overlaps, 1);
  /* Plain fields: calls are serialised, so this is race-free (TSan checks). */
  if (l->calls < MAX_CALLS) l->seen[l->calls] = *p;
  l->calls++;
  l->finals += p->final;
  l->from_workers += nd_worker_index() >= 0;
  if (l->spin_us) {
    double end = tg_now() + l->spin_us * 1e-6;
    while (tg_now() < end) {
    }
  }
  atomic_fetch_sub(&l->inside, 1);
}

static void check_log(const prog_log *l, const nd_graph_stats *st) {
  assert_int_equal(atomic_load(&l->overlaps), 0);
  assert_int_equal(l->finals, 1);
  assert_true(l->calls >= 2 && l->calls <= MAX_CALLS); /* after planning, and the final */
  const nd_graph_progress *last = &l->seen[l->calls - 1];
  assert_true(last->final); /* the final call is the last one */
  for (int i = 1; i < l->calls; i++) {
    assert_true(l->seen[i].done >= l->seen[i - 1].done);
    assert_true(l->seen[i].elapsed_s >= l->seen[i - 1].elapsed_s);
  }
  for (int i = 0; i < l->calls; i++) {
    const nd_graph_progress *p = &l->seen[i];
    size_t parts = p->hits + p->computed + p->waited + p->failed + p->skipped;
    assert_true(p->done + p->canceled <= p->total);
    if (p->round == 1) /* a later round may not take back what was counted done */
      assert_int_equal(p->done, parts);
    else
      assert_true(p->done >= parts);
    assert_true(p->round >= 1);
  }
  assert_int_equal(last->done + last->canceled, last->total);
  assert_int_equal(last->hits, st->hits);
  assert_int_equal(last->computed, st->computed);
  assert_int_equal(last->failed, st->failed);
  assert_int_equal(last->skipped, st->skipped);
  assert_int_equal(last->canceled, st->canceled);
  assert_int_equal(last->total, st->hits + st->computed + st->waited + st->failed +
                                    st->skipped + st->canceled);
  assert_true(last->eta_s == 0);
}

static void test_progress_counts(void **state) {
  fixture *f = *state;
  prog_log *l = calloc(1, sizeof *l);
  l->spin_us = 100; /* widen the window for overlapping calls */
  c_mid.spin_us = 300;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  build_fan(g, f, &op_mid, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.progress = on_progress;
  o.progress_ud = l;
  o.progress_ms = 1;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  check_log(l, &st);
  assert_int_equal(st.computed, FAN + 2);
  assert_int_equal(l->seen[l->calls - 1].done, FAN + 2);
  /* The first call comes after planning, from the calling thread: total is
   * known, nothing is done, the ETA is unknown. */
  assert_int_equal(l->seen[0].total, FAN + 2);
  assert_int_equal(l->seen[0].done, 0);
  assert_false(l->seen[0].final);
  assert_true(l->seen[0].eta_s < 0);
  printf("progress: %d calls, %d from workers\n", l->calls, l->from_workers);
  assert_true(l->from_workers > 0);
  nd_graph_free(g);

  /* Half cached: new middle nodes for odd i. Hits at planning count as done
   * at once; the total covers hits and computed. */
  memset(l, 0, sizeof *l);
  reset_counters();
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t file, load, mids2[FAN];
  assert_int_equal(nd_graph_file(g, f->src, NULL, &file), 0);
  load = tg_add(g, &op_load, 0, &file, 1, "load");
  for (int i = 0; i < FAN; i++) mids2[i] = tg_add(g, &op_mid, i % 2 ? 1000 + i : i, &load, 1, NULL);
  tg_add(g, &op_sum, 0, mids2, FAN, "sum");
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  check_log(l, &st);
  assert_int_equal(st.computed, FAN / 2 + 1); /* the new middles and the sum */
  assert_int_equal(st.hits, FAN / 2 + 1);     /* the old middles, and the load */
  assert_int_equal(l->seen[0].hits, FAN / 2 + 1);
  assert_int_equal(l->seen[0].done, FAN / 2 + 1);
  assert_int_equal(l->seen[0].total, FAN + 2);
  nd_graph_free(g);

  /* Fully cached: planning answers everything. */
  memset(l, 0, sizeof *l);
  assert_int_equal(nd_graph_new(&g), 0);
  build_fan(g, f, &op_mid, 0, mids, NULL);
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  check_log(l, &st);
  assert_int_equal(st.hits, 1);
  assert_int_equal(l->seen[0].done, l->seen[0].total);
  assert_true(l->seen[0].eta_s == 0);
  assert_int_equal(atomic_load(&c_mid.calls), FAN / 2); /* none in this run */
  nd_graph_free(g);
  free(l);
}

/* Many tiny nodes, a 1 ms period, a slow callback: calls never overlap,
 * and most would-be calls from workers are skipped, not queued. */
static void test_progress_never_concurrent(void **state) {
  fixture *f = *state;
  prog_log *l = calloc(1, sizeof *l);
  l->spin_us = 500;
  c_mid.spin_us = 20;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t file, load;
  assert_int_equal(nd_graph_file(g, f->src, NULL, &file), 0);
  load = tg_add(g, &op_load, 0, &file, 1, "load");
  enum { N = 2000 };
  for (int i = 0; i < N; i++) assert_true(tg_add(g, &op_mid, i, &load, 1, NULL) >= 0);
  nd_graph_run_opts o = opts_for(NULL); /* no cache: nothing stored */
  o.progress = on_progress;
  o.progress_ud = l;
  o.progress_ms = 1;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  check_log(l, &st);
  assert_int_equal(st.computed, N + 1);
  printf("progress: %d calls for %d nodes\n", l->calls, N + 1);
  nd_graph_free(g);
  free(l);
}

/* Failures and skips are settled too; a bad target makes no call at all. */
static void test_progress_failures(void **state) {
  fixture *f = *state;
  prog_log *l = calloc(1, sizeof *l);
  atomic_store(&c_load.fail, 1);
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  build_fan(g, f, &op_mid, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.progress = on_progress;
  o.progress_ud = l;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), ND_ETASK);
  check_log(l, &st);
  assert_int_equal(st.failed, 1);
  assert_int_equal(st.skipped, FAN + 1);

  memset(l, 0, sizeof *l);
  int64_t bad = 12345;
  o.targets = &bad;
  o.ntargets = 1;
  assert_int_equal(nd_graph_run(g, &o, &st), ND_EINVAL);
  assert_int_equal(l->calls, 0);
  nd_graph_free(g);
  free(l);
}

/* The first file found under dir (two levels: blobs/<xx>/<key>.blob). */
static int find_file(const char *dir, char out[TG_PATH_MAX], int depth) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *e;
  int rc = -1;
  while (rc && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char sub[TG_PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(sub, &st) != 0) continue;
    if (S_ISDIR(st.st_mode) && depth > 0) {
      rc = find_file(sub, out, depth - 1);
    } else if (S_ISREG(st.st_mode)) {
      snprintf(out, TG_PATH_MAX, "%s", sub);
      rc = 0;
    }
  }
  closedir(d);
  return rc;
}

/* A corrupt entry takes a second round: calls stay monotone, the final
 * call says round 2 and the exact counts. */
static void test_progress_rounds(void **state) {
  fixture *f = *state;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t r = tg_add(g, &op_bits, 50000, NULL, 0, "big random"); /* a blob file */
  int64_t t = tg_add(g, &op_mid, 7, &r, 1, "consumer");
  nd_graph_run_opts o = opts_for(f->cache);
  o.targets = (int64_t[]){r, t};
  o.ntargets = 2;
  assert_int_equal(nd_graph_run(g, &o, NULL), 0);
  char blobs[TG_PATH_MAX], path[TG_PATH_MAX];
  snprintf(blobs, sizeof blobs, "%s/blobs", f->cdir);
  assert_int_equal(find_file(blobs, path, 1), 0);
  FILE *bf = fopen(path, "r+b");
  assert_non_null(bf);
  fseek(bf, 0, SEEK_END);
  long size = ftell(bf);
  fseek(bf, size / 2, SEEK_SET);
  int ch = fgetc(bf);
  fseek(bf, size / 2, SEEK_SET);
  fputc(ch ^ 0xff, bf);
  fclose(bf);

  prog_log *l = calloc(1, sizeof *l);
  o.progress = on_progress;
  o.progress_ud = l;
  o.progress_ms = 1;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  assert_int_equal(st.rounds, 2);
  assert_int_equal(st.corrupt, 1);
  check_log(l, &st);
  assert_int_equal(l->seen[l->calls - 1].round, 2);
  assert_int_equal(l->seen[l->calls - 1].computed, 1);
  assert_int_equal(l->seen[l->calls - 1].hits, 1);
  nd_graph_free(g);
  free(l);
}

/* ------------------------------------------------------------ cancel */

static bool stored(nd_graph *g, nd_cache *c, int64_t id) {
  nd_hash128 k;
  assert_int_equal(nd_graph_key(g, id, &k), 0);
  return nd_cache_has(c, k) == 1;
}

static void test_cancel_from_op(void **state) {
  fixture *f = *state;
  prog_log *l = calloc(1, sizeof *l);
  c_mid.spin_us = 2000;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  int64_t sum = build_fan(g, f, &op_cancel, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.cancel = &cancel_flag;
  o.progress = on_progress;
  o.progress_ud = l;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), ND_ECANCELED);
  assert_non_null(strstr(nd_errmsg(g), "canceled"));
  check_log(l, &st);
  int first = atomic_load(&c_mid.calls);
  /* The CANCEL_AT-th call set the flag; at most the other worker's node
   * was running then, and finished. */
  assert_true(first >= CANCEL_AT && first <= CANCEL_AT + THREADS - 1);
  assert_int_equal(st.computed, (size_t)first + 1); /* and the load */
  assert_int_equal(st.canceled, FAN - (size_t)first + 1); /* and the sum */
  assert_int_equal(nd_graph_state(g, sum), ND_GNODE_CANCELED);
  assert_int_equal(nd_graph_error(g, sum, NULL), ND_ECANCELED);
  nd_array *v = NULL;
  assert_int_equal(nd_graph_get(g, sum, &v), ND_ENOTFOUND);
  size_t computed = 0, canceled = 0;
  for (int i = 0; i < FAN; i++) {
    nd_graph_node_state s = nd_graph_state(g, mids[i]);
    assert_true(s == ND_GNODE_COMPUTED || s == ND_GNODE_CANCELED);
    if (s == ND_GNODE_COMPUTED) {
      computed++;
      assert_true(stored(g, f->cache, mids[i])); /* nothing computed is lost */
    } else {
      canceled++;
      assert_false(stored(g, f->cache, mids[i]));
    }
  }
  assert_int_equal(computed, (size_t)first);
  size_t lines;
  char *rep = tg_report(g, &lines);
  assert_int_equal(lines, canceled + 1);
  assert_non_null(strstr(rep, "canceled sum: not started, the run was canceled"));
  free(rep);
  assert_int_equal(l->seen[l->calls - 1].canceled, canceled + 1);
  nd_graph_free(g);

  /* The rerun computes exactly what was not stored. */
  reset_counters();
  assert_int_equal(nd_graph_new(&g), 0);
  sum = build_fan(g, f, &op_mid, 0, mids, NULL);
  o.progress = NULL;
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  assert_int_equal(atomic_load(&c_mid.calls), FAN - first);
  assert_int_equal(atomic_load(&c_load.calls), 0); /* stored before the cancel */
  assert_int_equal(atomic_load(&c_sum.calls), 1);
  assert_int_equal(st.computed, (size_t)(FAN - first) + 1);
  assert_int_equal(st.hits, (size_t)first + 1);
  assert_int_equal(st.canceled, 0);
  assert_int_equal(nd_graph_state(g, sum), ND_GNODE_COMPUTED);
  nd_graph_free(g);
  free(l);
}

/* A flag set before the run: nothing starts, the targets are CANCELED; a
 * flag set by nobody changes nothing. */
static void test_cancel_before_run(void **state) {
  fixture *f = *state;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  int64_t sum = build_fan(g, f, &op_mid, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.cancel = &cancel_flag;
  atomic_store(&cancel_flag, 1);
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), ND_ECANCELED);
  assert_int_equal(atomic_load(&c_mid.calls) + atomic_load(&c_load.calls), 0);
  assert_int_equal(st.computed, 0);
  assert_int_equal(nd_graph_state(g, sum), ND_GNODE_CANCELED);
  size_t lines;
  free(tg_report(g, &lines));
  assert_int_equal(lines, st.canceled);
  assert_true(lines >= 1);

  atomic_store(&cancel_flag, 0);
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  assert_int_equal(st.computed, FAN + 2);
  assert_int_equal(st.canceled, 0);

  /* Fully cached, canceled before the run: the flag is seen before any
   * planning, so even a cached target is CANCELED; the next run reads it. */
  atomic_store(&cancel_flag, 1);
  assert_int_equal(nd_graph_run(g, &o, &st), ND_ECANCELED);
  assert_int_equal(nd_graph_state(g, sum), ND_GNODE_CANCELED);
  assert_int_equal(st.canceled, 1);
  atomic_store(&cancel_flag, 0);
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  assert_int_equal(st.hits, 1);
  assert_int_equal(st.computed, 0);
  assert_int_equal(nd_graph_state(g, sum), ND_GNODE_HIT);
  nd_graph_free(g);
}

/* ------------------------------------------------------------ traces */

/* A strict JSON parser (RFC 8259) that only says whether text is valid. */
typedef struct jp {
  const char *s;
  size_t i, n;
} jp;

static void j_ws(jp *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                         p->s[p->i] == '\r'))
    p->i++;
}

static bool j_value(jp *p, int depth);

static bool j_string(jp *p) {
  if (p->i >= p->n || p->s[p->i] != '"') return false;
  p->i++;
  while (p->i < p->n) {
    unsigned char c = (unsigned char)p->s[p->i++];
    if (c == '"') return true;
    if (c < 0x20) return false;
    if (c != '\\') continue;
    if (p->i >= p->n) return false;
    c = (unsigned char)p->s[p->i++];
    if (c == 'u') {
      for (int k = 0; k < 4; k++, p->i++)
        if (p->i >= p->n || !strchr("0123456789abcdefABCDEF", p->s[p->i]) || !p->s[p->i])
          return false;
    } else if (!c || !strchr("\"\\/bfnrt", c)) {
      return false;
    }
  }
  return false;
}

static bool j_digits(jp *p) {
  size_t start = p->i;
  while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  return p->i > start;
}

static bool j_number(jp *p) {
  if (p->s[p->i] == '-') p->i++;
  if (!j_digits(p)) return false;
  if (p->i < p->n && p->s[p->i] == '.') {
    p->i++;
    if (!j_digits(p)) return false;
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (!j_digits(p)) return false;
  }
  return true;
}

static bool j_seq(jp *p, int depth, char close, bool object) {
  p->i++;
  j_ws(p);
  if (p->i < p->n && p->s[p->i] == close) {
    p->i++;
    return true;
  }
  for (;;) {
    j_ws(p);
    if (object) {
      if (!j_string(p)) return false;
      j_ws(p);
      if (p->i >= p->n || p->s[p->i++] != ':') return false;
    }
    if (!j_value(p, depth + 1)) return false;
    j_ws(p);
    if (p->i >= p->n) return false;
    char c = p->s[p->i++];
    if (c == close) return true;
    if (c != ',') return false;
  }
}

static bool j_value(jp *p, int depth) {
  if (depth > 64) return false;
  j_ws(p);
  if (p->i >= p->n) return false;
  switch (p->s[p->i]) {
  case '{': return j_seq(p, depth, '}', true);
  case '[': return j_seq(p, depth, ']', false);
  case '"': return j_string(p);
  case 't': p->i += 4; return p->i <= p->n && !strncmp(p->s + p->i - 4, "true", 4);
  case 'f': p->i += 5; return p->i <= p->n && !strncmp(p->s + p->i - 5, "false", 5);
  case 'n': p->i += 4; return p->i <= p->n && !strncmp(p->s + p->i - 4, "null", 4);
  default: return j_number(p);
  }
}

static bool json_valid(const char *s, size_t n) {
  jp p = {s, 0, n};
  if (!j_value(&p, 0)) return false;
  j_ws(&p);
  return p.i == n;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || i + len > n) return false;
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (len > 1 && (s[i + 1] < lo || s[i + 1] > hi)) return false;
    for (size_t k = 2; k < len; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

static char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, fp);
  fclose(fp);
  buf[got] = '\0';
  *len = got;
  return buf;
}

static size_t count_str(const char *hay, const char *needle) {
  size_t c = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) c++;
  return c;
}

typedef struct trace_summary {
  size_t x_events, meta, per_cat_mid, per_cat_fetch, nidag_spans;
  size_t computed_states, fetched_states;
  int max_tid;
} trace_summary;

/* Check a trace file and count its events (one event per line, as written). */
static char *check_trace(const char *path, trace_summary *ts) {
  size_t len = 0;
  char *text = slurp(path, &len);
  assert_non_null(text);
  assert_true(json_valid(text, len));
  assert_true(utf8_valid((const unsigned char *)text, len));
  assert_true(strncmp(text, "{\"traceEvents\":[", 16) == 0);
  memset(ts, 0, sizeof *ts);
  ts->max_tid = -1;
  char *save = NULL, *copy = strdup(text);
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    const char *tid = strstr(line, "\"tid\":");
    if (tid) {
      int t = atoi(tid + 6);
      assert_true(t >= 0 && t <= THREADS);
      if (t > ts->max_tid) ts->max_tid = t;
    }
    if (strstr(line, "\"ph\":\"M\"")) ts->meta++;
    if (!strstr(line, "\"ph\":\"X\"")) continue;
    ts->x_events++;
    assert_non_null(strstr(line, "\"pid\":1"));
    assert_non_null(strstr(line, "\"ts\":"));
    assert_non_null(strstr(line, "\"dur\":"));
    ts->per_cat_mid += strstr(line, "\"cat\":\"obs.mid\"") != NULL;
    ts->per_cat_fetch += strstr(line, "\"cat\":\"fetch\"") != NULL;
    ts->nidag_spans += strstr(line, "\"cat\":\"nidag\"") != NULL;
    ts->computed_states += strstr(line, "\"state\":\"computed\"") != NULL;
    ts->fetched_states += strstr(line, "\"state\":\"fetched\"") != NULL;
    if (!strstr(line, "\"cat\":\"nidag\"")) {
      const char *key = strstr(line, "\"key\":\"");
      assert_non_null(key);
      assert_int_equal(strspn(key + 7, "0123456789abcdef"), ND_HASH128_HEX_LEN);
    }
  }
  free(copy);
  return text;
}

static const char *const odd_labels[FAN] = {
    "he said \"hi\"",     /* quotes */
    "back\\slash\\",      /* backslashes */
    "tab\there\nnewline", /* control characters */
    "caf\xc3\xa9 \xe2\x9c\x93",  /* UTF-8 (kept as is) */
    "bad \xff byte",      /* not UTF-8 (replaced) */
    "\x01",               /* a control character alone */
};

static void test_trace_file(void **state) {
  fixture *f = *state;
  char path[TG_PATH_MAX];
  snprintf(path, sizeof path, "%s/trace.json", f->dir);
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  int64_t sum = build_fan(g, f, &op_mid, 0, mids, odd_labels);
  nd_graph_run_opts o = opts_for(f->cache);
  o.trace_path = path;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  trace_summary ts;
  char *text = check_trace(path, &ts);
  assert_int_equal(ts.per_cat_mid, FAN); /* one event per computed middle */
  assert_int_equal(ts.computed_states, st.computed);
  assert_int_equal(ts.x_events, st.computed + ts.nidag_spans);
  assert_true(ts.nidag_spans >= 3); /* keys, plan, flush */
  assert_int_equal(ts.meta, 1 + THREADS + 1); /* process, workers, caller */
  assert_int_equal(ts.max_tid, THREADS);      /* the caller's track */
  assert_non_null(strstr(text, "\"args\":{\"name\":\"worker 0\"}"));
  assert_non_null(strstr(text, "\"args\":{\"name\":\"worker 1\"}"));
  assert_non_null(strstr(text, "\"args\":{\"name\":\"caller\"}"));
  assert_non_null(strstr(text, "\"name\":\"he said \\\"hi\\\"\""));
  assert_non_null(strstr(text, "\"name\":\"back\\\\slash\\\\\""));
  assert_non_null(strstr(text, "\"name\":\"tab\\there\\nnewline\""));
  assert_non_null(strstr(text, "\"name\":\"caf\xc3\xa9 \xe2\x9c\x93\""));
  assert_non_null(strstr(text, "\"name\":\"bad \\ufffd byte\""));
  assert_non_null(strstr(text, "\"name\":\"\\u0001\""));
  assert_non_null(strstr(text, "\"name\":\"sum\",\"cat\":\"obs.sum\""));
  char hex[ND_HASH128_HEX_LEN + 1];
  nd_hash128 k;
  assert_int_equal(nd_graph_key(g, sum, &k), 0);
  nd_hash128_hex(k, hex);
  assert_non_null(strstr(text, hex));
  free(text);

  /* Cached rerun: the target is read, one fetch event. The file is
   * overwritten, not appended to. */
  assert_int_equal(nd_graph_run(g, &o, &st), 0);
  text = check_trace(path, &ts);
  assert_int_equal(ts.per_cat_mid, 0);
  assert_int_equal(ts.per_cat_fetch, 1);
  assert_int_equal(ts.fetched_states, 1);
  assert_int_equal(count_str(text, "\"traceEvents\""), 1);
  free(text);
  nd_graph_free(g);
}

/* $NIDAG_TRACE names the file when trace_path is NULL; "" turns it off. */
static void test_trace_env(void **state) {
  fixture *f = *state;
  char path[TG_PATH_MAX], other[TG_PATH_MAX];
  snprintf(path, sizeof path, "%s/env.json", f->dir);
  snprintf(other, sizeof other, "%s/other.json", f->dir);
  setenv("NIDAG_TRACE", path, 1);
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  build_fan(g, f, &op_mid, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(NULL);
  o.trace_path = "";
  assert_int_equal(nd_graph_run(g, &o, NULL), 0);
  assert_int_equal(access(path, F_OK), -1);
  o.trace_path = other; /* wins over the environment */
  assert_int_equal(nd_graph_run(g, &o, NULL), 0);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(access(other, F_OK), 0);
  o.trace_path = NULL;
  assert_int_equal(nd_graph_run(g, &o, NULL), 0);
  unsetenv("NIDAG_TRACE");
  trace_summary ts;
  free(check_trace(path, &ts));
  assert_int_equal(ts.per_cat_mid, FAN);
  nd_graph_free(g);
}

/* An unwritable path: the run succeeds and stderr gets one warning. */
static void test_trace_unwritable(void **state) {
  fixture *f = *state;
  char errpath[TG_PATH_MAX];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", f->dir);
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  build_fan(g, f, &op_mid, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.trace_path = "/nonexistent-nidag-dir/sub/trace.json";
  fflush(stderr);
  int saved = dup(2);
  int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(saved >= 0 && fd >= 0);
  dup2(fd, 2);
  close(fd);
  nd_graph_stats st;
  int rc = nd_graph_run(g, &o, &st);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  assert_int_equal(rc, 0);
  assert_int_equal(st.computed, FAN + 2);
  size_t len;
  char *err = slurp(errpath, &len);
  assert_non_null(err);
  assert_int_equal(count_str(err, "warning"), 1);
  assert_non_null(strstr(err, "/nonexistent-nidag-dir/sub/trace.json"));
  free(err);
  nd_graph_free(g);
}

/* Canceled nodes leave no event; the computed ones do. */
static void test_trace_canceled(void **state) {
  fixture *f = *state;
  char path[TG_PATH_MAX];
  snprintf(path, sizeof path, "%s/cancel.json", f->dir);
  c_mid.spin_us = 1000;
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  int64_t mids[FAN];
  build_fan(g, f, &op_cancel, 0, mids, NULL);
  nd_graph_run_opts o = opts_for(f->cache);
  o.cancel = &cancel_flag;
  o.trace_path = path;
  nd_graph_stats st;
  assert_int_equal(nd_graph_run(g, &o, &st), ND_ECANCELED);
  trace_summary ts;
  free(check_trace(path, &ts));
  assert_int_equal(ts.per_cat_mid, (size_t)atomic_load(&c_mid.calls));
  assert_int_equal(ts.computed_states, st.computed);
  assert_true(st.canceled > 0);
  nd_graph_free(g);
}

/* The event budget: past it, events are counted and the file says so. */
static void test_trace_limit(void **state) {
  fixture *f = *state;
  char path[TG_PATH_MAX];
  snprintf(path, sizeof path, "%s/limit.json", f->dir);
  nd_graph *g;
  assert_int_equal(nd_graph_new(&g), 0);
  uint64_t t0 = nd__now_ns();
  nd__trace *t = nd__trace_open(path, t0, 3);
  assert_non_null(t);
  for (unsigned i = 0; i < 10; i++)
    nd__trace_span(t, ND__TS_PLAN, (int)i + 1, t0 + 1000u * i, t0 + 1000u * i + 500);
  nd__trace_close(t, g, THREADS);
  trace_summary ts;
  char *text = check_trace(path, &ts);
  assert_int_equal(ts.x_events, 3);
  assert_non_null(strstr(text, "trace truncated: 7 events dropped after the first 3"));
  assert_non_null(strstr(text, "\"dropped\":\"7\""));
  free(text);
  nd__trace_close(NULL, g, 0);
  nd_graph_free(g);
}

int main(void) {
  unsigned threads = THREADS;
  if (nd_test_open_pools(&pool2, &threads, 1) != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_progress_counts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_never_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_rounds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_from_op, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_before_run, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trace_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trace_env, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trace_unwritable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trace_canceled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trace_limit, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nd_pool_close(pool2);
  return rc;
}

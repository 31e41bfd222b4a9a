/* W0 and W2: pure-spin workloads.
 *
 *  W0  machine check: the time of one worker spinning W0_ITERS iterations
 *      against N workers each spinning W0_ITERS at once (one item per worker
 *      through nd_parallel_for, static-cyclic, chunk 1). effective cores =
 *      N * t1 / tN: N on a quiet machine with N real cores.
 *  W2  imbalanced map: 16 items, the first 4 "slow" (~200 ms of spin) and the
 *      other 12 "fast" (~2 ms), the spin rate calibrated single-threaded.
 *      T1 = the serial total (measured), ideal = T1 / threads. Each chunking
 *      runs nd_parallel_for over the 16 items with chunk 1, called from the
 *      main thread. ND_STATIC is block distribution, so one claimer gets all
 *      four slow items (~1.96x ideal on 2 workers): that is expected.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define W0_ITERS 300000000L
#define W2_ITEMS 16
#define W2_SLOW 4
#define W2_SLOW_MS 200.0
#define W2_FAST_MS 2.0
#define W2_PROBE 50000000L

static volatile double spin_sink;

/* ------------------------------------------------------------ W0 */

#define W0_MAX_ITEMS 1024 /* the most workers nidag-bench accepts */

typedef struct spin_job {
  long iters;
  double result[W0_MAX_ITEMS];
} spin_job;

static int spin_task(void *arg) {
  spin_job *j = arg;
  j->result[0] = nb_spin(j->iters);
  return 0;
}

static int spin_items(void *ctx, size_t lo, size_t hi) {
  spin_job *j = ctx;
  for (size_t i = lo; i < hi; i++) j->result[i] = nb_spin(j->iters);
  return 0;
}

int nb_w0(const nb_ctx *c) {
  double a[NB_REPS], b[NB_REPS];
  unsigned n = c->threads < W0_MAX_ITEMS ? c->threads : W0_MAX_ITEMS;
  spin_job w0_job;
  w0_job.iters = W0_ITERS;
  for (int r = 0; r < NB_REPS; r++) {
    nb_load ld;
    double own1, oth1, ownn, othn;
    nb_load_begin(&ld);
    double t0 = nb_now();
    int rc = nd_pool_run(c->pool, spin_task, &w0_job);
    a[r] = nb_now() - t0;
    nb_load_end(&ld, &own1, &oth1);
    nb_load_begin(&ld);
    t0 = nb_now();
    int rc2 = nd_parallel_for(c->pool, 0, n, ND_STATIC_CYCLIC, 1, spin_items, &w0_job);
    b[r] = nb_now() - t0;
    nb_load_end(&ld, &ownn, &othn);
    if (rc != 0 || rc2 != 0) {
      fprintf(stderr, "nidag-bench: w0: runtime error %d / %d\n", rc, rc2);
      return 1;
    }
    spin_sink = w0_job.result[0];
    printf("# w0 run %d single %.3f s all %u %.3f s; cores used by others %.2f / %.2f\n", r,
           a[r], n, b[r], oth1, othn);
  }
  double t1 = nb_median(a, NB_REPS), tn = nb_median(b, NB_REPS);
  printf("w0_nidag_single_worker_spin %.3f s\n", t1);
  printf("w0_nidag_all_workers_spin %.3f s\n", tn);
  printf("w0_nidag_effective_cores %.2f cores\n", (double)n * t1 / tn);
  return 0;
}

/* ------------------------------------------------------------ W2 */

typedef struct w2_job {
  long iters[W2_ITEMS];
  double out[W2_ITEMS];
  int worker[W2_ITEMS];
} w2_job;

static int w2_items(void *ctx, size_t lo, size_t hi) {
  w2_job *j = ctx;
  for (size_t i = lo; i < hi; i++) {
    j->worker[i] = nd_worker_index();
    j->out[i] = nb_spin(j->iters[i]);
  }
  return 0;
}

static void placement(const w2_job *j, char *buf) {
  for (int i = 0; i < W2_ITEMS; i++) {
    int w = j->worker[i];
    buf[i] = w < 0 ? 'm' : (char)(w < 10 ? '0' + w : w < 36 ? 'a' + (w - 10) : '+');
  }
  buf[W2_ITEMS] = 0;
}

int nb_w2(const nb_ctx *c) {
  double t[NB_REPS];
  w2_job w2;
  spin_sink = nb_spin(W2_PROBE / 10);
  for (int r = 0; r < NB_REPS; r++) {
    double t0 = nb_now();
    spin_sink = nb_spin(W2_PROBE);
    t[r] = nb_now() - t0;
  }
  double per_ms = (double)W2_PROBE / (1e3 * nb_median(t, NB_REPS));
  printf("# calibrated %.0f iters/ms\n", per_ms);
  for (int i = 0; i < W2_ITEMS; i++)
    w2.iters[i] = (long)((i < W2_SLOW ? W2_SLOW_MS : W2_FAST_MS) * per_ms);

  for (int r = 0; r < NB_REPS; r++) {
    double t0 = nb_now();
    for (int i = 0; i < W2_ITEMS; i++) w2.out[i] = nb_spin(w2.iters[i]);
    t[r] = nb_now() - t0;
    spin_sink = w2.out[0];
  }
  double t1 = nb_median(t, NB_REPS);
  double ideal = t1 / (double)c->threads;
  printf("w2_serial_total_work %.4f s\n", t1);
  printf("w2_ideal_makespan %.4f s\n", ideal);

  static const struct {
    const char *name;
    nd_chunking how;
  } sched[] = {{"static", ND_STATIC},
               {"cyclic", ND_STATIC_CYCLIC},
               {"dynamic", ND_DYNAMIC},
               {"guided", ND_GUIDED}};
  /* one untimed warm-up of the parallel loop */
  if (nd_parallel_for(c->pool, 0, W2_ITEMS, ND_DYNAMIC, 1, w2_items, &w2) != 0) {
    fprintf(stderr, "nidag-bench: w2: warm-up parallel_for failed\n");
    return 1;
  }
  for (size_t s = 0; s < sizeof sched / sizeof sched[0]; s++) {
    for (int r = 0; r < NB_REPS; r++) {
      memset(w2.worker, 0xff, sizeof w2.worker);
      memset(w2.out, 0, sizeof w2.out);
      nb_stats_reset(c);
      nb_load ld;
      double own, others;
      nb_load_begin(&ld);
      double t0 = nb_now();
      int rc = nd_parallel_for(c->pool, 0, W2_ITEMS, sched[s].how, 1, w2_items, &w2);
      t[r] = nb_now() - t0;
      nb_load_end(&ld, &own, &others);
      int missing = 0;
      for (int i = 0; i < W2_ITEMS; i++) missing += w2.out[i] == 0.0;
      if (rc != 0 || missing) {
        fprintf(stderr, "nidag-bench: w2 %s: rc %d, %d items not run\n", sched[s].name, rc,
                missing);
        return 1;
      }
      spin_sink = w2.out[1];
      char where[W2_ITEMS + 1], label[48];
      placement(&w2, where);
      snprintf(label, sizeof label, "w2_nidag_%s_run %d", sched[s].name, r);
      printf("# w2_nidag_%s_run %d %.4f s workers %s; cores used by nidag %.2f, by others "
             "%.2f\n",
             sched[s].name, r, t[r], where, own, others);
      nb_stats_print(c, label);
    }
    double m = nb_median(t, NB_REPS);
    printf("w2_nidag_%s_makespan %.4f s\n", sched[s].name, m);
    printf("w2_nidag_%s_ratio_to_ideal %.3f x\n", sched[s].name, m / ideal);
  }
  return 0;
}

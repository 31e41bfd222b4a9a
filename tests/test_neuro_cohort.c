/* cmocka suite: the synthetic cohort (nd_cohort_generate) and the BIDS
 * participants.tsv reader (nd_participants_read).
 *
 * The cohort tests need the MRIcron atlases (/usr/share/mricron/templates,
 * Debian's mricron-data) and are skipped without them; the reader tests run
 * anywhere. One reference cohort of NREF participants is generated once on a
 * 1-thread pool; the others are compared with it byte for byte. The signal
 * test's seed is printed and NIDAG_TEST_SEED overrides it; its thresholds
 * sit several standard errors from the expected correlations. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "nidag.h"
#include "tests/testutil.h"

#define TEMPLATES ND_COHORT_DEFAULT_TEMPLATES
#define NREF 8          /* participants of the reference cohort */
#define NSIGNAL 48      /* participants of the signal test */
#define NTEXT 3         /* dataset_description.json, participants.json, participants.tsv */
#define NX 91
#define NY 109
#define NZ 91
#define QUANT 256.0     /* map values are multiples of 1/QUANT */
#define NIFTI_FLOAT32 16
#define PATH_CAP 512

static char g_root[PATH_CAP];  /* temp directory of the suite */
static char g_ref[PATH_CAP];   /* the reference cohort */
static nd_pool *g_pools[2];    /* 1 and 2 threads */
static uint64_t g_seed;

#include "tests/neuro_templates.h"

/* ------------------------------------------------------------- helpers */

static void path_of(char *out, const char *dir, const char *rel) {
  int n = snprintf(out, PATH_CAP, "%s/%s", dir, rel);
  assert_true(n > 0 && n < PATH_CAP);
}

static void map_rel(char *out, size_t i) {
  snprintf(out, PATH_CAP, "sub-%04zu/anat/sub-%04zu_map.nii.gz", i + 1, i + 1);
}

/* The file's bytes (free), or NULL when it cannot be read. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static bool same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  bool same = x && y && na == nb && memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

/* rel under both directories is byte-identical. */
static void assert_same(const char *da, const char *db, const char *rel) {
  char a[PATH_CAP], b[PATH_CAP];
  path_of(a, da, rel);
  path_of(b, db, rel);
  if (!same_file(a, b)) {
    print_error("%s and %s differ\n", a, b);
    fail();
  }
}

static const char *const TEXTS[NTEXT] = {"dataset_description.json", "participants.json",
                                         "participants.tsv"};

/* Every file of a cohort of n (maps, texts, manifest) equals the reference's. */
static void assert_same_cohort(const char *dir, size_t n) {
  char rel[PATH_CAP];
  for (size_t i = 0; i < n; i++) {
    map_rel(rel, i);
    assert_same(g_ref, dir, rel);
  }
  for (int t = 0; t < NTEXT; t++) assert_same(g_ref, dir, TEXTS[t]);
}

static struct timespec mtime_of(const char *dir, const char *rel) {
  char p[PATH_CAP];
  struct stat st;
  path_of(p, dir, rel);
  assert_int_equal(stat(p, &st), 0);
  return st.st_mtim;
}

static bool same_time(struct timespec a, struct timespec b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

static void generate(const char *dir, size_t n, uint64_t seed, nd_pool *pool,
                     nd_cohort_report *rep) {
  nd_cohort_opts o = {.participants = n, .seed = seed, .pool = pool};
  CHECK_OK(nd_cohort_generate(dir, &o, rep));
}

static void subdir(char *out, const char *name) { path_of(out, g_root, name); }

/* ---------------------------------------------------------------- setup */

static int setup(void **state) {
  (void)state;
  snprintf(g_root, sizeof g_root, "/tmp/nd-test-cohort.XXXXXX");
  if (!mkdtemp(g_root)) return -1;
  const unsigned threads[2] = {1, 2};
  if (nd_test_open_pools(g_pools, threads, 2) != 0) return -1;
  if (!g_have_templates) return 0;
  subdir(g_ref, "ref");
  nd_cohort_opts o = {.participants = NREF, .pool = g_pools[0]};
  nd_cohort_report rep;
  int rc = nd_cohort_generate(g_ref, &o, &rep);
  if (rc) {
    fprintf(stderr, "reference cohort: %s: %s\n", nd_errname(rc), nd_neuro_errmsg());
    return -1;
  }
  printf("neuro_cohort: reference cohort of %d in %.2f s\n", NREF, rep.seconds);
  return rep.written == NREF + NTEXT ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  nd_test_close_pools(g_pools, 2);
  char cmd[PATH_CAP + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
  return system(cmd) == 0 ? 0 : -1;
}

/* --------------------------------------------------------------- layout */

static void test_layout(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  nd_nifti_info grid, info;
  CHECK_OK(nd_nifti_header(TEMPLATES "/AICHAmc.nii.gz", &grid));
  char rel[PATH_CAP], p[PATH_CAP];
  for (int t = 0; t < NTEXT; t++) {
    path_of(p, g_ref, TEXTS[t]);
    assert_int_equal(access(p, R_OK), 0);
  }
  path_of(p, g_ref, ".nidag-cohort.tsv");
  assert_int_equal(access(p, R_OK), 0);
  for (size_t i = 0; i < NREF; i++) {
    map_rel(rel, i);
    path_of(p, g_ref, rel);
    CHECK_OK(nd_nifti_header(p, &info));
    assert_int_equal(info.ndim, 3);
    assert_int_equal(info.dim[0], NX);
    assert_int_equal(info.dim[1], NY);
    assert_int_equal(info.dim[2], NZ);
    assert_int_equal(info.datatype, NIFTI_FLOAT32);
    for (int k = 0; k < 16; k++) assert_true(fabs(info.affine[k] - grid.affine[k]) < 1e-6);
  }
  /* One map's values: zero at the corner (outside the brain), multiples of
   * 1/QUANT, and a brain's worth of non-zero voxels. */
  map_rel(rel, 0);
  path_of(p, g_ref, rel);
  nd_array *m;
  CHECK_OK(nd_nifti_load(p, ND_F32, &m));
  assert_int_equal(nd_array_dtype(m), ND_F32);
  const float *v = nd_array_data(m);
  size_t n = nd_array_count(m), nonzero = 0;
  assert_true(v[0] == 0.0f && v[n - 1] == 0.0f);
  for (size_t i = 0; i < n; i++) {
    nonzero += v[i] != 0.0f;
    double q = (double)v[i] * QUANT;
    if (q != floor(q)) {
      print_error("voxel %zu = %.9g is not a multiple of 1/%g\n", i, (double)v[i], QUANT);
      fail();
    }
  }
  assert_true(nonzero > n / 5 && nonzero < n / 2);
  nd_array_release(m);
}

/* ------------------------------------------------------ reproducibility */

static void test_same_on_two_threads(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char dir[PATH_CAP];
  subdir(dir, "two-threads");
  nd_cohort_report rep;
  generate(dir, NREF, 0, g_pools[1], &rep);
  assert_int_equal(rep.written, NREF + NTEXT);
  assert_int_equal(rep.skipped, 0);
  assert_same_cohort(dir, NREF);
  assert_same(g_ref, dir, ".nidag-cohort.tsv");
}

/* A cohort of 3 is the first 3 of the cohort of NREF; another seed differs. */
static void test_prefix_and_seed(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char same[PATH_CAP], other[PATH_CAP], rel[PATH_CAP], a[PATH_CAP], b[PATH_CAP];
  subdir(same, "prefix");
  subdir(other, "seed2");
  nd_cohort_report rep;
  generate(same, 3, 1, g_pools[1], &rep);
  generate(other, 3, 2, g_pools[1], &rep);
  for (size_t i = 0; i < 3; i++) {
    map_rel(rel, i);
    assert_same(g_ref, same, rel);
    path_of(a, g_ref, rel);
    path_of(b, other, rel);
    assert_false(same_file(a, b));
  }
  path_of(a, same, "participants.tsv");
  path_of(b, other, "participants.tsv");
  assert_false(same_file(a, b));
  assert_same(same, other, "participants.json");
}

/* ------------------------------------------------------------- once only */

static void test_second_call_skips(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char rel[PATH_CAP];
  struct timespec before[NREF + NTEXT + 1];
  for (size_t i = 0; i < NREF; i++) {
    map_rel(rel, i);
    before[i] = mtime_of(g_ref, rel);
  }
  for (int t = 0; t < NTEXT; t++) before[NREF + t] = mtime_of(g_ref, TEXTS[t]);
  before[NREF + NTEXT] = mtime_of(g_ref, ".nidag-cohort.tsv");
  usleep(20000); /* a rewrite would show in the mtime */
  nd_cohort_report rep;
  generate(g_ref, NREF, 1, g_pools[1], &rep);
  assert_int_equal(rep.written, 0);
  assert_int_equal(rep.skipped, NREF + NTEXT);
  for (size_t i = 0; i < NREF; i++) {
    map_rel(rel, i);
    assert_true(same_time(before[i], mtime_of(g_ref, rel)));
  }
  for (int t = 0; t < NTEXT; t++)
    assert_true(same_time(before[NREF + t], mtime_of(g_ref, TEXTS[t])));
  assert_true(same_time(before[NREF + NTEXT], mtime_of(g_ref, ".nidag-cohort.tsv")));
}

static void test_repairs_one_participant(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char dir[PATH_CAP], rel[PATH_CAP], p[PATH_CAP];
  subdir(dir, "repair");
  nd_cohort_report rep;
  generate(dir, NREF, 1, g_pools[0], &rep);
  /* Corrupt participant 3 (same size, one byte), delete participant 5. */
  map_rel(rel, 2);
  path_of(p, dir, rel);
  FILE *f = fopen(p, "r+b");
  assert_non_null(f);
  fseek(f, 1000, SEEK_SET);
  int c = fgetc(f);
  fseek(f, 1000, SEEK_SET);
  fputc(c ^ 0xFF, f);
  fclose(f);
  map_rel(rel, 4);
  path_of(p, dir, rel);
  assert_int_equal(unlink(p), 0);
  map_rel(rel, 3);
  struct timespec untouched = mtime_of(dir, rel);
  usleep(20000);
  generate(dir, NREF, 1, g_pools[1], &rep);
  assert_int_equal(rep.written, 2);
  assert_int_equal(rep.skipped, NREF - 2 + NTEXT);
  assert_true(same_time(untouched, mtime_of(dir, rel)));
  assert_same_cohort(dir, NREF);
}

/* Fewer participants: the maps stay, participants.tsv shrinks; back to the
 * first count: nothing is regenerated but the texts. */
static void test_count_change(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char dir[PATH_CAP], p[PATH_CAP], rel[PATH_CAP];
  subdir(dir, "count");
  nd_cohort_report rep;
  generate(dir, 4, 1, g_pools[1], &rep);
  assert_int_equal(rep.written, 4 + NTEXT);
  generate(dir, 2, 1, g_pools[1], &rep);
  assert_int_equal(rep.written, 2); /* participants.tsv, dataset_description.json */
  assert_int_equal(rep.skipped, 2 + 1);
  map_rel(rel, 3);
  path_of(p, dir, rel);
  assert_int_equal(access(p, R_OK), 0);
  nd_participants *pt;
  path_of(p, dir, "participants.tsv");
  CHECK_OK(nd_participants_read(p, &pt));
  assert_int_equal(pt->n, 2);
  nd_participants_free(pt);
  generate(dir, 4, 1, g_pools[0], &rep);
  assert_int_equal(rep.written, 2);
  assert_int_equal(rep.skipped, 4 + 1);
  for (size_t i = 0; i < 4; i++) {
    map_rel(rel, i);
    assert_same(g_ref, dir, rel);
  }
}

/* A participant that cannot be written fails the call, naming its path;
 * the others are kept, and the next call makes only the missing one. */
static void test_failure_keeps_the_rest(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char dir[PATH_CAP], p[PATH_CAP], rel[PATH_CAP];
  subdir(dir, "fail");
  assert_int_equal(mkdir(dir, 0777), 0);
  path_of(p, dir, "sub-0002"); /* a file where its directory should be */
  write_text(p, "in the way\n");
  nd_cohort_opts o = {.participants = 3, .pool = g_pools[1]};
  nd_cohort_report rep;
  assert_int_equal(nd_cohort_generate(dir, &o, &rep), ND_EIO);
  assert_non_null(strstr(nd_neuro_errmsg(), "/sub-0002"));
  assert_int_equal(rep.written, 2);
  assert_int_equal(unlink(p), 0);
  generate(dir, 3, 1, g_pools[0], &rep);
  assert_int_equal(rep.written, 1 + NTEXT);
  assert_int_equal(rep.skipped, 2);
  for (size_t i = 0; i < 3; i++) {
    map_rel(rel, i);
    assert_same(g_ref, dir, rel);
  }
}

static void test_bad_options(void **state) {
  (void)state;
  char dir[PATH_CAP];
  subdir(dir, "bad");
  nd_cohort_opts o = {.gz_level = 10};
  assert_int_equal(nd_cohort_generate(NULL, NULL, NULL), ND_EINVAL);
  assert_int_equal(nd_cohort_generate(dir, &o, NULL), ND_EINVAL);
  assert_non_null(strstr(nd_neuro_errmsg(), "gzip level 10"));
  o = (nd_cohort_opts){.participants = ND_COHORT_MAX_PARTICIPANTS + 1};
  assert_int_equal(nd_cohort_generate(dir, &o, NULL), ND_EINVAL);
  o = (nd_cohort_opts){.participants = 2, .templates = "/nonexistent/templates"};
  nd_cohort_report rep = {.written = 99};
  assert_int_equal(nd_cohort_generate(dir, &o, &rep), ND_ENOTFOUND);
  assert_non_null(strstr(nd_neuro_errmsg(), "/nonexistent/templates/AICHAmc.nii.gz"));
  assert_int_equal(rep.written, 0);
}

/* ---------------------------------------------------------------- signal */

/* Mean of the map over the voxels whose resampled label is in labels. */
static double region_mean(const nd_array *map, const nd_array *atlas, const int *labels,
                          size_t nl) {
  const float *v = nd_array_data(map), *l = nd_array_data(atlas);
  double sum = 0;
  size_t n = 0;
  for (size_t i = 0; i < nd_array_count(map); i++)
    for (size_t k = 0; k < nl; k++)
      if (l[i] == (float)labels[k]) {
        sum += v[i];
        n++;
      }
  assert_true(n > 100);
  return sum / (double)n;
}

static double pearson(const double *x, const double *y, size_t n) {
  double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
  for (size_t i = 0; i < n; i++) mx += x[i], my += y[i];
  mx /= (double)n;
  my /= (double)n;
  for (size_t i = 0; i < n; i++) {
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  return sxy / sqrt(sxx * syy);
}

static size_t target_col(const nd_participants *p, const char *name) {
  for (size_t t = 0; t < p->ntargets; t++)
    if (!strcmp(p->target_name[t], name)) return t;
  fail_msg("no target %s", name);
  return 0;
}

/* score_a follows the AAL frontal regions where L1 is planted, score_b the
 * Harvard-Oxford parietal ones (L2); the noise target follows neither.
 * Expected r: about 0.7 and 0.55 (sd 0.1 at n = 48), 0 (sd 0.18 with the
 * families). */
static void test_signal(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  static const int L1[] = {3, 4, 7, 8, 23, 24}, L2[] = {18, 21, 22, 31};
  char dir[PATH_CAP], p[PATH_CAP], rel[PATH_CAP];
  subdir(dir, "signal");
  generate(dir, NSIGNAL, g_seed, g_pools[1], NULL);
  nd_participants *pt;
  path_of(p, dir, "participants.tsv");
  CHECK_OK(nd_participants_read(p, &pt));
  assert_int_equal(pt->n, NSIGNAL);
  nd_array *aal, *ho, *aal_r = NULL, *ho_r = NULL;
  CHECK_OK(nd_nifti_load(TEMPLATES "/aal.nii.gz", ND_F32, &aal));
  CHECK_OK(nd_nifti_load(TEMPLATES "/HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", ND_F32, &ho));
  double r1[NSIGNAL], r2[NSIGNAL], a[NSIGNAL], b[NSIGNAL], noise[NSIGNAL];
  size_t ca = target_col(pt, "score_a"), cb = target_col(pt, "score_b"),
         cn = target_col(pt, "noise");
  for (size_t i = 0; i < NSIGNAL; i++) {
    nd_array *m;
    map_rel(rel, i);
    path_of(p, dir, rel);
    CHECK_OK(nd_nifti_load(p, ND_F32, &m));
    if (!aal_r) {
      CHECK_OK(nd_resample_nearest(aal, m, &aal_r));
      CHECK_OK(nd_resample_nearest(ho, m, &ho_r));
    }
    r1[i] = region_mean(m, aal_r, L1, sizeof L1 / sizeof L1[0]);
    r2[i] = region_mean(m, ho_r, L2, sizeof L2 / sizeof L2[0]);
    a[i] = pt->targets[i * pt->ntargets + ca];
    b[i] = pt->targets[i * pt->ntargets + cb];
    noise[i] = pt->targets[i * pt->ntargets + cn];
    nd_array_release(m);
  }
  double ra = pearson(r1, a, NSIGNAL), rb = pearson(r2, b, NSIGNAL),
         rn1 = pearson(r1, noise, NSIGNAL), rn2 = pearson(r2, noise, NSIGNAL);
  print_message("seed %llu: r(L1 region, score_a) %.3f, r(L2 region, score_b) %.3f, "
                "r(regions, noise) %.3f %.3f\n",
                (unsigned long long)g_seed, ra, rb, rn1, rn2);
  assert_true(ra > 0.35);
  assert_true(rb > 0.25);
  assert_true(fabs(rn1) < 0.6 && fabs(rn2) < 0.6);
  nd_array_release(aal);
  nd_array_release(ho);
  nd_array_release(aal_r);
  nd_array_release(ho_r);
  nd_participants_free(pt);
}

/* ------------------------------------------------------------ the reader */

/* The cohort's participants.tsv reads back to the same ids, families and
 * numbers (%.17g round-trips). */
static void test_tsv_round_trip(void **state) {
  (void)state;
  REQUIRE_TEMPLATES();
  char p[PATH_CAP];
  path_of(p, g_ref, "participants.tsv");
  nd_participants *pt;
  CHECK_OK(nd_participants_read(p, &pt));
  assert_int_equal(pt->n, NREF);
  assert_int_equal(pt->ntargets, 5);
  static const char *const names[] = {"score_a", "score_b", "noise", "group", "noise_bin"};
  for (size_t t = 0; t < 5; t++) assert_string_equal(pt->target_name[t], names[t]);
  size_t len;
  char *text = slurp(p, &len);
  assert_non_null(text);
  char *line = strchr(text, '\n') + 1;
  size_t family_size = 0;
  for (size_t i = 0; i < NREF; i++) {
    char want[64];
    snprintf(want, sizeof want, "sub-%04zu", i + 1);
    assert_string_equal(pt->id[i], want);
    assert_non_null(pt->family[i]);
    assert_int_equal(strncmp(pt->family[i], "fam-", 4), 0);
    /* Families are numbered in order, 1-3 siblings each. */
    if (i > 0 && strcmp(pt->family[i], pt->family[i - 1]) == 0) family_size++;
    else family_size = 1;
    assert_true(family_size <= 3);
    /* Print each number back: the file's own text. */
    char row[1024];
    int n = snprintf(row, sizeof row, "%s\t%s", pt->id[i], pt->family[i]);
    for (size_t t = 0; t < 5; t++)
      n += snprintf(row + n, sizeof row - (size_t)n, "\t%.17g", pt->targets[i * 5 + t]);
    assert_int_equal(strncmp(line, row, (size_t)n), 0);
    assert_int_equal(line[n], '\n');
    line += n + 1;
    double g = pt->targets[i * 5 + 3], nb = pt->targets[i * 5 + 4];
    assert_true(g == 0.0 || g == 1.0);
    assert_true(nb == 0.0 || nb == 1.0);
  }
  free(text);
  nd_participants_free(pt);
}

/* A general file: CRLF, a BOM, n/a and empty cells, a non-numeric column
 * (skipped), no family_id, blank lines. */
static void test_reader_general(void **state) {
  (void)state;
  char p[PATH_CAP];
  subdir(p, "general.tsv");
  write_text(p, "\xEF\xBB\xBF" "age\tparticipant_id\tsex\tiq\r\n"
                "31.5\tsub-01\tM\tn/a\r\n"
                "\r\n"
                "-2e3\tsub-02\tF\t\r\n"
                "7\tsub-03\tn/a\t110\n");
  nd_participants *pt;
  CHECK_OK(nd_participants_read(p, &pt));
  assert_int_equal(pt->n, 3);
  assert_int_equal(pt->ntargets, 2);
  assert_string_equal(pt->target_name[0], "age");
  assert_string_equal(pt->target_name[1], "iq");
  assert_string_equal(pt->id[2], "sub-03");
  for (size_t i = 0; i < 3; i++) assert_null(pt->family[i]);
  assert_true(pt->targets[0] == 31.5);
  assert_true(isnan(pt->targets[1]));
  assert_true(pt->targets[2] == -2000.0);
  assert_true(isnan(pt->targets[3]));
  assert_true(pt->targets[5] == 110.0);
  nd_participants_free(pt);
  /* A header without rows: no participants, not an error. */
  write_text(p, "participant_id\tfamily_id\tscore\n");
  CHECK_OK(nd_participants_read(p, &pt));
  assert_int_equal(pt->n, 0);
  assert_int_equal(pt->ntargets, 1);
  nd_participants_free(pt);
  nd_participants_free(NULL);
}

/* Each malformed file: ND_EFORMAT, and a message naming file and line. */
static void test_reader_errors(void **state) {
  (void)state;
  static const struct {
    const char *text, *where, *what;
  } cases[] = {
      {"participant_id\tscore\nsub-01\t1\nsub-02\t2\t3\n", ":3:", "3 fields, but the header has 2"},
      {"participant_id\tscore\nsub-01\t1\nsub-02\t2\nsub-01\t3\n", ":4:",
       "duplicate value 'sub-01' (first on line 2)"},
      {"subject\tscore\nsub-01\t1\n", ":1:", "no participant_id column"},
      {"", "", "empty file"},
      {"\n\n", "", "empty file"},
      {"participant_id\tscore\tscore\nsub-01\t1\t2\n", ":1:", "column 'score' appears twice"},
      {"participant_id\tscore\n\t1\n", ":2:", "column 'participant_id': empty value"},
  };
  char p[PATH_CAP];
  subdir(p, "bad.tsv");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_text(p, cases[i].text);
    nd_participants *pt = (nd_participants *)&pt;
    assert_int_equal(nd_participants_read(p, &pt), ND_EFORMAT);
    assert_null(pt);
    char want[PATH_CAP + 16];
    snprintf(want, sizeof want, "%s%s", p, cases[i].where);
    const char *msg = nd_neuro_errmsg();
    if (strncmp(msg, want, strlen(want)) != 0 || !strstr(msg, cases[i].what)) {
      print_error("case %zu: message '%s', wanted '%s' ... '%s'\n", i, msg, want,
                  cases[i].what);
      fail();
    }
  }
  nd_participants *pt;
  assert_int_equal(nd_participants_read("/nonexistent/participants.tsv", &pt), ND_EIO);
  assert_non_null(strstr(nd_neuro_errmsg(), "/nonexistent/participants.tsv"));
  assert_int_equal(nd_participants_read(NULL, &pt), ND_EINVAL);
}

/* nd_nifti_save_gz: levels 1 and 9 read back the same; others refused. */
static void test_save_gz_level(void **state) {
  (void)state;
  size_t shape[3] = {4, 5, 6};
  nd_array *a, *b;
  assert_int_equal(nd_array_new(&a, ND_F32, 3, shape), ND_OK);
  float *x = nd_array_data_mut(a);
  for (size_t i = 0; i < 120; i++) x[i] = (float)i * 0.25f;
  char p[PATH_CAP];
  subdir(p, "level.nii.gz");
  for (int level = 0; level <= 9; level += 9) {
    CHECK_OK(nd_nifti_save_gz(p, a, level ? level : 1));
    CHECK_OK(nd_nifti_load(p, ND_F32, &b));
    assert_true(nd_array_count(b) == 120 && memcmp(nd_array_data(b), x, 120 * 4) == 0);
    nd_array_release(b);
  }
  assert_int_equal(nd_nifti_save_gz(p, a, 10), ND_EINVAL);
  assert_int_equal(nd_nifti_save_gz(p, a, -1), ND_EINVAL);
  nd_array_release(a);
}

int main(void) {
  static const char *const atlases[] = {"AICHAmc.nii.gz", "aal.nii.gz",
                                        "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
                                        "JHU-WhiteMatter-labels-1mm.nii.gz"};
  g_have_templates = true;
  for (size_t i = 0; i < sizeof atlases / sizeof atlases[0]; i++) {
    char p[PATH_CAP];
    path_of(p, TEMPLATES, atlases[i]);
    g_have_templates = g_have_templates && access(p, R_OK) == 0;
  }
  if (!g_have_templates)
    printf("neuro_cohort: %s is missing (Debian package mricron-data); the cohort tests are "
           "skipped\n", TEMPLATES);
  g_seed = nd_test_seed("neuro_cohort", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_same_on_two_threads),
      cmocka_unit_test(test_prefix_and_seed),
      cmocka_unit_test(test_second_call_skips),
      cmocka_unit_test(test_repairs_one_participant),
      cmocka_unit_test(test_count_change),
      cmocka_unit_test(test_failure_keeps_the_rest),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_signal),
      cmocka_unit_test(test_tsv_round_trip),
      cmocka_unit_test(test_reader_general),
      cmocka_unit_test(test_reader_errors),
      cmocka_unit_test(test_save_gz_level),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* The synthetic cohort's content: participants (families, latents, targets)
 * and their maps. cohort.c writes them out.
 *
 * Randomness: every draw comes from an nd_rng stream whose key is derived
 * from (seed, purpose, index) — the family index for what siblings share,
 * the participant index for the rest — never from a thread or an order of
 * work. The maps' white noise is read straight from the Philox blocks
 * (half-word g of the stream is voxel g), so any slice can be made on any
 * thread.
 *
 * Bit reproducibility: no libm function in the data path (normals are
 * Irwin-Hall sums of 12 uniforms, the smoothing kernel is binomial with
 * dyadic weights, sqrt is correctly rounded by IEEE 754), every sum has a
 * fixed order, and each output element is written by one task. The same
 * seed gives the same bytes on any thread count, and on any machine whose
 * compiler evaluates float expressions the same way (-std=c11 turns GCC's
 * FMA contraction off).
 *
 * A map is, inside the brain mask (0 outside):
 *   BASE + global + sum_k amplitude_k * latent_k [voxel in k's regions]
 *        + NOISE_SD * smooth(white)
 * where white is uniform noise (half the family's field, half the
 * participant's) and smooth is a separable binomial(8) filter, 9 taps,
 * sigma sqrt(2) voxels, normalised so the smooth noise has unit variance.
 * Values are rounded to multiples of 2^-8 (0.004, against a noise sd of 1),
 * which costs nothing a region mean can see: the low mantissa bytes become
 * zeros, and a map's .nii.gz at level 1 is 590 KB in 20 ms of deflate
 * instead of 980 KB in 33 ms at full float32 precision (668 KB at 2^-10;
 * level 6 would give 532 KB in 107 ms). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "neuro/cohort_int.h"

/* ------------------------------------------------------------- the plan */

const char *const nd__cohort_target_names[ND__COHORT_TARGETS] = {
    "score_a", "score_b", "noise", "group", "noise_bin"};

const char *const nd__cohort_atlas_files[ND__COHORT_ATLASES] = {
    "AICHAmc.nii.gz", "aal.nii.gz", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
    "JHU-WhiteMatter-labels-1mm.nii.gz"};

static const int64_t PLANT1[] = {3, 4, 7, 8, 23, 24};
static const char *const PLANT1_NAMES[] = {"Frontal_Sup_L",        "Frontal_Sup_R",
                                           "Frontal_Mid_L",        "Frontal_Mid_R",
                                           "Frontal_Sup_Medial_L", "Frontal_Sup_Medial_R"};
static const int64_t PLANT2[] = {18, 21, 22, 31};
static const char *const PLANT2_NAMES[] = {"Superior Parietal Lobule", "Angular Gyrus",
                                           "Lateral Occipital Cortex, superior division",
                                           "Precuneous Cortex"};
static const int64_t PLANT3[] = {3, 4, 5, 25, 26, 41, 42};
static const char *const PLANT3_NAMES[] = {
    "Genu_of_corpus_callosum",         "Body_of_corpus_callosum",
    "Splenium_of_corpus_callosum",     "Superior_corona_radiata_R",
    "Superior_corona_radiata_L",       "Superior_longitudinal_fasciculus_R",
    "Superior_longitudinal_fasciculus_L"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const nd__cohort_plant nd__cohort_plants[ND__COHORT_LATENTS] = {
    {1, PLANT1, PLANT1_NAMES, NELEM(PLANT1), 0.5},
    {2, PLANT2, PLANT2_NAMES, NELEM(PLANT2), 0.6},
    {3, PLANT3, PLANT3_NAMES, NELEM(PLANT3), 1.0}, /* small tracts: a stronger signal */
};

/* ------------------------------------------------------------ streams */

/* Stream purposes: part of every key, so no two uses share a stream. */
enum {
  P_FAMILY_SIZE = 1,
  P_FAMILY_LATENT,
  P_SUB_LATENT,
  P_FAMILY_TARGET,
  P_SUB_TARGET,
  P_SUB_GLOBAL,
  P_FAMILY_NOISE,
  P_SUB_NOISE,
};

#define COHORT_TAG "nidag.cohort"
#define FAMILY_MAX 3    /* siblings per family: 1..FAMILY_MAX */
#define IRWIN_HALL_N 12 /* uniforms per normal: variance 12 * 1/12 = 1 */

static nd_hash128 stream_key(uint64_t seed, uint64_t purpose, uint64_t index) {
  nd_hash128 root = nd_hash128_seeded(COHORT_TAG, sizeof COHORT_TAG - 1, seed);
  return nd_rng_subkey(nd_rng_subkey(root, purpose), index);
}

static void stream(nd_rng *r, uint64_t seed, uint64_t purpose, uint64_t index) {
  nd_rng_init(r, stream_key(seed, purpose, index));
}

/* A standard normal without libm (nd_rng_normal uses log and cos, whose
 * last bit may differ between C libraries): the Irwin-Hall sum of 12
 * uniforms minus 6, mean 0, variance 1, within +-6. Plenty for synthetic
 * data, and the same bits everywhere. */
static double normal(nd_rng *r) {
  double s = 0.0;
  for (int i = 0; i < IRWIN_HALL_N; i++) s += nd_rng_uniform(r);
  return s - IRWIN_HALL_N / 2.0;
}

/* Half shared, half own: unit variance when both are. */
static double mix(double shared, double own) {
  return ND__COHORT_SHARE * shared + ND__COHORT_SHARE * own;
}

/* --------------------------------------------------------- participants */

static void subject_values(uint64_t seed, nd__cohort_sub *s) {
  nd_rng fl, sl, ft, st, gl;
  stream(&fl, seed, P_FAMILY_LATENT, s->family);
  stream(&sl, seed, P_SUB_LATENT, s->index);
  for (int k = 0; k < ND__COHORT_LATENTS; k++) {
    double shared = normal(&fl);
    s->latent[k] = mix(shared, normal(&sl));
  }
  stream(&gl, seed, P_SUB_GLOBAL, s->index);
  s->global = ND__COHORT_GLOBAL_SD * normal(&gl);

  /* Target noise: score_a, score_b and group partly shared by siblings;
   * noise and noise_bin the participant's own. */
  stream(&ft, seed, P_FAMILY_TARGET, s->family);
  stream(&st, seed, P_SUB_TARGET, s->index);
  double e[3];
  for (int t = 0; t < 3; t++) {
    double shared = normal(&ft);
    e[t] = mix(shared, normal(&st));
  }
  const double *L = s->latent;
  s->target[0] = ND__COHORT_SCORE_A_L1 * L[0] + ND__COHORT_SCORE_A_L2 * L[1] +
                 ND__COHORT_SCORE_A_NOISE * e[0];
  s->target[1] = ND__COHORT_SCORE_B_L2 * L[1] + ND__COHORT_SCORE_B_L3 * L[2] +
                 ND__COHORT_SCORE_B_NOISE * e[1];
  s->target[2] = normal(&st);
  double g = ND__COHORT_GROUP_L3 * L[2] + ND__COHORT_GROUP_L1 * L[0] +
             ND__COHORT_GROUP_NOISE * e[2];
  s->target[3] = g > 0.0 ? 1.0 : 0.0;
  s->target[4] = nd_rng_uniform(&st) < 0.5 ? 1.0 : 0.0;
}

void nd__cohort_subjects(uint64_t seed, size_t n, nd__cohort_sub *subs) {
  size_t i = 0;
  for (size_t f = 0; i < n; f++) {
    nd_rng r;
    stream(&r, seed, P_FAMILY_SIZE, f);
    size_t size = 1 + (size_t)nd_rng_below(&r, FAMILY_MAX);
    for (size_t j = 0; j < size && i < n; j++, i++) {
      memset(&subs[i], 0, sizeof subs[i]);
      subs[i].index = i;
      subs[i].family = f;
    }
  }
  for (i = 0; i < n; i++) subject_values(seed, &subs[i]);
}

/* ---------------------------------------------------------------- space */

void nd__cohort_space_free(nd__cohort_space *s) {
  if (!s) return;
  nd_array_release(s->grid);
  nd_free(s->mask);
  nd_free(s->plant);
  memset(s, 0, sizeof *s);
}

static int load_atlas(const char *templates, size_t k, nd_array **out) {
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s", templates, nd__cohort_atlas_files[k]);
  if (n < 0 || (size_t)n >= sizeof path)
    return nd__nerr(ND_EINVAL, "%s: the templates path is too long", templates);
  return nd_nifti_load(path, ND_F32, out);
}

/* Mark the voxels of one resampled atlas: mask where non-zero, and the
 * plant bits of every latent planted in it. */
static void mark(nd__cohort_space *s, size_t k, const float *lab) {
  for (size_t v = 0; v < s->nvox; v++) {
    if (lab[v] == 0.0f) continue;
    s->mask[v] = 1;
    for (int l = 0; l < ND__COHORT_LATENTS; l++) {
      const nd__cohort_plant *p = &nd__cohort_plants[l];
      if (p->atlas != k) continue;
      for (size_t r = 0; r < p->n; r++)
        if (lab[v] == (float)p->labels[r]) s->plant[v] |= (uint8_t)(1u << l);
    }
  }
}

int nd__cohort_space_load(const char *templates, nd__cohort_space *s) {
  memset(s, 0, sizeof *s);
  int rc = load_atlas(templates, 0, &s->grid);
  if (rc) return rc;
  if (nd_array_ndim(s->grid) != 3) {
    rc = nd__nerr(ND_EFORMAT, "%s/%s: the grid atlas is %dD, not 3D", templates,
                  nd__cohort_atlas_files[0], nd_array_ndim(s->grid));
    nd__cohort_space_free(s);
    return rc;
  }
  s->nz = nd_array_dim(s->grid, 0);
  s->ny = nd_array_dim(s->grid, 1);
  s->nx = nd_array_dim(s->grid, 2);
  s->nvox = nd_array_count(s->grid);
  s->mask = nd_calloc(s->nvox, 1);
  s->plant = nd_calloc(s->nvox, 1);
  if (!s->mask || !s->plant) {
    nd__cohort_space_free(s);
    return nd__nerr(ND_ENOMEM, "cohort: out of memory for the brain mask");
  }
  mark(s, 0, nd_array_data(s->grid));
  for (size_t k = 1; k < ND__COHORT_ATLASES && rc == ND_OK; k++) {
    nd_array *a = NULL, *r = NULL;
    rc = load_atlas(templates, k, &a);
    if (rc == ND_OK && nd_array_ndim(a) != 3)
      rc = nd__nerr(ND_EFORMAT, "%s/%s: the atlas is %dD, not 3D", templates,
                    nd__cohort_atlas_files[k], nd_array_ndim(a));
    if (rc == ND_OK) rc = nd_resample_nearest(a, s->grid, &r);
    if (rc == ND_OK) mark(s, k, nd_array_data(r));
    nd_array_release(a);
    nd_array_release(r);
  }
  if (rc) nd__cohort_space_free(s);
  return rc;
}

/* ------------------------------------------------------------------ map */

/* The binomial(8) kernel: C(8, t) / 256, exact in binary. */
#define TAPS 9
#define HALF 4
static const float KERNEL[TAPS] = {1.f / 256, 8.f / 256,  28.f / 256, 56.f / 256, 70.f / 256,
                                   56.f / 256, 28.f / 256, 8.f / 256,  1.f / 256};
/* Sum of the squared weights: C(16, 8) / 256^2 (the variance per axis). */
#define KERNEL_SQ (12870.0 / 65536.0)
/* The variance of white noise uniform in [-1, 1). */
#define UNIFORM_VAR (1.0 / 3.0)
#define SLICES_PER_CHUNK 4

typedef struct map_ctx {
  const nd__cohort_space *s;
  uint32_t fam_key[4], sub_key[4]; /* Philox key words (0, 1) and counter hi (2, 3) */
  float *smooth_xy;                /* nvox: after the x and y passes */
  float *out;                      /* nvox: the map */
  double offset[1u << ND__COHORT_LATENTS]; /* per plant bits: base + global + signal */
  double gain;                     /* turns smooth(white) into unit variance */
} map_ctx;

static void philox_key(nd_hash128 k, uint32_t w[4]) {
  w[0] = (uint32_t)k.lo;
  w[1] = (uint32_t)(k.lo >> 32);
  w[2] = (uint32_t)k.hi;
  w[3] = (uint32_t)(k.hi >> 32);
}

/* Uniform white noise for voxels [g, g + n), scaled, added into out: voxel
 * g is half-word g % 2 of word g / 2 of the stream (the words nd_rng_u32
 * would give), mapped exactly to a float in [-1, 1) with 16 bits. Sixteen
 * bits are plenty for noise about to be averaged over a few hundred voxels,
 * and a Philox block then serves 8 voxels. */
#define VOXELS_PER_BLOCK 8
static void add_uniforms(const uint32_t kw[4], uint64_t g, size_t n, float scale, float *out) {
  uint32_t key[2] = {kw[0], kw[1]}, buf[4];
  uint64_t block = UINT64_MAX;
  for (size_t i = 0; i < n; i++, g++) {
    if (g / VOXELS_PER_BLOCK != block) {
      block = g / VOXELS_PER_BLOCK;
      uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), kw[2], kw[3]};
      nd_philox4x32(ctr, key, buf);
    }
    unsigned h = (unsigned)(g % VOXELS_PER_BLOCK);
    uint32_t half = (buf[h / 2] >> (16 * (h % 2))) & 0xFFFFu;
    out[i] += scale * ((float)((int32_t)half - 0x8000) * 0x1.0p-15f);
  }
}

/* out[0, n) = the kernel over in[-HALF, n + HALF) (in is padded). */
static void filter_padded(const float *restrict in, float *restrict out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const float *p = in + i;
    out[i] = KERNEL[0] * p[0] + KERNEL[1] * p[1] + KERNEL[2] * p[2] + KERNEL[3] * p[3] +
             KERNEL[4] * p[4] + KERNEL[5] * p[5] + KERNEL[6] * p[6] + KERNEL[7] * p[7] +
             KERNEL[8] * p[8];
  }
}

/* dst[0, len) = sum over taps t of KERNEL[t] * line (k + t - HALF), lines
 * outside [0, nlines) being zero: the pass across lines (y or z). */
static void filter_across(const float *restrict src, size_t k, size_t nlines, size_t len,
                          float *restrict dst) {
  memset(dst, 0, len * sizeof *dst);
  for (size_t t = 0; t < TAPS; t++) {
    if (k + t < HALF || k + t - HALF >= nlines) continue;
    const float *restrict line = src + (k + t - HALF) * len;
    for (size_t v = 0; v < len; v++) dst[v] += KERNEL[t] * line[v];
  }
}

/* Slices [lo, hi): white noise, then the x and y passes. */
static int map_xy(void *arg, size_t lo, size_t hi) {
  map_ctx *c = arg;
  const nd__cohort_space *s = c->s;
  size_t plane = s->nx * s->ny;
  float *row = nd_malloc((s->nx + 2 * HALF) * sizeof *row);
  float *tmp = nd_malloc(plane * sizeof *tmp);
  int rc = row && tmp ? ND_OK : ND_ENOMEM;
  for (size_t z = lo; z < hi && rc == ND_OK; z++) {
    for (size_t y = 0; y < s->ny; y++) {
      uint64_t g = (uint64_t)z * plane + y * s->nx;
      memset(row, 0, (s->nx + 2 * HALF) * sizeof *row);
      add_uniforms(c->fam_key, g, s->nx, (float)ND__COHORT_SHARE, row + HALF);
      add_uniforms(c->sub_key, g, s->nx, (float)ND__COHORT_SHARE, row + HALF);
      filter_padded(row, tmp + y * s->nx, s->nx);
    }
    float *dst = c->smooth_xy + z * plane;
    for (size_t y = 0; y < s->ny; y++) filter_across(tmp, y, s->ny, s->nx, dst + y * s->nx);
  }
  nd_free(row);
  nd_free(tmp);
  return rc;
}

/* Slices [lo, hi): the z pass, then the map's values inside the mask. */
static int map_z(void *arg, size_t lo, size_t hi) {
  map_ctx *c = arg;
  const nd__cohort_space *s = c->s;
  size_t plane = s->nx * s->ny;
  const double q = (double)(1u << ND__COHORT_QUANT_BITS);
  for (size_t z = lo; z < hi; z++) {
    float *dst = c->out + z * plane;
    filter_across(c->smooth_xy, z, s->nz, plane, dst);
    const uint8_t *mask = s->mask + z * plane, *plant = s->plant + z * plane;
    for (size_t v = 0; v < plane; v++) {
      if (!mask[v]) {
        dst[v] = 0.0f;
        continue;
      }
      double val = c->offset[plant[v]] + c->gain * (double)dst[v];
      dst[v] = (float)(floor(val * q + 0.5) / q);
    }
  }
  return ND_OK;
}

int nd__cohort_map(const nd__cohort_space *s, uint64_t seed, const nd__cohort_sub *sub,
                   nd_pool *pool, nd_array **out) {
  *out = NULL;
  map_ctx c = {.s = s};
  philox_key(stream_key(seed, P_FAMILY_NOISE, sub->family), c.fam_key);
  philox_key(stream_key(seed, P_SUB_NOISE, sub->index), c.sub_key);
  /* white has variance UNIFORM_VAR (two halves of it); each pass multiplies
   * the variance by KERNEL_SQ. */
  c.gain = ND__COHORT_NOISE_SD / sqrt(UNIFORM_VAR * KERNEL_SQ * KERNEL_SQ * KERNEL_SQ);
  for (unsigned bits = 0; bits < (1u << ND__COHORT_LATENTS); bits++) {
    double v = ND__COHORT_BASE + sub->global;
    for (int k = 0; k < ND__COHORT_LATENTS; k++)
      if (bits & (1u << k)) v += nd__cohort_plants[k].amplitude * sub->latent[k];
    c.offset[bits] = v;
  }
  nd_array *a = NULL;
  int rc = nd_array_new(&a, ND_F32, 3, nd_array_shape(s->grid));
  if (rc == ND_OK) rc = nd_array_set_affine(a, nd_array_affine(s->grid));
  c.smooth_xy = rc == ND_OK ? nd_malloc(s->nvox * sizeof *c.smooth_xy) : NULL;
  if (rc == ND_OK && !c.smooth_xy) rc = ND_ENOMEM;
  if (rc == ND_OK) {
    c.out = nd_array_data_mut(a);
    rc = nd_parallel_for(pool, 0, s->nz, ND_STATIC, SLICES_PER_CHUNK, map_xy, &c);
  }
  if (rc == ND_OK) rc = nd_parallel_for(pool, 0, s->nz, ND_STATIC, SLICES_PER_CHUNK, map_z, &c);
  nd_free(c.smooth_xy);
  if (rc) {
    nd_array_release(a);
    return nd__nerr(rc, "cohort: sub-%04zu: cannot build the map: %s", sub->index + 1,
                    nd_strerror(rc));
  }
  *out = a;
  return ND_OK;
}

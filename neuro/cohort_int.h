/* Private to the synthetic cohort (cohort.c writes the dataset,
 * cohort_synth.c computes what goes in it). */
#ifndef NIDAG_NEURO_COHORT_INT_H
#define NIDAG_NEURO_COHORT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "neuro/neuro_int.h"
#include "nidag/runtime.h"

#define ND__COHORT_LATENTS 3
#define ND__COHORT_TARGETS 5
#define ND__COHORT_ATLASES 4 /* the grid atlas (AICHAmc) first */

/* One participant: everything participants.tsv holds, and what the map
 * needs. */
typedef struct nd__cohort_sub {
  size_t index;  /* 0-based; the id is sub-<index + 1> */
  size_t family; /* 0-based; the id is fam-<family + 1> */
  double latent[ND__COHORT_LATENTS];
  double global; /* a whole-brain offset (a nuisance, in no target) */
  double target[ND__COHORT_TARGETS];
} nd__cohort_sub;

/* Column names of the targets, in order. */
extern const char *const nd__cohort_target_names[ND__COHORT_TARGETS];

/* The atlas files (relative to the templates directory), grid atlas first. */
extern const char *const nd__cohort_atlas_files[ND__COHORT_ATLASES];

/* Where latent k is planted: regions (label values) of one atlas, raised by
 * amplitude * latent. */
typedef struct nd__cohort_plant {
  size_t atlas;             /* index into nd__cohort_atlas_files */
  const int64_t *labels;
  const char *const *names; /* the regions' names, as the atlas's table has them */
  size_t n;
  double amplitude;
} nd__cohort_plant;
extern const nd__cohort_plant nd__cohort_plants[ND__COHORT_LATENTS];

/* The map's other constants, for the description. */
#define ND__COHORT_BASE 1.0        /* the value inside the brain before anything */
#define ND__COHORT_GLOBAL_SD 0.25  /* sd of the whole-brain offset */
#define ND__COHORT_NOISE_SD 1.0    /* sd of the smooth noise, per voxel */
#define ND__COHORT_SMOOTH_FWHM_VOX 3.33 /* of the binomial(8) kernel: 2.3548 * sqrt(2) */
#define ND__COHORT_QUANT_BITS 8   /* values are multiples of 2^-QUANT_BITS */
#define ND__COHORT_SHARE 0.70710678118654752 /* sqrt(1/2): siblings share half */

/* The targets' weights on the latents and on their own noise (sd). */
#define ND__COHORT_SCORE_A_L1 0.8
#define ND__COHORT_SCORE_A_L2 0.3
#define ND__COHORT_SCORE_A_NOISE 0.5
#define ND__COHORT_SCORE_B_L2 0.6
#define ND__COHORT_SCORE_B_L3 0.45
#define ND__COHORT_SCORE_B_NOISE 0.55
#define ND__COHORT_GROUP_L3 1.0
#define ND__COHORT_GROUP_L1 0.5
#define ND__COHORT_GROUP_NOISE 0.8

/* The participants of a cohort of n with this seed. A participant's values
 * depend on (seed, its index) only, never on n: families are laid out in
 * order (sizes drawn per family), and a cohort of n is the first n
 * participants of that sequence. subs has n entries. */
void nd__cohort_subjects(uint64_t seed, size_t n, nd__cohort_sub *subs);

/* What the maps are built on: the grid, the brain mask and, per voxel, the
 * latents planted there (bit k: latent k). Read-only once built, shared by
 * every participant. */
typedef struct nd__cohort_space {
  nd_array *grid; /* AICHAmc (f32): the output's shape and affine */
  uint8_t *mask;  /* per voxel: 1 in the brain */
  uint8_t *plant; /* per voxel: bit k set inside latent k's regions */
  size_t nx, ny, nz, nvox;
} nd__cohort_space;

/* Load and resample the atlases of `templates`. Errors (with the neuro
 * message naming the file): those of nd_nifti_load / nd_resample_nearest,
 * ND_EFORMAT when AICHAmc is not 3D. */
int nd__cohort_space_load(const char *templates, nd__cohort_space *s);
void nd__cohort_space_free(nd__cohort_space *s);

/* The participant's map: a new f32 array on the space's grid. Parallel over
 * slices on pool (NULL: global); bit-identical for any pool. */
int nd__cohort_map(const nd__cohort_space *s, uint64_t seed, const nd__cohort_sub *sub,
                   nd_pool *pool, nd_array **out);

/* The whole file in a new buffer (nd_free), with a NUL after its len
 * bytes. ND_ENOTFOUND (no message) when it does not exist; ND_EIO or
 * ND_ENOMEM with a message (cohort.c). */
int nd__read_file(const char *path, char **data, size_t *len);

/* A growing string (cohort_text.c). Zero-initialise; on allocation failure
 * oom is set and further appends do nothing. s is nd_free'd by the owner. */
typedef struct nd__sbuf {
  char *s;
  size_t len, cap;
  bool oom;
} nd__sbuf;
void nd__sb_printf(nd__sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The text files (cohort_text.c), as new NUL-terminated strings (nd_free),
 * or NULL when out of memory. */
char *nd__cohort_tsv(const nd__cohort_sub *subs, size_t n);
char *nd__cohort_description(uint64_t seed, const nd__cohort_sub *subs, size_t n);
char *nd__cohort_sidecar(void);

#endif /* NIDAG_NEURO_COHORT_INT_H */

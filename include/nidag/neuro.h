/* nidag neuro: NIfTI I/O (through nifti_clib's nifti2_io), atlases, nearest-
 * neighbour resampling through affines, parcellation of 3D/4D images, and
 * connectivity features, plus the graph ops that wrap them.
 *
 * Arrays: images are nd_array in C order with the NIfTI axes reversed, so a
 * NIfTI image of dim (nx, ny, nz[, nt]) is an array of shape
 * ([nt,] nz, ny, nx) whose last axis is x (fastest varying, as in the file).
 * The array's affine is the voxel-to-world matrix of the NIfTI (i, j, k)
 * index, i.e. world = A · (x, y, z, 1) — the matrix nibabel reports.
 *
 * Errors: functions return 0 or a negative ND_E* code. The message of the
 * calling thread's last failure (naming the file and the problem) is in
 * nd_neuro_errmsg().
 */
#ifndef NIDAG_NEURO_H
#define NIDAG_NEURO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nidag/core.h"
#include "nidag/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The calling thread's last neuro error message ("" if none). */
const char *nd_neuro_errmsg(void);

/* ------------------------------------------------------------- NIfTI I/O */

typedef enum nd_affine_source {
  ND_AFFINE_SFORM = 1, /* sform_code > 0 */
  ND_AFFINE_QFORM = 2, /* else qform_code > 0 */
  ND_AFFINE_PIXDIM = 3 /* else diag(pixdim[1..3]), as nibabel does */
} nd_affine_source;

typedef struct nd_nifti_info {
  int version;           /* 1 or 2 */
  int ndim;              /* dim[0] */
  int64_t dim[7];        /* dim[1..ndim] (x, y, z, t, ...) */
  double pixdim[7];      /* pixdim[1..ndim] */
  int datatype;          /* NIfTI datatype code */
  double scl_slope, scl_inter;
  double affine[16];     /* row-major voxel-to-world */
  nd_affine_source affine_source;
} nd_nifti_info;

/* Read and validate the header only (dims positive and not overflowing,
 * a supported datatype, a file long enough for the data it promises).
 * Errors: ND_EIO (cannot open/read), ND_EFORMAT (not NIfTI, bad header,
 * truncated), ND_EUNSUPPORTED (datatype), ND_EOVERFLOW (dims). */
int nd_nifti_header(const char *path, nd_nifti_info *info);

/* Load a NIfTI-1 or NIfTI-2 image (.nii, .nii.gz, .hdr/.img) as float32 or
 * float64 (dtype ND_F32 or ND_F64), with scl_slope/scl_inter applied when
 * the slope is non-zero and finite, and the affine attached. Every supported
 * datatype converts (integers, float32/64; complex and RGB are refused with
 * ND_EUNSUPPORTED). The header is validated before anything is allocated.
 * *out is a new array (release it). */
int nd_nifti_load(const char *path, nd_dtype dtype, nd_array **out);

/* Write an array of 1..7 dims (shape reversed into NIfTI dims, as above) as
 * NIfTI-1 with its affine as sform and qform (code 1, scanner), datatype
 * from its dtype. The path's extension selects .nii or .nii.gz. */
int nd_nifti_save(const char *path, const nd_array *a);

/* nd_nifti_save with a gzip level for .nii.gz: 1 (fastest) .. 9 (smallest),
 * 0 for ND_NIFTI_GZ_LEVEL_DEFAULT (what nd_nifti_save uses). A .nii path is
 * written uncompressed whatever the level. Errors as nd_nifti_save, plus
 * ND_EINVAL for a level outside 0..9. */
#define ND_NIFTI_GZ_LEVEL_DEFAULT 6
int nd_nifti_save_gz(const char *path, const nd_array *a, int level);

/* ---------------------------------------------------------------- grids */

/* Tolerance for comparing affines (absolute, per entry). */
#define ND_GRID_AFFINE_TOL 1e-4

/* True when a and b have the same spatial shape (their last three axes) and
 * affines equal within tol (0: ND_GRID_AFFINE_TOL). */
bool nd_grid_equal(const nd_array *a, const nd_array *b, double tol);

/* Resample a 3D atlas (labels, any dtype) or 4D probabilistic atlas
 * (maps x z x y x x) onto the grid of `like` (its last three axes and its
 * affine) by nearest neighbour through the affines: the source voxel of a
 * target voxel v is round(inv(A_src) · A_like · v), rounding halves up, and
 * voxels that fall outside the source are 0 — what
 * scipy.ndimage.affine_transform(order=0, mode="constant", cval=0) and
 * nilearn's resample_to_img(interpolation="nearest") give. The output keeps
 * the atlas's dtype and gets like's affine. */
int nd_resample_nearest(const nd_array *atlas, const nd_array *like, nd_array **out);

/* ------------------------------------------------------------- atlases */

/* The labels of an integer-label atlas, ascending, 0 (background) dropped.
 * *labels is a new int64 array of shape (n). Errors: ND_EINVAL with a message
 * when a value is not an integer (or is negative/non-finite), ND_ENOTFOUND
 * when the atlas has no label. */
int nd_atlas_labels(const nd_array *atlas, nd_array **labels);

/* ----------------------------------------------------------- parcellate */

typedef enum nd_reduce_fn {
  ND_REDUCE_MEAN = 0, /* the default */
  ND_REDUCE_MEDIAN,
  ND_REDUCE_SUM,
  ND_REDUCE_MIN,
  ND_REDUCE_MAX,
  ND_REDUCE_STD,      /* divides by n, as scipy.ndimage does */
  ND_REDUCE_VARIANCE, /* divides by n */
} nd_reduce_fn;

const char *nd_reduce_fn_name(nd_reduce_fn f); /* "mean", ...; "invalid" */
int nd_reduce_fn_parse(const char *name, nd_reduce_fn *out);

typedef struct nd_parcellate_opts {
  nd_reduce_fn reduce;       /* label atlases only; probabilistic: weighted mean */
  const nd_array *labels;    /* columns: these labels (int64, ascending); NULL:
                                the atlas's own labels (nd_atlas_labels) */
  const nd_array *mask;      /* optional brain mask on the image grid: voxels
                                where it is 0 are ignored */
} nd_parcellate_opts;

/* Parcellate a 3D image (z, y, x) or 4D image (t, z, y, x) with an atlas on
 * the same grid (nd_grid_equal; resample first otherwise, or the call fails
 * with ND_EINVAL and a message showing both grids). A 3D label atlas gives
 * one column per label; a 4D probabilistic atlas (maps, z, y, x) one column
 * per map, the weighted mean. The result is f64 of shape (1, columns) for a
 * 3D image and (t, columns) for 4D. A column whose region has no voxel (it
 * vanished in resampling or under the mask) is NaN; *empty (may be NULL)
 * gets a new u8 array (columns) flagging them, so the layout stays stable
 * across participants. */
int nd_parcellate(const nd_array *img, const nd_array *atlas,
                  const nd_parcellate_opts *o, nd_array **out, nd_array **empty);

/* --------------------------------------------------------- connectivity */

/* Pearson correlation between the columns of a (t, regions) time-series
 * array (t >= 2), through BLAS; fisher_z applies atanh (the diagonal and
 * |r| = 1 give +-inf; with_diag false drops the diagonal). The result is the
 * lower triangle, row by row: f64 of shape (R(R+1)/2) with the diagonal or
 * (R(R-1)/2) without. A constant column gives NaN correlations. */
int nd_connectivity(const nd_array *ts, bool fisher_z, bool with_diag, nd_array **out);

/* ------------------------------------------------------------ graph ops */

/* Graph ops over these functions (params are nd_params fields):
 *   nd_op_nifti_load   input: a file node. params: "dtype" str "f32"|"f64"
 *                      (default f32). Memory cost: the image bytes, from
 *                      the header, read only for loads a run computes.
 *   nd_op_resample     inputs: atlas, like. params: none.
 *   nd_op_parcellate   inputs: image, atlas[, mask]. params: "reduce" str
 *                      (default "mean"), "on_grid_mismatch" str "resample"
 *                      (default) or "refuse".
 *   nd_op_connectivity input: time series. params: "fisher_z" i64 0/1,
 *                      "diagonal" i64 0/1.
 * The ops over arrays declare the memory cost of their image input (the
 * resample op: of its grid input). Each op has an explicit version, part of
 * every key. */
extern const nd_op nd_op_nifti_load;
extern const nd_op nd_op_resample;
extern const nd_op nd_op_parcellate;
extern const nd_op nd_op_connectivity;

/* ------------------------------------------------------ synthetic cohort */

/* A synthetic BIDS-like dataset with a known answer, for the demo and for
 * tests (neuro/cohort.c, cohort_synth.c, cohort_text.c). It lays out
 *
 *   DIR/dataset_description.json   what was generated: seed, participants,
 *                                  the targets' formulas, the planted regions
 *   DIR/participants.tsv           participant_id (sub-0001, ...), family_id
 *                                  (fam-0001, ...), score_a, score_b, noise,
 *                                  group, noise_bin; values printed with %.17g
 *   DIR/participants.json          the columns described (the BIDS sidecar)
 *   DIR/sub-XXXX/anat/sub-XXXX_map.nii.gz
 *                                  a float32 3D map on the grid and affine of
 *                                  AICHAmc.nii.gz (2 mm MNI, 91 x 109 x 91)
 *   DIR/.nidag-cohort.tsv          the manifest (see nd_cohort_generate)
 *
 * Content. Each participant has three latent factors L1, L2, L3 (standard
 * normal); siblings (families of 1-3, so 200 participants make about 100
 * families) share half the variance of their latents, of their maps' noise
 * and of their targets' noise, so folds must keep families together. Inside
 * the brain mask (voxels where AICHAmc, aal, HarvardOxford-cort-maxprob-thr0-1mm
 * or JHU-WhiteMatter-labels-1mm is non-zero, after nearest-neighbour
 * resampling onto the grid; 0 outside) a map is
 *     1 + global + 0.5 L1 [in AAL Frontal_Sup, Frontal_Mid, Frontal_Sup_Medial
 *                          L and R: labels 3, 4, 7, 8, 23, 24]
 *                + 0.6 L2 [in Harvard-Oxford Superior Parietal Lobule,
 *                          Angular Gyrus, Lateral Occipital superior,
 *                          Precuneous: labels 18, 21, 22, 31]
 *                + 1.0 L3 [in JHU genu, body and splenium of the corpus
 *                          callosum, superior corona radiata R/L, superior
 *                          longitudinal fasciculus R/L: 3, 4, 5, 25, 26, 41, 42]
 *                + smooth noise (unit variance, FWHM about 3.3 voxels)
 * where global is a whole-brain offset (sd 0.25, in no target), rounded to
 * multiples of 2^-8. The targets (e: each target's own standard normal
 * noise):
 *     score_a   = 0.8 L1 + 0.3 L2 + 0.5 e        continuous, strong
 *     score_b   = 0.6 L2 + 0.45 L3 + 0.55 e      continuous, moderate
 *     noise     = e                              pure noise, independent
 *     group     = [L3 + 0.5 L1 + 0.8 e > 0]      binary, about balanced
 *     noise_bin = [u < 1/2]                      binary pure noise
 * Region means carry the latents clearly: over the 200 default participants,
 * RidgeCV on standardised region means, 5 folds by family, reaches an
 * out-of-fold R^2 of 0.61-0.67 for score_a and 0.34-0.52 for score_b with
 * the AAL, AICHA or Harvard-Oxford atlas (0.29 for score_b with JHU, which
 * sees only L3), and about 0 for noise.
 *
 * Reproducibility: the files are a pure function of (ND_COHORT_VERSION,
 * seed, participant index, the atlas files, gz_level), bit for bit, for any
 * pool or thread count: counter-based nd_rng streams keyed by (seed,
 * purpose, family or participant index), fixed summation orders, no libm in
 * the data path. A participant's map and row do not depend on the number of
 * participants: a cohort of 100 is the first 100 of a cohort of 200. */

#define ND_COHORT_VERSION 1 /* bumped whenever the same options give other bytes */
#define ND_COHORT_DEFAULT_PARTICIPANTS 200
#define ND_COHORT_DEFAULT_SEED 1
#define ND_COHORT_DEFAULT_GZ_LEVEL 1
#define ND_COHORT_DEFAULT_TEMPLATES "/usr/share/mricron/templates"
#define ND_COHORT_MAX_PARTICIPANTS 10000 /* about 6 GB of maps */

/* Zero means "default" for every field. Fields are only ever appended. */
typedef struct nd_cohort_opts {
  size_t participants;   /* 0: 200 */
  uint64_t seed;         /* 0: 1 */
  const char *templates; /* the MRIcron atlases (AICHAmc, aal, HarvardOxford-cort-
                            maxprob-thr0-1mm, JHU-WhiteMatter-labels-1mm .nii.gz);
                            NULL: /usr/share/mricron/templates */
  nd_pool *pool;         /* NULL: the global pool */
  int gz_level;          /* of the maps, 1..9; 0: 1 */
  nd_cache *memo;        /* a cache whose file-digest memo answers for maps whose
                            stat is unchanged (nd_cache_file_digest), so a check
                            of an unchanged cohort reads no map; NULL: every map
                            is read and hashed */
} nd_cohort_opts;

typedef struct nd_cohort_report {
  size_t written; /* files written by this call (maps and the three text files) */
  size_t skipped; /* files already up to date, left untouched */
  double seconds; /* wall time of the call */
} nd_cohort_report;

/* Generate the cohort into dir (created if missing; o may be NULL), once:
 * the manifest DIR/.nidag-cohort.tsv records each map's key (everything its
 * bytes depend on) and digest (XXH3-128 of the file). A later call leaves
 * every map whose manifest key matches and whose file still has the
 * recorded digest untouched (not rewritten, mtime unchanged) and regenerates
 * the others (missing, changed, other seed...), participant by participant.
 * The text files are rewritten only when their bytes differ. Maps of
 * participants beyond the current count (from a larger earlier cohort) are
 * left in place and in the manifest, but not listed in participants.tsv.
 * Files are written to a temporary name and renamed. Participants run in
 * parallel on o->pool, one task per participant's file; one that fails does
 * not stop the others, whose maps are recorded, so the next call redoes only
 * what failed. rep (may be NULL) is filled on success and failure.
 * Errors (message in nd_neuro_errmsg(), naming the file): ND_EINVAL (no
 * dir, more than ND_COHORT_MAX_PARTICIPANTS, gz_level outside 1..9),
 * ND_ENOTFOUND (an atlas missing from the templates directory), ND_EIO,
 * ND_EFORMAT (an unreadable atlas), ND_ENOMEM. */
int nd_cohort_generate(const char *dir, const nd_cohort_opts *o, nd_cohort_report *rep);

/* A BIDS participants.tsv in memory. Every string and array belongs to the
 * struct and lives until nd_participants_free. */
typedef struct nd_participants {
  size_t n, ntargets;
  char **id;          /* n participant_id values */
  char **family;      /* n family_id values; entries are NULL without that column */
  char **target_name; /* ntargets column names, in file order */
  double *targets;    /* n x ntargets, row-major; NaN for "n/a" or an empty cell */
} nd_participants;

/* Read a participants.tsv: a header row, then one tab-separated row per
 * participant (a trailing "\r" and blank lines are ignored). participant_id
 * is required and must be non-empty and unique; family_id is optional. Every
 * other column whose cells all parse as numbers (strtod over the whole
 * cell, in the C locale the library runs in; or "n/a" or empty) becomes a
 * target; a column with any other value (e.g. sex with M/F) is
 * skipped, which is not an error. *out is new (nd_participants_free).
 * Errors (message in nd_neuro_errmsg() naming the file, and the line and
 * column where one applies): ND_EIO (cannot read), ND_EFORMAT (empty file,
 * no participant_id column, a duplicate column name, a row with another
 * number of fields than the header, an empty or duplicate participant_id),
 * ND_ENOMEM. */
int nd_participants_read(const char *tsv_path, nd_participants **out);
void nd_participants_free(nd_participants *p); /* NULL-safe */

#ifdef __cplusplus
}
#endif
#endif /* NIDAG_NEURO_H */

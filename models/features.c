/* nd_features_add: the parcellation half of an experiment as graph nodes,
 * from image and atlas files to one feature matrix per atlas.
 *
 *   file <atlas> -> load -> resample onto the grid ──┐
 *   file <image> -> load ────────────────────────────┴-> parcellate -> stack_rows
 *
 * Loads are not stored by default: the image file is already on disk, and a
 * copy per participant would double the data in the cache. What is stored is
 * each participant-parcellation extraction (small) and the stacked matrices,
 * so a rerun never loads an image, adding an atlas loads each image once for
 * the new atlas only, and a changed image recomputes only its own
 * extractions and what is downstream of them. The resampled atlases depend
 * on the grid image's content (keys derive from content, never from the
 * header alone), so when the grid defaults to images[0], a change to that
 * image recomputes every extraction: give a separate grid file to avoid it.
 *
 * Images are loaded before the grid, so a grid path equal to an image's
 * (the default) reuses that image's load node and keeps its "load <id>"
 * label. File nodes are labelled with their path: a file that cannot be
 * read fails its node, and the message of the skipped load names it. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "models/models_int.h"
#include "nidag/neuro.h"

#define ND__LABEL_MAX 256

/* The load op with storing turned off: the same name and version, so the
 * same keys, and ND_OP_NO_CACHE. */
static nd_op nocache_load(void) {
  nd_op op = nd_op_nifti_load;
  op.flags |= ND_OP_NO_CACHE;
  return op;
}
static nd_op nd__load_nocache;
static pthread_once_t nd__load_once = PTHREAD_ONCE_INIT;
static void nd__load_init(void) { nd__load_nocache = nocache_load(); }

static int params_str(const char *name, const char *value, void **bytes, size_t *len) {
  nd_params *p = NULL;
  int rc = nd_params_new(&p);
  if (!rc && name) rc = nd_params_str(p, name, value);
  if (!rc) rc = nd_params_encode(p, bytes, len);
  nd_params_free(p);
  return rc;
}

typedef struct fb {
  nd_graph *g;
  const nd_features_spec *s;
  const nd_op *load;
  void *load_params, *parc_params;
  size_t load_len, parc_len;
} fb;

static int fb_fail(fb *b, int rc, const char *what) {
  return nd__merr(rc, "features: %s: %s", what, b->g ? nd_errmsg(b->g) : nd_strerror(rc));
}

/* A file node (labelled with its path) and its load, labelled "<what> <name>". */
static int add_load(fb *b, const char *path, const char *what, const char *name, int64_t *out) {
  char label[ND__LABEL_MAX];
  int64_t file;
  int rc = nd_graph_file(b->g, path, path, &file);
  if (rc) return fb_fail(b, rc, path);
  snprintf(label, sizeof label, "%s %s", what, name);
  rc = nd_graph_add(b->g, b->load, b->load_params, b->load_len, &file, 1, label, out);
  return rc ? fb_fail(b, rc, label) : 0;
}

static int add_atlas(fb *b, size_t a, int64_t grid, int64_t *out) {
  int64_t loaded, in[2];
  const char *name = b->s->atlas_names ? b->s->atlas_names[a] : b->s->atlases[a];
  int rc = add_load(b, b->s->atlases[a], "load atlas", name, &loaded);
  if (rc) return rc;
  char label[ND__LABEL_MAX];
  snprintf(label, sizeof label, "resample %s", name);
  in[0] = loaded;
  in[1] = grid;
  rc = nd_graph_add(b->g, &nd_op_resample, NULL, 0, in, 2, label, out);
  return rc ? fb_fail(b, rc, label) : 0;
}

static int check_spec(const nd_features_spec *s) {
  if (!s || !s->images || s->n == 0 || !s->atlases || s->natlas == 0)
    return nd__merr(ND_EINVAL, "features: no images or no atlases");
  for (size_t i = 0; i < s->n; i++)
    if (!s->images[i]) return nd__merr(ND_EINVAL, "features: image %zu has no path", i);
  for (size_t a = 0; a < s->natlas; a++)
    if (!s->atlases[a]) return nd__merr(ND_EINVAL, "features: atlas %zu has no path", a);
  for (size_t i = 0; s->ids && i < s->n; i++)
    if (!s->ids[i]) return nd__merr(ND_EINVAL, "features: image %zu has no id", i);
  for (size_t a = 0; s->atlas_names && a < s->natlas; a++)
    if (!s->atlas_names[a]) return nd__merr(ND_EINVAL, "features: atlas %zu has no name", a);
  return 0;
}

int nd_features_add(nd_graph *g, const nd_features_spec *s, int64_t *features, int64_t *loads,
                    int64_t *extractions) {
  if (!g || !features) return nd__merr(ND_EINVAL, "features: NULL argument");
  int rc = check_spec(s);
  if (rc) return rc;
  pthread_once(&nd__load_once, nd__load_init);
  fb b = {.g = g, .s = s, .load = s->cache_loads ? &nd_op_nifti_load : &nd__load_nocache};
  size_t n = s->n, na = s->natlas, parc_cells;
  int64_t *img = nd_calloc(n, sizeof *img), *atlas = nd_calloc(na, sizeof *atlas);
  int64_t *parc = NULL;
  if (nd__mul_size(n, na, &parc_cells)) parc = nd_calloc(parc_cells, sizeof *parc);
  if (!img || !atlas || !parc) rc = nd__merr(ND_ENOMEM, "features: out of memory");
  if (!rc) rc = params_str("dtype", "f32", &b.load_params, &b.load_len);
  if (!rc) rc = params_str("reduce", s->reduce ? s->reduce : "mean", &b.parc_params, &b.parc_len);
  for (size_t i = 0; !rc && i < n; i++)
    rc = add_load(&b, s->images[i], "load", s->ids ? s->ids[i] : s->images[i], &img[i]);
  int64_t grid = -1;
  if (!rc) rc = add_load(&b, s->grid ? s->grid : s->images[0], "load", "grid", &grid);
  for (size_t a = 0; !rc && a < na; a++) rc = add_atlas(&b, a, grid, &atlas[a]);
  for (size_t i = 0; !rc && i < n; i++) {
    const char *name = s->ids ? s->ids[i] : s->images[i];
    for (size_t a = 0; !rc && a < na; a++) {
      char label[2 * ND__LABEL_MAX];
      snprintf(label, sizeof label, "parcellate %s %s", name,
               s->atlas_names ? s->atlas_names[a] : s->atlases[a]);
      int64_t in[2] = {img[i], atlas[a]};
      rc = nd_graph_add(g, &nd_op_parcellate, b.parc_params, b.parc_len, in, 2, label,
                        &parc[a * n + i]);
      if (rc) rc = fb_fail(&b, rc, label);
    }
  }
  for (size_t a = 0; !rc && a < na; a++) {
    char label[ND__LABEL_MAX];
    snprintf(label, sizeof label, "features %s", s->atlas_names ? s->atlas_names[a] : s->atlases[a]);
    rc = nd_graph_add(g, &nd_op_stack_rows, NULL, 0, &parc[a * n], n, label, &features[a]);
    if (rc) rc = fb_fail(&b, rc, label);
  }
  if (!rc && loads) memcpy(loads, img, n * sizeof *img);
  if (!rc && extractions) memcpy(extractions, parc, parc_cells * sizeof *parc);
  nd_free(b.load_params);
  nd_free(b.parc_params);
  nd_free(img);
  nd_free(atlas);
  nd_free(parc);
  return rc;
}

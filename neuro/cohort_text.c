/* The synthetic cohort's text files: participants.tsv (values with %.17g,
 * so they read back to the same doubles), participants.json (the BIDS
 * sidecar describing the columns) and dataset_description.json (what was
 * generated and where the signal is), plus the growing string they are
 * built in. Their bytes depend only on (generator version, seed,
 * participants). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "neuro/cohort_int.h"

#define SB_MIN 256

void nd__sb_printf(nd__sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  char small[1];
  int n = vsnprintf(b->len < b->cap ? b->s + b->len : small,
                    b->len < b->cap ? b->cap - b->len : sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = true;
    return;
  }
  if (b->len + (size_t)n < b->cap) {
    b->len += (size_t)n;
    return;
  }
  size_t cap = b->cap ? b->cap : SB_MIN;
  while (cap <= b->len + (size_t)n) cap *= 2;
  char *s = nd_realloc(b->s, cap);
  if (!s) {
    b->oom = true;
    return;
  }
  b->s = s;
  b->cap = cap;
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static char *sb_finish(nd__sbuf *b) {
  if (b->oom || !b->s) {
    nd_free(b->s);
    return NULL;
  }
  return b->s;
}

/* ------------------------------------------------------ participants.tsv */

char *nd__cohort_tsv(const nd__cohort_sub *subs, size_t n) {
  nd__sbuf b = {0};
  nd__sb_printf(&b, "participant_id\tfamily_id");
  for (int t = 0; t < ND__COHORT_TARGETS; t++)
    nd__sb_printf(&b, "\t%s", nd__cohort_target_names[t]);
  nd__sb_printf(&b, "\n");
  for (size_t i = 0; i < n; i++) {
    nd__sb_printf(&b, "sub-%04zu\tfam-%04zu", subs[i].index + 1, subs[i].family + 1);
    for (int t = 0; t < ND__COHORT_TARGETS; t++) nd__sb_printf(&b, "\t%.17g", subs[i].target[t]);
    nd__sb_printf(&b, "\n");
  }
  return sb_finish(&b);
}

/* ------------------------------------------------------------- the JSON */

/* Target t's description (participants.json and dataset_description.json). */
static void target_description(int t, char *buf, size_t cap) {
  switch (t) {
    case 0:
      snprintf(buf, cap, "continuous, strong signal: %g L1 + %g L2 + %g e",
               ND__COHORT_SCORE_A_L1, ND__COHORT_SCORE_A_L2, ND__COHORT_SCORE_A_NOISE);
      break;
    case 1:
      snprintf(buf, cap, "continuous, moderate signal: %g L2 + %g L3 + %g e",
               ND__COHORT_SCORE_B_L2, ND__COHORT_SCORE_B_L3, ND__COHORT_SCORE_B_NOISE);
      break;
    case 2:
      snprintf(buf, cap, "continuous, pure noise: standard normal, independent of everything");
      break;
    case 3:
      snprintf(buf, cap, "binary: 1 when %g L3 + %g L1 + %g e > 0 (about half)",
               ND__COHORT_GROUP_L3, ND__COHORT_GROUP_L1, ND__COHORT_GROUP_NOISE);
      break;
    default:
      snprintf(buf, cap, "binary, pure noise: 1 with probability 1/2, independent of "
                         "everything");
      break;
  }
}

#define DESC_CAP 160

char *nd__cohort_description(uint64_t seed, const nd__cohort_sub *subs, size_t n) {
  nd__sbuf b = {0};
  size_t families = n ? subs[n - 1].family + 1 : 0;
  nd__sb_printf(&b,
                "{\n"
                "  \"Name\": \"nidag synthetic cohort\",\n"
                "  \"BIDSVersion\": \"1.9.0\",\n"
                "  \"DatasetType\": \"raw\",\n"
                "  \"GeneratedBy\": [{\"Name\": \"nidag cohort\", \"Description\": "
                "\"nd_cohort_generate, generator version %d\"}],\n"
                "  \"nidag_cohort\": {\n"
                "    \"generator_version\": %d,\n"
                "    \"seed\": %llu,\n"
                "    \"participants\": %zu,\n"
                "    \"families\": %zu,\n"
                "    \"maps\": \"sub-XXXX/anat/sub-XXXX_map.nii.gz: float32 on the grid of "
                "AICHAmc.nii.gz (2 mm MNI, 91 x 109 x 91); inside the brain mask (AICHAmc, aal, "
                "HarvardOxford-cort or JHU non-zero) %g + global + sum_k amplitude_k L_k [in "
                "latent k's regions] + smooth noise, 0 outside; values are multiples of "
                "2^-%d\",\n"
                "    \"global\": \"a whole-brain offset per participant, normal with sd %g, in "
                "no target\",\n"
                "    \"noise\": \"white noise smoothed by a separable binomial(8) kernel "
                "(FWHM %.2f voxels), sd %g per voxel; siblings share half of it\",\n"
                "    \"latents\": \"L1, L2, L3: standard normal; siblings (families of 1-3) "
                "share half their variance; e is each target's own standard normal noise, "
                "also half shared by siblings\",\n"
                "    \"planted\": [\n",
                ND_COHORT_VERSION, ND_COHORT_VERSION, (unsigned long long)seed, n, families,
                ND__COHORT_BASE, ND__COHORT_QUANT_BITS, ND__COHORT_GLOBAL_SD,
                ND__COHORT_SMOOTH_FWHM_VOX, ND__COHORT_NOISE_SD);
  for (int k = 0; k < ND__COHORT_LATENTS; k++) {
    const nd__cohort_plant *p = &nd__cohort_plants[k];
    nd__sb_printf(&b,
                  "      {\"latent\": \"L%d\", \"amplitude\": %g, \"atlas\": \"%s\", "
                  "\"labels\": [",
                  k + 1, p->amplitude, nd__cohort_atlas_files[p->atlas]);
    for (size_t r = 0; r < p->n; r++)
      nd__sb_printf(&b, "%s%lld", r ? ", " : "", (long long)p->labels[r]);
    nd__sb_printf(&b, "], \"regions\": [");
    for (size_t r = 0; r < p->n; r++) nd__sb_printf(&b, "%s\"%s\"", r ? ", " : "", p->names[r]);
    nd__sb_printf(&b, "]}%s\n", k + 1 < ND__COHORT_LATENTS ? "," : "");
  }
  nd__sb_printf(&b, "    ],\n    \"targets\": {\n");
  for (int t = 0; t < ND__COHORT_TARGETS; t++) {
    char d[DESC_CAP];
    target_description(t, d, sizeof d);
    nd__sb_printf(&b, "      \"%s\": \"%s\"%s\n", nd__cohort_target_names[t], d,
                  t + 1 < ND__COHORT_TARGETS ? "," : "");
  }
  nd__sb_printf(&b, "    }\n  }\n}\n");
  return sb_finish(&b);
}

char *nd__cohort_sidecar(void) {
  nd__sbuf b = {0};
  nd__sb_printf(&b, "{\n"
                    "  \"participant_id\": {\"Description\": \"sub-0001, sub-0002, ...\"},\n"
                    "  \"family_id\": {\"Description\": \"siblings share a family_id (families "
                    "of 1-3, numbered in order); keep a family in one fold\"},\n");
  for (int t = 0; t < ND__COHORT_TARGETS; t++) {
    char d[DESC_CAP];
    target_description(t, d, sizeof d);
    bool binary = t >= 3;
    nd__sb_printf(&b, "  \"%s\": {\"Description\": \"%s\"%s}%s\n",
                  nd__cohort_target_names[t], d,
                  binary ? ", \"Levels\": {\"0\": \"no\", \"1\": \"yes\"}" : "",
                  t + 1 < ND__COHORT_TARGETS ? "," : "");
  }
  nd__sb_printf(&b, "}\n");
  return sb_finish(&b);
}

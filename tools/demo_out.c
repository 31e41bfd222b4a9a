/* `nidag demo` output: the results table, the checksum, results.csv,
 * results.json and the strategies plot (a gnuplot script, rendered to SVG
 * when gnuplot is installed). Public API only. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "demo_int.h"

static const char *const ENS_NAMES[3] = {"vote", "grid", "stack"};

static const char *model_name(const char *const *atlases, size_t natlas, size_t m) {
  return m < natlas ? atlases[m] : ENS_NAMES[m - natlas];
}

static const char *metric_name(const demo_result *r) { return r->binary ? "roc_auc" : "r2"; }

void demo_print_table(const demo_result *r, size_t ntargets, const char *const *atlases,
                      size_t natlas) {
  printf("\n%-12s %-8s", "target", "metric");
  for (size_t m = 0; m < natlas + 3; m++) printf(" %15s", model_name(atlases, natlas, m));
  printf("\n");
  for (size_t t = 0; t < ntargets; t++) {
    printf("%-12s %-8s", r[t].name, r[t].binary ? "AUC" : "R2");
    for (size_t m = 0; m < natlas + 3; m++) {
      char cell[32];
      snprintf(cell, sizeof cell, "%.3f ± %.3f", r[t].mean[m], r[t].sd[m]);
      printf(" %16s", cell); /* "±" is two bytes */
    }
    printf("\n");
  }
  printf("(mean ± sd over %d outer folds; vote = mean of the atlases' predictions, grid = the "
         "atlas with the best inner-CV score, stack = a meta-model on the inner folds' "
         "predictions)\n\n",
         DEMO_FOLDS);
}

static void hash_double(nd_hasher *h, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  nd_hasher_u64(h, bits);
}

void demo_checksum(const demo_result *r, size_t ntargets, size_t natlas) {
  nd_hasher *h = NULL;
  if (nd_hasher_new(&h)) return;
  for (size_t t = 0; t < ntargets; t++) {
    nd_hasher_str(h, r[t].name);
    for (size_t m = 0; m < natlas + 3; m++) {
      hash_double(h, r[t].mean[m]);
      hash_double(h, r[t].sd[m]);
      for (int f = 0; f < DEMO_FOLDS; f++) hash_double(h, r[t].fold[m][f]);
    }
  }
  char hex[ND_HASH128_HEX_LEN + 1];
  nd_hash128_hex(nd_hasher_digest(h), hex);
  nd_hasher_free(h);
  printf("checksum %s\n", hex);
}

/* An output file built in memory and written only when its bytes differ
 * from the file already there, so an unchanged rerun rewrites nothing and
 * keeps every mtime (and the plot need not be rendered again). */
typedef struct out_file {
  char path[4096];
  char *buf;
  size_t len;
  FILE *f;
} out_file;

static FILE *open_out(const char *dir, const char *name, out_file *o) {
  snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
  o->buf = NULL;
  o->len = 0;
  o->f = open_memstream(&o->buf, &o->len);
  if (!o->f) fprintf(stderr, "nidag demo: out of memory for '%s'\n", o->path);
  return o->f;
}

static bool same_as_file(const char *path, const char *buf, size_t len) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  bool same = true;
  char chunk[65536];
  size_t off = 0, n;
  while (same && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    same = off + n <= len && memcmp(chunk, buf + off, n) == 0;
    off += n;
  }
  same = same && !ferror(f) && off == len;
  fclose(f);
  return same;
}

/* -1 on a write error (said why), 0 when the file already held these bytes,
 * 1 when it was written. */
static int close_out(out_file *o) {
  bool bad = ferror(o->f) != 0;
  bad |= fclose(o->f) != 0;
  int rc = bad ? -1 : 0, err = bad ? ENOMEM : 0;
  if (!bad && !same_as_file(o->path, o->buf, o->len)) {
    FILE *f = fopen(o->path, "wb");
    rc = f && fwrite(o->buf, 1, o->len, f) == o->len ? 1 : -1;
    if (rc < 0) err = errno;
    if (f && fclose(f) != 0 && rc > 0) {
      rc = -1;
      err = errno;
    }
  }
  if (rc < 0) fprintf(stderr, "nidag demo: writing '%s' failed: %s\n", o->path, strerror(err));
  free(o->buf);
  return rc;
}

static int write_csv(const char *dir, const demo_result *r, size_t ntargets,
                     const char *const *atlases, size_t natlas) {
  out_file o;
  FILE *f = open_out(dir, "results.csv", &o);
  if (!f) return -1;
  fprintf(f, "target,metric,model,kind,fold,value\n");
  for (size_t t = 0; t < ntargets; t++)
    for (size_t m = 0; m < natlas + 3; m++) {
      const char *kind = m < natlas ? "atlas" : "ensemble";
      const char *name = model_name(atlases, natlas, m);
      for (int k = 0; k < DEMO_FOLDS; k++)
        fprintf(f, "%s,%s,%s,%s,%d,%.17g\n", r[t].name, metric_name(&r[t]), name, kind, k,
                r[t].fold[m][k]);
      fprintf(f, "%s,%s,%s,%s,mean,%.17g\n", r[t].name, metric_name(&r[t]), name, kind,
              r[t].mean[m]);
      fprintf(f, "%s,%s,%s,%s,sd,%.17g\n", r[t].name, metric_name(&r[t]), name, kind, r[t].sd[m]);
    }
  return close_out(&o) < 0 ? -1 : 0;
}

/* A JSON string (names here are plain identifiers, but escape anyway). */
static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", (unsigned char)*s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.17g", v);
  else fputs("null", f);
}

static int write_json(const char *dir, const demo_result *r, size_t ntargets,
                      const char *const *atlases, size_t natlas, size_t participants) {
  out_file o;
  FILE *f = open_out(dir, "results.json", &o);
  if (!f) return -1;
  fprintf(f, "{\n  \"participants\": %zu,\n  \"outer_folds\": %d,\n  \"atlases\": [", participants,
          DEMO_FOLDS);
  for (size_t a = 0; a < natlas; a++) {
    fputs(a ? ", " : "", f);
    json_str(f, atlases[a]);
  }
  fputs("],\n  \"targets\": [\n", f);
  for (size_t t = 0; t < ntargets; t++) {
    fputs("    {\"name\": ", f);
    json_str(f, r[t].name);
    fprintf(f, ", \"metric\": \"%s\", \"model\": \"%s\", \"results\": {\n", metric_name(&r[t]),
            r[t].binary ? "logistic" : "ridge");
    for (size_t m = 0; m < natlas + 3; m++) {
      fputs("      ", f);
      json_str(f, model_name(atlases, natlas, m));
      fputs(": {\"mean\": ", f);
      json_num(f, r[t].mean[m]);
      fputs(", \"sd\": ", f);
      json_num(f, r[t].sd[m]);
      fputs(", \"folds\": [", f);
      for (int k = 0; k < DEMO_FOLDS; k++) {
        fputs(k ? ", " : "", f);
        json_num(f, r[t].fold[m][k]);
      }
      fprintf(f, "]}%s\n", m + 1 < natlas + 3 ? "," : "");
    }
    fprintf(f, "    }}%s\n", t + 1 < ntargets ? "," : "");
  }
  fputs("  ]\n}\n", f);
  return close_out(&o) < 0 ? -1 : 0;
}

/* strategies.dat (one block per target) and strategies.gp; then gnuplot. */
/* 1 when the SVG was rendered, 0 when not (said why), -1 on a write error. */
static int write_plot(const char *dir, const demo_result *r, size_t ntargets,
                      const char *const *atlases, size_t natlas) {
  out_file o;
  FILE *f = open_out(dir, "strategies.dat", &o);
  if (!f) return -1;
  for (size_t t = 0; t < ntargets; t++) {
    fprintf(f, "# %s (%s)\n", r[t].name, r[t].binary ? "ROC AUC" : "R2");
    for (size_t m = 0; m < natlas + 3; m++)
      fprintf(f, "%zu %s %.6f %.6f\n", m, model_name(atlases, natlas, m), r[t].mean[m], r[t].sd[m]);
    fprintf(f, "\n\n");
  }
  int changed = close_out(&o);
  if (changed < 0) return -1;
  f = open_out(dir, "strategies.gp", &o);
  if (!f) return -1;
  size_t cols = ntargets < 3 ? ntargets : 3, rows = (ntargets + cols - 1) / cols;
  fprintf(f,
          "# gnuplot script written by `nidag demo`: gnuplot strategies.gp\n"
          "set terminal svg size %zu,%zu dynamic font 'sans,11' noenhanced\n"
          "set output 'strategies.svg'\n"
          "set style fill solid 0.7 border -1\n"
          "set boxwidth 0.7\n"
          "set xtics rotate by -45 nomirror\n"
          "set grid ytics\n"
          "set key off\n"
          "set multiplot layout %zu,%zu title 'nidag demo: single atlases and ensembles "
          "(mean ± sd over %d folds)'\n",
          420 * cols, 340 * rows + 40, rows, cols, DEMO_FOLDS);
  for (size_t t = 0; t < ntargets; t++) {
    fprintf(f, "set title '%s (%s)'\n", r[t].name, r[t].binary ? "ROC AUC" : "R²");
    if (r[t].binary) fprintf(f, "set yrange [0.3:1]\n");
    else fprintf(f, "set yrange [*:1]\n");
    fprintf(f,
            "plot 'strategies.dat' index %zu using 1:3:($1 < %zu ? 0x4477aa : 0xcc6677):xtic(2) "
            "with boxes lc rgb variable, '' index %zu using 1:3:4 with yerrorbars lc rgb 'black' "
            "pt 0\n",
            t, natlas, t);
  }
  fprintf(f, "unset multiplot\n");
  int gp = close_out(&o);
  if (gp < 0) return -1;
  /* the same script over the same data: the plot there is this plot */
  char svg[4200];
  snprintf(svg, sizeof svg, "%s/strategies.svg", dir);
  if (changed == 0 && gp == 0 && access(svg, R_OK) == 0) return 1;
  /* render: gnuplot is optional (README); run it in dir */
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot strategies.gp 2>/dev/null", dir);
  if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
    fprintf(stderr, "nidag demo: gnuplot is not installed: wrote %s/strategies.gp but no plot\n",
            dir);
    return 0;
  }
  int st = system(cmd);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    /* gnuplot may have left a partial SVG; the check above would take it
     * for this plot on an unchanged rerun */
    unlink(svg);
    fprintf(stderr, "nidag demo: gnuplot failed on %s/strategies.gp\n", dir);
    return 0;
  }
  return 1;
}

int demo_write_outputs(const char *dir, const demo_result *r, size_t ntargets,
                       const char *const *atlases, size_t natlas, size_t participants) {
  if (strchr(dir, '\'')) {
    fprintf(stderr, "nidag demo: --out must not contain a quote\n");
    return -1;
  }
  int rc = write_csv(dir, r, ntargets, atlases, natlas);
  rc |= write_json(dir, r, ntargets, atlases, natlas, participants);
  int plot = write_plot(dir, r, ntargets, atlases, natlas);
  if (rc != 0 || plot < 0) return -1;
  printf("wrote %s/results.csv, %s/results.json and %s/%s\n", dir, dir, dir,
         plot ? "strategies.svg" : "strategies.gp (no plot)");
  return 0;
}

/* nd_cohort_generate: writes the synthetic cohort (content in
 * cohort_synth.c, text files in cohort_text.c) into a BIDS-like directory,
 * once.
 *
 * How "once" works: the manifest dir/.nidag-cohort.tsv lists, per file it
 * wrote, the file's key (XXH3-128 of everything its content depends on:
 * the generator version, seed, participant index, the atlas files' bytes,
 * the gzip level) and the digest of its bytes. A map whose manifest entry
 * has the key this call would use, and whose file still hashes to the
 * recorded digest, is left alone. Anything else (missing, corrupted, other
 * options) is regenerated, participant by participant. The three text files
 * are small: they are generated every time and rewritten only when their
 * bytes differ. Entries for maps outside the current cohort (a larger
 * earlier one, another seed) stay in the manifest as long as their files
 * exist, so going back to those options finds them again.
 *
 * Every file is written to a temporary name and renamed over its target, so
 * an interrupted run leaves whole files (and a manifest that may lack the
 * newest ones: they are regenerated next time).
 *
 * Participants are checked, then generated, in parallel (one task per
 * participant, which writes that participant's file). A failing task keeps
 * its message; the lowest failing index is reported. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "neuro/cohort_int.h"

#define MANIFEST ".nidag-cohort.tsv"
#define MANIFEST_HEADER "path\tkey\tdigest"
#define DIR_MODE 0777
#define PATH_CAP 4096
#define REL_CAP 96 /* "sub-<id>/anat/sub-<id>_map.nii.gz" */
#define TEXT_FILES 3

/* ---------------------------------------------------------------- files */

/* dir/rel into out[PATH_CAP]. */
static int join(const char *dir, const char *rel, char *out) {
  int n = snprintf(out, PATH_CAP, "%s/%s", dir, rel);
  if (n < 0 || n >= PATH_CAP) return nd__nerr(ND_EINVAL, "%s: path too long", dir);
  return ND_OK;
}

/* mkdir -p of path's first `len` characters. */
static int mkdirs(const char *path, size_t len) {
  char buf[PATH_CAP];
  if (len >= sizeof buf) return nd__nerr(ND_EINVAL, "%s: path too long", path);
  memcpy(buf, path, len);
  buf[len] = '\0';
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, DIR_MODE) != 0 && errno != EEXIST)
      return nd__nerr(ND_EIO, "%s: cannot create the directory: %s", buf, strerror(errno));
    buf[i] = c;
  }
  return ND_OK;
}

int nd__read_file(const char *path, char **data, size_t *len) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return ND_ENOTFOUND;
    return nd__nerr(ND_EIO, "%s: cannot open: %s", path, strerror(errno));
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = nd_malloc(cap + 1);
  int rc = buf ? ND_OK : ND_ENOMEM;
  while (rc == ND_OK) {
    if (n == cap) {
      char *b = cap <= SIZE_MAX / 4 ? nd_realloc(buf, cap * 2 + 1) : NULL;
      if (!b) {
        rc = ND_ENOMEM;
        break;
      }
      buf = b;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) rc = nd__nerr(ND_EIO, "%s: read failed", path);
      break;
    }
  }
  fclose(f);
  if (rc == ND_ENOMEM) rc = nd__nerr(ND_ENOMEM, "%s: out of memory", path);
  if (rc) {
    nd_free(buf);
    return rc;
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return ND_OK;
}

/* Digest of a file's bytes; ND_ENOTFOUND when it does not exist. */
static int file_digest(const char *path, nd_hash128 *out) {
  char *data;
  size_t len;
  int rc = nd__read_file(path, &data, &len);
  if (rc == ND_OK) *out = nd_hash128_bytes(data, len);
  nd_free(data);
  return rc;
}

/* The same digest through a cache's stat memo: an unchanged file is only
 * stat'ed. A failure to read it is treated like a changed file (the map is
 * regenerated), as file_digest's would be. */
static int memo_digest(nd_cache *memo, const char *path, nd_hash128 *out) {
  struct stat st;
  if (stat(path, &st) != 0) return ND_ENOTFOUND;
  return nd_cache_file_digest(memo, path, out, NULL) == ND_OK ? ND_OK : ND_ENOTFOUND;
}

/* Write data to a temporary file next to path and rename it over path. */
static int write_atomic(const char *path, const void *data, size_t len) {
  char tmp[PATH_CAP + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) return nd__nerr(ND_EIO, "%s: cannot create: %s", path, strerror(errno));
  (void)fchmod(fd, S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);
  const char *p = data;
  size_t left = len;
  int rc = ND_OK;
  while (left > 0 && rc == ND_OK) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      rc = nd__nerr(ND_EIO, "%s: write failed: %s", path, w < 0 ? strerror(errno) : "no space");
    else {
      p += w;
      left -= (size_t)w;
    }
  }
  if (close(fd) != 0 && rc == ND_OK)
    rc = nd__nerr(ND_EIO, "%s: write failed: %s", path, strerror(errno));
  if (rc == ND_OK && rename(tmp, path) != 0)
    rc = nd__nerr(ND_EIO, "%s: cannot rename the written file: %s", path, strerror(errno));
  if (rc) unlink(tmp);
  return rc;
}

/* Write data to path unless the file already holds exactly these bytes;
 * *wrote (may be NULL) says which. */
static int write_if_changed(const char *path, const char *data, size_t len, bool *wrote) {
  char *old;
  size_t olen;
  int rc = nd__read_file(path, &old, &olen);
  bool same = rc == ND_OK && olen == len && memcmp(old, data, len) == 0;
  nd_free(old);
  if (rc != ND_OK && rc != ND_ENOTFOUND) return rc;
  if (wrote) *wrote = !same;
  return same ? ND_OK : write_atomic(path, data, len);
}

/* ------------------------------------------------------------- manifest */

typedef struct entry {
  char *path; /* relative to the cohort directory */
  nd_hash128 key, digest;
} entry;

typedef struct manifest {
  entry *e;
  size_t n, cap;
} manifest;

static void manifest_clear(manifest *m) {
  for (size_t i = 0; i < m->n; i++) nd_free(m->e[i].path);
  nd_free(m->e);
  memset(m, 0, sizeof *m);
}

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const entry *)a)->path, ((const entry *)b)->path);
}

static void manifest_sort(manifest *m) {
  if (m->n > 1) qsort(m->e, m->n, sizeof *m->e, entry_cmp);
}

/* The entry of path in a sorted manifest, or NULL. */
static const entry *manifest_find(const manifest *m, const char *path) {
  entry key = {.path = (char *)path};
  return m->n ? bsearch(&key, m->e, m->n, sizeof *m->e, entry_cmp) : NULL;
}

static int manifest_add(manifest *m, const char *path, nd_hash128 key, nd_hash128 digest) {
  if (nd__grow((void **)&m->e, &m->cap, m->n + 1, sizeof *m->e) != ND_OK)
    return nd__nerr(ND_ENOMEM, "cohort: out of memory for the manifest");
  char *p = nd_strdup(path);
  if (!p) return nd__nerr(ND_ENOMEM, "cohort: out of memory for the manifest");
  m->e[m->n++] = (entry){p, key, digest};
  return ND_OK;
}

/* Parse one "path<TAB>key<TAB>digest" line in place; false if malformed. */
static bool parse_entry(char *line, char **path, nd_hash128 *key, nd_hash128 *digest) {
  char *t1 = strchr(line, '\t');
  char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
  if (!t2 || t1 == line || strchr(t2 + 1, '\t')) return false;
  *t1 = *t2 = '\0';
  *path = line;
  return nd_hash128_parse(t1 + 1, key) == ND_OK && nd_hash128_parse(t2 + 1, digest) == ND_OK;
}

/* Read the manifest, sorted by path. A missing or malformed one (lines that
 * do not parse are dropped) only means more regeneration, never an error. */
static int manifest_read(const char *dir, manifest *m) {
  char path[PATH_CAP], *data;
  size_t len;
  int rc = join(dir, MANIFEST, path);
  if (rc) return rc;
  rc = nd__read_file(path, &data, &len);
  if (rc == ND_ENOTFOUND) return ND_OK;
  if (rc) return rc;
  bool header = false;
  for (char *line = data, *next; line && rc == ND_OK; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    char *p;
    nd_hash128 key, digest;
    if (!header) header = !strcmp(line, MANIFEST_HEADER);
    else if (line[0] != '#' && parse_entry(line, &p, &key, &digest))
      rc = manifest_add(m, p, key, digest);
  }
  nd_free(data);
  manifest_sort(m);
  return rc;
}

/* Write the manifest (sorted by path) when its bytes change. */
static int manifest_write(const char *dir, manifest *m, const char *comment) {
  manifest_sort(m);
  nd__sbuf b = {0};
  nd__sb_printf(&b, "%s" MANIFEST_HEADER "\n", comment);
  for (size_t i = 0; i < m->n; i++) {
    char k[ND_HASH128_HEX_LEN + 1], d[ND_HASH128_HEX_LEN + 1];
    nd_hash128_hex(m->e[i].key, k);
    nd_hash128_hex(m->e[i].digest, d);
    nd__sb_printf(&b, "%s\t%s\t%s\n", m->e[i].path, k, d);
  }
  char path[PATH_CAP];
  int rc = b.oom ? nd__nerr(ND_ENOMEM, "cohort: out of memory for the manifest")
                 : join(dir, MANIFEST, path);
  if (rc == ND_OK) rc = write_if_changed(path, b.s, b.len, NULL);
  nd_free(b.s);
  return rc;
}

/* ------------------------------------------------------------------ jobs */

typedef struct job {
  char rel[REL_CAP];
  nd_hash128 key, digest;
  bool need;
  int rc;
  char msg[ND__ERRMSG_MAX];
} job;

typedef struct gen_ctx {
  const char *dir;
  uint64_t seed;
  int level;
  nd_pool *pool;
  const nd__cohort_sub *subs;
  job *jobs;
  const manifest *old;
  nd_cache *memo; /* file-digest memo (nd_cohort_opts.memo), or NULL */
  const nd__cohort_space *space;
  size_t *todo; /* indices of the jobs to generate */
} gen_ctx;

static int job_fail(job *j, int rc) {
  j->rc = rc;
  snprintf(j->msg, sizeof j->msg, "%s", nd_neuro_errmsg());
  return ND_OK; /* keep the loop going: every participant gets its chance */
}

/* Participants [lo, hi): is the file there, as the manifest recorded it? */
static int check_jobs(void *arg, size_t lo, size_t hi) {
  gen_ctx *c = arg;
  for (size_t i = lo; i < hi; i++) {
    job *j = &c->jobs[i];
    const entry *e = manifest_find(c->old, j->rel);
    j->need = true;
    if (!e || !nd_hash128_eq(e->key, j->key)) continue;
    char path[PATH_CAP];
    nd_hash128 d;
    int rc = join(c->dir, j->rel, path);
    if (rc == ND_OK) rc = c->memo ? memo_digest(c->memo, path, &d) : file_digest(path, &d);
    if (rc == ND_OK) {
      j->need = !nd_hash128_eq(d, e->digest);
      j->digest = d;
    } else if (rc != ND_ENOTFOUND) {
      job_fail(j, rc);
    }
  }
  return ND_OK;
}

/* Jobs todo[lo, hi): build the map, write it, hash what was written. */
static int make_jobs(void *arg, size_t lo, size_t hi) {
  gen_ctx *c = arg;
  for (size_t t = lo; t < hi; t++) {
    size_t i = c->todo[t];
    job *j = &c->jobs[i];
    char path[PATH_CAP];
    nd_array *map = NULL;
    int rc = join(c->dir, j->rel, path);
    if (rc == ND_OK) rc = mkdirs(path, (size_t)(strrchr(path, '/') - path));
    if (rc == ND_OK) rc = nd__cohort_map(c->space, c->seed, &c->subs[i], c->pool, &map);
    if (rc == ND_OK) rc = nd_nifti_save_gz(path, map, c->level);
    nd_array_release(map);
    if (rc == ND_OK) rc = file_digest(path, &j->digest);
    if (rc == ND_ENOTFOUND) rc = nd__nerr(ND_EIO, "%s: vanished after writing", path);
    if (rc) job_fail(j, rc);
  }
  return ND_OK;
}

/* The first failed job's error, re-raised on the calling thread. */
static int first_failure(const job *jobs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (jobs[i].rc) return nd__nerr(jobs[i].rc, "%s", jobs[i].msg);
  return ND_OK;
}

/* ------------------------------------------------------------------ keys */

static int atlas_digest(const char *templates, nd_hash128 *out) {
  nd_hasher *h = NULL;
  if (nd_hasher_new(&h)) return nd__nerr(ND_ENOMEM, "cohort: out of memory");
  int rc = ND_OK;
  for (size_t k = 0; k < ND__COHORT_ATLASES && rc == ND_OK; k++) {
    char path[PATH_CAP], *data = NULL;
    size_t len = 0;
    rc = join(templates, nd__cohort_atlas_files[k], path);
    if (rc == ND_OK) rc = nd__read_file(path, &data, &len);
    if (rc == ND_ENOTFOUND)
      rc = nd__nerr(ND_ENOTFOUND, "%s: no such atlas (the cohort needs the MRIcron "
                                  "templates: AICHAmc, aal, HarvardOxford-cort, JHU)", path);
    if (rc == ND_OK) nd_hasher_lp(h, data, len);
    nd_free(data);
  }
  *out = nd_hasher_digest(h);
  nd_hasher_free(h);
  return rc;
}

static nd_hash128 map_key(nd_hash128 atlases, uint64_t seed, size_t index, int level) {
  uint8_t buf[64];
  size_t n = 0;
  const uint64_t fields[] = {ND_COHORT_VERSION, seed, index, (uint64_t)level, atlases.lo,
                             atlases.hi};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++, n += 8)
    nd__le_put(buf + n, fields[i], 8);
  return nd_hash128_seeded(buf, n, 0x6d6170 /* "map" */);
}

/* ---------------------------------------------------------------- driver */

typedef struct run {
  const char *dir;
  nd_cohort_opts o;
  nd__cohort_sub *subs;
  job *jobs;
  manifest old, next;
  nd_cohort_report rep;
} run;

static int check_opts(const char *dir, const nd_cohort_opts *in, nd_cohort_opts *o) {
  if (!dir || !*dir) return nd__nerr(ND_EINVAL, "nd_cohort_generate: no directory");
  if (in) *o = *in;
  else memset(o, 0, sizeof *o);
  if (!o->participants) o->participants = ND_COHORT_DEFAULT_PARTICIPANTS;
  if (!o->seed) o->seed = ND_COHORT_DEFAULT_SEED;
  if (!o->templates) o->templates = ND_COHORT_DEFAULT_TEMPLATES;
  if (!o->gz_level) o->gz_level = ND_COHORT_DEFAULT_GZ_LEVEL;
  if (o->participants > ND_COHORT_MAX_PARTICIPANTS)
    return nd__nerr(ND_EINVAL, "%s: %zu participants; at most %d", dir, o->participants,
                    ND_COHORT_MAX_PARTICIPANTS);
  if (o->gz_level < 1 || o->gz_level > 9)
    return nd__nerr(ND_EINVAL, "%s: gzip level %d is outside 1..9", dir, o->gz_level);
  return ND_OK;
}

/* The maps: check them all, generate those that need it. */
static int do_maps(run *r, nd_hash128 atlases) {
  size_t n = r->o.participants;
  for (size_t i = 0; i < n; i++) {
    snprintf(r->jobs[i].rel, REL_CAP, "sub-%04zu/anat/sub-%04zu_map.nii.gz", i + 1, i + 1);
    r->jobs[i].key = map_key(atlases, r->o.seed, i, r->o.gz_level);
  }
  gen_ctx c = {.dir = r->dir, .seed = r->o.seed, .level = r->o.gz_level, .pool = r->o.pool,
               .subs = r->subs, .jobs = r->jobs, .old = &r->old, .memo = r->o.memo};
  int rc = nd_parallel_for(r->o.pool, 0, n, ND_DYNAMIC, 1, check_jobs, &c);
  if (rc == ND_OK) rc = first_failure(r->jobs, n);
  if (rc) return rc;
  size_t ntodo = 0;
  for (size_t i = 0; i < n; i++) ntodo += r->jobs[i].need;
  if (ntodo > 0) {
    nd__cohort_space space;
    c.todo = nd_malloc(ntodo * sizeof *c.todo);
    if (!c.todo) return nd__nerr(ND_ENOMEM, "cohort: out of memory");
    for (size_t i = 0, t = 0; i < n; i++)
      if (r->jobs[i].need) c.todo[t++] = i;
    rc = nd__cohort_space_load(r->o.templates, &space);
    if (rc == ND_OK) {
      c.space = &space;
      rc = nd_parallel_for(r->o.pool, 0, ntodo, ND_DYNAMIC, 1, make_jobs, &c);
      nd__cohort_space_free(&space);
      if (rc) /* the loop itself failed: no job's map can be trusted */
        for (size_t t = 0; t < ntodo; t++) r->jobs[c.todo[t]].rc = rc;
    }
    nd_free(c.todo);
    if (rc) return rc;
  }
  /* Every map that is in place goes into the manifest, even when others
   * failed: the next call then redoes only the failed ones. */
  for (size_t i = 0; i < n && rc == ND_OK; i++) {
    job *j = &r->jobs[i];
    if (j->rc) continue;
    if (j->need) r->rep.written++;
    else r->rep.skipped++;
    rc = manifest_add(&r->next, j->rel, j->key, j->digest);
  }
  return rc == ND_OK ? first_failure(r->jobs, n) : rc;
}

/* The text files: rewritten when their bytes differ. */
static int do_texts(run *r) {
  char *text[TEXT_FILES] = {nd__cohort_tsv(r->subs, r->o.participants),
                            nd__cohort_description(r->o.seed, r->subs, r->o.participants),
                            nd__cohort_sidecar()};
  static const char *const names[TEXT_FILES] = {"participants.tsv", "dataset_description.json",
                                                "participants.json"};
  nd_hash128 key = map_key((nd_hash128){0, 0}, r->o.seed, r->o.participants, 0);
  int rc = ND_OK;
  for (int t = 0; t < TEXT_FILES && rc == ND_OK; t++) {
    char path[PATH_CAP];
    bool wrote = false;
    if (!text[t]) rc = nd__nerr(ND_ENOMEM, "cohort: out of memory for %s", names[t]);
    if (rc == ND_OK) rc = join(r->dir, names[t], path);
    if (rc == ND_OK) rc = write_if_changed(path, text[t], strlen(text[t]), &wrote);
    if (rc == ND_OK) {
      if (wrote) r->rep.written++;
      else r->rep.skipped++;
      rc = manifest_add(&r->next, names[t], key, nd_hash128_bytes(text[t], strlen(text[t])));
    }
  }
  for (int t = 0; t < TEXT_FILES; t++) nd_free(text[t]);
  return rc;
}

/* Keep the old entries of maps this cohort does not list, if they exist. */
static int keep_others(run *r) {
  int rc = ND_OK;
  size_t listed = r->next.n; /* the current cohort's entries, sorted below */
  manifest_sort(&r->next);
  for (size_t i = 0; i < r->old.n && rc == ND_OK; i++) {
    const entry *e = &r->old.e[i];
    char path[PATH_CAP];
    struct stat st;
    manifest cur = {r->next.e, listed, listed};
    if (manifest_find(&cur, e->path) || strstr(e->path, "..") || e->path[0] == '/' ||
        (i > 0 && !strcmp(e->path, r->old.e[i - 1].path)))
      continue;
    if (join(r->dir, e->path, path) == ND_OK && stat(path, &st) == 0)
      rc = manifest_add(&r->next, e->path, e->key, e->digest);
  }
  return rc;
}

/* The manifest, after the rest: written after a failed map too (with what
 * is in place), without hiding that failure's message. */
static int finish(run *r, int rc) {
  char first[ND__ERRMSG_MAX];
  snprintf(first, sizeof first, "%s", nd_neuro_errmsg());
  char comment[256];
  snprintf(comment, sizeof comment,
           "# nidag synthetic cohort (nd_cohort_generate), generator version %d; last "
           "run: seed %llu, %zu participants, gzip level %d\n",
           ND_COHORT_VERSION, (unsigned long long)r->o.seed, r->o.participants,
           r->o.gz_level);
  int mrc = keep_others(r);
  if (mrc == ND_OK) mrc = manifest_write(r->dir, &r->next, comment);
  if (rc == ND_OK) return mrc;
  nd__nerr(rc, "%s", first);
  return rc;
}

static int generate(run *r) {
  nd_hash128 atlases;
  size_t n = r->o.participants;
  int rc = mkdirs(r->dir, strlen(r->dir));
  if (rc == ND_OK) rc = atlas_digest(r->o.templates, &atlases);
  if (rc == ND_OK) rc = manifest_read(r->dir, &r->old);
  if (rc == ND_OK) {
    r->subs = nd_calloc(n, sizeof *r->subs);
    r->jobs = nd_calloc(n, sizeof *r->jobs);
    if (!r->subs || !r->jobs) rc = nd__nerr(ND_ENOMEM, "cohort: out of memory");
  }
  if (rc) return rc;
  nd__cohort_subjects(r->o.seed, n, r->subs);
  rc = do_maps(r, atlases);
  if (rc == ND_OK) rc = do_texts(r);
  return finish(r, rc);
}

int nd_cohort_generate(const char *dir, const nd_cohort_opts *o, nd_cohort_report *rep) {
  nd__nerr_clear();
  uint64_t t0 = nd__now_ns();
  run r = {.dir = dir};
  int rc = check_opts(dir, o, &r.o);
  if (rc == ND_OK) rc = generate(&r);
  r.rep.seconds = (double)(nd__now_ns() - t0) / (double)ND__NS_PER_S;
  if (rep) *rep = r.rep;
  manifest_clear(&r.old);
  manifest_clear(&r.next);
  nd_free(r.subs);
  nd_free(r.jobs);
  return rc;
}

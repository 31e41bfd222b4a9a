/* nd_participants_read: a BIDS participants.tsv into ids, families and a
 * matrix of numeric columns.
 *
 * The file is read whole and cut in place: lines at '\n' (a trailing '\r'
 * dropped, blank lines skipped), fields at '\t'. Every row must have the
 * header's number of fields. A column other than participant_id and
 * family_id is a target when each of its cells is a number (strtod over the
 * whole cell), "n/a" or empty (both NaN); any other cell makes the whole
 * column non-numeric and it is left out, since BIDS files carry columns
 * such as sex or handedness that a model cannot take as they are. Duplicate
 * ids are found by sorting (id, row), so the error names the first repeated
 * id in file order, with both lines. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "neuro/cohort_int.h"

#define ID_COLUMN "participant_id"
#define FAMILY_COLUMN "family_id"
#define NA_CELL "n/a"
#define UTF8_BOM "\xEF\xBB\xBF"

typedef struct table {
  const char *path;
  char **cells;   /* nrows x ncols, pointing into the file's buffer */
  size_t *line;   /* nrows + 1: the header's line, then each row's */
  size_t nrows, ncols, cap, lcap;
} table;

void nd_participants_free(nd_participants *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) {
    if (p->id) nd_free(p->id[i]);
    if (p->family) nd_free(p->family[i]);
  }
  for (size_t t = 0; t < p->ntargets; t++)
    if (p->target_name) nd_free(p->target_name[t]);
  nd_free(p->id);
  nd_free(p->family);
  nd_free(p->target_name);
  nd_free(p->targets);
  nd_free(p);
}

/* ---------------------------------------------------------------- split */

static size_t count_fields(const char *s) {
  size_t n = 1;
  for (; *s; s++) n += *s == '\t';
  return n;
}

/* Append the fields of one line (cut in place) as a row. */
static int add_row(table *t, char *s, size_t lineno) {
  size_t need;
  if (!nd__mul_size(t->nrows + 2, t->ncols, &need) ||
      nd__grow((void **)&t->cells, &t->cap, need, sizeof *t->cells) != ND_OK)
    return nd__nerr(ND_ENOMEM, "%s: out of memory", t->path);
  if (nd__grow((void **)&t->line, &t->lcap, t->nrows + 1, sizeof *t->line) != ND_OK)
    return nd__nerr(ND_ENOMEM, "%s: out of memory", t->path);
  char **row = t->cells + t->nrows * t->ncols;
  for (size_t c = 0; c < t->ncols; c++) {
    row[c] = s;
    char *tab = strchr(s, '\t');
    if (tab) {
      *tab = '\0';
      s = tab + 1;
    } else {
      s += strlen(s);
    }
  }
  t->line[t->nrows++] = lineno;
  return ND_OK;
}

/* Cut the buffer into the table; row 0 is the header. */
static int split(table *t, char *buf) {
  if (!strncmp(buf, UTF8_BOM, 3)) buf += 3;
  size_t lineno = 0;
  for (char *s = buf, *next; s; s = next) {
    lineno++;
    next = strchr(s, '\n');
    if (next) *next++ = '\0';
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '\r') s[--len] = '\0';
    if (len == 0) continue;
    size_t nf = count_fields(s);
    if (t->nrows == 0) t->ncols = nf;
    else if (nf != t->ncols)
      return nd__nerr(ND_EFORMAT, "%s:%zu: %zu fields, but the header has %zu", t->path, lineno,
                      nf, t->ncols);
    int rc = add_row(t, s, lineno);
    if (rc) return rc;
  }
  if (t->nrows == 0)
    return nd__nerr(ND_EFORMAT, "%s: empty file (expected a header row with %s)", t->path,
                    ID_COLUMN);
  return ND_OK;
}

/* --------------------------------------------------------------- checks */

static const char *cell(const table *t, size_t row, size_t col) {
  return t->cells[row * t->ncols + col];
}

/* The header: distinct non-empty names, participant_id present. */
static int check_header(const table *t, size_t *id_col, size_t *fam_col) {
  *id_col = *fam_col = SIZE_MAX;
  for (size_t c = 0; c < t->ncols; c++) {
    const char *name = cell(t, 0, c);
    if (!*name)
      return nd__nerr(ND_EFORMAT, "%s:%zu: column %zu has no name", t->path, t->line[0], c + 1);
    for (size_t d = 0; d < c; d++)
      if (!strcmp(name, cell(t, 0, d)))
        return nd__nerr(ND_EFORMAT, "%s:%zu: column '%s' appears twice", t->path, t->line[0],
                        name);
    if (!strcmp(name, ID_COLUMN)) *id_col = c;
    if (!strcmp(name, FAMILY_COLUMN)) *fam_col = c;
  }
  if (*id_col == SIZE_MAX)
    return nd__nerr(ND_EFORMAT, "%s:%zu: no %s column", t->path, t->line[0], ID_COLUMN);
  return ND_OK;
}

typedef struct id_ref {
  const char *id;
  size_t row;
} id_ref;

static int id_ref_cmp(const void *a, const void *b) {
  const id_ref *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->row > y->row) - (x->row < y->row);
}

/* Every id non-empty and unique. */
static int check_ids(const table *t, size_t id_col) {
  size_t n = t->nrows - 1;
  for (size_t r = 1; r <= n; r++)
    if (!*cell(t, r, id_col))
      return nd__nerr(ND_EFORMAT, "%s:%zu: column '%s': empty value", t->path, t->line[r],
                      ID_COLUMN);
  if (n < 2) return ND_OK;
  id_ref *refs = nd_malloc(n * sizeof *refs);
  if (!refs) return nd__nerr(ND_ENOMEM, "%s: out of memory", t->path);
  for (size_t r = 0; r < n; r++) refs[r] = (id_ref){cell(t, r + 1, id_col), r + 1};
  qsort(refs, n, sizeof *refs, id_ref_cmp);
  /* The repeat that comes first in the file, with its group's first row. */
  size_t dup = SIZE_MAX, first = 0;
  for (size_t i = 1, g = 0; i < n; i++) {
    if (strcmp(refs[i].id, refs[g].id)) g = i;
    else if (refs[i].row < dup) {
      dup = refs[i].row;
      first = refs[g].row;
    }
  }
  nd_free(refs);
  if (dup != SIZE_MAX)
    return nd__nerr(ND_EFORMAT, "%s:%zu: column '%s': duplicate value '%s' (first on line %zu)",
                    t->path, t->line[dup], ID_COLUMN, cell(t, dup, id_col), t->line[first]);
  return ND_OK;
}

/* A cell's number: NaN for n/a or empty; false when it is not a number. */
static bool parse_number(const char *s, double *v) {
  if (!*s || !strcmp(s, NA_CELL)) {
    *v = NAN;
    return true;
  }
  char *end;
  *v = strtod(s, &end);
  return end != s && *end == '\0';
}

static bool numeric_column(const table *t, size_t col) {
  double v;
  for (size_t r = 1; r < t->nrows; r++)
    if (!parse_number(cell(t, r, col), &v)) return false;
  return true;
}

/* --------------------------------------------------------------- output */

static int fill(const table *t, size_t id_col, size_t fam_col, nd_participants *p) {
  p->n = t->nrows - 1;
  bool *num = nd_calloc(t->ncols, sizeof *num);
  if (!num) return ND_ENOMEM;
  for (size_t c = 0; c < t->ncols; c++) {
    num[c] = c != id_col && c != fam_col && numeric_column(t, c);
    p->ntargets += num[c];
  }
  size_t nt = p->ntargets ? p->ntargets : 1, nn = p->n ? p->n : 1, cells;
  int rc = nd__mul_size(nn, nt, &cells) ? ND_OK : ND_ENOMEM;
  if (rc == ND_OK) {
    p->id = nd_calloc(nn, sizeof *p->id);
    p->family = nd_calloc(nn, sizeof *p->family);
    p->target_name = nd_calloc(nt, sizeof *p->target_name);
    p->targets = nd_calloc(cells, sizeof *p->targets);
    if (!p->id || !p->family || !p->target_name || !p->targets) rc = ND_ENOMEM;
  }
  for (size_t c = 0, k = 0; c < t->ncols && rc == ND_OK; c++) {
    if (!num[c]) continue;
    if (!(p->target_name[k] = nd_strdup(cell(t, 0, c)))) rc = ND_ENOMEM;
    for (size_t r = 0; r < p->n; r++)
      parse_number(cell(t, r + 1, c), &p->targets[r * p->ntargets + k]);
    k++;
  }
  for (size_t r = 0; r < p->n && rc == ND_OK; r++) {
    if (!(p->id[r] = nd_strdup(cell(t, r + 1, id_col)))) rc = ND_ENOMEM;
    if (fam_col != SIZE_MAX && !(p->family[r] = nd_strdup(cell(t, r + 1, fam_col))))
      rc = ND_ENOMEM;
  }
  nd_free(num);
  return rc;
}

int nd_participants_read(const char *tsv_path, nd_participants **out) {
  nd__nerr_clear();
  if (out) *out = NULL;
  if (!tsv_path || !out) return nd__nerr(ND_EINVAL, "nd_participants_read: NULL argument");
  char *buf = NULL;
  size_t len;
  int rc = nd__read_file(tsv_path, &buf, &len);
  if (rc == ND_ENOTFOUND) rc = nd__nerr(ND_EIO, "%s: no such file", tsv_path);
  if (rc) return rc;
  table t = {.path = tsv_path};
  size_t id_col = SIZE_MAX, fam_col = SIZE_MAX;
  if (strlen(buf) != len)
    rc = nd__nerr(ND_EFORMAT, "%s: not a text file (it holds a NUL byte)", tsv_path);
  if (rc == ND_OK) rc = split(&t, buf);
  if (rc == ND_OK) rc = check_header(&t, &id_col, &fam_col);
  if (rc == ND_OK) rc = check_ids(&t, id_col);
  nd_participants *p = NULL;
  if (rc == ND_OK) {
    p = nd_calloc(1, sizeof *p);
    rc = p ? fill(&t, id_col, fam_col, p) : ND_ENOMEM;
    if (rc == ND_ENOMEM) rc = nd__nerr(ND_ENOMEM, "%s: out of memory", tsv_path);
  }
  nd_free(t.cells);
  nd_free(t.line);
  nd_free(buf);
  if (rc) {
    nd_participants_free(p);
    return rc;
  }
  *out = p;
  return ND_OK;
}

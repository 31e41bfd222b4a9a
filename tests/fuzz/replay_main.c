/* Replays a fuzz corpus without libFuzzer: runs LLVMFuzzerTestOneInput over
 * every regular file of a directory, in sorted name order, so corpora are
 * checked by the normal test suite (and under the sanitizers). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct name_list {
  char **names;
  size_t count, cap;
} name_list;

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push_name(name_list *l, const char *name) {
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    char **n = realloc(l->names, cap * sizeof *n);
    if (n == NULL)
      return -1;
    l->names = n;
    l->cap = cap;
  }
  l->names[l->count] = strdup(name);
  return l->names[l->count++] == NULL ? -1 : 0;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Names of the regular files in dir. */
static int list_files(const char *dir, name_list *l) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return -1;
  struct dirent *e;
  int rc = 0;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    char *path = join(dir, e->d_name);
    struct stat st;
    if (path == NULL)
      rc = -1;
    else if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
      rc = push_name(l, e->d_name);
    free(path);
  }
  closedir(d);
  qsort(l->names, l->count, sizeof *l->names, cmp_names);
  return rc;
}

/* Read a whole file into an exact-size buffer (so ASan sees overreads). */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    fclose(f);
    return -1;
  }
  size_t size = (size_t)st.st_size;
  uint8_t *buf = malloc(size ? size : 1);
  int rc = buf != NULL && fread(buf, 1, size, f) == size ? 0 : -1;
  fclose(f);
  if (rc == 0)
    LLVMFuzzerTestOneInput(buf, size);
  free(buf);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  name_list l = {0};
  int rc = list_files(argv[1], &l);
  for (size_t i = 0; rc == 0 && i < l.count; i++) {
    char *path = join(argv[1], l.names[i]);
    if (path == NULL || run_file(path) != 0) {
      fprintf(stderr, "cannot read %s/%s\n", argv[1], l.names[i]);
      rc = -1;
    }
    free(path);
  }
  if (rc == 0)
    printf("replayed %zu files from %s\n", l.count, argv[1]);
  else
    fprintf(stderr, "replay of %s failed\n", argv[1]);
  for (size_t i = 0; i < l.count; i++)
    free(l.names[i]);
  free(l.names);
  return rc == 0 ? 0 : 1;
}

/* nidag command-line tool. */
#include <stdio.h>
#include <string.h>

#include "nidag.h"

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "version") == 0) {
    printf("nidag %s\n", NIDAG_VERSION_STRING);
    return 0;
  }
  fprintf(stderr, "usage: nidag version\n");
  return 2;
}

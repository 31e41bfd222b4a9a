/* Shared by the suites that read the MRIcron atlases (neuro_real,
 * neuro_cohort): skip a test when they are not installed, and fail with the
 * neuro message when a call fails. The including file defines TEMPLATES
 * (the directory) and sets g_have_templates in its main. */
#ifndef NIDAG_TESTS_NEURO_TEMPLATES_H
#define NIDAG_TESTS_NEURO_TEMPLATES_H

#include <stdbool.h>

static bool g_have_templates;

#define REQUIRE_TEMPLATES()                                                        \
  do {                                                                             \
    if (!g_have_templates) {                                                       \
      print_message("skipped: " TEMPLATES " is missing (install mricron-data)\n"); \
      skip();                                                                      \
    }                                                                              \
  } while (0)

#define CHECK_OK(call)                                                                    \
  do {                                                                                    \
    int rc_ = (call);                                                                     \
    if (rc_ != 0) {                                                                       \
      print_error("%s failed: %s: %s\n", #call, nd_errname(rc_), nd_neuro_errmsg());      \
      fail();                                                                             \
    }                                                                                     \
  } while (0)

#endif

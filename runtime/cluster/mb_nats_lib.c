/*
 * mb_nats_lib.c — libnats loaded on first use (see mb_nats_lib.h).
 * Tests: spec/cluster/cluster_spec.lua (a node without a cluster has not
 * loaded it; every cluster spec runs through it), spec/c/test_nats_ev.c.
 */
#define MB_NATS_LIB_IMPL
#include "mb_nats_lib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#ifndef MB_NATS_DIRECT
struct mb_nats_api mb_nats_api;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char why[300]; /* empty once loaded */

static void load(void) {
  /* never closed: nats.c's threads and destructors stay with the process */
  void *h = dlopen(MB_NATS_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, sizeof why, "%s", dlerror());
    return;
  }
#define MB_NATS_SYM(f)                                                                  \
  if (!(*(void **)&mb_nats_api.f = dlsym(h, #f))) {                                     \
    snprintf(why, sizeof why, "%s has no %s", MB_NATS_SONAME, #f);                      \
    return;                                                                             \
  }
  MB_NATS_FUNCS(MB_NATS_SYM)
#undef MB_NATS_SYM
}
#endif

int mb_nats_load(char *err, size_t errlen) {
#ifndef MB_NATS_DIRECT
  pthread_once(&once, load);
  if (why[0]) {
    snprintf(err, errlen, "the cluster needs libnats (Debian package libnats3.4; `make deps` "
                          "installs it): %s", why);
    return -1;
  }
#else
  (void)err;
  (void)errlen;
#endif
  return 0;
}

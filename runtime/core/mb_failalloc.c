/*
 * mb_failalloc.c — allocation-failure injection for the build/failalloc/
 * test build (see mb_alloc.h): counts the allocations of the core and of
 * every Lua state the runtime makes, and makes the Nth fail.
 *   MB_FAIL_AT=N      the Nth allocation fails (0 or unset: none)
 *   MB_FAIL_COUNT=k   allocations N..N+k-1 fail (default 1)
 *   MB_FAIL_REPORT=F  at exit, writes "allocations A\nfailed B\n" to F
 * Driven by tools/failalloc.lua; C tests (spec/c/test_failalloc.c) arm it
 * themselves with mb_failalloc_arm. Not part of any other build.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

int mb_failalloc_next(void);
void mb_failalloc_arm(long nth, long n);
long mb_failalloc_count(void);

static atomic_long count;
static atomic_long failed;
static long fail_at = -1, fail_count = 1; /* -1: not read yet */

static void read_env(void) {
  const char *at = getenv("MB_FAIL_AT"), *n = getenv("MB_FAIL_COUNT");
  long a = at ? atol(at) : 0, k = n ? atol(n) : 1;
  fail_count = k > 0 ? k : 1;
  __atomic_store_n(&fail_at, a, __ATOMIC_RELEASE);
}

int mb_failalloc_next(void) {
  if (__atomic_load_n(&fail_at, __ATOMIC_ACQUIRE) < 0) read_env(); /* same result on a race */
  long i = atomic_fetch_add(&count, 1) + 1;
  if (fail_at > 0 && i >= fail_at && i < fail_at + fail_count) {
    atomic_fetch_add(&failed, 1);
    return 1;
  }
  return 0;
}

__attribute__((destructor)) static void failalloc_report(void) {
  const char *path = getenv("MB_FAIL_REPORT");
  if (!path) return;
  FILE *f = fopen(path, "w");
  if (!f) return;
  fprintf(f, "allocations %ld\nfailed %ld\n", atomic_load(&count), atomic_load(&failed));
  fclose(f);
}

/* For C tests: the nth allocation from now fails, and the n - 1 after it
 * (nth 0: none fails). */
void mb_failalloc_arm(long nth, long n) {
  if (__atomic_load_n(&fail_at, __ATOMIC_ACQUIRE) < 0) read_env();
  fail_count = n > 0 ? n : 1;
  __atomic_store_n(&fail_at, nth > 0 ? atomic_load(&count) + nth : 0, __ATOMIC_RELEASE);
}

/* Allocations counted so far. */
long mb_failalloc_count(void) { return atomic_load(&count); }

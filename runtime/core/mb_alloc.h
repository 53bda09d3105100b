/*
 * mb_alloc.h — the allocator of the hot path: Lua states the runtime
 * creates and messages. mimalloc (Debian libmimalloc-dev) by default: its
 * per-thread free lists make the many small, short-lived blocks of a
 * message (the message, the listener's tables and strings) several times
 * cheaper than glibc's malloc, also when the block is freed on another
 * worker than the one that made it. Built with -DMB_LIBC_MALLOC (the
 * sanitizer and valgrind builds) it is the C library's malloc, so those
 * tools see every block.
 *
 * Debian's libmimalloc.so also exports malloc and free: a program linked
 * with it (mbrun, a C program using libmb.a through pkg-config) allocates
 * everything with mimalloc. mb.so loaded by lua5.4 comes after the C
 * library, so there only these macros reach mimalloc. Either way each block
 * is freed by the allocator that made it.
 *
 * Allocation-failure injection (-DMB_FAILALLOC, the build/failalloc/ test
 * build, with MB_LIBC_MALLOC): every source of the core and the binding is
 * compiled with `-include runtime/core/mb_alloc.h`, so that malloc, calloc,
 * realloc and strdup there, and each Lua state's allocator (l_alloc), go
 * through runtime/core/mb_failalloc.c, which counts them and makes the Nth fail
 * (MB_FAIL_AT=N, MB_FAIL_COUNT=k for N..N+k-1). tools/failalloc.lua walks N.
 */
#ifndef MB_ALLOC_H
#define MB_ALLOC_H

#ifdef MB_FAILALLOC
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* as mb_runtime.c defines it: this comes first */
#endif
#include <stdlib.h>
#include <string.h>
/* Counts one allocation; nonzero when it is to fail. */
int mb_failalloc_next(void);
static inline void *mb_fa_malloc(size_t n) { return mb_failalloc_next() ? NULL : (malloc)(n); }
static inline void *mb_fa_calloc(size_t n, size_t k) {
  return mb_failalloc_next() ? NULL : (calloc)(n, k);
}
static inline void *mb_fa_realloc(void *p, size_t n) {
  return mb_failalloc_next() ? NULL : (realloc)(p, n);
}
static inline char *mb_fa_strdup(const char *s) { return mb_failalloc_next() ? NULL : (strdup)(s); }
#undef strdup
#define malloc(n) mb_fa_malloc(n)
#define calloc(n, k) mb_fa_calloc(n, k)
#define realloc(p, n) mb_fa_realloc(p, n)
#define strdup(s) mb_fa_strdup(s)
/* Lua assumes that shrinking a block never fails */
#define mb_realloc_shrink(p, n) (realloc)(p, n)
#endif

#ifdef MB_LIBC_MALLOC
#include <stdlib.h>
#define mb_malloc malloc
#define mb_realloc realloc
#define mb_free free
#else
#include <mimalloc.h>
#define mb_malloc mi_malloc
#define mb_realloc mi_realloc
#define mb_free mi_free
#endif
#ifndef mb_realloc_shrink
#define mb_realloc_shrink mb_realloc
#endif

#endif

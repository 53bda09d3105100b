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
 */
#ifndef MB_ALLOC_H
#define MB_ALLOC_H

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

#endif

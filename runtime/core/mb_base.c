/*
 * mb_base.c — what every floor of the core uses: the error words of the
 * MB_E* codes, the hash of names, the monotonic clock and the mutexes.
 * Owns nothing. Tests: spec/c/test_*.c.
 */
#define _GNU_SOURCE /* PTHREAD_MUTEX_ADAPTIVE_NP, sched_getaffinity */
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "mb_core.h"

const char *mb_strerror(int code) {
  switch (code) {
  case MB_OK: return "ok";
  case MB_PENDING: return "pending";
  case MB_ENODEST: return "no_destination";
  case MB_ENOLISTENERS: return "no_listeners";
  case MB_EFULL: return "queue_full";
  case MB_ETIMEOUT: return "timeout";
  case MB_EFAILED: return "failed";
  case MB_ECLOSED: return "closed";
  case MB_EEXISTS: return "exists";
  case MB_EINVAL: return "invalid";
  case MB_ENOMEM: return "out_of_memory";
  case MB_EDROPPED: return "dropped";
  case MB_ESHUTDOWN: return "closed";
  }
  return "unknown";
}

uint64_t mb_hash_str(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
  return h;
}

uint64_t mb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The runtime's locks guard short sections and, with workers spinning
 * rather than sleeping, are often taken on another core at the same time:
 * spin a little in pthread_mutex_lock before sleeping in the kernel
 * (glibc's adaptive mutex), where available. */
void mb_mutex_init(pthread_mutex_t *m) {
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
#else
  pthread_mutex_init(m, NULL);
#endif
}

int mb_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

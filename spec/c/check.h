/*
 * check.h — a tiny assertion helper for the C tests.
 *
 *   CHECK(cond)              passes when cond is true
 *   CHECK_INT(a, b)          a == b as integers; prints both on failure
 *   CHECK_STR(a, b)          equal C strings (NULL only equals NULL)
 *   CHECK_MEM(a, alen, b, blen)  equal byte ranges
 *   RUN(test_fn)             runs one test function, naming it in failures,
 *                            in a child process of its own (so that a crash,
 *                            a sanitizer report, a leak found at exit or a
 *                            hang past CHECK_TIMEOUT seconds counts as one
 *                            failure of that test and the others still run);
 *                            CHECK_NOFORK=1 in the environment runs tests
 *                            in-process, for a debugger
 *   check_summary()          prints "N passed, N failed" (the only line on
 *                            stdout) and returns the exit status: 0 when
 *                            nothing failed, 1 otherwise
 *
 * Every failure goes to stderr as "file:line: [test] what failed". Each
 * macro evaluates its arguments once and yields 1 on pass, 0 on failure,
 * so a test can guard what follows: `if (!CHECK(p != NULL)) return;`.
 */
#ifndef CHECK_H
#define CHECK_H

/* include this first: fork, pipe and waitpid are POSIX */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* A test program of one file keeps the counters to itself; one of several
 * files defines CHECK_SHARED before including this, and exactly one of them
 * CHECK_MAIN as well (spec/c/helpers.h, helpers.c). */
#if defined(CHECK_MAIN)
int check_passed, check_failed;
const char *check_current = "?";
#elif defined(CHECK_SHARED)
extern int check_passed, check_failed;
extern const char *check_current;
#else
static int check_passed, check_failed;
static const char *check_current = "?";
#endif

static inline int check_record(int ok, const char *file, int line, const char *what) {
  if (ok) {
    check_passed++;
    return 1;
  }
  check_failed++;
  fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", file, line, check_current, what);
  return 0;
}

static inline int check_int(long long a, long long b, const char *file, int line, const char *ea,
                            const char *eb) {
  if (a == b) return check_record(1, file, line, NULL);
  check_failed++;
  fprintf(stderr, "%s:%d: [%s] CHECK failed: %s == %s (%lld vs %lld)\n", file, line, check_current,
          ea, eb, a, b);
  return 0;
}

static inline int check_str(const char *a, const char *b, const char *file, int line,
                            const char *ea, const char *eb) {
  if ((!a && !b) || (a && b && strcmp(a, b) == 0)) return check_record(1, file, line, NULL);
  check_failed++;
  fprintf(stderr, "%s:%d: [%s] CHECK failed: %s == %s (\"%s\" vs \"%s\")\n", file, line,
          check_current, ea, eb, a ? a : "(null)", b ? b : "(null)");
  return 0;
}

static inline int check_mem(const void *a, size_t alen, const void *b, size_t blen,
                            const char *file, int line, const char *ea, const char *eb) {
  if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0))
    return check_record(1, file, line, NULL);
  check_failed++;
  fprintf(stderr, "%s:%d: [%s] CHECK failed: %s == %s (%zu vs %zu bytes)\n", file, line,
          check_current, ea, eb, alen, blen);
  return 0;
}

#define CHECK(cond) check_record(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_INT(a, b) check_int((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_STR(a, b) check_str((a), (b), __FILE__, __LINE__, #a, #b)
#define CHECK_MEM(a, alen, b, blen) check_mem((a), (alen), (b), (blen), __FILE__, __LINE__, #a, #b)

#ifndef CHECK_TIMEOUT
#define CHECK_TIMEOUT 30
#endif

static inline void check_run(void (*fn)(void), const char *name) {
  int fds[2];
  check_current = name;
  if (getenv("CHECK_NOFORK") || pipe(fds) != 0) {
    fn();
    check_current = "?";
    return;
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    fn();
    check_current = "?";
    return;
  }
  if (pid == 0) {
    close(fds[0]);
    alarm(CHECK_TIMEOUT);
    check_passed = check_failed = 0;
    fn();
    int counts[2] = {check_passed, check_failed};
    if (write(fds[1], counts, sizeof counts) != (ssize_t)sizeof counts) _exit(3);
    close(fds[1]);
    exit(0); /* not _exit: LeakSanitizer checks at exit */
  }
  close(fds[1]);
  int counts[2];
  size_t got = 0;
  while (got < sizeof counts) {
    ssize_t n = read(fds[0], (char *)counts + got, sizeof counts - got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) continue;
  if (got == sizeof counts) {
    check_passed += counts[0];
    check_failed += counts[1];
  }
  if (got != sizeof counts || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    check_failed++;
    if (WIFSIGNALED(status))
      fprintf(stderr, "[%s] FAILED: the test process was killed by signal %d%s\n", name,
              WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    else
      fprintf(stderr, "[%s] FAILED: the test process exited with status %d%s\n", name,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1,
              got == sizeof counts ? " after its checks (sanitizer report at exit?)"
                                   : " before finishing");
  }
  check_current = "?";
}

#define RUN(fn) check_run(fn, #fn)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  fflush(stdout);
  return check_failed ? 1 : 0;
}

#endif

/*
 * test_core.c — runs the tests of the mb core through its C API (mb.h,
 * mb_value.h), one area per file, sharing helpers.h:
 *
 *   test_values.c    the value encoding
 *   test_json.c      JSON in and out
 *   test_show.c      values shown to people (mb_value_show)
 *   test_dest.c      destinations, send errors, back-pressure, removal
 *   test_delivery.c  parallel, serial, synchronous, groups, dead letters
 *   test_request.c   requests, reply_to, the stats invariant
 *   test_observe.c   events, the tracer, latency, the graph
 *   test_runtime.c   messages, services, lifetimes, the graceful drain
 *   test_threads.c   the threaded hand-off with 2 and 4 workers
 *
 * Each test runs in a process of its own (check.h) and frees its runtime
 * at the end. With no argument every area runs; with names, those areas:
 *
 *   make build/test_core && ./build/test_core [AREA...]
 *   make build/asan/test_core && ASAN_OPTIONS=detect_leaks=1 ./build/asan/test_core
 *   make build/tsan/test_core && ./build/tsan/test_core threads
 */
#include "helpers.h"

#include <stdio.h>
#include <string.h>

static const struct area {
  const char *name;
  void (*run)(void);
} areas[] = {
    {"values", values_tests},     {"json", json_tests},       {"show", show_tests},
    {"dest", dest_tests},         {"delivery", delivery_tests}, {"request", request_tests},
    {"observe", observe_tests},   {"runtime", runtime_tests}, {"threads", threads_tests},
};
#define NAREAS (sizeof areas / sizeof areas[0])

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    size_t k = 0;
    while (k < NAREAS && strcmp(areas[k].name, argv[i]) != 0) k++;
    if (k == NAREAS) {
      fprintf(stderr, "test_core: no area '%s'; the areas:", argv[i]);
      for (k = 0; k < NAREAS; k++) fprintf(stderr, " %s", areas[k].name);
      fprintf(stderr, "\n");
      return 2;
    }
  }
  for (size_t k = 0; k < NAREAS; k++) {
    int chosen = argc == 1;
    for (int i = 1; i < argc && !chosen; i++) chosen = strcmp(areas[k].name, argv[i]) == 0;
    if (chosen) areas[k].run();
  }
  return check_summary();
}

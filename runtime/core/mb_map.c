/*
 * mb_map.c — linear probing with backward-shift deletion (no tombstones).
 * Owns its slot array. Tests: spec/c/test_runtime.c (through destinations
 * and requests).
 */
#include "mb_map.h"

#include <stdlib.h>

void *mb_map_get(const mb_map *m, uint64_t h, mb_map_eq eq, const void *key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    mb_map_ent *e = &m->e[i];
    if (!e->v) return NULL;
    if (e->h == h && eq(e->v, key)) return e->v;
  }
}

static int grow(mb_map *m) {
  size_t cap = m->cap ? m->cap * 2 : 16;
  mb_map_ent *e = calloc(cap, sizeof *e);
  if (!e) return -1;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->e[i].v) continue;
    size_t j = m->e[i].h & (cap - 1);
    while (e[j].v) j = (j + 1) & (cap - 1);
    e[j] = m->e[i];
  }
  free(m->e);
  m->e = e;
  m->cap = cap;
  return 0;
}

int mb_map_put(mb_map *m, uint64_t h, void *v) {
  if ((m->len + 1) * 4 > m->cap * 3 && grow(m)) return -1;
  size_t mask = m->cap - 1, i = h & mask;
  while (m->e[i].v) i = (i + 1) & mask;
  m->e[i].h = h;
  m->e[i].v = v;
  m->len++;
  return 0;
}

void *mb_map_del(mb_map *m, uint64_t h, mb_map_eq eq, const void *key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1, i = h & mask;
  for (;; i = (i + 1) & mask) {
    if (!m->e[i].v) return NULL;
    if (m->e[i].h == h && eq(m->e[i].v, key)) break;
  }
  void *v = m->e[i].v;
  /* shift back the entries that probed past the freed slot */
  for (size_t j = (i + 1) & mask; m->e[j].v; j = (j + 1) & mask) {
    size_t home = m->e[j].h & mask;
    int between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!between) {
      m->e[i] = m->e[j];
      i = j;
    }
  }
  m->e[i].v = NULL;
  m->len--;
  return v;
}

void *mb_map_next(const mb_map *m, size_t *pos) {
  while (*pos < m->cap) {
    void *v = m->e[(*pos)++].v;
    if (v) return v;
  }
  return NULL;
}

void mb_map_free(mb_map *m) {
  free(m->e);
  m->e = NULL;
  m->cap = m->len = 0;
}

/*
 * mb_map.h — an open-addressing hash table of pointers, keyed by a 64-bit
 * hash plus an equality callback (destinations by name, requests by message
 * id). Owns only its slot array, never the values.
 */
#ifndef MB_MAP_H
#define MB_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct mb_map_ent {
  uint64_t h;
  void *v; /* NULL: empty */
} mb_map_ent;

typedef struct mb_map {
  mb_map_ent *e;
  size_t cap, len; /* cap is a power of two */
} mb_map;

typedef int (*mb_map_eq)(const void *value, const void *key);

void *mb_map_get(const mb_map *m, uint64_t h, mb_map_eq eq, const void *key);
/* Adds v (its key must be absent). Returns 0, or -1 when out of memory. */
int mb_map_put(mb_map *m, uint64_t h, void *v);
/* Removes and returns the value for key, or NULL. */
void *mb_map_del(mb_map *m, uint64_t h, mb_map_eq eq, const void *key);
/* Walks the values: starts with *pos = 0, returns the next value and
 * advances *pos, NULL at the end. The map must not change meanwhile
 * (values may be freed: they are not read).
 *   size_t i = 0; for (T *v; (v = mb_map_next(m, &i));) ... */
void *mb_map_next(const mb_map *m, size_t *pos);
/* Empties it, keeping nothing (the values are the caller's). */
void mb_map_free(mb_map *m);

#endif

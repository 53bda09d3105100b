/*
 * mb_wire.c — the cluster's names on the wire (mb_wire.h): destination
 * subjects (SPEC section 6, Interop), valid names and the seconds of a
 * header. Tests:
 * spec/cluster/cluster_spec.lua (subjects of plain NATS clients),
 * spec/c/test_nats_ev.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/mb_wire.h"

int mb_cluster_name_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

int mb_cluster_name_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!mb_cluster_name_byte((unsigned char)s[i])) return 0;
  return 1;
}

int mb_cluster_subject(const char *ns, const char *name, char *buf, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t nl = strlen(ns), at = nl + 6; /* "mb." NS ".d." */
  if (at >= cap || !*name) return -1;
  memcpy(buf, "mb.", 3);
  memcpy(buf + 3, ns, nl);
  memcpy(buf + 3 + nl, ".d.", 3);
  char prev = '/';
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    if (*p == '/' && prev == '/') return -1; /* an empty part */
    if (at + 4 > cap) return -1;
    if (*p == '/')
      buf[at++] = '.';
    else if (mb_cluster_name_byte(*p))
      buf[at++] = (char)*p;
    else {
      buf[at++] = '%';
      buf[at++] = hex[*p >> 4];
      buf[at++] = hex[*p & 15];
    }
    prev = (char)*p;
  }
  if (prev == '/') return -1;
  buf[at] = 0;
  return 0;
}

void mb_cluster_secs_format(double secs, char *buf, size_t cap) {
  if (!(secs < 1e8) || cap < 32) {
    snprintf(buf, cap, "%.3f", secs);
    return;
  }
  uint64_t ms = (uint64_t)(secs * 1000 + 0.5), whole = ms / 1000;
  char digits[24];
  size_t nd = 0, at = 0;
  do digits[nd++] = (char)('0' + whole % 10);
  while ((whole /= 10));
  while (nd) buf[at++] = digits[--nd];
  buf[at++] = '.';
  buf[at++] = (char)('0' + ms % 1000 / 100);
  buf[at++] = (char)('0' + ms % 100 / 10);
  buf[at++] = (char)('0' + ms % 10);
  buf[at] = 0;
}

int mb_cluster_secs_parse(const char *s, double *out) {
  const char *q = s;
  uint64_t whole = 0;
  while (*q >= '0' && *q <= '9' && q - s < 9) whole = whole * 10 + (uint64_t)(*q++ - '0');
  if (q > s && q[0] == '.' && q[1] >= '0' && q[1] <= '9' && q[2] >= '0' && q[2] <= '9' &&
      q[3] >= '0' && q[3] <= '9' && !q[4]) { /* DIGITS.DDD: as written, without strtod */
    *out = (double)whole + (double)((q[1] - '0') * 100 + (q[2] - '0') * 10 + (q[3] - '0')) / 1000;
    return 0;
  }
  char *end = NULL;
  double v = strtod(s, &end);
  if (end == s || *end) return -1;
  *out = v;
  return 0;
}

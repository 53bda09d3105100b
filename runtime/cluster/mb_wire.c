/*
 * mb_wire.c — the cluster's names on the wire (mb_wire.h): destination
 * subjects (SPEC section 6, Interop) and valid names. Tests:
 * spec/cluster/cluster_spec.lua (subjects of plain NATS clients),
 * spec/c/test_nats_ev.c.
 */
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

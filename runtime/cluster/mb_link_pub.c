/*
 * mb_link_pub.c — publishing a message of the cluster link with mb's
 * headers (the wire format: mb_cluster.h), and handing the published
 * nats.c messages back to nats.c in batches. Owns nothing but c->spent.
 * Uses libnats and the core's messages (mb.h). Any thread. Tests: the
 * specs in spec/cluster.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "cluster/mb_link_private.h"

/* a, b and c (c may be NULL) one after the other in buf, cut to fit as
 * snprintf would: the subjects and ids of every message, without printf's
 * cost (about 900 instructions a call) */
void mbc_join(char *buf, size_t cap, const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c};
  size_t at = 0;
  for (int i = 0; i < 3 && parts[i]; i++) {
    size_t n = strlen(parts[i]);
    if (n > cap - 1 - at) n = cap - 1 - at;
    memcpy(buf + at, parts[i], n);
    at += n;
  }
  buf[at] = 0;
}

void mbc_spent(mb_cluster *c, natsMsg *nm, int published) {
  natsMsg *batch[SPENT];
  size_t n = 0;
  int keep = nm && natsMsg_GetDataLength(nm) <= SPENT_SMALL;
  pthread_mutex_lock(&c->mu);
  if (published) c->st.published++;
  if (keep) {
    c->spent[c->nspent++] = nm;
    if (c->nspent == SPENT) {
      memcpy(batch, c->spent, sizeof batch);
      n = SPENT;
      c->nspent = 0;
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (!keep) natsMsg_Destroy(nm);
  for (size_t i = 0; i < n; i++) natsMsg_Destroy(batch[i]);
}

static natsStatus set_header(natsMsg *nm, const char *key, const char *value) {
  return natsMsgHeader_Set(nm, key, value);
}

/* Publishes the payload and values of m as kind to subject (reply: the
 * NATS reply subject, or NULL); id is the Mb-Id; extra: more headers, name
 * and value pairs, NULL-terminated (or NULL). */
natsStatus mbc_publish(mb_cluster *c, const char *subject, const char *reply, const mb_msg *m,
                       const char *kind, const char *id, const char *const *extra) {
  size_t plen, vlen;
  const uint8_t *p = mb_msg_payload(m, &plen);
  mb_msg_values(m, &vlen); /* right after the payload */
  natsMsg *nm = NULL;
  natsStatus s = natsMsg_Create(&nm, subject, reply, (const char *)p, (int)(plen + vlen));
  if (s == NATS_OK) s = set_header(nm, "Mb-Id", id);
  if (s == NATS_OK) s = set_header(nm, "Mb-Kind", kind);
  const char *rt = mb_msg_origin(m) ? NULL : mb_msg_reply_to(m);
  if (s == NATS_OK && rt) s = set_header(nm, "Mb-Reply-To", rt);
  for (; s == NATS_OK && extra && extra[0]; extra += 2)
    if (extra[1]) s = set_header(nm, extra[0], extra[1]);
  if (s == NATS_OK) s = natsConnection_PublishMsg(c->nc, nm);
  mbc_spent(c, nm, s == NATS_OK);
  return s;
}

void mbc_pub_free(mb_cluster *c) {
  for (size_t i = 0; i < c->nspent; i++) natsMsg_Destroy(c->spent[i]);
  c->nspent = 0;
}

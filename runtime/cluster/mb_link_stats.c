/*
 * mb_link_stats.c — the cluster's statistics probes: mb.stats(name,
 * {cluster = true}) and the probe of a durable destination's options ask
 * every node at mb.NS.stats (mbc_stats_send); each node acknowledges with
 * 1 group (0: it has no such destination) and answers its figures as a
 * table (mbc_on_stats_msg). Owns nothing. Uses mb_link_recv.c (bad
 * messages), mb_link_acks.c (the window, the acknowledgement),
 * mb_link_pub.c and the core (mb.h). Tests: the specs in spec/cluster.
 */
#define _POSIX_C_SOURCE 200809L

#include <string.h>

#include "cluster/mb_link_private.h"

natsStatus mbc_stats_send(mb_cluster *c, const char *dest, mb_msg *m, int kind, const char *id,
                          const char *reply, const char *answer) {
  char subject[200];
  mbc_win_open(c, mb_msg_id(m), STATS_KEY, kind == MB_LINK_STATS ? 1.0 : c->ack_wait);
  mbc_join(subject, sizeof subject, "mb.", c->ns, ".stats");
  const char *more[] = {"Mb-Reply", answer, "Mb-Dest", dest, NULL};
  return mbc_publish(c, subject, reply, m, "stats", id, more);
}

/* A node asks for this node's statistics of a destination (mb.NS.stats,
 * header Mb-Dest): an acknowledgement with 1 group (0: none here), then
 * the counts as a table. */
void mbc_on_stats_msg(mb_cluster *c, sub *e, natsMsg *nm) {
  (void)e;
  const char *dest = mbc_header(nm, "Mb-Dest"), *to = mbc_header(nm, "Mb-Reply");
  mb_stats st;
  if (!dest || !to || !*to) {
    mbc_bad(c, nm, "no Mb-Dest and Mb-Reply headers");
    return;
  }
  int have = mb_dest_stats(c->rt, dest, &st) == MB_OK;
  mbc_ack(c, to, "stats", have);
  if (!have) return;
  mb_buf b = {0};
  long at = mb_enc_table_begin(&b);
  int rc = at < 0;
  uint32_t n = 0;
#define F(f)                                                                         \
  if (!rc) {                                                                         \
    rc |= mb_enc_str(&b, #f, strlen(#f)) | mb_enc_int(&b, (int64_t)st.f);            \
    n++;                                                                             \
  }
  F(listeners) F(sent) F(rejected) F(deliveries) F(delivered) F(failed) F(dropped)
  F(pending) F(largest_pending) F(in_flight) F(replies) F(timeouts) F(redelivered)
#undef F
  static const char *const types[] = {"parallel", "serial", "synchronous"};
  const char *type = types[st.type <= MB_SYNCHRONOUS ? st.type : 0];
  if (!rc) {
    rc |= mb_enc_str(&b, "type", 4) | mb_enc_str(&b, type, strlen(type));
    n++;
  }
  if (!rc && mb_dest_cluster(c->rt, dest) == 3) { /* the other nodes compare it (probe_k) */
    rc |= mb_enc_str(&b, "durable", 7) | mb_enc_bool(&b, 1);
    n++;
  }
  mb_msg *m = NULL;
  if (!rc) {
    mb_enc_table_end(&b, at, 0, n);
    m = mb_msg_new(b.p, b.len, NULL, 0, NULL);
  }
  mb_buf_free(&b);
  if (!m) return;
  char id[MB_NODE_ID_MAX];
  mb_node_id_format(c->node, mb_msg_id(m), id);
  const char *extra[] = {"Mb-Group", "0", NULL};
  mbc_publish(c, to, NULL, m, "reply", id, extra);
  mb_msg_unref(m);
}


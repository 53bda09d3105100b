/*
 * mb_durable.h — durable destinations on JetStream (SPEC §6, Durable), the
 * part of the link that stores messages: private to runtime/cluster, used
 * by mb_cluster.c only (its public face is mb_cluster_durable in
 * mb_cluster.h).
 *
 * Names (NS: the namespace; ENC(s): s with every byte outside
 * [A-Za-z0-9-] written _XX, upper-case hex, so "__" never comes from ENC):
 *   stream      mb__ENC(NS)__ENC(DEST), subject mb.NS.d.NAME (as a cluster
 *               destination's), file storage, limits retention: it keeps
 *               max_msgs / max_bytes / max_age, the oldest go first; a
 *               name over 199 bytes is its first 181, "__" and 16 hex
 *               digits of the whole name's FNV-1a hash
 *   consumer    g__ENC(GROUP) for a named group (shared by its members on
 *               every node: a push consumer with that deliver group),
 *               n__ENC(NODE) for the groups without a name of node NODE;
 *               explicit acks, ack_wait, max_ack_pending 1 when serial,
 *               else the declaring node's max_queue (at most 1000)
 *   delivery    mb.NS.q.STREAM.CONSUMER (the consumer's deliver subject)
 *   stored acks mb.NS.n.NODE.j.HEX (the stream's answer to a send, HEX its
 *               id)
 *
 * Threads: stream and consumer management (blocking JetStream requests) run
 * on a thread of this part, never on a worker's loop; the stream's answers
 * to sends come on nats.c's threads; the messages of the consumers are
 * read on worker 0 with the cluster's other subscriptions (mb_cluster.c's
 * drain) and acknowledged when their deliveries end (mb_link.outcome).
 * Tests: spec/cluster/durable_spec.lua.
 */
#ifndef MB_DURABLE_H
#define MB_DURABLE_H

#include "mb_nats_lib.h"

#include "mb.h"
#include "cluster/mb_wire.h"

typedef struct mb_durable mb_durable;

/* What the durable part uses of its cluster (mb_cluster.c); borrowed. */
typedef struct mb_durable_host {
  mb_runtime *rt;
  mb_service *svc; /* the link's own service (worker 0) */
  natsConnection *nc;
  const char *ns, *node;
  void *c;
  void (*report_fn)(void *c, const char *line);
  /* publishes m's payload and values with mb's headers, kind "send" */
  natsStatus (*publish_fn)(void *c, const char *subject, const char *reply, const mb_msg *m,
                        const char *id);
  /* m from the body and headers of nm (a message from the link), or NULL
   * with why */
  mb_msg *(*decode_fn)(natsMsg *nm, const char **why);
} mb_durable_host;

/* The part, on a connected cluster; its thread and its subscription to
 * the stream's answers start with the first durable destination. NULL when
 * out of memory (err says so). */
mb_durable *mb_durable_new(const mb_durable_host *h, char *err, size_t errlen);
/* Stopping, in two steps around the connection's close. mb_durable_halt
 * (after the link left the runtime, before the close): no new job, and the
 * subscription to the stream's answers ends. mb_durable_join (after the
 * close, which fails at once a management request still waiting for an
 * answer that the stopped loop would never read): the thread ends.
 * NULL ignored. */
void mb_durable_halt(mb_durable *d);
void mb_durable_join(mb_durable *d);
/* Frees it (after mb_durable_join; NULL ignored). */
void mb_durable_free(mb_durable *d);

int mb_durable_declare(mb_durable *d, const char *dest, mb_dest_type type,
                       const mb_durable_opts *o, char *err, size_t errlen);
/* 1 when dest is a durable destination here. */
int mb_durable_has(mb_durable *d, const char *dest);
/* The link's send to durable dest (takes m): stored, then answered through
 * mb_link_answer (MB_OK, or MB_EFAILED with "failed: <why>"). MB_OK or a
 * negative code at once (MB_EINVAL for a request: durable destinations
 * take sends). */
int mb_durable_send(mb_durable *d, const char *dest, mb_msg *m, int kind);
/* Interest at durable dest came (on) or went: the subject to subscribe to
 * (with group as the queue group) into subject; on, its consumer is made
 * in the background. 0, or -1 when dest is not durable here. */
int mb_durable_interest(mb_durable *d, const char *dest, const char *group, int on, char *subject,
                        size_t cap);
/* The streams made and the consumers of the groups listening here are
 * asked for again (the server may have lost them: restarted with an empty
 * store, or an operator deleted them): at a reconnection (now), or when a
 * send found no stream (at most every 2 s). Any thread. */
void mb_durable_check(mb_durable *d, int now);
/* Worker 0: a message of a consumer of dest (key: the named group's, 0:
 * the groups without a name), borrowed: delivered, acknowledged later. */
void mb_durable_receive(mb_durable *d, const char *dest, uint64_t key, natsMsg *nm);
/* A consumer's message that reached a subscription after its listeners
 * left: handed back at once (-NAK) to be delivered elsewhere. */
void mb_durable_unreceived(mb_durable *d, natsMsg *nm);
/* mb_link.outcome: a delivery of a tagged message ended. */
int mb_durable_outcome(mb_durable *d, void *tag, int status);

#endif

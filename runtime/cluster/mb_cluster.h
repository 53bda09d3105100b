/*
 * mb_cluster.h — destinations shared by the nodes of a namespace over a NATS
 * server (SPEC §6): the link (mb.h, mb_link) that the core hands the messages
 * of cluster destinations to, and that delivers what other nodes send.
 *
 * One connection per node, run by worker 0's libev loop through the adapter
 * (mb_nats_ev.h): what a loop turn publishes leaves in one write, and
 * messages are read and handed to the core on worker 0 with no thread of
 * nats.c in between. Any worker publishes (nats.c's publish is thread-safe;
 * the adapter wakes worker 0 to write).
 *
 * Subjects (NS: the namespace; NAME: a destination's name with '/' turned
 * into '.' and bytes outside [A-Za-z0-9_-] written %XX):
 *   mb.NS.d.NAME       a destination's messages: each node with groups
 *                      without a name subscribes; each named group is a
 *                      NATS queue group of that name on it
 *   mb.NS.n.NODE.>     a node's own: the answers to its requests
 *                      (mb.NS.n.NODE.r.ID, ID in hex)
 * A message is a NATS message whose body is its payload's encoding (mb
 * value encoding, see mb_value.h; one whole value, so its end is found by
 * reading it) followed by its values' encoding, with as few headers as
 * nats.c's header API allows for (each costs about 1,000 instructions to
 * set and more to read): Mb-Id (NODE:hex: the sending node and the
 * message's id there), Mb-Kind (send, request, all, sync, confirm, reply,
 * fail, ack, stats), and, when set, Mb-Reply-To and Mb-Error (a failure's
 * status); a request also Mb-Timeout (its timeout in seconds: the
 * listening node gives up on its listeners' answers a little after;
 * without it, after 60 s). A request's answers go to the requesting node's
 * mb.NS.n.NODE.r.hex, made from its Mb-Id; answers of request_all and
 * acknowledgements carry Mb-Group / Mb-Groups and Mb-For. A body that does
 * not check is counted (mb_cluster_stats.bad) and reported, never
 * delivered. A message without Mb-Id and Mb-Kind is a plain NATS client's:
 * its body is JSON.
 *
 * Threads: created, started and stopped on worker 0's thread (the loop not
 * running, or from a task on it); the link's calls come from any worker.
 * Nothing here prints: reports go to cfg.report. Tests:
 * the specs in spec/cluster (make nats-tests).
 */
#ifndef MB_CLUSTER_H
#define MB_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "mb.h"
#include "cluster/mb_wire.h"

typedef struct mb_cluster mb_cluster;

typedef struct mb_cluster_config {
  const char *url;        /* nats://host:port[,...] */
  const char *ns;         /* namespace; NULL: "default" */
  const char *node;       /* this node's name; NULL: HOST-PID */
  const char *user, *password, *token, *creds; /* secrets: never shown */
  const char *tls_ca, *tls_cert, *tls_key;
  /* a line for people (a failure on the wire, a bad message); any thread */
  void (*report)(void *ud, const char *line);
  /* the connection went down (up = 0) or came back (up = 1); worker 0 */
  void (*state)(void *ud, int up);
  void *ud;
} mb_cluster_config;

typedef struct mb_cluster_stats {
  uint64_t published, received, replies, bad, late, dropped, down, up;
} mb_cluster_stats;

/* Connects to the server (blocking: before worker 0's loop runs) and
 * installs the link in rt. NULL on failure, with the reason in err (the
 * server's, e.g. "Authorization Violation"; never a secret). */
mb_cluster *mb_cluster_start(mb_runtime *rt, const mb_cluster_config *cfg, char *err,
                             size_t errlen);

/* Writes what is still buffered, closes the connection, takes the link out
 * of rt and frees c. On worker 0's thread, before mb_runtime_free; NULL is
 * ignored. */
void mb_cluster_stop(mb_cluster *c);

const char *mb_cluster_node(const mb_cluster *c);
const char *mb_cluster_namespace(const mb_cluster *c);
/* The URL of the server connected to, with any password masked. */
const char *mb_cluster_url(const mb_cluster *c);
int mb_cluster_up(const mb_cluster *c);
/* The server's max_payload in bytes (0: not known). */
size_t mb_cluster_max_payload(const mb_cluster *c);
void mb_cluster_get_stats(mb_cluster *c, mb_cluster_stats *st);


/* Makes name a durable destination of type (parallel or serial) on this
 * node, before mb_dest_declare (with mb_dest_opts.cluster = 2): its
 * JetStream stream is made or checked in the background (sends wait for
 * it). MB_OK (also when declared again with the same options), MB_EEXISTS
 * with other options, MB_EINVAL or MB_ENOMEM; why in err. o NULL: name is
 * no durable destination here (any more), MB_OK. Any thread. */
int mb_cluster_durable(mb_cluster *c, const char *name, mb_dest_type type,
                       const mb_durable_opts *o, char *err, size_t errlen);


#endif

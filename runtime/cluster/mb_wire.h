/*
 * mb_wire.h — the cluster's names on the wire, shared by the link
 * (mb_cluster.c) and durable destinations (mb_durable.c), below both: the
 * subject of a destination, which names are valid, and a durable
 * destination's options. No state; any thread.
 */
#ifndef MB_WIRE_H
#define MB_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* The subject of destination name in namespace ns into buf; 0, or -1 when
 * it would not be a valid subject (an empty part: a name starting or
 * ending with '/', or with "//") or does not fit. */
int mb_cluster_subject(const char *ns, const char *name, char *buf, size_t cap);

/* 1 when c is one of [A-Za-z0-9_-], the bytes of names and of subject
 * tokens written as they are. */
int mb_cluster_name_byte(unsigned char c);

/* 1 when s is 1-64 bytes of [A-Za-z0-9_-] (node, namespace and group names). */
int mb_cluster_name_valid(const char *s);

/* A number of seconds (> 0) as the wire carries it (Mb-Timeout): "%.3f",
 * written without printf's cost; "inf" and huge ones through snprintf.
 * cap >= 32. */
void mb_cluster_secs_format(double secs, char *buf, size_t cap);

/* The seconds that s says (as written above, or anything strtod reads
 * whole) into *out; 0, or -1 when s is no number. */
int mb_cluster_secs_parse(const char *s, double *out);

/* A durable destination's options (SPEC 6, Durable; mb_durable.c); 0: the
 * default (in brackets). */
typedef struct mb_durable_opts {
  int max_deliver;           /* attempts before a dead letter [5] */
  int64_t max_msgs, max_bytes; /* the stream's bounds [1,000,000; 1 GiB] */
  double max_age;            /* seconds a message is kept [7 days] */
  double ack_wait;           /* seconds before an unacknowledged delivery goes
                              * to another member of its group [30] */
  size_t max_queue;          /* the destination's max_queue on this node, which
                              * bounds a parallel one's messages in flight per
                              * consumer (max_ack_pending, at most 1000) [1000] */
} mb_durable_opts;

/* The least max_age (JetStream refuses a stream keeping its messages less
 * than 100 ms) and ack_wait (a delivery still running says so every
 * ack_wait/3, looked at every 0.25 s: the gap must stay well below
 * ack_wait, or the server gives the delivery to another member while it
 * runs, also on a serial destination). */
#define MB_DURABLE_MIN_MAX_AGE 0.1
#define MB_DURABLE_MIN_ACK_WAIT 1.0
/* The most attempts max_deliver may allow. */
#define MB_DURABLE_MAX_DELIVER 1000000

#endif

/*
 * mb_durable.c — durable destinations on JetStream (SPEC §6, Durable; the
 * names, threads and contract are in mb_durable.h). Owns the durable
 * destinations' records, the management thread and its jobs, the
 * subscription to the stream's answers and the deliveries not yet
 * acknowledged. Uses the core's C API (mb.h: mb_link_deliver,
 * mb_link_answer, mb_link_dropped, mb_msg_durable) and libnats.
 *
 * A send is published to the destination's subject with the reply subject
 * mb.NS.n.NODE.j.HEX; the stream's answer (or the server's "no responders"
 * when no stream takes the subject) completes the send's request. A
 * message of a consumer is delivered as a message from the link, tagged;
 * each of its deliveries' ends comes to mb_durable_outcome, and when the
 * last has ended it is acknowledged (+ACK), handed back for redelivery
 * (-NAK: a handler failed or nothing here took it) or, when its last
 * attempt failed (the core made the dead letter), terminated (+TERM). The
 * server redelivers what is not acknowledged within ack_wait (a node that
 * died); a message that comes with more than max_deliver deliveries goes to
 * the dead letters without running. `mu` guards the records, the jobs and
 * the deliveries' list; nothing is called with it held but libnats's
 * publish.
 */
#define _POSIX_C_SOURCE 200809L

#include "cluster/mb_durable.h"

#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEF_MAX_DELIVER 5
#define DEF_MAX_MSGS 1000000
#define DEF_MAX_BYTES (INT64_C(1) << 30)
#define DEF_MAX_AGE (7 * 24 * 3600.0)
#define DEF_ACK_WAIT 30.0
#define MAX_PENDING 1000 /* a parallel consumer's max_ack_pending, at most (the server's default) */
#define JS_WAIT 5000 /* ms a management request may take */
#define RETRY 1.0    /* s before a management job that lacked the server is tried again */
#define RETRY_REFUSED 2.0 /* s before a stream the server refused is asked for again */
#define BIAS (1L << 30) /* see mb_durable_receive */
#define STREAM_MAX 199  /* bytes of a stream's name: see stream_name */

typedef struct waiting { /* a send waiting for its stream */
  struct waiting *next;
  mb_msg *m;
  int kind;
} waiting;

typedef struct want { /* a group listening here: its consumer is wanted */
  struct want *next;
  char *group; /* NULL: the node's groups without a name */
} want;

typedef struct ddest {
  struct ddest *next;
  want *wants;
  char *name;
  mb_dest_type type;
  mb_durable_opts o;
  char stream[STREAM_MAX + 1], subject[1024];
  int state; /* 0: its stream is being made, 1: ready, -1: failed (why) */
  char why[800];
  waiting *wait, **wait_tail;
} ddest;

typedef struct job {
  struct job *next;
  char *dest;
  char *group; /* a consumer's job: the named group, or NULL for the node's; */
  int consumer; /* 0: the stream's job */
  int said;     /* a consumer's job: its refusal was reported */
  double not_before;
} job;

/* Which stored message a delivery is, from its reply subject: its
 * consumer (a hash of the stream's and the consumer's names), its stream
 * sequence and its stored time (a stream made again counts from 1). */
typedef struct ack_id {
  uint64_t who, seq, ts;
} ack_id;

#define DONE 1024 /* settled messages remembered (see mb_durable_receive) */

/* A message of a consumer being delivered here (the tag of its mb_msg). */
typedef struct inflight {
  mb_durable *d;
  ack_id id;
  struct inflight *prev, *next;
  atomic_long remaining; /* deliveries still to end, plus BIAS until all were made */
  atomic_int ok, failed, dropped;
  int attempt, max;
  double ack_wait, beat; /* its ack_wait; when it last said "in progress" (now_s) */
  char reply[]; /* $JS.ACK...: where its acknowledgement goes */
} inflight;

struct mb_durable {
  mb_durable_host h;
  jsCtx *js;
  natsSubscription *acks; /* mb.NS.n.NODE.j.* */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* the thread waits for jobs; acks_done */
  pthread_t thread;
  int started, stopping, acks_done;
  ddest *dests;
  job *jobs, **jobs_tail;
  inflight *live;
  struct {
    ack_id id;
    char term; /* 1: terminated (+TERM), 0: acknowledged (+ACK) */
  } done[DONE];     /* the last messages settled here for good */
  unsigned ndone;   /* how many were, in all (done[ndone % DONE] is next) */
  double checked; /* when mb_durable_check last asked for everything again */
  char prefix[200]; /* mb.NS.n.NODE.j. */
};

/* ---- names ----------------------------------------------------------------------- */

static void enc(char *buf, size_t cap, size_t *at, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p && *at + 4 < cap; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
        *p == '-')
      buf[(*at)++] = (char)*p;
    else {
      buf[(*at)++] = '_';
      buf[(*at)++] = hex[*p >> 4];
      buf[(*at)++] = hex[*p & 15];
    }
  }
  buf[*at] = 0;
}

static void put(char *buf, size_t cap, size_t *at, const char *s) {
  size_t n = strlen(s);
  if (n > cap - 1 - *at) n = cap - 1 - *at;
  memcpy(buf + *at, s, n);
  *at += n;
  buf[*at] = 0;
}

/* The stream's name, in buf (at least STREAM_MAX + 1 bytes). A name
 * longer than STREAM_MAX (a stream's name holds at most 255 bytes) keeps
 * its first STREAM_MAX - 18 bytes, then "__" and 16 hex digits of a hash
 * of the whole: a third "__", which ENC never makes, so it is no other
 * destination's unshortened name. */
static void stream_name(const char *ns, const char *dest, char *buf) {
  char full[2048];
  size_t at = 0;
  put(full, sizeof full, &at, "mb__");
  enc(full, sizeof full, &at, ns);
  put(full, sizeof full, &at, "__");
  enc(full, sizeof full, &at, dest);
  if (at > STREAM_MAX) {
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */
    for (size_t i = 0; i < at; i++) h = (h ^ (unsigned char)full[i]) * UINT64_C(1099511628211);
    snprintf(full + STREAM_MAX - 18, 19, "__%016" PRIX64, h);
  }
  if (at > STREAM_MAX) at = STREAM_MAX;
  memcpy(buf, full, at);
  buf[at] = 0;
}

static void consumer_name(const mb_durable *d, const char *group, char *buf, size_t cap) {
  size_t at = 0;
  put(buf, cap, &at, group ? "g__" : "n__");
  enc(buf, cap, &at, group ? group : d->h.node);
}

static void deliver_subject(const mb_durable *d, const ddest *x, const char *consumer, char *buf,
                            size_t cap) {
  size_t at = 0;
  put(buf, cap, &at, "mb.");
  put(buf, cap, &at, d->h.ns);
  put(buf, cap, &at, ".q.");
  put(buf, cap, &at, x->stream);
  put(buf, cap, &at, ".");
  put(buf, cap, &at, consumer);
}

static void report(mb_durable *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(mb_durable *d, const char *fmt, ...) {
  char line[800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  d->h.report_fn(d->h.c, line);
}

/* under mu */
static ddest *find(mb_durable *d, const char *dest) {
  for (ddest *x = d->dests; x; x = x->next)
    if (!strcmp(x->name, dest)) return x;
  return NULL;
}

/* ---- the management thread -------------------------------------------------------- */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* under mu; the job, or NULL (reported) */
static job *push_job(mb_durable *d, const char *dest, const char *group, int consumer,
                     double delay) {
  job *j = calloc(1, sizeof *j);
  if (!j || !(j->dest = strdup(dest)) || (group && !(j->group = strdup(group)))) {
    if (j) free(j->dest);
    free(j);
    report(d, "mb: cluster: out of memory for the JetStream set-up of '%s'", dest);
    return NULL;
  }
  j->consumer = consumer;
  j->not_before = delay > 0 ? now_s() + delay : 0;
  *d->jobs_tail = j;
  d->jobs_tail = &j->next;
  pthread_cond_broadcast(&d->cond);
  return j;
}

/* A failure for want of the server (tried again later) rather than its
 * refusal. */
static int transient(natsStatus s, jsErrCode jerr) {
  return !jerr && (s == NATS_TIMEOUT || s == NATS_CONNECTION_CLOSED ||
                   s == NATS_NOT_YET_CONNECTED || s == NATS_CONNECTION_DISCONNECTED ||
                   s == NATS_IO_ERROR);
}

/* The server's reason, without nats.c's "(file.c:LINE): " in front. */
static void why_of(natsStatus s, char *buf, size_t cap) {
  natsStatus ls;
  const char *last = nats_GetLastError(&ls);
  const char *at = last && *last == '(' ? strstr(last, "): ") : NULL;
  if (at) last = at + 3;
  snprintf(buf, cap, "%s", last && *last ? last : natsStatus_GetText(s));
}

/* The stream's job: made, or checked and its limits updated. Then the
 * sends that waited for it go (or fail). */
static void do_stream(mb_durable *d, job *j) {
  pthread_mutex_lock(&d->mu);
  ddest *x = find(d, j->dest);
  if (!x) {
    pthread_mutex_unlock(&d->mu);
    return;
  }
  char stream[200], subject[1024];
  mb_durable_opts o = x->o;
  snprintf(stream, sizeof stream, "%s", x->stream);
  snprintf(subject, sizeof subject, "%s", x->subject);
  pthread_mutex_unlock(&d->mu);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char *subjects[1] = {subject};
  cfg.Name = stream;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Discard = js_DiscardOld;
  cfg.MaxMsgs = o.max_msgs;
  cfg.MaxBytes = o.max_bytes;
  cfg.MaxAge = (int64_t)(o.max_age * 1e9);
  jsErrCode jerr = 0;
  jsStreamInfo *si = NULL;
  natsStatus s = js_AddStream(&si, d->js, &cfg, NULL, &jerr);
  if (s != NATS_OK && jerr == JSStreamNameExistErr) { /* there, with other limits */
    jerr = 0;
    s = js_UpdateStream(&si, d->js, &cfg, NULL, &jerr);
  }
  if (si) jsStreamInfo_Destroy(si);
  char why[200] = "";
  if (s != NATS_OK) why_of(s, why, sizeof why);
  if (s != NATS_OK && transient(s, jerr)) {
    pthread_mutex_lock(&d->mu);
    if (!d->stopping) push_job(d, j->dest, NULL, 0, RETRY);
    pthread_mutex_unlock(&d->mu);
    return;
  }
  /* refused (no JetStream yet, a JetStream cluster without its leader, a
   * limit): sends fail at once with the reason, and the stream is asked
   * for again, until the server makes it (said once per reason) */
  pthread_mutex_lock(&d->mu);
  x = find(d, j->dest);
  waiting *w = NULL;
  int again = 0, was = x ? x->state : 0;
  char fail[800];
  if (x) {
    x->state = s == NATS_OK ? 1 : -1;
    if (s != NATS_OK) {
      snprintf(fail, sizeof fail,
               "failed: the JetStream stream '%.150s' of durable destination '%.255s' could not be "
               "made: %.200s%s", stream, j->dest, why,
               /* (the server's JetStream did not answer at all) */
               s == NATS_NO_RESPONDERS ? " (is nats-server running with -js?)" : "");
      again = strcmp(fail, x->why) != 0;
      snprintf(x->why, sizeof x->why, "%s", fail);
      if (!d->stopping) push_job(d, j->dest, NULL, 0, RETRY_REFUSED);
    }
    w = x->wait;
    x->wait = NULL;
    x->wait_tail = &x->wait;
  }
  snprintf(fail, sizeof fail, "%s", x ? x->why : "");
  pthread_mutex_unlock(&d->mu);
  if (s != NATS_OK && again) report(d, "mb: cluster: %s", fail + 8);
  if (s == NATS_OK && was < 0)
    report(d, "mb: cluster: the JetStream stream '%s' of durable destination '%s' is made now",
           stream, j->dest);
  while (w) {
    waiting *next = w->next;
    if (s == NATS_OK && !mb_link_timeout(d->h.rt, mb_msg_id(w->m)))
      mb_msg_unref(w->m); /* its sender has its answer (timeout:, closed:): not sent now */
    else if (s == NATS_OK)
      mb_durable_send(d, j->dest, w->m, w->kind);
    else {
      mb_link_answer(d->h.rt, mb_msg_id(w->m), 0, MB_EFAILED, NULL, fail);
      mb_msg_unref(w->m);
    }
    free(w);
    w = next;
  }
}

/* A group's consumer: made, or there already (its settings updated). */
static void do_consumer(mb_durable *d, job *j) {
  pthread_mutex_lock(&d->mu);
  ddest *x = find(d, j->dest);
  int state = x ? x->state : -2;
  job *again = NULL;
  if (state > -2 && state != 1 && !d->stopping) /* after its stream */
    again = push_job(d, j->dest, j->group, 1, state ? RETRY_REFUSED : 0.05);
  if (again) again->said = j->said;
  if (state != 1) {
    pthread_mutex_unlock(&d->mu);
    return;
  }
  char stream[200], consumer[200], deliver[600];
  snprintf(stream, sizeof stream, "%s", x->stream);
  consumer_name(d, j->group, consumer, sizeof consumer);
  deliver_subject(d, x, consumer, deliver, sizeof deliver);
  mb_durable_opts o = x->o;
  mb_dest_type type = x->type;
  pthread_mutex_unlock(&d->mu);
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = consumer;
  cfg.DeliverSubject = deliver;
  cfg.DeliverGroup = j->group;
  cfg.DeliverPolicy = js_DeliverAll;
  cfg.AckPolicy = js_AckExplicit;
  cfg.AckWait = (int64_t)(o.ack_wait * 1e9);
  cfg.MaxDeliver = -1; /* counted here: see mb_durable_receive */
  /* what the node's queue holds: a message it cannot queue would be
   * handed back, an attempt lost (after max_deliver of them it would go to
   * the dead letters, never having run) */
  cfg.MaxAckPending = type == MB_SERIAL ? 1 : (int64_t)o.max_queue;
  jsErrCode jerr = 0;
  jsConsumerInfo *ci = NULL;
  natsStatus s = js_AddConsumer(&ci, d->js, stream, &cfg, NULL, &jerr);
  if (s != NATS_OK && !transient(s, jerr)) { /* there, with other settings */
    jsErrCode first = jerr;
    jerr = 0;
    if (js_UpdateConsumer(&ci, d->js, stream, &cfg, NULL, &jerr) == NATS_OK)
      s = NATS_OK;
    else
      jerr = first;
  }
  if (ci) jsConsumerInfo_Destroy(ci);
  if (s == NATS_OK && j->said)
    report(d, "mb: cluster: the JetStream consumer '%s' of durable destination '%s' is made now",
           consumer, j->dest);
  if (s == NATS_OK) return;
  char why[400];
  why_of(s, why, sizeof why);
  /* refused (a consumer of that name the server will not change, a
   * limit, a JetStream cluster without its leader): asked for again, and
   * said once, as the stream */
  int tr = transient(s, jerr);
  pthread_mutex_lock(&d->mu);
  if (!d->stopping && (again = push_job(d, j->dest, j->group, 1, tr ? RETRY : RETRY_REFUSED)))
    again->said = j->said || !tr;
  pthread_mutex_unlock(&d->mu);
  if (!tr && !j->said)
    report(d, "mb: cluster: the JetStream consumer '%s' of durable destination '%s' could not "
              "be made: %s (asked for again every %g s)", consumer, j->dest, why, RETRY_REFUSED);
}

#define BEAT 0.25 /* s between two looks at the deliveries in progress */

/* Under mu: a delivery running for a third of its ack_wait tells the
 * server it is in progress (+WPI), so that a handler longer than ack_wait
 * is not given to another member meanwhile (nor a serial destination's
 * next message). The publish only appends to nats.c's buffer: worker 0's
 * loop writes it, so a handler that holds worker 0 gets no such help. */
static void beat(mb_durable *d, double t) {
  for (inflight *f = d->live; f; f = f->next)
    if (t - f->beat >= f->ack_wait / 3) {
      f->beat = t;
      natsConnection_Publish(d->h.nc, f->reply, "+WPI", 4);
    }
}

static void *run(void *arg) {
  mb_durable *d = arg;
  double last = now_s();
  pthread_mutex_lock(&d->mu);
  while (!d->stopping) {
    job *j = d->jobs;
    double t = now_s();
    if (t - last >= BEAT) {
      last = t;
      beat(d, t);
    }
    if (!j || j->not_before > t) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      double wait = j && j->not_before - t < BEAT ? j->not_before - t : BEAT;
      until.tv_sec += (time_t)wait;
      until.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&d->cond, &d->mu, &until);
      continue;
    }
    d->jobs = j->next;
    if (!d->jobs) d->jobs_tail = &d->jobs;
    pthread_mutex_unlock(&d->mu);
    if (j->consumer)
      do_consumer(d, j);
    else
      do_stream(d, j);
    free(j->dest);
    free(j->group);
    free(j);
    pthread_mutex_lock(&d->mu);
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* ---- sending: the stream's answers -------------------------------------------------- */

/* nats.c's thread: the stream stored a send (or says why not). */
static void on_stored(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *ud) {
  mb_durable *d = ud;
  (void)nc;
  (void)sub;
  const char *subj = natsMsg_GetSubject(nm);
  size_t pl = strlen(d->prefix);
  uint64_t id;
  if (!strncmp(subj, d->prefix, pl) && !mb_id_parse(subj + pl, strlen(subj + pl), &id)) {
    char why[600];
    int status = MB_OK;
    if (natsMsg_IsNoResponders(nm)) { /* its stream is gone: made again */
      mb_durable_check(d, 0);
      status = MB_EFAILED;
      snprintf(why, sizeof why, "failed: no JetStream stream stores this destination's messages "
                                "(is nats-server running with -js?)");
    } else {
      const char *data = natsMsg_GetData(nm);
      int len = natsMsg_GetDataLength(nm);
      char body[512];
      snprintf(body, sizeof body, "%.*s", len < 511 ? len : 511, data ? data : "");
      if (!strstr(body, "\"error\"") &&
          !(strstr(body, "\"stream\":\"") && strstr(body, "\"seq\":"))) {
        /* not the stream's answer (a plain client replied at the
         * destination's subject): the stream's own, or the send's
         * timeout, decides */
        report(d, "mb: cluster: a reply to a durable send at '%s' is no JetStream "
                  "acknowledgement (ignored): %.100s", subj, body);
        natsMsg_Destroy(nm);
        return;
      }
      if (strstr(body, "\"error\"")) {
        status = MB_EFAILED;
        const char *desc = strstr(body, "\"description\":\"");
        size_t n = 0;
        if (desc) {
          desc += 15;
          while (desc[n] && desc[n] != '"') n++;
        }
        snprintf(why, sizeof why, "failed: %.*s", desc ? (int)n : 40, desc ? desc : body);
      }
    }
    if (mb_link_answer(d->h.rt, id, 0, status, NULL, status ? why : NULL) && status)
      report(d, "mb: cluster: a send to a durable destination was not stored: %s", why + 8);
  }
  natsMsg_Destroy(nm);
}

static void acks_complete(void *ud) {
  mb_durable *d = ud;
  pthread_mutex_lock(&d->mu);
  d->acks_done = 1;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->mu);
}

int mb_durable_send(mb_durable *d, const char *dest, mb_msg *m, int kind) {
  if (kind != MB_LINK_SEND && kind != MB_LINK_CONFIRM) {
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  char subject[1024], why[800];
  pthread_mutex_lock(&d->mu);
  ddest *x = find(d, dest);
  int state = x ? x->state : -1;
  if (x && state == 0) { /* its stream is being made: the send waits for it */
    waiting *w = malloc(sizeof *w);
    if (w) {
      w->m = m;
      w->kind = kind;
      w->next = NULL;
      *x->wait_tail = w;
      x->wait_tail = &w->next;
    }
    pthread_mutex_unlock(&d->mu);
    if (!w) mb_msg_unref(m);
    return w ? MB_OK : MB_ENOMEM;
  }
  if (x) {
    snprintf(subject, sizeof subject, "%s", x->subject);
    snprintf(why, sizeof why, "%s", x->why);
  }
  pthread_mutex_unlock(&d->mu);
  if (!x) {
    mb_msg_unref(m);
    return MB_EINVAL;
  }
  if (state < 0) { /* the stream could not be made: the send hears why */
    if (kind != MB_LINK_SEND) mb_link_answer(d->h.rt, mb_msg_id(m), 0, MB_EFAILED, NULL, why);
    mb_msg_unref(m);
    return MB_OK;
  }
  char reply[300], hex[17], id[MB_NODE_ID_MAX];
  mb_id_format(mb_msg_id(m), hex);
  snprintf(reply, sizeof reply, "%s%s", d->prefix, hex);
  mb_node_id_format(d->h.node, mb_msg_id(m), id);
  natsStatus s = d->h.publish_fn(d->h.c, subject, reply, m, id);
  mb_msg_unref(m);
  return s == NATS_OK ? MB_OK : s == NATS_NO_MEMORY ? MB_ENOMEM : MB_ECLOSED;
}

/* ---- declaring and listening --------------------------------------------------------- */

static natsStatus start_locked(mb_durable *d);

static void free_wants(ddest *x) {
  while (x->wants) {
    want *w = x->wants;
    x->wants = w->next;
    free(w->group);
    free(w);
  }
}

/* dest is no durable destination here (any more): its record goes, and
 * the sends that waited for its stream fail. */
static void forget(mb_durable *d, const char *dest) {
  pthread_mutex_lock(&d->mu);
  ddest *x = NULL;
  for (ddest **p = &d->dests; *p; p = &(*p)->next)
    if (!strcmp((*p)->name, dest)) {
      x = *p;
      *p = x->next;
      break;
    }
  pthread_mutex_unlock(&d->mu);
  if (!x) return;
  while (x->wait) {
    waiting *w = x->wait;
    x->wait = w->next;
    mb_link_answer(d->h.rt, mb_msg_id(w->m), 0, MB_EFAILED, NULL,
                   "failed: the destination is no longer durable here");
    mb_msg_unref(w->m);
    free(w);
  }
  free_wants(x);
  free(x->name);
  free(x);
}

int mb_durable_declare(mb_durable *d, const char *dest, mb_dest_type type,
                       const mb_durable_opts *o, char *err, size_t errlen) {
  if (!o) {
    forget(d, dest);
    return MB_OK;
  }
  mb_durable_opts v = *o;
  const char *bad = v.max_deliver < 0 || v.max_deliver > MB_DURABLE_MAX_DELIVER ? "max_deliver"
                    : v.max_msgs < 0  ? "max_msgs"
                    : v.max_bytes < 0 ? "max_bytes"
                    : v.max_age != 0 && !(v.max_age >= MB_DURABLE_MIN_MAX_AGE && v.max_age <= 1e9)
                        ? "max_age"
                    : v.ack_wait != 0 && !(v.ack_wait >= MB_DURABLE_MIN_ACK_WAIT &&
                                           v.ack_wait <= 1e9)
                        ? "ack_wait"
                        : NULL;
  if (bad) { /* (mb.destination says which values are good) */
    snprintf(err, errlen, "durable destination '%s': option '%s' out of range", dest, bad);
    return MB_EINVAL;
  }
  if (!v.max_deliver) v.max_deliver = DEF_MAX_DELIVER;
  if (!v.max_msgs) v.max_msgs = DEF_MAX_MSGS;
  if (!v.max_bytes) v.max_bytes = DEF_MAX_BYTES;
  if (!v.max_age) v.max_age = DEF_MAX_AGE;
  if (!v.ack_wait) v.ack_wait = DEF_ACK_WAIT;
  if (!v.max_queue || v.max_queue > MAX_PENDING) v.max_queue = MAX_PENDING;
  if (type == MB_SYNCHRONOUS) {
    snprintf(err, errlen, "a durable destination is parallel or serial, not synchronous");
    return MB_EINVAL;
  }
  pthread_mutex_lock(&d->mu);
  ddest *x = find(d, dest);
  if (x) {
    int same = x->type == type && x->o.max_deliver == v.max_deliver &&
               x->o.max_msgs == v.max_msgs && x->o.max_bytes == v.max_bytes &&
               x->o.max_age == v.max_age && x->o.ack_wait == v.ack_wait &&
               x->o.max_queue == v.max_queue;
    pthread_mutex_unlock(&d->mu);
    if (!same)
      snprintf(err, errlen, "durable destination '%s' is declared here with other options", dest);
    return same ? MB_OK : MB_EEXISTS;
  }
  natsStatus s = start_locked(d);
  if (s != NATS_OK) {
    pthread_mutex_unlock(&d->mu);
    snprintf(err, errlen, "durable destinations cannot start: %s", natsStatus_GetText(s));
    return s == NATS_NO_MEMORY ? MB_ENOMEM : MB_ECLOSED;
  }
  x = calloc(1, sizeof *x);
  if (!x || !(x->name = strdup(dest))) {
    pthread_mutex_unlock(&d->mu);
    free(x);
    snprintf(err, errlen, "out of memory");
    return MB_ENOMEM;
  }
  if (mb_cluster_subject(d->h.ns, dest, x->subject, sizeof x->subject)) {
    pthread_mutex_unlock(&d->mu);
    free(x->name);
    free(x);
    snprintf(err, errlen, "'%s' cannot be a cluster destination (its subject)", dest);
    return MB_EINVAL;
  }
  stream_name(d->h.ns, dest, x->stream);
  x->type = type;
  x->o = v;
  x->wait_tail = &x->wait;
  x->next = d->dests;
  d->dests = x;
  push_job(d, dest, NULL, 0, 0);
  pthread_mutex_unlock(&d->mu);
  return MB_OK;
}

int mb_durable_has(mb_durable *d, const char *dest) {
  if (!d) return 0;
  pthread_mutex_lock(&d->mu);
  int has = find(d, dest) != NULL;
  pthread_mutex_unlock(&d->mu);
  return has;
}

int mb_durable_interest(mb_durable *d, const char *dest, const char *group, int on, char *subject,
                        size_t cap) {
  if (!d) return -1;
  pthread_mutex_lock(&d->mu);
  ddest *x = find(d, dest);
  if (x) {
    char consumer[200];
    consumer_name(d, group, consumer, sizeof consumer);
    deliver_subject(d, x, consumer, subject, cap);
    if (on) push_job(d, dest, group, 1, 0);
    /* the groups listening here, whose consumers mb_durable_check makes again */
    want **p = &x->wants;
    while (*p && !(group ? (*p)->group && !strcmp((*p)->group, group) : !(*p)->group))
      p = &(*p)->next;
    if (!on && *p) {
      want *w = *p;
      *p = w->next;
      free(w->group);
      free(w);
    } else if (on && !*p && (*p = calloc(1, sizeof **p)) && group &&
               !((*p)->group = strdup(group))) {
      free(*p);
      *p = NULL;
    }
  }
  pthread_mutex_unlock(&d->mu);
  return x ? 0 : -1;
}

void mb_durable_check(mb_durable *d, int now) {
  if (!d) return;
  double t = now_s();
  pthread_mutex_lock(&d->mu);
  if (d->started && !d->stopping && (now || t - d->checked >= RETRY_REFUSED)) {
    d->checked = t;
    for (ddest *x = d->dests; x; x = x->next) {
      if (x->state != 1) continue; /* its stream's job is on its way */
      push_job(d, x->name, NULL, 0, 0);
      for (want *w = x->wants; w; w = w->next) push_job(d, x->name, w->group, 1, 0);
    }
  }
  pthread_mutex_unlock(&d->mu);
}

/* ---- receiving and acknowledging ------------------------------------------------------ */

/* The number of deliveries so far, from the reply subject
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
 * (or, with a domain and account hash, two tokens more after $JS.ACK, and
 * maybe one at the end), and which message it is into *id (may be NULL);
 * 0 when it is not one. */
static int delivered(const char *reply, ack_id *id) {
  if (!reply || strncmp(reply, "$JS.ACK.", 8)) return 0;
  const char *tok[16];
  int n = 0;
  for (const char *p = reply + 8; n < 16;) {
    tok[n++] = p;
    p = strchr(p, '.');
    if (!p) break;
    p++;
  }
  int at = n == 7 ? 2 : n >= 9 ? 4 : -1;
  if (at < 0) return 0;
  if (id) {
    uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a of "<stream>.<consumer>" */
    for (const char *p = tok[at - 2]; p < tok[at] - 1; p++)
      h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
    id->who = h;
    id->seq = strtoull(tok[at + 1], NULL, 10);
    id->ts = strtoull(tok[at + 3], NULL, 10);
  }
  return atoi(tok[at]);
}

static int same_id(const ack_id *a, const ack_id *b) {
  return a->who == b->who && a->seq == b->seq && a->ts == b->ts;
}

static void ack(mb_durable *d, const char *reply, const char *what) {
  natsConnection_Publish(d->h.nc, reply, what, (int)strlen(what));
}

/* f leaves the deliveries in progress; term: 1 terminated, 0
 * acknowledged, -1 handed back. */
static void unlink_live(mb_durable *d, inflight *f, int term) {
  pthread_mutex_lock(&d->mu);
  if (term >= 0) {
    unsigned at = d->ndone++ % DONE;
    d->done[at].id = f->id;
    d->done[at].term = (char)term;
  }
  if (f->prev)
    f->prev->next = f->next;
  else if (d->live == f)
    d->live = f->next;
  if (f->next) f->next->prev = f->prev;
  pthread_mutex_unlock(&d->mu);
}

/* Every delivery of f's message here has ended: acknowledged, handed back,
 * or (its last attempt failed, the dead letter made) terminated. */
static void settle(inflight *f) {
  mb_durable *d = f->d;
  int failed = atomic_load(&f->failed), ok = atomic_load(&f->ok);
  const char *what = failed ? (f->attempt >= f->max ? "+TERM" : "-NAK")
                     : atomic_load(&f->dropped) || !ok ? "-NAK"
                                                       : "+ACK";
  ack(d, f->reply, what);
  unlink_live(d, f, what[1] == 'T' ? 1 : what[1] == 'A' ? 0 : -1);
  free(f);
}

int mb_durable_outcome(mb_durable *d, void *tag, int status) {
  inflight *f = tag;
  (void)d;
  int retry = 0;
  if (status == MB_OK)
    atomic_fetch_add(&f->ok, 1);
  else if (status == MB_EDROPPED) { /* it did not run: it goes again */
    atomic_fetch_add(&f->dropped, 1);
    retry = 1;
  } else {
    atomic_fetch_add(&f->failed, 1);
    retry = f->attempt < f->max;
  }
  if (atomic_fetch_sub(&f->remaining, 1) == 1) settle(f);
  return retry;
}

/* A message without mb's headers (a plain NATS client published to the
 * destination's subject): its body is JSON text. */
static mb_msg *plain(natsMsg *nm, const char **why) {
  static char err[300];
  const char *data = natsMsg_GetData(nm);
  int len = natsMsg_GetDataLength(nm);
  mb_buf b = {0};
  if (len > 0 && mb_json_decode(data, (size_t)len, MB_MAX_DEPTH, &b, err, sizeof err)) {
    *why = "its body is not JSON text";
    mb_buf_free(&b);
    return NULL;
  }
  if (len <= 0) {
    mb_buf_free(&b);
    static const uint8_t nil = MB_V_NIL;
    return mb_msg_new_remote(&nil, 1, NULL, 0, NULL, "nats:js");
  }
  mb_msg *m = mb_msg_new_remote(b.p, b.len, NULL, 0, NULL, "nats:js");
  mb_buf_free(&b);
  if (!m) *why = "out of memory";
  return m;
}

void mb_durable_receive(mb_durable *d, const char *dest, uint64_t key, natsMsg *nm) {
  const char *reply = natsMsg_GetReply(nm);
  ack_id id;
  int attempt = delivered(reply, &id);
  if (!attempt) {
    report(d, "mb: cluster: a message on '%s' is not a JetStream delivery: ignored",
           natsMsg_GetSubject(nm));
    return;
  }
  /* the server's copy of a message running here, or settled here for good
   * (it sends one each ack_wait the acknowledgement did not reach it in:
   * worker 0 was held, so no beat and no reading): not run again, nor
   * taken for a message lost (the dead letters after max_deliver); what
   * was handed back comes again, as it should */
  const char *seen = NULL;
  pthread_mutex_lock(&d->mu);
  for (inflight *f = d->live; f && !seen; f = f->next)
    if (same_id(&f->id, &id)) seen = "+WPI";
  for (unsigned i = 0; i < DONE && i < d->ndone && !seen; i++) {
    unsigned at = (d->ndone - 1 - i) % DONE;
    if (same_id(&d->done[at].id, &id)) seen = d->done[at].term ? "+TERM" : "+ACK";
  }
  ddest *x = find(d, dest);
  int max = x ? x->o.max_deliver : DEF_MAX_DELIVER;
  double ack_wait = x ? x->o.ack_wait : DEF_ACK_WAIT;
  pthread_mutex_unlock(&d->mu);
  if (seen) {
    ack(d, reply, seen);
    return;
  }
  const char *why = NULL, *v = NULL;
  int mine = natsMsgHeader_Get(nm, "Mb-Id", &v) == NATS_OK;
  mb_msg *m = mine ? d->h.decode_fn(nm, &why) : plain(nm, &why);
  if (!m) { /* it never will decode: not delivered again */
    report(d, "mb: cluster: a message stored at '%s' was not delivered: %s", dest, why);
    ack(d, reply, "+TERM");
    return;
  }
  if (attempt > max) { /* its last attempt ended unacknowledged (a node died) */
    char lost[400];
    snprintf(lost, sizeof lost, "failed: not acknowledged after %d deliveries (max_deliver %d): "
                                "the last one's node stopped or was cut off before its handler "
                                "returned, held its worker 0 past ack_wait, or could not take it",
             attempt - 1, max);
    mb_link_dropped(d->h.rt, dest, m, lost);
    mb_msg_unref(m);
    ack(d, reply, "+TERM");
    return;
  }
  size_t rl = strlen(reply);
  inflight *f = malloc(sizeof *f + rl + 1);
  if (!f) {
    mb_msg_unref(m);
    ack(d, reply, "-NAK");
    return;
  }
  f->d = d;
  f->id = id;
  atomic_init(&f->remaining, BIAS);
  atomic_init(&f->ok, 0);
  atomic_init(&f->failed, 0);
  atomic_init(&f->dropped, 0);
  f->attempt = attempt;
  f->max = max;
  f->ack_wait = ack_wait;
  f->beat = now_s();
  memcpy(f->reply, reply, rl + 1);
  pthread_mutex_lock(&d->mu);
  f->prev = NULL;
  f->next = d->live;
  if (d->live) d->live->prev = f;
  d->live = f;
  pthread_mutex_unlock(&d->mu);
  mb_msg_durable(m, f, attempt > 1);
  size_t takers = 0;
  /* the deliveries may end before this returns: BIAS keeps f until their
   * number is known */
  int rc = mb_link_deliver(d->h.svc, dest, key, m, 0, NULL, NULL, NULL, &takers);
  if (rc < 0) takers = 0;
  long left = BIAS - (long)takers;
  if (atomic_fetch_sub(&f->remaining, left) == left) settle(f);
}

void mb_durable_unreceived(mb_durable *d, natsMsg *nm) {
  const char *reply = natsMsg_GetReply(nm);
  if (delivered(reply, NULL)) ack(d, reply, "-NAK");
}

/* ---- start and stop ----------------------------------------------------------------- */

mb_durable *mb_durable_new(const mb_durable_host *h, char *err, size_t errlen) {
  mb_durable *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  d->h = *h;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cond, NULL);
  d->jobs_tail = &d->jobs;
  snprintf(d->prefix, sizeof d->prefix, "mb.%s.n.%s.j.", h->ns, h->node);
  return d;
}

/* Under mu, at the first durable destination: the JetStream context, the
 * subscription to the stream's answers and the management thread (a node
 * without durable destinations has none of them). */
static natsStatus start_locked(mb_durable *d) {
  if (d->started) return NATS_OK;
  if (d->stopping) return NATS_CONNECTION_CLOSED;
  char all[220];
  snprintf(all, sizeof all, "%s*", d->prefix);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = JS_WAIT;
  natsStatus s = d->js ? NATS_OK : natsConnection_JetStream(&d->js, d->h.nc, &jo);
  if (s == NATS_OK && !d->acks)
    s = natsConnection_Subscribe(&d->acks, d->h.nc, all, on_stored, d);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(d->acks, -1, -1);
  if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(d->acks, acks_complete, d);
  if (s == NATS_OK && pthread_create(&d->thread, NULL, run, d) == 0)
    d->started = 1;
  else if (s == NATS_OK)
    s = NATS_NO_MEMORY;
  return s;
}

void mb_durable_halt(mb_durable *d) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  d->stopping = 1;
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->mu);
  if (d->acks) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    natsSubscription_Unsubscribe(d->acks);
    pthread_mutex_lock(&d->mu);
    while (!d->acks_done && pthread_cond_timedwait(&d->cond, &d->mu, &until) == 0) continue;
    pthread_mutex_unlock(&d->mu);
    natsSubscription_Destroy(d->acks);
    d->acks = NULL;
  }
}

void mb_durable_join(mb_durable *d) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  int started = d->started;
  d->started = 0;
  pthread_mutex_unlock(&d->mu);
  if (started) pthread_join(d->thread, NULL);
  if (d->js) jsCtx_Destroy(d->js);
  d->js = NULL;
}

void mb_durable_free(mb_durable *d) {
  if (!d) return;
  while (d->jobs) {
    job *j = d->jobs;
    d->jobs = j->next;
    free(j->dest);
    free(j->group);
    free(j);
  }
  while (d->dests) {
    ddest *x = d->dests;
    d->dests = x->next;
    while (x->wait) {
      waiting *w = x->wait;
      x->wait = w->next;
      mb_msg_unref(w->m);
      free(w);
    }
    free_wants(x);
    free(x->name);
    free(x);
  }
  /* deliveries still open (the link has left: their ends come no more) are
   * not acknowledged: the server gives them to another member after ack_wait */
  while (d->live) {
    inflight *f = d->live;
    d->live = f->next;
    free(f);
  }
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cond);
  free(d);
}
